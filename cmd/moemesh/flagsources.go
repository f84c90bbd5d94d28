package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Every flag of every command can also come from the environment and from a
// YAML file; the root command applies them in its PersistentPreRunE, after
// the command line is parsed, so a command added later needs no code:
//
//	command line > $MOEMESH_<FLAG> > --config FILE (or $MOEMESH_CONFIG) > default
//
// envPrefix starts the variable of every flag.
const envPrefix = "MOEMESH_"

// configFlag names the file of flag values; $MOEMESH_CONFIG sets it too.
const configFlag = "config"

// nonFlagEnv lists the MOEMESH_ variables the program reads for other
// purposes; no flag may map onto one (TestFlagEnvNames).
var nonFlagEnv = []string{
	"MOEMESH_CACHE",       // demo model cache directory (modelload.go)
	"MOEMESH_BENCH_MODEL", // model of the end-to-end benchmark (model/bench_test.go)
	etcdPasswordEnv,       // etcd password, never a flag (clustertls.go)
}

// flagSourcesHelp is the paragraph of `moemesh --help` on flag sources.
const flagSourcesHelp = `Every flag can also be set in the environment or in a YAML file. A value on
the command line wins; then MOEMESH_<FLAG>, the flag's name upper-cased with
'-' as '_' (--max-tokens from MOEMESH_MAX_TOKENS); then the file named by
--config (or MOEMESH_CONFIG), a mapping of flag names to values, with lists
for list flags, where a key the command has no flag for is an error; then the
default.`

// envName returns the environment variable of flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// sourcedFlag reports whether flag name may come from the environment or
// the file: every flag but --help and --config itself.
func sourcedFlag(name string) bool { return name != "help" && name != configFlag }

// flagSourceError is a value from the environment or the config file that
// the command cannot take. It is wrapped in a usageError.
type flagSourceError struct {
	// Source is the variable (MOEMESH_X) or the config file's path.
	Source string
	// Key is the flag name (the file's key).
	Key string
	// Command is the command path, e.g. "moemesh generate".
	Command string
	// Unknown: the file names a key the command has no flag for.
	Unknown bool
	// Err says why the value does not parse (nil when Unknown).
	Err error
}

func (e *flagSourceError) Error() string {
	switch {
	case e.Unknown:
		return fmt.Sprintf("%s: unknown key %q: %s has no flag --%s", e.Source, e.Key, e.Command, e.Key)
	case strings.HasPrefix(e.Source, envPrefix):
		return fmt.Sprintf("%s: invalid value for --%s of %s: %v", e.Source, e.Key, e.Command, e.Err)
	}
	return fmt.Sprintf("%s: key %q: %v", e.Source, e.Key, e.Err)
}

func (e *flagSourceError) Unwrap() error { return e.Err }

// applyFlagSources sets every flag of cmd not given on the command line from
// its environment variable, else from the config file. cmd's flags must be
// parsed (they are in PersistentPreRunE).
func applyFlagSources(cmd *cobra.Command) error {
	if cobraBuiltin(cmd) {
		return nil
	}
	flags := cmd.Flags()
	path, _ := flags.GetString(configFlag)
	pathSource := "--" + configFlag
	if !flags.Changed(configFlag) {
		if v, ok := os.LookupEnv(envName(configFlag)); ok {
			path, pathSource = v, envName(configFlag)
			// Consumed here: processes this one starts (the local
			// cluster's workers) must not read a file meant for cmd.
			os.Unsetenv(envName(configFlag))
		}
	}
	var file map[string]*yaml.Node
	if path != "" {
		var err error
		if file, err = readFlagFile(path); err != nil {
			return &usageError{fmt.Errorf("%s %s: %w", pathSource, path, err)}
		}
		for key := range file {
			if f := flags.Lookup(key); f == nil || !sourcedFlag(key) {
				return &usageError{&flagSourceError{Source: path, Key: key, Command: cmd.CommandPath(), Unknown: true}}
			}
		}
	}
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || !sourcedFlag(f.Name) {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := flags.Set(f.Name, v); e != nil {
				err = &usageError{&flagSourceError{Source: envName(f.Name), Key: f.Name, Command: cmd.CommandPath(), Err: fmt.Errorf("%q: %w", v, e)}}
			}
			return
		}
		if n, ok := file[f.Name]; ok {
			if e := setFromNode(flags, f, n); e != nil {
				err = &usageError{&flagSourceError{Source: path, Key: f.Name, Command: cmd.CommandPath(), Err: e}}
			}
		}
	})
	return err
}

// cobraBuiltin reports cobra's own commands (help, completion and the
// hidden completion helpers), which a config file for real commands must
// not break.
func cobraBuiltin(cmd *cobra.Command) bool {
	for c := cmd; c != nil && c.HasParent(); c = c.Parent() {
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return true
		}
	}
	return false
}

// readFlagFile reads a YAML mapping of flag names to values.
func readFlagFile(path string) (map[string]*yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	out := map[string]*yaml.Node{}
	if doc.Kind == 0 || len(doc.Content) == 0 { // empty file
		return out, nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values", m.Line)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key must be a flag name", k.Line)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("line %d: key %q given twice", k.Line, k.Value)
		}
		out[k.Value] = m.Content[i+1]
	}
	return out, nil
}

// setFromNode sets flag f from a YAML value: a scalar as if typed after
// --name, a list (list flags only) item by item.
func setFromNode(flags *pflag.FlagSet, f *pflag.Flag, n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return fmt.Errorf("line %d: no value", n.Line)
		}
		if err := flags.Set(f.Name, n.Value); err != nil {
			return fmt.Errorf("line %d: %q: %w", n.Line, n.Value, err)
		}
		return nil
	case yaml.SequenceNode:
		sv, ok := f.Value.(pflag.SliceValue)
		if !ok {
			return fmt.Errorf("line %d: a list, but --%s takes one %s", n.Line, f.Name, f.Value.Type())
		}
		var items []string
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: list items must be plain values", it.Line)
			}
			items = append(items, it.Value)
		}
		if err := sv.Replace(items); err != nil {
			return fmt.Errorf("line %d: %v: %w", n.Line, items, err)
		}
		f.Changed = true
		return nil
	}
	return fmt.Errorf("line %d: want a value or a list", n.Line)
}

// flagEnvNames returns the variable of every sourced flag of cmd and its
// subcommands, with the flags that use it.
func flagEnvNames(cmd *cobra.Command) map[string][]string {
	out := map[string][]string{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		seen := map[string]bool{}
		visit := func(f *pflag.Flag) {
			if !sourcedFlag(f.Name) || seen[f.Name] {
				return
			}
			seen[f.Name] = true
			key := envName(f.Name)
			if !slices.Contains(out[key], f.Name) {
				out[key] = append(out[key], f.Name)
			}
		}
		c.LocalFlags().VisitAll(visit)
		c.InheritedFlags().VisitAll(visit)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cmd)
	return out
}

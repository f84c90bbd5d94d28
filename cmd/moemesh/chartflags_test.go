package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
)

// A rendered container's command line, parsed by the program's own command
// tree: the chart can only pass flags that moemesh has.

// varRef is Kubernetes' $(NAME) reference in args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs substitutes $(NAME) as kubelet does, from the container's env
// (literal values, or fields for fieldRef entries); a reference to a
// variable the container does not declare is an error.
func expandArgs(t testing.TB, c corev1.Container, fields map[string]string) []string {
	t.Helper()
	vals := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vals[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("container %s: env %s from field %s, which the test does not know", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			vals[e.Name] = v
		}
	}
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		out[i] = varRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := varRef.FindStringSubmatch(ref)[1]
			v, ok := vals[name]
			if !ok {
				t.Fatalf("container %s: arg %q refers to $(%s), which is not a field or literal env var", c.Name, a, name)
			}
			return v
		})
	}
	return out
}

// clearMoemeshEnv removes every MOEMESH_ variable for the test, so flag
// sources see only what the test sets.
func clearMoemeshEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, envPrefix) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// parsedCommand is a container's moemesh command with its flags parsed.
type parsedCommand struct {
	Cmd *cobra.Command
	// Args are the expanded arguments after the subcommand name.
	Args []string
}

func (p parsedCommand) flag(t testing.TB, name string) string {
	t.Helper()
	f := p.Cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("%s has no flag --%s", p.Cmd.CommandPath(), name)
	}
	return f.Value.String()
}

func (p parsedCommand) changed(name string) bool { return p.Cmd.Flags().Changed(name) }

func (p parsedCommand) slice(t testing.TB, name string) []string {
	t.Helper()
	v, err := p.Cmd.Flags().GetStringSlice(name)
	if err != nil {
		v, err = p.Cmd.Flags().GetStringArray(name)
	}
	if err != nil {
		t.Fatalf("--%s: %v", name, err)
	}
	return v
}

// parseContainer parses container c of a pod, whose entrypoint must be
// /moemesh SUB, with the real flag set of SUB (root's persistent flags
// included), then applies the flag sources as the program does: the
// container's MOEMESH_ environment and the --config file, read from
// configFiles (the file's path in the container to its content). Unknown
// flags, bad values, unknown config keys and positional arguments fail.
func parseContainer(t *testing.T, c corev1.Container, sub string, fields, configFiles map[string]string) parsedCommand {
	t.Helper()
	if len(c.Command) != 1 || c.Command[0] != "/moemesh" {
		t.Fatalf("container %s: command %q, want [/moemesh]", c.Name, c.Command)
	}
	args := expandArgs(t, c, fields)
	if len(args) == 0 || args[0] != sub {
		t.Fatalf("container %s: args %q, want the %s subcommand first", c.Name, args, sub)
	}
	clearMoemeshEnv(t)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, envPrefix) {
			t.Setenv(e.Name, "placeholder-from-"+e.Name)
		}
	}
	root := newRootCmd(IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	cmd, _, err := root.Find([]string{sub})
	if err != nil || cmd.Name() != sub {
		t.Fatalf("moemesh has no %s command: %v", sub, err)
	}
	if err := cmd.ParseFlags(args[1:]); err != nil {
		t.Fatalf("container %s: moemesh %s refuses its flags: %v\nargs: %q", c.Name, sub, err, args)
	}
	if rest := cmd.Flags().Args(); len(rest) > 0 {
		t.Fatalf("container %s: positional arguments %q", c.Name, rest)
	}
	if path, _ := cmd.Flags().GetString(configFlag); path != "" {
		data, ok := configFiles[path]
		if !ok {
			t.Fatalf("container %s: --config %s is not a file the test was given", c.Name, path)
		}
		if err := cmd.Flags().Set(configFlag, writeTemp(t, filepath.Base(path), data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyFlagSources(cmd); err != nil {
		t.Fatalf("container %s: moemesh %s refuses its environment or config file: %v", c.Name, sub, err)
	}
	return parsedCommand{Cmd: cmd, Args: args[1:]}
}

// configMapFiles maps the files a pod's container sees from ConfigMap
// volumes to their contents.
func configMapFiles(t testing.TB, m manifests, spec corev1.PodSpec, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, vm := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm := m.configMap(t, v.ConfigMap.Name)
			for k, data := range cm.Data {
				out[filepath.Join(vm.MountPath, k)] = data
			}
		}
	}
	return out
}

// mountedFile is the volume a file path of a container lies in.
type mountedFile struct {
	Volume corev1.Volume
	Mount  corev1.VolumeMount
	// Key is the path below the mount (the Secret's item path).
	Key string
}

// fileIn finds the volume behind path in c (the longest mount prefix).
func fileIn(t testing.TB, spec corev1.PodSpec, c corev1.Container, path string) mountedFile {
	t.Helper()
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/") && (best == nil || len(vm.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		t.Fatalf("container %s: %s is on no volume mount (the root file system is read-only and empty)", c.Name, path)
	}
	for _, v := range spec.Volumes {
		if v.Name == best.Name {
			return mountedFile{Volume: v, Mount: *best, Key: strings.TrimPrefix(path, strings.TrimSuffix(best.MountPath, "/")+"/")}
		}
	}
	t.Fatalf("container %s mounts volume %q, which the pod does not have", c.Name, best.Name)
	return mountedFile{}
}

// secretFile checks that path in c is key of Secret secret, mounted
// read-only, and returns nothing: the value never passes through the chart.
func secretFile(t testing.TB, spec corev1.PodSpec, c corev1.Container, path, secret, key string) {
	t.Helper()
	f := fileIn(t, spec, c, path)
	if f.Volume.Secret == nil {
		t.Fatalf("container %s: %s is on volume %q, not a Secret", c.Name, path, f.Volume.Name)
	}
	if f.Volume.Secret.SecretName != secret {
		t.Errorf("container %s: %s comes from Secret %q, want %q", c.Name, path, f.Volume.Secret.SecretName, secret)
	}
	if !f.Mount.ReadOnly {
		t.Errorf("container %s: Secret volume %q mounted read-write", c.Name, f.Volume.Name)
	}
	itemKey := f.Key
	if items := f.Volume.Secret.Items; len(items) > 0 {
		itemKey = ""
		for _, it := range items {
			if it.Path == f.Key {
				itemKey = it.Key
			}
		}
	}
	if itemKey != key {
		t.Errorf("container %s: %s is key %q of Secret %s, want key %q", c.Name, path, itemKey, secret, key)
	}
}

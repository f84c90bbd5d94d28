package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

// probeValues are the flags of the probe command, one of each kind.
type probeValues struct {
	MaxTokens int
	Name      string
	Greedy    bool
	Endpoints []string
	Ratio     float32
}

// runProbe runs `moemesh probe args...` on the real root command with a
// probe subcommand added, and returns the flag values the command saw.
func runProbe(t *testing.T, args ...string) (probeValues, error) {
	t.Helper()
	s := IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard}
	root := newRootCmd(s)
	var v probeValues
	probe := &cobra.Command{Use: "probe", Args: noArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	f := probe.Flags()
	f.IntVar(&v.MaxTokens, "max-tokens", 256, "")
	f.StringVar(&v.Name, "name", "default", "")
	f.BoolVar(&v.Greedy, "greedy", false, "")
	f.StringSliceVar(&v.Endpoints, "etcd-endpoints", []string{"localhost:2379"}, "")
	f.Float32Var(&v.Ratio, "ratio", 0.5, "")
	root.AddCommand(probe)
	root.SetArgs(append([]string{"probe"}, args...))
	err := root.Execute()
	return v, err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagSources(t *testing.T) {
	def := probeValues{MaxTokens: 256, Name: "default", Endpoints: []string{"localhost:2379"}, Ratio: 0.5}
	with := func(f func(*probeValues)) probeValues {
		v := def
		v.Endpoints = append([]string(nil), def.Endpoints...)
		f(&v)
		return v
	}
	full := "max-tokens: 7\nname: from-file\ngreedy: true\netcd-endpoints: [a:1, b:2]\nratio: 0.25\n"
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string // config file content, always passed with --config
		args []string
		want probeValues
	}{
		{"defaults", nil, "", nil, def},
		{"environment", map[string]string{"MOEMESH_MAX_TOKENS": "9", "MOEMESH_ETCD_ENDPOINTS": "x:1,y:2", "MOEMESH_GREEDY": "true"}, "", nil,
			with(func(v *probeValues) { v.MaxTokens, v.Endpoints, v.Greedy = 9, []string{"x:1", "y:2"}, true })},
		{"command line beats environment", map[string]string{"MOEMESH_MAX_TOKENS": "9"}, "", []string{"--max-tokens", "3"},
			with(func(v *probeValues) { v.MaxTokens = 3 })},
		{"file", nil, full, nil,
			probeValues{MaxTokens: 7, Name: "from-file", Greedy: true, Endpoints: []string{"a:1", "b:2"}, Ratio: 0.25}},
		{"file list as one comma-separated value", nil, "etcd-endpoints: p:1,q:2\n", nil,
			with(func(v *probeValues) { v.Endpoints = []string{"p:1", "q:2"} })},
		{"environment beats file", map[string]string{"MOEMESH_NAME": "from-env", "MOEMESH_ETCD_ENDPOINTS": "e:1"}, full, nil,
			probeValues{MaxTokens: 7, Name: "from-env", Greedy: true, Endpoints: []string{"e:1"}, Ratio: 0.25}},
		{"command line beats file", nil, full, []string{"--name", "cli", "--etcd-endpoints", "c:1"},
			probeValues{MaxTokens: 7, Name: "cli", Greedy: true, Endpoints: []string{"c:1"}, Ratio: 0.25}},
		{"empty file", nil, "", nil, def},
		{"comment-only file", nil, "# nothing\n", nil, def},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := runProbe(t, append([]string{"--config", writeFile(t, "flags.yaml", tc.file)}, tc.args...)...)
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("flag values (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConfigFromEnvironment: MOEMESH_CONFIG names the file unless --config
// does, and is not passed on to processes this one starts.
func TestConfigFromEnvironment(t *testing.T) {
	envFile := writeFile(t, "env.yaml", "name: env-file\n")
	cliFile := writeFile(t, "cli.yaml", "name: cli-file\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"MOEMESH_CONFIG", nil, "env-file"},
		{"--config beats MOEMESH_CONFIG", []string{"--config", cliFile}, "cli-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MOEMESH_CONFIG", envFile)
			got, err := runProbe(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want {
				t.Errorf("--name = %q, want %q", got.Name, tc.want)
			}
			if _, ok := os.LookupEnv("MOEMESH_CONFIG"); ok && tc.args == nil {
				t.Error("MOEMESH_CONFIG still set after it was consumed")
			}
		})
	}
}

func TestFlagSourceErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		args []string
		want *flagSourceError // nil: a usage error of another kind
	}{
		{"bad environment value", map[string]string{"MOEMESH_MAX_TOKENS": "many"}, "", nil,
			&flagSourceError{Source: "MOEMESH_MAX_TOKENS", Key: "max-tokens", Command: "moemesh probe"}},
		{"bad environment bool", map[string]string{"MOEMESH_GREEDY": "sometimes"}, "", nil,
			&flagSourceError{Source: "MOEMESH_GREEDY", Key: "greedy", Command: "moemesh probe"}},
		{"unknown key", nil, "max-tokens: 3\nprompt: hi\n", nil,
			&flagSourceError{Key: "prompt", Command: "moemesh probe", Unknown: true}},
		{"help is no key", nil, "help: true\n", nil, &flagSourceError{Key: "help", Command: "moemesh probe", Unknown: true}},
		{"config is no key", nil, "config: other.yaml\n", nil, &flagSourceError{Key: "config", Command: "moemesh probe", Unknown: true}},
		{"bad file value", nil, "max-tokens: lots\n", nil, &flagSourceError{Key: "max-tokens", Command: "moemesh probe"}},
		{"list for a single-value flag", nil, "max-tokens: [1, 2]\n", nil, &flagSourceError{Key: "max-tokens", Command: "moemesh probe"}},
		{"mapping value", nil, "name: {a: 1}\n", nil, &flagSourceError{Key: "name", Command: "moemesh probe"}},
		{"null value", nil, "name:\n", nil, &flagSourceError{Key: "name", Command: "moemesh probe"}},
		{"not a mapping", nil, "- a\n- b\n", nil, nil},
		{"duplicate key", nil, "name: a\nname: b\n", nil, nil},
		{"not YAML", nil, "name: [a\n", nil, nil},
		{"missing file", nil, "", []string{"--config", missing}, nil},
		{"missing file from environment", map[string]string{"MOEMESH_CONFIG": missing}, "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			var path string
			if tc.file != "" {
				path = writeFile(t, "flags.yaml", tc.file)
				args = append([]string{"--config", path}, args...)
			}
			_, err := runProbe(t, args...)
			if err == nil {
				t.Fatal("probe succeeded")
			}
			if code := exitCode(err); code != ExitUsage {
				t.Errorf("exit %d, want %d (usage): %v", code, ExitUsage, err)
			}
			if tc.want == nil {
				return
			}
			var fe *flagSourceError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *flagSourceError", err)
			}
			want := *tc.want
			if want.Source == "" {
				want.Source = path
			}
			got := *fe
			got.Err = nil
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("error %v (-want +got):\n%s", err, diff)
			}
		})
	}
}

// TestFlagSourcesRealCommands: a real command takes its flags from the
// environment and the file, and rejects a key it does not have.
func TestFlagSourcesRealCommands(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a")
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		args []string
		code int
	}{
		{"model and tokens from the environment", map[string]string{"MOEMESH_MODEL": dir, "MOEMESH_TOKENS": "1,2"}, "", []string{"logits"}, ExitOK},
		{"model and tokens from the file", nil, "model: " + dir + "\ntokens: 1,2\n", []string{"logits"}, ExitOK},
		{"bad layout from the environment", map[string]string{"MOEMESH_WORKERS": "3", "MOEMESH_TP": "2"}, "", []string{"logits", "--model", dir, "--tokens", "1"}, ExitUsage},
		{"key of another command", nil, "prompt: hello\n", []string{"logits", "--model", dir, "--tokens", "1"}, ExitUsage},
		{"help ignores the file", map[string]string{"MOEMESH_CONFIG": writeFile(t, "gen.yaml", "prompt: hello\n")}, "", []string{"help", "generate"}, ExitOK},
		{"completion ignores the file", map[string]string{"MOEMESH_CONFIG": writeFile(t, "gen.yaml", "prompt: hello\n")}, "", []string{"completion", "bash"}, ExitOK},
		{"bad context in the file", nil, "context: many\n", []string{"logits", "--model", dir, "--tokens", "1"}, ExitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "flags.yaml", tc.file))
			}
			code, _, errOut := runCLI(t, "", args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %s", code, tc.code, errOut)
			}
		})
	}
}

// TestFlagEnvNames: no two flags share a variable, and none maps onto a
// MOEMESH_ variable the program reads for something else.
func TestFlagEnvNames(t *testing.T) {
	root := newRootCmd(IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	names := flagEnvNames(root)
	if len(names) == 0 {
		t.Fatal("no flags found")
	}
	for env, flags := range names {
		if len(flags) > 1 {
			t.Errorf("%s is the variable of several flags: %v", env, flags)
		}
	}
	for _, env := range nonFlagEnv {
		if flags, ok := names[env]; ok {
			t.Errorf("%s is read for another purpose but is also the variable of --%s", env, flags[0])
		}
	}
	if _, ok := names["MOEMESH_CONTEXT"]; !ok {
		t.Error("--context has no variable")
	}
}

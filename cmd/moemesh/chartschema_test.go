package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// The chart's values schema and lint.

// TestChartLint runs `helm lint --strict` for the default values and every
// values file: no warning, no error.
func TestChartLint(t *testing.T) {
	files := append([]string{""}, valuesFiles(t)...)
	for _, f := range files {
		name := f
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			vals := map[string]any{}
			if f != "" {
				vals = readValues(t, f)
			}
			l := action.NewLint()
			l.Strict = true
			l.Namespace = testNamespace
			res := l.Run([]string{chartDir}, vals)
			for _, msg := range res.Messages {
				if msg.Severity > support.InfoSev {
					t.Errorf("lint: %s", msg)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
		})
	}
}

// TestChartSchemaRejects: values the schema must refuse, each one change
// from values that render. Secrets cannot be inlined: there is no key for a
// value, only for a Secret's name.
func TestChartSchemaRejects(t *testing.T) {
	ch := loadChart(t)
	if _, err := renderValues(ch, map[string]any{}); err != nil {
		t.Fatalf("the default values do not render: %v", err)
	}
	for _, tc := range []struct {
		name string
		vals string
	}{
		{"unknown top-level key", "replicas: 3"},
		{"unknown nested key", "worker:\n  gpu: 1"},
		{"unknown key two levels down", "model:\n  volume:\n    pvc:\n      size: 1Ti"},
		{"inline API key", "auth:\n  apiKeys:\n    value: sk-123"},
		{"inline admin token", "auth:\n  adminToken:\n    token: hunter2"},
		{"inline gossip key", "clusterTLS:\n  gossipKey:\n    value: c2VjcmV0"},
		{"inline etcd password", "etcd:\n  external:\n    password: hunter2"},
		{"fetch env from a secret", "model:\n  fetch:\n    env:\n      - name: HF_TOKEN\n        valueFrom:\n          secretKeyRef:\n            name: hf\n            key: token"},
		{"wrong type", "layout:\n  workers: two"},
		{"zero workers", "layout:\n  workers: 0"},
		{"bad device", "worker:\n  device: tpu"},
		{"bad wire dtype", "layout:\n  wireDType: fp8"},
		{"bad etcd mode", "etcd:\n  mode: embedded"},
		{"endpoint without scheme", "etcd:\n  mode: external\n  external:\n    endpoints: [etcd:2379]"},
		{"bad anti-affinity", "coordinator:\n  antiAffinity: always"},
		{"bad duration", "coordinator:\n  leaseTTL: 5 seconds"},
		{"bad quantity", "worker:\n  resources:\n    requests:\n      memory: lots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "values.yaml", tc.vals+"\n")
			vals, err := common.ReadValuesFile(path)
			if err != nil {
				t.Fatalf("the test's values do not parse: %v", err)
			}
			if _, err := renderValues(ch, vals); err == nil {
				t.Errorf("values %q rendered; the schema must reject them", tc.vals)
			}
		})
	}
}

// TestChartTemplateChecks: combinations the schema cannot express fail the
// render with a message naming the values.
func TestChartTemplateChecks(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"tp does not divide workers", map[string]any{"layout": map[string]any{"workers": 6, "tp": 4}}},
		{"external etcd without endpoints", map[string]any{"etcd": map[string]any{"mode": "external"}}},
		{"etcd user without a password Secret", map[string]any{"etcd": map[string]any{"mode": "external",
			"external": map[string]any{"endpoints": []any{"http://e:2379"}, "user": "u"}}}},
		{"coordinator certificate alone", map[string]any{"clusterTLS": map[string]any{"coordinatorSecret": "c"}}},
		{"fetch into an image volume", map[string]any{"model": map[string]any{"fetch": map[string]any{"enabled": true},
			"volume": map[string]any{"type": "image", "image": map[string]any{"reference": "models:1"}}}}},
		{"image volume without a reference", map[string]any{"model": map[string]any{"volume": map[string]any{"type": "image"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderValues(ch, loader.MergeMaps(map[string]any{}, tc.vals)); err == nil {
				t.Errorf("values %v rendered; want an error", tc.vals)
			}
		})
	}
}

// TestChartSchemaClosed: every object of values.schema.json either lists
// its properties and refuses others, or is a map whose values have a type.
func TestChartSchemaClosed(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	objects := 0
	var walk func(path string, node any)
	walk = func(path string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if n["type"] == "object" {
				objects++
				ap, ok := n["additionalProperties"]
				switch {
				case !ok:
					t.Errorf("%s: an object without additionalProperties", path)
				case ap == false:
					if _, ok := n["properties"]; !ok {
						t.Errorf("%s: closed but lists no properties", path)
					}
				default:
					m, isMap := ap.(map[string]any)
					_, typed := m["type"]
					_, alts := m["anyOf"]
					_, props := n["properties"]
					if !isMap || !(typed || alts) || props {
						t.Errorf("%s: additionalProperties %v: want false, or a typed schema on a pure map", path, ap)
					}
				}
			}
			for k, v := range n {
				walk(path+"/"+k, v)
			}
		case []any:
			for i, v := range n {
				walk(fmt.Sprintf("%s/%d", path, i), v)
			}
		}
	}
	walk("#", schema)
	if objects < 20 {
		t.Errorf("only %d objects in the schema", objects)
	}
	if schema["additionalProperties"] != false {
		t.Errorf("the top level accepts unknown keys")
	}
}

// TestChartFlagCheckCanFail: the flag check the render tests rely on
// refuses a flag moemesh does not have and a config key it does not know.
func TestChartFlagCheckCanFail(t *testing.T) {
	m := render(t)
	d := m.deployment(t, coordinatorName)
	c := d.Spec.Template.Spec.Containers[0]
	root := newRootCmd(IOStreams{In: strings.NewReader(""), Out: os.Stderr, ErrOut: os.Stderr})
	cmd, _, err := root.Find([]string{"coordinator"})
	if err != nil {
		t.Fatal(err)
	}
	args := append(expandArgs(t, c, map[string]string{"metadata.name": "p", "status.podIP": testPodIP})[1:], "--min-worker=2")
	if err := cmd.ParseFlags(args); err == nil {
		t.Errorf("moemesh coordinator accepted --min-worker")
	}
	clearMoemeshEnv(t)
	root = newRootCmd(IOStreams{In: strings.NewReader(""), Out: os.Stderr, ErrOut: os.Stderr})
	cmd, _, _ = root.Find([]string{"coordinator"})
	cfg := m.configMap(t, fullname).Data["coordinator.yaml"] + "expert-replica: 2\n"
	if err := cmd.ParseFlags([]string{"--config=" + writeTemp(t, "c.yaml", cfg)}); err != nil {
		t.Fatal(err)
	}
	if err := applyFlagSources(cmd); err == nil {
		t.Errorf("moemesh coordinator accepted the config key expert-replica")
	}
}

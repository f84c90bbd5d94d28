package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// The chart's rendering for the tests: helm/moemesh through Helm's own
// loader, schema validation and template engine, every manifest decoded
// strictly into its k8s.io/api type.

// chartDir is the chart, relative to this package.
const chartDir = "../../helm/moemesh"

// The release the tests render.
const (
	testRelease   = "mm"
	testNamespace = "serve"
)

// manifests are the rendered objects by kind, each decoded strictly.
type manifests struct {
	Deployments     []appsv1.Deployment
	StatefulSets    []appsv1.StatefulSet
	Services        []corev1.Service
	ConfigMaps      []corev1.ConfigMap
	ServiceAccounts []corev1.ServiceAccount
	PDBs            []policyv1.PodDisruptionBudget
	NetworkPolicies []networkingv1.NetworkPolicy
	Pods            []corev1.Pod // helm test hooks
	// Unstructured are the CRD kinds (ServiceMonitor), as decoded maps.
	Unstructured []map[string]any
	// Raw is every rendered document by template, for text checks.
	Raw map[string]string
	// Notes is NOTES.txt rendered.
	Notes string
}

func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// readValues merges values files (relative to the chart), later ones winning.
func readValues(t testing.TB, files ...string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(filepath.Join(chartDir, f))
		if err != nil {
			t.Fatalf("reading %s: %v", f, err)
		}
		out = loader.MergeMaps(out, v)
	}
	return out
}

// renderValues renders the chart with vals as `helm install` would
// (schema checked), returning the templates' output.
func renderValues(ch *chart.Chart, vals map[string]any) (map[string]string, error) {
	opts := common.ReleaseOptions{Name: testRelease, Namespace: testNamespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, nil, false)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, rv)
}

// render renders the chart with values files and decodes every manifest.
func render(t testing.TB, files ...string) manifests {
	t.Helper()
	out, err := renderValues(loadChart(t), readValues(t, files...))
	if err != nil {
		t.Fatalf("rendering with %v: %v", files, err)
	}
	m := manifests{Raw: map[string]string{}}
	names := slices.Sorted(maps.Keys(out))
	for _, name := range names {
		text := out[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			m.Notes = text
			continue
		}
		if strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		for i, doc := range splitDocs(text) {
			where := fmt.Sprintf("%s#%d", name, i)
			m.Raw[where] = doc
			if err := m.add(doc); err != nil {
				t.Fatalf("%s: %v\n%s", where, err, doc)
			}
		}
	}
	return m
}

// splitDocs splits a YAML stream, dropping documents that hold only
// comments or whitespace.
func splitDocs(text string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+text, "\n---") {
		empty := true
		for _, line := range strings.Split(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

// add decodes doc strictly (an unknown or misplaced field is an error) into
// the type of its kind.
func (m *manifests) add(doc string) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
		return err
	}
	strict := func(v any) error { return yaml.UnmarshalStrict([]byte(doc), v) }
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		return decodeInto(strict, &m.Deployments)
	case "apps/v1 StatefulSet":
		return decodeInto(strict, &m.StatefulSets)
	case "v1 Service":
		return decodeInto(strict, &m.Services)
	case "v1 ConfigMap":
		return decodeInto(strict, &m.ConfigMaps)
	case "v1 ServiceAccount":
		return decodeInto(strict, &m.ServiceAccounts)
	case "v1 Pod":
		return decodeInto(strict, &m.Pods)
	case "policy/v1 PodDisruptionBudget":
		return decodeInto(strict, &m.PDBs)
	case "networking.k8s.io/v1 NetworkPolicy":
		return decodeInto(strict, &m.NetworkPolicies)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		var u map[string]any
		if err := strict(&u); err != nil {
			return err
		}
		m.Unstructured = append(m.Unstructured, u)
		return nil
	}
	return fmt.Errorf("unexpected kind %q of %q (a Secret or an unknown kind)", head.Kind, head.APIVersion)
}

func decodeInto[T any](strict func(any) error, list *[]T) error {
	var v T
	if err := strict(&v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

func (m *manifests) deployment(t testing.TB, name string) appsv1.Deployment {
	t.Helper()
	for _, d := range m.Deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %q", name)
	return appsv1.Deployment{}
}

func (m *manifests) statefulSet(t testing.TB, name string) appsv1.StatefulSet {
	t.Helper()
	for _, s := range m.StatefulSets {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no StatefulSet %q", name)
	return appsv1.StatefulSet{}
}

func (m *manifests) service(t testing.TB, name string) corev1.Service {
	t.Helper()
	for _, s := range m.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %q", name)
	return corev1.Service{}
}

func (m *manifests) configMap(t testing.TB, name string) corev1.ConfigMap {
	t.Helper()
	for _, c := range m.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no ConfigMap %q", name)
	return corev1.ConfigMap{}
}

// podSpecs are every pod template of the release, by owner.
func (m *manifests) podSpecs() map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, d := range m.Deployments {
		out["Deployment/"+d.Name] = d.Spec.Template.Spec
	}
	for _, s := range m.StatefulSets {
		out["StatefulSet/"+s.Name] = s.Spec.Template.Spec
	}
	for _, p := range m.Pods {
		out["Pod/"+p.Name] = p.Spec
	}
	return out
}

// selects reports whether selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort returns the port named name of c.
func containerPort(t testing.TB, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

// jsonOf is v as indented JSON, for failure messages.
func jsonOf(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return b.String()
}

// valuesFiles lists the chart's ci and example values files.
func valuesFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{"ci/*-values.yaml", "examples/*.yaml"} {
		got, err := filepath.Glob(filepath.Join(chartDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range got {
			rel, _ := filepath.Rel(chartDir, g)
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("no values files under %s", chartDir)
	}
	return out
}

// writeTemp writes data into a file of t's temporary directory.
func writeTemp(t testing.TB, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

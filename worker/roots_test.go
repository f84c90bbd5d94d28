package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkRefused asserts err is the PERMISSION_DENIED refusal and names no
// path at all.
func checkRefused(t *testing.T, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v, want PERMISSION_DENIED", err)
	}
	if msg := status.Convert(err).Message(); strings.ContainsAny(msg, `/\`) {
		t.Fatalf("the refusal names a path: %q", msg)
	}
}

func TestConfineModelRoots(t *testing.T) {
	tmp := t.TempDir()
	mk := func(parts ...string) string {
		p := filepath.Join(append([]string{tmp}, parts...)...)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) string {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	root := mk("root")
	model := mk("root", "m")
	write(filepath.Join(model, "config.json"))
	other := mk("other", "m")
	write(filepath.Join(other, "config.json"))
	evil := mk("root-evil", "m")
	write(filepath.Join(evil, "config.json"))
	// A Hugging Face cache style tree: snapshot links into blobs, all inside.
	blobs := mk("root", "cache", "blobs")
	write(filepath.Join(blobs, "abc"))
	snap := mk("root", "cache", "snap")
	link(filepath.Join(blobs, "abc"), filepath.Join(snap, "config.json"))
	// A directory inside whose config.json points outside.
	leaky := mk("root", "leaky")
	link(filepath.Join(other, "config.json"), filepath.Join(leaky, "config.json"))
	dangling := mk("root", "dangling")
	link(filepath.Join(tmp, "nowhere", "config.json"), filepath.Join(dangling, "config.json"))
	escape := link(other, filepath.Join(root, "escape"))
	rootLink := link(root, filepath.Join(tmp, "rootlink"))

	realModel, err := filepath.EvalSymlinks(model)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		roots []string
		dir   string
		want  string // "" means refused
	}{
		{"inside", []string{root}, model, realModel},
		{"the root itself", []string{model}, model, realModel},
		{"a root holding a link out", []string{root}, root, ""},
		{"inside, relative through ..", []string{root}, filepath.Join(root, "m", "..", "m"), realModel},
		{"links kept inside", []string{root}, snap, filepath.Join(filepath.Dir(realModel), "cache", "snap")},
		{"a root that is a symlink", []string{rootLink}, filepath.Join(rootLink, "m"), realModel},
		{"a root that is a symlink, real path asked", []string{rootLink}, model, realModel},
		{"second root", []string{filepath.Join(tmp, "none"), root}, model, realModel},
		{"outside", []string{root}, other, ""},
		{"missing outside", []string{root}, filepath.Join(tmp, "nope"), ""},
		{"missing inside", []string{root}, filepath.Join(root, "nope"), ""},
		{"symlink escaping", []string{root}, escape, ""},
		{"dot-dot out of the root", []string{root}, filepath.Join(root, "..", "other", "m"), ""},
		{"dot-dot from deep inside", []string{root}, filepath.Join(model, "..", "..", "other", "m"), ""},
		{"sibling with the root as a prefix", []string{root}, evil, ""},
		{"an entry linked outside", []string{root}, leaky, ""},
		{"a dangling entry", []string{root}, dangling, ""},
		{"a file, not a directory", []string{root}, filepath.Join(model, "config.json"), ""},
		{"empty model_dir", []string{root}, "", ""},
		{"no usable root", []string{filepath.Join(tmp, "none")}, model, ""},
		{"no roots: unchanged", nil, other, other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New(Config{ModelRoots: tc.roots, Log: quietLog})
			got, err := w.confine(tc.dir)
			if tc.want == "" {
				checkRefused(t, err)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("confine(%q) = %q, %v; want %q", tc.dir, got, err, tc.want)
			}
		})
	}
}

// TestLoadShardModelRoots: LoadShard reads a model inside the roots and
// refuses one outside with PERMISSION_DENIED before touching it.
func TestLoadShardModelRoots(t *testing.T) {
	for _, tc := range []struct {
		name  string
		roots []string
		ok    bool
	}{
		{"inside", []string{filepath.Dir(tinyA)}, true},
		{"outside", []string{t.TempDir()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, tinyA, 1, func(int) Config { return Config{ModelRoots: tc.roots} })
			_, err := c.load(context.Background(), loadSpec{members: []int{0}, place: placementProto(1, uniform(c.cfg, 1, 0)), meshEpoch: 1})
			if tc.ok {
				if err != nil {
					t.Fatalf("LoadShard inside the roots: %v", err)
				}
				return
			}
			checkRefused(t, err)
		})
	}
}

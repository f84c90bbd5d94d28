package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/internal/sysmem"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/scheduler"
)

// runErr runs moemesh with args and returns the error of the command.
func runErr(t *testing.T, args ...string) error {
	t.Helper()
	root := newRootCmd(IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	root.SetArgs(args)
	return root.Execute()
}

// fakeMemory makes availableMemory return n bytes (err when set) for the test.
func fakeMemory(t *testing.T, n int64, err error) {
	t.Helper()
	old := availableMemory
	availableMemory = func() (int64, error) { return n, err }
	t.Cleanup(func() { availableMemory = old })
}

// countWorkers counts the worker processes started during the test.
func countWorkers(t *testing.T) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	workerStarted = func(int, *exec.Cmd) { n.Add(1) }
	t.Cleanup(func() { workerStarted = nil })
	return &n
}

// need returns the sizing of a run of the model in dir with flags c.
func need(t *testing.T, dir string, c clusterFlags) memoryNeed {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.memoryNeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// shortModel is tiny-a with max_position_embeddings 1024 (the checkpoint
// linked, config.json rewritten).
func shortModel(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "model", "testdata", "tiny-a"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "config.json" {
			continue
		}
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `"max_position_embeddings": 40960`, `"max_position_embeddings": 1024`, 1))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestContextValidated: --context is checked before any worker starts or
// any weight loads: positive, within max_position_embeddings, and with the
// weights within the memory available.
func TestContextValidated(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a") // KV: 4 layers × 2 heads × 16 × K,V × f32 = 1 KiB a token
	one := need(t, dir, clusterFlags{Workers: 1, TP: 1, ContextTokens: 16})
	two := need(t, dir, clusterFlags{Workers: 2, TP: 1, ContextTokens: 16})
	if one.kvPerToken != 1024 || two.kvPerToken != 2048 {
		t.Fatalf("KV bytes a token: %d in one process, %d on two groups; want 1024, 2048", one.kvPerToken, two.kvPerToken)
	}
	short := shortModel(t)
	logits := func(model string, extra ...string) []string {
		return append([]string{"logits", "--model", model, "--tokens", "1,2,3"}, extra...)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		avail   int64 // 0: plenty
		memErr  error
		code    int
		wantMem *contextMemoryError
	}{
		{"zero", logits(dir, "--context", "0"), 0, nil, ExitUsage, nil},
		{"negative on a cluster", logits(dir, "--context", "-100", "--workers", "2"), 0, nil, ExitUsage, nil},
		{"zero on a cluster", logits(dir, "--context", "0", "--workers", "2"), 0, nil, ExitUsage, nil},
		{"above max_position_embeddings", logits(dir, "--context", "40961"), 0, nil, ExitUsage, nil},
		{"far above on a cluster", logits(dir, "--context", "100000000", "--workers", "2"), 0, nil, ExitUsage, nil},
		{"generate, negative on a cluster", []string{"generate", "--model", dir, "--prompt", "hi", "--context", "-100", "--workers", "2"}, 0, nil, ExitUsage, nil},
		{"at max_position_embeddings", logits(dir, "--context", "40960"), 0, nil, ExitOK, nil},
		{"default lowered to a short model's limit", logits(short), 0, nil, ExitOK, nil},
		{"set above a short model's limit", logits(short, "--context", "8192"), 0, nil, ExitUsage, nil},
		{"memory for 1000 tokens", logits(dir, "--context", "2000"), one.weights + 1000*1024 + 5, nil, ExitUsage,
			&contextMemoryError{Context: 2000, KV: 2000 * 1024, Weights: one.weights, Available: one.weights + 1000*1024 + 5, Fits: 992}},
		{"memory for 1000 tokens, two groups", logits(dir, "--context", "2000", "--workers", "2"), two.weights + 1000*2048, nil, ExitUsage,
			&contextMemoryError{Context: 2000, KV: 2000 * 2048, Weights: two.weights, Available: two.weights + 1000*2048, Fits: 992}},
		{"whole blocks counted", logits(dir, "--context", "1001"), one.weights + 1008*1024 - 1, nil, ExitUsage,
			&contextMemoryError{Context: 1001, KV: 1008 * 1024, Weights: one.weights, Available: one.weights + 1008*1024 - 1, Fits: 992}},
		{"exactly enough", logits(dir, "--context", "1024"), one.weights + 1024*1024, nil, ExitOK, nil},
		{"not even the weights", logits(dir, "--context", "16"), one.weights / 2, nil, ExitUsage,
			&contextMemoryError{Context: 16, KV: 16 * 1024, Weights: one.weights, Available: one.weights / 2, Fits: 0}},
		{"memory unknown", logits(dir, "--context", "40960"), 1, sysmem.ErrUnsupported, ExitOK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			avail := tc.avail
			if avail == 0 {
				avail = 1 << 40
			}
			fakeMemory(t, avail, tc.memErr)
			started := countWorkers(t)
			err := runErr(t, tc.args...)
			code := ExitOK
			if err != nil {
				code = exitCode(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %v", code, tc.code, err)
			}
			if code == ExitUsage && started.Load() != 0 {
				t.Errorf("%d workers started before the usage error", started.Load())
			}
			var me *contextMemoryError
			if errors.As(err, &me) != (tc.wantMem != nil) {
				t.Fatalf("error %v: memory error %v, want %v", err, me != nil, tc.wantMem != nil)
			}
			if tc.wantMem != nil {
				if diff := cmp.Diff(tc.wantMem, me); diff != "" {
					t.Errorf("memory error %v (-want +got):\n%s", err, diff)
				}
			}
		})
	}
}

// TestKVFullNamesContext: a sequence longer than --context fails as a
// usage error that still wraps scheduler.ErrKVFull.
func TestKVFullNamesContext(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a")
	t.Setenv("MOEMESH_CACHE", t.TempDir())
	for _, tc := range []struct {
		name string
		args []string
		full bool
	}{
		{"logits fits", []string{"logits", "--model", dir, "--tokens", "1,2,3,4", "--context", "16"}, false},
		{"logits beyond", []string{"logits", "--model", dir, "--tokens", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "--context", "16"}, true},
		{"generate beyond", []string{"generate", "--prompt", strings.Repeat("hello ", 20), "--max-tokens", "8", "--greedy", "--context", "1"}, true}, // the demo model
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runErr(t, tc.args...)
			if got := errors.Is(err, scheduler.ErrKVFull); got != tc.full {
				t.Fatalf("error %v: ErrKVFull %v, want %v", err, got, tc.full)
			}
			if tc.full && exitCode(err) != ExitUsage {
				t.Errorf("exit %d, want %d: %v", exitCode(err), ExitUsage, err)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {20 << 20, "20 MiB"},
		{381 << 30, "381 GiB"}, {3 << 29, "1.5 GiB"},
	} {
		if got := formatBytes(tc.n); got != tc.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

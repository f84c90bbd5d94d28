package cuda

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPTXSources fails when csrc/ changed after the committed PTX was
// generated: ptx/SOURCES.sha256, written by scripts/gen-ptx.sh beside the
// PTX, must list the sha256 of every CUDA source. It needs no nvcc, so CI
// catches kernels committed without their PTX.
func TestPTXSources(t *testing.T) {
	f, err := os.Open("ptx/SOURCES.sha256")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("ptx/SOURCES.sha256: malformed line %q", sc.Text())
		}
		want[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, pat := range []string{"csrc/*.cu", "csrc/*.cuh"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	got := map[string]string{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		got[name] = hex.EncodeToString(s[:])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("csrc/ differs from the sources the PTX was generated from; run scripts/gen-ptx.sh (nvcc 11.8, docs/cuda.md) (-want +got):\n%s", diff)
	}
}

package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteSafetensorsLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	// Given F16 first with an odd element count, then F32: the writer must
	// still place the F32 data 4-byte aligned.
	writeFile(t, path, []WriteTensor{
		{Name: "h", DType: DTypeF16, Shape: []int64{3}, Data: encode(t, DTypeF16, []float32{1, 2, 3})},
		{Name: "b", DType: "U8", Shape: []int64{1}, Data: []byte{7}},
		{Name: "f", DType: DTypeF32, Shape: []int64{2}, Data: encode(t, DTypeF32, []float32{4, 5})},
	}, map[string]string{"format": "pt"})
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	if n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &header); err != nil {
		t.Fatalf("header is not JSON: %v", err)
	}
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	got := map[string]entry{}
	for name, msg := range header {
		if name == "__metadata__" {
			continue
		}
		var e entry
		if err := json.Unmarshal(msg, &e); err != nil {
			t.Fatal(err)
		}
		got[name] = e
	}
	want := map[string]entry{
		"f": {DTypeF32, []int64{2}, [2]int64{0, 8}},
		"h": {DTypeF16, []int64{3}, [2]int64{8, 14}},
		"b": {"U8", []int64{1}, [2]int64{14, 15}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("header entries (-want +got):\n%s", diff)
	}
	if int(8+n+15) != len(raw) {
		t.Errorf("file is %d bytes, want %d: data must be contiguous", len(raw), 8+n+15)
	}
	if diff := cmp.Diff(json.RawMessage(`{"format":"pt"}`), header["__metadata__"]); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
}

func TestWriteSafetensorsFill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	const n = 100_000
	vals := ramp(n)
	writeFile(t, path, []WriteTensor{{
		Name: "big", DType: DTypeF32, Shape: []int64{n / 100, 100},
		Fill: func(w io.Writer) error {
			for i := 0; i < n; i += 333 { // uneven chunks
				if _, err := w.Write(encode(t, DTypeF32, vals[i:min(i+333, n)])); err != nil {
					return err
				}
			}
			return nil
		},
	}}, nil)
	ck := openCheckpoint(t, path)
	got, err := ck.F32("big")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(vals, got); diff != "" {
		t.Errorf("F32 (-want +got):\n%s", diff)
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	errFill := errors.New("disk on fire")
	f32 := func(name string) WriteTensor {
		return WriteTensor{Name: name, DType: DTypeF32, Shape: []int64{2}, Data: make([]byte, 8)}
	}
	fill := func(n int, err error) WriteTensor {
		return WriteTensor{Name: "f", DType: DTypeF32, Shape: []int64{2}, Fill: func(w io.Writer) error {
			if _, werr := w.Write(make([]byte, n)); werr != nil {
				return werr
			}
			return err
		}}
	}
	tests := []struct {
		name    string
		tensors []WriteTensor
		want    error
	}{
		{"duplicate name", []WriteTensor{f32("a"), f32("a")}, ErrBadWrite},
		{"empty name", []WriteTensor{f32("")}, ErrBadWrite},
		{"metadata name", []WriteTensor{f32("__metadata__")}, ErrBadWrite},
		{"unknown dtype", []WriteTensor{{Name: "a", DType: "F4", Shape: []int64{2}, Data: make([]byte, 1)}}, ErrBadWrite},
		{"data too short", []WriteTensor{{Name: "a", DType: DTypeF32, Shape: []int64{3}, Data: make([]byte, 8)}}, ErrBadWrite},
		{"missing data", []WriteTensor{{Name: "a", DType: DTypeF32, Shape: []int64{3}}}, ErrBadWrite},
		{"negative dim", []WriteTensor{{Name: "a", DType: DTypeF32, Shape: []int64{-1}}}, ErrBadWrite},
		{"both data and fill", []WriteTensor{{Name: "a", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4),
			Fill: func(io.Writer) error { return nil }}}, ErrBadWrite},
		{"fill too short", []WriteTensor{fill(4, nil)}, ErrBadWrite},
		{"fill too long", []WriteTensor{fill(12, nil)}, ErrBadWrite},
		{"fill fails", []WriteTensor{fill(8, errFill)}, errFill},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.safetensors")
			old := []byte("previous contents")
			if err := os.WriteFile(path, old, 0o644); err != nil {
				t.Fatal(err)
			}
			err := WriteSafetensors(path, tc.tensors, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("WriteSafetensors = %v, want %v", err, tc.want)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, old) {
				t.Errorf("failed write changed the existing file: %q, %v", got, err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != 1 {
				t.Errorf("failed write left files behind: %v, %v", entries, err)
			}
		})
	}
}

func TestWriteShardedIndex(t *testing.T) {
	dir := t.TempDir()
	wm := map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
	if err := WriteShardedIndex(dir, wm, 1234); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, SafetensorsIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"total_size": 1234}, got.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wm, got.WeightMap); diff != "" {
		t.Errorf("weight_map (-want +got):\n%s", diff)
	}

	for _, bad := range []string{"../x.safetensors", "/abs.safetensors", ""} {
		err := WriteShardedIndex(t.TempDir(), map[string]string{"a": bad}, 0)
		if !errors.Is(err, ErrBadWrite) {
			t.Errorf("WriteShardedIndex(shard %q) = %v, want ErrBadWrite", bad, err)
		}
	}
	if err := WriteShardedIndex(filepath.Join(dir, "no", "such"), wm, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteShardedIndex(missing dir) = %v, want fs.ErrNotExist", err)
	}
}

package model

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawSafetensors builds a safetensors file from a header text and dataLen
// zero bytes of data.
func rawSafetensors(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// wantCheckpointError checks that err is a *CheckpointError of kind naming
// file (by base name) and tensor.
func wantCheckpointError(t *testing.T, err error, kind error, file, tensor string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error = %v, want %v", err, kind)
	}
	var ce *CheckpointError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CheckpointError", err)
	}
	if file != "" && filepath.Base(ce.File) != file {
		t.Errorf("CheckpointError.File = %q, want base name %q (error: %v)", ce.File, file, err)
	}
	if ce.Tensor != tensor {
		t.Errorf("CheckpointError.Tensor = %q, want %q (error: %v)", ce.Tensor, tensor, err)
	}
	msg := err.Error()
	if file != "" && !strings.Contains(msg, file) || tensor != "" && !strings.Contains(msg, tensor) {
		t.Errorf("message %q does not name file %q and tensor %q", msg, file, tensor)
	}
}

func TestOpenCheckpointRejectsBadFiles(t *testing.T) {
	good := `{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`
	tests := []struct {
		name   string
		data   []byte
		tensor string // tensor the error must name; "" for whole-file errors
	}{
		{"empty file", nil, ""},
		{"truncated length", []byte{1, 2, 3}, ""},
		{"header longer than file", rawSafetensors(good, 16)[:30], ""},
		{"header length huge", append(binary.LittleEndian.AppendUint64(nil, 1<<63), "{}"...), ""},
		{"truncated data", rawSafetensors(good, 15), "a"},
		{"bad JSON", rawSafetensors(`{"a":`, 0), ""},
		{"header not an object", rawSafetensors(`[1,2]`, 0), ""},
		{"header blank", rawSafetensors(`    `, 0), ""},
		{"entry not an object", rawSafetensors(`{"a":3}`, 0), "a"},
		{"missing dtype", rawSafetensors(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), "a"},
		{"missing offsets", rawSafetensors(`{"a":{"dtype":"F32","shape":[1]}}`, 4), "a"},
		{"unknown dtype", rawSafetensors(`{"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}}`, 4), "a"},
		{"offsets past data", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "a"},
		{"offsets reversed", rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), "a"},
		{"negative offset", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 4), "a"},
		{"three offsets", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), "a"},
		{"float offsets", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}`, 8), "a"},
		{"shape size mismatch", rawSafetensors(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), "a"},
		{"dtype size mismatch", rawSafetensors(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}}`, 8), "a"},
		{"negative dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[-1,-2],"data_offsets":[0,8]}}`, 8), "a"},
		{"shape overflow", rawSafetensors(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 8), "a"},
		{"overlap", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "b"},
		{"same range", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), "b"},
		{"metadata not strings", rawSafetensors(`{"__metadata__":{"n":1}}`, 0), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			ck, err := OpenCheckpoint(path)
			if err == nil {
				ck.Close()
				t.Fatal("OpenCheckpoint succeeded")
			}
			wantCheckpointError(t, err, ErrBadCheckpoint, "bad.safetensors", tc.tensor)
		})
	}
}

func TestOpenCheckpointAcceptsEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		names []string
	}{
		{"no tensors", rawSafetensors(`{}`, 0), nil},
		{"metadata only, space padded", rawSafetensors(`{"__metadata__":{"format":"pt"}}       `, 0), nil},
		{"adjacent tensors and an empty one", rawSafetensors(
			`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I64","shape":[1],"data_offsets":[4,12]},"e":{"dtype":"F16","shape":[0],"data_offsets":[4,4]}}`, 12),
			[]string{"a", "b", "e"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ok.safetensors")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			ck := openCheckpoint(t, path)
			if got := ck.Names(); strings.Join(got, ",") != strings.Join(tc.names, ",") {
				t.Errorf("Names() = %q, want %q", got, tc.names)
			}
		})
	}
}

// writeSharded writes two shards (a, b in shard 1; c in shard 2) and an index
// built from weightMap.
func writeSharded(t *testing.T, weightMap map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	one := []WriteTensor{{Name: "a", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4)},
		{Name: "b", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4)}}
	two := []WriteTensor{{Name: "c", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4)}}
	writeFile(t, filepath.Join(dir, "s1.safetensors"), one, nil)
	writeFile(t, filepath.Join(dir, "s2.safetensors"), two, nil)
	if weightMap != nil {
		if err := WriteShardedIndex(dir, weightMap, 12); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOpenCheckpointRejectsBadIndex(t *testing.T) {
	tests := []struct {
		name      string
		weightMap map[string]string
		rawIndex  string // used instead of weightMap when set
		kind      error
		file      string
		tensor    string
	}{
		{"missing shard", map[string]string{"a": "s1.safetensors", "z": "s9.safetensors"}, "", ErrBadCheckpoint, SafetensorsIndexFile, "z"},
		{"tensor not in its shard", map[string]string{"a": "s1.safetensors", "z": "s2.safetensors"}, "", ErrMissingTensor, "s2.safetensors", "z"},
		{"tensor in an unlisted shard", map[string]string{"a": "s2.safetensors", "c": "s2.safetensors"}, "", ErrMissingTensor, "s2.safetensors", "a"},
		{"tensor in the other shard", map[string]string{"a": "s2.safetensors", "c": "s1.safetensors"}, "", ErrBadCheckpoint, "s1.safetensors", "a"},
		{"shard outside the directory", nil, `{"weight_map":{"a":"../s1.safetensors"}}`, ErrBadCheckpoint, SafetensorsIndexFile, "a"},
		{"bad JSON", nil, `{"weight_map":`, ErrBadCheckpoint, SafetensorsIndexFile, ""},
		{"empty weight_map", nil, `{"metadata":{}}`, ErrBadCheckpoint, SafetensorsIndexFile, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSharded(t, tc.weightMap)
			if tc.rawIndex != "" {
				if err := os.WriteFile(filepath.Join(dir, SafetensorsIndexFile), []byte(tc.rawIndex), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ck, err := OpenCheckpoint(dir)
			if err == nil {
				ck.Close()
				t.Fatal("OpenCheckpoint succeeded")
			}
			wantCheckpointError(t, err, tc.kind, tc.file, tc.tensor)
		})
	}

	t.Run("missing shard is fs.ErrNotExist", func(t *testing.T) {
		dir := writeSharded(t, map[string]string{"a": "s9.safetensors"})
		if _, err := OpenCheckpoint(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want fs.ErrNotExist too", err)
		}
	})
	t.Run("tensor in two shards", func(t *testing.T) {
		dir := writeSharded(t, map[string]string{"a": "s1.safetensors", "c": "s2.safetensors"})
		writeFile(t, filepath.Join(dir, "s2.safetensors"), []WriteTensor{
			{Name: "a", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4)},
			{Name: "c", DType: DTypeF32, Shape: []int64{1}, Data: make([]byte, 4)}}, nil)
		_, err := OpenCheckpoint(dir)
		wantCheckpointError(t, err, ErrBadCheckpoint, "s2.safetensors", "a")
	})
	t.Run("empty directory", func(t *testing.T) {
		_, err := OpenCheckpoint(t.TempDir())
		if !errors.Is(err, ErrBadCheckpoint) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want ErrBadCheckpoint and fs.ErrNotExist", err)
		}
	})
	t.Run("no such path", func(t *testing.T) {
		_, err := OpenCheckpoint(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, ErrBadCheckpoint) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want ErrBadCheckpoint and fs.ErrNotExist", err)
		}
	})
}

func TestCheckpointReadErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, SafetensorsFile), []WriteTensor{
		{Name: "m", DType: DTypeF32, Shape: []int64{3, 4}, Data: make([]byte, 48)},
		{Name: "v", DType: DTypeBF16, Shape: []int64{4}, Data: make([]byte, 8)},
		{Name: "cube", DType: DTypeF16, Shape: []int64{2, 2, 2}, Data: make([]byte, 16)},
		{Name: "ids", DType: "I64", Shape: []int64{2, 2}, Data: make([]byte, 32)},
	}, nil)
	ck := openCheckpoint(t, dir)
	type call func() error
	rows := func(name string, r0, r1 int) call {
		return func() error { _, err := ck.Rows(name, r0, r1); return err }
	}
	cols := func(name string, c0, c1 int) call {
		return func() error { _, err := ck.Cols(name, c0, c1); return err }
	}
	tests := []struct {
		name   string
		call   call
		kind   error
		tensor string
	}{
		{"Info missing", func() error { _, err := ck.Info("nope"); return err }, ErrMissingTensor, "nope"},
		{"F32 missing", func() error { _, err := ck.F32("nope"); return err }, ErrMissingTensor, "nope"},
		{"Bytes missing", func() error { _, err := ck.Bytes("nope"); return err }, ErrMissingTensor, "nope"},
		{"Rows missing", rows("nope", 0, 1), ErrMissingTensor, "nope"},
		{"Cols missing", cols("nope", 0, 1), ErrMissingTensor, "nope"},
		{"F32 of I64", func() error { _, err := ck.F32("ids"); return err }, ErrUnsupportedDType, "ids"},
		{"Rows of I64", rows("ids", 0, 1), ErrUnsupportedDType, "ids"},
		{"rows past end", rows("m", 2, 4), ErrBadRange, "m"},
		{"rows negative", rows("m", -1, 1), ErrBadRange, "m"},
		{"rows reversed", rows("m", 2, 1), ErrBadRange, "m"},
		{"cols past end", cols("m", 0, 5), ErrBadRange, "m"},
		{"cols negative", cols("m", -2, 1), ErrBadRange, "m"},
		{"cols reversed", cols("m", 3, 2), ErrBadRange, "m"},
		{"Rows of 1-D", rows("v", 0, 1), ErrBadRange, "v"},
		{"Cols of 3-D", cols("cube", 0, 1), ErrBadRange, "cube"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantCheckpointError(t, err, tc.kind, "", tc.tensor)
			if tc.kind != ErrMissingTensor && !strings.Contains(err.Error(), SafetensorsFile) {
				t.Errorf("message %q does not name the file", err)
			}
		})
	}
}

func TestCheckpointClosed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, SafetensorsFile), []WriteTensor{
		{Name: "m", DType: DTypeF32, Shape: []int64{1, 1}, Data: make([]byte, 4)}}, nil)
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ck.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := ck.F32("m"); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("F32 after Close = %v, want fs.ErrClosed", err)
	}
	if _, err := ck.Rows("m", 0, 1); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Rows after Close = %v, want fs.ErrClosed", err)
	}
}

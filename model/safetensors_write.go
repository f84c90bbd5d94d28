package model

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// ErrBadWrite is wrapped by WriteSafetensors and WriteShardedIndex errors
// about their arguments.
var ErrBadWrite = errors.New("model: bad safetensors write")

// WriteTensor is one tensor for WriteSafetensors. Give its bytes (little
// endian, row-major) either in Data or through Fill, which must write
// exactly the tensor's byte length (elements × DTypeSize(DType)) to w; Fill
// lets GB-sized tensors stream to disk without being held in memory.
type WriteTensor struct {
	Name  string
	DType string // any safetensors dtype, e.g. DTypeF32, DTypeBF16
	Shape []int64
	Data  []byte
	Fill  func(w io.Writer) error
}

// WriteSafetensors writes tensors and metadata to a safetensors file at path,
// atomically (a temporary file in the same directory renamed into place).
// As the reference writer does, the header is padded with spaces to a
// multiple of 8 bytes and tensors are laid out by decreasing element size
// (then in the given order), so every tensor is aligned for its element type.
func WriteSafetensors(path string, tensors []WriteTensor, metadata map[string]string) (err error) {
	header, order, err := safetensorsLayout(tensors, metadata)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if _, err := w.Write(header); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	for _, i := range order {
		if err := writeTensorData(w, &tensors[i]); err != nil {
			return fmt.Errorf("model: write %s: tensor %q: %w", path, tensors[i].Name, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	return nil
}

// safetensorsLayout checks tensors and returns the encoded header (length
// prefix included) and the order in which to write the tensors' data.
func safetensorsLayout(tensors []WriteTensor, metadata map[string]string) ([]byte, []int, error) {
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	sizes := make([]int64, len(tensors))
	seen := make(map[string]bool, len(tensors))
	for i, t := range tensors {
		n, err := writeTensorSize(t)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %w", ErrBadWrite, t.Name, err)
		}
		if seen[t.Name] {
			return nil, nil, fmt.Errorf("%w: tensor %q given twice", ErrBadWrite, t.Name)
		}
		seen[t.Name] = true
		sizes[i] = n
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Compare(DTypeSize(tensors[b].DType), DTypeSize(tensors[a].DType))
	})
	doc := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		doc[safetensorsMetadataKey] = metadata
	}
	var off int64
	for _, i := range order {
		shape := tensors[i].Shape
		if shape == nil {
			shape = []int64{}
		}
		doc[tensors[i].Name] = entry{DType: tensors[i].DType, Shape: shape, Offsets: [2]int64{off, off + sizes[i]}}
		off += sizes[i]
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadWrite, err)
	}
	if pad := len(js) % 8; pad != 0 {
		js = append(js, bytes.Repeat([]byte{' '}, 8-pad)...)
	}
	header := make([]byte, 8, 8+len(js))
	for i, n := 0, uint64(len(js)); i < 8; i++ {
		header[i] = byte(n >> (8 * i))
	}
	return append(header, js...), order, nil
}

// writeTensorSize checks t and returns its byte length.
func writeTensorSize(t WriteTensor) (int64, error) {
	if t.Name == "" || t.Name == safetensorsMetadataKey {
		return 0, fmt.Errorf("invalid name")
	}
	size := DTypeSize(t.DType)
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %q", t.DType)
	}
	n := size
	for _, d := range t.Shape {
		if d < 0 || (d != 0 && n > (1<<62)/d) {
			return 0, fmt.Errorf("bad shape %v", t.Shape)
		}
		n *= d
	}
	switch {
	case t.Data != nil && t.Fill != nil:
		return 0, fmt.Errorf("both Data and Fill set")
	case t.Fill == nil && int64(len(t.Data)) != n:
		return 0, fmt.Errorf("shape %v of %s needs %d bytes, Data has %d", t.Shape, t.DType, n, len(t.Data))
	}
	return n, nil
}

// writeTensorData writes t's bytes, checking that Fill writes the right amount.
func writeTensorData(w io.Writer, t *WriteTensor) error {
	if t.Fill == nil {
		_, err := w.Write(t.Data)
		return err
	}
	n, _ := writeTensorSize(*t)
	cw := &exactWriter{w: w, left: n}
	if err := t.Fill(cw); err != nil {
		return err
	}
	if cw.left != 0 {
		return fmt.Errorf("%w: Fill wrote %d bytes, want %d", ErrBadWrite, n-cw.left, n)
	}
	return nil
}

// exactWriter passes at most left bytes to w and fails beyond that.
type exactWriter struct {
	w    io.Writer
	left int64
}

func (e *exactWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > e.left {
		return 0, fmt.Errorf("%w: Fill wrote more than the tensor's %d remaining bytes", ErrBadWrite, e.left)
	}
	n, err := e.w.Write(p)
	e.left -= int64(n)
	return n, err
}

// WriteShardedIndex writes dir/model.safetensors.index.json for a sharded
// checkpoint: weightMap maps each tensor name to its shard's file name
// (relative to dir), totalSize is the sum of the tensors' byte sizes.
func WriteShardedIndex(dir string, weightMap map[string]string, totalSize int64) error {
	for name, file := range weightMap {
		if !filepath.IsLocal(file) {
			return fmt.Errorf("%w: tensor %q: shard %q is not a file name inside the directory", ErrBadWrite, name, file)
		}
	}
	doc := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": totalSize}, weightMap}
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadWrite, err)
	}
	path := filepath.Join(dir, SafetensorsIndexFile)
	if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	return nil
}

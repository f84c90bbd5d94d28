package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
)

// File names of a Hugging Face checkpoint directory.
const (
	SafetensorsFile      = "model.safetensors"            // single-file checkpoint
	SafetensorsIndexFile = "model.safetensors.index.json" // sharded checkpoint: weight_map names the shard of each tensor
)

// Checkpoint is a read-only, memory-mapped safetensors checkpoint: one
// model.safetensors file, or the shards listed by model.safetensors.index.json.
// Opening maps the files and checks every header; tensor data is paged in
// by the OS only when read, so a worker touching only its shard of the
// weights reads only those pages.
//
// Methods are safe for concurrent use, but Close must not run concurrently
// with them: slices aliasing the mapping (from Rows and Bytes) become
// invalid at Close and touching them afterwards crashes the process.
type Checkpoint struct {
	path    string // directory or file given to OpenCheckpoint
	shards  []*safetensorsShard
	tensors map[string]*checkpointTensor
	names   []string
	closed  atomic.Bool
}

type safetensorsShard struct {
	path     string
	data     []byte // the whole file, mapped read-only
	release  func() error
	metadata map[string]string
}

type checkpointTensor struct {
	info  TensorInfo
	shard *safetensorsShard
}

// OpenCheckpoint opens the safetensors checkpoint in dir: the shards named
// by model.safetensors.index.json when it exists, else model.safetensors.
// dir may also be the path of a single .safetensors file. Every header is
// checked (see ErrBadCheckpoint); an index naming a missing file, or a
// tensor not in the shard the index names, is an error.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: dir, Reason: "cannot open checkpoint", Err: err}
	}
	if !st.IsDir() {
		return openShards(dir, []string{dir}, nil)
	}
	index := filepath.Join(dir, SafetensorsIndexFile)
	data, err := os.ReadFile(index)
	switch {
	case err == nil:
		return openIndexed(dir, index, data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: index, Reason: "cannot read index", Err: err}
	}
	single := filepath.Join(dir, SafetensorsFile)
	if _, err := os.Stat(single); err != nil {
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: dir,
			Reason: fmt.Sprintf("no %s or %s", SafetensorsFile, SafetensorsIndexFile), Err: err}
	}
	return openShards(dir, []string{single}, nil)
}

// openIndexed opens the shards of a sharded checkpoint.
func openIndexed(dir, index string, data []byte) (*Checkpoint, error) {
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: index, Reason: "bad JSON", Err: err}
	}
	if len(idx.WeightMap) == 0 {
		return nil, ckptErr(ErrBadCheckpoint, index, "", "weight_map is missing or empty")
	}
	want := make(map[string]string, len(idx.WeightMap)) // tensor -> shard path
	var files []string
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		file := idx.WeightMap[name]
		if !filepath.IsLocal(file) {
			return nil, ckptErr(ErrBadCheckpoint, index, name, "weight_map file %q is not a path inside the checkpoint directory", file)
		}
		path := filepath.Join(dir, file)
		want[name] = path
		if !seen[path] {
			seen[path] = true
			files = append(files, path)
			if _, err := os.Stat(path); err != nil {
				return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: index, Tensor: name,
					Reason: fmt.Sprintf("weight_map names shard %q", file), Err: err}
			}
		}
	}
	return openShards(dir, files, want)
}

// openShards maps files and builds the tensor table. want, when non-nil,
// maps each tensor the index lists to the shard that must hold it.
func openShards(path string, files []string, want map[string]string) (_ *Checkpoint, err error) {
	ck := &Checkpoint{path: path, tensors: map[string]*checkpointTensor{}}
	defer func() {
		if err != nil {
			ck.Close()
		}
	}()
	for _, file := range files {
		data, release, err := mapFile(file)
		if err != nil {
			return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: file, Reason: "cannot map", Err: err}
		}
		sh := &safetensorsShard{path: file, data: data, release: release}
		ck.shards = append(ck.shards, sh)
		if err := ck.addShard(sh); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		t, ok := ck.tensors[name]
		if !ok {
			return nil, ckptErr(ErrMissingTensor, want[name], name, "listed in %s but not in the shard", SafetensorsIndexFile)
		}
		if t.info.File != want[name] {
			return nil, ckptErr(ErrBadCheckpoint, t.info.File, name, "%s places it in %s", SafetensorsIndexFile, want[name])
		}
	}
	ck.names = slices.Sorted(maps.Keys(ck.tensors))
	return ck, nil
}

// addShard parses sh's header and adds its tensors; a tensor already in
// another shard is an error.
func (ck *Checkpoint) addShard(sh *safetensorsShard) error {
	h, err := parseSafetensorsHeader(sh.path, sh.data)
	if err != nil {
		return err
	}
	sh.metadata = h.metadata
	for _, name := range slices.Sorted(maps.Keys(h.tensors)) {
		if prev, ok := ck.tensors[name]; ok {
			return ckptErr(ErrBadCheckpoint, sh.path, name, "also in %s", prev.info.File)
		}
		ck.tensors[name] = &checkpointTensor{info: h.tensors[name], shard: sh}
	}
	return nil
}

// Close unmaps every file. Slices returned by Rows and Bytes that alias the
// mapping must not be used afterwards. Close is idempotent.
func (ck *Checkpoint) Close() error {
	if ck.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, sh := range ck.shards {
		if sh.release != nil {
			if err := sh.release(); err != nil {
				errs = append(errs, fmt.Errorf("model: unmap %s: %w", sh.path, err))
			}
		}
		sh.data = nil
	}
	return errors.Join(errs...)
}

// Names returns the names of all tensors, sorted.
func (ck *Checkpoint) Names() []string { return slices.Clone(ck.names) }

// Metadata returns the __metadata__ of the checkpoint's files merged (for a
// sharded checkpoint, later shards win on conflicting keys).
func (ck *Checkpoint) Metadata() map[string]string {
	m := map[string]string{}
	for _, sh := range ck.shards {
		maps.Copy(m, sh.metadata)
	}
	return m
}

// Info describes tensor name; a missing tensor is ErrMissingTensor.
func (ck *Checkpoint) Info(name string) (TensorInfo, error) {
	t, err := ck.lookup(name)
	if err != nil {
		return TensorInfo{}, err
	}
	info := t.info
	info.Shape = slices.Clone(info.Shape)
	return info, nil
}

func (ck *Checkpoint) lookup(name string) (*checkpointTensor, error) {
	if ck.closed.Load() {
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: ck.path, Tensor: name, Reason: "checkpoint is closed", Err: fs.ErrClosed}
	}
	t, ok := ck.tensors[name]
	if !ok {
		return nil, ckptErr(ErrMissingTensor, ck.path, name, "no such tensor")
	}
	return t, nil
}

// bytesOf returns the tensor's bytes inside the mapping.
func (t *checkpointTensor) bytesOf() []byte {
	return t.shard.data[t.info.Offset : t.info.Offset+t.info.Size : t.info.Offset+t.info.Size]
}

// Bytes returns the raw little-endian bytes of tensor name, aliasing the
// mapping: read-only (writing to it crashes the process) and valid until
// Close.
func (ck *Checkpoint) Bytes(name string) ([]byte, error) {
	t, err := ck.lookup(name)
	if err != nil {
		return nil, err
	}
	return t.bytesOf(), nil
}

// F32 returns tensor name converted to a new float32 slice of
// Info(name).Elements() values in row-major order. F32, BF16 and F16 tensors
// can be read; others are ErrUnsupportedDType.
func (ck *Checkpoint) F32(name string) ([]float32, error) {
	t, err := ck.readable(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.info.Elements())
	decodeToF32(out, t.bytesOf(), t.info.DType)
	return out, nil
}

func (ck *Checkpoint) readable(name string) (*checkpointTensor, error) {
	t, err := ck.lookup(name)
	if err != nil {
		return nil, err
	}
	if !readableDType(t.info.DType) {
		return nil, ckptErr(ErrUnsupportedDType, t.info.File, name, "dtype %s cannot be read as numbers; readable: F32, BF16, F16", t.info.DType)
	}
	return t, nil
}

// Tensor2D is a [Rows, Cols] row-major block of a 2-D tensor. Exactly one of
// F32 and BF16 holds the Rows×Cols values, according to DType ("F32" or
// "BF16"; F16 tensors are widened to F32).
type Tensor2D struct {
	DType      string
	Rows, Cols int
	F32        []float32
	BF16       []uint16 // bfloat16 bit patterns; see BF16ToF32
}

// Float32 returns the values as float32: t.F32 itself, or BF16 widened into
// a new slice.
func (t Tensor2D) Float32() []float32 {
	if t.BF16 == nil {
		return t.F32
	}
	out := make([]float32, len(t.BF16))
	for i, b := range t.BF16 {
		out[i] = BF16ToF32(b)
	}
	return out
}

// matrix checks that tensor name is a readable 2-D tensor and returns its dims.
func (ck *Checkpoint) matrix(name, op string) (*checkpointTensor, int, int, error) {
	t, err := ck.readable(name)
	if err != nil {
		return nil, 0, 0, err
	}
	if len(t.info.Shape) != 2 {
		return nil, 0, 0, ckptErr(ErrBadRange, t.info.File, name, "%s needs a 2-D tensor, shape is %v", op, t.info.Shape)
	}
	return t, int(t.info.Shape[0]), int(t.info.Shape[1]), nil
}

// Rows returns rows [r0, r1) of 2-D tensor name without reading the others.
// For F32 and BF16 tensors the result aliases the mapping (no copy): it is
// read-only (writing to it crashes the process) and valid until Close. If the
// data is not aligned for its element type, or the host is big-endian, the
// rows are copied instead. F16 rows are converted into a new F32 slice.
func (ck *Checkpoint) Rows(name string, r0, r1 int) (Tensor2D, error) {
	t, rows, cols, err := ck.matrix(name, "Rows")
	if err != nil {
		return Tensor2D{}, err
	}
	if r0 < 0 || r1 < r0 || r1 > rows {
		return Tensor2D{}, ckptErr(ErrBadRange, t.info.File, name, "rows [%d, %d) out of range for shape %v", r0, r1, t.info.Shape)
	}
	es := int(dtypeSizes[t.info.DType])
	b := t.bytesOf()[r0*cols*es : r1*cols*es]
	out := Tensor2D{Rows: r1 - r0, Cols: cols}
	switch t.info.DType {
	case DTypeBF16:
		out.DType = DTypeBF16
		if out.BF16 = aliasU16(b); out.BF16 == nil {
			out.BF16 = make([]uint16, len(b)/2)
			decodeU16(out.BF16, b)
		}
	case DTypeF32:
		out.DType = DTypeF32
		if out.F32 = aliasF32(b); out.F32 != nil {
			break
		}
		fallthrough
	default:
		out.DType = DTypeF32
		out.F32 = make([]float32, out.Rows*cols)
		decodeToF32(out.F32, b, t.info.DType)
	}
	return out, nil
}

// Cols returns columns [c0, c1) of every row of 2-D tensor name, copied into
// a new slice (BF16 stays BF16; F16 is widened to F32).
func (ck *Checkpoint) Cols(name string, c0, c1 int) (Tensor2D, error) {
	t, rows, cols, err := ck.matrix(name, "Cols")
	if err != nil {
		return Tensor2D{}, err
	}
	if c0 < 0 || c1 < c0 || c1 > cols {
		return Tensor2D{}, ckptErr(ErrBadRange, t.info.File, name, "columns [%d, %d) out of range for shape %v", c0, c1, t.info.Shape)
	}
	es := int(dtypeSizes[t.info.DType])
	data := t.bytesOf()
	w := c1 - c0
	out := Tensor2D{DType: DTypeF32, Rows: rows, Cols: w}
	if t.info.DType == DTypeBF16 {
		out.DType = DTypeBF16
		out.BF16 = make([]uint16, rows*w)
	} else {
		out.F32 = make([]float32, rows*w)
	}
	if w == 0 {
		return out, nil // also avoids looping over the rows of a [huge, 0] tensor
	}
	for r := range rows {
		src := data[(r*cols+c0)*es : (r*cols+c1)*es]
		if out.BF16 != nil {
			decodeU16(out.BF16[r*w:(r+1)*w], src)
		} else {
			decodeToF32(out.F32[r*w:(r+1)*w], src, t.info.DType)
		}
	}
	return out, nil
}

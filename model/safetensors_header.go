package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Errors returned by the safetensors reader, always inside a *CheckpointError
// that names the file and, where there is one, the tensor.
var (
	// ErrBadCheckpoint: a file is truncated, its header is malformed, or
	// its offsets, shapes or dtypes are inconsistent; or an index names a
	// shard that is missing.
	ErrBadCheckpoint = errors.New("model: bad checkpoint")
	// ErrMissingTensor: the checkpoint has no tensor of that name.
	ErrMissingTensor = errors.New("model: missing tensor")
	// ErrUnsupportedDType: the tensor's dtype is valid safetensors but
	// cannot be read as numbers (only F32, BF16 and F16 can).
	ErrUnsupportedDType = errors.New("model: unsupported tensor dtype")
	// ErrBadRange: a Rows or Cols request does not fit the tensor (range out
	// of bounds or a tensor that is not 2-D).
	ErrBadRange = errors.New("model: tensor range out of bounds")
)

// CheckpointError reports a problem with one checkpoint file or tensor.
// errors.Is matches Kind (one of the Err* sentinels above) and Err.
type CheckpointError struct {
	Kind   error  // ErrBadCheckpoint, ErrMissingTensor, ErrUnsupportedDType or ErrBadRange
	File   string // the file concerned
	Tensor string // the tensor concerned; empty for whole-file problems
	Reason string
	Err    error // underlying cause (e.g. from the OS), may be nil
}

func (e *CheckpointError) Error() string {
	var b strings.Builder
	b.WriteString("model: ")
	b.WriteString(e.File)
	if e.Tensor != "" {
		b.WriteString(": tensor ")
		b.WriteString(strconv.Quote(e.Tensor))
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Kind and Err so errors.Is finds both.
func (e *CheckpointError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func ckptErr(kind error, file, tensor, format string, args ...any) *CheckpointError {
	return &CheckpointError{Kind: kind, File: file, Tensor: tensor, Reason: fmt.Sprintf(format, args...)}
}

// TensorInfo describes one tensor of a checkpoint.
type TensorInfo struct {
	Name  string
	File  string  // path of the .safetensors file holding it
	DType string  // "F32", "BF16", "F16", or another safetensors dtype
	Shape []int64 // row-major; [out, in] for Linear weights
	// Offset is the absolute byte offset of the tensor's data in File and
	// Size its length in bytes: data is File[Offset, Offset+Size).
	Offset, Size int64
}

// Elements returns the number of elements, the product of Shape.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

const (
	safetensorsMetadataKey = "__metadata__"
	// maxHeaderSize bounds the JSON header, as the reference implementation does.
	maxHeaderSize = 100 << 20
)

// safetensorsHeader is a parsed and checked safetensors header.
type safetensorsHeader struct {
	dataStart int64 // absolute offset of the byte buffer
	tensors   map[string]TensorInfo
	metadata  map[string]string
}

type headerEntry struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int64 `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

// parseSafetensorsHeader parses and checks the header of a safetensors file
// whose complete contents are data: the 8-byte little-endian header length,
// the JSON header, then the byte buffer. Every tensor's shape, dtype and
// offsets are checked against each other and against len(data); tensors must
// not overlap. It never panics.
func parseSafetensorsHeader(file string, data []byte) (*safetensorsHeader, error) {
	if len(data) < 8 {
		return nil, ckptErr(ErrBadCheckpoint, file, "", "truncated: %d bytes, need at least 8 for the header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8) {
		return nil, ckptErr(ErrBadCheckpoint, file, "", "header length %d larger than the %d bytes after it", n, len(data)-8)
	}
	if n > maxHeaderSize {
		return nil, ckptErr(ErrBadCheckpoint, file, "", "header length %d over the %d-byte limit", n, maxHeaderSize)
	}
	raw := data[8 : 8+n]
	if len(bytes.TrimSpace(raw)) == 0 || bytes.TrimSpace(raw)[0] != '{' {
		return nil, ckptErr(ErrBadCheckpoint, file, "", "header is not a JSON object")
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: file, Reason: "bad JSON header", Err: err}
	}
	h := &safetensorsHeader{
		dataStart: int64(8 + n),
		tensors:   make(map[string]TensorInfo, len(entries)),
	}
	bufLen := int64(len(data)) - h.dataStart
	for name, msg := range entries {
		if name == safetensorsMetadataKey {
			if err := json.Unmarshal(msg, &h.metadata); err != nil {
				return nil, &CheckpointError{Kind: ErrBadCheckpoint, File: file, Reason: "__metadata__ must map strings to strings", Err: err}
			}
			continue
		}
		info, err := parseHeaderEntry(file, name, msg, bufLen)
		if err != nil {
			return nil, err
		}
		info.Offset += h.dataStart
		h.tensors[name] = info
	}
	if err := checkOverlaps(file, h.tensors); err != nil {
		return nil, err
	}
	return h, nil
}

// parseHeaderEntry checks one tensor entry; Offset is returned relative to
// the byte buffer of length bufLen.
func parseHeaderEntry(file, name string, msg json.RawMessage, bufLen int64) (TensorInfo, error) {
	var e headerEntry
	if err := json.Unmarshal(msg, &e); err != nil {
		return TensorInfo{}, &CheckpointError{Kind: ErrBadCheckpoint, File: file, Tensor: name, Reason: "bad header entry", Err: err}
	}
	if e.DType == nil || e.Shape == nil || e.Offsets == nil {
		return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "header entry needs dtype, shape and data_offsets")
	}
	size := dtypeSizes[*e.DType]
	if size == 0 {
		return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "unknown dtype %q", *e.DType)
	}
	off := *e.Offsets
	if len(off) != 2 {
		return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "data_offsets must have 2 entries, has %d", len(off))
	}
	if off[0] < 0 || off[1] < off[0] || off[1] > bufLen {
		return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "data_offsets [%d, %d] out of range: data is %d bytes", off[0], off[1], bufLen)
	}
	shape := *e.Shape
	elems := int64(1)
	for _, d := range shape {
		if d < 0 {
			return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "negative dimension in shape %v", shape)
		}
		if d != 0 && elems > math.MaxInt64/size/d {
			return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "shape %v overflows", shape)
		}
		elems *= d
	}
	if elems*size != off[1]-off[0] {
		return TensorInfo{}, ckptErr(ErrBadCheckpoint, file, name, "shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d",
			shape, *e.DType, elems*size, off[0], off[1], off[1]-off[0])
	}
	return TensorInfo{
		Name: name, File: file, DType: *e.DType,
		Shape:  append([]int64{}, shape...),
		Offset: off[0], Size: off[1] - off[0],
	}, nil
}

// checkOverlaps rejects tensors whose byte ranges intersect. Empty tensors
// overlap nothing.
func checkOverlaps(file string, tensors map[string]TensorInfo) error {
	list := make([]TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		if t.Size > 0 {
			list = append(list, t)
		}
	}
	slices.SortFunc(list, func(a, b TensorInfo) int {
		if a.Offset != b.Offset {
			return cmpInt64(a.Offset, b.Offset)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := 1; i < len(list); i++ {
		prev, cur := list[i-1], list[i]
		if cur.Offset < prev.Offset+prev.Size {
			return ckptErr(ErrBadCheckpoint, file, cur.Name, "data overlaps tensor %q", prev.Name)
		}
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

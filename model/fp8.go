package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/moemesh/moemesh/kernels"
)

// DTypeF8E4M3 is the safetensors name of FP8 E4M3 (the FN variant: no
// infinities, ±448 the largest values), the weight type of Qwen's -FP8
// checkpoints.
const DTypeF8E4M3 = "F8_E4M3"

// ScaleSuffix follows a weight's name to name its block scales
// ("...q_proj.weight" → "...q_proj.weight_scale_inv"). Despite the name
// the stored values multiply the codes: W = e4m3(code) × scale_inv.
const ScaleSuffix = "_scale_inv"

// QuantConfig is the quantization_config of an FP8 checkpoint, as written
// by Hugging Face transformers' FineGrainedFP8 integration:
//
//	{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
//	 "weight_block_size": [128, 128], "modules_to_not_convert": [...]}
//
// Which tensors are quantized is read from their dtypes, not from
// ModulesToNotConvert, which is kept for reference.
type QuantConfig struct {
	QuantMethod         string   `json:"quant_method"`
	Fmt                 string   `json:"fmt"`
	ActivationScheme    string   `json:"activation_scheme"`
	WeightBlockSize     []int    `json:"weight_block_size"`
	ModulesToNotConvert []string `json:"modules_to_not_convert"`
}

// ParseQuantConfig decodes and checks a quantization_config object. Null
// or absent returns (nil, nil). Absent fmt means e4m3 and absent
// activation_scheme dynamic; weight_block_size is required (moemesh reads
// block-wise scales only). Errors are *ConfigError naming the field.
func ParseQuantConfig(raw json.RawMessage) (*QuantConfig, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var q QuantConfig
	if err := json.Unmarshal(raw, &q); err != nil {
		if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
			f := "quantization_config." + te.Field
			return nil, configErr(f, "%s must be %s, got a JSON %s", f, goTypeWord(te.Type.Kind().String()), te.Value)
		}
		return nil, configErr("quantization_config", "quantization_config must be an object or null, got %s", abbrev(raw))
	}
	if q.QuantMethod != "fp8" {
		return nil, configErr("quantization_config.quant_method", "quantization_config.quant_method %q not supported; supported: fp8", q.QuantMethod)
	}
	if q.Fmt == "" {
		q.Fmt = "e4m3"
	}
	if q.Fmt != "e4m3" {
		return nil, configErr("quantization_config.fmt", "quantization_config.fmt %q not supported; supported: e4m3", q.Fmt)
	}
	if q.ActivationScheme == "" {
		q.ActivationScheme = "dynamic"
	}
	if q.ActivationScheme != "dynamic" {
		return nil, configErr("quantization_config.activation_scheme", "quantization_config.activation_scheme %q not supported; supported: dynamic (weights are dequantized, activations stay float32)", q.ActivationScheme)
	}
	if len(q.WeightBlockSize) != 2 || q.WeightBlockSize[0] <= 0 || q.WeightBlockSize[1] <= 0 ||
		q.WeightBlockSize[0] > maxConfigSize || q.WeightBlockSize[1] > maxConfigSize {
		return nil, configErr("quantization_config.weight_block_size", "quantization_config.weight_block_size %v must be two positive integers [rows, cols] (per-tensor scales are not supported)", q.WeightBlockSize)
	}
	return &q, nil
}

// fp8Layout checks an F8_E4M3 weight [rows, cols] and its scale tensor
// against the block size: the scales must be F32, BF16 or F16 of shape
// [ceil(rows/br), ceil(cols/bc)]. Errors wrap ErrWeights and name the tensor.
func fp8Layout(w, s TensorInfo, block []int) error {
	if len(w.Shape) != 2 {
		return fmt.Errorf("%w: FP8 tensor %s in %s has shape %v, want 2-D", ErrWeights, w.Name, w.File, w.Shape)
	}
	if !readableDType(s.DType) {
		return fmt.Errorf("%w: scale tensor %s in %s has dtype %s; want F32, BF16 or F16", ErrWeights, s.Name, s.File, s.DType)
	}
	br, bc := int64(block[0]), int64(block[1])
	want := []int64{(w.Shape[0] + br - 1) / br, (w.Shape[1] + bc - 1) / bc}
	if !slices.Equal(s.Shape, want) {
		return fmt.Errorf("%w: scale tensor %s in %s has shape %v; weight %s %v in quantization_config.weight_block_size %v needs %v",
			ErrWeights, s.Name, s.File, s.Shape, w.Name, w.Shape, block, want)
	}
	return nil
}

// fp8Tensor loads rows [r0, r1) and columns [c0, c1) of the F8_E4M3
// weight name with the part of its scale grid they touch. Full-width row
// ranges alias the mapping; a column slice is copied.
func (l *loader) fp8Tensor(dst *Tensor, info TensorInfo, r0, r1, c0, c1 int) error {
	name := info.Name
	if l.quant == nil {
		return fmt.Errorf("%w: tensor %s in %s is %s but config.json has no quantization_config", ErrWeights, name, info.File, DTypeF8E4M3)
	}
	fw, ok := l.b.(kernels.FP8Weights)
	if !ok {
		return fmt.Errorf("%w: tensor %s is %s and backend %s cannot multiply FP8 weights", ErrBackend, name, DTypeF8E4M3, l.b.Name())
	}
	sinfo, err := l.ck.Info(name + ScaleSuffix)
	if err != nil {
		return fmt.Errorf("%w: FP8 tensor %s has no scales: %w", ErrWeights, name, err)
	}
	if err := fp8Layout(info, sinfo, l.quant.WeightBlockSize); err != nil {
		return err
	}
	rows, cols := int(info.Shape[0]), int(info.Shape[1])
	if r0 < 0 || r1 < r0 || r1 > rows || c0 < 0 || c1 < c0 || c1 > cols {
		return fmt.Errorf("%w: FP8 tensor %s %v: slice rows [%d,%d) columns [%d,%d) out of range", ErrShard, name, info.Shape, r0, r1, c0, c1)
	}
	raw, err := l.ck.Bytes(name)
	if err != nil {
		return err
	}
	codes := raw[r0*cols : r1*cols : r1*cols]
	if c0 != 0 || c1 != cols {
		w := c1 - c0
		codes = make([]byte, (r1-r0)*w)
		for r := range r1 - r0 {
			copy(codes[r*w:(r+1)*w], raw[(r0+r)*cols+c0:(r0+r)*cols+c1])
		}
	}
	all, err := l.ck.F32(sinfo.Name)
	if err != nil {
		return err
	}
	br, bc := l.quant.WeightBlockSize[0], l.quant.WeightBlockSize[1]
	sc := int(sinfo.Shape[1])
	f := kernels.FP8Matrix{Codes: codes, Rows: r1 - r0, Cols: c1 - c0, BlockRows: br, BlockCols: bc, RowOff: r0 % br, ColOff: c0 % bc}
	b0, b1 := r0/br, f.ScaleRows()+r0/br
	k0, k1 := c0/bc, f.ScaleCols()+c0/bc
	f.Scales = make([]float32, 0, (b1-b0)*(k1-k0))
	for bi := b0; bi < b1; bi++ {
		for bj := k0; bj < k1; bj++ {
			v := all[bi*sc+bj]
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < 0 {
				return fmt.Errorf("%w: scale tensor %s in %s: block [%d, %d] is %g; scales must be finite and non-negative", ErrWeights, sinfo.Name, sinfo.File, bi, bj, v)
			}
			f.Scales = append(f.Scales, v)
		}
	}
	buf, err := fw.WrapFP8(f)
	if err != nil {
		return fmt.Errorf("model: loading %s: %w", name, err)
	}
	*dst = Tensor{Buf: buf, Rows: f.Rows, Cols: f.Cols}
	return nil
}

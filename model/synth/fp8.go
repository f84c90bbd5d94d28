package synth

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/moemesh/moemesh/model"
)

// FP8Block is the block size of a generated FP8 checkpoint: one scale per
// 128×128 block of a weight, as in Qwen's -FP8 releases (partial blocks at
// the edges of smaller weights).
const FP8Block = 128

// e4m3Max is the largest finite E4M3 (FN variant) value.
const e4m3Max = 448

// EncodeE4M3 rounds x to the nearest FP8 E4M3 (FN variant: bias 7, three
// mantissa bits, no infinities), ties to even, saturating at ±448; NaN
// gives the NaN code 0x7F. Inverse of kernels.E4M3ToF32 on every finite code.
func EncodeE4M3(x float32) byte {
	if x != x {
		return 0x7F
	}
	var sign byte
	if math.Signbit(float64(x)) {
		sign, x = 0x80, -x
	}
	bits := math.Float32bits(x)
	exp := int(bits>>23) - 127
	var code int
	if exp < -6 { // subnormal in E4M3: multiples of 2⁻⁹ below 2⁻⁶ (2⁻⁶ itself is code 8)
		code = int(math.RoundToEven(float64(x) * 512))
	} else {
		mant := bits & 0x7FFFFF
		q, rem := int(mant>>20), mant&0xFFFFF
		if rem > 0x80000 || rem == 0x80000 && q&1 == 1 {
			q++ // a carry into the exponent is the next code
		}
		code = (exp+7)<<3 + q
	}
	return sign | byte(min(code, 0x7E))
}

// quantizeFP8 quantizes a [rows, cols] float32 matrix in blocks of
// FP8Block×FP8Block as Qwen's and DeepSeek's FP8 recipe does: each block's
// scale (weight_scale_inv) is its largest magnitude / 448, its codes are
// E4M3(w / scale), so W ≈ E4M3ToF32(code) × scale. An all-zero block has
// scale 1 and zero codes.
func quantizeFP8(w []float32, rows, cols int) (codes []byte, scales []float32) {
	sr, sc := (rows+FP8Block-1)/FP8Block, (cols+FP8Block-1)/FP8Block
	codes, scales = make([]byte, rows*cols), make([]float32, sr*sc)
	for bi := range sr {
		r0, r1 := bi*FP8Block, min((bi+1)*FP8Block, rows)
		for bj := range sc {
			c0, c1 := bj*FP8Block, min((bj+1)*FP8Block, cols)
			var amax float32
			for r := r0; r < r1; r++ {
				for _, v := range w[r*cols+c0 : r*cols+c1] {
					amax = max(amax, float32(math.Abs(float64(v))))
				}
			}
			s := amax / e4m3Max
			if s == 0 {
				s = 1
			}
			scales[bi*sc+bj] = s
			for r := r0; r < r1; r++ {
				for c := c0; c < c1; c++ {
					codes[r*cols+c] = EncodeE4M3(w[r*cols+c] / s)
				}
			}
		}
	}
	return codes, scales
}

// quantized reports whether a generated FP8 checkpoint stores the tensor
// as F8_E4M3: the attention projections and every MLP or expert
// projection; embeddings, norms, the router and lm_head stay BF16.
func (s spec) quantized() bool { return s.linear }

// quantConfig is the quantization_config of a generated FP8 checkpoint,
// with modules_to_not_convert as Qwen's -FP8 releases list it (lm_head,
// and per layer both norms and the router).
func quantConfig(c *model.Config) (json.RawMessage, error) {
	skip := []string{"lm_head"}
	for l := range c.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		skip = append(skip, p+"input_layernorm", p+"post_attention_layernorm")
		if c.IsMoELayer(l) {
			skip = append(skip, p+"mlp.gate")
		}
	}
	return json.Marshal(model.QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic",
		WeightBlockSize: []int{FP8Block, FP8Block}, ModulesToNotConvert: skip})
}

package synth

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// nearestE4M3 is the reference encoder: the finite code nearest x by
// exhaustive search, ties to the even code, saturating at ±448.
func nearestE4M3(x float32) byte {
	best, bestD := byte(0), math.Inf(1)
	for c := range 0x7F { // 0x00..0x7E: the finite non-negative codes
		d := math.Abs(math.Abs(float64(x)) - float64(kernels.E4M3ToF32(byte(c))))
		if d < bestD || d == bestD && c%2 == 0 {
			best, bestD = byte(c), d
		}
	}
	if math.Signbit(float64(x)) {
		best |= 0x80
	}
	return best
}

// TestEncodeE4M3: every finite code round-trips through kernels.E4M3ToF32;
// midpoints between neighbours go to the even code; random values,
// subnormal, normal and beyond 448, get the nearest code.
func TestEncodeE4M3(t *testing.T) {
	for c := range 256 {
		if c&0x7F == 0x7F {
			continue // NaN
		}
		v := kernels.E4M3ToF32(byte(c))
		if got := EncodeE4M3(v); got != byte(c) {
			t.Errorf("EncodeE4M3(%g) = %#02x, want %#02x", v, got, c)
		}
	}
	for c := range 0x7E {
		lo, hi := kernels.E4M3ToF32(byte(c)), kernels.E4M3ToF32(byte(c+1))
		mid := (lo + hi) / 2 // exact in float32
		want := byte(c)
		if c%2 == 1 {
			want = byte(c + 1)
		}
		if got := EncodeE4M3(mid); got != want {
			t.Errorf("EncodeE4M3(%g, between %#02x and %#02x) = %#02x, want %#02x", mid, c, c+1, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		x := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(22)-12)) // ±2⁻¹² … ±2¹⁰
		if got, want := EncodeE4M3(x), nearestE4M3(x); got != want {
			t.Fatalf("EncodeE4M3(%g) = %#02x (%g), want %#02x (%g)", x, got, kernels.E4M3ToF32(got), want, kernels.E4M3ToF32(want))
		}
	}
	if got := EncodeE4M3(float32(math.NaN())); got&0x7F != 0x7F {
		t.Errorf("EncodeE4M3(NaN) = %#02x, want a NaN code", got)
	}
}

// TestQuantizeFP8: on a matrix with partial edge blocks (200×130 in
// 128×128), each block's scale is its largest magnitude / 448 and every
// weight comes back within half an E4M3 step: 2⁻⁴ of itself in the
// normal range, 2⁻¹⁰ × scale in the subnormal one.
func TestQuantizeFP8(t *testing.T) {
	const rows, cols = 200, 130
	rng := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * math.Ldexp(1, (i/cols)/FP8Block*4)) // the two block rows differ in scale ×16
	}
	for i := range FP8Block { // one all-zero block: rows 0..127, columns 128..129
		w[i*cols+128], w[i*cols+129] = 0, 0
	}
	codes, scales := quantizeFP8(w, rows, cols)
	if len(codes) != rows*cols || len(scales) != 2*2 {
		t.Fatalf("%d codes, %d scales; want %d, 4", len(codes), len(scales), rows*cols)
	}
	var amax [4]float32
	for r := range rows {
		for c := range cols {
			b := (r/FP8Block)*2 + c/FP8Block
			amax[b] = max(amax[b], float32(math.Abs(float64(w[r*cols+c]))))
		}
	}
	want := []float32{amax[0] / 448, 1, amax[2] / 448, amax[3] / 448}
	if diff := cmp.Diff(want, scales); diff != "" {
		t.Errorf("scales (-want +got):\n%s", diff)
	}
	for r := range rows {
		for c := range cols {
			s := float64(scales[(r/FP8Block)*2+c/FP8Block])
			x := float64(w[r*cols+c])
			got := float64(kernels.E4M3ToF32(codes[r*cols+c])) * s
			if bound := max(math.Abs(x)/16, s/1024) * (1 + 1e-6); math.Abs(got-x) > bound {
				t.Fatalf("w[%d, %d] = %g comes back as %g: error %g beyond %g", r, c, x, got, math.Abs(got-x), bound)
			}
		}
	}
}

// logits runs three sequences (1, 5 and 12 tokens) through the model in
// dir and returns every position's logits.
func logits(t *testing.T, dir string) [][]float32 {
	t.Helper()
	m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{BlockSize: 4, ContextTokens: 64, CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var seqs []model.SeqInput
	next := int32(0)
	for i, n := range []int{1, 5, 12} {
		s := model.SeqInput{ID: uint64(i), AllLogits: true}
		for j := range n {
			s.Tokens = append(s.Tokens, int32((i*37+j*101+3)%m.Cfg.VocabSize))
		}
		for ; len(s.Blocks)*4 < n; next++ {
			s.Blocks = append(s.Blocks, next)
		}
		seqs = append(seqs, s)
	}
	rows, err := m.Forward(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// dequantize writes an F32 checkpoint of the FP8 checkpoint src's weights
// exactly dequantized (e4m3(code) × scale of its block) into a new
// directory, and returns it with the relative L2 distance of those
// projections from the BF16 checkpoint ref of the same seed.
func dequantize(t *testing.T, src, ref string) (string, float64) {
	t.Helper()
	cfg, err := model.LoadConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := model.OpenCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	rk, err := model.OpenCheckpoint(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()
	var tensors []model.WriteTensor
	var num, den float64
	for _, s := range tensorSpecs(cfg) {
		info, err := ck.Info(s.name)
		if err != nil {
			t.Fatal(err)
		}
		var vals []float32
		if info.DType == model.DTypeF8E4M3 {
			codes, err := ck.Bytes(s.name)
			if err != nil {
				t.Fatal(err)
			}
			scales, err := ck.F32(s.name + model.ScaleSuffix)
			if err != nil {
				t.Fatal(err)
			}
			rows, cols := int(s.shape[0]), int(s.shape[1])
			sc := (cols + FP8Block - 1) / FP8Block
			vals = make([]float32, rows*cols)
			for i, c := range codes {
				vals[i] = kernels.E4M3ToF32(c) * scales[(i/cols/FP8Block)*sc+(i%cols)/FP8Block]
			}
			want, err := rk.F32(s.name)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				d := float64(vals[i]) - float64(want[i])
				num, den = num+d*d, den+float64(want[i])*float64(want[i])
			}
		} else if vals, err = ck.F32(s.name); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 0, 4*len(vals))
		for _, v := range vals {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
		tensors = append(tensors, model.WriteTensor{Name: s.name, DType: model.DTypeF32, Shape: s.shape, Data: data})
	}
	dir := t.TempDir()
	if err := model.WriteSafetensors(filepath.Join(dir, model.SafetensorsFile), tensors, nil); err != nil {
		t.Fatal(err)
	}
	cfg.QuantizationConfig, cfg.TorchDType = nil, "float32"
	cj, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, math.Sqrt(num / den)
}

// TestGenerateFP8: an FP8 checkpoint has its projections in F8_E4M3 with
// scales of [ceil(out/128), ceil(in/128)] in the second shard, the rest in
// BF16, a quantization_config the model package accepts, and it loads.
//
//   - Its logits are those of an F32 checkpoint of its weights dequantized
//     (1e-5 relative L2 at every position): the file holds what the
//     quantizer made, and it is read as such.
//   - Its projections are those of the BF16 checkpoint of the same seed
//     within E4M3's resolution: 3 mantissa bits, a rounding step of 2⁻³ of
//     a binade, error uniform within half a step: RMS 2⁻³/√12 of 2^e
//     against values of RMS ≈ 1.53·2^e, about 2.4% relative L2 (bf16's
//     own 2⁻⁸ step adds 0.1%). The bound is [1.5%, 3.5%]: a coarser or
//     finer code, or scales off by a power of two, fall outside.
//   - Its logits are the BF16 ones within what those weight errors make
//     through two layers of four projections each (errors add in
//     quadrature, ≈ √8 × 2.4% ≈ 7%): on average within 10%, and at least
//     0.5% (a checkpoint that was not quantized). A single position may
//     move further where the perturbation changes an expert of its top-2
//     routing (the router picks among near-equal logits): each within 30%.
func TestGenerateFP8(t *testing.T) {
	dir := t.TempDir()
	f8, b16 := filepath.Join(dir, "fp8"), filepath.Join(dir, "bf16")
	for path, dt := range map[string]string{f8: "fp8", b16: "bf16"} {
		if err := Generate(path, Options{Config: smallConfig(t), Seed: 7, DType: dt}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := model.LoadConfig(f8)
	if err != nil {
		t.Fatal(err)
	}
	q, err := model.ParseQuantConfig(cfg.QuantizationConfig)
	if err != nil || q == nil {
		t.Fatalf("quantization_config %s: %v", cfg.QuantizationConfig, err)
	}
	if diff := cmp.Diff(&model.QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic", WeightBlockSize: []int{128, 128},
		ModulesToNotConvert: []string{"lm_head",
			"model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm", "model.layers.0.mlp.gate",
			"model.layers.1.input_layernorm", "model.layers.1.post_attention_layernorm", "model.layers.1.mlp.gate"}}, q); diff != "" {
		t.Errorf("quantization_config (-want +got):\n%s", diff)
	}
	ck, err := model.OpenCheckpoint(f8)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	specs := tensorSpecs(cfg)
	var nf8 int
	for _, s := range specs {
		info, err := ck.Info(s.name)
		if err != nil {
			t.Fatal(err)
		}
		want := model.DTypeBF16
		if s.linear {
			want = model.DTypeF8E4M3
			nf8++
			sinfo, err := ck.Info(s.name + model.ScaleSuffix)
			if err != nil {
				t.Fatal(err)
			}
			wantShape := []int64{(s.shape[0] + 127) / 128, (s.shape[1] + 127) / 128}
			if sinfo.DType != model.DTypeF32 || !cmp.Equal(sinfo.Shape, wantShape) || filepath.Base(sinfo.File) != FP8ScalesFile {
				t.Errorf("%s: %s %v in %s, want F32 %v in %s", sinfo.Name, sinfo.DType, sinfo.Shape, filepath.Base(sinfo.File), wantShape, FP8ScalesFile)
			}
		}
		if info.DType != want {
			t.Errorf("%s: %s, want %s", s.name, info.DType, want)
		}
	}
	if got := len(ck.Names()); got != len(specs)+nf8 {
		t.Errorf("%d tensors, want %d weights and %d scales", got, len(specs), nf8)
	}

	deq, werr := dequantize(t, f8, b16)
	if werr < 0.015 || werr > 0.035 {
		t.Errorf("FP8 projections off the BF16 ones by %.3g relative L2, want E4M3's ≈ 2.4%% (within [1.5%%, 3.5%%])", werr)
	}
	got, exact, want := logits(t, f8), logits(t, deq), logits(t, b16)
	if len(got) != len(want) || len(exact) != len(want) {
		t.Fatalf("%d, %d logits rows, want %d", len(got), len(exact), len(want))
	}
	var worst, sum float64
	for i := range want {
		if e := relL2(got[i], exact[i]); math.IsNaN(e) || e > 1e-5 {
			t.Errorf("position %d: FP8 logits off those of the dequantized weights by %.3g relative L2, beyond 1e-5", i, e)
		}
		e := relL2(got[i], want[i])
		if math.IsNaN(e) || e > 0.3 {
			t.Errorf("position %d: FP8 logits off the BF16 ones by %.3g relative L2, beyond 30%%", i, e)
		}
		worst, sum = max(worst, e), sum+e
	}
	mean := sum / float64(len(want))
	if mean < 0.005 || mean > 0.1 {
		t.Errorf("FP8 logits off the BF16 ones by %.3g relative L2 on average, want within [0.5%%, 10%%]", mean)
	}
	t.Logf("FP8 vs BF16: projections %.3g relative L2; logits worst %.3g, mean %.3g over %d positions", werr, worst, mean, len(want))
}

// TestGenerateYaRN: YaRN rope_scaling lands in config.json, the model
// loads, and its context is factor × original_max_position_embeddings
// when that exceeds max_position_embeddings (40,960).
func TestGenerateYaRN(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		factor  float64
		orig    int
		context int
	}{
		{"yarn:4", 4, 32768, 131072}, // Qwen3's recipe
		{"yarn:2:30000", 2, 30000, 60000},
		{"yarn:1.5:8192", 1.5, 8192, 40960}, // 12,288 < max_position_embeddings
	} {
		t.Run(tc.flag, func(t *testing.T) {
			y, err := ParseRopeScaling(tc.flag)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := Generate(dir, Options{Config: smallConfig(t), Seed: 1, DType: "bf16", YaRN: y}); err != nil {
				t.Fatal(err)
			}
			cfg, err := model.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.Rope()
			if p.Type != model.RopeTypeYaRN || p.Factor != tc.factor || p.OriginalMaxPos != tc.orig {
				t.Errorf("rope %s, want yarn factor %g over %d", p, tc.factor, tc.orig)
			}
			if got := cfg.ContextLength(); got != tc.context {
				t.Errorf("ContextLength = %d, want %d", got, tc.context)
			}
			if cfg.MaxPositionEmbeddings != 40960 {
				t.Errorf("max_position_embeddings %d, want 40960 kept", cfg.MaxPositionEmbeddings)
			}
			m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{ContextTokens: 64, CloseBackend: true})
			if err != nil {
				t.Fatal(err)
			}
			if m.ContextLength() != tc.context {
				t.Errorf("Model.ContextLength = %d, want %d", m.ContextLength(), tc.context)
			}
			m.Close()
		})
	}
}

func TestParseRopeScaling(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *YaRN
		ok   bool
	}{
		{"", nil, true},
		{"none", nil, true},
		{"yarn:4", &YaRN{Factor: 4}, true},
		{"yarn:2.5:16384", &YaRN{Factor: 2.5, Original: 16384}, true},
		{"yarn", nil, false},
		{"yarn:", nil, false},
		{"yarn:0.5", nil, false},
		{"yarn:NaN", nil, false},
		{"yarn:inf", nil, false},
		{"yarn:4:0", nil, false},
		{"yarn:4:-1", nil, false},
		{"yarn:4:32768:1", nil, false},
		{"linear:4", nil, false},
		{"dynamic", nil, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRopeScaling(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseRopeScaling(%q) error %v, want ok %v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrPreset) {
				t.Errorf("error %v does not wrap ErrPreset", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

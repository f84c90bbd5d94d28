package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/kernels"
)

// fp8Fixture is one F8_E4M3 weight [40, 64] in 16×16 blocks (partial last
// block row) with its scales, written in the given scale dtype. The scales
// are powers of two, exact in F32, BF16 and F16.
type fp8Fixture struct {
	codes  []byte
	scales []float32 // [3, 4]
	ref    []float64 // dequantized in float64
}

const fp8Name = "model.layers.0.self_attn.q_proj.weight"

func newFP8Fixture() fp8Fixture {
	var f fp8Fixture
	f.codes = make([]byte, 40*64)
	for i := range f.codes {
		c := byte((i*37 + 11) % 256)
		if c&0x7f == 0x7f {
			c = 0x3a
		}
		f.codes[i] = c
	}
	f.scales = make([]float32, 12)
	for i := range f.scales {
		f.scales[i] = float32(math.Ldexp(1, i%5-8))
	}
	f.ref = make([]float64, 40*64)
	for i := range 40 {
		for j := range 64 {
			f.ref[i*64+j] = float64(kernels.E4M3ToF32(f.codes[i*64+j])) * float64(f.scales[(i/16)*4+j/16])
		}
	}
	return f
}

func (f fp8Fixture) write(t *testing.T, scaleDType string, scaleShape []int64) *Checkpoint {
	t.Helper()
	var sdata []byte
	for _, s := range f.scales {
		switch scaleDType {
		case DTypeF32:
			sdata = binary.LittleEndian.AppendUint32(sdata, math.Float32bits(s))
		case DTypeBF16:
			sdata = binary.LittleEndian.AppendUint16(sdata, F32ToBF16(s))
		case DTypeF16:
			sdata = binary.LittleEndian.AppendUint16(sdata, F32ToF16(s))
		default:
			sdata = binary.LittleEndian.AppendUint32(sdata, 1)
		}
	}
	n := int64(1)
	for _, d := range scaleShape {
		n *= d
	}
	es := int64(len(sdata) / len(f.scales))
	for int64(len(sdata)) < n*es {
		sdata = append(sdata, sdata[:es]...)
	}
	path := filepath.Join(t.TempDir(), "w.safetensors")
	err := WriteSafetensors(path, []WriteTensor{
		{Name: fp8Name, DType: DTypeF8E4M3, Shape: []int64{40, 64}, Data: f.codes},
		{Name: fp8Name + ScaleSuffix, DType: scaleDType, Shape: scaleShape, Data: sdata[:n*es]},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck
}

// dequant reads a loaded weight [rows, cols] back through MatMul with the
// identity: out[i, j] = Σ_k I[i,k]·W[j,k] = W[j,i].
func dequant(t *testing.T, b *kernels.CPU, w Tensor) []float64 {
	t.Helper()
	k, n := w.Cols, w.Rows
	eye := make([]float32, k*k)
	for i := range k {
		eye[i*k+i] = 1
	}
	out := make([]float32, k*n)
	b.MatMul(b.WrapF32(out), b.WrapF32(eye), w.Buf, k, n, k)
	got := make([]float64, n*k)
	for i := range k {
		for j := range n {
			got[j*k+i] = float64(out[i*n+j])
		}
	}
	return got
}

func TestFP8SlicesAndScaleDTypes(t *testing.T) {
	f := newFP8Fixture()
	b := kernels.NewCPU()
	defer b.Close()
	quant := &QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic", WeightBlockSize: []int{16, 16}}
	slices := []struct{ r0, r1, c0, c1 int }{
		{0, 40, 0, 64},  // whole, partial last block row
		{16, 32, 0, 64}, // aligned row slice
		{8, 30, 0, 64},  // rows cutting blocks at both ends
		{0, 40, 5, 37},  // columns cutting blocks
		{33, 40, 48, 64},
		{3, 4, 63, 64},
	}
	for _, dt := range []string{DTypeF32, DTypeBF16, DTypeF16} {
		ck := f.write(t, dt, []int64{3, 4})
		l := &loader{ck: ck, b: b, quant: quant}
		info, err := ck.Info(fp8Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range slices {
			t.Run(fmt.Sprintf("%s/rows%d-%d/cols%d-%d", dt, s.r0, s.r1, s.c0, s.c1), func(t *testing.T) {
				var w Tensor
				if err := l.fp8Tensor(&w, info, s.r0, s.r1, s.c0, s.c1); err != nil {
					t.Fatal(err)
				}
				if w.Rows != s.r1-s.r0 || w.Cols != s.c1-s.c0 {
					t.Fatalf("shape [%d, %d], want [%d, %d]", w.Rows, w.Cols, s.r1-s.r0, s.c1-s.c0)
				}
				var want []float64
				for i := s.r0; i < s.r1; i++ {
					want = append(want, f.ref[i*64+s.c0:i*64+s.c1]...)
				}
				if diff := cmp.Diff(want, dequant(t, b, w)); diff != "" {
					t.Errorf("dequantized slice (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestFP8Rejects(t *testing.T) {
	f := newFP8Fixture()
	b := kernels.NewCPU()
	defer b.Close()
	quant := &QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic", WeightBlockSize: []int{16, 16}}
	tests := []struct {
		name       string
		scaleDType string
		scaleShape []int64
		quant      *QuantConfig
		want       error
	}{
		{"scale shape", DTypeF32, []int64{3, 5}, quant, ErrWeights},
		{"scale 1-D", DTypeF32, []int64{12}, quant, ErrWeights},
		{"block size does not match", DTypeF32, []int64{3, 4}, &QuantConfig{WeightBlockSize: []int{128, 128}}, ErrWeights},
		{"integer scales", "I32", []int64{3, 4}, quant, ErrWeights},
		{"no quantization_config", DTypeF32, []int64{3, 4}, nil, ErrWeights},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck := f.write(t, tc.scaleDType, tc.scaleShape)
			info, err := ck.Info(fp8Name)
			if err != nil {
				t.Fatal(err)
			}
			l := &loader{ck: ck, b: b, quant: tc.quant}
			var w Tensor
			if err := l.fp8Tensor(&w, info, 0, 40, 0, 64); !errors.Is(err, tc.want) {
				t.Errorf("fp8Tensor = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("negative scale", func(t *testing.T) {
		g := newFP8Fixture()
		g.scales[7] = -1
		ck := g.write(t, DTypeF32, []int64{3, 4})
		info, _ := ck.Info(fp8Name)
		var w Tensor
		if err := (&loader{ck: ck, b: b, quant: quant}).fp8Tensor(&w, info, 0, 40, 0, 64); !errors.Is(err, ErrWeights) {
			t.Errorf("fp8Tensor = %v, want ErrWeights", err)
		}
	})
}

func TestParseQuantConfig(t *testing.T) {
	tests := []struct {
		name      string
		raw       string
		want      *QuantConfig
		wantField string
	}{
		{"absent", ``, nil, ""},
		{"null", `null`, nil, ""},
		{"qwen", `{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]}`,
			&QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic", WeightBlockSize: []int{128, 128}}, ""},
		{"defaults", `{"quant_method":"fp8","weight_block_size":[16,8],"modules_to_not_convert":["lm_head"]}`,
			&QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic", WeightBlockSize: []int{16, 8}, ModulesToNotConvert: []string{"lm_head"}}, ""},
		{"awq", `{"quant_method":"awq","weight_block_size":[128,128]}`, nil, "quantization_config.quant_method"},
		{"e5m2", `{"quant_method":"fp8","fmt":"e5m2","weight_block_size":[128,128]}`, nil, "quantization_config.fmt"},
		{"static", `{"quant_method":"fp8","activation_scheme":"static","weight_block_size":[128,128]}`, nil, "quantization_config.activation_scheme"},
		{"per tensor", `{"quant_method":"fp8"}`, nil, "quantization_config.weight_block_size"},
		{"one block dim", `{"quant_method":"fp8","weight_block_size":[128]}`, nil, "quantization_config.weight_block_size"},
		{"zero block", `{"quant_method":"fp8","weight_block_size":[0,128]}`, nil, "quantization_config.weight_block_size"},
		{"string block", `{"quant_method":"fp8","weight_block_size":"128"}`, nil, "quantization_config.weight_block_size"},
		{"not an object", `[1]`, nil, "quantization_config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuantConfig([]byte(tc.raw))
			if tc.wantField != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Field != tc.wantField {
					t.Fatalf("ParseQuantConfig = %v, want a ConfigError for %s", err, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzFP8Header checks quantization_config parsing and the weight/scale
// layout check on arbitrary input: never a panic; an accepted layout has
// a scale grid that covers the weight exactly, so kernels accept it.
func FuzzFP8Header(f *testing.F) {
	f.Add([]byte(`{"quant_method":"fp8","fmt":"e4m3","weight_block_size":[16,16]}`), int64(40), int64(64), int64(3), int64(4), "F32")
	f.Add([]byte(`{"quant_method":"fp8","weight_block_size":[128,128]}`), int64(4096), int64(1536), int64(32), int64(12), "BF16")
	f.Add([]byte(`{"quant_method":"fp8","weight_block_size":[1,1]}`), int64(0), int64(5), int64(0), int64(5), "F16")
	f.Fuzz(func(t *testing.T, raw []byte, rows, cols, srows, scols int64, sdt string) {
		q, err := ParseQuantConfig(raw)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("error %v does not wrap ErrBadConfig", err)
			}
			return
		}
		if q == nil {
			return
		}
		if rows < 0 || cols < 0 || rows > 1<<20 || cols > 1<<20 {
			return // the safetensors header check bounds shapes before this
		}
		w := TensorInfo{Name: "w", DType: DTypeF8E4M3, Shape: []int64{rows, cols}}
		s := TensorInfo{Name: "w" + ScaleSuffix, DType: sdt, Shape: []int64{srows, scols}}
		if err := fp8Layout(w, s, q.WeightBlockSize); err != nil {
			if !errors.Is(err, ErrWeights) {
				t.Fatalf("error %v does not wrap ErrWeights", err)
			}
			return
		}
		if rows*cols > 1<<16 {
			return
		}
		m := kernels.FP8Matrix{Codes: make([]byte, rows*cols), Scales: make([]float32, srows*scols),
			Rows: int(rows), Cols: int(cols), BlockRows: q.WeightBlockSize[0], BlockCols: q.WeightBlockSize[1]}
		if err := m.Check(); err != nil {
			t.Fatalf("fp8Layout accepted %v with scales %v in blocks %v, kernels reject it: %v", w.Shape, s.Shape, q.WeightBlockSize, err)
		}
	})
}

// TestFP8TensorParallelSlices loads tiny-af as every rank of TP 2, 4 and
// 8 and checks each rank's q/k/v/o weights are the matching rows or
// columns of the whole dequantized weights.
func TestFP8TensorParallelSlices(t *testing.T) {
	dir := filepath.Join("testdata", "tiny-af")
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	b := kernels.NewCPU()
	defer b.Close()
	full, err := LoadWeights(ck, cfg, b, Shard{})
	if err != nil {
		t.Fatal(err)
	}
	if full.Layers[0].Q.Buf.DType() != kernels.F8E4M3 || full.Layers[0].Experts[0].Down.Buf.DType() != kernels.F8E4M3 {
		t.Fatalf("tiny-af q_proj/down_proj loaded as %v/%v, want F8_E4M3", full.Layers[0].Q.Buf.DType(), full.Layers[0].Experts[0].Down.Buf.DType())
	}
	ly := full.Layers[1]
	whole := map[string][]float64{"q": dequant(t, b, ly.Q), "k": dequant(t, b, ly.K), "v": dequant(t, b, ly.V), "o": dequant(t, b, ly.O)}
	d := cfg.HeadDim
	for _, tp := range []int{2, 4, 8} {
		for r := range tp {
			t.Run(fmt.Sprintf("tp%d/rank%d", tp, r), func(t *testing.T) {
				s := Shard{TPRank: r, TPSize: tp}
				w, err := LoadWeights(ck, cfg, b, s)
				if err != nil {
					t.Fatal(err)
				}
				q, kv, err := s.Heads(cfg)
				if err != nil {
					t.Fatal(err)
				}
				rows := func(m []float64, cols, lo, hi int) []float64 { return m[lo*cols : hi*cols] }
				var o []float64
				for i := range cfg.HiddenSize {
					o = append(o, whole["o"][i*ly.O.Cols+q.Lo*d:i*ly.O.Cols+q.Hi*d]...)
				}
				sl := w.Layers[1]
				for _, c := range []struct {
					name      string
					want, got []float64
				}{
					{"q", rows(whole["q"], cfg.HiddenSize, q.Lo*d, q.Hi*d), dequant(t, b, sl.Q)},
					{"k", rows(whole["k"], cfg.HiddenSize, kv.Lo*d, kv.Hi*d), dequant(t, b, sl.K)},
					{"v", rows(whole["v"], cfg.HiddenSize, kv.Lo*d, kv.Hi*d), dequant(t, b, sl.V)},
					{"o", o, dequant(t, b, sl.O)},
				} {
					if diff := cmp.Diff(c.want, c.got); diff != "" {
						t.Errorf("%s_proj slice (-want +got):\n%s", c.name, diff)
					}
				}
			})
		}
	}
}

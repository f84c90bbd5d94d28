package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestBF16Conversions(t *testing.T) {
	// Every bfloat16 survives widening and narrowing unchanged (NaNs stay NaN).
	for b := range 1 << 16 {
		f := BF16ToF32(uint16(b))
		got := F32ToBF16(f)
		if f != f {
			if g := BF16ToF32(got); g == g {
				t.Fatalf("F32ToBF16(NaN %#04x) = %#04x, not a NaN", b, got)
			}
			continue
		}
		if got != uint16(b) {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", b, got)
		}
	}
	tests := []struct {
		name string
		in   uint32 // float32 bits
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"below half rounds down", 0x3f807fff, 0x3f80},
		{"half to even (down)", 0x3f808000, 0x3f80},
		{"half to even (up)", 0x3f818000, 0x3f82},
		{"above half rounds up", 0x3f808001, 0x3f81},
		{"max float rounds to inf", 0x7f7fffff, 0x7f80},
		{"-inf", 0xff800000, 0xff80},
		{"-0", 0x80000000, 0x8000},
		{"signalling NaN made quiet", 0x7f800001, 0x7fc0},
		{"negative NaN keeps sign and payload", 0xffa50000, 0xffe5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := F32ToBF16(math.Float32frombits(tc.in)); got != tc.want {
				t.Errorf("F32ToBF16(%#08x) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

func TestF16Conversions(t *testing.T) {
	for h := range 1 << 16 {
		f := F16ToF32(uint16(h))
		got := F32ToF16(f)
		if f != f {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("F16ToF32(%#04x) = NaN for a non-NaN", h)
			}
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("F32ToF16(NaN from %#04x) = %#04x, not a NaN", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("F32ToF16(F16ToF32(%#04x) = %g) = %#04x", h, f, got)
		}
	}
	widen := []struct {
		in   uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 0x1p-24}, {0x03ff, 1023 * 0x1p-24},
		{0x0400, 0x1p-14}, {0x3555, 0.333251953125}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	}
	for _, tc := range widen {
		if got := F16ToF32(tc.in); got != tc.want {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tc.in, got, tc.want)
		}
	}
	if got := math.Float32bits(F16ToF32(0x8000)); got != 0x80000000 {
		t.Errorf("F16ToF32(-0) bits = %#x, want -0", got)
	}
	narrow := []struct {
		name string
		in   float32
		want uint16
	}{
		{"65519 rounds to max", 65519, 0x7bff},
		{"65520 rounds to inf", 65520, 0x7c00},
		{"1+2^-11 tie to even", 1 + 0x1p-11, 0x3c00},
		{"1+3*2^-11 tie to even up", 1 + 3*0x1p-11, 0x3c02},
		{"half smallest subnormal ties to zero", 0x1p-25, 0x0000},
		{"just above half smallest subnormal", 0x1p-25 * (1 + 0x1p-20), 0x0001},
		{"1.5 smallest subnormal ties to even", 1.5 * 0x1p-24, 0x0002},
		{"subnormal rounds up to normal", 0x1p-14 * (1 - 0x1p-12), 0x0400},
		{"tiny negative", -1e-30, 0x8000},
		{"huge", 1e30, 0x7c00},
	}
	for _, tc := range narrow {
		t.Run(tc.name, func(t *testing.T) {
			if got := F32ToF16(tc.in); got != tc.want {
				t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

// encode returns vals as little-endian bytes of dtype.
func encode(t *testing.T, dtype string, vals []float32) []byte {
	t.Helper()
	var out []byte
	for _, v := range vals {
		switch dtype {
		case DTypeF32:
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		case DTypeBF16:
			out = binary.LittleEndian.AppendUint16(out, F32ToBF16(v))
		case DTypeF16:
			out = binary.LittleEndian.AppendUint16(out, F32ToF16(v))
		default:
			t.Fatalf("encode: dtype %s", dtype)
		}
	}
	return out
}

// ramp returns n values exactly representable in F32, BF16 and F16.
func ramp(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(i%97-48) / 8
	}
	return out
}

func writeFile(t *testing.T, path string, tensors []WriteTensor, meta map[string]string) {
	t.Helper()
	if err := WriteSafetensors(path, tensors, meta); err != nil {
		t.Fatalf("WriteSafetensors: %v", err)
	}
}

func openCheckpoint(t *testing.T, path string) *Checkpoint {
	t.Helper()
	ck, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatalf("OpenCheckpoint: %v", err)
	}
	t.Cleanup(func() {
		if err := ck.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ck
}

func TestSafetensorsRoundTrip(t *testing.T) {
	const rows, cols = 7, 5
	vals := ramp(rows * cols)
	for _, dtype := range []string{DTypeF32, DTypeBF16, DTypeF16} {
		t.Run(dtype, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, SafetensorsFile), []WriteTensor{
				{Name: "w", DType: dtype, Shape: []int64{rows, cols}, Data: encode(t, dtype, vals)},
				{Name: "v", DType: dtype, Shape: []int64{3}, Data: encode(t, dtype, vals[:3])},
				{Name: "empty", DType: dtype, Shape: []int64{0, cols}},
				{Name: "scalar", DType: dtype, Shape: nil, Data: encode(t, dtype, []float32{2.5})},
			}, map[string]string{"format": "pt"})
			ck := openCheckpoint(t, dir)

			if diff := cmp.Diff([]string{"empty", "scalar", "v", "w"}, ck.Names()); diff != "" {
				t.Errorf("Names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]string{"format": "pt"}, ck.Metadata()); diff != "" {
				t.Errorf("Metadata (-want +got):\n%s", diff)
			}
			info, err := ck.Info("w")
			if err != nil {
				t.Fatal(err)
			}
			es := DTypeSize(dtype)
			wantInfo := TensorInfo{Name: "w", File: filepath.Join(dir, SafetensorsFile), DType: dtype,
				Shape: []int64{rows, cols}, Size: rows * cols * es}
			if diff := cmp.Diff(wantInfo, info, cmpopts.IgnoreFields(TensorInfo{}, "Offset")); diff != "" {
				t.Errorf("Info (-want +got):\n%s", diff)
			}
			raw, err := os.ReadFile(info.File)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(encode(t, dtype, vals), raw[info.Offset:info.Offset+info.Size]); diff != "" {
				t.Errorf("file bytes at Info offset (-want +got):\n%s", diff)
			}

			for name, want := range map[string][]float32{"w": vals, "v": vals[:3], "empty": {}, "scalar": {2.5}} {
				got, err := ck.F32(name)
				if err != nil {
					t.Fatalf("F32(%s): %v", name, err)
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("F32(%s) (-want +got):\n%s", name, diff)
				}
			}
			b, err := ck.Bytes("w")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(encode(t, dtype, vals), b); diff != "" {
				t.Errorf("Bytes (-want +got):\n%s", diff)
			}
		})
	}
}

// submatrix returns rows [r0,r1) and columns [c0,c1) of a rows×cols matrix.
func submatrix(m []float32, cols, r0, r1, c0, c1 int) []float32 {
	out := []float32{}
	for r := r0; r < r1; r++ {
		out = append(out, m[r*cols+c0:r*cols+c1]...)
	}
	return out
}

func TestRowsCols(t *testing.T) {
	const rows, cols = 6, 9
	vals := ramp(rows * cols)
	dir := t.TempDir()
	var tensors []WriteTensor
	for _, dtype := range []string{DTypeF32, DTypeBF16, DTypeF16} {
		tensors = append(tensors, WriteTensor{Name: dtype, DType: dtype, Shape: []int64{rows, cols}, Data: encode(t, dtype, vals)})
	}
	writeFile(t, filepath.Join(dir, SafetensorsFile), tensors, nil)
	ck := openCheckpoint(t, dir)

	ranges := [][2]int{{0, 0}, {0, 1}, {2, 5}, {0, 6}, {5, 6}, {3, 3}}
	for _, dtype := range []string{DTypeF32, DTypeBF16, DTypeF16} {
		wantDType := dtype
		if dtype == DTypeF16 {
			wantDType = DTypeF32
		}
		for _, rg := range ranges {
			t.Run(fmt.Sprintf("%s rows %v", dtype, rg), func(t *testing.T) {
				got, err := ck.Rows(dtype, rg[0], rg[1])
				if err != nil {
					t.Fatal(err)
				}
				checkTensor2D(t, got, wantDType, rg[1]-rg[0], cols, submatrix(vals, cols, rg[0], rg[1], 0, cols))
			})
			c0, c1 := rg[0], rg[1]+3
			t.Run(fmt.Sprintf("%s cols [%d,%d)", dtype, c0, c1), func(t *testing.T) {
				got, err := ck.Cols(dtype, c0, c1)
				if err != nil {
					t.Fatal(err)
				}
				checkTensor2D(t, got, wantDType, rows, c1-c0, submatrix(vals, cols, 0, rows, c0, c1))
			})
		}
	}
}

func checkTensor2D(t *testing.T, got Tensor2D, dtype string, rows, cols int, want []float32) {
	t.Helper()
	if got.DType != dtype || got.Rows != rows || got.Cols != cols {
		t.Errorf("got %s [%d,%d], want %s [%d,%d]", got.DType, got.Rows, got.Cols, dtype, rows, cols)
	}
	if (got.F32 == nil) == (got.BF16 == nil) {
		t.Errorf("want exactly one of F32 (%d) and BF16 (%d) set", len(got.F32), len(got.BF16))
	}
	if (dtype == DTypeBF16) != (got.BF16 != nil) {
		t.Errorf("DType %s but BF16 set = %v", dtype, got.BF16 != nil)
	}
	if diff := cmp.Diff(want, got.Float32(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
}

// TestRowsAliasing checks that Rows of F32 and BF16 tensors share memory with
// the mapping when aligned, and copy (with the same values) when not.
func TestRowsAliasing(t *testing.T) {
	const rows, cols = 4, 3
	vals := ramp(rows * cols)
	dir := t.TempDir()
	aligned := filepath.Join(dir, "aligned.safetensors")
	writeFile(t, aligned, []WriteTensor{
		{Name: "f32", DType: DTypeF32, Shape: []int64{rows, cols}, Data: encode(t, DTypeF32, vals)},
		{Name: "bf16", DType: DTypeBF16, Shape: []int64{rows, cols}, Data: encode(t, DTypeBF16, vals)},
	}, nil)

	// The same tensors with a 1-byte-longer header, so data starts at an odd offset.
	unaligned := filepath.Join(dir, "unaligned.safetensors")
	js := fmt.Sprintf(`{"f32":{"dtype":"F32","shape":[%d,%d],"data_offsets":[0,%d]},"bf16":{"dtype":"BF16","shape":[%d,%d],"data_offsets":[%d,%d]}} `,
		rows, cols, rows*cols*4, rows, cols, rows*cols*4, rows*cols*6)
	if len(js)%2 == 0 {
		js += " "
	}
	data := append(binary.LittleEndian.AppendUint64(nil, uint64(len(js))), js...)
	data = append(data, encode(t, DTypeF32, vals)...)
	data = append(data, encode(t, DTypeBF16, vals)...)
	if err := os.WriteFile(unaligned, data, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		file      string
		wantAlias bool
	}{{aligned, hostLittleEndian}, {unaligned, false}} {
		ck := openCheckpoint(t, tc.file)
		for _, name := range []string{"f32", "bf16"} {
			t.Run(filepath.Base(tc.file)+"/"+name, func(t *testing.T) {
				raw, err := ck.Bytes(name)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ck.Rows(name, 1, 3)
				if err != nil {
					t.Fatal(err)
				}
				checkTensor2D(t, got, map[string]string{"f32": DTypeF32, "bf16": DTypeBF16}[name], 2, cols, submatrix(vals, cols, 1, 3, 0, cols))
				var p unsafe.Pointer
				if got.F32 != nil {
					p = unsafe.Pointer(&got.F32[0])
				} else {
					p = unsafe.Pointer(&got.BF16[0])
				}
				es := int(DTypeSize(map[string]string{"f32": DTypeF32, "bf16": DTypeBF16}[name]))
				alias := p == unsafe.Pointer(&raw[cols*es])
				if alias != tc.wantAlias {
					t.Errorf("Rows aliases the mapping = %v, want %v", alias, tc.wantAlias)
				}
			})
		}
	}
}

func TestShardedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	a, b := ramp(12), ramp(20)
	writeFile(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), []WriteTensor{
		{Name: "layers.0.w", DType: DTypeBF16, Shape: []int64{3, 4}, Data: encode(t, DTypeBF16, a)},
		{Name: "embed", DType: DTypeF32, Shape: []int64{4, 5}, Data: encode(t, DTypeF32, b)},
	}, map[string]string{"format": "pt"})
	writeFile(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), []WriteTensor{
		{Name: "layers.1.w", DType: DTypeF16, Shape: []int64{3, 4}, Data: encode(t, DTypeF16, a)},
	}, nil)
	if err := WriteShardedIndex(dir, map[string]string{
		"layers.0.w": "model-00001-of-00002.safetensors",
		"embed":      "model-00001-of-00002.safetensors",
		"layers.1.w": "model-00002-of-00002.safetensors",
	}, 12*2+20*4+12*2); err != nil {
		t.Fatal(err)
	}
	ck := openCheckpoint(t, dir)
	if diff := cmp.Diff([]string{"embed", "layers.0.w", "layers.1.w"}, ck.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name, file string
		want       []float32
	}{
		{"embed", "model-00001-of-00002.safetensors", b},
		{"layers.0.w", "model-00001-of-00002.safetensors", a},
		{"layers.1.w", "model-00002-of-00002.safetensors", a},
	} {
		info, err := ck.Info(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := filepath.Base(info.File); got != tc.file {
			t.Errorf("Info(%s).File = %s, want %s", tc.name, got, tc.file)
		}
		got, err := ck.F32(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("F32(%s) (-want +got):\n%s", tc.name, diff)
		}
	}
	rows, err := ck.Rows("layers.1.w", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkTensor2D(t, rows, DTypeF32, 1, 4, a[4:8])
}

// fixtureNames lists the tensors of a Hugging Face Qwen3-MoE checkpoint
// (all layers sparse) with their shapes.
func fixtureNames(c *Config) map[string][]int64 {
	h, q, kv := int64(c.HiddenSize), int64(c.NumAttentionHeads*c.HeadDim), int64(c.NumKeyValueHeads*c.HeadDim)
	m := map[string][]int64{
		"model.embed_tokens.weight": {int64(c.VocabSize), h},
		"lm_head.weight":            {int64(c.VocabSize), h},
		"model.norm.weight":         {h},
	}
	for l := range c.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		m[p+"input_layernorm.weight"] = []int64{h}
		m[p+"post_attention_layernorm.weight"] = []int64{h}
		m[p+"self_attn.q_proj.weight"] = []int64{q, h}
		m[p+"self_attn.k_proj.weight"] = []int64{kv, h}
		m[p+"self_attn.v_proj.weight"] = []int64{kv, h}
		m[p+"self_attn.o_proj.weight"] = []int64{h, q}
		m[p+"self_attn.q_norm.weight"] = []int64{int64(c.HeadDim)}
		m[p+"self_attn.k_norm.weight"] = []int64{int64(c.HeadDim)}
		m[p+"mlp.gate.weight"] = []int64{int64(c.NumExperts), h}
		for e := range c.NumExperts {
			ep := fmt.Sprintf("%smlp.experts.%d.", p, e)
			m[ep+"gate_proj.weight"] = []int64{int64(c.MoeIntermediateSize), h}
			m[ep+"up_proj.weight"] = []int64{int64(c.MoeIntermediateSize), h}
			m[ep+"down_proj.weight"] = []int64{h, int64(c.MoeIntermediateSize)}
		}
	}
	return m
}

func TestFixtureCheckpoints(t *testing.T) {
	type probe struct {
		name      string
		at        int     // flat index
		want      float32 // value at that index
		sum       float64 // sum of all elements
		tolerance float64
	}
	tests := []struct {
		dir    string
		dtype  string
		probes []probe
	}{
		{"tiny-a", DTypeF32, []probe{
			{"model.embed_tokens.weight", 66, 0.235505610704422, -199.80171613093898, 1e-3},
			{"model.layers.1.mlp.experts.3.down_proj.weight", 2047, 0.09513147920370102, 3.8495064646704122, 1e-4},
			{"model.norm.weight", 63, 0.916885256767273, 63.550337851047516, 1e-4},
		}},
		{"tiny-c", DTypeBF16, []probe{
			{"model.embed_tokens.weight", 66, 0.7109375, 208.0376020669937, 1e-3},
			{"model.layers.1.mlp.experts.3.down_proj.weight", 2047, -0.0289306640625, -11.647943496704102, 1e-4},
			{"model.norm.weight", 63, 0.92578125, 64.03515625, 1e-4},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", tc.dir)
			cfg, err := LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			ck := openCheckpoint(t, dir)
			want := fixtureNames(cfg)
			got := map[string][]int64{}
			for _, name := range ck.Names() {
				info, err := ck.Info(name)
				if err != nil {
					t.Fatal(err)
				}
				if info.DType != tc.dtype {
					t.Errorf("%s: dtype %s, want %s", name, info.DType, tc.dtype)
				}
				got[name] = info.Shape
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tensor names and shapes (-want +got):\n%s", diff)
			}
			if !slices.IsSorted(ck.Names()) {
				t.Error("Names() not sorted")
			}
			for _, p := range tc.probes {
				vals, err := ck.F32(p.name)
				if err != nil {
					t.Fatal(err)
				}
				if vals[p.at] != p.want {
					t.Errorf("%s[%d] = %v, want %v", p.name, p.at, vals[p.at], p.want)
				}
				var sum float64
				for _, v := range vals {
					sum += float64(v)
				}
				if math.Abs(sum-p.sum) > p.tolerance {
					t.Errorf("sum(%s) = %v, want %v", p.name, sum, p.sum)
				}
			}
			// A vocab-parallel slice of the embedding equals the same rows of the whole.
			full, err := ck.F32("model.embed_tokens.weight")
			if err != nil {
				t.Fatal(err)
			}
			rows, err := ck.Rows("model.embed_tokens.weight", 1024, 1536)
			if err != nil {
				t.Fatal(err)
			}
			checkTensor2D(t, rows, tc.dtype, 512, cfg.HiddenSize, full[1024*cfg.HiddenSize:1536*cfg.HiddenSize])
		})
	}
}

func ExampleWriteSafetensors() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// A 2×3 bfloat16 matrix, streamed through Fill.
	err = WriteSafetensors(filepath.Join(dir, SafetensorsFile), []WriteTensor{{
		Name: "w", DType: DTypeBF16, Shape: []int64{2, 3},
		Fill: func(w io.Writer) error {
			for _, v := range []float32{1, 2, 3, 4, 5, 6} {
				if _, err := w.Write(binary.LittleEndian.AppendUint16(nil, F32ToBF16(v))); err != nil {
					return err
				}
			}
			return nil
		},
	}}, map[string]string{"format": "pt"})
	if err != nil {
		fmt.Println(err)
		return
	}

	ck, err := OpenCheckpoint(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	all, _ := ck.F32("w")
	cols, _ := ck.Cols("w", 1, 3)
	_, err = ck.Rows("w", 1, 3)
	fmt.Println(all)
	fmt.Println(cols.DType, cols.Rows, cols.Cols, cols.Float32())
	fmt.Println(errors.Is(err, ErrBadRange))
	// Output:
	// [1 2 3 4 5 6]
	// BF16 2 2 [2 3 5 6]
	// true
}

// Package synth makes synthetic Qwen3-MoE checkpoints in Hugging Face
// layout (config.json, model.safetensors, tokenizer files,
// generation_config.json) with random weights, for tests, demos and
// benchmarks where real weights cannot be downloaded.
//
// Weights are drawn from seeded PCG generators, one stream per tensor
// (seeded by the seed and the tensor's index), so a (preset, seed, dtype)
// triple always yields the same bytes however many cores generate them. Scales follow the fixtures' recipe:
// embeddings N(0,1), linear layers N(0,1/fan_in), router N(0,(2/√hidden)²),
// lm_head N(0,(1.5/√hidden)²), norm weights 1+N(0,0.1²).
//
// Variants: DType "fp8" writes the projections as F8_E4M3 with 128×128
// block scales and a quantization_config, as Qwen's -FP8 releases are laid
// out (two shards and an index: weights, then scales); Options.YaRN adds
// YaRN rope_scaling (by default over Qwen3's original 32,768 positions).
package synth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/tokenizer"
)

// ErrPreset reports an unknown preset or dtype.
var ErrPreset = errors.New("synth: unknown preset")

// Presets lists the preset names.
var Presets = []string{"tiny", "bench"}

// Config returns the model config of a preset. Both use the 235B model's
// expert shape: 128 experts, 8 routed per token, 4 KV heads, and the real
// 151,936-row vocabulary.
//
//	tiny:  hidden 64, 2 layers, 8 query heads × 16, experts of 32: ≈21M parameters.
//	bench: hidden 1024, 12 layers, 16 query heads × 128, experts of 256:
//	       ≈1.58B parameters, ≈296M active per token.
func Config(preset string) (*model.Config, error) {
	c := &model.Config{
		ModelType:             "qwen3_moe",
		Architectures:         []string{"Qwen3MoeForCausalLM"},
		VocabSize:             151936,
		NumKeyValueHeads:      4,
		NumExperts:            128,
		NumExpertsPerTok:      8,
		DecoderSparseStep:     1,
		NormTopkProb:          true,
		RMSNormEps:            1e-6,
		RopeTheta:             1e6,
		MaxPositionEmbeddings: 40960,
		HiddenAct:             "silu",
		BOSTokenID:            151643,
		EOSTokenID:            151645,
		EOSTokenIDs:           []int{151645},
	}
	switch preset {
	case "tiny":
		c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads, c.HeadDim = 64, 2, 8, 16
		c.IntermediateSize, c.MoeIntermediateSize = 128, 32
	case "bench":
		c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads, c.HeadDim = 1024, 12, 16, 128
		c.IntermediateSize, c.MoeIntermediateSize = 3072, 256
	default:
		return nil, fmt.Errorf("%w %q; allowed: tiny, bench", ErrPreset, preset)
	}
	return c, nil
}

// Options selects what Generate writes.
type Options struct {
	Preset string
	Seed   uint64
	// DType is the weight type: "bf16" (default), "f32", or "fp8": the
	// attention and MLP/expert projections F8_E4M3 with F32 block scales
	// (FP8Block×FP8Block), everything else BF16. The same seed draws the
	// same weights in every type, each rounded to its own format.
	DType string
	// YaRN, when set, adds YaRN rope_scaling to the config.
	YaRN *YaRN
	// Config, when set, replaces the preset's config (tests shrink models).
	Config *model.Config
	// Progress, when set, is called with bytes written so far and the total.
	Progress func(done, total int64)
}

// DTypes lists the weight types Generate writes.
var DTypes = []string{"f32", "bf16", "fp8"}

// Shard files of an FP8 checkpoint: the weights (BF16 and F8_E4M3), then
// the block scales, which are known only once every code is drawn (a
// safetensors file lays out 4-byte tensors before 1-byte ones, so one file
// would need the scales before the codes). model.safetensors.index.json
// names the file of each tensor.
const (
	FP8WeightsFile = "model-00001-of-00002.safetensors"
	FP8ScalesFile  = "model-00002-of-00002.safetensors"
)

// Generate writes a checkpoint directory at dir (created if absent).
func Generate(dir string, o Options) error {
	cfg := o.Config
	if cfg == nil {
		var err error
		if cfg, err = Config(o.Preset); err != nil {
			return err
		}
	}
	var err error
	dt, size := "BF16", 2
	switch o.DType {
	case "", "bf16":
		cfg.TorchDType = "bfloat16"
	case "f32":
		dt, size = "F32", 4
		cfg.TorchDType = "float32"
	case "fp8":
		cfg.TorchDType = "bfloat16"
		if cfg.QuantizationConfig, err = quantConfig(cfg); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w dtype %q; allowed: f32, bf16, fp8", ErrPreset, o.DType)
	}
	if o.YaRN != nil {
		if cfg.RopeScaling, err = o.YaRN.json(cfg); err != nil {
			return err
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fp8 := o.DType == "fp8"
	jobs := tensorJobs(tensorSpecs(cfg), fp8, size)
	var total int64
	for _, j := range jobs {
		total += j.bytes()
	}
	g := newGenerator(jobs, o.Seed)
	defer g.stop()
	var done int64
	progress := func(n int) {
		done += int64(n)
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	tensors := make([]model.WriteTensor, len(jobs))
	for i, j := range jobs {
		d := dt
		if j.fp8 {
			d = model.DTypeF8E4M3
		}
		tensors[i] = model.WriteTensor{Name: j.spec.name, DType: d, Shape: j.spec.shape, Fill: func(w io.Writer) error {
			data := g.take(i)
			_, err := w.Write(data)
			progress(len(data))
			return err
		}}
	}
	meta := map[string]string{"format": "pt"}
	if !fp8 {
		if err := model.WriteSafetensors(filepath.Join(dir, model.SafetensorsFile), tensors, meta); err != nil {
			return err
		}
	} else if err := writeFP8(dir, jobs, tensors, g, meta, progress); err != nil {
		return err
	}
	cj, err := cfg.Marshal()
	if err != nil {
		return err
	}
	tj, tc, err := tokenizer.Qwen3Files()
	if err != nil {
		return err
	}
	gen := []byte(`{
  "bos_token_id": 151643,
  "do_sample": true,
  "eos_token_id": [151645, 151643],
  "pad_token_id": 151643,
  "temperature": 0.6,
  "top_k": 20,
  "top_p": 0.95
}
`)
	for name, data := range map[string][]byte{
		"config.json": cj, "tokenizer.json": tj, "tokenizer_config.json": tc, "generation_config.json": gen,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeFP8 writes the two shards of an FP8 checkpoint and their index: the
// weights, then the scales the generator kept while it made the codes.
func writeFP8(dir string, jobs []job, tensors []model.WriteTensor, g *generator, meta map[string]string, progress func(int)) error {
	weightMap := map[string]string{}
	var size int64
	for _, j := range jobs {
		weightMap[j.spec.name] = FP8WeightsFile
		size += j.bytes()
	}
	if err := model.WriteSafetensors(filepath.Join(dir, FP8WeightsFile), tensors, meta); err != nil {
		return err
	}
	var scales []model.WriteTensor
	for i, j := range jobs {
		if !j.fp8 {
			continue
		}
		sr, sc := (j.spec.shape[0]+FP8Block-1)/FP8Block, (j.spec.shape[1]+FP8Block-1)/FP8Block
		data := make([]byte, 0, 4*sr*sc)
		for _, v := range g.scales[i] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
		g.scales[i] = nil
		name := j.spec.name + model.ScaleSuffix
		scales = append(scales, model.WriteTensor{Name: name, DType: model.DTypeF32, Shape: []int64{sr, sc}, Data: data})
		weightMap[name] = FP8ScalesFile
		size += int64(len(data))
		progress(len(data))
	}
	if err := model.WriteSafetensors(filepath.Join(dir, FP8ScalesFile), scales, meta); err != nil {
		return err
	}
	return model.WriteShardedIndex(dir, weightMap, size)
}

type spec struct {
	name   string
	shape  []int64
	std    float64
	norm   bool // 1 + N(0, std²)
	linear bool // an attention, MLP or expert projection (FP8 in an FP8 checkpoint)
}

func (s spec) n() int64 {
	n := int64(1)
	for _, d := range s.shape {
		n *= d
	}
	return n
}

func tensorSpecs(c *model.Config) []spec {
	h, d := int64(c.HiddenSize), int64(c.HeadDim)
	q, kv := int64(c.NumAttentionHeads)*d, int64(c.NumKeyValueHeads)*d
	lin := func(name string, out, in int64) spec {
		return spec{name: name, shape: []int64{out, in}, std: 1 / math.Sqrt(float64(in)), linear: true}
	}
	norm := func(name string, n int64) spec { return spec{name: name, shape: []int64{n}, std: 0.1, norm: true} }
	s := []spec{{name: "model.embed_tokens.weight", shape: []int64{int64(c.VocabSize), h}, std: 1}}
	for l := range c.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		s = append(s,
			norm(p+"input_layernorm.weight", h),
			lin(p+"self_attn.q_proj.weight", q, h),
			lin(p+"self_attn.k_proj.weight", kv, h),
			lin(p+"self_attn.v_proj.weight", kv, h),
			lin(p+"self_attn.o_proj.weight", h, q),
			norm(p+"self_attn.q_norm.weight", d),
			norm(p+"self_attn.k_norm.weight", d),
			norm(p+"post_attention_layernorm.weight", h),
		)
		if c.IsMoELayer(l) {
			s = append(s, spec{name: p + "mlp.gate.weight", shape: []int64{int64(c.NumExperts), h}, std: 2 / math.Sqrt(float64(h))})
			in := int64(c.MoeIntermediateSize)
			for e := range c.NumExperts {
				ep := fmt.Sprintf("%smlp.experts.%d.", p, e)
				s = append(s, lin(ep+"gate_proj.weight", in, h), lin(ep+"up_proj.weight", in, h), lin(ep+"down_proj.weight", h, in))
			}
		} else {
			in := int64(c.IntermediateSize)
			s = append(s, lin(p+"mlp.gate_proj.weight", in, h), lin(p+"mlp.up_proj.weight", in, h), lin(p+"mlp.down_proj.weight", h, in))
		}
	}
	s = append(s, norm("model.norm.weight", h))
	if !c.TieWordEmbeddings {
		s = append(s, spec{name: "lm_head.weight", shape: []int64{int64(c.VocabSize), h}, std: 1.5 / math.Sqrt(float64(h))})
	}
	return s
}

// job is one tensor of the file being written: its spec, the index of
// its random stream (its place in tensorSpecs, the same in every dtype),
// and how it is stored.
type job struct {
	spec   spec
	stream int
	fp8    bool // F8_E4M3 codes (the scales are kept aside)
	size   int  // bytes an element otherwise: 4 (F32) or 2 (BF16)
}

func (j job) bytes() int64 {
	if j.fp8 {
		return j.spec.n()
	}
	return j.spec.n() * int64(j.size)
}

// tensorJobs orders specs as model.WriteSafetensors lays them out (by
// decreasing element size, then as given), so the generator computes them
// in the order they are written: in an FP8 checkpoint the BF16 tensors
// first, then the FP8 codes.
func tensorJobs(specs []spec, fp8 bool, size int) []job {
	var wide, codes []job
	for i, s := range specs {
		switch {
		case fp8 && s.quantized():
			codes = append(codes, job{spec: s, stream: i, fp8: true})
		case fp8:
			wide = append(wide, job{spec: s, stream: i, size: 2})
		default:
			wide = append(wide, job{spec: s, stream: i, size: size})
		}
	}
	return append(wide, codes...)
}

// generator makes the tensors' bytes on every core, a little ahead of the
// writer: take(i) returns tensor i, computing it on the spot when no worker
// has, and starts the next tensors in the background. At most cap(sem)
// tensors are computed or held ahead of the writer. Each tensor has its
// own random stream, so the bytes do not depend on who computes them.
// The block scales of FP8 tensors stay in scales until the writer takes
// them (a few bytes per 16,384 weights).
type generator struct {
	jobs    []job
	seed    uint64
	once    []sync.Once
	data    [][]byte
	scales  [][]float32
	started []bool        // computed ahead, holding a slot of sem until taken
	sem     chan struct{} // slots for tensors ahead of the writer
	wg      sync.WaitGroup
	next    int // next tensor to start ahead
}

func newGenerator(jobs []job, seed uint64) *generator {
	return &generator{jobs: jobs, seed: seed, once: make([]sync.Once, len(jobs)),
		data: make([][]byte, len(jobs)), scales: make([][]float32, len(jobs)), started: make([]bool, len(jobs)),
		sem: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
}

func (g *generator) compute(i int) {
	g.once[i].Do(func() {
		j := g.jobs[i]
		if j.fp8 {
			g.data[i], g.scales[i] = fillFP8(j.spec, g.seed, j.stream)
		} else {
			g.data[i] = fill(j.spec, g.seed, j.stream, j.size)
		}
	})
}

// take returns tensor i's bytes and drops the generator's reference to
// them. Only the writer calls it, from one goroutine.
func (g *generator) take(i int) []byte {
	g.compute(i) // waits for a worker that started it
	d := g.data[i]
	g.data[i] = nil
	if g.started[i] {
		<-g.sem
	}
	g.next = max(g.next, i+1)
ahead:
	for ; g.next < len(g.jobs); g.next++ {
		select {
		case g.sem <- struct{}{}:
		default:
			break ahead
		}
		j := g.next
		g.started[j] = true
		g.wg.Go(func() { g.compute(j) })
	}
	return d
}

// stop waits for the workers still running.
func (g *generator) stop() { g.wg.Wait() }

// draw calls put with each of tensor index's values, from its own PCG stream.
func draw(s spec, seed uint64, index int, put func(i int, v float32)) {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f656d657368+uint64(index)))
	for i := range int(s.n()) {
		v := float32(rng.NormFloat64() * s.std)
		if s.norm {
			v += 1
		}
		put(i, v)
	}
}

// fill draws tensor index's values in BF16 (size 2) or F32 (size 4).
func fill(s spec, seed uint64, index, size int) []byte {
	out := make([]byte, int(s.n())*size)
	if size == 2 {
		draw(s, seed, index, func(i int, v float32) { binary.LittleEndian.PutUint16(out[2*i:], model.F32ToBF16(v)) })
	} else {
		draw(s, seed, index, func(i int, v float32) { binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v)) })
	}
	return out
}

// fillFP8 draws a 2-D tensor's values and quantizes them in blocks.
func fillFP8(s spec, seed uint64, index int) ([]byte, []float32) {
	w := make([]float32, s.n())
	draw(s, seed, index, func(i int, v float32) { w[i] = v })
	return quantizeFP8(w, int(s.shape[0]), int(s.shape[1]))
}

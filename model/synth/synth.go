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
	DType  string // "bf16" (default) or "f32"
	// Config, when set, replaces the preset's config (tests shrink models).
	Config *model.Config
	// Progress, when set, is called with bytes written so far and the total.
	Progress func(done, total int64)
}

// Generate writes a checkpoint directory at dir (created if absent).
func Generate(dir string, o Options) error {
	cfg := o.Config
	if cfg == nil {
		var err error
		if cfg, err = Config(o.Preset); err != nil {
			return err
		}
	}
	dt, size := "BF16", 2
	switch o.DType {
	case "", "bf16":
		cfg.TorchDType = "bfloat16"
	case "f32":
		dt, size = "F32", 4
		cfg.TorchDType = "float32"
	default:
		return fmt.Errorf("%w dtype %q; allowed: f32, bf16", ErrPreset, o.DType)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	specs := tensorSpecs(cfg)
	var total int64
	for _, s := range specs {
		total += s.n() * int64(size)
	}
	g := newGenerator(specs, o.Seed, size)
	defer g.stop()
	var done int64
	tensors := make([]model.WriteTensor, len(specs))
	for i, sp := range specs {
		tensors[i] = model.WriteTensor{Name: sp.name, DType: dt, Shape: sp.shape, Fill: func(w io.Writer) error {
			data := g.take(i)
			_, err := w.Write(data)
			done += int64(len(data))
			if o.Progress != nil {
				o.Progress(done, total)
			}
			return err
		}}
	}
	if err := model.WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
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

type spec struct {
	name  string
	shape []int64
	std   float64
	norm  bool // 1 + N(0, std²)
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
		return spec{name: name, shape: []int64{out, in}, std: 1 / math.Sqrt(float64(in))}
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

// generator makes the tensors' bytes on every core, a little ahead of the
// writer: take(i) returns tensor i, computing it on the spot when no worker
// has, and starts the next tensors in the background. At most cap(sem)
// tensors are computed or held ahead of the writer. Each tensor has its
// own random stream, so the bytes do not depend on who computes them.
type generator struct {
	specs   []spec
	seed    uint64
	size    int
	once    []sync.Once
	data    [][]byte
	started []bool        // computed ahead, holding a slot of sem until taken
	sem     chan struct{} // slots for tensors ahead of the writer
	wg      sync.WaitGroup
	next    int // next tensor to start ahead
}

func newGenerator(specs []spec, seed uint64, size int) *generator {
	return &generator{specs: specs, seed: seed, size: size, once: make([]sync.Once, len(specs)),
		data: make([][]byte, len(specs)), started: make([]bool, len(specs)),
		sem: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
}

func (g *generator) compute(i int) {
	g.once[i].Do(func() { g.data[i] = fill(g.specs[i], g.seed, i, g.size) })
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
	for ; g.next < len(g.specs); g.next++ {
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

// fill draws tensor index's values from its own PCG stream.
func fill(s spec, seed uint64, index, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f656d657368+uint64(index)))
	out := make([]byte, int(s.n())*size)
	for i := range int(s.n()) {
		v := float32(rng.NormFloat64() * s.std)
		if s.norm {
			v += 1
		}
		if size == 2 {
			binary.LittleEndian.PutUint16(out[2*i:], model.F32ToBF16(v))
		} else {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	}
	return out
}

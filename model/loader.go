package model

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/moemesh/moemesh/kernels"
)

// ErrShard reports a shard request that does not fit the model.
var ErrShard = errors.New("model: bad shard")

// ErrWeights reports checkpoint tensors that do not match config.json.
var ErrWeights = errors.New("model: weights do not match config")

// LoadWeights loads the shard s of the checkpoint ck into backend b. Tensor
// shapes are checked against cfg; every mismatch names the tensor. Weights in
// F32 or BF16 stay in their checkpoint type (memory-mapped without a copy
// when b is a kernels.HostWrapper); norms are converted to F32. F8_E4M3
// projections of an FP8 checkpoint (quantization_config) are handed to a
// kernels.FP8Weights backend as codes plus the slice of their
// weight_scale_inv block grid the shard needs.
func LoadWeights(ck *Checkpoint, cfg *Config, b kernels.Backend, s Shard) (*Weights, error) {
	return loadWeights(ck, cfg, b, s, nil)
}

func loadWeights(ck *Checkpoint, cfg *Config, b kernels.Backend, s Shard, progress func(done, total int)) (*Weights, error) {
	qh, kvh, err := s.Heads(cfg)
	if err != nil {
		return nil, err
	}
	if s.Experts != nil && len(s.Experts) != cfg.NumHiddenLayers {
		return nil, fmt.Errorf("%w: expert lists for %d layers, model has %d", ErrShard, len(s.Experts), cfg.NumHiddenLayers)
	}
	quant, err := ParseQuantConfig(cfg.QuantizationConfig)
	if err != nil {
		return nil, err
	}
	l := &loader{ck: ck, cfg: cfg, b: b, shard: s, q: qh, kv: kvh, vocab: s.VocabRange(cfg), quant: quant}
	w := &Weights{Layers: make([]Layer, cfg.NumHiddenLayers)}
	if err := l.tensor(&w.Embed, "model.embed_tokens.weight", "vocab"); err != nil {
		return nil, err
	}
	if err := l.tensor(&w.Norm, "model.norm.weight", "f32"); err != nil {
		return nil, err
	}
	if _, err := ck.Info("lm_head.weight"); err != nil && cfg.TieWordEmbeddings {
		w.LMHead = w.Embed
	} else if err := l.tensor(&w.LMHead, "lm_head.weight", "vocab"); err != nil {
		return nil, err
	}
	for i := range w.Layers {
		if err := l.layer(&w.Layers[i], i); err != nil {
			return nil, err
		}
		if progress != nil {
			progress(i+1, len(w.Layers))
		}
	}
	return w, nil
}

type loader struct {
	ck    *Checkpoint
	cfg   *Config
	b     kernels.Backend
	shard Shard
	q, kv HeadRange
	vocab HeadRange
	quant *QuantConfig // nil: no quantization_config
}

func (l *loader) layer(dst *Layer, i int) error {
	prefix := fmt.Sprintf("model.layers.%d.", i)
	moe := l.cfg.IsMoELayer(i)
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	for f := 0; f < t.NumField(); f++ {
		sf := t.Field(f)
		name, split := sf.Tag.Get("st"), sf.Tag.Get("split")
		if m := sf.Tag.Get("moe"); m != "" && (m == "true") != moe {
			continue
		}
		fv := v.Field(f)
		switch fv.Interface().(type) {
		case Tensor:
			if err := l.tensor(fv.Addr().Interface().(*Tensor), prefix+name, split); err != nil {
				return err
			}
		case *Tensor:
			tt := new(Tensor)
			if err := l.tensor(tt, prefix+name, split); err != nil {
				return err
			}
			fv.Set(reflect.ValueOf(tt))
		case *Expert:
			e, err := l.expert(prefix + name + ".")
			if err != nil {
				return err
			}
			fv.Set(reflect.ValueOf(e))
		case []*Expert:
			experts := make([]*Expert, l.cfg.NumExperts)
			ids, err := l.hosted(i)
			if err != nil {
				return err
			}
			for _, id := range ids {
				e, err := l.expert(prefix + fmt.Sprintf(name, id) + ".")
				if err != nil {
					return err
				}
				experts[id] = e
			}
			fv.Set(reflect.ValueOf(experts))
		default:
			return fmt.Errorf("model: unsupported weight field %s", sf.Name)
		}
	}
	return nil
}

func (l *loader) hosted(layer int) ([]int, error) {
	if l.shard.Experts == nil {
		ids := make([]int, l.cfg.NumExperts)
		for i := range ids {
			ids[i] = i
		}
		return ids, nil
	}
	seen := map[int]bool{}
	for _, id := range l.shard.Experts[layer] {
		if id < 0 || id >= l.cfg.NumExperts || seen[id] {
			return nil, fmt.Errorf("%w: layer %d: expert %d out of range [0,%d) or listed twice", ErrShard, layer, id, l.cfg.NumExperts)
		}
		seen[id] = true
	}
	return l.shard.Experts[layer], nil
}

func (l *loader) expert(prefix string) (*Expert, error) {
	e := new(Expert)
	v := reflect.ValueOf(e).Elem()
	for f := 0; f < v.NumField(); f++ {
		name := v.Type().Field(f).Tag.Get("st")
		if err := l.tensor(v.Field(f).Addr().Interface().(*Tensor), prefix+name, ""); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// wantShape returns the full (unsharded) shape of a tensor from config.json.
func (l *loader) wantShape(name string) []int64 {
	c := l.cfg
	h, d := int64(c.HiddenSize), int64(c.HeadDim)
	inter := int64(c.IntermediateSize)
	if strings.Contains(name, ".mlp.experts.") {
		inter = int64(c.MoeIntermediateSize)
	}
	switch {
	case name == "model.embed_tokens.weight", name == "lm_head.weight":
		return []int64{int64(c.VocabSize), h}
	case strings.HasSuffix(name, "layernorm.weight"), name == "model.norm.weight":
		return []int64{h}
	case strings.HasSuffix(name, "q_proj.weight"):
		return []int64{int64(c.NumAttentionHeads) * d, h}
	case strings.HasSuffix(name, "k_proj.weight"), strings.HasSuffix(name, "v_proj.weight"):
		return []int64{int64(c.NumKeyValueHeads) * d, h}
	case strings.HasSuffix(name, "o_proj.weight"):
		return []int64{h, int64(c.NumAttentionHeads) * d}
	case strings.HasSuffix(name, "q_norm.weight"), strings.HasSuffix(name, "k_norm.weight"):
		return []int64{d}
	case strings.HasSuffix(name, "mlp.gate.weight"):
		return []int64{int64(c.NumExperts), h}
	case strings.HasSuffix(name, "gate_proj.weight"), strings.HasSuffix(name, "up_proj.weight"):
		return []int64{inter, h}
	case strings.HasSuffix(name, "down_proj.weight"):
		return []int64{h, inter}
	}
	return nil
}

func (l *loader) tensor(dst *Tensor, name, split string) error {
	info, err := l.ck.Info(name)
	if err != nil {
		return err
	}
	want := l.wantShape(name)
	if want != nil && !slices.Equal(info.Shape, want) {
		return fmt.Errorf("%w: tensor %s in %s has shape %v, config.json implies %v", ErrWeights, name, info.File, info.Shape, want)
	}
	if info.DType == DTypeF8E4M3 {
		return l.fp8Split(dst, info, split)
	}
	if split == "f32" {
		vals, err := l.ck.F32(name)
		if err != nil {
			return err
		}
		buf, err := l.b.Alloc(kernels.F32, len(vals))
		if err != nil {
			return err
		}
		if err := l.b.WriteF32(buf, 0, vals); err != nil {
			return err
		}
		*dst = Tensor{Buf: buf, Rows: 1, Cols: len(vals)}
		return nil
	}
	if len(info.Shape) != 2 {
		return fmt.Errorf("%w: tensor %s in %s has shape %v, want 2-D", ErrWeights, name, info.File, info.Shape)
	}
	rows, cols := int(info.Shape[0]), int(info.Shape[1])
	d := l.cfg.HeadDim
	var t Tensor2D
	switch split {
	case "qrows":
		t, err = l.ck.Rows(name, l.q.Lo*d, l.q.Hi*d)
	case "kvrows":
		t, err = l.ck.Rows(name, l.kv.Lo*d, l.kv.Hi*d)
	case "vocab":
		t, err = l.ck.Rows(name, l.vocab.Lo, l.vocab.Hi)
	case "qcols":
		if l.q.Lo == 0 && l.q.Hi*d == cols {
			t, err = l.ck.Rows(name, 0, rows)
		} else {
			t, err = l.ck.Cols(name, l.q.Lo*d, l.q.Hi*d)
		}
	default:
		t, err = l.ck.Rows(name, 0, rows)
	}
	if err != nil {
		return err
	}
	buf, err := upload(l.b, t)
	if err != nil {
		return fmt.Errorf("model: loading %s: %w", name, err)
	}
	*dst = Tensor{Buf: buf, Rows: t.Rows, Cols: t.Cols}
	return nil
}

// fp8Split loads the shard's part of an F8_E4M3 projection: the same rows
// or columns a bf16 weight would give, with the scale grid cut to match.
func (l *loader) fp8Split(dst *Tensor, info TensorInfo, split string) error {
	if len(info.Shape) != 2 {
		return fmt.Errorf("%w: tensor %s in %s has shape %v, want 2-D", ErrWeights, info.Name, info.File, info.Shape)
	}
	rows, cols := int(info.Shape[0]), int(info.Shape[1])
	d := l.cfg.HeadDim
	switch split {
	case "qrows":
		return l.fp8Tensor(dst, info, l.q.Lo*d, l.q.Hi*d, 0, cols)
	case "kvrows":
		return l.fp8Tensor(dst, info, l.kv.Lo*d, l.kv.Hi*d, 0, cols)
	case "qcols":
		return l.fp8Tensor(dst, info, 0, rows, l.q.Lo*d, l.q.Hi*d)
	case "":
		return l.fp8Tensor(dst, info, 0, rows, 0, cols)
	}
	return fmt.Errorf("%w: tensor %s in %s is %s; embeddings, norms and lm_head must stay F32/BF16/F16", ErrWeights, info.Name, info.File, DTypeF8E4M3)
}

// upload hands t to the backend, without a copy when the backend can wrap host memory.
func upload(b kernels.Backend, t Tensor2D) (kernels.Buffer, error) {
	hw, wrap := b.(kernels.HostWrapper)
	switch {
	case t.BF16 != nil:
		if wrap {
			return hw.WrapBF16(t.BF16), nil
		}
		buf, err := b.Alloc(kernels.BF16, len(t.BF16))
		if err != nil {
			return nil, err
		}
		return buf, b.WriteBF16(buf, 0, t.BF16)
	default:
		if wrap {
			return hw.WrapF32(t.F32), nil
		}
		buf, err := b.Alloc(kernels.F32, len(t.F32))
		if err != nil {
			return nil, err
		}
		return buf, b.WriteF32(buf, 0, t.F32)
	}
}

// each calls f for every loaded tensor once (a tied lm_head once).
func (w *Weights) each(f func(*Tensor)) {
	visit := func(t *Tensor) {
		if t != nil && t.Buf != nil {
			f(t)
		}
	}
	visit(&w.Embed)
	visit(&w.Norm)
	if w.LMHead.Buf != w.Embed.Buf {
		visit(&w.LMHead)
	}
	for i := range w.Layers {
		ly := &w.Layers[i]
		for _, t := range []*Tensor{&ly.InputNorm, &ly.Q, &ly.K, &ly.V, &ly.O, &ly.QNorm, &ly.KNorm, &ly.PostNorm, ly.Router} {
			visit(t)
		}
		for _, e := range append(ly.Experts, ly.MLP) {
			if e != nil {
				visit(&e.Gate)
				visit(&e.Up)
				visit(&e.Down)
			}
		}
	}
}

// ResidentBytes is the number of weight bytes the shard holds.
func (w *Weights) ResidentBytes() int64 {
	var n int64
	w.each(func(t *Tensor) { n += int64(t.Buf.Len() * t.Buf.DType().Size()) })
	return n
}

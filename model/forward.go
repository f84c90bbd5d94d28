package model

import (
	"context"
	"fmt"
	"math"

	"github.com/moemesh/moemesh/kernels"
)

// SeqInput is one sequence's part of a batched step: Tokens are fed at
// positions [StartPos, StartPos+len(Tokens)); Blocks is its block table,
// already large enough for those positions.
type SeqInput struct {
	// ID identifies the sequence across steps (a cluster keeps its KV
	// cache on the attention group chosen by ID).
	ID       uint64
	Tokens   []int32
	StartPos int
	Blocks   []int32
	// AllLogits asks for logits at every fed position; otherwise only the last.
	AllLogits bool
}

// Stepper runs one batched forward step and returns the requested logits
// rows (see Model.Forward). A Model is a Stepper; so is a cluster driver
// (coordinator.Driver). The caller owns the block tables: the scheduler's
// block pools hand them out.
type Stepper interface {
	Forward(ctx context.Context, seqs []SeqInput) ([][]float32, error)
}

var _ Stepper = (*Model)(nil)

// Reducer sums a tensor across the tensor-parallel group in place. The
// single-process model uses none. Implementations must give every rank the
// bitwise-identical result.
//
// step, here and in VocabReducer and FFN, is the tag of the step the call
// belongs to, passed unchanged from Model.Hidden and Model.Logits: the
// processes of a cluster tag their exchanges with it so that they match
// (a worker passes StepRequest.step). The model gives it no meaning.
type Reducer interface {
	AllReduceSum(ctx context.Context, step uint64, layer int, buf kernels.Buffer, n int) error
}

// VocabReducer joins the vocabulary-parallel pieces of a tensor-parallel
// group; a Reducer of a model whose shard holds part of the vocabulary must
// implement it. Every rank of the group makes the same calls.
type VocabReducer interface {
	// AllReduceEmbed sums the ranks' partial embeddings x [n, hidden] in
	// place (each token's row is non-zero on the rank holding its id).
	AllReduceEmbed(ctx context.Context, step uint64, x kernels.Buffer, n int) error
	// GatherLogits joins every rank's logits slice: local is [rows,
	// Hi−Lo] of this rank's vocabulary range; the result is [rows, vocab].
	GatherLogits(ctx context.Context, step uint64, local []float32, rows int) ([]float32, error)
}

// FFN computes the feed-forward block of an MoE layer: out[t,:] = Σ_e w_e ·
// expert_e(h[t,:]) for tokens [0, tokens). out is zeroed by the caller.
// LocalMoE runs every expert in-process; a worker swaps in a dispatching
// one. step is the step's tag (see Reducer).
type FFN interface {
	MoE(ctx context.Context, step uint64, layer int, h, out kernels.Buffer, tokens int) error
}

// Model is a loaded Qwen3 model (or one shard of it) ready to run batched steps.
type Model struct {
	Cfg     *Config
	W       *Weights
	B       kernels.Backend
	KV      *KVCache
	Reducer Reducer // nil: no tensor parallelism
	FFN     FFN     // nil: LocalMoE over W

	QHeads, KVHeads HeadRange // this shard's heads
	Vocab           HeadRange // this shard's rows of embed_tokens and lm_head
	rope            RopeParams
	contextLen      int // Cfg.ContextLength()
	scratch         map[string]kernels.Buffer
	ck              *Checkpoint // owned when opened by Open
	closeBackend    bool
	zeros           []float32 // never written: the source of Zero
}

// NewModel wires weights, backend and a KV cache of numBlocks blocks.
func NewModel(cfg *Config, w *Weights, b kernels.Backend, s Shard, blockSize, numBlocks int) (*Model, error) {
	q, kv, err := s.Heads(cfg)
	if err != nil {
		return nil, err
	}
	rope := cfg.Rope()
	if _, ok := b.(kernels.FreqRoPE); !ok && !rope.Plain() {
		return nil, fmt.Errorf("%w: rope_scaling %s needs a backend with kernels.FreqRoPE; %s has none", ErrBackend, rope, b.Name())
	}
	kvc, err := NewKVCache(b, cfg.NumHiddenLayers, kv.Len()*cfg.HeadDim, blockSize, numBlocks)
	if err != nil {
		return nil, err
	}
	return &Model{Cfg: cfg, W: w, B: b, KV: kvc, QHeads: q, KVHeads: kv, Vocab: s.VocabRange(cfg),
		rope: rope, contextLen: cfg.ContextLength(), scratch: map[string]kernels.Buffer{}}, nil
}

// Scratch returns a named F32 scratch buffer of n elements owned by the
// model and reused across steps; it stays valid until the next call with
// the same name.
func (m *Model) Scratch(name string, n int) (kernels.Buffer, error) { return m.buf("ext:"+name, n) }

// buf returns a scratch F32 buffer of at least n elements, reused across steps.
func (m *Model) buf(name string, n int) (kernels.Buffer, error) {
	if b, ok := m.scratch[name]; ok && b.Len() >= n {
		return m.B.View(b, 0, n), nil
	}
	if b, ok := m.scratch[name]; ok {
		m.B.Free(b)
	}
	b, err := m.B.Alloc(kernels.F32, max(n, 1))
	if err != nil {
		return nil, fmt.Errorf("model: scratch %s (%d floats): %w", name, n, err)
	}
	m.scratch[name] = b
	return m.B.View(b, 0, n), nil
}

// stepMeta is the per-token bookkeeping of a step.
type stepMeta struct {
	tokens  int
	ids     []int32
	pos     []int32
	seqOf   []int32
	slots   []int32
	tables  [][]int32
	outRows []int32 // rows of the hidden state that produce logits
}

func (m *Model) meta(seqs []SeqInput) (*stepMeta, error) {
	st := &stepMeta{}
	bs := m.KV.BlockSize
	for si, s := range seqs {
		if len(s.Tokens) == 0 {
			return nil, fmt.Errorf("model: sequence %d of the batch has no tokens", si)
		}
		end := s.StartPos + len(s.Tokens)
		if s.StartPos < 0 || end > len(s.Blocks)*bs {
			return nil, fmt.Errorf("model: sequence %d: positions [%d,%d) exceed its %d KV blocks of %d", si, s.StartPos, end, len(s.Blocks), bs)
		}
		if end > m.contextLen {
			return nil, fmt.Errorf("%w: sequence %d: position %d beyond the model's context of %d positions", ErrContext, si, end-1, m.contextLen)
		}
		for _, b := range s.Blocks {
			if b < 0 || int(b) >= m.KV.NumBlocks {
				return nil, fmt.Errorf("model: sequence %d: block %d out of range [0,%d)", si, b, m.KV.NumBlocks)
			}
		}
		st.tables = append(st.tables, s.Blocks)
		for j, id := range s.Tokens {
			if id < 0 || int(id) >= m.Cfg.VocabSize {
				return nil, fmt.Errorf("model: sequence %d: token id %d out of range [0,%d)", si, id, m.Cfg.VocabSize)
			}
			p := s.StartPos + j
			st.ids = append(st.ids, id)
			st.pos = append(st.pos, int32(p))
			st.seqOf = append(st.seqOf, int32(si))
			st.slots = append(st.slots, s.Blocks[p/bs]*int32(bs)+int32(p%bs))
			if s.AllLogits || j == len(s.Tokens)-1 {
				st.outRows = append(st.outRows, int32(len(st.ids)-1))
			}
		}
	}
	st.tokens = len(st.ids)
	return st, nil
}

// Forward runs one batched step: it embeds the new tokens, runs every
// layer (writing their keys and values into the cache), and returns the
// logits of the requested rows: for each sequence in order, its last token
// or all its tokens when AllLogits, each row VocabSize floats. It tags the
// step 0 (a single process has no peers to match).
func (m *Model) Forward(ctx context.Context, seqs []SeqInput) ([][]float32, error) {
	x, rows, err := m.Hidden(ctx, 0, seqs)
	if err != nil {
		return nil, err
	}
	return m.Logits(ctx, 0, x, rows)
}

// Hidden runs embedding and all layers and returns the residual stream
// [tokens, hidden] and the rows whose logits were asked for (see Forward).
// step tags the Reducer and FFN calls (see Reducer).
func (m *Model) Hidden(ctx context.Context, step uint64, seqs []SeqInput) (kernels.Buffer, []int32, error) {
	x, st, err := m.hidden(ctx, step, seqs)
	if err != nil {
		return nil, nil, err
	}
	return x, st.outRows, nil
}

func (m *Model) hidden(ctx context.Context, step uint64, seqs []SeqInput) (kernels.Buffer, *stepMeta, error) {
	st, err := m.meta(seqs)
	if err != nil {
		return nil, nil, err
	}
	hid := m.Cfg.HiddenSize
	x, err := m.buf("x", st.tokens*hid)
	if err != nil {
		return nil, nil, err
	}
	if err := m.embed(ctx, step, x, st.ids); err != nil {
		return nil, nil, err
	}
	for l := range m.W.Layers {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if err := m.attention(ctx, step, l, x, st); err != nil {
			return nil, nil, err
		}
		if err := m.feedForward(ctx, step, l, x, st.tokens); err != nil {
			return nil, nil, err
		}
	}
	return x, st, nil
}

// partialVocab reports whether this shard holds only part of the vocabulary.
func (m *Model) partialVocab() bool { return m.Vocab.Len() != m.Cfg.VocabSize }

func (m *Model) vocabReducer() (VocabReducer, error) {
	vr, ok := m.Reducer.(VocabReducer)
	if !ok {
		return nil, fmt.Errorf("model: the shard holds vocabulary rows [%d,%d) of %d but has no VocabReducer", m.Vocab.Lo, m.Vocab.Hi, m.Cfg.VocabSize)
	}
	return vr, nil
}

// embed writes the embeddings of ids into x [len(ids), hidden]. A
// vocabulary-parallel shard embeds the ids it holds, leaves zeros for the
// others, and sums across the group.
func (m *Model) embed(ctx context.Context, step uint64, x kernels.Buffer, ids []int32) error {
	hid := m.Cfg.HiddenSize
	if !m.partialVocab() {
		m.B.Embed(x, m.W.Embed.Buf, ids, hid)
		return nil
	}
	vr, err := m.vocabReducer()
	if err != nil {
		return err
	}
	var local, rows []int32
	for i, id := range ids {
		if int(id) >= m.Vocab.Lo && int(id) < m.Vocab.Hi {
			local = append(local, id-int32(m.Vocab.Lo))
			rows = append(rows, int32(i))
		}
	}
	if err := m.Zero(x, len(ids)*hid); err != nil {
		return err
	}
	if len(local) > 0 {
		e, err := m.buf("embed", len(local)*hid)
		if err != nil {
			return err
		}
		m.B.Embed(e, m.W.Embed.Buf, local, hid)
		m.B.ScatterAdd(x, e, rows, ones(len(rows)), hid)
	}
	if err := vr.AllReduceEmbed(ctx, step, x, len(ids)); err != nil {
		return fmt.Errorf("model: embedding all-reduce: %w", err)
	}
	return nil
}

func ones(n int) []float32 {
	o := make([]float32, n)
	for i := range o {
		o[i] = 1
	}
	return o
}

// attention is x += o_proj(attn(RMSNorm(x))) for layer l.
func (m *Model) attention(ctx context.Context, step uint64, l int, x kernels.Buffer, st *stepMeta) error {
	c, ly, b := m.Cfg, &m.W.Layers[l], m.B
	n, hid, d := st.tokens, c.HiddenSize, c.HeadDim
	nq, nkv := m.QHeads.Len(), m.KVHeads.Len()
	h, err := m.buf("h", n*hid)
	if err != nil {
		return err
	}
	q, err := m.buf("q", n*nq*d)
	if err != nil {
		return err
	}
	k, err := m.buf("k", n*nkv*d)
	if err != nil {
		return err
	}
	v, err := m.buf("v", n*nkv*d)
	if err != nil {
		return err
	}
	att, err := m.buf("att", n*nq*d)
	if err != nil {
		return err
	}
	eps := float32(c.RMSNormEps)
	b.RMSNorm(h, x, ly.InputNorm.Buf, n, hid, eps)
	b.MatMul(q, h, ly.Q.Buf, n, nq*d, hid)
	b.MatMul(k, h, ly.K.Buf, n, nkv*d, hid)
	b.MatMul(v, h, ly.V.Buf, n, nkv*d, hid)
	b.RMSNorm(q, q, ly.QNorm.Buf, n*nq, d, eps)
	b.RMSNorm(k, k, ly.KNorm.Buf, n*nkv, d, eps)
	m.applyRope(q, n, nq, st.pos)
	m.applyRope(k, n, nkv, st.pos)
	b.KVWrite(m.KV.K[l], m.KV.V[l], k, v, st.slots, nkv*d)
	// YaRN multiplies cos and sin by the attention factor, i.e. q and k
	// each by it: the same as the logits by its square.
	af := m.rope.AttentionFactor
	b.Attention(att, q, m.KV.K[l], m.KV.V[l], kernels.AttnParams{
		Heads: nq, KVHeads: nkv, HeadDim: d, Scale: float32(af * af / math.Sqrt(float64(d))),
		BlockSize: m.KV.BlockSize, SeqOf: st.seqOf, Pos: st.pos, BlockTables: st.tables,
	})
	o := h // reuse: h is dead after q/k/v
	b.MatMul(o, att, ly.O.Buf, n, hid, nq*d)
	if m.Reducer != nil {
		if err := m.Reducer.AllReduceSum(ctx, step, l, o, n*hid); err != nil {
			return fmt.Errorf("model: layer %d attention all-reduce: %w", l, err)
		}
	}
	b.Add(x, x, o, n*hid)
	return nil
}

// applyRope rotates x [rows, heads·head_dim] at positions pos: plain RoPE
// with rope_theta, or the inverse frequencies of the configured scaling.
func (m *Model) applyRope(x kernels.Buffer, rows, heads int, pos []int32) {
	if m.rope.Plain() {
		m.B.RoPE(x, rows, heads, m.Cfg.HeadDim, pos, m.Cfg.RopeTheta)
		return
	}
	m.B.(kernels.FreqRoPE).RoPEFreq(x, rows, heads, m.Cfg.HeadDim, pos, m.rope.InvFreq)
}

// ContextLength is the number of positions a sequence may use (see Config.ContextLength).
func (m *Model) ContextLength() int { return m.contextLen }

// feedForward is x += FFN(RMSNorm(x)) for layer l.
func (m *Model) feedForward(ctx context.Context, step uint64, l int, x kernels.Buffer, n int) error {
	c, ly, b := m.Cfg, &m.W.Layers[l], m.B
	hid := c.HiddenSize
	h, err := m.buf("h", n*hid)
	if err != nil {
		return err
	}
	out, err := m.buf("ffn", n*hid)
	if err != nil {
		return err
	}
	b.RMSNorm(h, x, ly.PostNorm.Buf, n, hid, float32(c.RMSNormEps))
	if ly.MLP != nil {
		if err := m.expert(ly.MLP, h, out, n, c.IntermediateSize); err != nil {
			return err
		}
	} else {
		if err := m.Zero(out, n*hid); err != nil {
			return err
		}
		ffn := m.FFN
		if ffn == nil {
			ffn = LocalMoE{m}
		}
		if err := ffn.MoE(ctx, step, l, h, out, n); err != nil {
			return fmt.Errorf("model: layer %d MoE: %w", l, err)
		}
	}
	b.Add(x, x, out, n*hid)
	return nil
}

// Zero clears buf[0:n], reusing one host slice of zeros across calls.
func (m *Model) Zero(buf kernels.Buffer, n int) error {
	if len(m.zeros) < n {
		m.zeros = make([]float32, n)
	}
	return m.B.WriteF32(buf, 0, m.zeros[:n])
}

// expert computes out[rows, hidden] = down(silu(gate(x)) * up(x)) for x [rows, hidden].
func (m *Model) expert(e *Expert, x, out kernels.Buffer, rows, inter int) error {
	hid := m.Cfg.HiddenSize
	g, err := m.buf("gate", rows*inter)
	if err != nil {
		return err
	}
	u, err := m.buf("up", rows*inter)
	if err != nil {
		return err
	}
	m.B.MatMul(g, x, e.Gate.Buf, rows, inter, hid)
	m.B.MatMul(u, x, e.Up.Buf, rows, inter, hid)
	m.B.SiLUMul(g, g, u, rows*inter)
	m.B.MatMul(out, g, e.Down.Buf, rows, hid, inter)
	return nil
}

// Logits applies the final norm and lm_head to the given rows of x. A
// vocabulary-parallel shard computes its slice and gathers the rest from
// its group, so every rank returns whole rows; step tags the gather.
func (m *Model) Logits(ctx context.Context, step uint64, x kernels.Buffer, rows []int32) ([][]float32, error) {
	n, vocab := len(rows), m.Cfg.VocabSize
	flat, err := m.LocalLogits(x, rows)
	if err != nil {
		return nil, err
	}
	if m.partialVocab() {
		vr, err := m.vocabReducer()
		if err != nil {
			return nil, err
		}
		if flat, err = vr.GatherLogits(ctx, step, flat, n); err != nil {
			return nil, fmt.Errorf("model: logits gather: %w", err)
		}
	}
	out := make([][]float32, n)
	for i := range out {
		out[i] = flat[i*vocab : (i+1)*vocab : (i+1)*vocab]
	}
	return out, nil
}

// LocalLogits returns this shard's logits slice for the given rows of x:
// [len(rows), Vocab.Len()] row-major, column j being id Vocab.Lo+j.
func (m *Model) LocalLogits(x kernels.Buffer, rows []int32) ([]float32, error) {
	c, b := m.Cfg, m.B
	n, hid, width := len(rows), c.HiddenSize, m.Vocab.Len()
	sel, err := m.buf("sel", n*hid)
	if err != nil {
		return nil, err
	}
	b.Gather(sel, x, rows, hid)
	b.RMSNorm(sel, sel, m.W.Norm.Buf, n, hid, float32(c.RMSNormEps))
	flat := make([]float32, n*width)
	if hw, ok := b.(kernels.HostWrapper); ok && len(flat) > 0 {
		// Host memory: the lm_head writes the returned slice directly, so
		// the logits (10 MB at batch 16) are not copied once more, and
		// the threads that compute them also fault in the fresh pages.
		b.MatMul(hw.WrapF32(flat), sel, m.W.LMHead.Buf, n, width, hid)
		return flat, nil
	}
	lg, err := m.buf("logits", n*width)
	if err != nil {
		return nil, err
	}
	b.MatMul(lg, sel, m.W.LMHead.Buf, n, width, hid)
	if err := b.ReadF32(lg, 0, flat); err != nil {
		return nil, err
	}
	return flat, nil
}

// Close frees the model's scratch buffers and KV cache, and the checkpoint
// when the model was made by Open (weights passed to NewModel stay the caller's).
func (m *Model) Close() {
	for k, b := range m.scratch {
		m.B.Free(b)
		delete(m.scratch, k)
	}
	m.KV.Close(m.B)
	if m.ck != nil {
		m.ck.Close()
		m.ck = nil
	}
	if m.closeBackend {
		closeBackend(m.B)
		m.closeBackend = false
	}
}

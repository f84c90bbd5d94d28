package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/internal/sysmem"
	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/sharding"
)

// clusterFlags select between one process and a local cluster of worker
// processes talking gRPC on loopback.
type clusterFlags struct {
	Workers        int
	TP             int
	ExpertReplicas int
	WireDType      string
	ContextTokens  int
	Device         string
	Compute        string
	prefault       bool // set by bench
	// contextSet reports whether the user chose --context (command line,
	// environment or config file); nil means yes.
	contextSet func() bool
}

// defaultContext is --context's default; a model with a shorter context
// (Config.ContextLength) lowers it to that when --context is not set.
const defaultContext = 8192

// kvBlockSize is the KV cache block size of every runner (positions).
const kvBlockSize = 16

// availableMemory returns the bytes this machine can still allocate; tests
// replace it.
var availableMemory = sysmem.Available

func (c *clusterFlags) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&c.Workers, "workers", 1, "number of worker processes (1 = run in this process)")
	f.IntVar(&c.TP, "tp", 1, "tensor-parallel size: attention heads are split over this many workers of a group")
	f.IntVar(&c.ExpertReplicas, "expert-replicas", 0, "extra expert replicas per MoE layer, spread over the workers")
	f.StringVar(&c.WireDType, "wire-dtype", "f32", "activation type on the wire: f32 or bf16")
	f.IntVar(&c.ContextTokens, "context", defaultContext, "KV cache size in tokens, at most the model's context (max_position_embeddings, or YaRN's factor × original) and what fits in memory")
	f.StringVar(&c.Device, "device", "cpu", "compute device of every worker: cpu or cuda:N (CUDA needs a -tags cuda build)")
	f.StringVar(&c.Compute, "compute", "f32", computeFlagUsage)
	c.contextSet = func() bool { return cmd.Flags().Changed("context") }
}

func (c *clusterFlags) Validate() error {
	if c.Workers < 1 {
		return usagef("--workers must be at least 1, got %d", c.Workers)
	}
	if c.TP < 1 || c.Workers%c.TP != 0 {
		return usagef("--tp %d must be positive and divide --workers %d", c.TP, c.Workers)
	}
	if c.ExpertReplicas < 0 {
		return usagef("--expert-replicas must be non-negative, got %d", c.ExpertReplicas)
	}
	if c.WireDType != "f32" && c.WireDType != "bf16" {
		return usagef("--wire-dtype %q: allowed values are f32, bf16", c.WireDType)
	}
	if _, err := kernels.ParseCompute(c.Compute); err != nil && c.Compute != "" {
		return usagef("--compute %q: allowed values are f32, bf16", c.Compute)
	}
	if c.ContextTokens < 1 {
		return usagef("--context must be at least 1 token, got %d", c.ContextTokens)
	}
	return nil
}

// ValidateModel checks --context against the model in cfg and this
// machine's memory, before any process starts or any weight loads: at most
// the model's context (Config.ContextLength: max_position_embeddings, or
// YaRN's factor × original_max_position_embeddings when larger), and the KV
// cache of every worker together with the weights must fit in the memory
// available (skipped where that is unknown). An unset --context above the
// model's context is lowered to it.
func (c *clusterFlags) ValidateModel(cfg *model.Config) error {
	if limit := cfg.ContextLength(); c.ContextTokens > limit {
		if c.contextSet != nil && !c.contextSet() {
			c.ContextTokens = limit
		} else {
			return usagef("--context %d exceeds the model's context of %d positions (%s)", c.ContextTokens, limit, contextSource(cfg))
		}
	}
	avail, err := availableMemory()
	if err != nil {
		return nil // no figure on this system: nothing to check against
	}
	need, err := c.memoryNeed(cfg)
	if err != nil {
		return nil // a layout that does not fit the model; the runner reports it
	}
	if need.weights+need.kv <= avail {
		return nil
	}
	fits := (avail - need.weights) / need.kvPerToken / kvBlockSize * kvBlockSize
	return &usageError{&contextMemoryError{Context: c.ContextTokens, KV: need.kv, Weights: need.weights, Available: avail, Fits: int(max(0, fits))}}
}

// contextSource names what sets a model's context length for messages:
// max_position_embeddings, or the YaRN scaling when it extends beyond it.
func contextSource(cfg *model.Config) string {
	if p := cfg.Rope(); !p.Plain() && cfg.ContextLength() > cfg.MaxPositionEmbeddings {
		return fmt.Sprintf("rope_scaling %s", p)
	}
	return fmt.Sprintf("max_position_embeddings %d", cfg.MaxPositionEmbeddings)
}

// contextMemoryError is a --context whose KV cache and the weights do not
// fit in the memory available.
type contextMemoryError struct {
	Context                int
	KV, Weights, Available int64 // bytes
	Fits                   int   // the largest --context that fits (whole blocks); 0 if none
}

func (e *contextMemoryError) Error() string {
	if e.Fits < 1 {
		return fmt.Sprintf("--context %d needs %s of KV cache and the weights %s; this machine has %s available, not enough for the weights and one block of %d tokens",
			e.Context, formatBytes(e.KV), formatBytes(e.Weights), formatBytes(e.Available), kvBlockSize)
	}
	return fmt.Sprintf("--context %d needs %s of KV cache (besides %s of weights); this machine has %s available: at most --context %d fits",
		e.Context, formatBytes(e.KV), formatBytes(e.Weights), formatBytes(e.Available), e.Fits)
}

// memoryNeed is what a run needs on this machine, all workers together.
type memoryNeed struct {
	weights, kv, kvPerToken int64
}

// memoryNeed sizes the weights and the KV cache with the sharding memory
// model for the flags' layout; each attention group caches ContextTokens
// positions rounded up to whole blocks, in float32.
func (c *clusterFlags) memoryNeed(cfg *model.Config) (memoryNeed, error) {
	shape := modelShape(cfg)
	layout, err := sharding.NewLayout(c.Workers, c.TP)
	if err != nil {
		return memoryNeed{}, err
	}
	var pl *sharding.Placement
	if cfg.NumExperts > 0 {
		if pl, err = sharding.PlaceExperts(cfg.NumExperts, c.Workers, c.ExpertReplicas, 0, nil); err != nil {
			return memoryNeed{}, err
		}
	}
	plan, err := sharding.PlanMemory(shape, layout, pl, 0)
	if err != nil {
		return memoryNeed{}, err
	}
	var n memoryNeed
	for _, m := range plan {
		n.weights += m.Weights
	}
	if n.kvPerToken, err = sharding.KVCacheBytes(shape, layout, 1, 4); err != nil {
		return memoryNeed{}, err
	}
	tokens := (c.ContextTokens + kvBlockSize - 1) / kvBlockSize * kvBlockSize
	if n.kv, err = sharding.KVCacheBytes(shape, layout, tokens, 4); err != nil {
		return memoryNeed{}, err
	}
	return n, nil
}

// modelShape is the sharding view of a model config.
func modelShape(cfg *model.Config) sharding.ModelShape {
	bpp := 2
	if cfg.TorchDType == "float32" {
		bpp = 4
	}
	return sharding.ModelShape{
		Layers: cfg.NumHiddenLayers, Hidden: cfg.HiddenSize, Heads: cfg.NumAttentionHeads,
		KVHeads: cfg.NumKeyValueHeads, HeadDim: cfg.HeadDim, Experts: cfg.NumExperts,
		TopK: cfg.NumExpertsPerTok, MoEIntermediate: cfg.MoeIntermediateSize,
		Intermediate: cfg.IntermediateSize, Vocab: cfg.VocabSize, BytesPerParam: bpp,
		DecoderSparseStep: cfg.DecoderSparseStep, MLPOnlyLayers: cfg.MlpOnlyLayers,
		TieEmbeddings: cfg.TieWordEmbeddings,
	}
}

// formatBytes writes n in GiB, MiB or KiB, rounded.
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			v := float64(n) / float64(u.size)
			if v >= 10 {
				return fmt.Sprintf("%.0f %s", v, u.name)
			}
			return fmt.Sprintf("%.1f %s", v, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// Stepper returns something that runs forward steps for the model in dir,
// with a block pool sized to its KV cache, and a function releasing both.
// The allocator's ErrKVFull names --context.
func (c *clusterFlags) Stepper(ctx context.Context, s IOStreams, dir string) (model.Stepper, scheduler.Allocator, func(), error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.ValidateModel(cfg); err != nil {
		return nil, nil, nil, err
	}
	if c.Workers > 1 || c.TP > 1 {
		st, pool, closeFn, err := startLocalCluster(ctx, s, dir, c)
		if err != nil {
			return nil, nil, nil, err
		}
		return st, contextAllocator{pool, c.ContextTokens}, closeFn, nil
	}
	newBackend, err := parseDevice(c.Device, c.Compute)
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := newBackend()
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := openModel(s, dir, b, model.OpenOptions{ContextTokens: c.ContextTokens, Prefault: c.prefault})
	if err != nil {
		return nil, nil, nil, err
	}
	return m, contextAllocator{scheduler.ModelPools(m), c.ContextTokens}, m.Close, nil
}

// contextAllocator turns a full KV cache into a usage error naming
// --context, the flag that sizes it.
type contextAllocator struct {
	scheduler.Allocator
	context int
}

func (a contextAllocator) Reserve(s *scheduler.Seq, n int) error {
	err := a.Allocator.Reserve(s, n)
	if errors.Is(err, scheduler.ErrKVFull) {
		return &usageError{fmt.Errorf("%w: raise --context (now %d tokens; this sequence needs %d)", err, a.context, n)}
	}
	return err
}

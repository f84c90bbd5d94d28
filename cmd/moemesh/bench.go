package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

func init() { register(newBenchCmd) }

type benchOptions struct {
	Model    string
	Batches  string
	Prompt   int
	Tokens   int
	Cluster  clusterFlags
	batchSzs []int
	// Serve, with --server, benchmarks a running cluster instead
	// (bench_server.go).
	Serve serverBenchOptions
}

func (o *benchOptions) Complete() error {
	for _, f := range strings.Split(o.Batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return usagef("--batch: %q is not a positive integer", f)
		}
		o.batchSzs = append(o.batchSzs, n)
	}
	return nil
}

func (o *benchOptions) Validate() error {
	if o.Model == "" {
		return usagef("--model is required (make one with: moemesh gen-model --preset bench --out DIR)")
	}
	if o.Prompt <= 0 || o.Tokens <= 0 {
		return usagef("--prompt-tokens and --tokens must be positive")
	}
	return o.Cluster.Validate()
}

func newBenchCmd(s IOStreams) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench --model DIR [--batch 1,16] | bench --server ADDR --concurrency C --requests R [--prompt-len L --max-tokens M]",
		Short: "Measure prefill and decode tokens/s, and decode against the memory-bandwidth bound; with --server, a running cluster's serving throughput and latency as vLLM reports them",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("server") {
				if o.Model != "" {
					return usagef("--model is for the raw-engine bench; --server measures a running cluster (drop one)")
				}
				if err := o.Serve.Complete(); err != nil {
					return err
				}
				if err := o.Serve.Validate(); err != nil {
					return err
				}
				return o.Serve.Run(cmd.Context(), s)
			}
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), s)
		},
	}
	cmd.Flags().StringVar(&o.Model, "model", "", "model directory")
	cmd.Flags().StringVar(&o.Batches, "batch", "1,16", "comma-separated decode batch sizes")
	cmd.Flags().IntVar(&o.Prompt, "prompt-tokens", 128, "prompt length per sequence (prefill)")
	cmd.Flags().IntVar(&o.Tokens, "tokens", 32, "decode steps per batch size")
	o.Cluster.AddFlags(cmd)
	o.Serve.AddFlags(cmd)
	return cmd
}

func (o *benchOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := model.LoadConfig(o.Model)
	if err != nil {
		return err
	}
	o.Cluster.prefault = true
	st, pool, closeFn, err := o.Cluster.Stepper(ctx, s, o.Model)
	if err != nil {
		return err
	}
	defer closeFn()
	active := ActiveWeightBytes(cfg)
	tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', tabwriter.AlignRight)
	// On a GPU the host-RAM figures below are no bound: label them so.
	onGPU := strings.HasPrefix(o.Cluster.Device, "cuda")
	if onGPU {
		fmt.Fprintf(tw, "batch\tprefill tok/s\tdecode tok/s\thost copy GB/s\thost-RAM tok/s\t-\thost read GB/s\thost-RAM tok/s\t-\t\n")
	} else {
		fmt.Fprintf(tw, "batch\tprefill tok/s\tdecode tok/s\tcopy GB/s\tcopy bound tok/s\tfraction\tread GB/s\tread bound tok/s\tfraction\t\n")
	}
	var comm []string
	for _, b := range o.batchSzs {
		cs := &commStats{}
		prefill, decode, err := benchOnce(ctx, st, pool, cfg.VocabSize, b, o.Prompt, o.Tokens, cs)
		if err != nil {
			return err
		}
		if cs.steps > 0 {
			comm = append(comm, cs.report(b, cfg.NumHiddenLayers, o.Cluster.Workers))
		}
		// Measure the bandwidth right after the run, on the same machine state.
		bw := CopyBandwidth(256<<20, 3)
		rd := ReadBandwidth(256<<20, 3)
		// The bound is a batch-1 figure: one token reads the active weights once.
		frac := func(bound float64) string {
			if b != 1 || onGPU {
				return "-"
			}
			return fmt.Sprintf("%.2f", decode/bound)
		}
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%.1f\t%.1f\t%s\t\n", b, prefill, decode,
			bw/1e9, bw/float64(active), frac(bw/float64(active)), rd/1e9, rd/float64(active), frac(rd/float64(active)))
	}
	fmt.Fprintf(tw, "\nactive weight bytes per token: %d (%.1f MB); threads: %d; workers: %d, tp: %d\n",
		active, float64(active)/1e6, runtime.GOMAXPROCS(0), o.Cluster.Workers, o.Cluster.TP)
	if err := tw.Flush(); err != nil {
		return err
	}
	if onGPU {
		fmt.Fprintf(s.Out, "--device %s: the bandwidth columns measure host RAM, not the GPU's memory; the GPU's bound is its device-to-device copy bandwidth (BenchmarkDeviceCopy, scripts/gpu-check.sh run; docs/cuda.md)\n", o.Cluster.Device)
	}
	for _, c := range comm {
		fmt.Fprint(s.Out, c)
	}
	return nil
}

// benchOnce prefills batch prompts of promptLen tokens in one step, then
// decodes steps tokens for every sequence; it returns tokens/s of each phase.
func benchOnce(ctx context.Context, st model.Stepper, pool scheduler.Allocator, vocab, batch, promptLen, steps int, cs *commStats) (prefill, decode float64, err error) {
	seqs := make([]*scheduler.Seq, batch)
	defer func() {
		for _, sq := range seqs {
			if sq != nil {
				pool.Release(sq)
			}
		}
	}()
	in := make([]model.SeqInput, batch)
	for i := range seqs {
		seqs[i] = &scheduler.Seq{ID: uint64(i)}
		if err := pool.Reserve(seqs[i], promptLen+steps); err != nil {
			return 0, 0, err
		}
		toks := make([]int32, promptLen)
		for j := range toks {
			toks[j] = int32((i*7919 + j*104729) % vocab)
		}
		in[i] = model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: seqs[i].Blocks}
	}
	// Sample greedily where the logits are: in this process, or on the
	// workers of a cluster (only token ids cross the wire).
	smp, _ := sampling.New(sampling.Greedy())
	params := make([]sampling.Params, batch)
	for i := range params {
		params[i] = sampling.Greedy()
	}
	remote, _ := st.(scheduler.SamplingStepper)
	next := func() ([]int32, error) {
		if remote != nil {
			return remote.ForwardSample(ctx, in, params)
		}
		rows, err := st.Forward(ctx, in)
		if err != nil {
			return nil, err
		}
		ids := make([]int32, len(rows))
		for i, r := range rows {
			ids[i] = int32(smp.Sample(r, nil, nil))
		}
		return ids, nil
	}
	t0 := time.Now()
	ids, err := next()
	if err != nil {
		return 0, 0, err
	}
	prefill = float64(batch*promptLen) / time.Since(t0).Seconds()
	t0 = time.Now()
	for step := range steps {
		for i := range in {
			in[i] = model.SeqInput{ID: uint64(i), Tokens: []int32{ids[i]}, StartPos: promptLen + step, Blocks: seqs[i].Blocks}
		}
		if ids, err = next(); err != nil {
			return 0, 0, err
		}
		if d, ok := st.(*coordinator.Driver); ok {
			cs.add(d.LastStats)
		}
	}
	decode = float64(batch*steps) / time.Since(t0).Seconds()
	return prefill, decode, nil
}

// ActiveWeightBytes is the number of weight bytes one decoded token reads:
// attention, router and the top-k experts of every layer, the final norm,
// one embedding row and lm_head. Weights are at the checkpoint's dtype (2
// bytes for bf16, 4 for f32), except in an FP8 checkpoint
// (quantization_config fp8), where every projection of a layer (q, k, v,
// o, the router and the MLP or expert gate/up/down) not named in
// modules_to_not_convert is one byte a weight plus one float32 scale (as
// the CPU backend holds it) per weight_block_size block; embeddings, norms
// and lm_head stay at the checkpoint's dtype. The experts follow expert
// 0's entry.
func ActiveWeightBytes(c *model.Config) int64 {
	bpp := int64(2)
	if c.TorchDType == "float32" {
		bpp = 4
	}
	q8, _ := model.ParseQuantConfig(c.QuantizationConfig) // validated by LoadConfig
	// proj is the bytes of one [rows, cols] projection named name.
	proj := func(name string, rows, cols int64) int64 {
		if q8 == nil || slices.ContainsFunc(q8.ModulesToNotConvert, func(m string) bool {
			return name == m || strings.HasPrefix(name, m+".")
		}) {
			return rows * cols * bpp
		}
		br, bc := int64(q8.WeightBlockSize[0]), int64(q8.WeightBlockSize[1])
		return rows*cols + 4*((rows+br-1)/br)*((cols+bc-1)/bc)
	}
	h, d := int64(c.HiddenSize), int64(c.HeadDim)
	q, kv := int64(c.NumAttentionHeads)*d, int64(c.NumKeyValueHeads)*d
	var total int64
	for l := range c.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		total += proj(p+"self_attn.q_proj", q, h) + proj(p+"self_attn.k_proj", kv, h) +
			proj(p+"self_attn.v_proj", kv, h) + proj(p+"self_attn.o_proj", h, q)
		total += (2*h + 2*d) * bpp // input and post-attention norms, q and k norms
		mlp, inter, n := p+"mlp.", int64(c.IntermediateSize), int64(1)
		if c.IsMoELayer(l) {
			total += proj(p+"mlp.gate", int64(c.NumExperts), h)
			mlp, inter, n = p+"mlp.experts.0.", int64(c.MoeIntermediateSize), int64(c.NumExpertsPerTok)
		}
		total += n * (proj(mlp+"gate_proj", inter, h) + proj(mlp+"up_proj", inter, h) + proj(mlp+"down_proj", h, inter))
	}
	return total + (int64(c.VocabSize)*h+h+h)*bpp // lm_head, final norm, one embedding row
}

// ReadBandwidth measures read-only bandwidth in bytes/s: the CPU
// backend's F32 matmul of one row against a size-byte matrix, which streams
// the matrix once with SIMD dot products on every core (the read-only sum
// of CPU.md), best of reps.
func ReadBandwidth(size, reps int) float64 {
	c := kernels.NewCPU()
	defer c.Close()
	const k = 4096
	n := size / 4 / k
	w, err1 := c.Alloc(kernels.F32, n*k)
	x, err2 := c.Alloc(kernels.F32, k)
	out, err3 := c.Alloc(kernels.F32, n)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0
	}
	ones := make([]float32, n*k)
	for i := range ones {
		ones[i] = 1
	}
	_ = c.WriteF32(w, 0, ones)
	_ = c.WriteF32(x, 0, ones[:k])
	best := 0.0
	for range reps {
		t0 := time.Now()
		c.MatMul(out, x, w, 1, n, k)
		_ = c.Sync()
		best = max(best, float64(n*k*4)/time.Since(t0).Seconds())
	}
	return best
}

// CopyBandwidth measures memory copy bandwidth in bytes/s (read + write
// counted) with one goroutine per core over buffers of size bytes in all,
// best of reps.
func CopyBandwidth(size, reps int) float64 {
	n := runtime.GOMAXPROCS(0)
	per := size / n
	src, dst := make([][]byte, n), make([][]byte, n)
	for i := range n {
		src[i], dst[i] = make([]byte, per), make([]byte, per)
		for j := 0; j < per; j += 4096 {
			src[i][j], dst[i][j] = 1, 1 // fault the pages in
		}
	}
	best := 0.0
	for range reps {
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); copy(dst[i], src[i]) }()
		}
		wg.Wait()
		best = max(best, float64(2*per*n)/time.Since(t0).Seconds())
	}
	return best
}

// commStats sums the workers' per-phase traffic over decode steps.
type commStats struct {
	steps  int
	bytes  map[pb.Phase]uint64
	timeUs map[pb.Phase]int64
	wallUs int64
}

func (c *commStats) add(stats []*pb.StepStats) {
	if c.bytes == nil {
		c.bytes, c.timeUs = map[pb.Phase]uint64{}, map[pb.Phase]int64{}
	}
	c.steps++
	for _, st := range stats {
		c.wallUs += st.GetWallUs()
		for _, ps := range st.GetPhases() {
			c.bytes[ps.Phase] += ps.GetTensorBytesSent()
			c.timeUs[ps.Phase] += ps.GetTimeUs()
		}
	}
}

// report prints, per decode step and layer, each phase's bytes sent by all
// workers together and the time a worker spends in it on average.
func (c *commStats) report(batch, layers, workers int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\ncommunication per decode step and layer, batch %d (bytes: all workers; time: mean per worker):\n", batch)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\tbytes\ttime µs\t\n")
	per := float64(c.steps * layers)
	var commUs float64
	for _, ph := range []pb.Phase{pb.Phase_PHASE_ALLREDUCE_EMBED, pb.Phase_PHASE_ALLREDUCE_ATTN, pb.Phase_PHASE_DISPATCH, pb.Phase_PHASE_COMBINE, pb.Phase_PHASE_ALLGATHER, pb.Phase_PHASE_LOGITS_GATHER} {
		if _, ok := c.bytes[ph]; !ok {
			continue
		}
		t := float64(c.timeUs[ph]) / per / float64(workers)
		commUs += t
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t\n", strings.TrimPrefix(ph.String(), "PHASE_"), float64(c.bytes[ph])/per, t)
	}
	fmt.Fprintf(tw, "all phases\t\t%.0f\t\n", commUs)
	fmt.Fprintf(tw, "step wall time per layer\t\t%.0f\t\n", float64(c.wallUs)/per/float64(workers))
	tw.Flush()
	return b.String()
}

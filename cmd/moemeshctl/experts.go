package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

func newExpertsCmd(g *globalOptions) *cobra.Command {
	cmd := asGroup(&cobra.Command{Use: "experts", Short: "Expert load statistics"})
	cmd.AddCommand(newExpertsStatsCmd(g))
	return cmd
}

type expertsStatsOptions struct {
	g        *globalOptions
	Top      int
	Layer    uint32
	layerSet bool
}

func newExpertsStatsCmd(g *globalOptions) *cobra.Command {
	o := &expertsStatsOptions{g: g}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Routed tokens per expert in the statistics window, the imbalance, the hottest experts",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().IntVar(&o.Top, "top", 10, "list the K hottest (layer, expert) pairs (0: none)")
	cmd.Flags().Uint32Var(&o.Layer, "layer", 0, "show only this decoder layer (default: every MoE layer)")
	return cmd
}

func (o *expertsStatsOptions) Complete(cmd *cobra.Command) error {
	o.layerSet = cmd.Flags().Changed("layer")
	return nil
}

func (o *expertsStatsOptions) Validate() error {
	if o.Top < 0 {
		return usagef("--top %d must not be negative", o.Top)
	}
	return nil
}

func (o *expertsStatsOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	defer cancel()
	st, err := c.GetExpertStats(ctx, &adminv1.GetExpertStatsRequest{})
	if err != nil {
		return rpcErr("get expert statistics", err)
	}
	layers := st.GetLayers()
	if o.layerSet {
		i := slices.IndexFunc(layers, func(l *adminv1.LayerStats) bool { return l.GetLayer() == o.Layer })
		if i < 0 {
			return usagef("--layer %d: no MoE layer %d in the statistics (%s)", o.Layer, o.Layer, layerSpan(layers))
		}
		layers = layers[i : i+1]
	}
	return printDoc(o.g.streams.Out, o.g.format, newStatsDoc(st, layers, o.Top))
}

func layerSpan(layers []*adminv1.LayerStats) string {
	if len(layers) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d layers, %d to %d", len(layers), layers[0].GetLayer(), layers[len(layers)-1].GetLayer())
}

// statsDoc is `experts stats -o json|yaml`. Scripts rely on
// window_tokens, imbalance and layers[].layer and layers[].tokens.
type statsDoc struct {
	Epoch            uint64       `json:"epoch" yaml:"epoch"`
	WindowMS         int64        `json:"window_ms" yaml:"window_ms"`
	WindowTokens     uint64       `json:"window_tokens" yaml:"window_tokens"`
	Imbalance        float64      `json:"imbalance" yaml:"imbalance"`
	WorkersReporting uint32       `json:"workers_reporting" yaml:"workers_reporting"`
	WorkerIDs        []string     `json:"worker_ids" yaml:"worker_ids,flow"`
	WorkerLoad       []float64    `json:"worker_load" yaml:"worker_load,flow"`
	Layers           []statsLayer `json:"layers" yaml:"layers"`
	Top              []topExpert  `json:"top" yaml:"top"`
}

type statsLayer struct {
	Layer      uint32    `json:"layer" yaml:"layer"`
	Tokens     []uint64  `json:"tokens" yaml:"tokens,flow"`
	WorkerLoad []float64 `json:"worker_load" yaml:"worker_load,flow"`
	Imbalance  float64   `json:"imbalance" yaml:"imbalance"`
}

// topExpert is one of the hottest experts; share is its part of the
// tokens its layer routed.
type topExpert struct {
	Layer  uint32  `json:"layer" yaml:"layer"`
	Expert int     `json:"expert" yaml:"expert"`
	Tokens uint64  `json:"tokens" yaml:"tokens"`
	Share  float64 `json:"share" yaml:"share"`
}

func newStatsDoc(st *adminv1.GetExpertStatsResponse, layers []*adminv1.LayerStats, top int) *statsDoc {
	d := &statsDoc{Epoch: st.GetEpoch(), WindowMS: st.GetWindowMs(), WindowTokens: st.GetWindowTokens(),
		Imbalance: st.GetImbalance(), WorkersReporting: st.GetWorkersReporting(),
		WorkerIDs: append([]string{}, st.GetWorkerIds()...), WorkerLoad: append([]float64{}, st.GetWorkerLoad()...),
		Layers: []statsLayer{}, Top: hottest(layers, top)}
	for _, l := range layers {
		d.Layers = append(d.Layers, statsLayer{Layer: l.GetLayer(), Tokens: append([]uint64{}, l.GetTokens()...),
			WorkerLoad: append([]float64{}, l.GetWorkerLoad()...), Imbalance: l.GetImbalance()})
	}
	return d
}

// hottest returns the k (layer, expert) pairs that routed the most
// tokens, busiest first (ties: lower layer, then lower expert); experts
// that saw nothing are never listed.
func hottest(layers []*adminv1.LayerStats, k int) []topExpert {
	var all []topExpert
	for _, l := range layers {
		var sum uint64
		for _, n := range l.GetTokens() {
			sum += n
		}
		for e, n := range l.GetTokens() {
			if n > 0 {
				all = append(all, topExpert{Layer: l.GetLayer(), Expert: e, Tokens: n, Share: float64(n) / float64(sum)})
			}
		}
	}
	slices.SortFunc(all, func(a, b topExpert) int {
		return cmp.Or(cmp.Compare(b.Tokens, a.Tokens), cmp.Compare(a.Layer, b.Layer), cmp.Compare(a.Expert, b.Expert))
	})
	if len(all) > k {
		all = all[:k]
	}
	return append([]topExpert{}, all...)
}

// heatRamp shows a bucket's load relative to the layer's hottest bucket:
// ' ' for none, then '.' (least) to '@' (the hottest).
const heatRamp = " .:-=+*#%@"

// heatColumns bounds a heat line's width: more experts share a column.
const heatColumns = 64

// heatBucket is how many experts share one column for n experts.
func heatBucket(n int) int { return max(1, (n+heatColumns-1)/heatColumns) }

// heat draws one layer's routed tokens as one character per bucket of
// heatBucket(len(tokens)) consecutive experts.
func heat(tokens []uint64) string {
	size := heatBucket(len(tokens))
	var sums []uint64
	for i := 0; i < len(tokens); i += size {
		var s uint64
		for _, n := range tokens[i:min(i+size, len(tokens))] {
			s += n
		}
		sums = append(sums, s)
	}
	hot := slices.Max(append([]uint64{0}, sums...))
	var b strings.Builder
	for _, s := range sums {
		level := 0
		if s > 0 {
			level = min(len(heatRamp)-1, 1+int(float64(len(heatRamp)-2)*float64(s)/float64(hot)))
		}
		b.WriteByte(heatRamp[level])
	}
	return b.String()
}

func (d *statsDoc) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "epoch %d, window %v: %d tokens from %d of %d workers; imbalance %.2f (busiest worker over the mean, all layers)\n\n",
		d.Epoch, time.Duration(d.WindowMS)*time.Millisecond, d.WindowTokens, d.WorkersReporting, len(d.WorkerIDs), d.Imbalance)

	var total float64
	for _, l := range d.WorkerLoad {
		total += l
	}
	t := table(w)
	row(t, "WORKER", "LOAD", "SHARE")
	for i, l := range d.WorkerLoad {
		share := 0.0
		if total > 0 {
			share = 100 * l / total
		}
		row(t, workerID(d.WorkerIDs, i), fmt.Sprintf("%.1f", l), fmt.Sprintf("%.1f%%", share))
	}
	if err := t.Flush(); err != nil {
		return err
	}

	experts := 0
	for _, l := range d.Layers {
		experts = max(experts, len(l.Tokens))
	}
	fmt.Fprintf(w, "\nheat: one column per %d expert(s), relative to the layer's hottest: %q (none) to %q\n",
		heatBucket(experts), heatRamp[0], heatRamp[len(heatRamp)-1])
	t = table(w)
	row(t, "LAYER", "IMBALANCE", "HEAT")
	for _, l := range d.Layers {
		row(t, l.Layer, fmt.Sprintf("%.2f", l.Imbalance), "|"+heat(l.Tokens)+"|")
	}
	if err := t.Flush(); err != nil {
		return err
	}

	if len(d.Top) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nhottest %d experts:\n", len(d.Top))
	t = table(w)
	row(t, "LAYER", "EXPERT", "TOKENS", "SHARE OF LAYER")
	for _, x := range d.Top {
		row(t, x.Layer, x.Expert, x.Tokens, fmt.Sprintf("%.1f%%", 100*x.Share))
	}
	return t.Flush()
}

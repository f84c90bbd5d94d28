package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

func newPlacementCmd(g *globalOptions) *cobra.Command {
	cmd := asGroup(&cobra.Command{Use: "placement", Short: "The serving epoch's expert placement"})
	cmd.AddCommand(newPlacementShowCmd(g))
	return cmd
}

type placementShowOptions struct {
	g        *globalOptions
	Layer    uint32
	layerSet bool
}

func newPlacementShowCmd(g *globalOptions) *cobra.Command {
	o := &placementShowOptions{g: g}
	cmd := &cobra.Command{
		Use:   "show",
		Short: "The experts each worker hosts, per MoE layer",
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
	cmd.Flags().Uint32Var(&o.Layer, "layer", 0, "show only this decoder layer (default: every MoE layer)")
	return cmd
}

func (o *placementShowOptions) Complete(cmd *cobra.Command) error {
	o.layerSet = cmd.Flags().Changed("layer")
	return nil
}

func (o *placementShowOptions) Validate() error { return nil }

func (o *placementShowOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	defer cancel()
	req := &adminv1.GetPlacementRequest{}
	if o.layerSet {
		req.Layer = proto.Uint32(o.Layer)
	}
	p, err := c.GetPlacement(ctx, req)
	if err != nil {
		return rpcErr("get placement", err)
	}
	return printDoc(o.g.streams.Out, o.g.format, newPlacementDoc(p))
}

// placementDoc is `placement show -o json|yaml`.
type placementDoc struct {
	Epoch          uint64           `json:"epoch" yaml:"epoch"`
	Experts        uint32           `json:"experts" yaml:"experts"`
	SlotsPerWorker uint32           `json:"slots_per_worker" yaml:"slots_per_worker"`
	WorkerIDs      []string         `json:"worker_ids" yaml:"worker_ids,flow"`
	Layers         []placementLayer `json:"layers" yaml:"layers"`
}

type placementLayer struct {
	Layer   uint32            `json:"layer" yaml:"layer"`
	Workers []placementWorker `json:"workers" yaml:"workers"`
}

type placementWorker struct {
	Index   int      `json:"index" yaml:"index"`
	ID      string   `json:"id" yaml:"id"`
	Experts []uint32 `json:"experts" yaml:"experts,flow"`
}

// workerID names worker index i, "#i" when the response has no id for it.
func workerID(ids []string, i int) string {
	if i < len(ids) && ids[i] != "" {
		return ids[i]
	}
	return fmt.Sprintf("#%d", i)
}

func newPlacementDoc(p *adminv1.GetPlacementResponse) *placementDoc {
	d := &placementDoc{Epoch: p.GetEpoch(), Experts: p.GetExperts(), SlotsPerWorker: p.GetSlotsPerWorker(),
		WorkerIDs: append([]string{}, p.GetWorkerIds()...), Layers: []placementLayer{}}
	for _, l := range p.GetLayers() {
		pl := placementLayer{Layer: l.GetLayer(), Workers: []placementWorker{}}
		for i, w := range l.GetWorkers() {
			pl.Workers = append(pl.Workers, placementWorker{Index: i, ID: workerID(p.GetWorkerIds(), i),
				Experts: append([]uint32{}, w.GetExperts()...)})
		}
		d.Layers = append(d.Layers, pl)
	}
	return d
}

func (d *placementDoc) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "epoch %d: %d experts on %d workers, %d slots per worker and layer\n\n",
		d.Epoch, d.Experts, len(d.WorkerIDs), d.SlotsPerWorker)
	t := table(w)
	row(t, "LAYER", "WORKER", "COUNT", "EXPERTS")
	for _, l := range d.Layers {
		for _, x := range l.Workers {
			row(t, l.Layer, x.ID, len(x.Experts), expertRanges(x.Experts))
		}
	}
	return t.Flush()
}

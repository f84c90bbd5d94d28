package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model"
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
	prefault       bool // set by bench
}

func (c *clusterFlags) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&c.Workers, "workers", 1, "number of worker processes (1 = run in this process)")
	f.IntVar(&c.TP, "tp", 1, "tensor-parallel size: attention heads are split over this many workers of a group")
	f.IntVar(&c.ExpertReplicas, "expert-replicas", 0, "extra expert replicas per MoE layer, spread over the workers")
	f.StringVar(&c.WireDType, "wire-dtype", "f32", "activation type on the wire: f32 or bf16")
	f.IntVar(&c.ContextTokens, "context", 8192, "KV cache size in tokens")
	f.StringVar(&c.Device, "device", "cpu", "compute device of every worker: cpu or cuda:N (CUDA needs a -tags cuda build)")
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
	return nil
}

// Stepper returns something that runs forward steps for the model in dir,
// with a block pool sized to its KV cache, and a function releasing both.
func (c *clusterFlags) Stepper(ctx context.Context, s IOStreams, dir string) (model.Stepper, model.Allocator, func(), error) {
	if c.Workers > 1 || c.TP > 1 {
		return startLocalCluster(ctx, s, dir, c)
	}
	newBackend, err := parseDevice(c.Device)
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
	return m, m.NewBlockPool(), m.Close, nil
}

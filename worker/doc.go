// Package worker is the worker process of a moemesh cluster: it loads only
// its shard of the checkpoint (its attention heads' slices of q/k/v and
// o_proj, its experts), keeps its share of the paged KV cache, and runs
// steps in lockstep with its peers, exchanging activations over long-lived
// gRPC streams: the attention all-reduce inside its tensor-parallel group,
// the MoE dispatch and combine all-to-all across every worker, and the
// all-gather that restores each rank's full hidden state.
//
// It holds one shard per live placement epoch, loads a new epoch while the
// old ones serve, frees what only old epochs used, and reports its state
// through Health, stops through Shutdown and drops everything on Fence
// (docs/worker.md).
package worker

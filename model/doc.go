// Package model holds the Qwen3 (dense and MoE) model: config.json parsing
// and validation, a memory-mapped safetensors reader that can load just a
// shard of each tensor, the weights loader, the paged KV cache, and the
// batched forward pass written against the kernels.Backend interface.
//
// The forward pass follows the Hugging Face semantics recorded in QWEN3.md:
// pre-norm blocks with QK-Norm, NeoX RoPE and grouped-query attention, then a
// sparse mixture of experts (or a dense SwiGLU MLP). Two seams let the same
// code run on one process or across a cluster: a Reducer sums partial
// attention outputs across a tensor-parallel group, and the FFN interface
// lets the MoE be computed locally or dispatched to remote experts.
package model

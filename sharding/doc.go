// Package sharding decides how a Qwen3 model is split across workers and
// what the split costs. It is pure: no I/O, no clocks, no randomness, and no
// imports of other moemesh packages, so the coordinator, the workers and the
// operator CLI all compute the same answers from the same inputs.
//
// It holds:
//
//   - Layout: N workers = D attention groups × T tensor-parallel ranks;
//     worker w is rank w%T of group w/T.
//   - SplitHeads: the query and KV heads of each TP rank (KV heads
//     replicated when T > KV).
//   - PlaceExperts and Placement: which workers host which experts,
//     with optional load-aware replicas, and Route, the deterministic
//     choice of the replica that serves a token.
//   - WorkerMemory and PlanMemory: bytes of weights and KV cache per worker;
//     KVCacheBytes: the KV cache of a whole cluster at a given value size.
//   - MoEDispatch and MoETrafficBytes: the expert-parallel dispatch volume.
//
// ModelShape carries the few config.json fields these need;
// Qwen3_235B_A22B and Qwen3_30B_A3B return the real shapes. docs/sharding.md
// gives the rules and formulas; Example shows a full plan.
package sharding

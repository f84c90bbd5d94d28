// Package scheduler is the coordinator's continuous-batching scheduler.
// It sits above the control plane (cmd → serving → scheduler →
// coordinator): the control plane's leader hands it a coordinator.Backend
// per leadership term (Service implements control.Leader), and the front
// doors submit requests to it (Service implements Submitter).
//
// Each step it runs the running sequences first (a decode's one token or
// a prefill's next chunk) and then admits waiting ones, all under a token
// budget (Config.MaxBatchTokens) and a sequence limit (Config.MaxSeqs).
// KV blocks come from one BlockPool per attention group; a group out of
// blocks preempts its most recently admitted sequence, which is recomputed
// later from its tokens. A failed step is recovered (Backend.Recover) and
// every sequence resubmitted from its tokens, so a worker's death delays a
// stream but never changes it: sampling happens on the workers, from the
// sequence's seed and position. docs/scheduler.md describes the policy.
//
// Generate is the simple offline loop beside it: a fixed batch of prompts
// prefilled in one step and decoded together until each ends, on a
// model.Model or a coordinator.Driver (moemesh generate and bench, and
// tests' references), with its blocks from Pools.
package scheduler

// Package sampling turns a row of next-token logits into a token id.
//
// A Params value says how: temperature, min-p, top-k, top-p and the
// repetition, frequency and presence penalties, plus the seed of the random
// draws. Greedy, ThinkingDefaults and NonThinkingDefaults return the
// settings the Qwen3 model card recommends; the zero Params is not valid.
// Resolve builds the Params of a request as vLLM does: each field the
// request leaves unset takes the model's generation_config.json value
// (LoadGenerationConfig), else its neutral value, and an unset seed is a
// fresh RandomSeed.
//
// A Sampler applies one Params to one sequence. Each draw comes from a PCG
// generator seeded from Params.Seed and the token's position alone, so a
// Sampler recreated from a sequence's history continues it exactly. It
// owns scratch buffers, so after the first call
// Sample allocates nothing and never writes to the caller's logits. The same
// seed, logits and history give the same tokens on every platform: all the
// arithmetic is IEEE float32/float64 with explicit rounding and a portable
// exponential, so no result depends on fused multiply-add or on an assembly
// math routine.
//
// Sample applies the steps in the order vLLM's v1 sampler uses (the API
// is vLLM's):
//
//	repetition → frequency → presence penalty → temperature → min-p → top-k → top-p → draw
//
// A temperature below MinTemperature (1e-5) skips the random steps and
// returns the arg max of the penalized logits, ties going to the lowest id.
// NaN logits count as -Inf. docs/sampling.md gives the exact definition of
// each step.
//
// Apart from LoadGenerationConfig, which reads one file, this package does
// no I/O; it imports no other moemesh package.
package sampling

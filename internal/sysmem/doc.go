// Package sysmem reports how much memory this machine can still give a new
// process: MemAvailable from /proc/meminfo, lowered to what the cgroup v2
// memory.max of this process leaves (memory.max − memory.current) when a
// limit is set. On a system without /proc it returns ErrUnsupported, and
// callers skip checks that need the figure.
//
// The CLI uses it to refuse a --context whose KV cache cannot fit before it
// starts a worker or loads a weight.
package sysmem

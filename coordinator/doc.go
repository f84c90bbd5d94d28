// Package coordinator drives a cluster of workers. Today it holds the step
// driver: it sends every worker the same step description, in lockstep, and
// gathers the logits the first rank of each attention group returns. The
// etcd-backed control plane (membership, placement epochs, leadership) and
// the request scheduler will live here too.
package coordinator

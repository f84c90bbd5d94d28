// Package membership detects member failures fast with hashicorp/memberlist
// (SWIM gossip). Every worker and coordinator of one cluster joins one
// memberlist; each member's Role and a few small Meta fields (its gRPC
// address) travel in memberlist's node meta. Membership changes reach
// Config.OnEvent as Events: EventJoin, EventUpdate, EventLeave (a graceful
// Leave) and EventDead (missed probes). The leading coordinator acts on
// EventDead and EventLeave: it fences the worker and re-plans.
//
// DefaultConfig is tuned so that a killed member is declared dead in about
// 2 s on a LAN or loopback; its doc comment derives the number and
// docs/membership.md reports the measurement.
//
// Lifecycle: New starts listening, Join contacts seeds, UpdateMeta gossips
// new Meta, Leave announces a graceful exit, Shutdown stops at once.
//
// The package knows nothing of etcd: liveness in etcd (leases) and liveness
// in memberlist are separate signals, and the coordinator combines them.
package membership

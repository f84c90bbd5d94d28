// Package store is the control plane's state in etcd, typed: worker and
// coordinator registrations on their own leases, the coordinators' leader
// election, and the model manifest and placement epochs that only the leader
// writes. Values are protojson-encoded moemesh.v1 records, so etcdctl shows
// them readably. docs/etcd.md lists the keys and the guards.
//
// A process registers once and watches Registration.Lost: when its lease is
// gone (it expired, or the leader fenced the process) it must stop acting on
// its old state. Coordinators Campaign; the Leader they get guards every
// write, so a deposed leader's writes fail with ErrNotLeader rather than
// overwrite its successor's.
//
// The package links only the etcd client; coordinator/etcdembed runs an
// etcd server in-process, and coordinator/store/storetest gives tests one.
package store

// Package etcdembed runs etcd inside the moemesh process for a one-machine
// start: a one-member cluster listening on loopback only, its logs quieted
// to errors. It is kept apart from coordinator/store so a process that only
// talks to an etcd cluster does not link the etcd server.
//
// Start on the same Dir and URLs again to resume the cluster with its data.
package etcdembed

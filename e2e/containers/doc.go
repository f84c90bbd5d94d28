// Package containers holds the multi-host tests of moemesh in real
// containers: a private Docker network with a three-member etcd cluster,
// two coordinators, three workers and a spare, each its own container with
// its own address, built from the FROM-scratch images of
// scripts/docker-build.sh. The tests kill, pause and restart containers
// and check the greedy output through the Go SDK against a single-process
// `moemesh generate`.
//
// The tests carry the build tag containers and need a Docker engine:
//
//	go test -tags containers ./e2e/containers/
//
// Without one (docker info fails) they skip, unless
// MOEMESH_REQUIRE_DOCKER=1, as scripts/test.sh sets, makes that a failure.
// Every container, network and image a run makes is removed by it. The
// package has no non-test code.
package containers

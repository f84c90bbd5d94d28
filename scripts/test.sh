#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent), then runs
# formatting and vet checks, the generated-code drift checks, every Go test
# with the race detector, the pure-Go (noasm) kernel build, the CUDA build
# (compile only), and short fuzz runs. .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests that need the demo model make their own; this keeps any other run
# from writing into the user's cache.
MOEMESH_CACHE=$(mktemp -d)
export MOEMESH_CACHE
trap 'rm -rf "$MOEMESH_CACHE"' EXIT

step() { printf '\n=== %s\n' "$*"; }

step "Go modules"
go mod download

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$') 2>/dev/null || true)
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...
go vet -tags noasm ./kernels/...
go vet -tags containers ./e2e/containers/

if [ -x scripts/verify-proto.sh ]; then
  step "protobuf drift"
  scripts/verify-proto.sh
fi

if [ -x scripts/install-cuda-headers.sh ]; then
  step "CUDA build (compile and vet only: no GPU here)"
  cuda_env=$(scripts/install-cuda-headers.sh) # fails the run when it fails
  eval "$cuda_env"
  go vet -tags cuda ./...
  go test -tags cuda -c -o /dev/null ./kernels/cuda/
  go build -tags cuda -o /dev/null ./cmd/moemesh
fi
if [ -x scripts/gen-ptx.sh ]; then
  step "PTX drift (skipped without nvcc)"
  scripts/gen-ptx.sh --check
fi

step "scripts (argument handling and parsing of bench-vs-llamacpp.sh, against stand-in binaries)"
scripts/bench-vs-llamacpp-test.sh

step "etcd server (pinned v3.7.3, built from its module; cached)"
MOEMESH_ETCD_BIN=$(scripts/build-etcd.sh)
export MOEMESH_ETCD_BIN
# The cluster tests run against the real etcd server too; never skip it here.
export MOEMESH_REQUIRE_ETCD_BIN=1

step "tests (race detector)"
go test -race -count=1 -timeout 20m ./...

step "container tests (Docker: images built by scripts/docker-build.sh, removed after)"
# A missing Docker engine fails the run here; MOEMESH_REQUIRE_DOCKER=0 makes
# the tests skip instead (docs/deploy.md).
MOEMESH_REQUIRE_DOCKER=${MOEMESH_REQUIRE_DOCKER:-1} go test -tags containers -count=1 -timeout 15m ./e2e/containers/

step "kernels, pure-Go build"
go test -tags noasm -count=1 ./kernels/...

step "fuzz (short)"
# Every target runs a fixed number of inputs (-fuzztime Nx), not a duration.
# With a duration the Go fuzzing coordinator puts a deadline on its context
# and treats it as the normal end by comparing that context's error with the
# error of the fuzzing context derived from it; the parent's done channel
# closes before the child is cancelled, so on a loaded machine the
# coordinator can see DeadlineExceeded on one and nil on the other and fail
# the target with "context deadline exceeded" having found nothing
# (golang/go#75804; FuzzDecodeRouting failed so on two cores). A count sets
# no deadline: a slow machine only takes longer. 20000 inputs (baseline
# coverage of the cached corpus included) take about 1-10 s a target on two
# cores. FUZZTIME overrides it; a duration there brings the race back.
fuzz() { go test -run '^$' -fuzz "^$2\$" -fuzztime "${FUZZTIME:-20000x}" "$1"; }
for target in $(scripts/fuzz-targets.sh); do
  fuzz "${target%%:*}" "${target##*:}"
done
echo "all checks passed"

#!/usr/bin/env bash
# Regenerates the Go code for proto/**/*.proto with pinned tool versions.
#
#   scripts/gen-proto.sh [OUT_DIR]
#
# OUT_DIR defaults to proto/ (the checked-in code). The generated files name
# the protoc version in their header, so every tool is pinned:
#   protoc              3.21.12  (Debian 12 package protobuf-compiler)
#   protoc-gen-go       v1.36.12 (google.golang.org/protobuf)
#   protoc-gen-go-grpc  v1.6.2   (google.golang.org/grpc/cmd/protoc-gen-go-grpc)
# The Go plugins are installed into a versioned directory under
# MOEMESH_TOOLS (default: the user cache directory), never onto PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_VERSION=3.21.12
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

out=${1:-proto}
tools=${MOEMESH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/moemesh/tools}

# protoc comes from Debian; install it when missing.
if ! command -v protoc >/dev/null 2>&1; then
  echo "gen-proto: installing protobuf-compiler (protoc ${PROTOC_VERSION})" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  # Retried: a mirror's hiccup should not fail the whole test run.
  for try in 1 2 3; do
    if $sudo apt-get update -qq && $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 protobuf-compiler >/dev/null; then
      break
    fi
    [ "$try" = 3 ] && exit 1
    echo "gen-proto: apt-get failed, retrying in $((try * 10)) s" >&2
    sleep $((try * 10))
  done
fi
have=$(protoc --version | awk '{print $2}')
if [ "$have" != "$PROTOC_VERSION" ]; then
  echo "gen-proto: protoc $have found, $PROTOC_VERSION required (Debian 12 protobuf-compiler)" >&2
  exit 1
fi

install_plugin() { # name module version
  local dir="$tools/$1-$3"
  if [ ! -x "$dir/$1" ]; then
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$2@$3"
  fi
  echo "$dir/$1"
}
gen_go=$(install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION")
gen_go_grpc=$(install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION")

mkdir -p "$out"
# One protoc run per proto package directory.
find proto -name '*.proto' -printf '%h\n' | sort -u | while read -r dir; do
  rel=${dir#proto/}
  mkdir -p "$out/$rel"
  rm -f "$out/$rel"/*.pb.go
  protoc -I proto \
    --plugin=protoc-gen-go="$gen_go" \
    --plugin=protoc-gen-go-grpc="$gen_go_grpc" \
    --go_out=paths=source_relative:"$out" \
    --go-grpc_out=paths=source_relative:"$out" \
    "$dir"/*.proto
done

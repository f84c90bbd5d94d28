#!/usr/bin/env bash
# Builds the pinned etcd server (tools/etcd, its own Go module) into
# ${MOEMESH_TOOLS:-$HOME/.cache/moemesh/tools}/etcd-<version>/etcd unless it
# is already there, and prints the binary's path (nothing else on stdout), so
#   export MOEMESH_ETCD_BIN=$(scripts/build-etcd.sh)
# points the store tests at a real etcd process.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v3.7.3
dir="${MOEMESH_TOOLS:-$HOME/.cache/moemesh/tools}/etcd-$version"
bin="$dir/etcd"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  # Build to a temporary name first so an interrupted build leaves nothing
  # that looks finished.
  (cd tools/etcd && go build -trimpath -o "$bin.tmp.$$" .) >&2
  mv "$bin.tmp.$$" "$bin"
fi
echo "$bin"

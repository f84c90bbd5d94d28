#!/usr/bin/env bash
# Fails (exit 1, with a diff) when the checked-in generated code under
# proto/ differs from what scripts/gen-proto.sh produces now.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

scripts/gen-proto.sh "$tmp/gen"

mkdir -p "$tmp/have"
(cd proto && find . -name '*.pb.go' -print0 | xargs -0 -r cp --parents -t "$tmp/have")

if ! diff -ruN "$tmp/have" "$tmp/gen" >"$tmp/diff"; then
  sed -e "s#$tmp/have#proto#g" -e "s#$tmp/gen#generated#g" "$tmp/diff"
  echo "verify-proto: generated code is stale; run scripts/gen-proto.sh and commit the result" >&2
  exit 1
fi
echo "verify-proto: generated code is up to date"

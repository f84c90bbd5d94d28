#!/usr/bin/env bash
# The serving path's cost, measured in one run on one machine:
#   moemesh bench --model DIR --batch 1,16        (the raw engine, in process)
#   moemesh bench --server ADDR --concurrency 1   (through moemesh local:
#   moemesh bench --server ADDR --concurrency 16   scheduler, gRPC API, one
#                                                  worker process)
# with the same prompt length (128) and generated tokens (32).
#
#   scripts/bench-serving.sh MODEL_DIR [OUT_DIR]
#
# MODEL_DIR: e.g. `moemesh gen-model --preset bench --out DIR`. OUT_DIR
# (default: a temporary directory) receives the raw outputs and the JSON
# results of the server runs.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: scripts/bench-serving.sh MODEL_DIR [OUT_DIR]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
bin="$out/moemesh"
go build -o "$bin" ./cmd/moemesh

echo "== raw engine (in process)"
"$bin" bench --model "$model" --batch 1,16 --prompt-tokens 128 --tokens 32 | tee "$out/raw.txt"

echo "== moemesh local (1 worker process)"
"$bin" local --model "$model" --workers 1 --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --context 8192 >"$out/local.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q '^moemesh local: ready' "$out/local.log" && break
  kill -0 $pid 2>/dev/null || { cat "$out/local.log"; exit 1; }
  sleep 1
done
addr=$(sed -n 's/.*gRPC API on \([^,]*\),.*/\1/p' "$out/local.log" | head -1)
[ -n "$addr" ] || { echo "no address in the log:"; cat "$out/local.log"; exit 1; }

for c in 1 16; do
  requests=$((c == 1 ? 4 : 32))
  echo "== bench --server, concurrency $c"
  "$bin" bench --server "$addr" --concurrency $c --requests $requests --prompt-len 128 --max-tokens 32 \
    --result-file "$out/server-c$c.json" | tee "$out/server-c$c.txt"
done

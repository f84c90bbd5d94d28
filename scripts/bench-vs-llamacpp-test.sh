#!/usr/bin/env bash
# Tests of scripts/bench-vs-llamacpp.sh without llama.cpp: its argument
# handling (bad arguments exit 2 naming what is wrong), and a run against
# stand-in llama-bench, llama-batched-bench and moemesh binaries that print
# fixed tables, checking the medians, ranges and ratios it reports.
#
#   scripts/bench-vs-llamacpp-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
script=scripts/bench-vs-llamacpp.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

# expect STATUS PATTERN ARGS...: the script exits with STATUS and its
# output (stdout and stderr) matches the extended regexp PATTERN.
expect() {
  local want=$1 pat=$2 got=0
  shift 2
  "$script" "$@" >"$tmp/out" 2>&1 || got=$?
  if [[ $got -ne $want ]] || ! grep -Eq -- "$pat" "$tmp/out"; then
    echo "FAIL: $script $*: exit $got (want $want), output:" >&2
    sed 's/^/    /' "$tmp/out" >&2
    echo "    (want a line matching: $pat)" >&2
    failed=1
  fi
}

# A llama.cpp build directory with stand-ins, a model directory, a GGUF.
mkdir -p "$tmp/llama/bin" "$tmp/model" "$tmp/empty"
echo '{}' >"$tmp/model/config.json"
: >"$tmp/model.gguf"
# Each stand-in reads its round from a counter file, so rounds differ.
cat >"$tmp/llama/bin/llama-bench" <<'STUB'
#!/usr/bin/env bash
n=$(cat "$(dirname "$0")/bench.n" 2>/dev/null || echo 0); echo $((n + 1)) >"$(dirname "$0")/bench.n"
pp=(400.00 440.00 420.00); tg=(50.00 52.00 48.00)
cat <<T
| model                          |       size |     params | backend    | threads |            test |                  t/s |
| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |
| qwen3moe ?B BF16               |   2.94 GiB |     1.58 B | CPU        |       2 |           pp128 |      ${pp[$n]} ± 3.21 |
| qwen3moe ?B BF16               |   2.94 GiB |     1.58 B | CPU        |       2 |            tg64 |       ${tg[$n]} ± 0.40 |

build: 34af94cd (1)
T
STUB
cat >"$tmp/llama/bin/llama-batched-bench" <<'STUB'
#!/usr/bin/env bash
n=$(cat "$(dirname "$0")/batched.n" 2>/dev/null || echo 0); echo $((n + 1)) >"$(dirname "$0")/batched.n"
tg=(160.00 150.00 155.00)
cat <<T
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   128 |     32 |    1 |    160 |    0.276 |   463.77 |    0.606 |    52.81 |    0.882 |   181.41 |
|   128 |     32 |   16 |   2560 |    4.400 |   465.45 |    3.232 | ${tg[$n]} |    7.632 |   335.43 |
T
STUB
cat >"$tmp/moemesh" <<'STUB'
#!/usr/bin/env bash
n=$(cat "$(dirname "$0")/moemesh.n" 2>/dev/null || echo 0); echo $((n + 1)) >"$(dirname "$0")/moemesh.n"
[[ " $* " == *" --compute bf16 "* ]] || { echo "stand-in: want --compute bf16 in: $*" >&2; exit 1; }
pp=(600.0 660.0 630.0); tg=(55.0 57.2 52.8); tg16=(240.0 240.0 240.0)
cat <<T
batch  prefill tok/s  decode tok/s  copy GB/s  copy bound tok/s  fraction  read GB/s  read bound tok/s  fraction
    1  ${pp[$n]}  ${tg[$n]}  30.0  50.0  1.10  35.0  58.0  0.9$n
   16  500.0  ${tg16[$n]}  30.0  50.0  -  35.0  58.0  -

active weight bytes per token: 1 (0.0 MB); threads: 2; workers: 1, tp: 1
T
STUB
chmod +x "$tmp/llama/bin/"* "$tmp/moemesh"
ok=("$tmp/llama" "$tmp/model" "$tmp/model.gguf")

expect 0 'LLAMA_BUILD_DIR' --help
expect 2 'want LLAMA_BUILD_DIR MODEL_DIR GGUF, got 0 arguments'
expect 2 'got 2 arguments' "$tmp/llama" "$tmp/model"
expect 2 'got 4 arguments' "${ok[@]}" extra
expect 2 'unknown option --bogus' --bogus "${ok[@]}"
expect 2 '--rounds needs a value' --rounds
expect 2 '--rounds 0: want a positive integer' --rounds 0 "${ok[@]}"
expect 2 '--rounds x: want a positive integer' --rounds x "${ok[@]}"
expect 2 '--threads -1: want a positive integer' --threads -1 "${ok[@]}"
expect 2 '--compute fp16: want f32 or bf16' --compute fp16 "${ok[@]}"
expect 2 'is not a directory' "$tmp/nowhere" "$tmp/model" "$tmp/model.gguf"
expect 2 'no executable llama-bench' "$tmp/empty" "$tmp/model" "$tmp/model.gguf"
expect 2 'has no config.json' "$tmp/llama" "$tmp/empty" "$tmp/model.gguf"
expect 2 'is not a readable file' "$tmp/llama" "$tmp/model" "$tmp/missing.gguf"

# Three rounds against the stand-ins: per round, moemesh/llama.cpp is
# prefill 1.5 each, decode 1.1 each, batch 16 1.5, 1.6, 240/155.
MOEMESH_BIN=$tmp/moemesh expect 0 '^prefill 128 tokens +630.00 \(600.00-660.00\) +420.00 \(400.00-440.00\) +1.50 \(1.50-1.50\)$' \
  --rounds 3 --compute bf16 --out "$tmp/run" "${ok[@]}"
grep -Eq '^decode batch 1 +55.00 \(52.80-57.20\) +50.00 \(48.00-52.00\) +1.10 \(1.10-1.10\)$' "$tmp/out" ||
  { echo "FAIL: decode batch 1 row:" >&2; cat "$tmp/out" >&2; failed=1; }
grep -Eq '^decode 16 sequences +240.00 \(240.00-240.00\) +155.00 \(150.00-160.00\) +1.55 \(1.50-1.60\)$' "$tmp/out" ||
  { echo "FAIL: decode 16 sequences row:" >&2; cat "$tmp/out" >&2; failed=1; }
grep -Eq 'is 0.91 \(0.90-0.92\) of its read-bandwidth bound' "$tmp/out" ||
  { echo "FAIL: bandwidth fraction:" >&2; cat "$tmp/out" >&2; failed=1; }
# A moemesh that prints no table fails the run with status 1.
printf '#!/usr/bin/env bash\necho nothing\n' >"$tmp/moemesh"
MOEMESH_BIN=$tmp/moemesh expect 1 "no batch 1 and 16 rows in moemesh bench's output" --out "$tmp/run2" "${ok[@]}"

if [[ $failed -ne 0 ]]; then
  exit 1
fi
echo "ok: bench-vs-llamacpp.sh"

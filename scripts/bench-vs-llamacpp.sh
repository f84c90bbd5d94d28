#!/usr/bin/env bash
# moemesh's CPU engine against llama.cpp on the same checkpoint, in one run
# on one machine, the two interleaved round by round (the order alternating)
# so that drift in the machine's state (other load, memory bandwidth, heat)
# falls on both:
#
#   moemesh bench --model MODEL_DIR --batch 1,16 --prompt-tokens 128 --tokens 32
#   llama-bench -m GGUF -t T -p 128 -n 64 -r 3
#   llama-batched-bench -m GGUF -t T -c 4096 -b 2048 -ub 512 -npp 128 -ntg 32 -npl 1,16
#
# and reports, per measure, the median and range over the rounds of each
# side and of the ratio moemesh/llama.cpp (taken within each round):
# prefill of 128 tokens, decode at batch 1 (with moemesh's fraction of the
# read-bandwidth bound) and decode of 16 sequences.
#
#   scripts/bench-vs-llamacpp.sh [--rounds N] [--threads T] [--compute f32|bf16] [--out DIR] \
#       LLAMA_BUILD_DIR MODEL_DIR GGUF
#
# LLAMA_BUILD_DIR: a llama.cpp CPU build (its bin/ holds llama-bench and
# llama-batched-bench; the project does not build or vendor llama.cpp).
# MODEL_DIR: a moemesh model directory (config.json and safetensors), e.g.
# `moemesh gen-model --preset bench --out DIR`; GGUF: the same checkpoint
# converted for llama.cpp (convert_hf_to_gguf.py --outtype bf16).
# --rounds (default 3), --threads (default 2, both engines: GOMAXPROCS for
# moemesh), --compute (moemesh bench --compute, default f32), --out (raw
# outputs; default a temporary directory). MOEMESH_BIN, when set, is the
# moemesh binary to run instead of building one.
#
# Exit status: 0 done, 1 a benchmark failed or printed nothing readable,
# 2 bad arguments.
set -euo pipefail

usage() {
  sed -n 's/^#   scripts/scripts/p; /^#       LLAMA/p' "$0" | sed 's/^#  *//' >&2
}

die_usage() {
  echo "bench-vs-llamacpp: $*" >&2
  usage
  exit 2
}

is_posint() {
  [[ $1 =~ ^[1-9][0-9]*$ ]]
}

rounds=3
threads=2
compute=f32
out=
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --rounds | --threads | --compute | --out)
      [[ $# -ge 2 ]] || die_usage "$1 needs a value"
      case $1 in
        --rounds) rounds=$2 ;;
        --threads) threads=$2 ;;
        --compute) compute=$2 ;;
        --out) out=$2 ;;
      esac
      shift 2
      ;;
    --)
      shift
      break
      ;;
    -*) die_usage "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 3 ]] || die_usage "want LLAMA_BUILD_DIR MODEL_DIR GGUF, got $# arguments"
llama=$1
model=$2
gguf=$3
is_posint "$rounds" || die_usage "--rounds $rounds: want a positive integer"
is_posint "$threads" || die_usage "--threads $threads: want a positive integer"
[[ $compute == f32 || $compute == bf16 ]] || die_usage "--compute $compute: want f32 or bf16"

find_tool() { # the path of llama.cpp tool $1 in $llama, or nothing
  local p
  for p in "$llama/bin/$1" "$llama/$1"; do
    if [[ -x $p && ! -d $p ]]; then
      echo "$p"
      return
    fi
  done
}
[[ -d $llama ]] || die_usage "LLAMA_BUILD_DIR $llama is not a directory"
lbench=$(find_tool llama-bench)
lbatched=$(find_tool llama-batched-bench)
[[ -n $lbench ]] || die_usage "no executable llama-bench in $llama/bin or $llama"
[[ -n $lbatched ]] || die_usage "no executable llama-batched-bench in $llama/bin or $llama"
[[ -f $model/config.json ]] || die_usage "MODEL_DIR $model has no config.json"
[[ -f $gguf && -r $gguf ]] || die_usage "GGUF $gguf is not a readable file"

if [[ -z $out ]]; then
  out=$(mktemp -d)
fi
mkdir -p "$out"
if [[ -n ${MOEMESH_BIN:-} ]]; then
  bin=$MOEMESH_BIN
else
  bin="$out/moemesh"
  (cd "$(dirname "$0")/.." && go build -o "$bin" ./cmd/moemesh)
fi

# fail prints a message and the raw output file $2, and exits 1.
fail() {
  echo "bench-vs-llamacpp: $1 (output in $2):" >&2
  cat "$2" >&2
  exit 1
}

# Parsers: each prints one number or nothing.
# moemesh bench: rows "batch prefill decode copyGB/s bound frac readGB/s bound frac".
mm_field() { # file batch column
  awk -v b="$2" -v c="$3" '$1 == b && NF >= 9 { print $c; exit }' "$1"
}
# llama-bench (markdown): the t/s column (the last) of the row whose test is $2.
ll_bench() { # file test
  awk -F'|' -v t="$2" '{
    for (i = 2; i < NF; i++) { f = $i; gsub(/ /, "", f); if (f == t) { v = $(NF-1); n = split(v, a, " "); for (j = 1; j <= n; j++) if (a[j] ~ /^[0-9.]+$/) { print a[j]; exit } } }
  }' "$1"
}
# llama-batched-bench (markdown): the S_TG t/s column of the row with B = $2.
ll_batched() { # file B
  awk -F'|' -v b="$2" '
    /S_TG/ { for (i = 2; i < NF; i++) { f = $i; gsub(/ /, "", f); col[f] = i } next }
    ("B" in col) && ("S_TGt/s" in col) { f = $(col["B"]); gsub(/ /, "", f); if (f == b) { v = $(col["S_TGt/s"]); gsub(/ /, "", v); print v; exit } }
  ' "$1"
}

run_moemesh() { # round
  local f="$out/moemesh-$1.txt"
  GOMAXPROCS=$threads "$bin" bench --model "$model" --batch 1,16 --prompt-tokens 128 --tokens 32 \
    --compute "$compute" >"$f" 2>&1 || fail "moemesh bench failed" "$f"
  mm_pp[$1]=$(mm_field "$f" 1 2)
  mm_tg1[$1]=$(mm_field "$f" 1 3)
  mm_frac[$1]=$(mm_field "$f" 1 9)
  mm_tg16[$1]=$(mm_field "$f" 16 3)
  [[ -n ${mm_pp[$1]} && -n ${mm_tg1[$1]} && -n ${mm_tg16[$1]} ]] || fail "no batch 1 and 16 rows in moemesh bench's output" "$f"
}

run_llama() { # round
  local f="$out/llama-bench-$1.txt" g="$out/llama-batched-bench-$1.txt"
  "$lbench" -m "$gguf" -t "$threads" -p 128 -n 64 -r 3 >"$f" 2>&1 || fail "llama-bench failed" "$f"
  ll_pp[$1]=$(ll_bench "$f" pp128)
  ll_tg1[$1]=$(ll_bench "$f" tg64)
  [[ -n ${ll_pp[$1]} && -n ${ll_tg1[$1]} ]] || fail "no pp128 and tg64 rows in llama-bench's output" "$f"
  "$lbatched" -m "$gguf" -t "$threads" -c 4096 -b 2048 -ub 512 -npp 128 -ntg 32 -npl 1,16 >"$g" 2>&1 ||
    fail "llama-batched-bench failed" "$g"
  ll_tg16[$1]=$(ll_batched "$g" 16)
  [[ -n ${ll_tg16[$1]} ]] || fail "no B = 16 row in llama-batched-bench's output" "$g"
}

declare -a mm_pp mm_tg1 mm_tg16 mm_frac ll_pp ll_tg1 ll_tg16
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r of $rounds" >&2
  if ((r % 2 == 1)); then
    run_moemesh "$r"
    run_llama "$r"
  else
    run_llama "$r"
    run_moemesh "$r"
  fi
done

# stats prints "median min max" of its arguments.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}
ratios() { # name of moemesh array, name of llama array
  local -n a=$1 b=$2
  local r
  for ((r = 1; r <= rounds; r++)); do
    awk -v x="${a[$r]}" -v y="${b[$r]}" 'BEGIN { printf "%.4f\n", (y > 0) ? x / y : 0 }'
  done
}
row() { # label, moemesh array, llama array
  local -n ma=$2 la=$3
  local m l q
  read -r -a m <<<"$(stats "${ma[@]}")"
  read -r -a l <<<"$(stats "${la[@]}")"
  mapfile -t rs < <(ratios "$2" "$3")
  read -r -a q <<<"$(stats "${rs[@]}")"
  printf '%-22s %9s %-17s %9s %-17s %6s %s\n' "$1" "${m[0]}" "(${m[1]}-${m[2]})" "${l[0]}" "(${l[1]}-${l[2]})" "${q[0]}" "(${q[1]}-${q[2]})"
}

echo
echo "moemesh bench --compute $compute vs llama.cpp, $threads threads, $rounds interleaved rounds: medians (ranges), tokens/s"
printf '%-22s %9s %-17s %9s %-17s %6s %s\n' measure moemesh "" llama.cpp "" ratio ""
row "prefill 128 tokens" mm_pp ll_pp
row "decode batch 1" mm_tg1 ll_tg1
row "decode 16 sequences" mm_tg16 ll_tg16
read -r -a fr <<<"$(stats "${mm_frac[@]}")"
echo "moemesh decode at batch 1 is ${fr[0]} (${fr[1]}-${fr[2]}) of its read-bandwidth bound"
echo "raw outputs: $out"

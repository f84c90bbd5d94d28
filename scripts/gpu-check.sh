#!/usr/bin/env bash
# Builds, then runs, the checks of the CUDA backend that need a GPU.
#
#   scripts/gpu-check.sh build   on a build machine with Go (no GPU needed):
#                                writes .gpu/cuda.test (the -tags cuda test
#                                binary of kernels/cuda) and, when cmd/moemesh
#                                builds with the tag, .gpu/moemesh
#   scripts/gpu-check.sh run     on a GPU host without Go, from the repository
#                                root: conformance suite, CPU cross-check,
#                                benchmarks, then a table of each kernel's
#                                GB/s and GFLOP/s beside the measured copy
#                                bandwidth; then the model-level checks that
#                                the moemesh binary supports
#
#   GPU_DIR     where build writes and run reads (default .gpu)
#   OUT         where run writes its logs (default $GPU_DIR/logs)
#   BENCHTIME   go test -test.benchtime for the benchmarks (default 300ms)
#   MOEMESH_CUDA_DEVICE   device ordinal (default 0)
#
# The binaries need only the driver's libcuda.so.1 and glibc >= 2.34 there.
# Exit status: non-zero when a correctness check fails; benchmarks only report.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=${GPU_DIR:-.gpu}

build() {
	if [[ -z ${CGO_CFLAGS:-} ]] && ! echo '#include <cuda.h>' | cc -E -x c - >/dev/null 2>&1; then
		eval "$(scripts/install-cuda-headers.sh)"
	fi
	mkdir -p "$dir"
	go test -tags cuda -c -o "$dir/cuda.test" ./kernels/cuda/
	echo "gpu-check: built $dir/cuda.test"
	if [[ -d cmd/moemesh ]]; then
		if go build -tags cuda -o "$dir/moemesh" ./cmd/moemesh; then
			echo "gpu-check: built $dir/moemesh"
		else
			echo "gpu-check: cmd/moemesh does not build with -tags cuda; model-level checks will be skipped" >&2
			rm -f "$dir/moemesh"
		fi
	fi
	du -sh "$dir"/* | sed 's/^/gpu-check: /'
}

# table reads `go test -bench` output and prints each benchmark's time,
# bandwidth (also as a share of the copy bandwidth) and arithmetic rate.
table() {
	awk '
	function metric(unit,   i) {
		for (i = 3; i < NF; i++) if ($(i + 1) == unit) return $i
		return ""
	}
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		ns = metric("ns/op"); gbs = metric("GB/s"); mbs = metric("MB/s"); gf = metric("GFLOP/s")
		if (gbs == "" && mbs != "") gbs = mbs / 1000
		n++; names[n] = name; t[n] = ns; bw[n] = gbs; fl[n] = gf
		if (name == "DeviceCopy") copy = gbs
	}
	END {
		printf "%-72s %12s %10s %8s %10s\n", "kernel", "us/op", "GB/s", "% copy", "GFLOP/s"
		for (i = 1; i <= n; i++) {
			pct = (copy != "" && bw[i] != "") ? sprintf("%.0f", 100 * bw[i] / copy) : "-"
			printf "%-72s %12.1f %10s %8s %10s\n", names[i], t[i] / 1000,
				bw[i] == "" ? "-" : sprintf("%.1f", bw[i]), pct, fl[i] == "" ? "-" : sprintf("%.0f", fl[i])
		}
		if (copy != "") printf "\ndevice-to-device copy: %.0f GB/s (bytes read + written)\n", copy
	}'
}

run() {
	local out=${OUT:-$dir/logs} status=0
	mkdir -p "$out"
	[[ -x $dir/cuda.test ]] || {
		echo "gpu-check: $dir/cuda.test missing; run 'scripts/gpu-check.sh build' on a build machine and carry $dir" >&2
		exit 2
	}
	if command -v nvidia-smi >/dev/null; then
		nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
	fi
	local test
	test=$(cd "$dir" && pwd)/cuda.test

	echo "=== conformance suite and CPU cross-check"
	if (cd kernels/cuda && "$test" -test.run 'TestConformance|TestCrossCheckCPU' -test.v -test.timeout 5m) >"$out/tests.log" 2>&1; then
		echo "PASS ($(grep -c -- '--- PASS' "$out/tests.log") subtests)"
	else
		status=1
		echo "FAIL"
		grep -E -- '--- FAIL|_test.go:|panic|Error' "$out/tests.log" | head -n 40 || true
	fi

	echo "=== benchmarks"
	(cd kernels/cuda && "$test" -test.run '^$' -test.bench 'DeviceCopy|Model|Conformance' \
		-test.benchtime "${BENCHTIME:-300ms}" -test.timeout 8m) >"$out/bench.log" 2>&1 || {
		echo "benchmarks failed:"
		tail -n 20 "$out/bench.log"
	}
	table <"$out/bench.log" | tee "$out/table.txt"
	echo "(Conformance/* rows: kernelstest.Bench stops its timer before its final Sync," \
		"so on an asynchronous backend they can show launch rate rather than device throughput)"

	echo "=== model-level checks"
	model_checks "$out" || status=1
	return $status
}

# model_checks runs golden logits and decode tokens/s through the moemesh
# binary when it can select the GPU. See docs/cuda.md (TODO) for the flag
# these hooks expect.
model_checks() {
	local out=$1 bin=$dir/moemesh
	if [[ ! -x $bin ]]; then
		echo "skipped: no $bin (build it with 'scripts/gpu-check.sh build')"
		return 0
	fi
	if ! "$bin" logits --help 2>&1 | grep -q -- '--device'; then
		echo "skipped: moemesh has no --device flag yet (TODO in docs/cuda.md)"
		return 0
	fi
	local dev=${MOEMESH_CUDA_DEVICE:-0} rc=0 m
	for m in tiny-a tiny-c; do
		local golden=model/testdata/$m/golden.json.gz
		[[ -f $golden ]] || continue
		if ! command -v python3 >/dev/null; then
			echo "skipped golden logits: no python3"
			break
		fi
		local toks
		toks=$(python3 -c 'import gzip,json,sys; print(",".join(map(str, json.load(gzip.open(sys.argv[1]))["prompts"][-1]["tokens"])))' "$golden")
		if ! "$bin" logits --device "cuda:$dev" --model "model/testdata/$m" --tokens "$toks" >"$out/logits-$m.json" 2>"$out/logits-$m.err"; then
			echo "FAIL golden logits $m: moemesh logits failed"
			tail -n 5 "$out/logits-$m.err"
			rc=1
			continue
		fi
		python3 - "$golden" "$out/logits-$m.json" "$m" <<'EOF' || rc=1
import gzip, json, math, sys
golden = json.load(gzip.open(sys.argv[1]))["prompts"][-1]["prompt_logits"]
ours = json.load(open(sys.argv[2]))["logits"]
worst = 0.0
for g, o in zip(golden, ours):
    num = math.sqrt(sum((a - b) ** 2 for a, b in zip(o, g)))
    den = math.sqrt(sum(b * b for b in g)) or 1.0
    worst = max(worst, num / den)
ok = len(ours) == len(golden) and worst <= 1e-4
print(f"{'PASS' if ok else 'FAIL'} golden logits {sys.argv[3]}: {len(ours)} positions, worst relative error {worst:.3g} (limit 1e-4)")
sys.exit(0 if ok else 1)
EOF
	done
	local bench=${TMPDIR:-/tmp}/moemesh-bench-model
	if [[ ! -d $bench ]]; then
		"$bin" gen-model --preset bench --out "$bench" >"$out/gen-model.log" 2>&1 || {
			echo "skipped decode benchmark: gen-model failed (see $out/gen-model.log)"
			return $rc
		}
	fi
	echo "decode tokens/s (moemesh bench --device cuda:$dev):"
	"$bin" bench --device "cuda:$dev" --model "$bench" --batch 1,16 2>&1 | tee "$out/model-bench.txt" || rc=1
	return $rc
}

case "${1:-}" in
build) build ;;
run) run ;;
*)
	echo "usage: $0 build|run" >&2
	exit 2
	;;
esac

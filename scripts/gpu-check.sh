#!/usr/bin/env bash
# Builds, then runs, the checks of the CUDA backend that need a GPU.
#
#   scripts/gpu-check.sh build   on a build machine with Go (no GPU needed):
#                                writes .gpu/cuda.test (the -tags cuda test
#                                binary of kernels/cuda), .gpu/moemesh and
#                                .gpu/build.txt; checks the committed PTX
#                                against csrc/ (regenerates it when nvcc is
#                                there and it drifted)
#   scripts/gpu-check.sh run     on a GPU host without Go, from the repository
#                                root. Every step has a time budget and the
#                                whole run stays inside RUN_BUDGET seconds;
#                                no step aborts the run. Steps: preflight,
#                                ptxas report, each conformance/cross-check
#                                group in its own process, memcheck rerun of
#                                the first failing group, benchmarks (table of
#                                GB/s against the measured copy bandwidth),
#                                golden logits, decode tokens/s
#
#   GPU_DIR      where build writes and run reads (default .gpu)
#   OUT          where run writes summary.txt and logs.tgz, nothing else
#                (default $GPU_DIR/out)
#   RUN_BUDGET   seconds for the whole run (default 360)
#   BENCHTIME    go test -test.benchtime for the benchmarks (default 200ms)
#   MOEMESH_CUDA_DEVICE   device ordinal (default 0)
#
# The binaries need only the driver's libcuda.so.1 and glibc >= 2.34 there.
# Exit status of run: 1 when a correctness check failed, 0 otherwise
# (skipped steps and benchmark trouble are reported, not fatal).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
dir=${GPU_DIR:-.gpu}

say() { printf 'gpu-check: %s\n' "$*"; }

# ---------------------------------------------------------------- build

# cuda_flags sets CGO_CFLAGS/CGO_LDFLAGS unless cuda.h and a libcuda.so
# are already found: first the system's (a full toolkit install keeps the
# link stub in a stubs/ directory the linker does not search), then the
# cached light headers, and only then the download of install-cuda-headers.sh.
cuda_flags() {
	if [[ -n ${CGO_CFLAGS:-} ]]; then
		say "headers: CGO_CFLAGS from the environment"
		return 0
	fi
	local d
	if echo '#include <cuda.h>' | cc -E -x c - >/dev/null 2>&1; then
		for d in /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/stubs /usr/local/cuda/lib64/stubs /usr/lib64; do
			if [[ -f $d/libcuda.so ]]; then
				export CGO_LDFLAGS="-L$d"
				say "headers: system cuda.h, libcuda.so from $d"
				return 0
			fi
		done
	fi
	local cache=${CUDA_HEADERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moemesh-cuda}
	if [[ -f $cache/usr/include/cuda.h && -f $cache/usr/lib/x86_64-linux-gnu/stubs/libcuda.so ]]; then
		say "headers: cached in $cache (no download)"
	else
		say "headers: none found; downloading (scripts/install-cuda-headers.sh)"
	fi
	local flags
	flags=$(scripts/install-cuda-headers.sh) || return 1
	eval "$flags"
}

build() {
	local t0=$SECONDS
	cuda_flags || {
		say "cannot get cuda.h (see docs/cuda.md)"
		exit 1
	}
	mkdir -p "$dir"
	scripts/gen-ptx.sh --sources-check || true
	if command -v "${NVCC:-nvcc}" >/dev/null 2>&1; then
		if ! scripts/gen-ptx.sh --check; then
			say "regenerating the PTX (commit kernels/cuda/ptx afterwards)"
			scripts/gen-ptx.sh || exit 1
		fi
	fi
	go test -tags cuda -c -o "$dir/cuda.test" ./kernels/cuda/ || exit 1
	say "built $dir/cuda.test"
	if go build -tags cuda -o "$dir/moemesh" ./cmd/moemesh; then
		say "built $dir/moemesh"
	else
		say "cmd/moemesh does not build with -tags cuda; model-level checks will be skipped"
		rm -f "$dir/moemesh"
	fi
	{
		echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
		echo "built: $(date -u +%FT%TZ) on $(uname -n)"
		echo "go: $(go version)"
		scripts/gen-ptx.sh --sources-check 2>&1
	} >"$dir/build.txt"
	local sizes
	sizes=$(du -sh "$dir"/*)
	printf '%s\n' "$sizes" | sed 's/^/gpu-check: /'
	say "build took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- run

# Results: one line per step, "STATUS step seconds note"; printed as they
# come and again, compactly, at the end.
results=()
failed=0
gpu_why="" # why the GPU steps are skipped; empty when the device opened
logs=""
deadline=0

record() { # status step seconds note
	local line
	local note=$4
	((${#note} > 150)) && note="${note:0:147}..."
	line=$(printf '%-7s %-34s %4ss  %s' "$1" "$2" "$3" "$note")
	results+=("$line")
	printf '%s\n' "$line"
	[[ $1 == FAIL ]] && failed=1
	return 0
}

# budget prints min(want, seconds left before the deadline), 0 when less
# than 5 seconds are left.
budget() {
	local left=$((deadline - SECONDS))
	((left < 5)) && left=0
	echo $(($1 < left ? $1 : left))
}

# failure_excerpt FILE N prints the last N lines of FILE that match a
# failure pattern, or else its last N lines; no pipeline, so no SIGPIPE.
failure_excerpt() {
	awk -v n="$2" '
		/--- FAIL|_test\.go:[0-9]+:|panic:|Error|error|FAIL|fatal/ { keep[++k] = $0 }
		{ tail[NR % n] = $0 }
		END {
			if (k > 0) { for (i = (k > n ? k - n + 1 : 1); i <= k; i++) print "    " keep[i] }
			else { for (i = NR - n + 1; i <= NR; i++) if (i > 0) print "    " tail[i % n] }
		}' "$1"
}

preflight() {
	local t0=$SECONDS
	say "=== preflight"
	{
		echo "date: $(date -u +%FT%TZ)  host: $(uname -n)  kernel: $(uname -r)"
		[[ -f $dir/build.txt ]] && cat "$dir/build.txt"
		local v
		v=$(ldd --version 2>&1) || true
		echo "ldd: ${v%%$'\n'*}"
		if command -v nvidia-smi >/dev/null 2>&1; then
			timeout -k 2 15 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 ||
				echo "nvidia-smi failed (status $?)"
		else
			echo "nvidia-smi: not found"
		fi
	} >"$logs/preflight.txt" 2>&1
	cat "$logs/preflight.txt"

	export CUDA_CACHE_PATH=/tmp/moemesh-cuda-cache
	mkdir -p "$CUDA_CACHE_PATH"
	local ldc libcuda=""
	ldc=$(ldconfig -p 2>/dev/null) || true
	if [[ $ldc == *"libcuda.so.1 "* ]]; then
		libcuda=system
	else
		local d
		for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
			if [[ -e $d/libcuda.so.1 ]]; then
				export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
				libcuda=$d
				break
			fi
		done
	fi
	have_libcuda=0
	[[ -n $libcuda ]] && have_libcuda=1
	local bin note=""
	for bin in "$dir/cuda.test" "$dir/moemesh"; do
		[[ -f $bin ]] || continue
		chmod +x "$bin" 2>/dev/null || true
		echo "--- ldd $bin" >>"$logs/preflight.txt"
		ldd "$bin" >>"$logs/preflight.txt" 2>&1 || true
	done
	have_test=0
	[[ -x $dir/cuda.test ]] && have_test=1
	[[ $have_test == 1 ]] || note="$dir/cuda.test missing (run 'scripts/gpu-check.sh build' and carry $dir); "
	if [[ $have_libcuda == 1 ]]; then
		note+="libcuda.so.1: $libcuda"
	else
		note+="libcuda.so.1 not found (no driver)"
	fi
	echo "$note" >>"$logs/preflight.txt"
	record info preflight $((SECONDS - t0)) "$note"

	# The cuda build initialises the driver before main: a binary that runs
	# no test still fails when there is no usable device.
	if [[ $have_test == 0 ]]; then
		gpu_why="no test binary"
	elif [[ $have_libcuda == 0 ]]; then
		gpu_why="libcuda.so.1 not found"
	else
		t0=$SECONDS
		if timeout -k 2 30 "$dir/cuda.test" -test.run '^$' >"$logs/device.txt" 2>&1; then
			record ok "device (cuInit)" $((SECONDS - t0)) "driver initialised"
		else
			local rc=$?
			gpu_why="no usable device: $(awk 'NF { l = $0 } END { if (match(l, /details on: /)) l = "cuInit " substr(l, RSTART + RLENGTH); print substr(l, 1, 100) }' "$logs/device.txt")"
			((rc == 124 || rc == 137)) && gpu_why="no usable device: driver initialisation timed out (30 s)"
			record FAIL "device (cuInit)" $((SECONDS - t0)) "$gpu_why"
		fi
	fi
}

ptxas_report() {
	local t0=$SECONDS ptxas="" p
	for p in "$(command -v ptxas 2>/dev/null)" /usr/local/cuda/bin/ptxas; do
		[[ -n $p && -x $p ]] && ptxas=$p && break
	done
	if [[ -z $ptxas ]]; then
		record skip "ptxas -arch=sm_90 -v" 0 "no ptxas on this host"
		return
	fi
	local b
	b=$(budget 30)
	if timeout -k 2 "$b" "$ptxas" -arch=sm_90 -v -o /dev/null kernels/cuda/ptx/kernels_sm90.ptx >"$logs/ptxas.txt" 2>&1; then
		local s
		s=$(awk '
			/Compiling entry function/ { n++ }
			/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^registers/) r = ($i > r ? $i : r) }
			/bytes spill stores/ { for (i = 1; i <= NF; i++) if ($(i+1) == "bytes" && $(i+2) == "spill") sp += $i }
			/bytes stack frame/ { for (i = 1; i <= NF; i++) if ($(i+1) == "bytes" && $(i+2) == "stack") if ($i > 0) st++ }
			END { printf "%d entries, max %d registers, %d spill-store bytes, %d with a stack frame", n, r, sp, st }' "$logs/ptxas.txt")
		record ok "ptxas -arch=sm_90 -v" $((SECONDS - t0)) "$s ($("$ptxas" --version 2>&1 | awk '/release/ {print $5, $6}'))"
	else
		record FAIL "ptxas -arch=sm_90 -v" $((SECONDS - t0)) "see ptxas.txt"
		failure_excerpt "$logs/ptxas.txt" 6
	fi
}

# The test groups, each run in its own process. Patterns are anchored
# -test.run expressions; keep in step with kernels/cuda/cuda_test.go
# (check_groups warns about a top-level test no group names).
groups=(
	'Conformance=^TestConformance$'
	'Aligned/MatMul=^TestAligned$/^MatMul$'
	'Aligned/GroupedMatMul=^TestAligned$/^GroupedMatMul$'
	'Aligned/Attention=^TestAligned$/^Attention$'
	'CrossCheck/MatMul=^TestCrossCheckCPU$/^MatMul$'
	'CrossCheck/GroupedMatMul=^TestCrossCheckCPU$/^GroupedMatMul$'
	'CrossCheck/RowOps=^TestCrossCheckCPU$/^(RMSNorm|RoPE|SoftmaxTopK|SiLUMulAdd)$'
	'CrossCheck/EmbedGatherScatter=^TestCrossCheckCPU$/^EmbedGatherScatter$'
	'CrossCheck/Attention=^TestCrossCheckCPU$/^KVWriteAttention'
)

check_groups() {
	local list top covered g
	list=$("$test" -test.list '.*' 2>/dev/null) || return 0
	for top in $list; do
		[[ $top == Test* ]] || continue
		covered=0
		for g in "${groups[@]}"; do
			[[ ${g#*=} == "^$top\$"* ]] && covered=1
		done
		[[ $covered == 1 ]] || say "warning: $top is in no test group of gpu-check.sh"
	done
}

first_failed=""

run_groups() {
	if [[ -n $gpu_why ]]; then
		for g in "${groups[@]}"; do record skip "test ${g%%=*}" 0 "$gpu_why"; done
		return
	fi
	check_groups
	local g name pat b t0 log rc
	for g in "${groups[@]}"; do
		name=${g%%=*} pat=${g#*=}
		b=$(budget 60)
		if ((b == 0)); then
			record skip "test $name" 0 "out of time"
			continue
		fi
		log="$logs/test-${name//\//-}.log"
		t0=$SECONDS
		(cd kernels/cuda && CUDA_LAUNCH_BLOCKING=1 timeout -k 5 "$b" "$test" -test.run "$pat" -test.v \
			-test.timeout "$((b > 10 ? b - 3 : b))s") >"$log" 2>&1
		rc=$?
		local passed failedn
		passed=$(awk '/^ *--- PASS/ { n++ } END { print n + 0 }' "$log")
		failedn=$(awk '/^ *--- FAIL/ { n++ } END { print n + 0 }' "$log")
		if ((rc == 0)) && awk '/^ *--- PASS/ { f = 1 } END { exit !f }' "$log"; then
			record ok "test $name" $((SECONDS - t0)) "$passed passed"
		elif ((rc == 0)); then
			record FAIL "test $name" $((SECONDS - t0)) "no test ran (pattern $pat)"
		else
			local why="status $rc, $failedn failed, $passed passed"
			((rc == 124 || rc == 137)) && why="timed out after ${b}s, $passed passed"
			record FAIL "test $name" $((SECONDS - t0)) "$why"
			failure_excerpt "$log" 8
			[[ -z $first_failed ]] && first_failed=$g
		fi
	done
}

memcheck() {
	local t0=$SECONDS
	if [[ -z $first_failed ]]; then
		record skip "memcheck" 0 "no failing group"
		return
	fi
	local cs
	cs=$(command -v compute-sanitizer 2>/dev/null) || cs=""
	[[ -z $cs && -x /usr/local/cuda/bin/compute-sanitizer ]] && cs=/usr/local/cuda/bin/compute-sanitizer
	if [[ -z $cs ]]; then
		record skip "memcheck ${first_failed%%=*}" 0 "no compute-sanitizer"
		return
	fi
	local b
	b=$(budget 90)
	if ((b == 0)); then
		record skip "memcheck ${first_failed%%=*}" 0 "out of time"
		return
	fi
	(cd kernels/cuda && CUDA_LAUNCH_BLOCKING=1 timeout -k 5 "$b" "$cs" --tool memcheck --error-exitcode 99 \
		"$test" -test.run "${first_failed#*=}" -test.v -test.timeout "$((b - 3))s") >"$logs/memcheck.log" 2>&1
	local rc=$?
	local errs
	errs=$(awk '/ERROR SUMMARY/ { print $4 } ' "$logs/memcheck.log")
	record info "memcheck ${first_failed%%=*}" $((SECONDS - t0)) "status $rc, memcheck errors: ${errs:-?}"
	failure_excerpt "$logs/memcheck.log" 8
}

# table reads `go test -bench` output and prints each benchmark's time,
# bandwidth (also as a share of the copy bandwidth) and arithmetic rate.
table() {
	awk '
	function metric(unit,   i) {
		for (i = 3; i < NF; i++) if ($(i + 1) == unit) return $i
		return ""
	}
	/^Benchmark/ && / ns\/op/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		ns = metric("ns/op"); gbs = metric("GB/s"); mbs = metric("MB/s"); gf = metric("GFLOP/s")
		if (gbs == "" && mbs != "") gbs = mbs / 1000
		n++; names[n] = name; t[n] = ns; bw[n] = gbs; fl[n] = gf
		if (name == "DeviceCopy") copy = gbs
	}
	END {
		if (n == 0) { print "(no benchmark results)"; exit }
		printf "%-66s %10s %8s %6s %9s\n", "benchmark", "us/op", "GB/s", "%copy", "GFLOP/s"
		for (i = 1; i <= n; i++) {
			pct = (copy != "" && bw[i] != "") ? sprintf("%.0f", 100 * bw[i] / copy) : "-"
			nm = names[i]; if (length(nm) > 66) nm = substr(nm, length(nm) - 65)
			printf "%-66s %10.1f %8s %6s %9s\n", nm, t[i] / 1000,
				bw[i] == "" ? "-" : sprintf("%.1f", bw[i]), pct, fl[i] == "" ? "-" : sprintf("%.0f", fl[i])
		}
		if (copy != "") printf "ceiling: device-to-device copy %.0f GB/s (bytes read + written), measured in this run\n", copy
	}'
}

benchmarks() {
	local t0 b rc name pat want g
	for g in 'DeviceCopy|^BenchmarkDeviceCopy$|30' 'Model|^BenchmarkModel$|110'; do
		IFS='|' read -r name pat want <<<"$g"
		if [[ -n $gpu_why ]]; then
			record skip "bench $name" 0 "$gpu_why"
			continue
		fi
		b=$(budget "$want")
		if ((b == 0)); then
			record skip "bench $name" 0 "out of time"
			continue
		fi
		t0=$SECONDS
		(cd kernels/cuda && timeout -k 5 "$b" "$test" -test.run '^$' -test.bench "$pat" \
			-test.benchtime "${BENCHTIME:-200ms}" -test.timeout "$((b - 3))s") >"$logs/bench-$name.log" 2>&1
		rc=$?
		local rows
		rows=$(awk '/^Benchmark.* ns\/op/ { n++ } END { print n + 0 }' "$logs/bench-$name.log")
		if ((rc == 0)); then
			record ok "bench $name" $((SECONDS - t0)) "$rows results"
		else
			record warn "bench $name" $((SECONDS - t0)) "status $rc$( ((rc == 124 || rc == 137)) && echo ", timed out after ${b}s"), $rows results"
			failure_excerpt "$logs/bench-$name.log" 6
		fi
	done
	cat "$logs"/bench-*.log 2>/dev/null | table >"$logs/table.txt"
}

# golden compares moemesh logits with the fixture: per position relative
# L2 <= 1e-5 and max |diff| <= 1e-4, as model/golden_test.go.
golden() {
	local m=$1 t0=$SECONDS g=model/testdata/$1/golden.json.gz
	if [[ ! -f $g ]]; then
		record skip "golden $m" 0 "no $g"
		return
	fi
	local b toks
	b=$(budget 25)
	if ((b == 0)); then
		record skip "golden $m" 0 "out of time"
		return
	fi
	toks=$(python3 -c 'import gzip,json,sys; print(",".join(map(str, json.load(gzip.open(sys.argv[1]))["prompts"][-1]["tokens"])))' "$g" 2>"$logs/golden-$m.err") || {
		record FAIL "golden $m" $((SECONDS - t0)) "reading $g failed"
		return
	}
	timeout -k 2 "$b" "$bin" logits --device "cuda:$dev" --model "model/testdata/$m" --tokens "$toks" >"$logs/logits-$m.json" 2>>"$logs/golden-$m.err"
	local rc=$?
	if ((rc != 0)); then
		local err
		err=$(awk 'NF { l = $0 } END { print substr(l, 1, 160) }' "$logs/golden-$m.err")
		if [[ $err == *"backend cannot run this model"* ]]; then
			record skip "golden $m" $((SECONDS - t0)) "not supported on CUDA: $err"
		else
			record FAIL "golden $m" $((SECONDS - t0)) "moemesh logits status $rc: $err"
		fi
		return
	fi
	local verdict
	verdict=$(python3 - "$g" "$logs/logits-$m.json" 2>&1 <<'EOF'
import gzip, json, math, sys
golden = json.load(gzip.open(sys.argv[1]))["prompts"][-1]["prompt_logits"]
ours = json.load(open(sys.argv[2]))["logits"]
rel = mx = 0.0
for g, o in zip(golden, ours):
    num = sum((a - b) ** 2 for a, b in zip(o, g))
    den = sum(b * b for b in g) or 1.0
    rel = max(rel, math.sqrt(num / den))
    mx = max([mx] + [abs(a - b) for a, b in zip(o, g)])
    if any(math.isnan(a) for a in o):
        rel = float("nan")
ok = len(ours) == len(golden) and all(len(o) == len(g) for o, g in zip(ours, golden)) and rel <= 1e-5 and mx <= 1e-4
print(("PASS" if ok else "FAIL") + f" {len(ours)} positions, worst relative L2 {rel:.3g} (limit 1e-5), max |diff| {mx:.3g} (limit 1e-4)")
EOF
	) || true
	if [[ $verdict == PASS* ]]; then
		record ok "golden $m" $((SECONDS - t0)) "${verdict#PASS }"
	else
		record FAIL "golden $m" $((SECONDS - t0)) "${verdict#FAIL }"
	fi
}

model_checks() {
	bin=$dir/moemesh
	dev=${MOEMESH_CUDA_DEVICE:-0}
	local why=""
	if [[ ! -x $bin ]]; then
		why="no $bin"
	elif [[ -n $gpu_why ]]; then
		why=$gpu_why
	elif ! command -v python3 >/dev/null 2>&1; then
		why="no python3 (golden comparison)"
	fi
	local help=""
	[[ -z $why ]] && help=$(timeout -k 2 10 "$bin" logits --help 2>&1)
	if [[ -z $why && $help != *--device* ]]; then
		why="moemesh logits has no --device flag ($(printf '%s' "$help" | awk 'NR == 1 { print substr($0, 1, 100) }'))"
	fi
	local m
	for m in tiny-a tiny-c tiny-ay tiny-af; do
		if [[ -n $why ]]; then
			record skip "golden $m" 0 "$why"
		else
			golden "$m"
		fi
	done
	if [[ -n $why ]]; then
		record skip "decode tokens/s (bench preset)" 0 "$why"
		return
	fi
	local t0=$SECONDS b model=/tmp/moemesh-bench-model
	if [[ ! -f $model/config.json ]]; then
		b=$(budget 60)
		if ((b == 0)); then
			record skip "decode tokens/s (bench preset)" 0 "out of time"
			return
		fi
		rm -rf "$model"
		if ! timeout -k 2 "$b" "$bin" gen-model --preset bench --out "$model" >"$logs/gen-model.log" 2>&1; then
			record warn "decode tokens/s (bench preset)" $((SECONDS - t0)) "gen-model failed or timed out (${b}s)"
			return
		fi
	fi
	b=$(budget 90)
	if ((b == 0)); then
		record skip "decode tokens/s (bench preset)" 0 "out of time"
		return
	fi
	if timeout -k 2 "$b" "$bin" bench --device "cuda:$dev" --model "$model" --batch 1,16 --tokens 16 >"$logs/model-bench.txt" 2>&1; then
		record ok "decode tokens/s (bench preset)" $((SECONDS - t0)) "see below"
	else
		record warn "decode tokens/s (bench preset)" $((SECONDS - t0)) "moemesh bench status $? (budget ${b}s)"
	fi
}

run() {
	local out=${OUT:-$dir/out}
	mkdir -p "$out" || exit 2
	logs=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
	local start=$SECONDS
	deadline=$((SECONDS + ${RUN_BUDGET:-360} - 10)) # 10 s for packing
	test=$(cd "$dir" 2>/dev/null && pwd)/cuda.test

	preflight
	ptxas_report
	say "=== tests (one process per group, CUDA_LAUNCH_BLOCKING=1)"
	run_groups
	memcheck
	say "=== benchmarks"
	benchmarks
	cat "$logs/table.txt"
	say "=== model-level checks"
	model_checks

	{
		echo "gpu-check run: $(date -u +%FT%TZ), $((SECONDS - start)) s of ${RUN_BUDGET:-360}"
		awk 'NR <= 2' "$logs/preflight.txt"
		awk -F, 'NR == 2 && /MiB/ { print "gpu:" $0 }' "$logs/preflight.txt"
		printf '%s\n' "${results[@]}"
		echo
		cat "$logs/table.txt"
		[[ -f $logs/model-bench.txt ]] && {
			echo
			awk 'NR <= 12' "$logs/model-bench.txt"
		}
		echo "verdict: $([[ $failed == 0 ]] && echo 'no correctness failure' || echo 'FAILED')"
	} >"$logs/summary.txt"
	cp "$logs/summary.txt" "$out/summary.txt"
	tar -czf "$out/logs.tgz" -C "$logs" . 2>/dev/null || say "could not pack logs.tgz"
	rm -rf "$logs"
	echo
	echo "=================== summary ($out: summary.txt, logs.tgz)"
	cat "$out/summary.txt"
	return $failed
}

case "${1:-}" in
build) build ;;
run) run ;;
*)
	echo "usage: $0 build|run" >&2
	exit 2
	;;
esac

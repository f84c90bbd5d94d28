#!/usr/bin/env bash
# Regenerates the PTX modules of the CUDA backend from kernels/cuda/csrc.
#
#   scripts/gen-ptx.sh           write kernels/cuda/ptx/kernels_sm{90,80}.ptx
#   scripts/gen-ptx.sh --check   regenerate into a temporary directory and
#                                fail if the committed PTX differs; without
#                                nvcc, falls back to --sources-check
#   scripts/gen-ptx.sh --sources-check
#                                no nvcc needed: fail if csrc/ changed since
#                                the PTX was generated (ptx/SOURCES.sha256,
#                                written with the PTX; TestPTXSources checks
#                                the same in every go test run)
#
# Each module is also assembled with ptxas for its architecture, so a PTX
# file that the driver would reject fails here. The committed PTX was made
# with nvcc 11.8 (Debian 12 nvidia-cuda-toolkit, see docs/cuda.md); another
# nvcc version writes a different header and different code, so --check is
# meaningful only with that version. NVCC=... picks another compiler.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/kernels/cuda/csrc/kernels.cu"
out="$root/kernels/cuda/ptx"
archs=(90 80)
nvcc=${NVCC:-nvcc}
want_version="release 11.8"

# sources_sum prints the sha256 of every file under csrc/, paths relative
# to kernels/cuda, sorted.
sources_sum() {
	(cd "$root/kernels/cuda" && LC_ALL=C find csrc -type f \( -name '*.cu' -o -name '*.cuh' \) -print | LC_ALL=C sort | xargs sha256sum)
}

sources_check() {
	local want got
	want=$(cat "$out/SOURCES.sha256" 2>/dev/null) || want=""
	got=$(sources_sum)
	if [[ $want == "$got" ]]; then
		echo "gen-ptx: kernels/cuda/ptx matches the sources in csrc/ (SOURCES.sha256)"
		return 0
	fi
	echo "gen-ptx: STALE PTX: csrc/ changed since kernels/cuda/ptx was generated; run scripts/gen-ptx.sh with nvcc 11.8 (docs/cuda.md)" >&2
	return 1
}

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
--sources-check)
	sources_check
	exit
	;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

if ! command -v "$nvcc" >/dev/null 2>&1; then
	if [[ $check == 1 ]]; then
		echo "gen-ptx: nvcc not found; checking the sources' hash only (install nvcc as docs/cuda.md says for the full check)"
		sources_check
		exit
	fi
	echo "gen-ptx: nvcc not found (install it as docs/cuda.md says)" >&2
	exit 1
fi
if ! "$nvcc" --version | grep -q "$want_version"; then
	echo "gen-ptx: warning: $("$nvcc" --version | tail -n 2 | head -n 1)," \
		"the committed PTX was made with $want_version" >&2
fi
ptxas=$(dirname "$(command -v "$nvcc")")/ptxas
[[ -x $ptxas ]] || ptxas=ptxas

dest=$out
if [[ $check == 1 ]]; then
	dest=$(mktemp -d)
	trap 'rm -rf "$dest"' EXIT
fi
mkdir -p "$dest"

for a in "${archs[@]}"; do
	f="$dest/kernels_sm$a.ptx"
	"$nvcc" -ptx -arch=compute_$a -O3 -std=c++14 -o "$f" "$src"
	"$ptxas" -arch=sm_$a -o /dev/null "$f"
	echo "gen-ptx: $(basename "$f") ($(wc -c <"$f") bytes, assembled for sm_$a)"
done

if [[ $check == 1 ]]; then
	status=0
	for a in "${archs[@]}"; do
		n="kernels_sm$a.ptx"
		if ! cmp -s "$dest/$n" "$out/$n"; then
			echo "gen-ptx: kernels/cuda/ptx/$n is out of date; run scripts/gen-ptx.sh" >&2
			status=1
		fi
	done
	[[ $status == 0 ]] && echo "gen-ptx: committed PTX is up to date"
	sources_check || status=1
	exit $status
fi
sources_sum >"$out/SOURCES.sha256"
echo "gen-ptx: wrote kernels/cuda/ptx/SOURCES.sha256"

#!/usr/bin/env bash
# Fetches the two files a `-tags cuda` build needs, without installing the
# CUDA toolkit: cuda.h and the link-time stub libcuda.so, both from Debian
# 12's nvidia-cuda-dev package (CUDA 11.8, non-free). They go to a cache
# directory outside the repository (cuda.h may not be redistributed, so it
# is never committed), and the script prints the cgo settings to use:
#
#   eval "$(scripts/install-cuda-headers.sh)"
#   go vet -tags cuda ./kernels/cuda/
#   go test -tags cuda -c -o /dev/null ./kernels/cuda/
#
#   CUDA_HEADERS_DIR   cache directory (default ${XDG_CACHE_HOME:-~/.cache}/moemesh-cuda)
#
# Needs apt-get and dpkg-deb. Adds the non-free component to apt's sources
# when it is missing (as root). The binary built this way needs only the
# driver's libcuda.so.1 at run time.
set -euo pipefail

dir=${CUDA_HEADERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moemesh-cuda}
hdr="$dir/usr/include/cuda.h"
stub="$dir/usr/lib/x86_64-linux-gnu/stubs/libcuda.so"

if [[ ! -f $hdr || ! -f $stub ]]; then
	mkdir -p "$dir"
	# `apt-cache show` succeeds for a package apt only heard of (e.g. as a
	# dependency) without any candidate to download; madison lists versions.
	if [[ -z $(apt-cache madison nvidia-cuda-dev 2>/dev/null) ]]; then
		list=/etc/apt/sources.list.d/moemesh-nonfree.list
		echo "install-cuda-headers: adding Debian non-free to $list" >&2
		# The keyring must be repeated, or apt reports conflicting Signed-By values.
		echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm contrib non-free non-free-firmware' >"$list"
		apt-get update -qq >&2
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	chmod 755 "$tmp" # lets apt fetch as its own user
	echo "install-cuda-headers: downloading nvidia-cuda-dev (about 770 MB, kept only 1 MB)" >&2
	# Retried: a mirror's hiccup should not fail the whole test run.
	for try in 1 2 3; do
		(cd "$tmp" && apt-get download -qq nvidia-cuda-dev >&2) && break
		[[ $try == 3 ]] && exit 1
		echo "install-cuda-headers: download failed, retrying in $((try * 10)) s" >&2
		sleep $((try * 10))
		apt-get update -qq >&2 || true
	done
	deb=$(ls "$tmp"/nvidia-cuda-dev_*.deb)
	dpkg-deb --fsys-tarfile "$deb" |
		tar -x -C "$dir" ./usr/include/cuda.h ./usr/lib/x86_64-linux-gnu/stubs/libcuda.so
	rm -f "$deb"
fi

# Keep -O2 -g: setting CGO_CFLAGS replaces Go's defaults.
echo "export CGO_CFLAGS='-O2 -g -I$dir/usr/include'"
echo "export CGO_LDFLAGS='-L$dir/usr/lib/x86_64-linux-gnu/stubs'"

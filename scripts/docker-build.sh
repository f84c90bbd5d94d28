#!/usr/bin/env bash
# Builds the container images without pulling anything: the binaries are
# built here with the host's Go toolchain (static, CGO_ENABLED=0), copied
# into a small temporary build context with a minimal root file system, and
# `docker build` makes images FROM scratch of them (Dockerfile,
# docker/etcd/Dockerfile; docs/deploy.md).
#
#   scripts/docker-build.sh [--image REPO] [--etcd-image REPO] [--no-etcd]
#                           [--bin-dir DIR]
#
#   --image REPO       moemesh image repository (default moemesh): tagged
#                      REPO:<version> and REPO:dev, <version> from
#                      `git describe --always --dirty --tags`
#   --etcd-image REPO  etcd image repository (default moemesh-etcd): tagged
#                      REPO:<etcd version>, the version pinned in
#                      tools/etcd/go.mod
#   --no-etcd          build the moemesh image only
#   --bin-dir DIR      also leave the static binaries (moemesh, moemeshctl,
#                      etcd) in DIR; they run on the host too
#
# stdout has one line per tag made, "moemesh REF" or "etcd REF" (nothing
# else), so callers can use and remove exactly what was built; progress goes
# to stderr. The static etcd binary is cached like scripts/build-etcd.sh's,
# in ${MOEMESH_TOOLS:-$HOME/.cache/moemesh/tools}/etcd-<version>-static/.
# MOEMESH_CA_BUNDLE names the CA certificates copied into the images
# (default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
cd "$(dirname "$0")/.."

image=moemesh
etcd_image=moemesh-etcd
with_etcd=1
bin_dir=
die() { echo "docker-build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --image) [ $# -ge 2 ] || die "--image needs a value"; image=$2; shift 2 ;;
    --etcd-image) [ $# -ge 2 ] || die "--etcd-image needs a value"; etcd_image=$2; shift 2 ;;
    --no-etcd) with_etcd=0; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a value"; bin_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
[ -d cmd/moemeshctl ] || die "cmd/moemeshctl is missing: the image carries moemesh and moemeshctl"
ca=${MOEMESH_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$ca" ] || die "no CA bundle at $ca (install ca-certificates or set MOEMESH_CA_BUNDLE)"

version=$(git describe --always --dirty --tags 2>/dev/null || echo dev)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=https://github.com/moemesh/moemesh
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 } $1 == "go.etcd.io/etcd/server/v3" { print $2 }' tools/etcd/go.mod | head -n1)
[ -n "$etcd_version" ] || die "tools/etcd/go.mod does not require go.etcd.io/etcd/server/v3"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# rootfs DIR writes the minimal root file system both images share.
rootfs() {
  mkdir -p "$1/etc/ssl/certs" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$1/etc/group"
  cp "$ca" "$1/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$1/etc/passwd" "$1/etc/group" "$1/etc/ssl/certs/ca-certificates.crt"
}

build() { # build OUT PACKAGE: a static, stripped binary
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$1" "$2" >&2
}

echo "docker-build.sh: building moemesh $version (static)" >&2
m=$ctx/moemesh
mkdir -p "$m/bin" "$m/home"
rootfs "$m/rootfs"
build "$m/bin/moemesh" ./cmd/moemesh
build "$m/bin/moemeshctl" ./cmd/moemeshctl
cp Dockerfile "$m/Dockerfile"
docker build -q --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
  -t "$image:$version" -t "$image:dev" "$m" >&2
# A binary that is not static does not start on an empty base: check.
docker run --rm --network none "$image:$version" --help >/dev/null ||
  die "$image:$version: moemesh does not run (is the binary static?)"
docker run --rm --network none --entrypoint moemeshctl "$image:$version" --help >/dev/null ||
  die "$image:$version: moemeshctl does not run (is the binary static?)"
echo "moemesh $image:$version"
[ "$version" = dev ] || echo "moemesh $image:dev"

if [ "$with_etcd" = 1 ]; then
  cache="${MOEMESH_TOOLS:-$HOME/.cache/moemesh/tools}/etcd-$etcd_version-static"
  if [ ! -x "$cache/etcd" ]; then
    echo "docker-build.sh: building etcd $etcd_version (static; cached in $cache)" >&2
    mkdir -p "$cache"
    # A temporary name first, so an interrupted build leaves nothing that
    # looks finished.
    (cd tools/etcd && build "$cache/etcd.tmp.$$" .)
    mv "$cache/etcd.tmp.$$" "$cache/etcd"
  fi
  e=$ctx/etcd
  mkdir -p "$e/bin" "$e/data"
  rootfs "$e/rootfs"
  cp "$cache/etcd" "$e/bin/etcd"
  cp docker/etcd/Dockerfile "$e/Dockerfile"
  docker build -q --build-arg ETCD_VERSION="$etcd_version" --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
    -t "$etcd_image:$etcd_version" "$e" >&2
  docker run --rm --network none "$etcd_image:$etcd_version" --version >/dev/null ||
    die "$etcd_image:$etcd_version does not run (is the binary static?)"
  echo "etcd $etcd_image:$etcd_version"
fi

if [ -n "$bin_dir" ]; then
  mkdir -p "$bin_dir"
  cp "$m"/bin/* "$bin_dir/"
  [ "$with_etcd" = 0 ] || cp "$e/bin/etcd" "$bin_dir/"
fi

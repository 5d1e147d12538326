#!/usr/bin/env bash
# Builds the container images hmq:TAG and hmq-operator:TAG from static binaries built on this
# machine, so no base image is pulled (both images are FROM scratch):
#
#   1. cargo build --release --locked --target x86_64-unknown-linux-musl (hmq, hmq-operator)
#   2. one build context per image: the stripped binary and the host's CA bundle
#   3. buildah bud with images/hmq/Dockerfile and images/hmq-operator/Dockerfile, then the sizes
#
# Usage: scripts/build-images.sh [--tag TAG] [--context-only DIR]
#   --tag TAG           image tag (default: dev)
#   --context-only DIR  stop after step 2: write DIR/hmq and DIR/hmq-operator, e.g. for
#                       `docker build -f images/hmq/Dockerfile DIR/hmq`
# Environment: STORAGE_DRIVER (buildah's, default vfs: works anywhere, including in containers),
# CARGO_TARGET_DIR.
#
# Needs: the musl target (rustup target add x86_64-unknown-linux-musl), musl-gcc (Debian:
# musl-tools; ring and mimalloc compile C code), strip (binutils), buildah, and a CA bundle at
# /etc/ssl/certs/ca-certificates.crt (Debian: ca-certificates). Building images needs root, or a
# rootless buildah set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=dev
context_only=""
while (($#)); do
    case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --context-only) context_only=${2:?--context-only needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument $1" >&2; exit 2 ;;
    esac
done

fail() {
    echo "build-images: $*" >&2
    exit 1
}

target=x86_64-unknown-linux-musl
ca_bundle=/etc/ssl/certs/ca-certificates.crt
storage_driver=${STORAGE_DRIVER:-vfs}
[[ -r $ca_bundle ]] || fail "no CA bundle at $ca_bundle (Debian: apt-get install ca-certificates)"
command -v strip >/dev/null || fail "strip not found (Debian: apt-get install binutils)"
command -v musl-gcc >/dev/null || fail "musl-gcc not found (Debian: apt-get install musl-tools)"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    fail "the $target target is missing: rustup target add $target"
fi
[[ -n $context_only ]] || command -v buildah >/dev/null ||
    fail "buildah not found (Debian: apt-get install buildah)"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n $version ]] || fail "no version in Cargo.toml's [workspace.package]"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

echo "== cargo build --release --target $target (hmq $version, $revision)"
cargo build --release --locked --target "$target" --bin hmq --bin hmq-operator
bin_dir=${CARGO_TARGET_DIR:-$PWD/target}/$target/release

if [[ -n $context_only ]]; then
    contexts=$context_only
    mkdir -p "$contexts"
else
    contexts=$(mktemp -d "${TMPDIR:-/tmp}/hmq-images.XXXXXX")
    trap 'rm -rf "$contexts"' EXIT
fi
for image in hmq hmq-operator; do
    mkdir -p "$contexts/$image"
    cp "$bin_dir/$image" "$contexts/$image/$image"
    strip "$contexts/$image/$image"
    cp "$ca_bundle" "$contexts/$image/ca-certificates.crt"
    # The binaries run on an empty base: anything dynamically linked would not start there.
    if command -v file >/dev/null && file "$contexts/$image/$image" | grep -q 'dynamically linked'; then
        fail "$image is dynamically linked: $(file -b "$contexts/$image/$image")"
    fi
    echo "$image: $(stat -c %s "$contexts/$image/$image") bytes (stripped, static)"
done
if [[ -n $context_only ]]; then
    echo "build contexts in $contexts/hmq and $contexts/hmq-operator"
    exit 0
fi

for image in hmq hmq-operator; do
    echo "== buildah bud -t $image:$tag"
    timeout 300 buildah --storage-driver "$storage_driver" bud --isolation chroot --quiet \
        --build-arg VERSION="$version" --build-arg REVISION="$revision" \
        -t "$image:$tag" -f "images/$image/Dockerfile" "$contexts/$image" ||
        fail "buildah bud $image:$tag failed"
done
echo "== images"
buildah --storage-driver "$storage_driver" images --format '{{.Name}}:{{.Tag}}  {{.Size}}' |
    grep -E "/(hmq|hmq-operator):$tag " || true

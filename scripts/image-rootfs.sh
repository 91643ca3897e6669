#!/usr/bin/env bash
# Stages a FROM-scratch image context: the release binary plus exactly the shared
# libraries it links (ldd) and the dynamic loader, at their own paths.
#   scripts/image-rootfs.sh [BINARY] [OUT_DIR]   (defaults: target/release/bpftune, target/image)
# Then: podman build -f Containerfile -t bpftune OUT_DIR   (make image does both)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/bpftune}
out=${2:-target/image}
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/rootfs/usr/sbin" "$out/rootfs/var/lib/bpftune" "$out/rootfs/var/run" \
  "$out/rootfs/tmp" "$out/rootfs/run/netns"
cp "$bin" "$out/rootfs/usr/sbin/bpftune"
# ldd lines: "libelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x...)" and the loader
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
ldd "$bin" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }' | sort -u | while read -r lib; do
  # Copy the resolved file to the path the binary (or loader) asks for.
  mkdir -p "$out/rootfs$(dirname "$lib")"
  cp -L "$lib" "$out/rootfs$lib"
  echo "staged $lib"
done
cp Containerfile "$out/Containerfile"

#!/usr/bin/env bash
# Installs what bpftune needs to build and test on Debian/Ubuntu: clang (BPF C),
# libelf/zlib (vendored libbpf), iperf3/nftables/iproute2/python3 (tests, benchmarks),
# busybox-static/kmod (the kernel matrix's initramfs and module handling), bpftool (the
# benchmarks name the BPF programs they profile), systemd (systemd-analyze, for the
# packaged unit's verify/security test).
# Idempotent: apt runs only when something is missing.
set -euo pipefail
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config make iperf3 nftables iproute2 python3 procps bpftool
  busybox-static kmod
  systemd
  # Shipping (tests/package.rs, tests/container.rs, scripts/validate-deploy.sh): lintian
  # and man-db check the .deb, podman (with runc: crun refuses cgroup hybrid hosts)
  # builds and runs the image, python3-venv holds kubernetes-validate.
  lintian man-db podman runc python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.82) first" >&2
  exit 1
fi
# Debian package builder (make deb, tests/package.rs).
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked cargo-deb
fi

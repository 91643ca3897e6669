#!/usr/bin/env bash
# kernel-matrix.sh: boot Debian kernels under qemu (software emulation, no KVM) with the
# host's file system shared read-only, run one command as root inside each guest and
# report its exit status per kernel. CI uses it to prove that bpftune's BPF hooks attach
# on more than one kernel (scripts/kernel-matrix-suite.sh is what it runs inside).
#
# Usage
#   scripts/kernel-matrix.sh [OPTIONS] -- CMD [ARGS...]   run CMD in each kernel
#   scripts/kernel-matrix.sh [--kernel LIST] --fetch      only download and prepare
#   scripts/kernel-matrix.sh --list                       known kernels and their sources
#
# Options
#   -k, --kernel LIST  comma-separated labels: 6.1, 6.12, 5.10 or all (= 6.1,6.12,5.10);
#                      repeatable; default all
#   -t, --timeout SEC  wall-clock limit per guest, boot included (default 1200)
#   -o, --out DIR      results go to DIR/<label>/ (default target/kernel-matrix/results)
#   -e, --env N=V      extra environment variable for CMD (repeatable)
#   -q, --quiet        do not stream the guest's console (it is saved either way)
#       --fetch        download and prepare (qemu, kernels, initramfs), boot nothing
#       --list         print the known kernels (label, Debian suite, metapackage)
#
# The kernels: the newest image behind a Debian metapackage, resolved at fetch time:
#   6.1   bookworm  linux-image-amd64        (e.g. linux-image-6.1.0-56-amd64)
#   6.12  bookworm  linux-image-6.12-amd64   (bookworm-security, e.g. 6.12.117+deb12)
#   5.10  bullseye  linux-image-amd64        (e.g. linux-image-5.10.0-46-amd64)
# Packages come from a private apt configuration under the cache (its own sources.list
# and lists, the same Debian archives the host's apt uses, found with `apt-get
# indextargets`), so the host's apt sources and state are never changed; that is also
# how bullseye's 5.10 is reachable from a bookworm host. qemu-system-x86 (bookworm's
# 7.2) and its missing libraries are downloaded and unpacked, never installed.
#
# Inside each guest CMD runs as root with cwd = the current directory, a plain PATH
# (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), HOME=/root, LANG=C.UTF-8
# and KM_KERNEL (label), KM_RELEASE (uname -r), KM_OUT (a writable directory that is
# DIR/<label>/ on the host). The guest sees the host's / read-only over virtio-9p, with
# throw-away tmpfs-backed overlays on /etc /var /tmp /root /usr/lib /home and a tmpfs on
# /run; proc, sysfs, devtmpfs, cgroup2, bpffs, tracefs and debugfs are mounted; the guest
# kernel's own modules appear at /lib/modules/$(uname -r), so module autoloading works
# (veth, tun, tcp_bbr, nf_tables). Networking: loopback only (no NIC), netns/veth inside.
#
# Guests: 2 vCPUs, 2 GiB, `-accel tcg,thread=multi -cpu max` (KVM here cannot boot Debian
# kernels); one at a time on the machine (lock /run/lock/bpftune-kernel-matrix.lock, so
# concurrent users of this script queue). On exit or interrupt, a running qemu is stopped
# and temporary files are removed.
#
# Results per kernel in DIR/<label>/: console.log (serial console: kernel and CMD),
# output.log (CMD's stdout and stderr), exit-status, and whatever CMD wrote into $KM_OUT.
# One summary line per kernel (label, release, status, exit code, seconds: guest uptime
# when CMD started, CMD, wall total, qemu's CPU time) is printed at the end and saved in
# DIR/summary.txt. Exit status: 0 only if CMD exited 0 on every kernel; 1 otherwise (a
# failed download, boot or timeout counts too).
#
# Environment
#   BPFTUNE_KM_CACHE   cache directory (default <repo>/target/kernel-matrix/cache):
#                      .debs, private apt lists, unpacked qemu and kernels, initramfs
#   BPFTUNE_KM_APPEND  extra kernel command line (e.g. loglevel=7 to see the boot)
#   BPFTUNE_KM_CPUS    guest vCPUs (default 2; the reliability soak uses 1)
#   BPFTUNE_KM_MEM     guest memory (qemu -m, default 2G; the vm reclaim bench uses 1G)
#   BPFTUNE_KM_TCG_THREAD  multi (default: one host thread per vCPU) or single (one
#                      thread for all: slower, but kernel text patched while the other
#                      vCPU runs it is seen at once; with multi, a guest under the vm
#                      reclaim load oopsed on a stale int3 twice when a daemon attached)
#   BPFTUNE_KM_9P_CACHE  9p cache mode of the guest's root (default none; loose measured
#                      no faster here)
#   BPFTUNE_KM_MIRROR, BPFTUNE_KM_SECURITY_MIRROR
#                      Debian archive URIs, if the host's apt sources have none
#
# Host requirements (scripts/install-deps.sh): apt, dpkg-deb, busybox-static (the
# initramfs), kmod (depmod and modprobe; the guest uses the host's modprobe), xz/zstd.
# Measured facts behind the choices here: /work/shared/docs/environment.md section 5.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
CACHE=${BPFTUNE_KM_CACHE:-$REPO/target/kernel-matrix/cache}
ARCH=amd64

# label  suite  metapackage whose Depends names the newest image of that series
KNOWN_KERNELS=(
  "6.1 bookworm linux-image-amd64"
  "6.12 bookworm linux-image-6.12-amd64"
  "5.10 bullseye linux-image-amd64"
)
DEFAULT_KERNELS=6.1,6.12,5.10

# qemu: the emulator, its data (linuxboot_dma.bin for -kernel), SeaBIOS, and
# qemu-system-common for the TCG accelerator module (accel-tcg-x86_64.so). Only the
# emulator's library dependencies are followed: qemu-system-common's other modules
# (audio, display, USB) are never loaded, and ipxe-qemu (NIC boot ROMs) is not needed
# without a NIC.
QEMU_PKGS=(qemu-system-x86 qemu-system-data seabios qemu-system-common)
QEMU_NO_DEPS=(qemu-system-common)
QEMU_SKIP=(ipxe-qemu qemu-system-common)

# Modules the initramfs loads before it can mount the host's root (dependencies are
# added by modprobe --show-depends).
INITRAMFS_MODULES=(virtio_pci 9pnet_virtio 9p overlay)

# Guest size and 9p options (environment.md section 5).
GUEST_CPUS=${BPFTUNE_KM_CPUS:-2}
GUEST_MEM=${BPFTUNE_KM_MEM:-2G}
TCG_THREAD=${BPFTUNE_KM_TCG_THREAD:-multi}
P9_OPTS=trans=virtio,version=9p2000.L,msize=512000

log() { printf 'kernel-matrix: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# -------------------------------------------------------------------------------------
# Temp files and child processes: everything under one directory, removed on exit; a
# running qemu is stopped (its `timeout` wrapper forwards the signal).
# -------------------------------------------------------------------------------------
TMP=""
QEMU_WRAPPER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$QEMU_WRAPPER_PID" ] && kill -0 "$QEMU_WRAPPER_PID" 2>/dev/null; then
    log "stopping qemu (pid $QEMU_WRAPPER_PID)"
    kill -TERM "$QEMU_WRAPPER_PID" 2>/dev/null || true
    wait "$QEMU_WRAPPER_PID" 2>/dev/null || true
  fi
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    rm -rf "$TMP"
  fi
  exit "$rc"
}
make_tmp() {
  if [ -z "$TMP" ]; then
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/kernel-matrix.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
  fi
}

# -------------------------------------------------------------------------------------
# Private apt configuration per Debian suite (never the host's sources or lists)
# -------------------------------------------------------------------------------------

# The host's Debian archive URIs (main archive and security archive), from its apt
# configuration, unless given in the environment.
debian_mirrors() {
  local main=${BPFTUNE_KM_MIRROR:-} sec=${BPFTUNE_KM_SECURITY_MIRROR:-} uri rel
  # shellcheck disable=SC2016 # apt's own $(FIELD) syntax, not a shell expansion
  local fmt='$(REPO_URI) $(RELEASE)'
  if [ -z "$main" ] || [ -z "$sec" ]; then
    while read -r uri rel; do
      case "$rel" in
        *-security) [ -n "$sec" ] || sec=$uri ;;
        bookworm | bullseye | trixie | bookworm-updates | bullseye-updates | trixie-updates)
          [ -n "$main" ] || main=$uri ;;
      esac
    done < <(apt-get indextargets --no-release-info --format "$fmt" 2>/dev/null | sort -u)
  fi
  [ -n "$main" ] || die "no Debian archive in the host's apt sources (apt-get indextargets); set BPFTUNE_KM_MIRROR"
  [ -n "$sec" ] || die "no Debian security archive in the host's apt sources; set BPFTUNE_KM_SECURITY_MIRROR"
  printf '%s %s\n' "${main%/}" "${sec%/}"
}

# apt_opts SUITE: sets APT_OPTS to options that make apt-get/apt-cache use the private
# configuration of SUITE (created on first use).
APT_OPTS=()
apt_opts() {
  local suite=$1 dir=$CACHE/apt/$1 keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [ ! -f "$dir/sources.list" ]; then
    [ -f "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"
    local main sec
    read -r main sec < <(debian_mirrors)
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/sources.list.d" "$dir/preferences.d"
    cat >"$dir/sources.list.tmp" <<EOF
deb [signed-by=$keyring] $main $suite main
deb [signed-by=$keyring] $main $suite-updates main
deb [signed-by=$keyring] $sec $suite-security main
EOF
    mv "$dir/sources.list.tmp" "$dir/sources.list"
  fi
  APT_OPTS=(
    -o "Dir::Etc::sourcelist=$dir/sources.list"
    -o "Dir::Etc::sourceparts=$dir/sources.list.d"
    -o "Dir::Etc::preferencesparts=$dir/preferences.d"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache"
    -o "APT::Architecture=$ARCH"
    -o "APT::Sandbox::User=root"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  )
}

# apt_update SUITE [force]: refreshes the private lists when missing, older than a day,
# or forced.
apt_update() {
  local suite=$1 force=${2:-} stamp=$CACHE/apt/$1/updated
  apt_opts "$suite"
  if [ -z "$force" ] && [ -f "$stamp" ] && [ -n "$(find "$stamp" -mmin -1440)" ]; then
    return 0
  fi
  log "apt-get update ($suite, private lists in $CACHE/apt/$suite)"
  apt-get "${APT_OPTS[@]}" -qq update >"$CACHE/apt/$suite/update.log" 2>&1 ||
    die "apt-get update for $suite failed: $(tail -n 5 "$CACHE/apt/$suite/update.log")"
  touch "$stamp"
}

# resolve_image SUITE METAPACKAGE: prints the linux-image package the metapackage's
# candidate depends on (the newest image of that series).
resolve_image() {
  local suite=$1 meta=$2 pkg
  apt_opts "$suite"
  pkg=$(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests "$meta" 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  [ -n "$pkg" ] || die "apt-cache depends $meta ($suite) names no linux-image package"
  printf '%s\n' "$pkg"
}

# debs_fetch SUITE PKG...: downloads the candidate versions of the packages into
# $CACHE/debs (one apt-get call; files already there are reused) and prints their paths,
# one per line. Refreshes the lists once if the download fails (a stale list names a
# file the archive no longer has).
debs_fetch() {
  local suite=$1
  shift
  apt_opts "$suite"
  mkdir -p "$CACHE/debs"
  local try uris
  local -a files missing
  for try in 1 2; do
    # --print-uris: 'URI' FILE SIZE HASH per package, nothing downloaded.
    uris=$(apt-get "${APT_OPTS[@]}" -qq --print-uris download "$@" 2>&1) ||
      die "apt-get download --print-uris $* ($suite) failed: $uris"
    mapfile -t files < <(awk '{ print $2 }' <<<"$uris")
    [ ${#files[@]} -eq $# ] || die "apt-get --print-uris named ${#files[@]} files for $# packages ($*): $uris"
    missing=()
    local f
    for f in "${files[@]}"; do
      [ -f "$CACHE/debs/$f" ] || missing+=("${f%%_*}") # PACKAGE_VERSION_ARCH.deb
    done
    [ ${#missing[@]} -gt 0 ] || break
    log "apt-get download ${missing[*]}"
    if (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" -qq download "${missing[@]}") >"$CACHE/debs/download.log" 2>&1; then
      continue
    fi
    [ "$try" = 1 ] || die "apt-get download ${missing[*]} ($suite) failed: $(tail -n 5 "$CACHE/debs/download.log")"
    apt_update "$suite" force
  done
  for f in "${files[@]}"; do
    [ -f "$CACHE/debs/$f" ] || die "apt-get download ($suite) left no $CACHE/debs/$f"
    printf '%s\n' "$CACHE/debs/$f"
  done
}

# deb_extract DEB DIR: unpacks DEB into DIR (dpkg-deb -x, no maintainer scripts).
deb_extract() {
  dpkg-deb -x "$1" "$2" || die "dpkg-deb -x $1 failed"
}

in_list() {
  local x=$1
  shift
  local y
  for y in "$@"; do [ "$x" = "$y" ] && return 0; done
  return 1
}

# -------------------------------------------------------------------------------------
# qemu: bookworm's qemu-system-x86 and the libraries it needs that the host lacks,
# unpacked into $CACHE/qemu; run with LD_LIBRARY_PATH, QEMU_MODULE_DIR and -L.
# -------------------------------------------------------------------------------------
QEMU_ROOT=$CACHE/qemu
QEMU_BIN=$QEMU_ROOT/usr/bin/qemu-system-x86_64
QEMU_LIBS=$QEMU_ROOT/usr/lib/x86_64-linux-gnu:$QEMU_ROOT/lib/x86_64-linux-gnu

qemu_env() {
  env LD_LIBRARY_PATH="$QEMU_LIBS" QEMU_MODULE_DIR="$QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu" "$@"
}

prepare_qemu() {
  [ -f "$QEMU_ROOT/.ready" ] && return 0
  local suite=bookworm start=$SECONDS
  apt_update "$suite"
  apt_opts "$suite"
  # Breadth-first over Depends/PreDepends: the roots, then every dependency the host
  # has not installed (the first of alternatives; virtual packages are skipped).
  local -a installed level all=() next debs
  mapfile -t installed < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 ~ /^ii/ { print $2 }')
  level=("${QEMU_PKGS[@]}")
  local dep
  while [ ${#level[@]} -gt 0 ]; do
    all+=("${level[@]}")
    next=()
    while read -r dep; do
      in_list "$dep" "${QEMU_SKIP[@]}" "${installed[@]}" "${all[@]}" "${next[@]}" || next+=("$dep")
    done < <(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${level[@]}" |
      awk -v nodeps=" ${QEMU_NO_DEPS[*]} " '
        /^[^ ]/ { pkg = $1; alt = 0; next }
        index(nodeps, " " pkg " ") { next }
        $1 ~ /^\|?(Pre)?Depends:$/ {
          if (!alt && $2 !~ /^</) print $2
          alt = ($1 ~ /^\|/)   # the lines after "|Depends:" are its alternatives
        }')
    level=("${next[@]}")
  done
  mapfile -t debs < <(debs_fetch "$suite" "${all[@]}")
  [ ${#debs[@]} -eq ${#all[@]} ] || die "downloading the qemu packages failed"
  rm -rf "$QEMU_ROOT"
  mkdir -p "$QEMU_ROOT"
  local deb
  for deb in "${debs[@]}"; do deb_extract "$deb" "$QEMU_ROOT"; done
  [ -x "$QEMU_BIN" ] || die "qemu-system-x86 unpacked, but $QEMU_BIN is missing"
  local missing
  missing=$(LD_LIBRARY_PATH=$QEMU_LIBS ldd "$QEMU_BIN" | awk '/not found/ { print $1 }' | tr '\n' ' ')
  [ -z "$missing" ] || die "qemu needs libraries that are neither on the host nor downloaded: $missing"
  qemu_env "$QEMU_BIN" --version >/dev/null || die "$QEMU_BIN --version failed"
  printf '%s\n' "${all[@]}" >"$QEMU_ROOT/.ready"
  log "qemu ready ($(qemu_env "$QEMU_BIN" --version | head -n 1); ${#debs[@]} packages) in $((SECONDS - start)) s"
}

# -------------------------------------------------------------------------------------
# Kernels: unpacked image + modules (depmod'ed), and a busybox initramfs per release.
# -------------------------------------------------------------------------------------

# kernel_info LABEL: sets K_SUITE and K_META for a known label.
kernel_info() {
  local entry l s m
  for entry in "${KNOWN_KERNELS[@]}"; do
    read -r l s m <<<"$entry"
    if [ "$l" = "$1" ]; then
      K_SUITE=$s
      K_META=$m
      return 0
    fi
  done
  die "unknown kernel '$1' (known: $(printf '%s ' "${KNOWN_KERNELS[@]%% *}"))"
}

# prepare_kernel LABEL: downloads and unpacks the newest image of the series, runs
# depmod and builds the initramfs; writes $CACHE/kernels/LABEL.env (K_RELEASE,
# K_ROOT, K_VMLINUZ, K_INITRD). Everything is reused when present.
prepare_kernel() {
  local label=$1 start=$SECONDS pkg rel kroot deb
  kernel_info "$label"
  apt_update "$K_SUITE"
  pkg=$(resolve_image "$K_SUITE" "$K_META")
  rel=${pkg#linux-image-}
  kroot=$CACHE/kernels/$rel
  if [ ! -f "$kroot/.ready" ]; then
    deb=$(debs_fetch "$K_SUITE" "$pkg")
    log "unpacking $(basename "$deb")"
    rm -rf "$kroot"
    mkdir -p "$kroot"
    deb_extract "$deb" "$kroot"
    [ -f "$kroot/boot/vmlinuz-$rel" ] || die "$pkg has no boot/vmlinuz-$rel"
    [ -d "$kroot/lib/modules/$rel" ] || die "$pkg has no lib/modules/$rel"
    depmod -b "$kroot" "$rel" || die "depmod -b $kroot $rel failed"
    touch "$kroot/.ready"
  fi
  local initrd=$CACHE/initramfs/$rel.cpio.gz
  if [ ! -f "$initrd" ] || [ "$initrd" -ot "$SELF" ]; then
    build_initramfs "$kroot" "$rel" "$initrd"
  fi
  mkdir -p "$CACHE/kernels"
  cat >"$CACHE/kernels/$label.env" <<EOF
K_RELEASE=$rel
K_ROOT=$kroot
K_VMLINUZ=$kroot/boot/vmlinuz-$rel
K_INITRD=$initrd
EOF
  log "kernel $label: $rel ready in $((SECONDS - start)) s"
}

# build_initramfs KROOT RELEASE OUT: static busybox, the modules needed to mount the
# host's root (decompressed: busybox insmod takes plain .ko), and /init (stage 1).
build_initramfs() {
  local kroot=$1 rel=$2 out=$3 bb stage m path
  bb=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
  if ldd "$bb" >/dev/null 2>&1; then
    die "$bb is dynamically linked; the initramfs needs busybox-static"
  fi
  make_tmp
  stage=$TMP/initramfs-$rel
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
  cp "$bb" "$stage/bin/busybox"
  : >"$stage/modules/order"
  for m in "${INITRAMFS_MODULES[@]}"; do
    local deps
    deps=$(modprobe -d "$kroot" -S "$rel" --show-depends "$m" 2>&1) ||
      die "modprobe -d $kroot -S $rel --show-depends $m failed: $deps"
    while read -r path; do
      local name
      name=$(basename "$path")
      name=${name%.xz}
      name=${name%.zst}
      name=${name%.gz}
      grep -qxF "$name" "$stage/modules/order" && continue
      case "$path" in
        *.ko.xz) xz -dc "$path" >"$stage/modules/$name" || die "xz -d $path failed" ;;
        *.ko.zst) zstd -qdc "$path" >"$stage/modules/$name" || die "zstd -d $path failed (apt-get install zstd)" ;;
        *.ko.gz) gzip -dc "$path" >"$stage/modules/$name" || die "gzip -d $path failed" ;;
        *.ko) cp "$path" "$stage/modules/$name" || die "cp $path failed" ;;
        *) die "unexpected module file $path" ;;
      esac
      echo "$name" >>"$stage/modules/order"
    done < <(awk '$1 == "insmod" { print $2 }' <<<"$deps")
  done
  write_stage1 >"$stage/init"
  chmod 755 "$stage/init"
  mkdir -p "$(dirname "$out")"
  (cd "$stage" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) >"$out.tmp" ||
    die "building the initramfs for $rel failed"
  mv "$out.tmp" "$out"
  log "initramfs for $rel: $(tr '\n' ' ' <"$stage/modules/order")"
}

# Stage 1 (/init in the initramfs, busybox sh): load the 9p/overlay modules, mount the
# host's / read-only, the output share, tmpfs and overlays, then switch_root into the
# host's file system and run stage 2 (this script, --guest-stage2). switch_root, not
# chroot: with chroot the kernel's module autoloading cannot find modprobe.
write_stage1() {
  sed "s/@P9_OPTS@/$P9_OPTS/" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
  echo "kernel-matrix: guest stage 1: $*"
  echo 1 >/proc/sys/kernel/sysrq
  echo o >/proc/sysrq-trigger
  sleep 10
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  insmod "/modules/$m" || fail "insmod $m failed"
done
stage2=$(sed -n 's/.*km\.stage2=\([^ ]*\).*/\1/p' /proc/cmdline)
P9=@P9_OPTS@
rootcache=$(sed -n 's/.*km\.rootcache=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o "ro,$P9${rootcache:+,cache=$rootcache}" hostroot /newroot || fail "mounting the host's / (9p tag hostroot) failed"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "tmpfs on /run failed"
mkdir -p /newroot/run/km-out
mount -t 9p -o "$P9" kmout /newroot/run/km-out || fail "mounting the output share (9p tag kmout) failed"
for d in etc var tmp root usr/lib home; do
  [ -d "/newroot/$d" ] || continue
  o=/newroot/run/km-overlay/$d
  mkdir -p "$o/upper" "$o/work"
  chmod "$(stat -c %a "/newroot/$d")" "$o/upper"
  mount -t overlay overlay -o "lowerdir=/newroot/$d,upperdir=$o/upper,workdir=$o/work" "/newroot/$d" ||
    fail "overlay on /$d failed"
done
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/bash "$stage2" --guest-stage2
EOF
}

# -------------------------------------------------------------------------------------
# Stage 2: PID 1 in the guest, running from the host's (read-only) file system.
# -------------------------------------------------------------------------------------
guest_poweroff() {
  sync
  echo 1 >/proc/sys/kernel/sysrq
  echo o >/proc/sysrq-trigger
  sleep 30
}

guest_stage2() {
  set +e
  local out=/run/km-out
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  mkdir -p /dev/pts /dev/shm
  mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  mount -t bpf bpf /sys/fs/bpf
  mount -t tracefs tracefs /sys/kernel/tracing
  mount -t debugfs debugfs /sys/kernel/debug
  ln -sfn /proc/self/fd /dev/fd
  # The guest kernel's modules, where modprobe (the host's) looks for them.
  local rel mods
  rel=$(uname -r)
  mods=$(sed -n 's/.*km\.modules=\([^ ]*\).*/\1/p' /proc/cmdline)
  mkdir -p "/lib/modules/$rel"
  mount --bind "$mods" "/lib/modules/$rel"
  hostname kernel-matrix
  ip link set lo up
  echo "$rel" >"$out/uname-r"

  # The job: cwd, argv and environment, written by the host (bash `declare -p`).
  local KM_CWD KM_KERNEL
  local -a KM_ARGV KM_ENV
  # shellcheck disable=SC1091
  . "$out/job.sh"
  local up0 up1 rc
  up0=$(cut -d' ' -f1 /proc/uptime)
  echo "kernel-matrix: guest $KM_KERNEL ($rel) up after ${up0}s; running: ${KM_ARGV[*]}"
  cd "$KM_CWD" || { echo "kernel-matrix: cd $KM_CWD failed in the guest"; echo 126 >"$out/exit-status"; guest_poweroff; }
  env -i PATH="$PATH" HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb \
    KM_KERNEL="$KM_KERNEL" KM_RELEASE="$rel" KM_OUT="$out" "${KM_ENV[@]}" \
    "${KM_ARGV[@]}" </dev/null 2>&1 | tee "$out/output.log"
  rc=${PIPESTATUS[0]}
  up1=$(cut -d' ' -f1 /proc/uptime)
  echo "$up0" >"$out/boot-seconds"
  awk -v a="$up0" -v b="$up1" 'BEGIN { printf "%.1f\n", b - a }' >"$out/cmd-seconds"
  echo "$rc" >"$out/exit-status"
  echo "kernel-matrix: guest $KM_KERNEL: command exited $rc"
  umount "$out"
  guest_poweroff
}

# -------------------------------------------------------------------------------------
# Host side: one guest per kernel, one at a time (a machine-wide lock keeps concurrent
# users of this script from running two guests at once).
# -------------------------------------------------------------------------------------

# run_guest LABEL DIR TIMEOUT: boots the prepared kernel LABEL and runs the job in
# DIR/job.sh; sets G_STATUS and G_RC.
run_guest() {
  local label=$1 dir=$2 timeout=$3
  # shellcheck disable=SC1090
  . "$CACHE/kernels/$label.env"
  local append="console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off"
  append+=" km.rootcache=${BPFTUNE_KM_9P_CACHE:-none}"
  append+=" km.stage2=$SELF km.modules=$K_ROOT/lib/modules/$K_RELEASE ${BPFTUNE_KM_APPEND:-}"
  # shellcheck disable=SC2054 # commas belong to qemu's option syntax
  local -a qemu=(
    "$QEMU_BIN" -L "$QEMU_ROOT/usr/share/qemu" -L "$QEMU_ROOT/usr/share/seabios"
    -accel tcg,thread="$TCG_THREAD" -cpu max -smp "$GUEST_CPUS" -m "$GUEST_MEM"
    -nodefaults -display none -no-reboot -serial stdio
    -kernel "$K_VMLINUZ" -initrd "$K_INITRD" -append "$append"
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$dir,mount_tag=kmout,security_model=none,multidevs=remap"
  )
  exec 8>/run/lock/bpftune-kernel-matrix.lock
  if ! flock -n 8; then
    log "waiting for another kernel-matrix guest on this machine to finish"
    flock 8
  fi
  : >"$dir/console.log"
  timeout --kill-after=10 "$timeout" env LD_LIBRARY_PATH="$QEMU_LIBS" \
    QEMU_MODULE_DIR="$QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu" "${qemu[@]}" \
    </dev/null >"$dir/console.log" 2>&1 &
  QEMU_WRAPPER_PID=$!
  local tail_pid=""
  if [ -z "$QUIET" ]; then
    tail -n +1 -f --pid="$QEMU_WRAPPER_PID" "$dir/console.log" | sed -u "s/^/[$label] /" &
    tail_pid=$!
  fi
  local qrc=0
  wait "$QEMU_WRAPPER_PID" || qrc=$?
  QEMU_WRAPPER_PID=""
  [ -z "$tail_pid" ] || wait "$tail_pid" 2>/dev/null || true
  exec 8>&-
  if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
    G_STATUS=TIMEOUT
    G_RC=-
  elif [ -f "$dir/exit-status" ]; then
    G_RC=$(cat "$dir/exit-status")
    if [ "$G_RC" = 0 ]; then G_STATUS=PASS; else G_STATUS=FAIL; fi
  else
    G_STATUS=NOBOOT
    G_RC=-
    log "$label: the guest never reported an exit status (qemu exit $qrc); console tail:"
    tail -n 30 "$dir/console.log" | sed 's/^/    /' >&2
  fi
}

# CPU seconds (user + system) used so far by this shell's waited-for children: the
# difference around a guest is qemu's CPU time, which unlike wall time does not depend
# on what else the machine is doing.
# Called as `children_cpu VAR` (not in a subshell, whose children would be others).
children_cpu() {
  times >"$TMP/times"
  printf -v "$1" '%s' "$(tail -n 1 "$TMP/times" | tr 'ms' '  ' |
    awk '{ printf "%.0f", $1 * 60 + $2 + $3 * 60 + $4 }')"
}

# write_job DIR LABEL: the job file stage 2 sources (quoted with declare -p).
write_job() {
  local dir=$1
  local KM_KERNEL=$2 KM_CWD=$PWD
  local -a KM_ARGV=("${CMD[@]}") KM_ENV=("${EXTRA_ENV[@]}")
  {
    declare -p KM_KERNEL KM_CWD KM_ARGV KM_ENV | sed 's/^declare -[-aA]* //'
  } >"$dir/job.sh"
}

main() {
  local -a kernels=()
  local timeout=1200 out=$REPO/target/kernel-matrix/results fetch_only="" arg k
  QUIET=""
  EXTRA_ENV=()
  CMD=()
  while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
      -k | --kernel)
        [ $# -gt 0 ] || die "$arg needs a value"
        IFS=, read -r -a k <<<"$1"
        kernels+=("${k[@]}")
        shift ;;
      -t | --timeout)
        [[ ${1:-} =~ ^[0-9]+$ ]] || die "$arg needs a number of seconds"
        timeout=$1
        shift ;;
      -o | --out)
        [ $# -gt 0 ] || die "$arg needs a directory"
        out=$1
        shift ;;
      -e | --env)
        [[ ${1:-} == [A-Za-z_]*=* ]] || die "$arg needs NAME=VALUE"
        EXTRA_ENV+=("$1")
        shift ;;
      -q | --quiet) QUIET=1 ;;
      --fetch) fetch_only=1 ;;
      --list)
        printf '%s\n' "${KNOWN_KERNELS[@]}"
        return 0 ;;
      --guest-stage2)
        guest_stage2
        return 0 ;;
      -h | --help)
        usage
        return 0 ;;
      --)
        CMD=("$@")
        break ;;
      *) die "unknown argument '$arg' (see --help)" ;;
    esac
  done
  [ ${#kernels[@]} -gt 0 ] || IFS=, read -r -a kernels <<<"$DEFAULT_KERNELS"
  local -a labels=()
  local -a expanded=()
  for k in "${kernels[@]}"; do
    if [ "$k" = all ]; then expanded+=(6.1 6.12 5.10); else expanded+=("$k"); fi
  done
  for k in "${expanded[@]}"; do
    kernel_info "$k"
    in_list "$k" "${labels[@]}" || labels+=("$k")
  done
  if [ -z "$fetch_only" ] && [ ${#CMD[@]} -eq 0 ]; then
    die "no command given (… -- CMD [ARGS...]; or --fetch)"
  fi
  [ "$(id -u)" = 0 ] || die "needs root (the guest's 9p root export and the shared lock)"
  # Both paths travel on the guest kernel's command line, which splits at whitespace.
  [[ $SELF$CACHE != *[[:space:]]* ]] || die "$SELF or $CACHE contains whitespace"
  make_tmp
  mkdir -p "$CACHE" "$out"
  out=$(cd "$out" && pwd)

  # Preparation is serialised per cache directory (two runs may share one).
  exec 9>"$CACHE/.lock"
  flock 9
  local t0=$SECONDS
  # Each preparation runs in its own bash so that one kernel's failure (its die) is
  # reported for that kernel and the others still run.
  "$BASH" "$SELF" --internal-prepare-qemu || die "preparing qemu failed"
  local -A prep_ok=()
  for k in "${labels[@]}"; do
    if "$BASH" "$SELF" --internal-prepare-kernel "$k"; then prep_ok[$k]=1; fi
  done
  exec 9>&-
  log "fetch and prepare: $((SECONDS - t0)) s"
  [ -z "$fetch_only" ] || { [ ${#prep_ok[@]} -eq ${#labels[@]} ]; return; }

  local summary=$out/summary.txt line status rc boot cmd total t cpu0 cpu failed=0 rel dir
  : >"$summary"
  for k in "${labels[@]}"; do
    dir=$out/$k
    rm -rf "$dir"
    mkdir -p "$dir"
    t=$SECONDS
    children_cpu cpu0
    rel="?"
    boot=- cmd=- cpu=-
    if [ -z "${prep_ok[$k]:-}" ]; then
      status=FETCH-FAILED
      rc=-
    else
      write_job "$dir" "$k"
      log "booting $k ($(sed -n 's/^K_RELEASE=//p' "$CACHE/kernels/$k.env")), timeout ${timeout}s"
      run_guest "$k" "$dir" "$timeout"
      # Multi-threaded TCG occasionally trips over the kernel's own text patching
      # early in boot ("Oops: int3 ... Kernel panic", seen once on 6.12): the guest
      # never ran the command, so boot it once more rather than fail the matrix.
      if [ "$G_STATUS" = NOBOOT ]; then
        log "$k: the guest did not boot; booting it once more"
        cp "$dir/console.log" "$dir/console.first-boot.log" 2>/dev/null || true
        run_guest "$k" "$dir" "$timeout"
      fi
      status=$G_STATUS
      rc=$G_RC
      rel=$(sed -n 's/^K_RELEASE=//p' "$CACHE/kernels/$k.env")
      [ ! -f "$dir/boot-seconds" ] || boot=$(cat "$dir/boot-seconds")
      [ ! -f "$dir/cmd-seconds" ] || cmd=$(cat "$dir/cmd-seconds")
      children_cpu cpu
      cpu=$((cpu - cpu0))
    fi
    total=$((SECONDS - t))
    [ "$status" = PASS ] || failed=1
    [ "$boot" = - ] || boot+=s
    [ "$cmd" = - ] || cmd+=s
    [ "$cpu" = - ] || cpu+=s
    line=$(printf '%-5s %-24s %-12s exit=%-3s boot=%s cmd=%s total=%ss qemu-cpu=%s' \
      "$k" "$rel" "$status" "$rc" "$boot" "$cmd" "$total" "$cpu")
    echo "$line" >>"$summary"
  done
  echo
  sed 's/^/kernel-matrix: /' "$summary"
  return "$failed"
}

case "${1:-}" in
  --internal-prepare-qemu)
    prepare_qemu
    exit 0 ;;
  --internal-prepare-kernel)
    prepare_kernel "$2"
    exit 0 ;;
esac
main "$@"

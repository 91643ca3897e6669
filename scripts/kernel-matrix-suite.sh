#!/usr/bin/env bash
# kernel-matrix-suite.sh: what CI runs on each kernel of the matrix to prove that
# bpftune's BPF hooks attach there, plus the steps around it.
#
# Usage
#   scripts/kernel-matrix-suite.sh ci [--kernel LIST] [--timeout SEC]
#       everything (what `make kernel-matrix` runs): prepare; run natively on the host
#       kernel; run in a qemu guest per kernel (scripts/kernel-matrix.sh, default
#       6.1,6.12,5.10); print the Markdown table. Exit status 0 only if every kernel passed.
#   scripts/kernel-matrix-suite.sh prepare
#       on the host: builds bpftune and the test binaries (cargo test --release
#       --workspace --no-run: the same build as `make test`, so nothing is rebuilt after
#       it) and lists the test binaries in target/kernel-matrix/tests.list
#   scripts/kernel-matrix-suite.sh run
#       the suite itself, as root, in a guest (KM_OUT and KM_KERNEL set by
#       kernel-matrix.sh) or natively (results in target/kernel-matrix/results/host):
#         1. target/release/bpftune -S: the chosen flavour per hook   -> support.txt
#         2. the daemon check, the Rust test netns_churn::netns_churn_leaks_nothing
#            (tests/netns_churn.rs) with BPFTUNE_CHURN_NAMESPACES=KM_SUITE_CHURN
#            (default 30 in a guest, the test's 200 natively): the daemon starts with
#            every tuner attached; while it runs, namespaces are created and deleted in
#            batches (ping over veth in some): it stays up, its fd and thread counts
#            stay flat, the `tuners` query shows every tuner active; it exits 0 on
#            SIGTERM. BPFTUNE_CHURN_REPORT makes the test leave daemon.env, daemon.log
#            and daemon-tuners.txt for the report         -> tests/netns_churn::*.log
#         3. root integration tests from the prebuilt binaries, one test per run,
#            --test-threads=1 --include-ignored                       -> tests/*.log
#       A test that skips (tests/common `skip!`: BPFTUNE_TEST_SKIPS=tests/T.skip) is
#       reported as skipped, not ok. Then result.json (scripts/kernel-matrix-report.py).
#       Needs no cargo.
#   scripts/kernel-matrix-suite.sh noipv6 [KERNEL]
#       one guest (default 6.12) booted with ipv6.disable=1 runs the reliability test
#       for a kernel without IPv6 sysctls (`make kernel-noipv6`; results in
#       target/kernel-matrix/noipv6/)
#   scripts/kernel-matrix-suite.sh vm [KERNELS]
#       the vm tuner's outcome test (tests/vm.rs: reclaim pressure raises
#       vm.watermark_scale_factor, observe mode only proposes it, -R restores it) in
#       a 1 GiB guest per kernel (default 6.1,6.12) booted with psi=1 and emulated
#       single-threaded (BPFTUNE_KM_TCG_THREAD=single: under this load a
#       multi-threaded guest twice oopsed on a stale int3 of patched kernel text).
#       It needs a small machine, so natively (make test) it is reported as skipped.
#       `make kernel-vm`; results in target/kernel-matrix/vm/
#   scripts/kernel-matrix-suite.sh table [DIR]
#       the "Supported kernels" Markdown table from DIR/*/result.json
#
# Tests (KM_SUITE_TESTS overrides: space-separated BINARY or BINARY::TEST items).
#   In a guest (software emulation is 10-30x slower than the host): one test per
#   property: rmem and wmem raised per netns (tcp_buffer), administrator override
#   (admin), rollback (rollback), every managed sysctl written with the daemon's idle
#   capabilities and high_order_alloc_disable set by the daemon both ways (privs,
#   tcp_mem); netns churn is step 2 (with 30 namespaces: the test's default 200 take
#   3+ minutes under emulation).
#   Natively: all of tcp_buffer, admin and rollback; netns_churn (200) is step 2.
# KM_SUITE_TEST_TIMEOUT (default 300) limits each test, in seconds.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
RESULTS=$REPO/target/kernel-matrix/results
TESTS_LIST=$REPO/target/kernel-matrix/tests.list
BPFTUNE=$REPO/target/release/bpftune
REPORT=$REPO/scripts/kernel-matrix-report.py

GUEST_TESTS="tcp_buffer::small_rmem_and_wmem_are_raised_in_their_namespace_only
  admin::admin_write_in_a_namespace_disables_tuning_there_only
  rollback::rollback_restores_namespace_values_on_exit
  privs::every_managed_sysctl_is_writable_with_idle_capabilities
  privs::net_buffer_enables_high_order_allocations_with_idle_capabilities
  tcp_mem::tcp_mem_exhaustion_raises_max_and_sets_low_memory_tunables"
NATIVE_TESTS="tcp_buffer admin rollback"
# Step 2, the daemon check.
CHURN_TEST="netns_churn::netns_churn_leaks_nothing"
TEST_TIMEOUT=${KM_SUITE_TEST_TIMEOUT:-300}

log() { printf 'kernel-matrix-suite: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f\n", b - a }'; }

# -------------------------------------------------------------------------------------
cmd_prepare() {
  command -v cargo >/dev/null || die "cargo not found (prepare runs on the host)"
  mkdir -p "$(dirname "$TESTS_LIST")"
  log "cargo build --release --workspace"
  (cd "$REPO" && cargo build --release --workspace) || die "cargo build --release --workspace failed"
  log "cargo test --release --workspace --no-run (test binaries)"
  (cd "$REPO" && cargo test --release --workspace --no-run --message-format=json) >"$TESTS_LIST.json" ||
    die "cargo test --release --workspace --no-run failed (see $TESTS_LIST.json)"
  python3 - "$TESTS_LIST.json" >"$TESTS_LIST.tmp" <<'EOF' || die "parsing cargo's JSON output failed"
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(f"{m['target']['name']}\t{m['executable']}")
EOF
  mv "$TESTS_LIST.tmp" "$TESTS_LIST"
  rm -f "$TESTS_LIST.json"
  log "$(wc -l <"$TESTS_LIST") test binaries listed in $TESTS_LIST"
}

# -------------------------------------------------------------------------------------
# run: -S, daemon + churn, tests; result.json
# -------------------------------------------------------------------------------------
# run_test OUT BINARY EXECUTABLE TEST [VAR=VALUE...]: one libtest run of one test (a crash
# or timeout costs only that test), with the environment given; appends
# "BINARY TEST EXIT SECONDS" to OUT/tests.tsv. A test that called `skip!` (a line in
# tests/BINARY::TEST.skip) is logged as skipped; the report counts it so too.
run_test() {
  local out=$1 bin=$2 exe=$3 name=$4 ts rc=0 secs skip
  shift 4
  skip=$out/tests/$bin::$name.skip
  rm -f "$skip"
  ts=$(now)
  env BPFTUNE_TEST_SKIPS="$skip" "$@" \
    timeout --kill-after=10 "$TEST_TIMEOUT" "$exe" --exact "$name" --test-threads=1 --include-ignored \
    </dev/null >"$out/tests/$bin::$name.log" 2>&1 || rc=$?
  secs=$(since "$ts")
  printf '%s\t%s\t%s\t%s\n' "$bin" "$name" "$rc" "$secs" >>"$out/tests.tsv"
  if [ "$rc" = 0 ] && [ -s "$skip" ]; then
    log "test $bin::$name: SKIPPED (${secs}s): $(sed 's/^[^:]*::[^:]*: //' "$skip" | head -n 1)"
  elif [ "$rc" = 0 ]; then
    log "test $bin::$name: ok (${secs}s)"
  else
    [ "$rc" != 124 ] || log "test $bin::$name: TIMED OUT after ${TEST_TIMEOUT}s"
    log "test $bin::$name: FAILED (exit $rc, ${secs}s); its output:"
    sed 's/^/    /' "$out/tests/$bin::$name.log" >&2
  fi
}

# Prints "BINARY<TAB>EXECUTABLE<TAB>TEST" per test of the subset.
subset() {
  local item bin name exe
  for item in $1; do
    bin=${item%%::*}
    exe=$(awk -F'\t' -v b="$bin" '$1 == b { print $2; exit }' "$TESTS_LIST")
    [ -n "$exe" ] || die "no test binary '$bin' in $TESTS_LIST (run: $0 prepare)"
    [ -x "$exe" ] || die "$exe is missing (run: $0 prepare)"
    if [[ $item == *::* ]]; then
      printf '%s\t%s\t%s\n' "$bin" "$exe" "${item#*::}"
    else
      "$exe" --list --include-ignored 2>/dev/null | sed -n 's/: test$//p' |
        while read -r name; do printf '%s\t%s\t%s\n' "$bin" "$exe" "$name"; done
    fi
  done
}

cmd_run() {
  [ "$(id -u)" = 0 ] || die "needs root"
  [ -x "$BPFTUNE" ] || die "$BPFTUNE is missing (run: $0 prepare)"
  [ -f "$TESTS_LIST" ] || die "$TESTS_LIST is missing (run: $0 prepare)"
  local label=${KM_KERNEL:-host} out native="" t0 release tests
  if [ -n "${KM_KERNEL:-}" ]; then
    out=${KM_OUT:?KM_OUT must be set with KM_KERNEL}
    tests=${KM_SUITE_TESTS:-$GUEST_TESTS}
  else
    native=1
    out=${KM_OUT:-$RESULTS/host}
    tests=${KM_SUITE_TESTS:-$NATIVE_TESTS}
  fi
  mkdir -p "$out/tests"
  rm -f "$out/daemon.env" "$out/daemon.log" "$out/daemon-tuners.txt"
  t0=$(now)
  release=$(uname -r)
  cd "$REPO"
  log "kernel $label ($release)"

  # 1. What the kernel supports, per tuner and hook.
  local support_rc=0
  "$BPFTUNE" -S >"$out/support.txt" 2>&1 || support_rc=$?
  sed 's/^bpftune: /  /' "$out/support.txt"
  log "bpftune -S exited $support_rc"

  # 2. The daemon: start with every tuner attached, netns churn, exit 0 on SIGTERM
  # (the Rust test; it leaves daemon.env, daemon.log and daemon-tuners.txt in $out).
  : >"$out/tests.tsv"
  local bin exe name n=0 churn=${KM_SUITE_CHURN:-}
  [ -n "$churn" ] || [ -n "$native" ] || churn=30
  IFS=$'\t' read -r bin exe name <<<"$(subset "$CHURN_TEST")"
  run_test "$out" "$bin" "$exe" "$name" BPFTUNE_CHURN_REPORT="$out" ${churn:+BPFTUNE_CHURN_NAMESPACES=$churn}
  if [ -f "$out/daemon.env" ]; then
    log "daemon: $(tr '\n' ' ' <"$out/daemon.env")"
  else
    log "daemon: the churn test left no daemon.env"
  fi

  # 3. The integration tests, one per run.
  local list
  list=$(subset "$tests")
  while IFS=$'\t' read -r bin exe name; do
    [ -n "$bin" ] || continue
    n=$((n + 1))
    run_test "$out" "$bin" "$exe" "$name"
  done <<<"$list"
  [ "$n" -gt 0 ] || die "no tests selected ($tests)"

  local -a extra=()
  [ -z "$native" ] || extra+=(--native)
  python3 "$REPORT" result --out "$out" --label "$label" --release "$release" "${extra[@]}" \
    --seconds "$(since "$t0")" --support-rc "$support_rc" || die "writing $out/result.json failed"
  python3 "$REPORT" summary "$out/result.json"
}

# -------------------------------------------------------------------------------------
cmd_ci() {
  local -a km_args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --kernel | --timeout)
        [ $# -ge 2 ] || die "$1 needs a value"
        km_args+=("$1" "$2")
        shift 2 ;;
      *) die "unknown argument '$1' for ci" ;;
    esac
  done
  local t0=$SECONDS failed=0
  cmd_prepare
  log "prepare: $((SECONDS - t0)) s"
  local t=$SECONDS
  rm -rf "$RESULTS/host"
  mkdir -p "$RESULTS/host"
  log "host kernel $(uname -r), natively"
  "$SELF" run 2>&1 | tee "$RESULTS/host/output.log" || failed=1
  log "host kernel: $((SECONDS - t)) s"
  "$REPO/scripts/kernel-matrix.sh" "${km_args[@]}" -- "$SELF" run || failed=1
  echo
  echo "Supported kernels (target/kernel-matrix/results/kernels.md):"
  echo
  python3 "$REPORT" table "$RESULTS" | tee "$RESULTS/kernels.md"
  log "total: $((SECONDS - t0)) s; $([ "$failed" = 0 ] && echo "all kernels passed" || echo "FAILURES (see above)")"
  return "$failed"
}

# A guest booted with ipv6.disable=1: no /proc/sys/net/ipv6 at all (a namespace can
# only disable IPv6, not remove its sysctls). The reliability test for that kernel runs
# there; BPFTUNE_EXPECT_NO_IPV6=1 makes it fail rather than skip if the guest still has
# IPv6. Needs `prepare` (the test binaries). Results in target/kernel-matrix/noipv6/.
cmd_noipv6() {
  local kernel=${1:-6.12} exe
  cmd_prepare
  exe=$(awk -F'\t' '$1 == "reliability_surprises" { print $2; exit }' "$TESTS_LIST")
  [ -n "$exe" ] || die "no test binary 'reliability_surprises' in $TESTS_LIST (run: $0 prepare)"
  BPFTUNE_KM_APPEND="ipv6.disable=1 ${BPFTUNE_KM_APPEND:-}" \
    "$REPO/scripts/kernel-matrix.sh" --kernel "$kernel" --timeout "${KM_SUITE_TEST_TIMEOUT:-600}" \
    -o "$REPO/target/kernel-matrix/noipv6" -e BPFTUNE_EXPECT_NO_IPV6=1 -- \
    "$exe" --exact kernel_without_ipv6_sysctls_loads_every_tuner_and_says_so_once \
    --include-ignored --test-threads=1 --nocapture
}

# The vm tuner's outcome test in small single-threaded guests (see the usage above).
cmd_vm() {
  local kernels=${1:-6.1,6.12} exe
  cmd_prepare
  exe=$(awk -F'\t' '$1 == "vm" { print $2; exit }' "$TESTS_LIST")
  [ -n "$exe" ] || die "no test binary 'vm' in $TESTS_LIST (run: $0 prepare)"
  BPFTUNE_KM_MEM=1G BPFTUNE_KM_TCG_THREAD=single BPFTUNE_KM_APPEND="psi=1 ${BPFTUNE_KM_APPEND:-}" \
    "$REPO/scripts/kernel-matrix.sh" --kernel "$kernels" --timeout "${KM_SUITE_TEST_TIMEOUT:-900}" \
    -o "$REPO/target/kernel-matrix/vm" -- \
    "$exe" --exact reclaim_pressure_raises_the_watermark_gap_observe_only_proposes_and_rollback_restores \
    --include-ignored --test-threads=1 --nocapture
}

case "${1:-}" in
  prepare) cmd_prepare ;;
  vm)
    shift
    cmd_vm "$@" ;;
  noipv6)
    shift
    cmd_noipv6 "$@" ;;
  run) cmd_run ;;
  ci)
    shift
    cmd_ci "$@" ;;
  table) python3 "$REPORT" table "${2:-$RESULTS}" ;;
  -h | --help | "") sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (prepare, run, ci, noipv6, vm, table)" ;;
esac

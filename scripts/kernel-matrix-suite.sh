#!/usr/bin/env bash
# kernel-matrix-suite.sh: what CI runs on each kernel of the matrix to prove that
# bpftune's BPF hooks attach there, plus the steps around it.
#
# Usage
#   scripts/kernel-matrix-suite.sh ci [--kernel LIST] [--timeout SEC]
#       everything (what `make kernel-matrix` runs): prepare; run natively on the host
#       kernel; run in a qemu guest per kernel (scripts/kernel-matrix.sh, default
#       6.1,6.12); print the Markdown table. Exit status 0 only if every kernel passed.
#   scripts/kernel-matrix-suite.sh prepare
#       on the host: builds bpftune and the test binaries (cargo test --release
#       --workspace --no-run: the same build as `make test`, so nothing is rebuilt after
#       it) and lists the test binaries in target/kernel-matrix/tests.list
#   scripts/kernel-matrix-suite.sh run
#       the suite itself, as root, in a guest (KM_OUT and KM_KERNEL set by
#       kernel-matrix.sh) or natively (results in target/kernel-matrix/results/host):
#         1. target/release/bpftune -S: the chosen flavour per hook   -> support.txt
#         2. the daemon starts with every tuner attached; while it runs, a small netns
#            churn (KM_SUITE_CHURN namespaces, default 30, created and deleted in
#            batches of 10, 1 MB of TCP over veth in the first batch): the daemon
#            stays up, its fd and thread counts stay flat, the `tuners` query shows
#            every tuner active; it stops cleanly on SIGTERM           -> daemon.log
#         3. root integration tests from the prebuilt binaries, one test per run,
#            --test-threads=1 --include-ignored                       -> tests/*.log
#       then result.json (scripts/kernel-matrix-report.py). Needs no cargo.
#   scripts/kernel-matrix-suite.sh noipv6 [KERNEL]
#       one guest (default 6.12) booted with ipv6.disable=1 runs the reliability test
#       for a kernel without IPv6 sysctls (`make kernel-noipv6`; results in
#       target/kernel-matrix/noipv6/)
#   scripts/kernel-matrix-suite.sh table [DIR]
#       the "Supported kernels" Markdown table from DIR/*/result.json
#
# Tests (KM_SUITE_TESTS overrides: space-separated BINARY or BINARY::TEST items).
#   In a guest (software emulation is 10-30x slower than the host): one test per
#   property: rmem and wmem raised per netns (tcp_buffer), administrator override
#   (admin), rollback (rollback), every managed sysctl written with the daemon's idle
#   capabilities and high_order_alloc_disable set by the daemon both ways (privs,
#   tcp_mem); netns churn is step 2 (the netns_churn test's 200
#   namespaces take 3+ minutes under emulation).
#   Natively: all of tcp_buffer, admin, rollback and netns_churn.
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
NATIVE_TESTS="tcp_buffer admin rollback netns_churn"
TEST_TIMEOUT=${KM_SUITE_TEST_TIMEOUT:-300}
CHURN=${KM_SUITE_CHURN:-30}

log() { printf 'kernel-matrix-suite: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

TMP=""
DAEMON_PID=""
cleanup() {
  local rc=$?
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  local ns
  for ns in "/run/netns/kmchurn-$$-"*; do
    [ ! -e "$ns" ] || ip netns del "$(basename "$ns")" 2>/dev/null || true
  done
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    # A killed daemon may leave its cgroup2 mount behind: unmount before removing.
    grep -o " $TMP/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" || true
    done || true
    rm -rf "$TMP"
  fi
  exit "$rc"
}
make_tmp() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/kernel-matrix-suite.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
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
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
thread_count() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# churn_traffic NS_A NS_B: a veth pair between them and 1 MB of TCP from B to A.
churn_traffic() {
  local a=$1 b=$2 srv i ok=""
  if ! { ip link add "kmc$$a" netns "$a" type veth peer name "kmc$$b" netns "$b" &&
    ip -n "$a" addr add 10.217.0.1/24 dev "kmc$$a" && ip -n "$a" link set "kmc$$a" up &&
    ip -n "$b" addr add 10.217.0.2/24 dev "kmc$$b" && ip -n "$b" link set "kmc$$b" up; }; then
    echo "veth setup in $a/$b failed"
    return 1
  fi
  ip netns exec "$a" timeout 60 iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  srv=$!
  for ((i = 0; i < 50; i++)); do
    if ip netns exec "$b" iperf3 -c 10.217.0.1 -p 5299 -n 1M >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.2
  done
  kill "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
  [ -n "$ok" ] || { echo "iperf3 from $b to $a failed"; return 1; }
}

# churn N: N namespaces created and deleted in batches of 10 while the daemon runs.
churn() {
  local n=$1 i j
  for ((i = 0; i < n; i += 10)); do
    # One `ip -batch` per batch: process start-up is expensive under emulation.
    for ((j = i; j < i + 10 && j < n; j++)); do echo "netns add kmchurn-$$-$j"; done |
      ip -batch - || return 1
    # A little TCP traffic in the first batch (veth between two of them, 1 MB of
    # iperf3), so that events come from short-lived namespaces.
    if [ "$i" = 0 ] && [ "$n" -ge 2 ]; then
      churn_traffic "kmchurn-$$-0" "kmchurn-$$-1" || return 1
    fi
    for ((j = i; j < i + 10 && j < n; j++)); do echo "netns del kmchurn-$$-$j"; done |
      ip -batch - || return 1
  done
}

# The daemon (private run/state/cgroup dirs) starts, survives a netns churn and stops
# with exit 0 on SIGTERM. Writes daemon.log and daemon.env (key=value for the report).
daemon_check() {
  local out=$1 d=$TMP/daemon t0 i started="" status rc=0
  mkdir -p "$d"
  t0=$(now)
  BPFTUNE_RUN_DIR=$d/run BPFTUNE_STATE_DIR=$d/state \
    "$BPFTUNE" -s -d -c "$d/cgroupv2" </dev/null >/dev/null 2>"$out/daemon.log" &
  DAEMON_PID=$!
  for ((i = 0; i < 1200; i++)); do # up to 120 s: BPF verification is slow when emulated
    if grep -q "bpftune started" "$out/daemon.log"; then
      started=1
      break
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  local start_s fds0="" fds1="" thr0="" thr1="" churn_s="" churn_ok="" alive=""
  start_s=$(since "$t0")
  if [ -n "$started" ]; then
    sleep 1
    fds0=$(fd_count "$DAEMON_PID")
    thr0=$(thread_count "$DAEMON_PID")
    local tc
    tc=$(now)
    if churn "$CHURN" >"$out/churn.log" 2>&1; then churn_ok=1; else log "netns churn failed: $(tail -n 3 "$out/churn.log")"; fi
    sleep 6 # past the daemon's 5 s netns rescan
    churn_s=$(since "$tc")
    fds1=$(fd_count "$DAEMON_PID")
    thr1=$(thread_count "$DAEMON_PID")
    kill -0 "$DAEMON_PID" 2>/dev/null && alive=1
    BPFTUNE_RUN_DIR=$d/run "$BPFTUNE" -q tuners >"$out/daemon-tuners.txt" 2>&1 || true
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      kill -0 "$DAEMON_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$DAEMON_PID" 2>/dev/null && kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" || rc=$?
    if [ -z "$alive" ]; then status=died-during-churn; elif [ "$rc" = 0 ]; then status=started; else status=stop-failed-$rc; fi
  elif kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" || true
    status=no-start
  else
    wait "$DAEMON_PID" || rc=$?
    status=exited-$rc
  fi
  DAEMON_PID=""
  cat >"$out/daemon.env" <<EOF
status=$status
start_seconds=$start_s
churn_namespaces=$CHURN
churn_ok=$churn_ok
churn_seconds=$churn_s
fds_before=$fds0
fds_after=$fds1
threads_before=$thr0
threads_after=$thr1
EOF
  local churn_word="not run"
  [ -z "$started" ] || churn_word=FAILED
  [ -z "$churn_ok" ] || churn_word=ok
  log "daemon: $status (start ${start_s}s; churn of $CHURN netns $churn_word in ${churn_s:-?}s, fds ${fds0:-?} -> ${fds1:-?}, threads ${thr0:-?} -> ${thr1:-?})"
  if grep -q "could not attach tuner\|cannot run on this kernel" "$out/daemon.log" || [ "$status" != started ]; then
    # The start-up part says why (churn noise follows it), then the end.
    # (awk, not a pipeline that closes early: SIGPIPE would end this script)
    log "daemon log up to 'bpftune started' (libbpf lines left out, except its failures):"
    awk '(!/libbpf:/ || (/failed to (attach|load)/ && !/BPF token/)) && n++ < 40 { print "    " $0 }
      /bpftune started/ { exit }' "$out/daemon.log" >&2
    log "daemon log, last lines:"
    awk '!/libbpf:/ { t[n++ % 8] = $0 } END { for (i = (n > 8 ? n - 8 : 0); i < n; i++) print "    " t[i % 8] }' \
      "$out/daemon.log" >&2
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
  make_tmp
  t0=$(now)
  release=$(uname -r)
  cd "$REPO"
  log "kernel $label ($release)"

  # 1. What the kernel supports, per tuner and hook.
  local support_rc=0
  "$BPFTUNE" -S >"$out/support.txt" 2>&1 || support_rc=$?
  sed 's/^bpftune: /  /' "$out/support.txt"
  log "bpftune -S exited $support_rc"

  # 2. The daemon: start, churn, stop.
  daemon_check "$out"

  # 3. The integration tests, one per run (a crash or timeout costs only that test).
  local list bin exe name rc ts secs n=0
  list=$(subset "$tests")
  : >"$out/tests.tsv"
  while IFS=$'\t' read -r bin exe name; do
    [ -n "$bin" ] || continue
    n=$((n + 1))
    ts=$(now)
    rc=0
    timeout --kill-after=10 "$TEST_TIMEOUT" "$exe" --exact "$name" --test-threads=1 --include-ignored \
      </dev/null >"$out/tests/$bin::$name.log" 2>&1 || rc=$?
    secs=$(since "$ts")
    printf '%s\t%s\t%s\t%s\n' "$bin" "$name" "$rc" "$secs" >>"$out/tests.tsv"
    if [ "$rc" = 0 ]; then
      log "test $bin::$name: ok (${secs}s)"
    else
      [ "$rc" != 124 ] || log "test $bin::$name: TIMED OUT after ${TEST_TIMEOUT}s"
      log "test $bin::$name: FAILED (exit $rc, ${secs}s); its output:"
      sed 's/^/    /' "$out/tests/$bin::$name.log" >&2
    fi
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

case "${1:-}" in
  prepare) cmd_prepare ;;
  noipv6)
    shift
    cmd_noipv6 "$@" ;;
  run) cmd_run ;;
  ci)
    shift
    cmd_ci "$@" ;;
  table) python3 "$REPORT" table "${2:-$RESULTS}" ;;
  -h | --help | "") sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (prepare, run, ci, noipv6, table)" ;;
esac

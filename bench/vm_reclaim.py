#!/usr/bin/env python3
"""vm tuner outcome recipe: reclaim pressure that kswapd cannot keep ahead of.

A small machine (a qemu guest of the kernel matrix with 1 GiB) runs two loads:
  - a page-cache reader: buffered reads of a zram block device far larger than
    memory (never written, so zram stores nothing and reads cost no I/O): the page
    cache fills every free page and is reclaimed continuously;
  - bursty anonymous allocators (the probe, two processes): every PERIOD each maps
    BURST MiB in 8 MiB mappings populated at mmap time (the call's duration per MiB
    is the allocation latency), holds the last HOLD bursts (together 80 % of
    memory), unmaps older ones;
with swap on a second zram device (when the machine has no swap), so that reclaim
must swap anonymous memory out, which costs kswapd far more per page than dropping
clean cache. Burst allocations find free memory at the low watermark and stall in
direct reclaim unless kswapd has reclaimed far enough ahead: what
vm.watermark_scale_factor decides.

Usage (root; refuses a machine with more than 4 GiB: it would squeeze a real host):
  vm_reclaim.py load --secs N [--json FILE]     the two loads for N s; figures out
  vm_reclaim.py bench --bpftune PATH [--secs N] [--learn N] [--pairs P --seg S] [--json FILE]
      untuned (daemon -a vm --observe) N s; the daemon tuning (-a vm -R) for
      --learn s, then N s measured (the daemon still tuning); the daemon stopped
      (-R restores), N s untuned again; prints the ratios of tuned to the mean of
      the two untuned phases. Then P pairs of S-s segments alternating the value the
      daemon reached with the value found, in the order AB BA AB ..., so that the
      load's drift over minutes falls on both sides alike; prints the ratio of their
      sums. Leaves the sysctls as found
  vm_reclaim.py guest [--kernel 6.12] [--mem 1G] [--secs N] [--learn N] [--pairs P --seg S]
      host side: `bench` in a guest of scripts/kernel-matrix.sh (booted with psi=1)

Figures per phase: direct-reclaim stall time and count (the kernel's own
mm_vmscan_direct_reclaim_begin/end events in a private tracefs instance, not
bpftune's counters), allocstall_*, pages scanned by direct reclaim (pgscan_direct),
pages swapped out, memory stall time (PSI memory `some`, µs: the time tasks
waited on reclaim, compaction or refaults), probe latency p50/p99/max per MiB and
throughput (MiB/s), reader throughput (MiB/s).
"""

import argparse
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZRAM = "/sys/block/zram0"
DEV = "/dev/zram0"
MIB = 1 << 20
WSF = "/proc/sys/vm/watermark_scale_factor"
VM_SYSCTLS = ["watermark_scale_factor", "min_free_kbytes", "vfs_cache_pressure"]


def die(msg):
    print(f"vm_reclaim: {msg}", file=sys.stderr)
    sys.exit(1)


def mem_total_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    die("no MemTotal in /proc/meminfo")


def vmstat():
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            out[k] = int(v)
    return out


def psi_some_us():
    """PSI memory `some` total (µs), or None without PSI (Debian boots with psi=0)."""
    try:
        with open("/proc/pressure/memory") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.split("total=")[1])
    except OSError:
        return None
    return None


def read_sysctl(name):
    with open(f"/proc/sys/vm/{name}") as f:
        return f.read().strip()


def write_sysctl(name, value):
    with open(f"/proc/sys/vm/{name}", "w") as f:
        f.write(value)


def swap_active():
    with open("/proc/swaps") as f:
        return len(f.read().splitlines()) > 1


def setup_zram():
    """zram0: the reader's device; a second zram device as swap when there is none.
    Swap makes the allocator's anonymous memory reclaimable, and swapping out costs
    kswapd far more per page than dropping clean cache: that is when it falls behind
    (without swap, kswapd kept ahead of every burst the probe could make here).
    Returns the function that takes down what was set up."""
    undo = []
    if not os.path.exists(ZRAM):
        subprocess.run(["modprobe", "zram", "num_devices=1"], check=True)
        undo.append(lambda: subprocess.run(["rmmod", "zram"], check=False))
    with open(f"{ZRAM}/disksize") as f:
        if int(f.read()) == 0:
            # Sixteen times memory, at least 16 GiB: every pass evicts the whole cache.
            size = max(16 << 30, mem_total_kib() * 1024 * 16)
            with open(f"{ZRAM}/disksize", "w") as w:
                w.write(str(size))
            undo.append(lambda: write_file(f"{ZRAM}/reset", "1"))
    if not swap_active():
        with open("/sys/class/zram-control/hot_add") as f:
            n = f.read().strip()
        write_file(f"/sys/block/zram{n}/disksize", str(4 * mem_total_kib() * 1024))
        undo.append(lambda: write_file("/sys/class/zram-control/hot_remove", n))
        subprocess.run(["mkswap", f"/dev/zram{n}"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["swapon", f"/dev/zram{n}"], check=True)
        undo.append(lambda: subprocess.run(["swapoff", f"/dev/zram{n}"], check=False))

    def take_down():
        for f in reversed(undo):
            try:
                f()
            except OSError as e:
                print(f"vm_reclaim: cleanup: {e}", file=sys.stderr)

    return take_down


def write_file(path, value):
    with open(path, "w") as f:
        f.write(value)


def reader_main():
    """The page-cache reader (a child process): prints MiB read when terminated."""
    total = 0
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    fd = os.open(DEV, os.O_RDONLY)
    size = os.lseek(fd, 0, os.SEEK_END)
    off = 0
    while not stop:
        n = len(os.pread(fd, MIB, off))
        total += n
        off = off + n if n and off + n < size else 0
    print(total // MIB, flush=True)


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def alloc_main(secs, burst_mib, chunk_mib, hold, period):
    """One allocator (a child process): every `period` s it maps `burst_mib` MiB in
    `chunk_mib` MiB mappings populated at mmap time (MAP_POPULATE: the kernel faults
    every page in, so the call's duration is the allocation latency, without one
    emulated page fault per page), holds the last `hold` bursts, unmaps older ones.
    Prints its latencies (ms per MiB) and MiB allocated as JSON."""
    lat, held, written = [], [], 0
    t0 = time.monotonic()
    next_burst = t0
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
    while time.monotonic() - t0 < secs:
        burst = []
        for _ in range(burst_mib // chunk_mib):
            s = time.perf_counter_ns()
            burst.append(mmap.mmap(-1, chunk_mib * MIB, flags=flags))
            lat.append((time.perf_counter_ns() - s) / 1e6 / chunk_mib)
            written += chunk_mib
        held.append(burst)
        if len(held) > hold:
            for m in held.pop(0):
                m.close()
        next_burst += period
        pause = next_burst - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_burst = time.monotonic()
    print(json.dumps({"lat": lat, "mib": written, "secs": time.monotonic() - t0}), flush=True)


TRACEFS = "/sys/kernel/tracing"
INSTANCE = f"{TRACEFS}/instances/bpftune-vm-reclaim"
TRACE_EVENTS = ["mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end"]
TRACE_LINE = re.compile(r"-(\d+)\s+\[\d+\].*?\s(\d+\.\d+): (mm_vmscan_direct_reclaim_(?:begin|end)):")


VM_TRACEPOINTS = [
    "vmscan/mm_vmscan_direct_reclaim_begin", "vmscan/mm_vmscan_direct_reclaim_end",
    "vmscan/mm_vmscan_kswapd_wake", "vmscan/mm_vmscan_kswapd_sleep", "kmem/mm_page_alloc_extfrag",
]


def keep_tracepoints_enabled():
    """Enables the vm tuner's tracepoints in a tracefs instance that records nothing
    (tracing_on 0); returns the function that removes it."""
    inst = f"{TRACEFS}/instances/bpftune-vm-reclaim-keys"
    try:
        os.makedirs(inst, exist_ok=True)
        write_file(f"{inst}/tracing_on", "0")
        for tp in VM_TRACEPOINTS:
            write_file(f"{inst}/events/{tp}/enable", "1")
    except OSError as e:
        print(f"vm_reclaim: tracepoints not kept enabled ({e})", file=sys.stderr)

    def remove():
        try:
            for tp in VM_TRACEPOINTS:
                write_file(f"{inst}/events/{tp}/enable", "0")
            os.rmdir(inst)
        except OSError:
            pass

    return remove


def trace_start():
    """A private tracefs instance recording direct-reclaim begin/end (the kernel's own
    record of each stall, independent of bpftune); None without tracefs."""
    if not os.path.isdir(TRACEFS):
        return None
    try:
        os.makedirs(INSTANCE, exist_ok=True)
        with open(f"{INSTANCE}/buffer_size_kb", "w") as f:
            f.write("8192")
        for ev in TRACE_EVENTS:
            with open(f"{INSTANCE}/events/vmscan/{ev}/enable", "w") as f:
                f.write("1")
        with open(f"{INSTANCE}/trace", "w") as f:
            f.write("")
        return INSTANCE
    except OSError as e:
        print(f"vm_reclaim: no direct-reclaim trace ({e})", file=sys.stderr)
        return None


def trace_stop(inst):
    """(stalls, total ms) from the instance's buffer; the instance is removed."""
    if inst is None:
        return None, None
    for ev in TRACE_EVENTS:
        with open(f"{inst}/events/vmscan/{ev}/enable", "w") as f:
            f.write("0")
    begun, n, total = {}, 0, 0.0
    with open(f"{inst}/trace") as f:
        for line in f:
            m = TRACE_LINE.search(line)
            if not m:
                continue
            pid, ts, ev = m.group(1), float(m.group(2)), m.group(3)
            if ev.endswith("begin"):
                begun[pid] = ts
            elif pid in begun:
                total += ts - begun.pop(pid)
                n += 1
    os.rmdir(inst)
    return n, round(total * 1000, 1)


# The allocators' shape (per allocator; `load --burst/--hold/--period` override):
# - bursty (the default): a burst of 5 % of memory each second, the last 6 held
#   (together 60 % of memory; the page-cache reader fills the rest, so free memory
#   sits at the watermarks): a service allocating in bursts with idle time between. Here the watermark gap decides whether a burst finds free
#   memory kswapd reclaimed ahead of it (1 GiB guest: 1634 ms of direct-reclaim
#   stall at watermark_scale_factor 10 against 109 ms at 200, 2 × 2 × 15 s).
# - churn: bursts four times a second, the last 4 held (together 80 % of memory):
#   continuous reclaim at the rate kswapd can swap out, where a head start changes
#   little (0.67–1.12 of the stall time at 200 against 10) but stalls are certain
#   (the guest test's load).
PROFILES = {
    "bursty": {"share": 0.05, "hold": 6, "period": 1.0},
    "churn": {"share": None, "hold": 4, "period": 0.25},
}
LOAD_KW = {}


def shape(profile, allocators=2, burst_mib=None, chunk_mib=8, hold=None, period=None):
    """load() keyword arguments for a profile, with explicit values overriding it."""
    p = PROFILES[profile]
    hold = hold or p["hold"]
    if not burst_mib:
        mem_mib = mem_total_kib() // 1024
        # churn: the bursts held come to 80 % of memory.
        mib = int(mem_mib * p["share"]) if p["share"] else mem_mib * 8 // 10 // (allocators * hold)
        burst_mib = max(chunk_mib, mib // chunk_mib * chunk_mib)
    return dict(allocators=allocators, burst_mib=burst_mib, chunk_mib=chunk_mib, hold=hold,
                period=period or p["period"])


def load(secs, **kw):
    """Both loads for `secs` (zram set up: setup_zram); the figures of that interval.
    `kw`: the allocators' shape (`shape`; the module's LOAD_KW when not given)."""
    kw = {**LOAD_KW, **kw}
    allocators, burst_mib, chunk_mib = kw["allocators"], kw["burst_mib"], kw["chunk_mib"]
    hold, period = kw["hold"], kw["period"]
    me = [sys.executable, os.path.abspath(__file__)]
    children = [subprocess.Popen(me + ["reader"], stdout=subprocess.PIPE, text=True)]
    inst = trace_start()
    try:
        v0, p0, t0 = vmstat(), psi_some_us(), time.monotonic()
        args = ["alloc", str(secs), str(burst_mib), str(chunk_mib), str(hold), str(period)]
        for _ in range(allocators):
            children.append(subprocess.Popen(me + args, stdout=subprocess.PIPE, text=True))
        lat, mib_s = [], 0.0
        for a in children[1:]:
            out, _ = a.communicate(timeout=secs + 120)
            r = json.loads(out)
            lat += r["lat"]
            mib_s += r["mib"] / r["secs"]
        elapsed = time.monotonic() - t0
        v1, p1 = vmstat(), psi_some_us()
        stalls, stall_ms = trace_stop(inst)
        inst = None
        children[0].terminate()
        out, _ = children[0].communicate(timeout=30)
    finally:
        # Also on SIGTERM (a test stopping the load) or an error: no child outlives it.
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
        if inst is not None:
            trace_stop(inst)
    d = lambda k: v1.get(k, 0) - v0.get(k, 0)  # noqa: E731
    return {
        "secs": round(elapsed, 1),
        "direct_reclaim_ms": stall_ms,
        "direct_reclaims": stalls,
        "allocstall": sum(v1[k] - v0.get(k, 0) for k in v1 if k.startswith("allocstall_")),
        "pgscan_direct": d("pgscan_direct"),
        "pgscan_kswapd": d("pgscan_kswapd"),
        "pswpout": d("pswpout"),
        "psi_some_us": None if p0 is None or p1 is None else p1 - p0,
        "probe_p50_ms": round(percentile(lat, 0.50), 3),
        "probe_p99_ms": round(percentile(lat, 0.99), 3),
        "probe_max_ms": round(max(lat, default=0.0), 3),
        "probe_mib_s": round(mib_s, 1),
        "reader_mib_s": round(int(out.strip() or 0) / elapsed, 1),
    }


class Daemon:
    """bpftune -a vm in the foreground, its log kept for the checks, its metrics
    written to a file at exit (the BPF run time of its programs)."""

    def __init__(self, bpftune, *flags):
        self.log = []
        self.metrics = f"/tmp/vm_reclaim-metrics-{os.getpid()}.prom"
        self.p = subprocess.Popen(
            [bpftune, "-s", "-a", "vm", "--metrics-textfile", self.metrics, *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            die("daemon did not start:\n" + "".join(self.log))

    def _pump(self):
        for line in self.p.stderr:
            self.log.append(line)
            if "started" in line or "ready" in line:
                self.ready.set()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return self.p.returncode

    def bpf_run_ns(self):
        """{program: run time ns} of the vm tuner's programs, from the metrics file
        written at exit (run time counts only while kernel.bpf_stats_enabled is 1)."""
        out = {}
        try:
            with open(self.metrics) as f:
                for line in f:
                    m = re.match(r'bpftune_bpf_run_time_seconds_total\{(.*)\} (\S+)', line)
                    if m and 'tuner="vm"' in m.group(1):
                        prog = re.search(r'program="([^"]*)"', m.group(1))
                        out[prog.group(1) if prog else "?"] = float(m.group(2)) * 1e9
            os.unlink(self.metrics)
        except OSError:
            pass
        return out

    def lines(self, word):
        return [ln.rstrip() for ln in self.log if word in ln]


def ratio(a, b):
    if a is None or b is None:
        return None
    return round(a / b, 3) if b else (1.0 if a == 0 else float("inf"))


def learn_while_tuning(secs):
    """The load runs for `secs` while the tuning daemon raises the watermark gap;
    returns the value it reached."""
    stop = threading.Event()
    th = threading.Thread(target=lambda: [load(10) for _ in iter(stop.is_set, True)], daemon=True)
    th.start()
    time.sleep(secs)
    stop.set()
    th.join()
    return read_sysctl("watermark_scale_factor")


def mean_phase(a, b):
    return {k: (None if a[k] is None or b[k] is None else (a[k] + b[k]) / 2) for k in a}


def alternate(name, values, pairs, seg, **load_kw):
    """`pairs` pairs of `seg`-s loads at values[0] (A) and values[1] (B), in the order
    AB BA AB ...; each segment's figures, the value it ran at."""
    segs = []
    for i in range(pairs):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            write_sysctl(name, values[which])
            r = load(seg, **load_kw)
            r["value"] = values[which]
            print(f"vm_reclaim: {name} {values[which]}: {r['direct_reclaim_ms']} ms in direct reclaim", flush=True)
            segs.append(r)
    return segs


def sum_segments(segs, value):
    keys = ("direct_reclaim_ms", "allocstall", "pgscan_direct", "psi_some_us", "secs")
    mine = [r for r in segs if r["value"] == value]
    out = {k: sum(r[k] or 0 for r in mine) for k in keys}
    # Throughputs and latencies: the mean over the segments.
    for k in ("probe_p99_ms", "probe_mib_s", "reader_mib_s"):
        out[k] = sum(r[k] for r in mine) / len(mine) if mine else None
    return out


def lever(values, pairs, seg, **load_kw):
    """The lever by hand: `watermark_scale_factor` at values[0] against values[1] in
    ABBA-ordered pairs (no daemon); the sums and their ratio."""
    found = read_sysctl("watermark_scale_factor")
    # As in `bench`: no static key flips between segments (an emulated guest oopsed on
    # a stale int3 when the tracing instance was enabled and disabled per segment).
    keys_on = keep_tracepoints_enabled()
    try:
        load(10, **load_kw)
        segs = alternate("watermark_scale_factor", [str(v) for v in values], pairs, seg, **load_kw)
    finally:
        write_sysctl("watermark_scale_factor", found)
        keys_on()
    a, b = sum_segments(segs, str(values[0])), sum_segments(segs, str(values[1]))
    return {
        "load": {k: v for k, v in load_kw.items()},
        "values": values,
        "segment_secs": seg,
        "segments": [{k: r[k] for k in ("value", "direct_reclaim_ms", "allocstall", "probe_mib_s")} for r in segs],
        "ratios": {k: ratio(b[k], a[k]) for k in ("direct_reclaim_ms", "allocstall", "pgscan_direct",
                                                   "probe_p99_ms", "probe_mib_s", "reader_mib_s")},
    }


def bench(bpftune, secs, learn, pairs=0, seg=20, warm=10):
    """Untuned (A), tuned (B), untuned again (A): the load drifts over minutes (swap
    and cache state), so B is compared with the mean of the A before and after it.
    Then `pairs` ABBA-ordered pairs of the value the daemon reached against the
    value found (see `alternate`)."""
    found = {n: read_sysctl(n) for n in VM_SYSCTLS}
    # The vm tracepoints stay enabled (a tracefs instance that records nothing) and BPF
    # run-time statistics stay on for the whole run, so that no daemon start or stop
    # flips a static key: patching kernel text while both vCPUs run is what a
    # multi-threaded emulated guest got wrong (an int3 oops) under this load.
    keys_on = keep_tracepoints_enabled()
    write_file("/proc/sys/kernel/bpf_stats_enabled", "1")
    try:
        print(f"vm_reclaim: warm-up {warm} s (fill the page cache)", flush=True)
        load(warm)
        d = Daemon(bpftune, "--observe")
        print(f"vm_reclaim: untuned {secs} s (daemon --observe)", flush=True)
        untuned1 = load(secs)
        d.stop()
        would = d.lines("would change")
        if read_sysctl("watermark_scale_factor") != found["watermark_scale_factor"]:
            die("the observing daemon wrote vm.watermark_scale_factor")
        d = Daemon(bpftune, "-R")
        tuning_started = time.monotonic()
        print(f"vm_reclaim: learning {learn} s (daemon tuning)", flush=True)
        tuned_wsf = learn_while_tuning(learn)
        print(f"vm_reclaim: tuned {secs} s (watermark_scale_factor {tuned_wsf} after {learn} s)", flush=True)
        tuned = load(secs)
        changes = d.lines("change vm.")
        rc = d.stop()
        tuning_secs = time.monotonic() - tuning_started
        bpf_ns = d.bpf_run_ns()
        after = {n: read_sysctl(n) for n in VM_SYSCTLS}
        print(f"vm_reclaim: untuned again {secs} s (rolled back: {after == found})", flush=True)
        untuned2 = load(secs)
        wsf = (found["watermark_scale_factor"], tuned_wsf)
        segs = []
        if pairs and wsf[0] != wsf[1]:
            print(f"vm_reclaim: {pairs} pairs of {seg} s, watermark_scale_factor {wsf[0]} / {wsf[1]}", flush=True)
            segs = alternate("watermark_scale_factor", wsf, pairs, seg)
    finally:
        for n, v in found.items():
            if read_sysctl(n) != v:
                write_sysctl(n, v)
        write_file("/proc/sys/kernel/bpf_stats_enabled", "0")
        keys_on()
    untuned = mean_phase(untuned1, untuned2)
    alt_a, alt_b = sum_segments(segs, wsf[0]), sum_segments(segs, wsf[1])
    return {
        "mem_total_kib": mem_total_kib(),
        "found": found,
        "learning_secs": learn,
        "tuned_watermark_scale_factor": tuned_wsf,
        "observe_would_change": len(would),
        "daemon_exit": rc,
        "rolled_back": after == found,
        "untuned_before": untuned1,
        "tuned": tuned,
        "untuned_after": untuned2,
        "ratios_tuned_to_untuned_mean": {
            k: ratio(tuned[k], untuned[k])
            for k in (
                "direct_reclaim_ms", "allocstall", "pgscan_direct", "psi_some_us",
                "probe_p99_ms", "probe_mib_s", "reader_mib_s",
            )
        },
        "bpf_run_ms_tuning_daemon": {k: round(v / 1e6, 2) for k, v in bpf_ns.items()},
        "tuning_daemon_secs": round(tuning_secs, 1),
        "bpf_pct_of_a_core": round(sum(bpf_ns.values()) / (tuning_secs * 1e9) * 100, 4),
        "changes": changes,
        "alternation": {
            "values": {"untuned": wsf[0], "tuned": wsf[1]},
            "segment_secs": seg,
            "segments": [{k: r[k] for k in ("value", "direct_reclaim_ms", "probe_mib_s")} for r in segs],
            "untuned": alt_a,
            "tuned": alt_b,
        } if segs else None,
        "ratios_alternation": {
            k: ratio(alt_b[k], alt_a[k])
            for k in ("direct_reclaim_ms", "allocstall", "pgscan_direct", "psi_some_us",
                      "probe_p99_ms", "probe_mib_s", "reader_mib_s")
        } if segs else None,
    }


def guest(args):
    """Host side: run `bench` in a qemu guest with little memory."""
    bpftune = os.path.abspath(args.bpftune)
    if not os.access(bpftune, os.X_OK):
        die(f"{bpftune} missing: cargo build --release first")
    out = os.path.join(REPO, "target/kernel-matrix/vm-reclaim")
    env = dict(os.environ, BPFTUNE_KM_MEM=args.mem, BPFTUNE_KM_APPEND="psi=1", BPFTUNE_KM_TCG_THREAD=args.tcg_thread)
    cmd = [
        os.path.join(REPO, "scripts/kernel-matrix.sh"), "--kernel", args.kernel, "--out", out, "--quiet",
        "--timeout", str(600 + 4 * args.secs + args.learn + 2 * args.pairs * (args.seg + 10)),
        # The result goes to the guest's output share, which it knows as $KM_OUT.
        "--", "sh", "-c", 'exec "$@" --json "$KM_OUT/result.json"', "sh",
        sys.executable, os.path.abspath(__file__), "bench", "--bpftune", bpftune,
        "--secs", str(args.secs), "--learn", str(args.learn),
        "--pairs", str(args.pairs), "--seg", str(args.seg), "--profile", args.profile,
    ]
    rc = subprocess.run(cmd, env=env).returncode
    try:
        with open(os.path.join(out, args.kernel, "output.log")) as f:
            sys.stdout.write(f.read())
    except OSError as e:
        print(f"vm_reclaim: no guest output ({e}); see {out}/{args.kernel}/console.log", file=sys.stderr)
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("reader")
    ap_alloc = sub.add_parser("alloc")
    for a in ("secs", "burst_mib", "chunk_mib", "hold"):
        ap_alloc.add_argument(a, type=int)
    ap_alloc.add_argument("period", type=float)
    lp = sub.add_parser("load")
    lp.add_argument("--secs", type=int, default=30)
    lp.add_argument("--json")
    lp.add_argument("--allocators", type=int, default=2)
    lp.add_argument("--burst", type=int, help="MiB per burst (default: the profile's)")
    lp.add_argument("--chunk", type=int, default=8, help="MiB per mapping")
    lp.add_argument("--hold", type=int, help="bursts held (default: the profile's)")
    lp.add_argument("--period", type=float, help="s between bursts (default: the profile's)")
    vp = sub.add_parser("lever")
    vp.add_argument("--values", default="10,200", help="the two watermark_scale_factor values")
    vp.add_argument("--pairs", type=int, default=2)
    vp.add_argument("--seg", type=int, default=15)
    vp.add_argument("--json")
    vp.add_argument("--allocators", type=int, default=2)
    vp.add_argument("--burst", type=int, help="as for load")
    vp.add_argument("--chunk", type=int, default=8)
    vp.add_argument("--hold", type=int)
    vp.add_argument("--period", type=float)
    bp = sub.add_parser("bench")
    bp.add_argument("--bpftune", required=True)
    bp.add_argument("--secs", type=int, default=60)
    bp.add_argument("--learn", type=int, default=300)
    bp.add_argument("--pairs", type=int, default=4, help="AB pairs of the learned value against the one found")
    bp.add_argument("--seg", type=int, default=20, help="s per segment of a pair")
    bp.add_argument("--json")
    gp = sub.add_parser("guest")
    gp.add_argument("--kernel", default="6.12")
    gp.add_argument("--mem", default="1G")
    gp.add_argument("--tcg-thread", default="multi", choices=["multi", "single"],
                    help="qemu TCG threads: multi (one per vCPU, as on real hardware: kswapd runs beside "
                         "the allocators) or single")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    gp.add_argument("--bpftune", default=os.path.join(target, "release/bpftune"))
    gp.add_argument("--secs", type=int, default=60)
    gp.add_argument("--learn", type=int, default=300)
    gp.add_argument("--pairs", type=int, default=4)
    gp.add_argument("--seg", type=int, default=20)
    for sp in (lp, vp, bp, gp):
        sp.add_argument("--profile", default="bursty", choices=sorted(PROFILES),
                        help="the allocators' shape (default bursty; see PROFILES)")
    args = ap.parse_args()
    if args.cmd == "reader":
        return reader_main()
    if args.cmd == "alloc":
        return alloc_main(args.secs, args.burst_mib, args.chunk_mib, args.hold, args.period)
    if args.cmd == "guest":
        return guest(args)
    if os.geteuid() != 0:
        die("needs root")
    if mem_total_kib() > 4 << 20:
        die("more than 4 GiB of memory: run it in a small guest (vm_reclaim.py guest), not on a real host")
    # SIGTERM (a test stopping the load) unwinds: children stopped, zram taken down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    take_down = setup_zram()
    try:
        if args.cmd in ("load", "lever"):
            kw = shape(args.profile, args.allocators, args.burst, args.chunk, args.hold, args.period)
        else:
            kw = shape(args.profile)
        LOAD_KW.update(kw)
        print(f"vm_reclaim: profile {args.profile}: {kw}", file=sys.stderr, flush=True)
        if args.cmd == "load":
            result = load(args.secs)
        elif args.cmd == "lever":
            result = lever([int(v) for v in args.values.split(",")], args.pairs, args.seg, **kw)
            result["profile"] = args.profile
        else:
            result = bench(args.bpftune, args.secs, args.learn, args.pairs, args.seg)
            result["profile"] = {"name": args.profile, **kw}
    finally:
        take_down()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

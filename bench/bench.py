#!/usr/bin/env python3
"""bpftune benchmark suite (python3 stdlib only; run through bench/run.sh, as root).

Benchmarks (see BENCHMARKS.md for what each figure means and the targets):

  startup   process spawn -> "bpftune started: tuners ... attached" on stderr
  idle      daemon CPU and wake-ups per second with no traffic
  metrics   the idle figures without and with --metrics-listen (scraped every 15 s), as ratios
  overhead  loopback iperf3 throughput with the daemon running / without (alternating
            pairs, fresh namespace per run), daemon CPU per second of traffic, RSS
  reaction  kernel limiting event -> sysctl write, from the daemon's change records,
            for the tcp_rmem and tcp_wmem scenarios on the 40 ms delay line
  outcome   throughput of new 2 s connections after the daemon starts, as a fraction
            of the well-tuned (16 MB) throughput measured in the same run; time to
            90 % and 95 %
  congestion  tcp_conn on the 40 ms delay line with 1 % and 0 % loss: new connections
            with the learner's choice / cubic (interleaved), after a warm-up
  drop-hooks  BPF run time per program (ns per call, % of a core) of a daemon with only
            some tuners (default udp_buffer, ip_frag, sysctl) under loads that fire them
            (default tcp-lo, udp-noport, udp-rcvbuf, frag-full; also udp-lo), from the
            daemon's own bpftune_bpf_run_time_seconds metrics; --load, --tuner, --secs

Every figure is measured in the same run as its baseline; the headline is the median
over >= 5 trials (1 in --smoke) with min and max. Missed targets never change the
exit status: it is non-zero only when a benchmark could not run at all.

One harness with the tests: every daemon is started, watched and stopped by
`bpftune-testbed daemon` (testbed/src/daemon.rs, the harness the Rust integration tests
use through tests/common), namespaces and the delay line come from `bpftune-testbed`
too; this file only measures.

Hygiene: every daemon runs with -R (rolls back what it changed) and private
BPFTUNE_RUN_DIR/BPFTUNE_STATE_DIR/cgroup directories; per-namespace sysctls are only
written while no daemon of ours runs (a write while it runs hands the namespace to the
administrator); only our own uniquely named namespaces carry traffic; an init_net sysctl
our daemon changed and that still holds its value after the daemon stopped is restored
(with a warning; --restore-globals) -- values other processes set are never touched;
everything we start is stopped on exit, error, Ctrl-C or SIGTERM.

Shared hosts: HostWatch flags measurements during which another bpftune daemon ran or
a global TCP memory/buffer limit was lowered by another process (e.g. a concurrent
`cargo test`); such throughput runs are repeated within a time budget, else flagged,
and the final table marks the benchmarks affected with '*'.
"""

import argparse
import json
import os
import platform
import queue
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(os.environ.get("BPFTUNE_BENCH_BIN_DIR", ROOT / "target" / "release"))
BPFTUNE = BIN_DIR / "bpftune"
TESTBED = BIN_DIR / "bpftune-testbed"
PREFIX = "bnch"  # testbed namespace prefix (names carry our pid)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20

RMEM_LIMITED = "4096 131072 1310720"
WMEM_LIMITED = "4096 16384 1048576"
RMEM_TUNED = "4096 131072 16777216"
WMEM_TUNED = "4096 16384 16777216"
WMEM_SENDER_BIG = "4096 16384 33554432"
OVERHEAD_BUF_MAX = 1 << 28  # loopback never gets near it: nothing for the daemon to change

class BenchError(Exception):
    """A benchmark could not run (as opposed to: it ran and missed its target)."""


def log(msg=""):
    print(msg, flush=True)


def warn(msg):
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def fmt_bps(bps):
    return f"{bps / 1e9:.2f} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.0f} Mbit/s"


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# --------------------------------------------------------------------------- cleanup

class Registry:
    """Everything we started, so that it can be stopped on any exit path."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []  # objects with .close()

    def add(self, obj):
        with self.lock:
            self.items.append(obj)
        return obj

    def remove(self, obj):
        with self.lock:
            if obj in self.items:
                self.items.remove(obj)

    def close_all(self):
        while True:
            with self.lock:
                if not self.items:
                    return
                obj = self.items.pop()
            try:
                obj.close()
            except Exception as e:  # keep cleaning up
                warn(f"cleanup of {obj!r} failed: {e}")


REG = Registry()


class HostWatch:
    """Notices what other processes on the host do that would distort our figures: a
    global TCP memory/buffer limit lowered below its value at bench start (e.g. a tcp_mem
    pressure test), another bpftune daemon running (it would tune our namespaces), or a
    compiler running (it takes the CPU the traffic needs)."""

    LIMITS = ["net.ipv4.tcp_mem", "net.core.rmem_max", "net.core.wmem_max"]
    # Compilers eat the CPU that loopback iperf3 and the delay line need.
    BUILDERS = {"rustc", "cargo", "cc1", "cc1plus", "clang", "ld", "ld.lld", "cc"}

    def __init__(self):
        self.base = {n: self._ints(read_global(n)) for n in self.LIMITS}
        self.events = []  # (monotonic ns, [reasons])
        self.seen = set()
        self.retry_budget = 0.0  # seconds we may spend re-measuring (set by main)
        self.daemon_wait_budget = 0.0  # seconds we may wait for other daemons to go
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _ints(v):
        try:
            return [int(x) for x in (v or "").split()]
        except ValueError:
            return []

    def check(self):
        reasons = []
        for n, base in self.base.items():
            cur = self._ints(read_global(n))
            if cur and base and any(c < b for c, b in zip(cur, base)):
                reasons.append(f"global {n} lowered to {' '.join(map(str, cur))} by another process")
        builds = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm in self.BUILDERS:
                builds.add(comm)
        for d in other_daemons():
            reasons.append(f"another bpftune daemon (pid {d['pid']}) is running")
        if builds:
            reasons.append(f"a build is running ({', '.join(sorted(builds))})")
        return reasons

    def _loop(self):
        while not self.stop_ev.wait(1.0):
            r = self.check()
            if r:
                self.events.append((now_ns(), r))
                self.seen.update(r)

    def disturbed(self, t0, t1):
        r = set(self.check())
        for t, rs in self.events:
            if t0 - 1_100_000_000 <= t <= t1 + 100_000_000:
                r.update(rs)
        self.seen.update(r)
        return sorted(r)

    def wait_quiet(self, timeout=30):
        """Wait (within the run's retry budget) until nothing disturbs the host."""
        t0 = time.monotonic()
        end = t0 + min(timeout, self.retry_budget)
        while self.check() and time.monotonic() < end:
            time.sleep(0.5)
        self.retry_budget -= time.monotonic() - t0 + 3  # + the repeated measurement

    def summary(self):
        """self.seen condensed: one line per kind of disturbance."""
        daemons = sorted({re.search(r"pid (\d+)", r).group(1) for r in self.seen if "daemon" in r})
        lowered = {}
        for r in self.seen:
            m = re.match(r"global (\S+) lowered to (.*) by", r)
            if m:
                lowered.setdefault(m.group(1), []).append(m.group(2))
        out = []
        if daemons:
            out.append(f"{len(daemons)} other bpftune daemon(s) ran (pids {', '.join(daemons[:6])}"
                       f"{', ...' if len(daemons) > 6 else ''}) -- e.g. a concurrent `cargo test`")
        builds = sorted({r for r in self.seen if r.startswith("a build")})
        if builds:
            out.append("; ".join(builds))
        for name, vals in sorted(lowered.items()):
            lowest = min(vals, key=lambda v: [int(x) for x in v.split()])
            out.append(f"global {name} was lowered by another process {len(vals)} time(s) "
                       f"(lowest {lowest!r}, bench start {' '.join(map(str, self.base[name]))!r})")
        return out

    def close(self):
        self.stop_ev.set()


WATCH = None  # HostWatch, set in main()


def other_daemons():
    """bpftune daemons not started by this bench (clients such as `bpftune -q` do not
    count): the tests' definition, from `bpftune-testbed daemons`."""
    if not os.access(TESTBED, os.X_OK):
        return []
    try:
        r = subprocess.run([str(TESTBED), "daemons", "--not-under", str(os.getpid())],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def kill_proc(p, term_timeout=10.0, sig=signal.SIGTERM):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=term_timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
    except ProcessLookupError:
        pass


SETPRIV = shutil.which("setpriv")


def guarded(cmd):
    """cmd, run so that it gets SIGTERM if the bench dies without cleaning up (SIGKILL):
    a daemon then rolls back, a testbed tears its topology down, iperf3 exits."""
    cmd = [str(c) for c in cmd]
    return [SETPRIV, "--pdeathsig", "TERM", *cmd] if SETPRIV else cmd


def run(cmd, timeout=30, check=True):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r


# --------------------------------------------------------------------------- sysctls

def sysctl_path(name):
    return Path("/proc/sys") / name.replace(".", "/")


def read_global(name):
    try:
        return " ".join(sysctl_path(name).read_text().split())
    except OSError:
        return None


def ns_exec(ns, *cmd):
    return ["ip", "netns", "exec", ns, *map(str, cmd)]


def ns_sysctl_set(ns, name, value):
    run(ns_exec(ns, "sysctl", "-q", "-w", f"{name}={value}"))
    got = " ".join(run(ns_exec(ns, "sysctl", "-n", name)).stdout.split())
    if got != " ".join(value.split()):
        raise BenchError(f"{ns}: {name} reads {got!r} after writing {value!r}")


def ns_sysctl_get(ns, name):
    return " ".join(run(ns_exec(ns, "sysctl", "-n", name)).stdout.split())


# --------------------------------------------------------------------------- /proc

def proc_cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    s = Path(f"/proc/{pid}/stat").read_text()
    rest = s[s.rfind(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def proc_threads(pid):
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def proc_sched_ns(pid):
    """Per-thread on-CPU ns from schedstat (finer than clock ticks): {tid: ns}."""
    out = {}
    for tid in proc_threads(pid):
        try:
            out[tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def proc_ctxsw(pid):
    """Per-thread (voluntary, nonvoluntary) context switches: {tid: (v, n)}."""
    out = {}
    for tid in proc_threads(pid):
        try:
            txt = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        v = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", txt, re.M).group(1))
        n = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", txt, re.M).group(1))
        out[tid] = (v, n)
    return out


def per_thread_delta(a, b):
    """Sum of per-thread increases; threads born in between count from 0."""
    total = 0
    for tid, vb in b.items():
        va = a.get(tid)
        if isinstance(vb, tuple):
            total += sum(vb) - (sum(va) if va else 0)
        else:
            total += vb - (va or 0)
    return total


def proc_status_kib(pid, field):
    txt = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", txt, re.M)
    return int(m.group(1)) if m else None


class ProcSample:
    """CPU/ctx-switch counters of a process at one instant."""

    def __init__(self, pid):
        self.t = now_ns()
        self.ticks = proc_cpu_ticks(pid)
        self.sched = proc_sched_ns(pid)
        self.ctx = proc_ctxsw(pid)

    def until(self, later):
        secs = (later.t - self.t) / 1e9
        return {
            "secs": secs,
            "ticks": later.ticks - self.ticks,
            "cpu_pct": 100.0 * (later.ticks - self.ticks) / CLK_TCK / secs,
            "cpu_pct_sched": 100.0 * per_thread_delta(self.sched, later.sched) / 1e9 / secs,
            "wakeups_per_s": per_thread_delta(self.ctx, later.ctx) / secs,
            "voluntary_per_s": sum(v[0] - self.ctx.get(t, (0, 0))[0] for t, v in later.ctx.items()) / secs,
        }


# --------------------------------------------------------------------------- daemon

class Daemon:
    """One bpftune daemon (-s -R), run by `bpftune-testbed daemon`: the harness of the
    Rust integration tests (testbed/src/daemon.rs: private run/state/cgroup directories,
    wait for other daemons, readiness, CLOCK_MONOTONIC-stamped log, queries, stop, mount
    cleanup, restore of global sysctls it left changed), driven over JSON lines
    (testbed/src/supervise.rs)."""

    READY = re.compile(r"bpftune started: tuners (.*?) attached in (\d+) ms")

    def __init__(self, label="bpftune", extra_args=(), bpf_stats=False):
        self.label = label
        self.lines = []  # (monotonic ns, line)
        self.ready = threading.Event()
        self.spawned = threading.Event()
        self.done = threading.Event()
        self.ready_ns = self.attach_ms = self.tuners = None
        self.pid = self.spawn_ns = None
        self.exited = None
        self.error = None
        self.replies = queue.Queue()
        self.qlock = threading.Lock()
        # Our daemon tunes the whole host: do not start it next to another one (it would
        # tune the other's test namespaces, and the other ours); the harness waits.
        budget = WATCH.daemon_wait_budget if WATCH is not None else 0.0
        REG.add(self)
        self.proc = subprocess.Popen(
            guarded([TESTBED, "daemon", "--bpftune", BPFTUNE, "--no-debug", "--restore-globals",
                     "--tag", "bench", "--wait-others-s", f"{budget:.1f}",
                     *(["--bpf-stats"] if bpf_stats else []), "--", "-R", *extra_args]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.spawned.wait(budget + 30)
        if self.pid is None:
            self.close()
            raise BenchError(f"bpftune-testbed daemon could not start bpftune: {self.error or 'no answer'}")
        if WATCH is not None:
            WATCH.daemon_wait_budget = max(0.0, budget - self.waited_ms / 1000)

    def __repr__(self):
        return f"<Daemon {self.label} pid={self.pid} (harness {self.proc.pid})>"

    def _read(self):
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                warn(f"{self.label}: bpftune-testbed said {raw.strip()!r}")
                continue
            kind = ev.get("event")
            if kind == "log":
                self.lines.append((ev["t_ns"], ev["line"]))
                if ev.get("ready"):
                    m = self.READY.search(ev["line"])
                    if m:
                        self.tuners, self.attach_ms = m.group(1), int(m.group(2))
                    self.ready_ns = ev["t_ns"]
                    self.ready.set()
            elif kind == "spawned":
                self.pid, self.spawn_ns, self.waited_ms = ev["pid"], ev["spawn_ns"], ev["waited_ms"]
                self.spawned.set()
            elif kind == "reply":
                self.replies.put(ev)
            elif kind == "exited":
                self.exited = ev
            elif kind == "error":
                self.error = ev.get("message")
        self.spawned.set()
        self.done.set()

    def tail(self, n=15):
        return "\n".join(f"    {l}" for _, l in self.lines[-n:])

    def _status(self):
        ex = self.exited or {}
        return f"signal {ex['signal']}" if ex.get("signal") else f"exit code {ex.get('code')}"

    def wait_ready(self, timeout=20.0):
        end = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.done.is_set():
                raise BenchError(f"bpftune exited ({self._status()}) before it was ready:\n{self.tail()}")
            if time.monotonic() > end:
                raise BenchError(f"bpftune not ready after {timeout:.0f} s:\n{self.tail()}")
        return self

    def _request(self, cmd, what, timeout):
        """Sends a command to the harness and returns its reply event."""
        with self.qlock:
            if self.done.is_set():
                raise BenchError(f"{what}: the daemon is gone ({self._status()})")
            try:
                self.proc.stdin.write(cmd + "\n")
                self.proc.stdin.flush()
            except OSError as e:
                raise BenchError(f"{what}: {e}")
            end = time.monotonic() + timeout
            while True:
                try:
                    r = self.replies.get(timeout=max(0.01, end - time.monotonic()))
                except queue.Empty:
                    raise BenchError(f"{what}: no reply within {timeout} s")
                if r.get("cmd") == cmd:
                    break
        if r["code"] != 0:
            raise BenchError(f"{what} failed ({r['code']}): {r['stderr'].strip()}")
        return r

    def query(self, what, timeout=10):
        return self._request(f"query {what}", f"bpftune -q {what}", timeout)["stdout"]

    def bpf_stats(self, timeout=15):
        """(CLOCK_MONOTONIC ns, {(tuner, program): (run_cnt, run_time_ns)}): the BPF run
        time the daemon exports in its own metrics (needs Daemon(..., bpf_stats=True):
        the harness turned run-time accounting on and passed --metrics-listen)."""
        r = self._request("bpfstats", "bpfstats (daemon metrics)", timeout)
        return r["t_ns"], {(p["tuner"], p["program"]): (p["run_cnt"], p["run_time_ns"]) for p in r["progs"]}

    def changes(self):
        out = self.query("jchanges").strip()
        try:
            return json.loads(out) if out else []
        except json.JSONDecodeError as e:
            raise BenchError(f"bpftune -q jchanges: not JSON ({e}): {out[:300]!r}")

    def close(self):
        """Stop: SIGTERM (15 s, then SIGKILL), restore of globals it left, cleanup; the
        harness warns on stderr about anything it had to restore."""
        REG.remove(self)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_proc(self.proc)
        self.reader.join(3)
        ex = self.exited
        if self.pid is not None and (ex is None or ex.get("code") not in (0, None)
                                     or ex.get("signal") not in (None, signal.SIGTERM)):
            warn(f"{self.label} exited with {self._status() if ex else 'unknown status'}:\n{self.tail(8)}")

    stop = close


# --------------------------------------------------------------------------- topology

class Topology:
    """A testbed topology (delayline/veth) held by a bpftune-testbed process."""

    def __init__(self, kind, *args, key="left"):
        self.kind = kind
        self.stderr = []
        REG.add(self)
        self.proc = subprocess.Popen(
            guarded([TESTBED, kind, *args, "--prefix", PREFIX, "--hold"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain, daemon=True).start()
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if r else ""
        if f"{key}=" not in line:
            self.close()
            time.sleep(0.2)
            raise BenchError(f"bpftune-testbed {kind} did not come up: {line!r} {' '.join(self.stderr)[-500:]}")
        self.kv = dict(f.split("=", 1) for f in line.split())
        if key == "left":
            self.left, self.right = self.kv["left"], self.kv["right"]
            self.left_addr, self.right_addr = self.kv["left_addr"], self.kv["right_addr"]

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    @property
    def stats(self):
        """The forwarder's counters printed at teardown (delay line only)."""
        return next((l.split("stats ", 1)[1] for l in self.stderr if " stats " in l), "")

    def __repr__(self):
        return f"<Topology {self.kind} pid={self.proc.pid}>"

    def close(self):
        REG.remove(self)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_proc(self.proc)
        time.sleep(0.05)  # let the drain thread read the teardown lines


class LoopbackNs(Topology):
    """A fresh network namespace of our own with only lo up (`bpftune-testbed netns`)."""

    def __init__(self):
        super().__init__("netns", key="ns")
        self.name = self.kv["ns"]

    def __repr__(self):
        return f"<netns {self.name}>"


# --------------------------------------------------------------------------- iperf3

class IperfServer:
    def __init__(self, ns, port=5201):
        self.ns, self.port = ns, port
        REG.add(self)
        self.proc = subprocess.Popen(guarded(ns_exec(ns, "iperf3", "-s", "-p", port)),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while True:
            out = run(ns_exec(ns, "ss", "-Hltn", f"sport = :{port}"), check=False).stdout
            if out.strip():
                break
            if self.proc.poll() is not None or time.monotonic() > end:
                self.close()
                raise BenchError(f"iperf3 server in {ns} did not start")
            time.sleep(0.02)

    def __repr__(self):
        return f"<iperf3 -s {self.ns}:{self.port}>"

    def restart(self):
        self.close()
        self.__init__(self.ns, self.port)

    def close(self):
        REG.remove(self)
        kill_proc(self.proc, term_timeout=5)


def iperf_client(ns, addr, port, secs, server=None, guard=True, extra=()):
    """One iperf3 connection; returns dict(start_ns, end_ns, bps, retrans, disturbed).

    guard: if the host was disturbed during the run (see HostWatch), wait for it to be
    quiet and measure again (up to 3 times); otherwise only report it in 'disturbed'."""
    failures = 0
    tries = 0
    while True:
        tries += 1
        t0 = now_ns()
        r = subprocess.run(guarded(ns_exec(ns, "iperf3", "-c", addr, "-p", port, "-t", secs, "-J",
                                           *extra)),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=secs + 30)
        t1 = now_ns()
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            j = {"error": (r.stdout + r.stderr).strip()[-300:] or f"exit {r.returncode}"}
        if "error" in j:
            failures += 1
            warn(f"iperf3 client in {ns}: {j['error']} (attempt {failures})")
            if failures >= 3:
                raise BenchError(f"iperf3 client in {ns} failed 3 times: {j['error']}")
            if server is not None:
                server.restart()
            time.sleep(0.5)
            continue
        res = {"start_ns": t0, "end_ns": t1,
               "bps": float(j["end"]["sum_received"]["bits_per_second"]),
               "retrans": j["end"].get("sum_sent", {}).get("retransmits"),
               "disturbed": WATCH.disturbed(t0, t1) if WATCH else []}
        if res["disturbed"] and guard and tries < 4 and WATCH.retry_budget > 0:
            warn(f"host disturbed during a measurement ({'; '.join(res['disturbed'])}); measuring again")
            WATCH.wait_quiet()
            continue
        if res["disturbed"]:
            warn(f"host disturbed during a measurement ({'; '.join(res['disturbed'])}); kept, flagged")
        return res


def flush_metrics(*namespaces):
    for ns in namespaces:
        run(ns_exec(ns, "ip", "tcp_metrics", "flush", "all"), check=False)


# --------------------------------------------------------------------------- benchmarks

class Ctx:
    def __init__(self, smoke, pairs, trials, opts=None):
        self.smoke = smoke
        self.opts = opts  # the command line (drop-hooks: --load, --tuner, --secs)
        self.pairs = pairs  # alternating without/with pairs (overhead), start-up runs
        self.trials = trials  # outcome trials: ~20 s each
        self.results = {}  # bench -> dict
        self.rows = []  # (figure, value str, min, max, target str, PASS/MISS/INFO, note)

    def row(self, figure, st, unit, target=None, cmp=None, fmt="{:.3f}", note=""):
        """st: stats dict or None; cmp(value) -> bool for PASS."""
        if st is None:
            self.rows.append((figure, "n/a", "", "", target or "", "MISS" if target else "", note))
            return
        f = lambda v: "never" if v == float("inf") else fmt.format(v) + unit
        verdict = ("PASS" if cmp(st["median"]) else "MISS") if cmp else ""
        self.rows.append((figure, f(st["median"]), f(st["min"]), f(st["max"]), target or "",
                          verdict, note))


def bench_startup(ctx):
    log("== startup: process spawn -> 'bpftune started: tuners ... attached'")
    n = ctx.pairs
    walls, attach, exec_base = [], [], []
    for i in range(n):
        # Context: what a bare exec of the same binary costs (bpftune -V).
        t0 = now_ns()
        subprocess.run([str(BPFTUNE), "-V"], capture_output=True, timeout=10)
        exec_base.append((now_ns() - t0) / 1e6)
        d = Daemon(f"startup#{i}")
        try:
            d.wait_ready()
            wall = (d.ready_ns - d.spawn_ns) / 1e6
            walls.append(wall)
            attach.append(d.attach_ms)
            log(f"  run {i + 1}/{n}: spawn->ready {wall:.1f} ms (daemon reports {d.attach_ms} ms; "
                f"tuners: {d.tuners}); bare exec {exec_base[-1]:.1f} ms")
        finally:
            d.stop()
        time.sleep(0.2)
    res = {"wall_ms": stats(walls), "reported_ms": stats(attach), "exec_ms": stats(exec_base),
           "runs": walls}
    ctx.results["startup"] = res
    ctx.row("start-up: spawn -> all tuners attached", res["wall_ms"], " ms", "<= 300 ms",
            lambda v: v <= 300, "{:.0f}", f"daemon-reported {res['reported_ms']['median']:.0f} ms")


def bench_idle(ctx):
    secs = 3 if ctx.smoke else 10
    windows = 3 if ctx.smoke else 5
    log(f"== idle: daemon with no traffic of ours, {secs} s in {windows} windows")
    d = Daemon("idle")
    try:
        d.wait_ready()
        time.sleep(1.0)  # let start-up work (netns scan, first tick) settle
        samples = []
        prev = ProcSample(d.pid)
        for i in range(windows):
            time.sleep(secs / windows)
            cur = ProcSample(d.pid)
            s = prev.until(cur)
            samples.append(s)
            log(f"  window {i + 1}/{windows}: CPU {s['cpu_pct']:.3f} % (stat ticks {s['ticks']}; "
                f"schedstat {s['cpu_pct_sched']:.4f} %), wake-ups {s['wakeups_per_s']:.1f}/s "
                f"(voluntary {s['voluntary_per_s']:.1f}/s)")
            prev = cur
        rss = proc_status_kib(d.pid, "VmRSS")
        threads = len(proc_threads(d.pid))
    finally:
        d.stop()
    total_ticks = sum(s["ticks"] for s in samples)
    total_secs = sum(s["secs"] for s in samples)
    res = {"cpu_pct": stats([s["cpu_pct"] for s in samples]),
           "cpu_pct_sched": stats([s["cpu_pct_sched"] for s in samples]),
           "cpu_pct_total": 100.0 * total_ticks / CLK_TCK / total_secs,
           "wakeups_per_s": stats([s["wakeups_per_s"] for s in samples]),
           "rss_kib": rss, "threads": threads}
    ctx.results["idle"] = res
    ctx.row("idle: daemon CPU (% of a core)", res["cpu_pct_sched"], " %", fmt="{:.4f}",
            note=f"stat ticks: {res['cpu_pct_total']:.3f} % over {total_secs:.0f} s")
    ctx.row("idle: daemon wake-ups", res["wakeups_per_s"], "/s", fmt="{:.1f}",
            note=f"{threads} threads, RSS {rss / 1024:.1f} MiB")


def _idle_windows(d, secs, windows, scrape_port=None):
    """Samples daemon CPU / wake-ups over `windows` windows of secs/windows s each; with
    scrape_port, GETs /metrics at the start of every window (as Prometheus would every
    scrape_interval). Returns (window samples, scrape durations in ms, body bytes)."""
    import urllib.request
    samples, scrape_ms, size = [], [], 0
    prev = ProcSample(d.pid)
    for _ in range(windows):
        t_end = time.monotonic() + secs / windows
        if scrape_port is not None:
            t0 = now_ns()
            with urllib.request.urlopen(f"http://127.0.0.1:{scrape_port}/metrics", timeout=10) as r:
                body = r.read()
            scrape_ms.append((now_ns() - t0) / 1e6)
            size = len(body)
            if not body.rstrip().endswith(b"# EOF"):
                raise BenchError(f"truncated /metrics reply ({size} bytes)")
        time.sleep(max(0.0, t_end - time.monotonic()))
        cur = ProcSample(d.pid)
        samples.append(prev.until(cur))
        prev = cur
    return samples, scrape_ms, size


def bench_metrics(ctx):
    """Idle cost of --metrics-listen: the same idle measurement without and with the
    exporter (scraped every 15 s), in one run, as ratios."""
    import socket
    secs = 6 if ctx.smoke else 60
    windows = 2 if ctx.smoke else 4  # one scrape per window: every 15 s in a full run
    log(f"== metrics: idle daemon without / with --metrics-listen (scraped every "
        f"{secs / windows:.0f} s), {secs} s each")
    res = {}
    for label in ("without", "with"):
        port = None
        extra = ()
        if label == "with":
            with socket.socket() as sk:
                sk.bind(("127.0.0.1", 0))
                port = sk.getsockname()[1]
            extra = ("--metrics-listen", f"127.0.0.1:{port}")
        d = Daemon(f"metrics-{label}", extra_args=extra)
        try:
            d.wait_ready()
            time.sleep(1.0)
            samples, scrape_ms, size = _idle_windows(d, secs, windows, port)
            threads = len(proc_threads(d.pid))
            # Context switches of the exporter's own thread since it started (it blocks
            # in accept(2) at once): what serving the scrapes cost in wake-ups.
            exporter_switches = 0
            for tid, (v, n) in proc_ctxsw(d.pid).items():
                try:
                    comm = Path(f"/proc/{d.pid}/task/{tid}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == "metrics-http":
                    exporter_switches += v + n
        finally:
            d.stop()
        total = sum(x["secs"] for x in samples)
        r = {
            "cpu_pct_sched": sum(x["cpu_pct_sched"] * x["secs"] for x in samples) / total,
            "wakeups_per_s": sum(x["wakeups_per_s"] * x["secs"] for x in samples) / total,
            "voluntary_per_s": sum(x["voluntary_per_s"] * x["secs"] for x in samples) / total,
            "cpu_pct_ticks": 100.0 * sum(x["ticks"] for x in samples) / CLK_TCK / total,
            "threads": threads, "secs": total, "scrape_ms": scrape_ms, "body_bytes": size,
            "exporter_thread_switches": exporter_switches,
        }
        res[label] = r
        log(f"  {label} --metrics-listen: CPU {r['cpu_pct_sched']:.4f} % (schedstat; ticks "
            f"{r['cpu_pct_ticks']:.3f} %), wake-ups {r['wakeups_per_s']:.2f}/s (voluntary "
            f"{r['voluntary_per_s']:.2f}/s), {threads} threads"
            + (f"; scrapes {', '.join(f'{m:.1f}' for m in scrape_ms)} ms, {size} bytes; exporter "
               f"thread {exporter_switches} context switches in all" if scrape_ms else ""))
    w, wo = res["with"], res["without"]
    ratio = lambda a, b: a / b if b > 0 else float("inf")
    res["cpu_ratio"] = ratio(w["cpu_pct_sched"], wo["cpu_pct_sched"])
    res["wakeup_ratio"] = ratio(w["wakeups_per_s"], wo["wakeups_per_s"])
    ctx.results["metrics"] = res
    one = lambda v: stats([v])
    ctx.row("metrics: idle CPU without --metrics-listen", one(wo["cpu_pct_sched"]), " %", fmt="{:.4f}")
    ctx.row(f"metrics: idle CPU with (scraped every {secs / windows:.0f} s)", one(w["cpu_pct_sched"]), " %",
            fmt="{:.4f}",
            note=f"scrape {statistics.median(w['scrape_ms']):.1f} ms median, {w['body_bytes']} bytes")
    ctx.row("metrics: idle CPU with/without", one(res["cpu_ratio"]), "x", fmt="{:.2f}")
    ctx.row("metrics: idle wake-ups without", one(wo["wakeups_per_s"]), "/s", fmt="{:.2f}")
    ctx.row("metrics: idle wake-ups with", one(w["wakeups_per_s"]), "/s", fmt="{:.2f}",
            note=f"{w['threads']} threads vs {wo['threads']}")
    ctx.row("metrics: idle wake-ups with/without", one(res["wakeup_ratio"]), "x", fmt="{:.2f}")
    scrapes = max(1, len(w["scrape_ms"]))
    ctx.row("metrics: exporter thread wake-ups per scrape", one(w["exporter_thread_switches"] / scrapes), "",
            fmt="{:.1f}", note="context switches of the metrics-http thread since start / scrapes")


def prog_deltas(s0, s1):
    """{"tuner/program": {calls, ns_per_call, runs_per_s, cpu_pct}} between two
    Daemon.bpf_stats() samples; cpu_pct: run time as % of one core over the window."""
    (t0, p0), (t1, p1) = s0, s1
    secs = max(1e-9, (t1 - t0) / 1e9)
    out = {}
    for key, (c1, r1) in sorted(p1.items()):
        c0, r0 = p0.get(key, (0, 0))
        calls, ns = c1 - c0, r1 - r0
        out["/".join(key)] = {"calls": calls, "ns_per_call": ns / calls if calls else 0.0,
                              "runs_per_s": calls / secs, "cpu_pct": 100.0 * ns / 1e9 / secs}
    return out


def overhead_run(label, secs, with_daemon, profile=False):
    """One loopback iperf3 run in a fresh namespace; with_daemon: our daemon runs."""
    ns = LoopbackNs()
    srv = d = None
    try:
        # Generous buffer limits, written before any daemon starts: the daemon finds
        # nothing to tune, so a ratio is the cost of its hooks alone (with the defaults
        # it raises tcp_rmem/wmem on lo, which speeds lo up by several per cent).
        ns_sysctl_set(ns.name, "net.ipv4.tcp_rmem", f"4096 131072 {OVERHEAD_BUF_MAX}")
        ns_sysctl_set(ns.name, "net.ipv4.tcp_wmem", f"4096 16384 {OVERHEAD_BUF_MAX}")
        srv = IperfServer(ns.name)
        if with_daemon:
            d = Daemon(label, bpf_stats=profile).wait_ready()
            time.sleep(0.3)
        for attempt in range(4):
            before = ProcSample(d.pid) if d else None
            progs0 = d.bpf_stats() if profile else None
            r = iperf_client(ns.name, "127.0.0.1", 5201, secs, srv, guard=False)
            progs1 = d.bpf_stats() if profile else None
            after = ProcSample(d.pid) if d else None
            if not (r["disturbed"] and attempt < 3 and WATCH.retry_budget > 0):
                break
            warn(f"host disturbed during overhead run ({'; '.join(r['disturbed'])}); measuring again")
            WATCH.wait_quiet()
        entry = {"bps": r["bps"], "disturbed": r["disturbed"]}
        if d is not None:
            entry["tuners"] = d.tuners
            s = before.until(after)
            entry.update(cpu_pct=s["cpu_pct"], cpu_pct_sched=s["cpu_pct_sched"],
                         ticks=s["ticks"], secs=s["secs"],
                         rss_kib=proc_status_kib(d.pid, "VmRSS"),
                         hwm_kib=proc_status_kib(d.pid, "VmHWM"),
                         changes=len([c for c in d.changes() if c.get("applied")]))
        if profile:
            entry["progs"] = prog_deltas(progs0, progs1)
        return entry
    finally:
        if d is not None:
            d.stop()
        if srv is not None:
            srv.close()
        ns.close()


def bench_overhead(ctx):
    secs = 1 if ctx.smoke else 5
    n = ctx.pairs
    log(f"== overhead: loopback iperf3 in a fresh namespace per run (tcp_rmem/wmem max "
        f"{OVERHEAD_BUF_MAX >> 20} MB), {secs} s runs; {n} triple(s) without / with / without "
        f"the daemon: ratio = with / mean(withouts), noise floor = without' / without")
    pairs = []
    for i in range(n):
        a = overhead_run(f"overhead#{i}", secs, False)
        w = overhead_run(f"overhead#{i}", secs, True)
        a2 = overhead_run(f"overhead#{i}", secs, False)
        pair = {"without": a, "with": w, "without2": a2,
                "ratio": w["bps"] / ((a["bps"] + a2["bps"]) / 2), "noise": a2["bps"] / a["bps"]}
        log(f"  triple {i + 1}/{n}: without {fmt_bps(a['bps'])}, with {fmt_bps(w['bps'])}, without "
            f"{fmt_bps(a2['bps'])}: ratio {pair['ratio']:.4f} (A/A {pair['noise']:.4f}); daemon CPU "
            f"{w['cpu_pct']:.3f} % (ticks {w['ticks']}, schedstat {w['cpu_pct_sched']:.4f} %), "
            f"RSS {w['rss_kib'] / 1024:.1f} MiB, {w['changes']} change(s)")
        pairs.append(pair)
    # The daemon's BPF programs run in the traffic's own context (softirq, iperf3): their
    # cost is in the throughput, not in the daemon's CPU. Measure it directly once.
    prof = overhead_run("overhead-profile", secs, True, profile=True)
    log(f"  tuners loaded in the runs with the daemon: {pairs[0]['with'].get('tuners')}")
    if prof is None:
        log("  BPF run-time profile: not available, skipped")
    else:
        for name, p in sorted(prof["progs"].items(), key=lambda kv: -kv[1]["cpu_pct"]):
            log(f"  BPF profile: {name:44s} {p['runs_per_s']:10.0f} runs/s x {p['ns_per_call']:6.1f} ns "
                f"= {p['cpu_pct']:.3f} % of a core")
        per_tuner = {}
        for name, p in prof["progs"].items():
            per_tuner[name.split("/")[0]] = per_tuner.get(name.split("/")[0], 0.0) + p["cpu_pct"]
        for tuner, pct in sorted(per_tuner.items(), key=lambda kv: -kv[1]):
            log(f"  BPF profile per tuner: {tuner:14s} {pct:.3f} % of a core")
    withs = [p["with"] for p in pairs]
    tot_ticks = sum(w["ticks"] for w in withs)
    tot_secs = sum(w["secs"] for w in withs)
    res = {"ratio": stats([p["ratio"] for p in pairs]),
           "noise": stats([p["noise"] for p in pairs]),
           "cpu_pct": stats([w["cpu_pct"] for w in withs]),
           "cpu_pct_total": 100.0 * tot_ticks / CLK_TCK / tot_secs,
           "cpu_pct_sched": stats([w["cpu_pct_sched"] for w in withs]),
           "rss_mib": stats([w["rss_kib"] / 1024 for w in withs]),
           "hwm_mib": stats([w["hwm_kib"] / 1024 for w in withs]),
           "without_bps": stats([p["without"]["bps"] for p in pairs] + [p["without2"]["bps"] for p in pairs]),
           "with_bps": stats([p["with"]["bps"] for p in pairs]),
           "bpf_profile": prof and prof["progs"],
           "bpf_cpu_pct": prof and sum(p["cpu_pct"] for p in prof["progs"].values()),
           "pairs": pairs}
    ctx.results["overhead"] = res
    below = sum(1 for p in pairs if p["ratio"] < 1)
    ctx.row("overhead: throughput with / without daemon", res["ratio"], "", ">= 0.995",
            lambda v: v >= 0.995, "{:.4f}",
            f"without {fmt_bps(res['without_bps']['median'])}; {below}/{n} ratios below 1")
    ctx.row("overhead: noise floor, without / without (A/A)", res["noise"], "", fmt="{:.4f}",
            note="the ratio above is only resolved to about this spread")
    # The A/A spread (largest |without'/without - 1|) is how far apart two runs of the
    # same thing land here; a with/without ratio closer to 1 than that is not resolvable.
    spread = max(abs(p["noise"] - 1) for p in pairs)
    ctx.row("overhead: ratio within the A/A noise floor", res["ratio"], "", "|1-r| <= A/A",
            lambda v: abs(v - 1) <= spread, "{:.4f}",
            f"median ratio vs A/A spread +/-{spread:.4f} (1 +/- largest |A/A - 1|)")
    if prof is not None:
        ctx.row("overhead: BPF programs' own run time", stats([res["bpf_cpu_pct"]]), " %", fmt="{:.3f}",
                note=f"% of a core at {fmt_bps(prof['bps'])}, 1 profiled run (BPF_ENABLE_STATS; "
                     "the daemon's own bpftune_bpf_run_time_seconds metrics)")
    ctx.row("overhead: daemon CPU under load, /proc/PID/stat", res["cpu_pct"], " %", "<= 0.2 %",
            lambda v: v <= 0.2, "{:.2f}",
            f"1 tick = {100.0 / CLK_TCK / secs:.2f} % per {secs} s run; all runs together "
            f"{res['cpu_pct_total']:.3f} %")
    ctx.row("overhead: daemon CPU under load, schedstat ns", res["cpu_pct_sched"], " %", "<= 0.2 %",
            lambda v: v <= 0.2, "{:.3f}", "same CPU time at ns resolution (all threads)")
    ctx.row("overhead: daemon RSS under load", res["rss_mib"], " MiB", "<= 8 MiB",
            lambda v: v <= 8, "{:.1f}", f"peak (VmHWM) {res['hwm_mib']['max']:.1f} MiB")


SCENARIOS = {
    # name: (tunable, namespace side that gets limited, limited sysctls, well-tuned sysctls)
    # sysctls: {side: (name, value)}, side = "sender" (left) / "receiver" (right)
    "rmem": ("net.ipv4.tcp_rmem",
             "receiver",
             {"receiver": ("net.ipv4.tcp_rmem", RMEM_LIMITED), "sender": ("net.ipv4.tcp_wmem", WMEM_SENDER_BIG)},
             {"receiver": ("net.ipv4.tcp_rmem", RMEM_TUNED), "sender": ("net.ipv4.tcp_wmem", WMEM_SENDER_BIG)}),
    "wmem": ("net.ipv4.tcp_wmem",
             "sender",
             {"sender": ("net.ipv4.tcp_wmem", WMEM_LIMITED), "receiver": ("net.ipv4.tcp_rmem", RMEM_TUNED)},
             {"sender": ("net.ipv4.tcp_wmem", WMEM_TUNED), "receiver": ("net.ipv4.tcp_rmem", RMEM_TUNED)}),
}


class DelayBed:
    """40 ms RTT delay line (sender = left, receiver = right) with an iperf3 server."""

    def __init__(self):
        self.topo = Topology("delayline", "--delay-ms", 20, "--loss", 0, "--mtu", 9000)
        self.sender, self.receiver = self.topo.left, self.topo.right
        self.addr = self.topo.right_addr
        self.server = IperfServer(self.receiver)

    def ns(self, side):
        return self.sender if side == "sender" else self.receiver

    def apply(self, settings):
        """Only while no daemon of ours runs (a write would hand the netns to the admin)."""
        for side, (name, value) in settings.items():
            ns_sysctl_set(self.ns(side), name, value)
        flush_metrics(self.sender, self.receiver)

    def conn(self, secs, guard=True):
        return iperf_client(self.sender, self.addr, 5201, secs, self.server, guard)

    def close(self):
        self.server.close()
        self.topo.close()


def first_change(changes, tunable, ns_name):
    recs = [c for c in changes if c.get("tunable") == tunable and c.get("applied")
            and not c.get("global") and c.get("netns") == ns_name]
    return min(recs, key=lambda c: c.get("write_ts_ns") or 0) if recs else None


def bench_reaction(ctx):
    secs = 1 if ctx.smoke else 3
    n = ctx.pairs
    log(f"== reaction: first limiting event -> sysctl write, delay line 40 ms RTT, {n} trial(s), "
        f"{secs} s of traffic each")
    res = {}
    for scen, (tunable, side, limited, _tuned) in SCENARIOS.items():
        bed = DelayBed()
        trials = []
        try:
            target_ns = bed.ns(side)
            for i in range(n):
                bed.apply(limited)
                d = Daemon(f"reaction-{scen}#{i}").wait_ready()
                try:
                    t_traffic = now_ns()
                    r = bed.conn(secs, guard=False)
                    time.sleep(0.2)
                    changes = d.changes()
                finally:
                    d.stop()
                c = first_change(changes, tunable, target_ns)
                if c is None or not c.get("event_ts_ns"):
                    seen = sorted({(x.get("tunable"), x.get("netns")) for x in changes})
                    log(f"  {scen} trial {i + 1}/{n}: no {tunable} change in {target_ns} "
                        f"({len(changes)} record(s): {seen}); {fmt_bps(r['bps'])}"
                        + (" [host disturbed]" if r["disturbed"] else ""))
                    trials.append(None)
                    continue
                react = (c["write_ts_ns"] - c["event_ts_ns"]) / 1e6
                from_traffic = (c["write_ts_ns"] - t_traffic) / 1e6
                count = len([x for x in changes if x.get("tunable") == tunable and x.get("applied")])
                trials.append({"reaction_ms": react, "traffic_to_write_ms": from_traffic,
                               "event_after_traffic_ms": (c["event_ts_ns"] - t_traffic) / 1e6,
                               "old": c.get("old"), "new": c.get("new"), "changes": count,
                               "bps": r["bps"]})
                log(f"  {scen} trial {i + 1}/{n}: event->write {react:.3f} ms, traffic start->write "
                    f"{from_traffic:.0f} ms, first {c.get('old')} -> {c.get('new')}, "
                    f"{count} {tunable} change(s) in {secs} s")
        finally:
            bed.close()
        ok = [t for t in trials if t]
        res[scen] = {"reaction_ms": stats([t["reaction_ms"] for t in ok]),
                     "traffic_to_write_ms": stats([t["traffic_to_write_ms"] for t in ok]),
                     "missing": len(trials) - len(ok), "trials": trials}
        miss_note = f"; {res[scen]['missing']} trial(s) without a change" if res[scen]["missing"] else ""
        tt = res[scen]["traffic_to_write_ms"]
        ctx.row(f"reaction {scen}: event -> {tunable.split('.')[-1]} write", res[scen]["reaction_ms"],
                " ms", "<= 50 ms", lambda v: v <= 50, "{:.2f}",
                (f"traffic start -> write {tt['median']:.0f} ms" if tt else "") + miss_note)
    ctx.results["reaction"] = res


def change_summary(changes, tunable):
    """Applied changes of one tunable: count per scenario, highest and last value written."""
    recs = sorted((c for c in changes if c.get("tunable") == tunable and c.get("applied")),
                  key=lambda c: c.get("write_ts_ns") or 0)
    per = {}
    for c in recs:
        per[c.get("scenario")] = per.get(c.get("scenario"), 0) + 1
    maxes = [c["new"][-1] for c in recs if isinstance(c.get("new"), list) and c["new"]]
    return {"count": len(recs), "scenarios": per, "highest_max": max(maxes) if maxes else None}


def bench_outcome(ctx):
    secs = 1 if ctx.smoke else 2
    series = 3.0 if ctx.smoke else 12.0
    n = ctx.trials
    log(f"== outcome: new {secs} s connections for {series:.0f} s after the daemon starts, as a "
        f"fraction of the well-tuned (16 MB) reference measured just before; {n} trial(s)")
    res = {}
    for scen, (tunable, side, limited, tuned) in SCENARIOS.items():
        bed = DelayBed()
        trials = []
        try:
            for i in range(n):
                # Reference: well-tuned, no daemon (median of 2 runs; 1 in smoke).
                bed.apply(tuned)
                refs = [bed.conn(secs)["bps"] for _ in range(1 if ctx.smoke else 2)]
                ref = statistics.median(refs)
                # Untuned baseline: limited, no daemon.
                bed.apply(limited)
                base = bed.conn(secs)["bps"]
                flush_metrics(bed.sender, bed.receiver)
                d = Daemon(f"outcome-{scen}#{i}")
                conns = []
                try:
                    d.wait_ready()
                    while (now_ns() - d.spawn_ns) / 1e9 < series:
                        r = bed.conn(secs, guard=False)
                        conns.append({"start_s": (r["start_ns"] - d.spawn_ns) / 1e9,
                                      "end_s": (r["end_ns"] - d.spawn_ns) / 1e9,
                                      "bps": r["bps"], "fraction": r["bps"] / ref,
                                      "retrans": r["retrans"], "disturbed": r["disturbed"]})
                    changes = d.changes()
                    final = ns_sysctl_get(bed.ns(side), tunable)
                finally:
                    d.stop()
                # A connection during which the host was disturbed does not count.
                ok = [c for c in conns if not c["disturbed"]]
                t90 = next((c["start_s"] for c in ok if c["fraction"] >= 0.90), None)
                t95 = next((c["start_s"] for c in ok if c["fraction"] >= 0.95), None)
                held = min((c["fraction"] for c in ok if t95 is not None and c["start_s"] >= t95),
                           default=None)
                chg = change_summary(changes, tunable)
                trials.append({"ref_bps": ref, "refs": refs, "untuned_bps": base, "conns": conns,
                               "t90_s": t90, "t95_s": t95, "held_fraction": held, "final": final,
                               "changes": chg, "ready_s": (d.ready_ns - d.spawn_ns) / 1e9})
                series_txt = " ".join(f"{c['start_s']:.1f}s:{c['fraction']:.2f}"
                                      + ("(disturbed)" if c["disturbed"] else "") for c in conns)
                log(f"  {scen} trial {i + 1}/{n}: reference {fmt_bps(ref)}, untuned {fmt_bps(base)} "
                    f"({base / ref:.2f}); with daemon [start:fraction] {series_txt}")
                hm = chg["highest_max"]
                log(f"      90 % at {_fmt_t(t90)}, 95 % at {_fmt_t(t95)}, worst from then on "
                    f"{'-' if held is None else f'{held:.2f}'}; {chg['count']} {tunable} change(s) "
                    f"{chg['scenarios']}, highest max {hm if hm is None else f'{hm / MiB:.0f} MiB'}, "
                    f"final {final!r}")
        finally:
            bed.close()
            if bed.topo.stats:
                log(f"  delay line ({scen}): {bed.topo.stats}")
        r = {"t90_s": _stats_missing(trials, "t90_s"),
             "t95_s": _stats_missing(trials, "t95_s"),
             "held": stats([t["held_fraction"] for t in trials]),
             "ref_bps": stats([t["ref_bps"] for t in trials]),
             "untuned_fraction": stats([t["untuned_bps"] / t["ref_bps"] for t in trials]),
             "last_fraction": stats([t["conns"][-1]["fraction"] for t in trials if t["conns"]]),
             "reached95": sum(1 for t in trials if t["t95_s"] is not None),
             "trials": trials}
        res[scen] = r
        note = (f"ref {fmt_bps(r['ref_bps']['median'])}, untuned {r['untuned_fraction']['median']:.2f} of it; "
                f"95 % reached in {r['reached95']}/{len(trials)} trial(s)")
        ctx.row(f"outcome {scen}: time to 90 % of tuned", r["t90_s"], " s", fmt="{:.1f}",
                note="'never' = not within the series" if any(t["t90_s"] is None for t in trials) else "")
        ctx.row(f"outcome {scen}: time to 95 % of tuned", r["t95_s"], " s", "<= 5 s",
                lambda v: v <= 5.0, "{:.1f}", note)
        ctx.row(f"outcome {scen}: worst fraction after reaching 95 %", r["held"], "", ">= 0.95",
                lambda v: v >= 0.95, "{:.2f}",
                f"last connection {r['last_fraction']['median']:.2f}" if r["last_fraction"] else "")
    ctx.results["outcome"] = res


ALLOWED_CC = "net.ipv4.tcp_allowed_congestion_control"


def nft_drop(ns, port, percent):
    """environment.md 4-D: drop `percent` % of the packets to `port` in ns's input chain."""
    rules = (f"table inet bench_loss {{\n  chain input {{\n    type filter hook input priority 0; "
             f"policy accept;\n    tcp dport {port} numgen random mod 100 < {percent} counter drop\n"
             f"  }}\n}}\n")
    r = subprocess.run(ns_exec(ns, "nft", "-f", "-"), input=rules, capture_output=True, text=True,
                       timeout=10)
    if r.returncode != 0:
        raise BenchError(f"nft in {ns}: {r.stderr.strip()}")


def bench_congestion(ctx):
    """tcp_conn: new connections on the 40 ms delay line with loss, cubic (the
    application's choice, which the tuner leaves alone) interleaved with tuned (the
    learner's choice) after a warm-up of short connections under a fresh daemon."""
    secs = 1 if ctx.smoke else 2
    n = ctx.trials
    warm = 2 if ctx.smoke else 4
    pairs = 1 if ctx.smoke else 3
    losses = [1] if ctx.smoke else [1, 0]
    log(f"== congestion: 40 ms delay line, {losses} % loss at the receiver (nft numgen); per trial "
        f"a fresh daemon (-a tcp_conn), {warm} warm-up 1 s connections, then {pairs} interleaved "
        f"pair(s) of {secs} s connections: iperf3 -C cubic / tuned; ratio = median tuned / "
        f"median cubic; {n} trial(s)")
    res = {}
    allowed0 = read_global(ALLOWED_CC)
    if allowed0 is None:
        raise BenchError(f"{ALLOWED_CC} is not readable")
    try:
        # Cubic as the namespaces' default needs it allowed (it is not in this VM's list).
        if "cubic" not in allowed0.split():
            sysctl_path(ALLOWED_CC).write_text(allowed0 + " cubic")
        for loss in losses:
            bed = DelayBed()
            trials = []
            try:
                for ns in (bed.sender, bed.receiver):
                    ns_sysctl_set(ns, "net.ipv4.tcp_congestion_control", "cubic")
                if loss:
                    nft_drop(bed.receiver, 5201, loss)
                for i in range(n):
                    flush_metrics(bed.sender, bed.receiver)
                    d = Daemon(f"congestion-{loss}#{i}", ("-a", "tcp_conn")).wait_ready()
                    try:
                        warmups = [bed.conn(1, guard=False)["bps"] for _ in range(warm)]
                        base, tuned = [], []
                        for _ in range(pairs):
                            base.append(iperf_client(bed.sender, bed.addr, 5201, secs, bed.server,
                                                     extra=("-C", "cubic"))["bps"])
                            tuned.append(bed.conn(secs)["bps"])
                        summary = d.query("summary")
                    finally:
                        d.stop()
                    choices = {m.group(1): int(m.group(2)) for m in re.finditer(
                        r"tcp_conn_tuner:\s+(cubic|bbr|htcp|dctcp)\s+(\d+)", summary)}
                    ratio = statistics.median(tuned) / statistics.median(base)
                    trials.append({"warmup_bps": warmups, "cubic_bps": base, "tuned_bps": tuned,
                                   "ratio": ratio, "choices": choices})
                    log(f"  {loss} % loss trial {i + 1}/{n}: warm-up "
                        f"{' '.join(fmt_bps(b) for b in warmups)}; cubic "
                        f"{' '.join(fmt_bps(b) for b in base)}; tuned "
                        f"{' '.join(fmt_bps(b) for b in tuned)}; ratio {ratio:.2f}; choices {choices}")
            finally:
                bed.close()
            r = {"ratio": stats([t["ratio"] for t in trials]),
                 "cubic_bps": stats([statistics.median(t["cubic_bps"]) for t in trials]),
                 "tuned_bps": stats([statistics.median(t["tuned_bps"]) for t in trials]),
                 "trials": trials}
            res[f"loss{loss}"] = r
            note = (f"cubic {fmt_bps(r['cubic_bps']['median'])}, tuned "
                    f"{fmt_bps(r['tuned_bps']['median'])}")
            if loss:
                ctx.row(f"congestion outcome {loss} % loss: tuned / cubic", r["ratio"], "x",
                        ">= 10x", lambda v: v >= 10.0, "{:.1f}", note)
            else:
                ctx.row("congestion outcome 0 % loss: tuned / cubic", r["ratio"], "", ">= 0.95",
                        lambda v: v >= 0.95, "{:.2f}", note)
    finally:
        if read_global(ALLOWED_CC) != allowed0:
            sysctl_path(ALLOWED_CC).write_text(allowed0)
    ctx.results["congestion"] = res


# --------------------------------------------------------------------------- drop-hooks

DROP_TUNERS = ("udp_buffer", "ip_frag", "sysctl")

# A UDP sender loop (run with python3 inside a namespace; argv[1] = seconds).
UDP_FLOOD = """
import socket, sys, time
port, size = {port}, {size}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b = b'x' * size
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(1000):
        try: s.sendto(b, ('127.0.0.1', port))
        except OSError: pass
"""

# A receiver with a 4 KiB SO_RCVBUF that never reads (argv[1] = seconds).
UDP_SINK = """
import socket, sys, time
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
r.bind(('127.0.0.1', 9400))
time.sleep(float(sys.argv[1]))
"""

# Losing the first fragment of every second datagram leaves incomplete queues that
# fill reassembly memory.
NFT_FRAG = """table ip bpt_bench_frag {
  chain pre {
    type filter hook prerouting priority -300;
    ip frag-off & 0x1fff == 0 ip frag-off & 0x2000 != 0 numgen inc mod 2 == 0 drop
  }
}
"""


def py_in_ns(ns, code, secs):
    return subprocess.Popen(guarded(ns_exec(ns, sys.executable, "-c", code, secs)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def udp_flood(ns, secs, port, size):
    p = py_in_ns(ns, UDP_FLOOD.format(port=port, size=size), secs)
    try:
        p.wait(timeout=secs + 30)
    finally:
        kill_proc(p)


def load_tcp_lo(ns, secs):
    srv = IperfServer(ns)
    try:
        iperf_client(ns, "127.0.0.1", 5201, secs, srv, guard=False)
    finally:
        srv.close()


def load_udp_lo(ns, secs):
    srv = IperfServer(ns)
    try:
        r = run(guarded(ns_exec(ns, "iperf3", "-c", "127.0.0.1", "-p", 5201, "-t", secs, "-u", "-b", "0",
                                "-l", "1400")), timeout=secs + 30, check=False)
        if r.returncode != 0:
            raise BenchError(f"iperf3 -u in {ns} failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-300:]}")
    finally:
        srv.close()


def load_udp_rcvbuf(ns, secs):
    rx = py_in_ns(ns, UDP_SINK, secs + 1)
    try:
        time.sleep(0.3)
        udp_flood(ns, secs, 9400, 1000)
    finally:
        kill_proc(rx)


def prep_frag(ns):
    # lo with an Ethernet MTU fragments the datagrams (nothing the daemon watches).
    run(["ip", "-n", ns, "link", "set", "lo", "mtu", "1500"])
    r = subprocess.run(ns_exec(ns, "nft", "-f", "-"), input=NFT_FRAG, text=True, capture_output=True, timeout=30)
    if r.returncode != 0:
        raise BenchError(f"nft in {ns} failed: {r.stderr.strip()[-300:]}")


# name: (what, set-up before the daemon starts, sysctls an "administrator" writes while
# it runs (so the tuner keeps out of the namespace and the hooks keep firing), load)
DROP_LOADS = {
    "tcp-lo": ("iperf3 TCP over lo (the standard overhead load; hardly any drops)", None, (), load_tcp_lo),
    "udp-lo": ("iperf3 UDP over lo at full rate, 1400-byte datagrams (the receiver drops)", None, (),
               load_udp_lo),
    "udp-noport": ("UDP to a closed port: every datagram a kfree_skb (NO_SOCKET)", None, (),
                   lambda ns, secs: udp_flood(ns, secs, 9, 100)),
    "udp-rcvbuf": ("UDP into a socket with SO_RCVBUF 4 KiB that never reads: every datagram a "
                   "receive-buffer drop plus a kfree_skb", None, (), load_udp_rcvbuf),
    "frag-full": ("60000-byte datagrams into a namespace whose ipfrag_high_thresh an administrator "
                  "set to 256 KiB: most fragments dropped over the threshold", prep_frag,
                  (("net.ipv4.ipfrag_low_thresh", "131072"), ("net.ipv4.ipfrag_high_thresh", "262144")),
                  lambda ns, secs: udp_flood(ns, secs, 9, 60000)),
}
DROP_DEFAULT_LOADS = ("tcp-lo", "udp-noport", "udp-rcvbuf", "frag-full")


def drop_hooks_run(load, secs, tuners):
    """One load in a fresh namespace with a daemon `-a T...` started before it and
    stopped after it; per program deltas of the daemon's own BPF run-time metrics."""
    _, prep, admin, fn = DROP_LOADS[load]
    ns = LoopbackNs()
    d = None
    try:
        if prep:
            prep(ns.name)
        d = Daemon(f"drop-{load}", extra_args=[x for t in tuners for x in ("-a", t)],
                   bpf_stats=True).wait_ready()
        for k, v in admin:
            ns_sysctl_set(ns.name, k, v)
        if admin:
            time.sleep(0.5)
        s0 = d.bpf_stats()
        fn(ns.name, secs)
        s1 = d.bpf_stats()
        return {"load": load, "tuners": d.tuners, "window_s": (s1[0] - s0[0]) / 1e9,
                "progs": prog_deltas(s0, s1)}
    finally:
        if d is not None:
            d.stop()
        ns.close()


def bench_drop_hooks(ctx):
    """BPF run time per program of a daemon running only some tuners (default the
    drop-signal hooks: udp_buffer, ip_frag, and sysctl to see the administrator's
    writes) under loads that fire them; --load / --tuner / --secs choose."""
    o = ctx.opts
    secs = o.secs if o.secs else (1 if ctx.smoke else 5)
    loads = o.load or list(DROP_DEFAULT_LOADS)
    tuners = o.tuner or list(DROP_TUNERS)
    log(f"== drop-hooks: BPF run time of `bpftune -s -R {' '.join('-a ' + t for t in tuners)}` "
        f"({BPFTUNE}) per program, from its own metrics (BPF_ENABLE_STATS held by the harness), "
        f"over {secs:g} s of each load in a fresh namespace")
    res = {"secs": secs, "tuners": tuners, "loads": {}}
    log(f"  {'load':11} {'tuner/program':40} {'calls':>10} {'ns/call':>8} {'% of a core':>12}")
    for load in loads:
        r = drop_hooks_run(load, secs, tuners)
        res["loads"][load] = r
        total = 0.0
        busiest = []
        for name, p in r["progs"].items():
            total += p["cpu_pct"]
            log(f"  {load:11} {name:40} {p['calls']:>10} {p['ns_per_call']:>8.0f} {p['cpu_pct']:>11.4f}%")
            if p["calls"]:
                busiest.append((p["cpu_pct"], f"{name.split('/', 1)[1]} {p['calls']} x {p['ns_per_call']:.0f} ns"))
        note = "; ".join(t for _, t in sorted(busiest, reverse=True)[:3]) or "no program ran"
        ctx.row(f"drop-hooks: {load}: BPF run time", stats([total]), " %", fmt="{:.4f}",
                note=f"% of a core over {r['window_s']:.1f} s ({DROP_LOADS[load][0]}); {note}")
    ctx.results["drop-hooks"] = res


def _fmt_t(t):
    return "never" if t is None else f"{t:.1f} s"


def _stats_missing(trials, key):
    """Median with 'never reached' counted as +inf (reported as > series length)."""
    vals = [t[key] if t[key] is not None else float("inf") for t in trials]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def bench_vm_reclaim(ctx):
    """vm tuner outcome: bench/vm_reclaim.py in a 1 GiB qemu guest (6.12) — untuned,
    tuned, untuned again under the same reclaim pressure, then the value the daemon
    reached against the one found in ABBA-ordered pairs. Only with --only vm-reclaim
    (a guest run of ~10 min; the smoke and the default set leave it out)."""
    out = ROOT / "target/kernel-matrix/vm-reclaim/result.json"
    cmd = [sys.executable, str(ROOT / "bench/vm_reclaim.py"), "guest", "--bpftune", str(BPFTUNE)]
    log(f"== vm-reclaim: {' '.join(cmd)}")
    rc = subprocess.run(cmd).returncode
    try:
        res = json.loads((ROOT / "target/kernel-matrix/vm-reclaim/6.12/result.json").read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"vm_reclaim.py guest exited {rc} without a result ({e})")
    out.write_text(json.dumps(res, indent=2) + "\n")
    r = res["ratios_tuned_to_untuned_mean"]
    for key, what in (("direct_reclaim_ms", "direct-reclaim stall time"), ("allocstall", "direct reclaims"),
                      ("probe_p99_ms", "probe p99 allocation latency"), ("probe_mib_s", "probe throughput"),
                      ("reader_mib_s", "reader throughput")):
        if r.get(key) is not None:
            ctx.row(f"vm-reclaim: {what}, tuned / untuned", stats([r[key]]), "", fmt="{:.3f}",
                    note=f"watermark_scale_factor {res['found']['watermark_scale_factor']} -> "
                         f"{res['tuned_watermark_scale_factor']}")
    alt = res.get("ratios_alternation") or {}
    for key, what in (("direct_reclaim_ms", "direct-reclaim stall time"), ("probe_mib_s", "probe throughput")):
        if alt.get(key) is not None:
            ctx.row(f"vm-reclaim: {what}, learned value / found, ABBA pairs", stats([alt[key]]), "", fmt="{:.3f}",
                    note=f"{len(res['alternation']['segments']) // 2} pairs of "
                         f"{res['alternation']['segment_secs']} s")
    ctx.results["vm-reclaim"] = res


BENCHES = {
    "startup": bench_startup,
    "idle": bench_idle,
    "metrics": bench_metrics,
    "overhead": bench_overhead,
    "reaction": bench_reaction,
    "outcome": bench_outcome,
    "congestion": bench_congestion,
    "drop-hooks": bench_drop_hooks,
    "vm-reclaim": bench_vm_reclaim,
}
# Run only when named (--only): a qemu guest for ~10 minutes.
ON_REQUEST = {"vm-reclaim"}


# --------------------------------------------------------------------------- report

def machine_info():
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
        except Exception:
            return "?"
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f"{kb / MiB:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "os": os_name,
            "kernel": platform.release(), "nproc": os.cpu_count(), "cpu": model, "mem": mem,
            "bpftune": sh(str(BPFTUNE), "-V"),
            "git": sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")}


def print_table(ctx, info, failed, elapsed):
    log("")
    log("=" * 100)
    log(f"bpftune benchmarks ({'smoke' if ctx.smoke else 'full'}, {ctx.pairs} pair(s) / {ctx.trials} "
        f"delay-line trial(s) per figure, "
        f"{elapsed:.0f} s)")
    log(f"machine: {info['os']}, kernel {info['kernel']}, nproc {info['nproc']}, {info['cpu']}, "
        f"{info['mem']}; {info['date']}; {info['bpftune']} (git {info['git']})")
    hdr = ("figure", "median", "min", "max", "target", "")
    rows = [hdr] + [r[:6] for r in ctx.rows]
    w = [max(len(str(r[i])) for r in rows) for i in range(6)]
    for k, r in enumerate(rows):
        log("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
        if k == 0:
            log("  ".join("-" * x for x in w))
    notes = [(r[0], r[6]) for r in ctx.rows if r[6]]
    if notes:
        log("notes:")
        for fig, note in notes:
            log(f"  {fig}: {note}")
    for name, err in failed:
        log(f"COULD NOT RUN: {name}: {err}")
    if WATCH is not None and WATCH.seen:
        log("HOST NOT QUIET during this run (* = during that benchmark; disturbed throughput "
            "measurements were repeated while the retry budget lasted, else kept and flagged):")
        for r in WATCH.summary():
            log(f"  {r}")
    if ctx.smoke:
        log("(smoke run: 1 pair of 1 s runs -- figures are not meaningful, PASS/MISS is informational)")
    log("=" * 100)


def preflight(only):
    if os.geteuid() != 0:
        raise BenchError("needs root (BPF, network namespaces)")
    need = [BPFTUNE, TESTBED]
    for b in need:
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} missing: run `cargo build --release --workspace` (or `make bench`)")
    for tool in ("ip", "iperf3", "sysctl", "ss"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found")
    # Namespaces, links and daemon temp dirs (with their cgroup2 mounts) left by an
    # earlier run that was killed hard (owner pid dead): the tests' cleanup.
    subprocess.run([str(TESTBED), "cleanup", "--prefix", PREFIX], capture_output=True, timeout=60)


def main():
    ap = argparse.ArgumentParser(description="bpftune benchmark suite (see BENCHMARKS.md)")
    ap.add_argument("--smoke", action="store_true",
                    help="very short run (1 pair, 1 s runs) that exercises every benchmark")
    ap.add_argument("--only", action="append", choices=list(BENCHES), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {'|'.join(BENCHES)}")
    ap.add_argument("--pairs", type=int,
                    help="pairs/trials per figure (default: 6 for start-up/overhead/reaction, 5 "
                         "for outcome; smoke 1)")
    ap.add_argument("--json", metavar="FILE", help="also write all raw results as JSON")
    ap.add_argument("--load", action="append", choices=list(DROP_LOADS), metavar="LOAD",
                    help=f"drop-hooks: run this load (repeatable; default {' '.join(DROP_DEFAULT_LOADS)}): "
                         f"{'|'.join(DROP_LOADS)}")
    ap.add_argument("--tuner", action="append", metavar="TUNER",
                    help=f"drop-hooks: the daemon runs only these tuners (-a, repeatable; default "
                         f"{' '.join(DROP_TUNERS)})")
    ap.add_argument("--secs", type=float, help="drop-hooks: seconds per load (default 5, smoke 1)")
    ap.add_argument("--bpftune", metavar="PATH",
                    help="the bpftune binary to measure (default target/release/bpftune), e.g. a "
                         "copy of the build before a change for a before/after comparison")
    args = ap.parse_args()
    global BPFTUNE
    if args.bpftune:
        BPFTUNE = Path(args.bpftune).resolve()
    only = args.only or [b for b in BENCHES if b not in ON_REQUEST]
    pairs = args.pairs or (1 if args.smoke else 6)
    ctx = Ctx(args.smoke, pairs, args.pairs or (1 if args.smoke else 5), args)

    global WATCH
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    started = time.monotonic()
    WATCH = HostWatch()
    WATCH.retry_budget = 0.0 if args.smoke else 60.0
    WATCH.daemon_wait_budget = 15.0 if args.smoke else 60.0
    failed = []
    interrupted = False
    info = None
    try:
        preflight(only)
        info = machine_info()
        log(f"bpftune bench: {', '.join(only)}; {info['kernel']}, nproc {info['nproc']}, {info['date']}")
        for name in only:
            t0, first_row = now_ns(), len(ctx.rows)
            try:
                BENCHES[name](ctx)
                why = WATCH.disturbed(t0, now_ns())
                if why:
                    ctx.results.setdefault(name, {})["host_disturbed"] = why
                    for k in range(first_row, len(ctx.rows)):
                        r = ctx.rows[k]
                        ctx.rows[k] = (r[0] + " *",) + r[1:]
            except (BenchError, subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
                if not isinstance(e, BenchError):
                    traceback.print_exc()
                warn(f"{name} could not run: {e}")
                failed.append((name, str(e).splitlines()[0] if str(e) else type(e).__name__))
            finally:
                REG.close_all()
    except KeyboardInterrupt:
        interrupted = True
        warn("interrupted; cleaning up")
    except BenchError as e:
        warn(str(e))
        failed.append(("preflight", str(e)))
        info = None
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        REG.close_all()
        WATCH.close()
    if interrupted:
        return 130
    if info is not None:
        print_table(ctx, info, failed, time.monotonic() - started)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": info, "smoke": ctx.smoke, "pairs": pairs, "results": ctx.results,
                 "table": ctx.rows, "failed": failed, "host_disturbances": sorted(WATCH.seen)},
                indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

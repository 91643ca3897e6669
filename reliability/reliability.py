#!/usr/bin/env python3
"""bpftune reliability suite driver (RELIABILITY.md). Needs root; one item at a time.

  reliability.py crash [--n 60] [--seed S]       kill -9 anywhere, then -R restores (item 1)
  reliability.py fuzz [--requests 1000000]       socket-level fuzz of a running daemon (item 3)
  reliability.py soak [--secs 3600] [--guest]    soak; --guest: in a qemu guest (item 6)
  reliability.py plot CSV [-o SVG]               soak CSV -> SVG (no plotting library)
  reliability.py ci                              socket fuzz with 2000 requests (crash
                                                 and soak run at CI counts in cargo test)
  reliability.py all                             full counts (make reliability)

Each item writes reliability/results/<item>.md (one table row plus details);
reliability/results.md is rebuilt from them after every run and RELIABILITY.md quotes it
(`ci` writes under target/reliability-ci/ instead).
The Rust halves are root tests (tests/reliability_*.rs) run through cargo; the state-file,
ledger and crash-point unit tests run with `cargo test --lib`.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "reliability" / "results"
# Where results.md is rebuilt; `ci` points both under target/ so that `make test` leaves
# the tracked results of full runs alone.
TABLE = REPO / "reliability" / "results.md"
BIN = REPO / "target" / "release"
CARGO = os.environ.get("CARGO", "cargo")


def log(msg):
    print(f"reliability: {msg}", file=sys.stderr, flush=True)


def write_result(item, row, details=""):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{item}.md").write_text(row.rstrip() + "\n" + (details.rstrip() + "\n" if details else ""))
    rebuild_table()


def rebuild_table():
    order = ["crash", "fuzz", "soak", "soak-guest"]
    rows, details = [], []
    for item in order:
        f = OUT / f"{item}.md"
        if not f.exists():
            continue
        lines = f.read_text().splitlines()
        rows.append(lines[0])
        if len(lines) > 1:
            details.append(f"### {item}\n\n" + "\n".join(lines[1:]))
    text = ("| item | run | tried | survived | lost / wrong | figures |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + "\n\n".join(details) + "\n")
    TABLE.write_text(text)


def cargo_test(test, name, env, timeout):
    """Runs one root test through cargo; returns (ok, combined output)."""
    cmd = [CARGO, "test", "--release", "--test", test, "--", "--exact", name,
           "--include-ignored", "--test-threads=1", "--nocapture"]
    e = dict(os.environ, **{k: str(v) for k, v in env.items()})
    try:
        r = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        return False, f"timeout after {timeout} s\n{ex.stdout or ''}{ex.stderr or ''}"
    return r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ item 1: crash
def crash(n, seed, mode):
    out = REPO / "target" / "reliability" / "crash.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    env = {"BPFTUNE_CRASH_N": n, "BPFTUNE_CRASH_OUT": out}
    if seed is not None:
        env["BPFTUNE_CRASH_SEED"] = seed
    ok, text = cargo_test("reliability_crash", "crash_anywhere_then_rollback_restores_every_original",
                          env, timeout=60 + 40 * n)
    lines = out.read_text().splitlines() if out.exists() else []
    tried = len(lines)
    good = sum(1 for l in lines if l.endswith("result=ok"))
    kinds = {}
    for l in lines:
        f = dict(kv.split("=", 1) for kv in l.split())
        k = f["kind"]
        kinds.setdefault(k, [0, 0, 0])
        kinds[k][0] += 1
        kinds[k][1] += f["hit"] == "true"
        kinds[k][2] += int(f["changed_before_crash"])
    seed_line = next((l for l in text.splitlines() if "BPFTUNE_CRASH_SEED=" in l), "")
    fig = "; ".join(f"{k}: {v[0]} (crash point hit {v[1]}, {v[2]} sysctls changed before)" for k, v in kinds.items())
    row = f"| 1 crash anywhere | {mode} | {tried} | {good} | {tried - good} | {fig} |"
    details = f"{seed_line.strip()}\n\n```\n" + "\n".join(lines) + "\n```"
    if not ok:
        details += "\n\nTest output tail:\n```\n" + "\n".join(text.splitlines()[-40:]) + "\n```"
    write_result("crash", row, details)
    log(row)
    return ok and tried == n and good == n


# ------------------------------------------------------------------ item 3: socket fuzz
class Daemon:
    """A bpftune daemon run by `bpftune-testbed daemon` (private dirs; JSON lines)."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [str(BIN / "bpftune-testbed"), "daemon", "--bpftune", str(BIN / "bpftune"), "--no-debug",
             "--restore-globals", "--tag", "fuzz", "--", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready = threading.Event()
        self.info = {}
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(300):  # includes waiting for other daemons (180 s)
            raise RuntimeError("daemon not ready: " + "\n".join(self.lines[-20:]))

    def _read(self):
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            if ev.get("event") == "spawned":
                self.info = ev
            elif ev.get("event") == "log":
                self.lines.append(ev["line"])
                if ev.get("ready"):
                    self.ready.set()
        self.ready.set()

    def stop(self):
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(60)


def proc_stats(pid):
    st = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(l.split()[1]) for l in st.splitlines() if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def query_names(help_reply):
    """The queries the daemon serves, from its `help` reply ("%20s %40s" per query, C's
    table order): derived, not a copy here that drifts (one lacked advice/jadvice)."""
    names = [l.split()[0] for l in help_reply.rstrip(b"\0").decode().splitlines() if l.strip()]
    if "help" not in names:
        raise RuntimeError(f"help reply lists no queries: {help_reply[:200]!r}")
    return names


def mutate(rng, valid):
    """One hostile request, built from one of the `valid` query names: (bytes, how to
    end it)."""
    kind = rng.randrange(8)
    base = rng.choice(valid).encode()
    if kind == 0:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    elif kind == 1:  # oversized
        data = b"A" * rng.choice([81, 127, 128, 129, 1000, 4096, 65536])
    elif kind == 2:  # flipped bits in a valid name
        b = bytearray(base)
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        data = bytes(b)
    elif kind == 3:  # valid prefix plus junk (prefix match)
        data = base + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
    elif kind == 4:  # embedded NULs / newlines
        data = base[: rng.randrange(len(base) + 1)] + rng.choice([b"\0", b"\n", b"\r\n", b"\0\0junk"]) + base
    elif kind == 5:  # invalid UTF-8
        data = b"\xff\xfe" + base
    elif kind == 6:  # empty
        data = b""
    else:
        data = base
    end = rng.choice(["nul", "shut", "close", "none"])
    return data, end


def one_request(path, data, end, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        if data:
            s.sendall(data)
        if end == "nul":
            s.sendall(b"\0")
        elif end == "shut":
            s.shutdown(socket.SHUT_WR)
        elif end == "close":
            return b""
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            out += c
            if len(out) > 1 << 20:
                break
        return out
    except (ConnectionError, BrokenPipeError, socket.timeout):
        return b""
    finally:
        s.close()


def query(path, q, busy=None):
    """A valid query; a "server busy" reply (all connection slots taken by the fuzzing
    clients, the designed refusal) is retried up to 20 times and counted in busy[0]."""
    for _ in range(20):
        r = one_request(path, q.encode(), "nul", timeout=15.0)
        if not r.startswith(b"error: server busy"):
            return r
        if busy is not None:
            busy[0] += 1
        time.sleep(0.05)
    return r


def fuzz(n, clients, mode, lorises=4):
    d = Daemon([])
    pid = d.info["pid"]
    sock = str(Path(d.info["run_dir"]) / "query.sock")
    expect = {q: query(sock, q) for q in ("tuners", "help", "tunables")}
    for q, r in expect.items():
        if not r.endswith(b"\0") or len(r) < 20:
            d.stop()
            raise RuntimeError(f"baseline query {q} failed: {r[:100]!r}")
    valid = query_names(expect["help"])
    rss0, fds0 = proc_stats(pid)
    stats = {"sent": 0, "wrong": 0, "checks": 0}
    busy = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def worker(k):
        rng = random.Random(1000 + k)
        while not stop.is_set():
            with lock:
                if stats["sent"] >= n:
                    return
                stats["sent"] += 1
            data, end = mutate(rng, valid)
            # "none": the request is left unfinished and abandoned after 50 ms (the
            # slow-loris threads are the clients that stay); waiting longer only slowed
            # the run (1 in 4 requests held a client 0.5 s: 45-80 req/s).
            one_request(sock, data, end, timeout=0.05 if end == "none" else 5.0)

    def slowloris():
        # A few connections that send one byte at a time and never finish.
        while not stop.is_set():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
                for _ in range(5):
                    if stop.is_set():
                        break
                    s.send(b"t")
                    time.sleep(0.3)
            except OSError:
                pass
            finally:
                s.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    threads += [threading.Thread(target=slowloris) for _ in range(lorises)]
    for t in threads:
        t.start()
    samples = [(0.0, rss0, fds0)]
    alive = True
    while any(t.is_alive() for t in threads[:clients]):
        time.sleep(2)
        if not Path(f"/proc/{pid}").exists():
            alive = False
            break
        for q, r in expect.items():
            got = query(sock, q, busy)
            with lock:
                stats["checks"] += 1
                if got != r:
                    stats["wrong"] += 1
        samples.append((time.monotonic() - t0, *proc_stats(pid)))
    stop.set()
    for t in threads:
        t.join(10)
    secs = time.monotonic() - t0
    alive = alive and Path(f"/proc/{pid}").exists()
    time.sleep(3)  # IO_TIMEOUT: stuck connections are dropped
    rss1, fds1 = proc_stats(pid) if alive else (0, 0)
    d.stop()
    peak = max(s[1] for s in samples)
    ok = alive and stats["wrong"] == 0 and fds1 <= fds0 and rss1 - rss0 < 1024
    row = (f"| 3 socket fuzz | {mode} | {stats['sent']} requests ({clients} clients + {lorises} slow-loris) | "
           f"{'daemon alive' if alive else 'DAEMON DIED'} | {stats['wrong']} wrong of {stats['checks']} valid queries ({busy[0]} busy replies retried) | "
           f"RSS {rss0} -> {rss1} kB (peak {peak}), fds {fds0} -> {fds1}, {stats['sent'] / secs:.0f} req/s |")
    write_result("fuzz", row)
    log(row)
    return ok


# ------------------------------------------------------------------ item 6: soak
def soak(secs, guest, mode):
    item = "soak-guest" if guest else "soak"
    csv = REPO / "target" / "reliability" / f"{item}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    every = 60 if secs >= 600 else max(5, secs // 12)
    # Guest vCPUs: 1 by default (leaves a host core free); BPFTUNE_KM_CPUS overrides.
    cpus = int(os.environ.get("BPFTUNE_KM_CPUS", "1"))
    if guest:
        exe = subprocess.run([CARGO, "test", "--release", "--test", "reliability_soak", "--no-run",
                              "--message-format=json"], cwd=REPO, capture_output=True, text=True)
        path = next(json.loads(l)["executable"] for l in exe.stdout.splitlines()
                    if '"executable":"' in l and "reliability_soak" in l)
        outdir = REPO / "target" / "reliability" / "soak-guest"
        cmd = [str(REPO / "scripts" / "kernel-matrix.sh"), "--kernel", "6.12", "--timeout", str(secs + 1200),
               "--quiet", "-o", str(outdir), "-e", f"BPFTUNE_SOAK_SECS={secs}", "-e",
               f"BPFTUNE_SOAK_SAMPLE_SECS={every}", "-e", "BPFTUNE_SOAK_READY_SECS=600", "--", "bash", "-c",
               f"BPFTUNE_SOAK_OUT=$KM_OUT/soak.csv exec {path} --exact soak_resources_stay_flat "
               "--include-ignored --test-threads=1 --nocapture"]
        r = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, BPFTUNE_KM_CPUS=str(cpus)))
        ok = r.returncode == 0
        src = outdir / "6.12" / "soak.csv"
        text = (outdir / "6.12" / "output.log").read_text(errors="replace") if (outdir / "6.12" / "output.log").exists() else ""
        if src.exists():
            csv.write_text(src.read_text())
    else:
        ok, text = cargo_test("reliability_soak", "soak_resources_stay_flat",
                              {"BPFTUNE_SOAK_SECS": secs, "BPFTUNE_SOAK_SAMPLE_SECS": every,
                               "BPFTUNE_SOAK_OUT": csv}, timeout=secs + 300)
    summary = [l.strip() for l in text.splitlines() if l.startswith("soak: ")]
    svg = REPO / "reliability" / f"{item}.svg"
    figures = plot(csv, svg) if csv.exists() else "no samples"
    row = (f"| 6 soak | {mode}{f' (qemu guest, {cpus} vCPU, Debian 6.12)' if guest else ''} | {secs} s | "
           f"{'passed' if ok else 'FAILED'} | {'0' if ok else 'see details'} | {figures} |")
    write_result(item, row, "\n".join(f"    {l}" for l in summary) + f"\n\nPlot: [{svg.name}]({svg.name})")
    log(row)
    return ok


def slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


def plot(csv, svg):
    """Small multiples (RSS, fds, CPU %, bookkeeping sizes) over time as an SVG."""
    rows = [l.split(",") for l in Path(csv).read_text().splitlines() if l.strip()]
    head, data = rows[0], [[float(x) for x in r] for r in rows[1:] if len(r) == len(rows[0])]
    if len(data) < 2:
        Path(svg).write_text('<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40">'
                             '<text x="10" y="25">not enough samples</text></svg>\n')
        return "not enough samples"
    col = {h: i for i, h in enumerate(head)}
    t = [r[col["t_s"]] / 60 for r in data]
    cpu = [0.0] + [100 * (data[i][col["cpu_s"]] - data[i - 1][col["cpu_s"]]) /
                   max(1e-9, data[i][col["t_s"]] - data[i - 1][col["t_s"]]) for i in range(1, len(data))]
    panels = [("RSS (kB)", [r[col["rss_kb"]] for r in data]),
              ("open fds", [r[col["fds"]] for r in data]),
              ("CPU % (per interval)", cpu),
              ("netns known", [r[col["netns_known"]] for r in data]),
              ("persisted originals", [r[col["originals"]] for r in data]),
              ("ledger spans", [r[col["spans"]] for r in data]),
              ("recent change records (a bounded ring)", [r[col["changes"]] for r in data])]
    W, H, PW, PH, M = 900, 120 * len(panels) + 40, 760, 80, 100
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{M}" y="18" font-size="13">bpftune soak: {t[-1]:.0f} min, {len(data)} samples ({Path(csv).name})</text>']
    figs = []
    for k, (name, ys) in enumerate(panels):
        y0 = 40 + k * 120
        lo, hi = min(ys), max(ys)
        if hi == lo:
            lo, hi = lo - 1, hi + 1
        sx = lambda x: M + PW * (x - t[0]) / max(1e-9, t[-1] - t[0])
        sy = lambda y: y0 + PH - PH * (y - lo) / (hi - lo)
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(t, ys))
        k_per_min = slope(t[1:], ys[1:]) if len(t) > 2 else 0.0
        out += [f'<rect x="{M}" y="{y0}" width="{PW}" height="{PH}" fill="none" stroke="#ccc"/>',
                f'<text x="{M - 8}" y="{y0 + 10}" text-anchor="end">{hi:.0f}</text>',
                f'<text x="{M - 8}" y="{y0 + PH}" text-anchor="end">{lo:.0f}</text>',
                f'<text x="{M + 4}" y="{y0 - 4}">{name}: slope {k_per_min:+.2f}/min (after the first sample)</text>',
                f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>']
        if name in ("RSS (kB)", "open fds"):
            figs.append(f"{name.split()[-1] if name == 'open fds' else name.split()[0]} {ys[0]:.0f}->{ys[-1]:.0f} ({k_per_min:+.1f}/min)")
        if name == "RSS (kB)":
            # Once the change-record ring stops growing (it is full), RSS must be flat:
            # the slope from there on is the one that tells a leak from the fill.
            ch = [r[col["changes"]] for r in data]
            full = ch.index(ch[-1])
            if len(data) - full >= 3:
                after = slope(t[full:], ys[full:])
                out.append(f'<text x="{M + PW}" y="{y0 - 4}" text-anchor="end">after the ring filled '
                           f'({t[full]:.0f} min): {ys[full]:.0f}->{ys[-1]:.0f}, slope {after:+.2f}/min</text>')
                figs.append(f"RSS after the ring filled at {t[full]:.0f} min: {ys[full]:.0f}->{ys[-1]:.0f} ({after:+.1f}/min)")
    out.append(f'<text x="{M}" y="{H - 8}">minutes since the daemon was ready (0 - {t[-1]:.0f})</text></svg>')
    Path(svg).write_text("\n".join(out) + "\n")
    return ", ".join(figs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crash")
    c.add_argument("--n", type=int, default=60)
    c.add_argument("--seed", type=int)
    f = sub.add_parser("fuzz")
    f.add_argument("--requests", type=int, default=1_000_000)
    f.add_argument("--clients", type=int, default=8)
    s = sub.add_parser("soak")
    s.add_argument("--secs", type=int, default=3600)
    s.add_argument("--guest", action="store_true")
    p = sub.add_parser("plot")
    p.add_argument("csv")
    p.add_argument("-o", "--out")
    sub.add_parser("ci")
    sub.add_parser("all")
    a = ap.parse_args()
    if os.geteuid() != 0 and a.cmd != "plot":
        sys.exit("reliability.py: needs root")
    if a.cmd == "crash":
        ok = crash(a.n, a.seed, "full")
    elif a.cmd == "fuzz":
        ok = fuzz(a.requests, a.clients, "full")
    elif a.cmd == "soak":
        ok = soak(a.secs, a.guest, "full")
    elif a.cmd == "plot":
        print(plot(a.csv, a.out or str(Path(a.csv).with_suffix(".svg"))))
        ok = True
    elif a.cmd == "ci":
        global OUT, TABLE
        OUT = REPO / "target" / "reliability-ci" / "results"
        TABLE = REPO / "target" / "reliability-ci" / "results.md"
        # The crash (3 iterations) and soak (60 s) root tests run at their CI counts
        # inside `cargo test`; the fuzz has no Rust half.
        ok = fuzz(2_000, 8, "ci")
    else:
        ok = all([crash(60, None, "full"), fuzz(1_000_000, 8, "full"), soak(3600, True, "full")])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""BPF run time of a bpftune daemon's programs under a load, from the kernel's own
accounting (kernel.bpf_stats_enabled=1, restored on exit).

    scripts/bpf-prog-stats.py [--secs N] [--udp] -- <bpftune args…>

Starts target/release/bpftune -s <args>, runs a loopback iperf3 load (TCP, or UDP at full
rate with --udp, which makes the receiver drop and so exercises kfree_skb) and prints, per
attached program: tracepoint, calls, ns per call and % of one CPU core over the load.
Program ids are mapped to tracepoints through the daemon's BPF link fds (/proc/PID/fdinfo).
"""
import argparse, os, signal, subprocess, sys, time

STATS = "/proc/sys/kernel/bpf_stats_enabled"


def fdinfo(pid):
    out = []
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(f"{d}/{fd}") as f:
                kv = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue
        out.append({k.strip(): v.strip() for k, v in kv.items()})
    return out


def snapshot(pid):
    progs, names = {}, {}
    for kv in fdinfo(pid):
        if "run_time_ns" in kv and "prog_id" in kv:
            progs[kv["prog_id"]] = (int(kv["run_time_ns"]), int(kv["run_cnt"]))
        elif "link_type" in kv and "prog_id" in kv:
            names[kv["prog_id"]] = kv.get("tp_name") or kv.get("attach_type") or kv["link_type"]
    return progs, names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--udp", action="store_true")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    old = open(STATS).read().strip()
    d = srv = None
    try:
        with open(STATS, "w") as f:
            f.write("1")
        d = subprocess.Popen(["target/release/bpftune", "-s"] + a.args,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        srv = subprocess.Popen(["iperf3", "-s", "-p", "5299", "-1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        p0, names = snapshot(d.pid)
        t0 = time.monotonic_ns()
        cmd = ["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", str(a.secs)]
        if a.udp:
            cmd += ["-u", "-b", "0", "-l", "1400"]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        wall = time.monotonic_ns() - t0
        p1, _ = snapshot(d.pid)
        print(f"load: loopback iperf3 {'UDP' if a.udp else 'TCP'} {a.secs} s; wall {wall / 1e9:.2f} s")
        print(f"{'program (tracepoint)':32} {'calls':>10} {'ns/call':>8} {'% of a core':>12}")
        for pid_, (t1, c1) in sorted(p1.items()):
            t0_, c0 = p0.get(pid_, (0, 0))
            dt, dc = t1 - t0_, c1 - c0
            name = names.get(pid_, f"prog {pid_} (no link)")
            per = dt / dc if dc else 0
            print(f"{name:32} {dc:>10} {per:>8.0f} {100.0 * dt / wall:>11.3f}%")
    finally:
        for p in (srv, d):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        with open(STATS, "w") as f:
            f.write(old)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""BPF run time of the drop-signal hooks (udp_buffer, ip_frag) under loads that fire them.

Usage (root, release build): python3 bench/drop_hooks.py [--secs N] [--bpftune PATH]
(--bpftune: another build, e.g. a copy of the binary before a change, for a before/after
comparison under the same host conditions; default target/release/bpftune)

For each load, a fresh namespace, a daemon `bpftune -s -a udp_buffer -a ip_frag -a sysctl`
started before the load and stopped after it, and BPF_ENABLE_STATS (an fd: nothing global
is written, the kernel stops counting when we exit). Reports per program: calls, ns per
call, and run time as % of one core over the load window. Loads:

  tcp-lo       iperf3 over lo (the standard overhead load; hardly any drops)
  udp-noport   UDP datagrams to a closed port: every one is a kfree_skb (NO_SOCKET)
  udp-rcvbuf   UDP into a socket with SO_RCVBUF 4 KiB that never reads: every datagram is
               a receive-buffer drop (udp_fail_queue_rcv_skb) plus a kfree_skb
  frag-full    60000-byte datagrams into a namespace whose ipfrag_high_thresh was set
               (as an administrator, so the tuner keeps out) to 256 KiB: most fragments
               are dropped over the threshold (kfree_skb NOT_SPECIFIED, fragment path)
"""
import argparse
import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPFTUNE = os.path.join(ROOT, "target/release/bpftune")
NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    return libc.syscall(NR_BPF, cmd, ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))


def enable_stats():
    attr = (ctypes.c_uint8 * 8)()  # enable_stats.type = BPF_STATS_RUN_TIME (0)
    fd = bpf(32, attr)  # BPF_ENABLE_STATS
    if fd < 0:
        sys.exit("BPF_ENABLE_STATS failed")
    return fd


def prog_name(prog_id):
    """Name of a BPF program by id (BPF_PROG_GET_FD_BY_ID + BPF_OBJ_GET_INFO_BY_FD)."""
    attr = (ctypes.c_uint8 * 16)()
    ctypes.c_uint32.from_buffer(attr, 0).value = prog_id
    fd = bpf(13, attr)
    if fd < 0:
        return f"id {prog_id}"
    info = (ctypes.c_uint8 * 256)()
    a = (ctypes.c_uint8 * 16)()
    ctypes.c_uint32.from_buffer(a, 0).value = fd
    ctypes.c_uint32.from_buffer(a, 4).value = 256
    ctypes.c_uint64.from_buffer(a, 8).value = ctypes.addressof(info)
    r = bpf(15, a)
    os.close(fd)
    if r < 0:
        return f"id {prog_id}"
    return bytes(info[64:80]).split(b"\0")[0].decode()


def prog_stats(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            kv = dict(l.split(":", 1) for l in open(f"/proc/{pid}/fdinfo/{fd}").read().splitlines() if ":" in l)
        except OSError:
            continue
        if "run_time_ns" in kv and "prog_id" in kv:
            out[int(kv["prog_id"])] = (int(kv["run_cnt"]), int(kv["run_time_ns"]))
    return out


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Ns:
    def __init__(self, tag):
        self.name = f"bpt-bench-{tag}-{os.getpid()}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def run(self, *args, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kw)

    def sysctl(self, key, value):
        sh("ip", "netns", "exec", self.name, "sysctl", "-qw", f"{key}={value}")

    def close(self):
        sh("ip", "netns", "del", self.name, check=False)


def sender(ns, code, secs):
    """Runs python `code` (a UDP sender loop) in `ns` for `secs`."""
    p = ns.run(sys.executable, "-c", code, str(secs), stdout=subprocess.DEVNULL)
    p.wait()


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


def load_tcp(ns, secs):
    srv = ns.run("iperf3", "-s", "-1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    ns.run("iperf3", "-c", "127.0.0.1", "-t", str(secs), stdout=subprocess.DEVNULL).wait()
    srv.wait(timeout=10)


def load_noport(ns, secs):
    sender(ns, UDP_FLOOD.format(port=9, size=100), secs)


def load_rcvbuf(ns, secs):
    rx = ns.run(sys.executable, "-c", (
        "import socket,time,sys\n"
        "r=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "r.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4096)\n"
        "r.bind(('127.0.0.1',9400)); time.sleep(float(sys.argv[1]))\n"), str(secs + 1))
    time.sleep(0.3)
    sender(ns, UDP_FLOOD.format(port=9400, size=1000), secs)
    rx.wait()


NFT_FRAG = """table ip bpt_bench_frag {
  chain pre {
    type filter hook prerouting priority -300;
    ip frag-off & 0x1fff == 0 ip frag-off & 0x2000 != 0 numgen inc mod 2 == 0 drop
  }
}
"""


def load_frag(ns, secs):
    # lo with an Ethernet MTU fragments the datagrams; losing the first fragment of every
    # second one leaves incomplete queues that fill reassembly memory (recipe F).
    sh("ip", "-n", ns.name, "link", "set", "lo", "mtu", "1500")
    subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=NFT_FRAG, text=True, check=True)
    sender(ns, UDP_FLOOD.format(port=9, size=60000), secs)


LOADS = {
    "tcp-lo": (load_tcp, None),
    "udp-noport": (load_noport, None),
    "udp-rcvbuf": (load_rcvbuf, None),
    "frag-full": (load_frag, [("net.ipv4.ipfrag_low_thresh", "131072"), ("net.ipv4.ipfrag_high_thresh", "262144")]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--bpftune", default=BPFTUNE)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    stats_fd = enable_stats()
    print(f"{'load':12} {'program':18} {'calls':>10} {'ns/call':>8} {'% of a core':>12}")
    for label, (load, admin) in LOADS.items():
        ns = Ns(label)
        tmp = tempfile.mkdtemp(prefix="bpftune-bench-drop-")
        env = dict(os.environ, BPFTUNE_RUN_DIR=f"{tmp}/run", BPFTUNE_STATE_DIR=f"{tmp}/state")
        d = subprocess.Popen([args.bpftune, "-s", "-R", "-c", f"{tmp}/cgroupv2", "-a", "udp_buffer", "-a", "ip_frag",
                              "-a", "sysctl"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            for line in d.stderr:
                if "bpftune started" in line:
                    break
            if admin:
                # An administrator's write: the tuner keeps out of this namespace, the
                # hooks keep running.
                for k, v in admin:
                    ns.sysctl(k, v)
                time.sleep(0.5)
            before = prog_stats(d.pid)
            t0 = time.monotonic_ns()
            load(ns, args.secs)
            window = time.monotonic_ns() - t0
            after = prog_stats(d.pid)
            for pid_, (cnt, rt) in sorted(after.items()):
                c0, r0 = before.get(pid_, (0, 0))
                calls, ns_ = cnt - c0, rt - r0
                name = prog_name(pid_)
                if name.startswith("bpftune_sysctl"):
                    continue
                per = ns_ / calls if calls else 0
                print(f"{label:12} {name:18} {calls:>10} {per:>8.0f} {100.0 * ns_ / window:>11.4f}%")
        finally:
            d.send_signal(signal.SIGTERM)
            try:
                d.wait(timeout=15)
            except subprocess.TimeoutExpired:
                d.kill()
            ns.close()
            subprocess.run(["umount", f"{tmp}/cgroupv2"], capture_output=True)
            subprocess.run(["rm", "-rf", tmp])
    os.close(stats_fd)


if __name__ == "__main__":
    main()

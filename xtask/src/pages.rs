//! The prose of the man pages that clap cannot know: bpftune(8)'s extra sections and one
//! page per tuner. roff source; the generator adds the title lines and the parts that come
//! from the code (options, query and tuner lists, tunables).
//!
//! Figures in OVERHEAD sections are quoted from BENCHMARKS.md or the tuner's README; every
//! [`Quote`] is checked by the tests to occur verbatim in both the page and its source, so
//! a re-measured figure cannot silently disagree with the page.

/// A figure quoted on a page and the file it is quoted from (relative to the repository).
pub struct Quote {
    pub source: &'static str,
    pub text: &'static str,
}

/// One per-tuner page (`bpftune-<page>(8)`), following C bpftune's set of pages.
pub struct TunerPage {
    /// File stem, e.g. `bpftune-tcp-buffer`.
    pub page: &'static str,
    /// The tuner's name in the code (`tuners::names()`), or `None` for a page about a
    /// core feature C bpftune implemented as a tuner (netns).
    pub tuner: Option<&'static str>,
    /// NAME line after "\-".
    pub summary: &'static str,
    pub description: &'static str,
    pub watches: &'static str,
    pub changes: &'static str,
    pub limits: &'static str,
    pub overhead: &'static str,
    pub quotes: &'static [Quote],
}

/// Daemon-wide figures every OVERHEAD section starts from.
pub const COMMON_OVERHEAD: &str = r#".PP
Whole daemon, all seven tuners loaded, measured by \fBbench/run.sh\fR (BENCHMARKS.md,
2026-11-28, 2 vCPU VM, kernel 6.18, host busy with other builds): resident memory under
load \fB7.7 MiB\fR (VmHWM 7.8); daemon CPU under a loopback iperf3 load \fB0.102 %\fR of
a core (schedstat); idle \fB0.10 % of a core\fR and \fB3.5 /s\fR wake-ups; start-up to
all tuners attached \fB229 ms\fR.
"#;

pub const COMMON_QUOTES: &[Quote] = &[
    Quote {
        source: "BENCHMARKS.md",
        text: "7.7 MiB",
    },
    Quote {
        source: "BENCHMARKS.md",
        text: "0.102 %",
    },
    Quote {
        source: "BENCHMARKS.md",
        text: "0.10 % of a core",
    },
    Quote {
        source: "BENCHMARKS.md",
        text: "3.5 /s",
    },
    Quote {
        source: "BENCHMARKS.md",
        text: "229 ms",
    },
];

pub const TUNER_PAGES: &[TunerPage] = &[
    TunerPage {
        page: "bpftune-tcp-buffer",
        tuner: Some("tcp_buffer"),
        summary: "bpftune tuner for TCP buffer limits, TCP memory and the SYN backlog",
        description: r#"The tcp_buffer tuner grows \fBnet.ipv4.tcp_rmem\fR and \fBnet.ipv4.tcp_wmem\fR
in the network namespace where sockets run into them, keeps \fBnet.ipv4.tcp_mem\fR away
from pressure and exhaustion, and sizes the SYN backlog of listeners under SYN floods.
Connections whose buffers are limited by the maximum cannot fill a long fat path: a
receive window or send buffer below the bandwidth-delay product caps throughput no
matter how fast the link is.
"#,
        watches: r#".TP
.B rmem
tracepoint \fBtcp_rcvbuf_grow\fR (older kernels: \fBtcp_rcv_space_adjust\fR, sampled):
a receiver wants a larger buffer and its \fBsk_rcvbuf\fR is within 25 % of
\fBtcp_rmem[2]\fR, the socket did not set SO_RCVBUF and memory is not low.
.TP
.B wmem
tracepoint \fBtcp_sendmsg_locked\fR (sampled, attached 100 ms each second and 3 s after
each raise; older kernels: fentry \fBtcp_sndbuf_expand\fR): \fBsk_sndbuf\fR within 25 %
of \fBtcp_wmem[2]\fR and not SO_SNDBUF-locked.
.TP
.B established
tracepoint \fBinet_sock_set_state\fR: a new connection that starts within 25 % of the
maximum posts the same increase event.
.TP
.B tcp_mem
tracepoint \fBsock_exceed_buf_limit\fR: TCP memory within 25 % of \fBtcp_mem[1]\fR
(pressure) or \fBtcp_mem[2]\fR (exhaustion).
.TP
.B syn_backlog
tracepoint \fBtcp_retransmit_synack\fR: a listener's SYN queue at least 75 % of
\fBtcp_max_syn_backlog\fR or at its listen backlog.
"#,
        changes: r#".TP
.BR net.ipv4.tcp_rmem ", " net.ipv4.tcp_wmem " (per namespace)"
maximum +25 % (one learning-rate step), at most 1/8 of TCP memory (\fBtcp_mem[2]\fR)
and below 2^31; \fBtcp_moderate_rcvbuf\fR is set to 1 with an rmem raise. When buffer
increases correlate with RTT (Pearson r > 0.75 and RTT moved at least 25 %) the maximum
is lowered by 25 %, never below the default: bigger buffers that only fill queues add
latency.
.TP
.BR net.ipv4.tcp_mem " (global)"
near pressure or exhaustion each of min/pressure/max becomes min(cap, +25 %) with caps
1/16, 1/8 and 1/4 of free buffer pages, keeping min < pressure < max.
.TP
.BR tcp_no_metrics_save ", " tcp_no_ssthresh_metrics_save ", " net.core.high_order_alloc_disable
set to 1 on entering near-exhaustion, and the earlier values restored after 30 s below
pressure: under memory exhaustion, cached metrics and high-order allocations cost
memory the host does not have.
.TP
.BR tcp_max_syn_backlog ", " tcp_syncookies " (per namespace)"
grown when a listener retransmits SYN-ACKs with a near-full queue (syncookies off),
syncookies enabled under low memory, shrunk when floods are not followed by accepted
connections, syncookies that only fail disabled.
.PP
Each change is logged as C bpftune does, e.g.
.PP
.nf
Due to need to increase max buffer size to maximize throughput change
net.ipv4.tcp_rmem(min default max) from (4096 131072 1310720) -> (4096 131072 1638400)
.fi
"#,
        limits: r#"A raised \fBtcp_rmem\fR helps only connections opened afterwards (the window
scale is fixed at the SYN); a raised \fBtcp_wmem\fR helps open connections too. Sockets
that set SO_RCVBUF/SO_SNDBUF are the application's choice and are left alone. Growth
continues while the signal repeats, up to the 1/8-of-\fBtcp_mem\fR cap, also beyond the
bandwidth-delay product of a typical path. An administrator's write of any of these
sysctls hands the namespace over (see \fBbpftune-sysctl\fR(8)).
"#,
        overhead: r#".PP
Almost all of the in-kernel cost is the per-\fBsendmsg\fR wmem hook: with its duty cycle
it costs \fB0.04–0.09 % of one core\fR at 13–23 Gbit/s of loopback traffic, and
\fBtcp_buffer 0.130 % of a core at 39.3 Gbit/s\fR with every tuner loaded;
\fBtcp_rcvbuf_grow\fR fires only when a receive buffer grows (3 runs/s under a bulk
transfer). Reaction, kernel event to sysctl write: \fB1.94 ms\fR (rmem). Outcome on a
40 ms path with a 1.3 MB receive limit: \fB159–165 Mbit/s\fR untuned,
\fB5.3–8.0 Gbit/s\fR tuned.
"#,
        quotes: &[
            Quote {
                source: "BENCHMARKS.md",
                text: "0.04–0.09 % of one core",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "tcp_buffer 0.130 % of a core at 39.3 Gbit/s",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "1.94 ms",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "159–165 Mbit/s",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "5.3–8.0 Gbit/s",
            },
        ],
    },
    TunerPage {
        page: "bpftune-tcp-conn",
        tuner: Some("tcp_conn"),
        summary: "bpftune tuner choosing TCP congestion control per path",
        description: r#"The tcp_conn tuner chooses each TCP connection's congestion control algorithm
per path by reinforcement learning over the algorithms the kernel offers (cubic, bbr,
htcp, dctcp). The aim is the optimal operating point: the bottleneck bandwidth with the
minimum RTT. On lossy paths loss-based algorithms collapse, so a connection that loses
more than 1/64 of its segments is switched to BBR.
"#,
        watches: r#"A sockops program attached to the cgroup of \fB\-c\fR. On every established
connection it asks for retransmission and state callbacks; it runs a few times per
connection (establishment, retransmissions until a switch, close), never per packet.
Every connection's end reports its min RTT and delivery rate. Paths are the gateway for
routed destinations and the peer itself for on-link ones, per network namespace; at
most 1024 paths, least recently used evicted.
"#,
        changes: r#".TP
.B per-connection congestion control
(pseudo-tunable \fBnet.persock.tcp.congestion_control\fR). A connection whose
retransmissions exceed 1/64 of its segments sent (and at least two) is switched to BBR
once, with thin linear timeouts if its namespace has them off. After 4 finished
connections on a path, new ones get the algorithm of lowest learned cost (relative RTT
inflation plus relative delivery-rate deficit), 5 % a random one as far as the kernel
offers them. A missing algorithm's module is loaded (\fBmodprobe\fR) when the daemon
can load modules; under the packaged unit (\fBProtectKernelModules=yes\fR, no
\fBCAP_SYS_MODULE\fR) it cannot, so only built-in or already-loaded algorithms are
used (load others at boot, e.g. with \fBmodules-load.d\fR(5)); missing ones are
reported once.
.TP
.B net.ipv4.tcp_allowed_congestion_control
at start-up the offered algorithms are appended ("updating '...' to '...'"), recorded
and restored by \fB\-R\fR like any change.
.PP
With \fB\-\-observe\fR no connection is changed and no module is loaded: the sockops
program makes the same decisions without setting anything, and each path's loss switch
and learned choice are logged once as proposals ("would change
net.persock.tcp.congestion_control in netns NAME from (cubic) to (bbr): ...");
the start-up change is proposed like any sysctl change.
.PP
The exit summary and the \fBsummary\fR query show "\fB# Summary: tcp_conn_tuner:\fR" lines;
\fBbpftune \-q jpaths\fR prints the per-path table as JSON.
"#,
        limits: r#"Learning needs finished connections: a path's first 3 connections keep the default
(or get the loss switch). One ring-buffer event per finished connection: a host closing
tens of thousands of connections a second spends that much user-space work. Sockets
that existed before the daemon started are not steered or measured. Connections whose
application chose an algorithm (setsockopt TCP_CONGESTION) or whose route locks one
(\fBcongctl lock\fR) are left alone.
"#,
        overhead: r#".PP
The sockops program runs a few times per connection, never per packet: in the overhead
run with every tuner loaded (loopback iperf3) it cost \fBtcp_conn 0.002 %
(sockops, 7 runs/s × 3.1 µs)\fR of a core.
Outcome on a 40 ms path with 1 % loss: tuned \fB10.3×\fR the cubic baseline; on a clean
path \fB1.01\fR.
"#,
        quotes: &[
            Quote {
                source: "BENCHMARKS.md",
                text: "tcp_conn 0.002 % (sockops, 7 runs/s × 3.1 µs)",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "10.3×",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "1.01",
            },
        ],
    },
    TunerPage {
        page: "bpftune-udp-buffer",
        tuner: Some("udp_buffer"),
        summary: "bpftune tuner for UDP receive buffers and UDP memory",
        description: r#"The udp_buffer tuner grows \fBnet.core.rmem_default\fR and \fBnet.core.rmem_max\fR
when UDP sockets drop datagrams because their receive buffer is full, and
\fBnet.ipv4.udp_mem\fR near UDP memory pressure or exhaustion. UDP sockets do not
auto-tune their buffers: a default-sized socket under a burst drops what does not fit.
All three sysctls are global; a drop in any namespace changes the host value.
"#,
        watches: r#".TP
.B udp_fail_rcv
tracepoint \fBudp_fail_queue_rcv_skb\fR with \-ENOMEM (receive buffer full): a
socket without SO_RCVBUF within 25 % of \fBrmem_default\fR, or one whose SO_RCVBUF
request was clipped by \fBrmem_max\fR; then sampled (one such drop per CPU per 25 ms),
so drops of sockets the tuner ignores cannot hide these. With \-ENOBUFS (UDP memory),
and for the ignored drops, only the UDP memory check, sampled separately.
.TP
.B udp_mem
tracepoint \fBsock_exceed_buf_limit\fR for UDP: allocated pages within 25 % of
\fBudp_mem[1]\fR or \fBudp_mem[2]\fR.
"#,
        changes: r#".TP
.B net.core.rmem_default
+25 % (8 KiB..256 MiB) for drops of default-sized sockets; \fBrmem_max\fR is raised with
it so the default never exceeds the maximum.
.TP
.B net.core.rmem_max
+25 % (at most 256 MiB) for drops of sockets whose SO_RCVBUF was clipped by it.
.TP
.B net.ipv4.udp_mem
as \fBtcp_mem\fR: each value min(cap, +25 %), caps 1/16, 1/8, 1/4 of free buffer pages.
.PP
Before each buffer change it logs "netns: COOKIE UDP in N, drops N drop rate
PER-MILLE" from the namespace's Udp/Udp6 counters.
"#,
        limits: r#"Existing sockets keep the buffer they were created with, so the effect shows on new
sockets. Sockets that set a small SO_RCVBUF are the application's choice and left
alone. Nothing is ever lowered (C bpftune's decrease path was unreachable).
"#,
        overhead: r#".PP
Both hooks fire only on failures, so they cost nothing while UDP works. Under a flood
into a full SO_RCVBUF socket: \fB186–193 ns per drop\fR, 2.1 % of a core at ~140 k
drops/s. Outcome for a 5000-datagram burst at \fBrmem_default\fR 16 KB:
\fB2568–3690 drops per burst\fR untuned, 0 after 21–26 bursts.
"#,
        quotes: &[
            Quote {
                source: "src/tuners/udp_buffer/README.md",
                text: "186–193 ns per drop",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "2568–3690 drops per burst",
            },
        ],
    },
    TunerPage {
        page: "bpftune-ip-frag",
        tuner: Some("ip_frag"),
        summary: "bpftune tuner for IP fragment reassembly memory",
        description: r#"The ip_frag tuner raises \fBnet.ipv4.ipfrag_high_thresh\fR and
\fBnet.ipv6.ip6frag_high_thresh\fR in the network namespace whose fragment reassembly
memory is full: at the threshold the kernel drops incoming fragments, so every
datagram they belonged to is lost.
"#,
        watches: r#".TP
.B frag_drop
tracepoint \fBkfree_skb\fR, drop reason NOT_SPECIFIED, fragments only: fragments
dropped while the namespace's reassembly memory is within 25 % of the threshold; then
sampled (one such drop per CPU per 25 ms).
"#,
        changes: r#".TP
.BR net.ipv4.ipfrag_high_thresh ", " net.ipv6.ip6frag_high_thresh " (per namespace)"
+25 %, at most 1/16 of free buffer memory; \-25 % if growth correlates with a rising
reassembly-failure rate (r > 0.75), because then the memory only holds datagrams that
never complete; never to or below \fBipfrag_low_thresh\fR.
"#,
        limits: r#"The signal fires only once memory is at the threshold and fragments are being
dropped; growth is one step per event. IPv6 fragments behind other extension headers
are not recognised in the kernel filter. Datagrams that lost a fragment still time out
(\fBipfrag_time\fR).
"#,
        overhead: r#".PP
About \fB65–69 ns per\fR \fBkfree_skb\fR call that fails the reason test;
\fB372–391 ns per\fR fragment dropped over the threshold, while memory stays there
(src/tuners/ip_frag/README.md). Outcome with every second datagram
losing its first fragment: \fB44/100\fR intact untuned, 100/100 tuned.
"#,
        quotes: &[
            Quote {
                source: "src/tuners/ip_frag/README.md",
                text: "65–69 ns per",
            },
            Quote {
                source: "src/tuners/ip_frag/README.md",
                text: "372–391 ns per",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "44/100",
            },
        ],
    },
    TunerPage {
        page: "bpftune-net-buffer",
        tuner: Some("net_buffer"),
        summary: "bpftune tuner for the per-CPU backlog and NAPI budget",
        description: r#"The net_buffer tuner grows \fBnet.core.netdev_max_backlog\fR when packets are
dropped at a full per-CPU backlog, sets \fBnet.core.flow_limit_cpu_bitmap\fR for the
dropping CPU, and grows \fBnet.core.netdev_budget\fR and \fBnetdev_budget_usecs\fR when
NAPI polling runs out of budget (time squeezes). All are global.
"#,
        watches: r#".TP
.B backlog_drops
tracepoint \fBkfree_skb\fR with drop reason CPU_BACKLOG (from BTF): at least
backlog/32 drops in a minute.
.TP
.B time squeezes
\fI/proc/net/softnet_stat\fR, polled each second.
"#,
        changes: r#".TP
.B net.core.netdev_max_backlog
+25 % (at most 2^20).
.TP
.B net.core.flow_limit_cpu_bitmap
the dropping CPU's bit set, written as the kernel's hexadecimal CPU mask, so one
elephant flow cannot fill the backlog alone.
.TP
.BR net.core.netdev_budget ", " net.core.netdev_budget_usecs
+25 % until usecs would pass 50 ms; \-25 % (not below the starting values) when growth
correlates with scheduler waiting (schedstat or CPU PSI): longer softirq polls delay
other work.
.TP
.B net.core.high_order_alloc_disable
0 at start-up on kernels from 5.14.
"#,
        limits: r#"Drops are seen per CPU, not per device or namespace (the backlog is shared). With
RPS the flow-limit bit goes to the enqueuing CPU.
"#,
        overhead: r#".PP
Loopback UDP at full rate with the receiver dropping: 334 632 \fBkfree_skb\fR calls in
5 s, \fB65 ns each, 0.43 % of one core\fR; with TCP (no drops) 20 calls, 0.000 %.
Outcome for a 200 k-packet burst at backlog 8: \fB517–2180 drops\fR untuned, 0 tuned.
"#,
        quotes: &[
            Quote {
                source: "src/tuners/net_buffer/README.md",
                text: "65 ns each, 0.43 % of one core",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "517–2180 drops",
            },
        ],
    },
    TunerPage {
        page: "bpftune-neigh",
        tuner: Some("neigh_table"),
        summary: "bpftune tuner for the ARP and NDISC neighbour tables",
        description: r#"The neigh_table tuner grows the garbage-collection thresholds of the ARP and NDISC
neighbour tables when a table is nearly full. A full table shows up as "Neighbour table
overflow." in the kernel log and as failing neighbour creation: hosts become
unreachable.
"#,
        watches: r#".TP
.B neigh_create
tracepoint \fBneigh_create\fR in any namespace: the table's GC-able entries within
25 % of \fBgc_thresh3\fR.
.TP
.B neigh_release
tracepoint \fBneigh_cleanup_and_release\fR: a table grown past 1024 is nearly empty.
"#,
        changes: r#".TP
.BR net.ipv4.neigh.default.gc_thresh1/2/3 ", " net.ipv6.neigh.default.gc_thresh1/2/3
global tables, written from the initial namespace with RTM_SETNEIGHTBL and read back:
+25 % each, \fBgc_thresh3\fR capped by the device's on-link prefixes; \-25 % each when
nearly empty, back to 128/512/1024 at the bottom. A change made with \fBip ntable
change\fR is noticed and hands the tables to the administrator.
"#,
        limits: r#"Thresholds are per table, not per device. A full table for a device without an
on-link prefix is never grown (cap 0), as in C bpftune.
"#,
        overhead: r#".PP
Both hooks fire only when neighbours are created or released: under a 5 s loopback
iperf3 load 1 call, \fB0.000 % of a core\fR. Outcome with thresholds 16/32/64 and 200
neighbours added: \fB136/200 failed\fR untuned, 0/200 tuned.
"#,
        quotes: &[
            Quote {
                source: "src/tuners/neigh_table/README.md",
                text: "0.000 % of a core",
            },
            Quote {
                source: "BENCHMARKS.md",
                text: "136/200 failed",
            },
        ],
    },
    TunerPage {
        page: "bpftune-sysctl",
        tuner: Some("sysctl"),
        summary: "bpftune tuner that hands sysctls over to the administrator",
        description: r#"The sysctl tuner gets bpftune out of the administrator's way: when any other
process writes a sysctl a tuner manages, that tuner stops changing it in that
namespace, the initial namespace included, until bpftune restarts.
"#,
        watches: r#".TP
.B sysctl_write
a \fBcgroup/sysctl\fR program on the cgroup-v2 root (\fB\-c\fR) sees every sysctl write
by every process; reads, bpftune's own writes and non-net names are ignored in the
kernel.
"#,
        changes: r#"Nothing itself. It logs
.PP
.nf
pid 4242, cmd 'sysctl' modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer'
uses; disabling 'tcp_buffer' for namespace cookie 4097
.fi
.PP
and the tuner's state in the \fBtuners\fR query becomes "manual". Writing the same value
counts as taking it over. Rollback never restores a sysctl the administrator wrote.
"#,
        limits: r#"Re-enabling requires a restart. Writes through netlink (neighbour tables) are not
sysctl writes; \fBbpftune-neigh\fR(8) reads its thresholds back instead.
"#,
        overhead: r#".PP
The program runs only on sysctl accesses: \fBcgroup/sysctl\fR 7 runs/s in the overhead
run.
"#,
        quotes: &[Quote {
            source: "BENCHMARKS.md",
            text: "`cgroup/sysctl` 7 runs/s",
        }],
    },
    TunerPage {
        page: "bpftune-netns",
        tuner: None,
        summary: "how bpftune tunes every network namespace",
        description: r#"C bpftune has a netns tuner; here namespace handling is part of the daemon.
Every event carries the network namespace cookie of the socket or device it came
from, and namespaced sysctls are written in that namespace, so containers are tuned
with their own limits.
"#,
        watches: r#"Namespaces that exist at start-up (every process's and every \fI/run/netns\fR
entry's), \fI/run/netns\fR via inotify, and a rescan every 5 s for the rest. No
namespace file descriptor is held open, so namespace churn leaves the fd count flat.
"#,
        changes: r#"Nothing itself. Per-namespace policy needs netns cookies (SO_NETNS_COOKIE, Linux
5.14+); \fBbpftune \-S\fR reports it. A namespace's state (active, manual) is per tuner.
"#,
        limits: r#"Originals saved for a namespace that is gone are forgotten (there is nothing to
restore). A namespace without a \fI/run/netns\fR name is found through \fI/proc/PID/ns/net\fR
of a process in it.
"#,
        overhead: r#".PP
Namespace churn of 30 namespaces leaves fd and thread counts flat (kernel matrix).
"#,
        quotes: &[],
    },
];

/// bpftune(8) sections after OPTIONS, before the generated QUERIES/TUNERS lists.
pub const MAIN_INTRO_TUNERS: &str = r#"Each tuner has its own page, listed below; \fB\-a\fR loads only the named ones,
\fBbpftune \-S\fR says which hooks each can use on this kernel. These tuners are built
in; more can be added as plugins (see \fBPLUGINS\fR).
"#;

pub const MAIN_AFTER: &str = r#".SH PLUGINS
Plugin tuners are shared objects named \fIname\fB_tuner.so\fR implementing
\fIinclude/bpftune/plugin.h\fR, plugin ABI version \fB1\fR
(\fBBPFTUNE_PLUGIN_ABI_VERSION\fR); they embed their BPF object and propose changes
through the daemon, which applies, records and rolls them back like a built-in
tuner's (observe mode included). They are loaded from the system plugin directory
(printed by \fB\-P\fR; the Debian package creates it) and the \fB\-l\fR directory at
start-up and while running (inotify): a new file is loaded, a removed or replaced one
unloaded (programs detached, its changes kept for rollback).
A file is loaded only if its name is exactly \fIname\fB_tuner.so\fR (no
\fI.dpkg\-new\fR, \fI~\fR, \fI.tmp\fR), it is a regular file (not a symlink) owned by
root and not writable by group or others, its directory is owned by root and not
writable by group or others, and every directory above it up to \fI/\fR is owned by
root and not writable by group or others unless sticky; a POSIX ACL granting write
counts as writable. The checks are made on descriptors opened from \fI/\fR without
following symlinks, and the checked descriptor is what is loaded
(\fI/proc/self/fd/N\fR). Then its ABI version must match and its name must not be
a built-in tuner's. Each refusal is logged once with the reason. A plugin whose
callback returns an error is disabled. A plugin directory that does not exist yet is
watched once it is created. A plugin whose code kills the daemon (SIGSEGV, SIGBUS,
SIGILL, SIGFPE, SIGABRT) is recorded in \fI/var/lib/bpftune/plugin\-crash\fR; the
restarted daemon refuses that file version until the file changes. Rollback writes
only sysctls a tuner loaded in that run manages: \fB\-\-rollback\-now\fR and a run
without the plugin keep a plugin's saved originals for a later \fB\-R\fR run that
loads it. \fB\-a\fR applies to plugins too; the
\fBtuners\fR query shows a plugin's file as a third column. See
\fIdocs/writing-a-tuner.md\fR.
.SH LOGGING
syslog (ident bpftune, facility daemon, with pid) by default; journald when started by
systemd; stderr with \fB\-s\fR, or when no syslog socket exists (said once). Every change
is logged as two lines (scenario, then "Due to ... change NAME from (OLD) -> (NEW)").
.SH METRICS
With \fB\-\-metrics\-listen\fR or \fB\-\-metrics\-textfile\fR, all prefixed
\fBbpftune_\fR: \fBbuild_info\fR{version,git},
\fBchanges_total\fR and \fBproposals_total\fR{tuner,tunable,scenario,ns_kind},
\fBtunable_value\fR{tunable,netns,index} (global values read at scrape time,
per-namespace values the latest bpftune wrote), \fBtuner_state\fR{tuner,netns,state},
\fBevents_received_total\fR and \fBevents_stale_total\fR{tuner},
\fBevents_lost_total\fR (ring buffer full, counted in BPF),
\fBbpf_run_time_seconds_total\fR and \fBbpf_run_count_total\fR{tuner,program} (while
kernel.bpf_stats_enabled=1), \fBwrite_failures_total\fR{tuner,tunable,errno} (sysctl
writes the kernel refused; present once one failed), \fBrollback_restores_total\fR,
\fBnetns_tracked\fR.
\fInetns\fR is \fBglobal\fR, the /run/netns name or \fBino:\fIINODE\fR; at most 256
values, the rest under \fBother\fR.
.SH SIGNALS
.TP
.BR SIGTERM ", " SIGINT
Stop: print the sample reports and the summary, roll back with \fB\-R\fR, detach every
BPF program and exit 0. A bpftune started meanwhile waits (up to 30 s) until this one
has exited, then takes over its saved originals; one started next to a running bpftune
exits 1 ("another bpftune query server is already listening").
.TP
.B SIGKILL
Leaves the changes in place; the originals persisted in
\fI/var/lib/bpftune/originals.json\fR are restored by the next \fB\-R\fR run or by
\fB\-\-rollback\-now\fR.
.SH ENVIRONMENT
.TP
.B BPFTUNE_RUN_DIR
Run directory instead of \fI/var/run/bpftune\fR.
.TP
.B BPFTUNE_STATE_DIR
State directory instead of \fI/var/lib/bpftune\fR.
.TP
.B BPFTUNE_ROLLBACK
\fB1\fR: as \fB\-R\fR (the Kubernetes DaemonSet sets it from its ConfigMap).
.SH FILES
.TP
.I /var/run/bpftune/query.sock
Query socket (root only).
.TP
.I /var/run/bpftune/bpftune.lock
Locked for the daemon's whole life; holds its pid and \fBrunning\fR or \fBstopping\fR.
.TP
.I /var/run/bpftune/server-port
The query port, with \fB\-p\fR.
.TP
.I /var/run/bpftune/cgroupv2
Default cgroup-v2 mount for the cgroup programs (\fB\-c\fR).
.TP
.I /var/lib/bpftune/originals.json
Original sysctl values, written atomically before the first change.
.TP
.I /etc/default/bpftune
Options for the systemd unit (BPFTUNE_OPTS), from the Debian package.
.SH OVERHEAD
Hooks compare against the limit in the kernel and post rarely: at most one event per
(tuner, sysctl, namespace) per 25 ms, hot hooks adaptively sampled. Measured (see
BENCHMARKS.md and each tuner's page):
"#;

pub const MAIN_EXIT: &str = r#".SH EXIT STATUS
0 on normal exit, \fB\-h\fR, \fB\-V\fR, \fB\-P\fR, \fB\-S\fR when supported and
\fB\-\-rollback\-now\fR when every saved value was handled; 1 on bad options,
unsupported systems, when no tuner could be loaded or a rollback failed; a query
exits with the negative errno of a failed connection.
"#;

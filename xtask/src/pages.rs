//! The prose of the man pages that clap cannot know: bpftune(8)'s extra sections and the
//! netns page here, one page per tuner in its folder (`src/tuners/<name>/page.roff`, read
//! by xtask/build.rs). roff source; the generator adds the title lines and the parts that
//! come from the code (options, query and tuner lists, tunables).
//!
//! Figures in OVERHEAD sections are quoted from BENCHMARKS.md or the tuner's README; every
//! [`Quote`] (a page.roff's `quote:` lines) is checked by the tests to occur verbatim in both the page and its source, so
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

/// The page of namespace handling, a core feature C bpftune implemented as a tuner (so
/// it has no folder under src/tuners/).
const NETNS_PAGE: TunerPage = TunerPage {
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
    changes: r#"Nothing itself. A namespace is identified by its cookie (SO_NETNS_COOKIE, Linux
5.14+) or, on kernels without cookies (Debian 11's 5.10), by its nsfs inode; the BPF
side then reports the inode in the cookie's place. \fBbpftune \-S\fR says which
("netns identity"). A namespace's state (active, manual) is per tuner.
"#,
    limits: r#"Originals saved for a namespace that is gone are forgotten (there is nothing to
restore). The kernel reuses an inode once its namespace is gone: by inode, a namespace
created and another deleted between two rescans (5 s) can be taken for the old one. A namespace without a \fI/run/netns\fR name is found through \fI/proc/PID/ns/net\fR
of a process in it.
"#,
    overhead: r#".PP
Namespace churn of 30 namespaces leaves fd and thread counts flat (kernel matrix).
"#,
    quotes: &[],
};

// TUNER_PAGES: each registered tuner's page from its src/tuners/<name>/page.roff (see
// xtask/build.rs), then NETNS_PAGE.
include!(concat!(env!("OUT_DIR"), "/tuner_pages.rs"));

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

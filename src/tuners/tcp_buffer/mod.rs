//! tcp_buffer tuner: TCP send/receive buffer limits (tcp_wmem, tcp_rmem), TCP memory
//! (tcp_mem) with low-memory measures, and the SYN backlog. See policy.rs for the
//! decisions and tcp_buffer.bpf.c for the kernel side.

pub mod policy;

use libbpf_rs::skel::Skel as _;
use libbpf_rs::Link;
use std::collections::HashMap;

use crate::core::bpf::{attach_all, Candidate, Flavour, HookError, LoadConfig, SharedMaps, Slot};
use crate::core::corr::Corr;
use crate::core::events::{Event, F_NEAR_EXHAUSTION, F_NEAR_PRESSURE};
use crate::core::tunable::{Scenario, SysctlValue, TunableDesc};
use crate::core::tuner::{Outcome, Proposal, SampleReport, StartCtx, Tuner, TunerEnv, TunerError};
use policy::{BufferAction, MemAction, SynAction, SynObs};

mod skel {
    #![allow(clippy::all, clippy::pedantic, clippy::restriction, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/tcp_buffer.skel.rs"));
}
use skel::{TcpBufferSkel, TcpBufferSkelBuilder};

// Tunable indices (enum tcp_buffer_tunable in tcp_buffer.h).
pub const TCP_WMEM: usize = 0;
pub const TCP_RMEM: usize = 1;
pub const TCP_MEM: usize = 2;
pub const TCP_MODERATE_RCVBUF: usize = 3;
pub const TCP_NO_METRICS_SAVE: usize = 4;
pub const TCP_NO_SSTHRESH_METRICS_SAVE: usize = 5;
pub const HIGH_ORDER_ALLOC_DISABLE: usize = 6;
pub const TCP_SYNCOOKIES: usize = 7;
pub const TCP_MAX_SYN_BACKLOG: usize = 8;

pub static TUNABLES: &[TunableDesc] = &[
    TunableDesc::sysctl("net.ipv4.tcp_wmem", 3, true),
    TunableDesc::sysctl("net.ipv4.tcp_rmem", 3, true),
    TunableDesc::sysctl("net.ipv4.tcp_mem", 3, false),
    TunableDesc::sysctl("net.ipv4.tcp_moderate_rcvbuf", 1, true),
    TunableDesc::sysctl("net.ipv4.tcp_no_metrics_save", 1, true),
    TunableDesc::sysctl("net.ipv4.tcp_no_ssthresh_metrics_save", 1, true).optional(),
    // net.core.* is global (read-only inside other namespaces); C bpftune flagged it
    // namespaced.
    TunableDesc::sysctl("net.core.high_order_alloc_disable", 1, false).optional(),
    // C bpftune declared this with a broken type field, so it was never read.
    TunableDesc::sysctl("net.ipv4.tcp_syncookies", 1, true).optional(),
    TunableDesc::sysctl("net.ipv4.tcp_max_syn_backlog", 1, true),
    // Never tuned; declared so that an administrator's change hands the tuner over.
    TunableDesc::sysctl("net.ipv4.tcp_max_orphans", 1, false),
];

// Scenario indices (enum tcp_buffer_scenario in tcp_buffer.h).
const INCREASE: usize = 0;
const DECREASE_LATENCY: usize = 2;
const MEM_PRESSURE: usize = 3;
const MEM_EXHAUSTION: usize = 4;
const MODERATE_RCVBUF_ENABLE: usize = 5;
const LOW_MEM_ENTER: usize = 6;
const LOW_MEM_LEAVE: usize = 7;
const SYN_INCREASE: usize = 8;
const SYN_DECREASE: usize = 9;
const SYNCOOKIES_ENABLE: usize = 10;
const SYNCOOKIES_DISABLE: usize = 11;

pub static SCENARIOS: &[Scenario] = &[
    Scenario { name: "need to increase TCP buffer size(s)", description: "Need to increase buffer size(s) to maximize throughput" },
    Scenario { name: "need to decrease TCP buffer size(s)", description: "Need to decrease buffer size(s) to reduce memory utilization" },
    Scenario { name: "need to decrease TCP buffer size due to latency", description: "Latency is starting to correlate with buffer size increases, so decrease buffer size to avoid this effect" },
    Scenario { name: "approaching TCP memory pressure", description: "Since memory pressure/exhaustion are unstable system states, adjust tcp memory-related tunables" },
    Scenario { name: "approaching TCP memory exhaustion", description: "Since memory exhaustion is a highly unstable state, adjust TCP memory-related tunables to avoid exhaustion" },
    Scenario { name: "match receive buffer size with throughput needs", description: "Since we are tuning rcvbuf max size, ensure auto-tuning of rcvbuf size for the connection is enabled to pick optimal rcvbuf size" },
    Scenario { name: "set tunable on entering low-memory state", description: "To reduce memory overheads, set tunable on entering low-memory state" },
    Scenario { name: "unset tunable set earlier in low-memory state", description: "Since we have left the low-memory state, unset tunables set on entering it" },
    Scenario { name: "increase maximum syn backlog under load since syncookies are disabled", description: "SYN queue overflows while syncookies are disabled; a larger SYN backlog lets legitimate connections through" },
    Scenario { name: "decrease maximum syn backlog due to large numbers of uncompleted connections", description: "SYN floods are not followed by accepted connections, which suggests an attack; shrink the SYN backlog" },
    Scenario { name: "enable syncookies as furthern SYN backlog increases do not help", description: "Under low memory, syncookies protect the listener better than a larger SYN backlog" },
    Scenario { name: "disable syncookies as they are ineffective", description: "Syncookies are failing and none succeed under current network conditions" },
    Scenario { name: "increase max number of orphaned sockets", description: "Increase max number of orphaned sockets" },
];

const fn c(prog: &'static str, flavour: Flavour, target: &'static str) -> Candidate {
    Candidate {
        prog,
        flavour,
        target,
    }
}

/// Hooks in order of preference, by the rule "stable first, then what exists": the
/// tracepoint (tp_btf, then raw_tp), then the kernel function behind it (fentry, then
/// kprobe) for kernels that lack the tracepoint. A candidate counts only if it loads and
/// attaches; see README.md for which kernel gets which flavour.
pub static SLOTS: &[Slot] = &[
    Slot {
        name: "rmem",
        required: true,
        candidates: &[
            // Fires about once per RTT, only when the receiver wants a larger buffer (6.18+).
            c("bpftune_rcvbuf_grow_btf", Flavour::TpBtf, "tcp_rcvbuf_grow"),
            // Older kernels: every receive-space adjustment, sampled.
            c("bpftune_rcv_space_btf", Flavour::TpBtf, "tcp_rcv_space_adjust"),
            c("bpftune_rcvbuf_grow_raw", Flavour::RawTp, "tcp_rcvbuf_grow"),
            c("bpftune_rcv_space_raw", Flavour::RawTp, "tcp_rcv_space_adjust"),
            c(
                "bpftune_rcv_space_fentry",
                Flavour::Fentry,
                "tcp_rcv_space_adjust",
            ),
            c(
                "bpftune_rcv_space_kprobe",
                Flavour::Kprobe,
                "tcp_rcv_space_adjust",
            ),
        ],
    },
    Slot {
        name: "wmem",
        required: true,
        candidates: &[
            // One hit per sendmsg, sampled (6.13+).
            c("bpftune_sendmsg_btf", Flavour::TpBtf, "tcp_sendmsg_locked"),
            c("bpftune_sendmsg_raw", Flavour::RawTp, "tcp_sendmsg_locked"),
            // C bpftune's hook: static, inlined on some builds.
            c(
                "bpftune_sndbuf_expand_fentry",
                Flavour::Fentry,
                "tcp_sndbuf_expand",
            ),
            // Global, called through sk_prot->sendmsg, so never inlined; sampled.
            c("bpftune_tcp_sendmsg_fentry", Flavour::Fentry, "tcp_sendmsg"),
            c(
                "bpftune_sndbuf_expand_kprobe",
                Flavour::Kprobe,
                "tcp_sndbuf_expand",
            ),
            c("bpftune_tcp_sendmsg_kprobe", Flavour::Kprobe, "tcp_sendmsg"),
        ],
    },
    Slot {
        name: "tcp_mem",
        required: false,
        candidates: &[
            c("bpftune_exceed_btf", Flavour::TpBtf, "sock_exceed_buf_limit"),
            c("bpftune_exceed_raw", Flavour::RawTp, "sock_exceed_buf_limit"),
            c(
                "bpftune_enter_mempress_fentry",
                Flavour::Fentry,
                "tcp_enter_memory_pressure",
            ),
            c(
                "bpftune_enter_mempress_kprobe",
                Flavour::Kprobe,
                "tcp_enter_memory_pressure",
            ),
        ],
    },
    Slot {
        name: "syn_backlog",
        required: false,
        candidates: &[
            c("bpftune_synack_btf", Flavour::TpBtf, "tcp_retransmit_synack"),
            c("bpftune_synack_raw", Flavour::RawTp, "tcp_retransmit_synack"),
            c(
                "bpftune_syn_flood_fentry",
                Flavour::Fentry,
                "tcp_syn_flood_action",
            ),
            c(
                "bpftune_syn_flood_kprobe",
                Flavour::Kprobe,
                "tcp_syn_flood_action",
            ),
        ],
    },
];

/// Names of the BPF sample slots (enum tcp_buffer_sample).
const SAMPLE_NAMES: [&str; 3] = ["rcv_space_sample", "sendmsg_sample", "mem_sample"];

/// A value set on entering low memory, to be restored on leaving it.
#[derive(Debug, Clone)]
struct LowMemChange {
    tunable: usize,
    cookie: u64,
    ino: u64,
    before: SysctlValue,
    set: SysctlValue,
}

#[derive(Default)]
pub struct TcpBuffer {
    skel: Option<TcpBufferSkel<'static>>,
    links: Vec<Link>,
    corr: HashMap<(usize, u64), Corr>,
    syn_events: HashMap<u64, u64>,
    low_mem: Vec<LowMemChange>,
    in_low_mem: bool,
}

impl TcpBuffer {
    pub fn new() -> TcpBuffer {
        TcpBuffer::default()
    }

    fn ints3(v: &SysctlValue) -> Option<[i64; 3]> {
        match v.ints() {
            Some(&[a, b, c]) => Some([a, b, c]),
            _ => None,
        }
    }

    fn buffer(&mut self, ev: &Event, env: &mut dyn TunerEnv) {
        let idx = ev.tunable_id as usize;
        let (cookie, ino) = (ev.netns_cookie, ev.netns_ino);
        let Ok(live_v) = env.read(idx, cookie, ino) else {
            return;
        };
        let Some(live) = Self::ints3(&live_v) else { return };
        if live != ev.old {
            tracing::debug!(
                "tcp_buffer: stale event for {} (kernel saw {:?}, live {:?})",
                TUNABLES[idx].name,
                ev.old,
                live
            );
            return;
        }
        if self.in_low_mem && ev.flags & (F_NEAR_PRESSURE | F_NEAR_EXHAUSTION) == 0 {
            self.leave_low_mem(env);
        }
        let corr = self.corr.entry((idx, cookie)).or_default();
        corr.update(live[2] as f64, ev.aux[0] as f64);
        let sockbuf = ev.aux[1] as i64;
        let cap = Self::buffer_cap(env);
        let Some(action) = policy::buffer_decision(env.rate(), live, sockbuf, corr, ev.flags != 0, cap)
        else {
            return;
        };
        let (scenario, new, reason) = match action {
            BufferAction::Increase(n) => (
                INCREASE,
                n,
                "need to increase max buffer size to maximize throughput",
            ),
            BufferAction::DecreaseLatency(n) => (
                DECREASE_LATENCY,
                n,
                "correlation between buffer size increase and latency",
            ),
        };
        let name = TUNABLES[idx].name;
        let out = env.apply(Proposal {
            tunable: idx,
            scenario,
            netns_cookie: cookie,
            netns_ino: ino,
            expect: Some(live_v),
            value: SysctlValue::Ints(new.to_vec()),
            message: format!(
                "Due to {reason} change {name}(min default max) from ({} {} {}) -> ({} {} {})",
                live[0], live[1], live[2], new[0], new[1], new[2]
            ),
            event_ts_ns: ev.ts_ns,
        });
        if out == Outcome::Applied && scenario == DECREASE_LATENCY {
            // Each decrease needs fresh evidence: the old samples still correlate after
            // a shrink (smaller buffer, lower RTT) and would shrink again and again.
            self.corr.remove(&(idx, cookie));
        }
        if out == Outcome::Applied && idx == TCP_RMEM {
            self.ensure_moderate_rcvbuf(cookie, ino, env);
        }
    }

    /// Growth bound from the global TCP memory limit (policy::buffer_cap).
    fn buffer_cap(env: &mut dyn TunerEnv) -> i64 {
        let mem_max = env
            .read(TCP_MEM, 0, 0)
            .ok()
            .and_then(|v| Self::ints3(&v))
            .map_or(i64::MAX, |m| m[2]);
        policy::buffer_cap(mem_max, page_size())
    }

    /// Raising rcvbuf limits only helps if receive-buffer auto-tuning is on, in the
    /// namespace we changed (C bpftune checked the global value).
    fn ensure_moderate_rcvbuf(&mut self, cookie: u64, ino: u64, env: &mut dyn TunerEnv) {
        let Ok(v) = env.read(TCP_MODERATE_RCVBUF, cookie, ino) else {
            return;
        };
        if v.ints() == Some(&[1]) {
            return;
        }
        let name = TUNABLES[TCP_MODERATE_RCVBUF].name;
        env.apply(Proposal {
            tunable: TCP_MODERATE_RCVBUF,
            scenario: MODERATE_RCVBUF_ENABLE,
            netns_cookie: cookie,
            netns_ino: ino,
            expect: Some(v),
            value: SysctlValue::Ints(vec![1]),
            message: format!("Because we are changing rcvbuf parameters, set '{name}' to auto-tune receive buffer size to match the size required by the path for full throughput."),
            event_ts_ns: 0,
        });
    }

    fn mem(&mut self, ev: &Event, env: &mut dyn TunerEnv) {
        let (cookie, ino) = (ev.netns_cookie, ev.netns_ino);
        let Ok(live_v) = env.read(TCP_MEM, cookie, ino) else {
            return;
        };
        let Some(live) = Self::ints3(&live_v) else { return };
        if live != ev.old {
            tracing::debug!(
                "tcp_buffer: stale tcp_mem event (kernel saw {:?}, live {:?})",
                ev.old,
                live
            );
            return;
        }
        let exhausted = ev.flags & F_NEAR_EXHAUSTION != 0;
        let nr_free = i64::try_from(env.nr_free_buffer_pages()).unwrap_or(i64::MAX);
        if let Some(action) = policy::tcp_mem_decision(env.rate(), live, ev.aux[0] as i64, nr_free) {
            let (scenario, new, reason) = match action {
                MemAction::Exhaustion(n) => (MEM_EXHAUSTION, n, "near memory exhaustion"),
                MemAction::Pressure(n) => (MEM_PRESSURE, n, "near memory pressure"),
            };
            env.apply(Proposal {
                tunable: TCP_MEM,
                scenario,
                netns_cookie: cookie,
                netns_ino: ino,
                expect: Some(live_v),
                value: SysctlValue::Ints(new.to_vec()),
                message: format!(
                    "Due to {reason} change net.ipv4.tcp_mem(min pressure max) from ({} {} {}) -> ({} {} {})",
                    live[0], live[1], live[2], new[0], new[1], new[2]
                ),
                event_ts_ns: ev.ts_ns,
            });
        }
        if exhausted {
            self.enter_low_mem(cookie, ino, env);
        }
    }

    fn set_low_mem_value(&mut self, tunable: usize, cookie: u64, ino: u64, new: i64, env: &mut dyn TunerEnv) {
        let Ok(before) = env.read(tunable, cookie, ino) else {
            return;
        };
        let set = SysctlValue::Ints(vec![new]);
        if before == set {
            return;
        }
        let name = TUNABLES[tunable].name;
        let out = env.apply(Proposal {
            tunable,
            scenario: LOW_MEM_ENTER,
            netns_cookie: cookie,
            netns_ino: ino,
            expect: Some(before.clone()),
            value: set.clone(),
            message: format!("Due to low memory conditions, set '{name}'"),
            event_ts_ns: 0,
        });
        if out == Outcome::Applied {
            self.low_mem.push(LowMemChange {
                tunable,
                cookie,
                ino,
                before,
                set,
            });
        }
    }

    fn enter_low_mem(&mut self, cookie: u64, ino: u64, env: &mut dyn TunerEnv) {
        if self.in_low_mem {
            return;
        }
        self.in_low_mem = true;
        for t in [
            TCP_NO_METRICS_SAVE,
            TCP_NO_SSTHRESH_METRICS_SAVE,
            HIGH_ORDER_ALLOC_DISABLE,
        ] {
            self.set_low_mem_value(t, cookie, ino, 1, env);
        }
        if let Ok(v) = env.read(TCP_MAX_SYN_BACKLOG, cookie, ino) {
            if let Some(&[cur]) = v.ints() {
                let new = env.rate().shrink(cur);
                if new >= policy::SYN_BACKLOG_MIN {
                    self.set_low_mem_value(TCP_MAX_SYN_BACKLOG, cookie, ino, new, env);
                }
            }
        }
    }

    /// Restores exactly what entering low memory changed (C bpftune grew the SYN
    /// backlog again on every leave transition instead).
    fn leave_low_mem(&mut self, env: &mut dyn TunerEnv) {
        self.in_low_mem = false;
        for ch in std::mem::take(&mut self.low_mem) {
            let name = TUNABLES[ch.tunable].name;
            env.apply(Proposal {
                tunable: ch.tunable,
                scenario: LOW_MEM_LEAVE,
                netns_cookie: ch.cookie,
                netns_ino: ch.ino,
                expect: Some(ch.set),
                value: ch.before,
                message: format!("Due to leaving low memory conditions, set '{name}'"),
                event_ts_ns: 0,
            });
        }
    }

    fn syn(&mut self, ev: &Event, env: &mut dyn TunerEnv) {
        let (cookie, ino) = (ev.netns_cookie, ev.netns_ino);
        let Ok(max_v) = env.read(TCP_MAX_SYN_BACKLOG, cookie, ino) else {
            return;
        };
        let Some(&[max]) = max_v.ints() else { return };
        if max != ev.old[0] {
            return;
        }
        let cookies = env
            .read(TCP_SYNCOOKIES, cookie, ino)
            .ok()
            .and_then(|v| v.ints().and_then(|x| x.first().copied()))
            .unwrap_or(ev.aux[2] as i64);
        let floods = self.syn_events.entry(cookie).or_insert(0);
        *floods += 1;
        let floods = *floods;
        let counters = env.net_counters(
            cookie,
            ino,
            &["PassiveOpens", "SyncookiesFailed", "SyncookiesRecv"],
        );
        let counter = |k: usize| counters.get(k).copied().flatten().unwrap_or(0);
        let accepted = counter(0);
        let corr = self.corr.entry((TCP_MAX_SYN_BACKLOG, cookie)).or_default();
        corr.update(floods as f64, accepted as f64);
        let corr = *corr;
        let (failed, recv) = if cookies != 0 {
            (counter(1), counter(2))
        } else {
            (0, 0)
        };
        let obs = SynObs {
            max_syn_backlog: max,
            syncookies: cookies,
            low_mem: self.in_low_mem,
            cookies_failed: failed,
            cookies_recv: recv,
        };
        let Some(action) = policy::syn_decision(env.rate(), obs, &corr) else {
            return;
        };
        let cookies_name = TUNABLES[TCP_SYNCOOKIES].name;
        let max_name = TUNABLES[TCP_MAX_SYN_BACKLOG].name;
        let (tunable, scenario, expect, value, message) = match action {
            SynAction::DisableSyncookies => (TCP_SYNCOOKIES, SYNCOOKIES_DISABLE, cookies, 0, format!("Due to receiving {failed} invalid syncookies and no valid ones, disable '{cookies_name}' as they are ineffective under current network conditions")),
            SynAction::EnableSyncookies => (TCP_SYNCOOKIES, SYNCOOKIES_ENABLE, cookies, 1, format!("Due to low memory conditions under SYN flood, enable '{cookies_name}' rather than increasing max SYN backlog")),
            SynAction::Decrease(n) => (TCP_MAX_SYN_BACKLOG, SYN_DECREASE, max, n, format!("Due to SYN flood not correlated with TCP connection acceptance - suggesting an attack - reduce '{max_name}' from {max} -> {n}")),
            SynAction::Increase(n) => (TCP_MAX_SYN_BACKLOG, SYN_INCREASE, max, n, format!("Due to SYN flood events on a system with TCP syncookies disabled and no low memory issues, increase '{max_name}'")),
        };
        env.apply(Proposal {
            tunable,
            scenario,
            netns_cookie: cookie,
            netns_ino: ino,
            expect: Some(SysctlValue::Ints(vec![expect])),
            value: SysctlValue::Ints(vec![value]),
            message,
            event_ts_ns: ev.ts_ns,
        });
    }
}

crate::skel_loaders!(TcpBufferSkelBuilder, TcpBufferSkel);

impl Tuner for TcpBuffer {
    fn name(&self) -> &'static str {
        "tcp_buffer"
    }

    fn tunables(&self) -> &'static [TunableDesc] {
        TUNABLES
    }

    fn scenarios(&self) -> &'static [Scenario] {
        SCENARIOS
    }

    fn slots(&self) -> &'static [Slot] {
        SLOTS
    }

    fn try_attach(
        &self,
        shared: &SharedMaps,
        config: &LoadConfig,
        programs: &[&'static str],
    ) -> Result<(), HookError> {
        try_attach_skel(shared, config, programs)
    }

    fn start(&mut self, ctx: StartCtx<'_>) -> Result<(), TunerError> {
        let skel = load_skel(&ctx).map_err(|e| TunerError::load("tcp_buffer", e))?;
        let links = attach_all(skel.object()).map_err(|e| TunerError::hook("tcp_buffer", e))?;
        // Only a tuner that runs lends its maps to the others.
        ctx.shared
            .adopt(skel.object())
            .map_err(|e| TunerError::load("tcp_buffer", e))?;
        self.links = links;
        self.skel = Some(skel);
        Ok(())
    }

    fn handle(&mut self, ev: &Event, env: &mut dyn TunerEnv) {
        match ev.tunable_id as usize {
            TCP_WMEM | TCP_RMEM => self.buffer(ev, env),
            TCP_MEM => self.mem(ev, env),
            TCP_MAX_SYN_BACKLOG => self.syn(ev, env),
            other => tracing::debug!("tcp_buffer: unexpected event for tunable {other}"),
        }
    }

    /// While in low memory, watch /proc/net/sockstat to notice leaving it even when
    /// no buffer event arrives.
    fn tick(&mut self, env: &mut dyn TunerEnv) {
        if !self.in_low_mem {
            return;
        }
        // tcp_mem is global: cookie 0 means the initial namespace.
        let Ok(mem) = env.read(TCP_MEM, 0, 0) else { return };
        let Some(mem) = Self::ints3(&mem) else { return };
        let used = std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|t| sockstat_tcp_mem(&t));
        if let Some(used) = used {
            if !env.rate().nearly_full(used, mem[1]) {
                self.leave_low_mem(env);
            }
        }
    }

    fn samples(&self) -> Vec<SampleReport> {
        let Some(bss) = self.skel.as_ref().and_then(|s| s.maps.bss_data.as_deref()) else {
            return Vec::new();
        };
        // Per-CPU slots: total calls, and the coarsest rate any CPU reached.
        bss.samples
            .iter()
            .zip(SAMPLE_NAMES)
            .map(|(cpus, name)| SampleReport {
                name,
                calls: cpus.iter().map(|s| s.count).sum(),
                every: cpus.iter().map(|s| s.rate).max().unwrap_or(0).max(4),
            })
            .filter(|r| r.calls > 0)
            .collect()
    }

    fn stop(&mut self) {
        self.links.clear();
        self.skel = None;
    }
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as i64
    } else {
        4096
    }
}

/// Pages in use by TCP: "TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 3".
fn sockstat_tcp_mem(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(k) = it.next() {
        if k == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sysctl::SysctlError;
    use crate::core::tunable::Rate;

    /// A TunerEnv over plain values, applying proposals like the engine does.
    #[derive(Default)]
    struct FakeEnv {
        values: HashMap<usize, SysctlValue>,
        applied: Vec<Proposal>,
    }

    impl TunerEnv for FakeEnv {
        fn rate(&self) -> Rate {
            Rate::DEFAULT
        }
        fn read(&mut self, tunable: usize, _c: u64, _i: u64) -> Result<SysctlValue, SysctlError> {
            self.values
                .get(&tunable)
                .cloned()
                .ok_or_else(|| SysctlError::NotFound(TUNABLES[tunable].name.into()))
        }
        fn apply(&mut self, p: Proposal) -> Outcome {
            let live = self.values.get(&p.tunable).cloned();
            if p.expect.is_some() && p.expect != live {
                return Outcome::Stale;
            }
            if live.as_ref() == Some(&p.value) {
                return Outcome::Unchanged;
            }
            self.values.insert(p.tunable, p.value.clone());
            self.applied.push(p);
            Outcome::Applied
        }
        fn note(&mut self, _t: usize, _s: usize, _c: u64, _m: &str) {}
        fn admin_write(&mut self, _c: u64, _p: &str, _pid: i32, _comm: &str) {}
        fn net_counters(&mut self, _c: u64, _i: u64, names: &[&str]) -> Vec<Option<u64>> {
            vec![None; names.len()]
        }
        fn nr_free_buffer_pages(&self) -> u64 {
            1_000_000
        }
        fn is_global(&self, c: u64) -> bool {
            c == 0
        }
    }

    fn rmem_event(max: i64, sockbuf: u64, srtt: u64) -> Event {
        Event {
            tuner_id: 1,
            scenario_id: INCREASE as u32,
            netns_cookie: 9,
            netns_ino: 1,
            pid: 0,
            ts_ns: 1,
            tunable_id: TCP_RMEM as u32,
            flags: 0,
            old: [4096, 131072, max],
            new: [4096, 131072, max + max / 4],
            aux: [srtt, sockbuf, 0, 0],
            text: String::new(),
        }
    }

    fn env(max: i64) -> FakeEnv {
        let mut e = FakeEnv::default();
        e.values
            .insert(TCP_RMEM, SysctlValue::Ints(vec![4096, 131072, max]));
        e.values.insert(TCP_MODERATE_RCVBUF, SysctlValue::Ints(vec![0]));
        e.values
            .insert(TCP_MEM, SysctlValue::Ints(vec![287898, 383867, 575796]));
        e
    }

    fn rmem_max(e: &FakeEnv) -> i64 {
        e.values[&TCP_RMEM].ints().map_or(0, |v| v[2])
    }

    #[test]
    fn raise_rmem_and_enable_moderate_rcvbuf() {
        let mut e = env(1310720);
        let mut t = TcpBuffer::new();
        t.handle(&rmem_event(1310720, 1310720, 40_000), &mut e);
        assert_eq!(rmem_max(&e), 1638400);
        assert_eq!(e.values[&TCP_MODERATE_RCVBUF], SysctlValue::Ints(vec![1]));
        assert_eq!(e.applied.len(), 2);
        assert!(e.applied[0]
            .message
            .contains("from (4096 131072 1310720) -> (4096 131072 1638400)"));
        // The same (now stale) event again changes nothing (C bpftune #155).
        t.handle(&rmem_event(1310720, 1310720, 40_000), &mut e);
        assert_eq!(e.applied.len(), 2);
    }

    #[test]
    fn latency_shrink_needs_fresh_evidence_each_time() {
        let mut e = env(1_000_000);
        let mut t = TcpBuffer::new();
        let mut shrinks_in_a_row = 0;
        let mut max_run = 0;
        // RTT grows with the buffer (bufferbloat): growth, then a shrink, then growth
        // again — never a collapse towards the default.
        for _ in 0..200 {
            let max = rmem_max(&e);
            let srtt = 40_000 + (max / 100) as u64;
            let before = max;
            t.handle(&rmem_event(max, max as u64, srtt), &mut e);
            if rmem_max(&e) < before {
                shrinks_in_a_row += 1;
                max_run = max_run.max(shrinks_in_a_row);
            } else {
                shrinks_in_a_row = 0;
            }
        }
        assert!(
            e.applied.iter().any(|p| p.scenario == DECREASE_LATENCY),
            "bloat detected"
        );
        assert_eq!(max_run, 1, "no consecutive latency shrinks");
        assert!(rmem_max(&e) > 131072 * 4, "no collapse: {}", rmem_max(&e));
    }

    #[test]
    fn sockstat_parse() {
        assert_eq!(
            sockstat_tcp_mem(
                "sockets: used 5\nTCP: inuse 5 orphan 0 tw 0 alloc 7 mem 3\nUDP: inuse 1 mem 2\n"
            ),
            Some(3)
        );
        assert_eq!(sockstat_tcp_mem("UDP: inuse 1 mem 2\n"), None);
    }

    #[test]
    fn descriptors_match_the_c_header() {
        let h = include_str!("tcp_buffer.h");
        for (name, idx) in [
            ("TCP_BUFFER_TCP_WMEM", TCP_WMEM),
            ("TCP_BUFFER_TCP_MAX_SYN_BACKLOG", TCP_MAX_SYN_BACKLOG),
        ] {
            assert!(h.contains(name));
            let _ = idx;
        }
        assert_eq!(TUNABLES.len(), 10);
        assert_eq!(SCENARIOS.len(), 13);
        assert_eq!(TUNABLES[TCP_RMEM].name, "net.ipv4.tcp_rmem");
        assert_eq!(TUNABLES[TCP_MAX_SYN_BACKLOG].name, "net.ipv4.tcp_max_syn_backlog");
    }
}

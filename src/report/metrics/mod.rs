//! Prometheus metrics: what the daemon did (changes, proposals, events, rollbacks), what
//! it manages (current tunable values, tuner state per namespace) and what its BPF side
//! costs (run time per program, events lost in the ring buffer).
//!
//! A scrape builds a fresh `prometheus-client` registry from copies: the ledger lock is
//! held only while its counters and latest values are copied, the namespace view is
//! copied from [`Stats`], and the slower reads (global sysctls from /proc/sys, BPF
//! program info, the lost-event map) happen after every lock is released, so a scrape
//! never holds up the event loop for more than a copy.
//!
//! Tunable values: global sysctls are read live at scrape time (a few /proc/sys reads);
//! per-namespace values are the latest value bpftune wrote there, from the ledger (reading
//! them live would need a setns(2) per namespace per scrape). A per-namespace sysctl that
//! bpftune has not changed therefore has no per-namespace sample.
//!
//! Cardinality: `netns` labels are `global`, the `/run/netns` name or `ino:<inode>`;
//! at most [`MAX_NETNS_LABELS`] distinct values, the namespaces beyond (by cookie order)
//! are aggregated under `other` (state gauges count namespaces, tunable values take the
//! maximum). No label is per connection, per process or per address.

mod bpf_stats;
mod serve;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::lock;
use crate::kernel::netns::Target;
use crate::kernel::sysctl::{ProcSysctl, SysctlStore};
use crate::model::tunable::{SysctlValue, TunableKind};
use crate::record::ledger::Ledger;
use crate::record::stats::{NetnsView, Stats, MAX_TUNERS};
use crate::tuner::{NsState, TunerState};

pub use bpf_stats::ProgStat;
pub use serve::{parse_listen, write_atomically, Exporter, ExporterConfig, MetricsError};

/// Distinct `netns` label values at most (`global` and `other` included).
pub const MAX_NETNS_LABELS: usize = 256;
/// The label of namespaces beyond [`MAX_NETNS_LABELS`].
pub const OTHER_NETNS: &str = "other";

/// Version and git commit of this build (`bpftune_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT: &str = match option_env!("BPFTUNE_GIT") {
    Some(g) => g,
    None => "unknown",
};

type Labels = Vec<(&'static str, String)>;

/// Everything a scrape reads from.
pub struct Source {
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<Stats>,
    /// The shared per-CPU lost-event counter (`lost_events_map`), if BPF created it.
    pub lost_events: Option<libbpf_rs::MapHandle>,
    /// (tuner, program) names of every program the tuners may load, to label the BPF
    /// run-time metrics by tuner.
    pub programs: Vec<(&'static str, &'static str)>,
    /// Where global sysctls are read (/proc/sys; a temporary tree in tests).
    pub sysctl: ProcSysctl,
}

/// `netns` label per tracked namespace cookie: the first [`MAX_NETNS_LABELS`] - 1 by
/// cookie (creation order) keep their own, the rest share [`OTHER_NETNS`].
pub fn netns_labels(view: &NetnsView) -> BTreeMap<u64, String> {
    let own = MAX_NETNS_LABELS - 2; // "global" and "other" are values too
    view.namespaces
        .iter()
        .enumerate()
        .map(|(i, (cookie, l))| {
            let label = if i < own {
                l.label()
            } else {
                OTHER_NETNS.to_string()
            };
            (*cookie, label)
        })
        .collect()
}

/// The tuner and full program name of a kernel program name (the kernel keeps only
/// the first 15 characters).
fn program_owner(
    programs: &[(&'static str, &'static str)],
    kname: &str,
) -> Option<(&'static str, &'static str)> {
    programs
        .iter()
        .find(|(_, p)| *p == kname || (kname.len() >= 15 && p.starts_with(kname)))
        .copied()
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

/// What the ledger holds, copied under its lock.
struct LedgerCopy {
    tuners: Vec<(
        &'static str,
        TunerState,
        &'static [crate::model::tunable::TunableDesc],
    )>,
    scenarios: Vec<&'static [crate::model::tunable::Scenario]>,
    writes: Vec<((usize, usize, usize, bool), u64)>,
    proposals: Vec<((usize, usize, usize, bool), u64)>,
    /// (tunable name, cookie, latest value) of non-global changes.
    latest: Vec<(&'static str, u64, SysctlValue)>,
}

impl LedgerCopy {
    fn take(ledger: &Mutex<Ledger>) -> LedgerCopy {
        let l = lock(ledger);
        LedgerCopy {
            tuners: l.tuners.iter().map(|t| (t.name, t.state, t.tunables)).collect(),
            scenarios: l.tuners.iter().map(|t| t.scenarios).collect(),
            writes: l.writes().collect(),
            proposals: l.proposals().collect(),
            latest: l
                .spans()
                .filter(|s| !s.global)
                .filter_map(|s| {
                    let desc = l.tuners.get(s.tuner)?.tunables.get(s.tunable)?;
                    Some((desc.name, s.cookie, s.latest.clone()))
                })
                .collect(),
        }
    }

    fn change_labels(&self, (t, tunable, scenario, global): (usize, usize, usize, bool)) -> Option<Labels> {
        let (tname, _, tunables) = self.tuners.get(t)?;
        Some(vec![
            ("tuner", tname.to_string()),
            ("tunable", tunables.get(tunable)?.name.to_string()),
            ("scenario", self.scenarios.get(t)?.get(scenario)?.name.to_string()),
            ("ns_kind", if global { "global" } else { "netns" }.to_string()),
        ])
    }
}

impl Source {
    /// Renders every metric in the OpenMetrics text format. The families are encoded
    /// in registration order, which is the order of the calls here.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let copy = LedgerCopy::take(&self.ledger);
        let view = self.stats.netns_view();
        let labels = netns_labels(&view);
        let mut r = Registry::with_prefix("bpftune");
        register_build_info(&mut r);
        register_changes(&mut r, &copy);
        self.register_tunable_values(&mut r, &copy, &labels);
        register_tuner_states(&mut r, &copy, &view, &labels);
        self.register_events(&mut r, &copy);
        self.register_bpf_programs(&mut r);
        self.register_totals(&mut r, &view);

        let mut out = String::new();
        encode(&mut out, &r)?;
        Ok(out)
    }

    /// `tunable_value`: global sysctls read now, per-namespace ones from the ledger.
    fn register_tunable_values(&self, r: &mut Registry, copy: &LedgerCopy, labels: &BTreeMap<u64, String>) {
        let values = gauge_family(
            r,
            "tunable_value",
            "Current value of each managed tunable (global: read at scrape; netns: latest value bpftune wrote), by position in multi-value sysctls",
        );
        let mut seen = std::collections::BTreeSet::new();
        for (_, state, tunables) in &copy.tuners {
            if *state == TunerState::Inactive {
                continue;
            }
            for d in tunables.iter() {
                if d.kind != TunableKind::Sysctl || d.string || !seen.insert(d.name) {
                    continue;
                }
                if let Ok(SysctlValue::Ints(v)) =
                    self.sysctl.read(&Target::Global, d.name, false, d.num_values)
                {
                    for (i, x) in v.iter().enumerate() {
                        values
                            .get_or_create(&vec![
                                ("tunable", d.name.to_string()),
                                ("netns", "global".to_string()),
                                ("index", i.to_string()),
                            ])
                            .set(*x);
                    }
                }
            }
        }
        // Several namespaces can share "other": the gauge keeps the largest value.
        let mut per_ns: BTreeMap<Labels, i64> = BTreeMap::new();
        for (name, cookie, value) in &copy.latest {
            let (Some(ns), Some(v)) = (labels.get(cookie), value.ints()) else {
                continue; // namespace gone (not current), or a string value
            };
            for (i, x) in v.iter().enumerate() {
                let key = vec![
                    ("tunable", name.to_string()),
                    ("netns", ns.clone()),
                    ("index", i.to_string()),
                ];
                let e = per_ns.entry(key).or_insert(*x);
                *e = (*e).max(*x);
            }
        }
        for (k, v) in per_ns {
            values.get_or_create(&k).set(v);
        }
    }

    /// `events_received`, `events_stale`, `write_failures` and `events_lost`.
    fn register_events(&self, r: &mut Registry, copy: &LedgerCopy) {
        let received = counter_family(r, "events_received", "Ring-buffer events received, by tuner");
        let stale = counter_family(
            r,
            "events_stale",
            "Proposals dropped because the live value had moved on since the event",
        );
        for (id, (tname, _, _)) in copy.tuners.iter().enumerate().take(MAX_TUNERS) {
            let l = vec![("tuner", tname.to_string())];
            received.get_or_create(&l).inc_by(self.stats.received(id));
            stale.get_or_create(&l).inc_by(self.stats.stale(id));
        }
        let write_failures = counter_family(
            r,
            "write_failures",
            "Sysctl writes the kernel refused, by tuner, sysctl and errno (each logged once per sysctl)",
        );
        for ((id, sysctl, errno), n) in self.stats.write_failures() {
            let Some((tname, _, _)) = copy.tuners.get(id) else {
                continue;
            };
            write_failures
                .get_or_create(&vec![
                    ("tuner", tname.to_string()),
                    ("tunable", sysctl),
                    ("errno", errno),
                ])
                .inc_by(n);
        }
        if let Some(n) = self.lost_events() {
            let lost = Counter::<u64>::default();
            lost.inc_by(n);
            r.register(
                "events_lost",
                "Events the BPF side could not post because the ring buffer was full",
                lost,
            );
        }
    }

    /// `bpf_run_time_seconds` and `bpf_run_count` of this daemon's programs, by tuner.
    fn register_bpf_programs(&self, r: &mut Registry) {
        let run_time = Family::<Labels, Counter<f64>>::default();
        r.register(
            "bpf_run_time_seconds",
            "Time spent in each BPF program of this daemon (needs kernel.bpf_stats_enabled=1)",
            run_time.clone(),
        );
        let run_count = counter_family(
            r,
            "bpf_run_count",
            "Runs of each BPF program of this daemon (needs kernel.bpf_stats_enabled=1)",
        );
        let mut progs: BTreeMap<Labels, (u64, u64)> = BTreeMap::new();
        for p in bpf_stats::own_programs() {
            let (tuner, prog) = program_owner(&self.programs, &p.name).unwrap_or(("unknown", &p.name));
            let e = progs
                .entry(vec![("tuner", tuner.to_string()), ("program", prog.to_string())])
                .or_default();
            e.0 += p.run_time_ns;
            e.1 += p.run_cnt;
        }
        for (l, (ns, cnt)) in progs {
            run_time.get_or_create(&l).inc_by(ns as f64 / 1e9);
            run_count.get_or_create(&l).inc_by(cnt);
        }
    }

    /// `rollback_restores` and `netns_tracked`.
    fn register_totals(&self, r: &mut Registry, view: &NetnsView) {
        let restores = Counter::<u64>::default();
        restores.inc_by(self.stats.rollback_restores());
        r.register(
            "rollback_restores",
            "Sysctls restored to their original value on exit (-R)",
            restores,
        );
        let tracked = Gauge::<i64>::default();
        tracked.set(i64::try_from(view.namespaces.len()).unwrap_or(i64::MAX));
        r.register(
            "netns_tracked",
            "Network namespaces tracked besides the initial one",
            tracked,
        );
    }

    /// Sum over CPUs of the lost-event counter.
    fn lost_events(&self) -> Option<u64> {
        crate::bpf::lost_events_total(self.lost_events.as_ref()?)
    }
}

/// `build_info`: version and git commit.
fn register_build_info(r: &mut Registry) {
    let build = gauge_family(
        r,
        "build_info",
        "Version and git commit of this bpftune build (always 1)",
    );
    build
        .get_or_create(&vec![("version", VERSION.to_string()), ("git", GIT.to_string())])
        .set(1);
}

/// `changes` and `proposals`, by tuner, tunable, scenario and namespace kind.
fn register_changes(r: &mut Registry, copy: &LedgerCopy) {
    let changes = counter_family(r, "changes", "Sysctl writes made");
    for (k, n) in &copy.writes {
        if let Some(l) = copy.change_labels(*k) {
            changes.get_or_create(&l).inc_by(*n);
        }
    }
    let proposals = counter_family(r, "proposals", "Changes proposed but not made (observe mode)");
    for (k, n) in &copy.proposals {
        if let Some(l) = copy.change_labels(*k) {
            proposals.get_or_create(&l).inc_by(*n);
        }
    }
}

/// `tuner_state`: each tuner's state, globally and per namespace label.
fn register_tuner_states(
    r: &mut Registry,
    copy: &LedgerCopy,
    view: &NetnsView,
    labels: &BTreeMap<u64, String>,
) {
    let states = gauge_family(
        r,
        "tuner_state",
        "Current state of each tuner per namespace (1; under netns=\"other\": number of namespaces in that state)",
    );
    for (id, (tname, state, _)) in copy.tuners.iter().enumerate() {
        states
            .get_or_create(&vec![
                ("tuner", tname.to_string()),
                ("netns", "global".to_string()),
                ("state", state.as_str().to_string()),
            ])
            .set(1);
        let running = matches!(state, TunerState::Active | TunerState::Manual);
        for (cookie, ns) in labels {
            let s = if running {
                match view
                    .states
                    .get(&(id, *cookie))
                    .copied()
                    .unwrap_or(NsState::Active)
                {
                    NsState::Active => "active",
                    NsState::Manual => "manual",
                    NsState::Gone => "gone",
                }
            } else {
                state.as_str()
            };
            states
                .get_or_create(&vec![
                    ("tuner", tname.to_string()),
                    ("netns", ns.clone()),
                    ("state", s.to_string()),
                ])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests;

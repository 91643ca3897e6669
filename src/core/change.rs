//! The one structured change record, and the ledger built from it. Log lines, the
//! `summary`/`rollback` queries and the exit summary are all rendered from here.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::core::tunable::{Scenario, SysctlValue, TunableDesc, TunableKind};
use crate::core::tuner::TunerState;

/// How many records the ledger keeps (older ones are summarised by the counters).
const MAX_RECORDS: usize = 4096;

/// One change (or informational scenario) made by a tuner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub tuner: String,
    pub tunable: String,
    pub scenario: String,
    pub netns_cookie: u64,
    pub global: bool,
    /// Namespace name (`/run/netns` name) when known.
    pub netns: Option<String>,
    pub old: Option<SysctlValue>,
    pub new: Option<SysctlValue>,
    pub message: String,
    /// False for informational records (nothing written).
    pub applied: bool,
    /// CLOCK_MONOTONIC ns of the kernel event that triggered it (0 if none).
    pub event_ts_ns: u64,
    /// CLOCK_MONOTONIC ns when the write completed.
    pub write_ts_ns: u64,
}

impl ChangeRecord {
    pub fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// What the ledger knows about a tuner.
#[derive(Debug, Clone)]
pub struct TunerMeta {
    pub name: &'static str,
    pub state: TunerState,
    pub tunables: &'static [TunableDesc],
    pub scenarios: &'static [Scenario],
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Where {
    tuner: usize,
    tunable: usize,
    cookie: u64,
}

#[derive(Debug, Clone)]
struct Span {
    global: bool,
    netns: Option<String>,
    original: SysctlValue,
    latest: SysctlValue,
}

/// A tuner's own summary section (C bpftune's `summarize()` hook), e.g. tcp_conn's
/// congestion-control counts and per-path table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TunerSummary {
    /// Printed before the per-scenario lines, in the exit summary and `summary`.
    pub lines: Vec<String>,
    /// Printed after `lines` only when logging at debug level (`-d`).
    pub debug_lines: Vec<String>,
    /// The tuner's entry in the `jpaths` query (`null` if none).
    pub json: Option<serde_json::Value>,
}

/// Counters, first/last values and recent records of every change.
#[derive(Debug, Default)]
pub struct Ledger {
    pub tuners: Vec<TunerMeta>,
    stats: BTreeMap<(usize, usize, usize, bool), u64>,
    spans: BTreeMap<Where, Span>,
    records: VecDeque<ChangeRecord>,
    extras: BTreeMap<usize, TunerSummary>,
}

impl Ledger {
    pub fn add_tuner(&mut self, meta: TunerMeta) -> usize {
        self.tuners.push(meta);
        self.tuners.len() - 1
    }

    pub fn set_state(&mut self, tuner: usize, state: TunerState) {
        if let Some(t) = self.tuners.get_mut(tuner) {
            t.state = state;
        }
    }

    /// Records a change. `original` is the value before bpftune first touched this
    /// sysctl in that namespace (possibly from an earlier run).
    pub fn record(
        &mut self,
        tuner: usize,
        tunable: usize,
        scenario: usize,
        original: Option<SysctlValue>,
        rec: ChangeRecord,
    ) {
        *self
            .stats
            .entry((tuner, tunable, scenario, rec.global))
            .or_insert(0) += 1;
        if let (true, Some(new)) = (rec.applied, rec.new.clone()) {
            let key = Where {
                tuner,
                tunable,
                cookie: rec.netns_cookie,
            };
            let orig = original
                .or_else(|| rec.old.clone())
                .unwrap_or_else(|| new.clone());
            self.spans
                .entry(key)
                .and_modify(|s| s.latest = new.clone())
                .or_insert(Span {
                    global: rec.global,
                    netns: rec.netns.clone(),
                    original: orig,
                    latest: new,
                });
        }
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(rec);
    }

    /// Counts `n` occurrences of a scenario that have no change record of their own.
    pub fn count(&mut self, tuner: usize, tunable: usize, scenario: usize, global: bool, n: u64) {
        *self.stats.entry((tuner, tunable, scenario, global)).or_insert(0) += n;
    }

    /// Replaces a tuner's own summary section.
    pub fn set_extra(&mut self, tuner: usize, extra: TunerSummary) {
        self.extras.insert(tuner, extra);
    }

    /// `jpaths`: `{ "<tuner>": <its JSON>, … }` for every tuner that provides one.
    pub fn extras_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .extras
            .iter()
            .filter_map(|(t, e)| {
                let name = self.tuners.get(*t)?.name;
                Some((name.to_string(), e.json.clone()?))
            })
            .collect();
        serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn records(&self) -> impl Iterator<Item = &ChangeRecord> {
        self.records.iter()
    }

    /// Number of applied changes so far.
    pub fn applied_count(&self) -> usize {
        self.records.iter().filter(|r| r.applied).count()
    }

    /// Per-tuner summary lines (C bpftune's format), used at exit and by `summary`.
    pub fn tuner_summary(&self, tuner: usize) -> Vec<String> {
        let mut out = Vec::new();
        let Some(meta) = self.tuners.get(tuner) else {
            return out;
        };
        if let Some(extra) = self.extras.get(&tuner) {
            out.extend(extra.lines.iter().cloned());
            if tracing::enabled!(tracing::Level::DEBUG) {
                out.extend(extra.debug_lines.iter().cloned());
            }
        }
        for global in [true, false] {
            for (ti, desc) in meta.tunables.iter().enumerate() {
                let mut any = false;
                for (si, sc) in meta.scenarios.iter().enumerate() {
                    let n = self.stats.get(&(tuner, ti, si, global)).copied().unwrap_or(0);
                    if n == 0 {
                        continue;
                    }
                    any = true;
                    out.push(format!(
                        "# Summary: scenario '{}' occurred {} times for tunable '{}' in {}global ns. {}",
                        sc.name,
                        n,
                        desc.name,
                        if global { "" } else { "non-" },
                        sc.description
                    ));
                }
                if !(any && global && desc.kind == TunableKind::Sysctl) {
                    continue;
                }
                let span = self
                    .spans
                    .iter()
                    .find(|(w, s)| w.tuner == tuner && w.tunable == ti && s.global)
                    .map(|(_, s)| s);
                // A value that went back where it started (e.g. low-memory measures
                // undone) has nothing to replicate.
                if let Some(s) = span.filter(|s| s.original != s.latest) {
                    out.push(format!(
                        "# sysctl '{}' changed from ({}) -> ({})",
                        desc.name,
                        s.original.c_style(),
                        s.latest.c_style()
                    ));
                    out.push("# To replicate this change on another system, run the following as a privileged user in a terminal:".to_string());
                    out.push(format!("sysctl -w {}=\"{}\"", desc.name, s.latest.c_style()));
                }
            }
        }
        out
    }

    /// Text of the `summary` query.
    pub fn summary_text(&self) -> String {
        let mut s = String::from("# Summary of changes made across all tuners:\n");
        for t in 0..self.tuners.len() {
            for line in self.tuner_summary(t) {
                s.push_str(&line);
                s.push('\n');
            }
        }
        s
    }

    /// Text of the `rollback` query: commands restoring every sysctl we changed, in
    /// the initial namespace and in named namespaces.
    pub fn rollback_text(&self) -> String {
        let mut s = String::from(
            "# Summary of rollback operations needed to restore original state for all tuners:\n",
        );
        for (w, span) in &self.spans {
            let Some(desc) = self.tuners.get(w.tuner).and_then(|t| t.tunables.get(w.tunable)) else {
                continue;
            };
            if span.original == span.latest {
                continue;
            }
            let cmd = format!("sysctl -w {}=\"{}\"", desc.name, span.original.c_style());
            if span.global {
                let _ = writeln!(
                    s,
                    "# To roll back changes to '{}', run the following as a privileged user in a terminal:",
                    desc.name
                );
                let _ = writeln!(s, "{cmd}");
            } else if let Some(ns) = &span.netns {
                let _ = writeln!(s, "# To roll back changes to '{}' in network namespace '{}', run the following as a privileged user in a terminal:", desc.name, ns);
                let _ = writeln!(s, "ip netns exec {ns} {cmd}");
            } else {
                let _ = writeln!(s, "# '{}' was changed in unnamed network namespace (cookie {}) from ({}); enter it (nsenter) to run: {cmd}", desc.name, w.cookie, span.original.c_style());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUNABLES: &[TunableDesc] = &[TunableDesc::sysctl("net.ipv4.tcp_rmem", 3, true)];
    const SCENARIOS: &[Scenario] = &[Scenario {
        name: "need to increase TCP buffer size(s)",
        description: "Need to increase buffer size(s) to maximize throughput",
    }];

    fn rec(global: bool, cookie: u64, old: i64, new: i64) -> ChangeRecord {
        ChangeRecord {
            time: 0.0,
            tuner: "tcp_buffer".into(),
            tunable: "net.ipv4.tcp_rmem".into(),
            scenario: SCENARIOS[0].name.into(),
            netns_cookie: cookie,
            global,
            netns: (!global).then(|| "ns1".to_string()),
            old: Some(SysctlValue::Ints(vec![4096, 131072, old])),
            new: Some(SysctlValue::Ints(vec![4096, 131072, new])),
            message: String::new(),
            applied: true,
            event_ts_ns: 0,
            write_ts_ns: 0,
        }
    }

    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        l.add_tuner(TunerMeta {
            name: "tcp_buffer",
            state: TunerState::Active,
            tunables: TUNABLES,
            scenarios: SCENARIOS,
        });
        l
    }

    #[test]
    fn summary_counts_and_spans() {
        let mut l = ledger();
        l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
        l.record(0, 0, 0, None, rec(true, 1, 7864320, 9830400));
        l.record(0, 0, 0, None, rec(false, 9, 1310720, 1638400));
        let s = l.summary_text();
        assert!(s.starts_with("# Summary of changes made across all tuners:\n"));
        assert!(s.contains("occurred 2 times for tunable 'net.ipv4.tcp_rmem' in global ns."));
        assert!(s.contains("occurred 1 times for tunable 'net.ipv4.tcp_rmem' in non-global ns."));
        assert!(s.contains(
            "# sysctl 'net.ipv4.tcp_rmem' changed from (4096 131072 6291456 ) -> (4096 131072 9830400 )"
        ));
        assert!(s.contains("sysctl -w net.ipv4.tcp_rmem=\"4096 131072 9830400 \""));
        let r = l.rollback_text();
        assert!(r.contains("sysctl -w net.ipv4.tcp_rmem=\"4096 131072 6291456 \""));
        assert!(r.contains("ip netns exec ns1 sysctl -w net.ipv4.tcp_rmem=\"4096 131072 1310720 \""));
        assert_eq!(l.applied_count(), 3);
    }

    #[test]
    fn tuner_sections_counts_and_json() {
        let mut l = ledger();
        l.count(0, 0, 0, false, 5);
        l.set_extra(
            0,
            TunerSummary {
                lines: vec!["# Summary: own line".into()],
                debug_lines: vec!["# Summary: debug only".into()],
                json: Some(serde_json::json!({"paths_tracked": 1})),
            },
        );
        let s = l.summary_text();
        let own = s.find("# Summary: own line").expect("own line");
        let counted = s
            .find("occurred 5 times for tunable 'net.ipv4.tcp_rmem' in non-global ns.")
            .expect("counted without a record");
        assert!(own < counted, "own section first, as C's summarize() hook: {s}");
        assert_eq!(l.applied_count(), 0);
        let j: serde_json::Value = serde_json::from_str(&l.extras_json()).expect("valid JSON");
        assert_eq!(j["tcp_buffer"]["paths_tracked"], 1);
    }

    #[test]
    fn persisted_original_wins() {
        let mut l = ledger();
        let orig = SysctlValue::Ints(vec![4096, 131072, 1000]);
        l.record(0, 0, 0, Some(orig), rec(true, 1, 2000, 3000));
        assert!(l.rollback_text().contains("\"4096 131072 1000 \""));
    }
}

//! The ledger built from the change records (counters, first and
//! last values, recent records). Log lines come from the engine; the `summary`, `rollback`
//! and `jchanges` replies and the exit summary are rendered from the ledger by
//! `report::query::format`.

use std::collections::{BTreeMap, VecDeque};

pub use crate::model::change::{ChangeRecord, TunerMeta, TunerSummary};
use crate::model::status::TunerState;
use crate::model::tunable::{SysctlValue, TunableKind};

/// How many records the ledger keeps for `jchanges` (the counters, spans and advice
/// that `summary`, `rollback` and `advice` read are kept apart; the log has every
/// change). Measured: a record holds about 525 B and its pretty JSON about 610 B, so 256
/// records cost about 135 kB plus a 160 kB reply. At 1024 the bounded ring took the
/// whole hour of a soak to fill (RSS rising all along, 0.5 MB held + 1.6 MB peak reply),
/// which hid whether anything else grew; 256 is still hours to days of a fleet node's
/// tuning history.
pub const MAX_RECORDS: usize = 256;

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

/// Counters, first/last values and recent records of every change.
#[derive(Debug, Default)]
pub struct Ledger {
    pub tuners: Vec<TunerMeta>,
    stats: BTreeMap<(usize, usize, usize, bool), u64>,
    spans: BTreeMap<Where, Span>,
    records: VecDeque<ChangeRecord>,
    extras: BTreeMap<usize, TunerSummary>,
    /// Per sysctl and namespace: the value to make persistent (applied or proposed)
    /// and why; feeds the `advice` query and the proposals in `summary`.
    advice: BTreeMap<Where, Advice>,
    /// Observe mode: records are proposals, nothing is written.
    observe: bool,
    /// Sysctl writes made, by (tuner, tunable, scenario, global): `stats` also counts
    /// informational records, the metrics' change counter only real writes.
    writes: BTreeMap<(usize, usize, usize, bool), u64>,
    /// Changes proposed but not made (observe mode), same key.
    proposals: BTreeMap<(usize, usize, usize, bool), u64>,
    /// Where plugin tuners were loaded from (tuner id → path); built-in tuners have none.
    pub origins: BTreeMap<usize, String>,
    /// Proposals so far (records are bounded, this is not).
    proposed: u64,
}

/// Most distinct reasons kept per advice entry (the newest replace the oldest).
const MAX_REASONS: usize = 4;

#[derive(Debug, Clone)]
struct Advice {
    global: bool,
    netns: Option<String>,
    /// Value before the first change (or proposal) in this run.
    original: SysctlValue,
    latest: SysctlValue,
    proposed: bool,
    /// Distinct tuner messages, oldest first, at most [`MAX_REASONS`].
    reasons: Vec<String>,
    /// Changes (or proposals) that led here.
    count: u64,
}

impl Ledger {
    pub fn add_tuner(&mut self, meta: TunerMeta) -> usize {
        self.tuners.push(meta);
        self.tuners.len() - 1
    }

    /// Marks the ledger as observe mode (`--observe`): records are proposals.
    pub fn set_observe(&mut self, observe: bool) {
        self.observe = observe;
    }

    pub fn observe(&self) -> bool {
        self.observe
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
        if rec.applied {
            *self
                .writes
                .entry((tuner, tunable, scenario, rec.global))
                .or_insert(0) += 1;
        }
        if rec.proposed {
            self.count_proposal(tuner, tunable, scenario, rec.global);
        }
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
        if rec.proposed {
            self.proposed += 1;
        }
        // Advice is a sysctl.d fragment: per-socket proposals (pseudo-tunables) are
        // records and counts, not advice.
        let sysctl = self
            .tuners
            .get(tuner)
            .and_then(|m| m.tunables.get(tunable))
            .is_none_or(|d| d.kind == TunableKind::Sysctl);
        if let (true, true, Some(old), Some(new)) = (rec.applied || rec.proposed, sysctl, &rec.old, &rec.new)
        {
            let key = Where {
                tuner,
                tunable,
                cookie: rec.netns_cookie,
            };
            let a = self.advice.entry(key).or_insert_with(|| Advice {
                global: rec.global,
                netns: rec.netns.clone(),
                original: old.clone(),
                latest: new.clone(),
                proposed: rec.proposed,
                reasons: Vec::new(),
                count: 0,
            });
            a.latest = new.clone();
            a.proposed = rec.proposed;
            a.count += 1;
            if !rec.message.is_empty() && !a.reasons.contains(&rec.message) {
                if a.reasons.len() == MAX_REASONS {
                    a.reasons.remove(0);
                }
                a.reasons.push(rec.message.clone());
            }
        }
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(rec);
    }

    /// Drops the spans and advice of a namespace that is gone: nothing there is left to
    /// roll back or apply, and keeping them would grow the ledger by one entry per
    /// namespace ever tuned (C bpftune #93/#188). Counters and recent records stay (both
    /// are bounded).
    pub fn forget_netns(&mut self, cookie: u64) {
        self.spans.retain(|w, s| s.global || w.cookie != cookie);
        self.advice.retain(|w, a| w.cookie != cookie || a.global);
    }

    /// Number of (tuner, tunable, namespace) spans held (diagnostics).
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    /// Counts `n` occurrences of a scenario that have no change record of their own.
    pub fn add_count(&mut self, tuner: usize, tunable: usize, scenario: usize, global: bool, n: u64) {
        *self.stats.entry((tuner, tunable, scenario, global)).or_insert(0) += n;
    }

    /// Counts a change that was proposed but not made (observe mode).
    pub fn count_proposal(&mut self, tuner: usize, tunable: usize, scenario: usize, global: bool) {
        *self
            .proposals
            .entry((tuner, tunable, scenario, global))
            .or_insert(0) += 1;
    }

    /// Sysctl writes made, as ((tuner, tunable, scenario, global), count).
    pub fn writes(&self) -> impl Iterator<Item = ((usize, usize, usize, bool), u64)> + '_ {
        self.writes.iter().map(|(k, v)| (*k, *v))
    }

    /// Proposed changes (observe mode), as ((tuner, tunable, scenario, global), count).
    pub fn proposals(&self) -> impl Iterator<Item = ((usize, usize, usize, bool), u64)> + '_ {
        self.proposals.iter().map(|(k, v)| (*k, *v))
    }

    /// Replaces a tuner's own summary section.
    pub fn set_extra(&mut self, tuner: usize, extra: TunerSummary) {
        self.extras.insert(tuner, extra);
    }

    /// A tuner's own summary section, if it has one.
    pub fn extra(&self, tuner: usize) -> Option<&TunerSummary> {
        self.extras.get(&tuner)
    }

    pub fn records(&self) -> impl Iterator<Item = &ChangeRecord> {
        self.records.iter()
    }

    /// Number of applied changes so far.
    pub fn applied_count(&self) -> usize {
        self.records.iter().filter(|r| r.applied).count()
    }

    /// Number of proposals so far (observe mode), including those whose records were
    /// dropped from the bounded record list.
    pub fn proposed_count(&self) -> u64 {
        self.proposed
    }

    /// Every sysctl whose value bpftune changed (or, in observe mode, would change)
    /// away from where it started, in (tuner, tunable, namespace) order.
    pub fn advice(&self) -> impl Iterator<Item = AdviceView<'_>> {
        self.advice
            .iter()
            .filter(|(_, a)| a.original != a.latest)
            .map(|(w, a)| AdviceView {
                tuner: w.tuner,
                tunable: w.tunable,
                cookie: w.cookie,
                global: a.global,
                netns: a.netns.as_deref(),
                original: &a.original,
                latest: &a.latest,
                proposed: a.proposed,
                reasons: &a.reasons,
                count: a.count,
            })
    }

    /// How often `scenario` happened for `tunable` of `tuner` in the global (or in
    /// non-global) namespaces.
    pub fn count(&self, tuner: usize, tunable: usize, scenario: usize, global: bool) -> u64 {
        self.stats
            .get(&(tuner, tunable, scenario, global))
            .copied()
            .unwrap_or(0)
    }

    /// Every sysctl changed, with its original and latest value, in (tuner, tunable,
    /// namespace) order.
    pub fn spans(&self) -> impl Iterator<Item = SpanView<'_>> {
        self.spans.iter().map(|(w, s)| SpanView {
            tuner: w.tuner,
            tunable: w.tunable,
            cookie: w.cookie,
            global: s.global,
            netns: s.netns.as_deref(),
            original: &s.original,
            latest: &s.latest,
        })
    }
}

/// One changed sysctl in one namespace (see [`Ledger::spans`]).
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'a> {
    pub tuner: usize,
    pub tunable: usize,
    pub cookie: u64,
    pub global: bool,
    pub netns: Option<&'a str>,
    pub original: &'a SysctlValue,
    pub latest: &'a SysctlValue,
}

/// One sysctl value to make persistent (see [`Ledger::advice`]).
#[derive(Debug, Clone, Copy)]
pub struct AdviceView<'a> {
    pub tuner: usize,
    pub tunable: usize,
    pub cookie: u64,
    pub global: bool,
    pub netns: Option<&'a str>,
    pub original: &'a SysctlValue,
    pub latest: &'a SysctlValue,
    /// True if only proposed (observe mode), false if bpftune wrote it.
    pub proposed: bool,
    pub reasons: &'a [String],
    pub count: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tunable::{Scenario, TunableDesc};

    pub(crate) const TUNABLES: &[TunableDesc] = &[TunableDesc::sysctl("net.ipv4.tcp_rmem", 3, true)];
    pub(crate) const SCENARIOS: &[Scenario] = &[Scenario {
        name: "need to increase TCP buffer size(s)",
        description: "Need to increase buffer size(s) to maximize throughput",
    }];

    pub(crate) fn rec(global: bool, cookie: u64, old: i64, new: i64) -> ChangeRecord {
        ChangeRecord {
            time: 0.0,
            tuner: "demo".into(),
            tunable: "net.ipv4.tcp_rmem".into(),
            scenario: SCENARIOS[0].name.into(),
            netns_cookie: cookie,
            global,
            netns: (!global).then(|| "ns1".to_string()),
            old: Some(SysctlValue::Ints(vec![4096, 131072, old])),
            new: Some(SysctlValue::Ints(vec![4096, 131072, new])),
            message: String::new(),
            applied: true,
            proposed: false,
            event_ts_ns: 0,
            write_ts_ns: 0,
        }
    }

    pub(crate) fn ledger() -> Ledger {
        let mut l = Ledger::default();
        l.add_tuner(TunerMeta {
            name: "demo",
            state: TunerState::Active,
            tunables: TUNABLES,
            scenarios: SCENARIOS,
        });
        l
    }

    #[test]
    fn counts_and_spans() {
        let mut l = ledger();
        l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
        l.record(0, 0, 0, None, rec(true, 1, 7864320, 9830400));
        l.record(0, 0, 0, None, rec(false, 9, 1310720, 1638400));
        assert_eq!(l.count(0, 0, 0, true), 2);
        assert_eq!(l.count(0, 0, 0, false), 1);
        let spans: Vec<_> = l.spans().collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].original, &SysctlValue::Ints(vec![4096, 131072, 6291456]));
        assert_eq!(spans[0].latest, &SysctlValue::Ints(vec![4096, 131072, 9830400]));
        assert_eq!(l.applied_count(), 3);
        // A persisted original (from an earlier run) wins over the record's old value.
        let mut l = ledger();
        l.record(
            0,
            0,
            0,
            Some(SysctlValue::Ints(vec![4096, 131072, 1000])),
            rec(true, 1, 2000, 3000),
        );
        assert_eq!(
            l.spans().next().map(|s| s.original.clone()),
            Some(SysctlValue::Ints(vec![4096, 131072, 1000]))
        );
    }

    /// Namespace churn must not grow the ledger: spans of a vanished namespace go.
    #[test]
    fn forgetting_a_namespace_drops_its_spans_only() {
        let mut l = ledger();
        l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
        for cookie in 100..200 {
            l.record(0, 0, 0, None, rec(false, cookie, 1310720, 1638400));
        }
        assert_eq!(l.span_count(), 101);
        for cookie in 100..200 {
            l.forget_netns(cookie);
        }
        assert_eq!(l.span_count(), 1, "the global span stays");
        assert_eq!(l.count(0, 0, 0, false), 100, "counters stay");
    }
}

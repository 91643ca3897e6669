//! The one path a change takes out of the engine: [`Engine::emit`] builds its
//! [`ChangeRecord`] once, renders C bpftune's two log lines (and their journal fields)
//! from it, and hands it to the ledger (queries, metrics, exit summary).

use std::borrow::Cow;

use super::{lock, Engine};
use crate::kernel::netns::Target;
use crate::model::tunable::SysctlValue;
use crate::record::ledger::ChangeRecord;
use crate::tuner::Ns;

/// Where a change happened, as its record and its journal fields name it.
pub(super) struct Place {
    /// The record's `netns_cookie`.
    pub(super) cookie: u64,
    pub(super) global: bool,
    /// The namespace's /run/netns name, when known.
    pub(super) netns: Option<String>,
    /// `BPFTUNE_NETNS`: "global", else the name, else the cookie.
    pub(super) label: String,
    /// `BPFTUNE_NETNS_COOKIE`: the record's cookie except for notes (see
    /// [`Engine::note`]).
    pub(super) journal_cookie: u64,
}

impl Place {
    /// A change in `target`, kept in the engine's bookkeeping under `cookie`.
    pub(super) fn of(target: &Target, cookie: u64) -> Place {
        Place {
            cookie,
            global: matches!(target, Target::Global),
            netns: match target {
                Target::Global => None,
                Target::Netns(info) => info.name.clone(),
            },
            label: netns_label(target),
            journal_cookie: cookie,
        }
    }

    /// A namespace not found (any more): still named by its cookie.
    pub(super) fn unlocated(cookie: u64) -> Place {
        Place {
            cookie,
            global: false,
            netns: None,
            label: cookie.to_string(),
            journal_cookie: cookie,
        }
    }
}

/// What kind of change a [`Change`] is; decides the record's flags and times.
pub(super) enum Kind {
    /// Written. `original` is the value before bpftune first touched the sysctl there
    /// (possibly in an earlier run).
    Applied {
        original: SysctlValue,
        event_ts_ns: u64,
        write_ts_ns: u64,
    },
    /// Observe mode: what would have been written. `log` is false when the same
    /// proposal was said before (it is recorded and counted all the same).
    Proposed { event_ts_ns: u64, log: bool },
    /// Informational: nothing changed, nothing proposed.
    Note,
}

/// One change, as the engine's paths (apply, propose, would-change, note) describe it.
pub(super) struct Change<'a> {
    pub(super) tuner: usize,
    pub(super) tunable: usize,
    /// The tunable's name (its caller has looked the descriptor up already).
    pub(super) name: &'static str,
    pub(super) scenario: usize,
    pub(super) place: Place,
    /// (old, new), when something was or would have been changed.
    pub(super) values: Option<(SysctlValue, SysctlValue)>,
    /// The tuner's message (trailing white space is dropped).
    pub(super) message: &'a str,
    pub(super) kind: Kind,
}

impl Engine {
    /// Records `c` and, unless it is a proposal said before, logs its two lines. The
    /// lines are rendered from the record, so the log, the journal fields and the
    /// ledger cannot disagree.
    pub(super) fn emit(&mut self, c: Change<'_>) {
        let meta = &self.metas[c.tuner];
        let (scenario, scenario_desc) = meta
            .scenarios
            .get(c.scenario)
            .map(|s| (s.name, s.description))
            .unwrap_or(("?", ""));
        let (applied, proposed, event_ts_ns, write_ts_ns, log, original) = match c.kind {
            Kind::Applied {
                original,
                event_ts_ns,
                write_ts_ns,
            } => (true, false, event_ts_ns, write_ts_ns, true, Some(original)),
            Kind::Proposed { event_ts_ns, log } => (false, true, event_ts_ns, 0, log, None),
            Kind::Note => (false, false, 0, 0, true, None),
        };
        let (old, new) = c.values.unzip();
        let rec = ChangeRecord {
            time: ChangeRecord::now(),
            tuner: meta.name.to_string(),
            tunable: c.name.to_string(),
            scenario: scenario.to_string(),
            netns_cookie: c.place.cookie,
            global: c.place.global,
            netns: c.place.netns,
            old,
            new,
            message: c.message.trim_end().to_string(),
            applied,
            proposed,
            event_ts_ns,
            write_ts_ns,
        };
        if log {
            let line = ChangeLine {
                rec: &rec,
                scenario_desc,
                netns: &c.place.label,
                cookie: c.place.journal_cookie,
            };
            line.scenario();
            line.change();
        }
        lock(&self.ledger).record(c.tuner, c.tunable, c.scenario, original, rec);
    }

    /// [`TunerEnv::note`](crate::tuner::TunerEnv::note): an informational change
    /// record (nothing written). Its `BPFTUNE_NETNS_COOKIE` is the event's namespace
    /// even for a tunable that is not per-namespace, whose record is the global one.
    pub(super) fn note(&mut self, tuner: usize, tunable: usize, scenario: usize, ns: Ns, message: &str) {
        let Some(desc) = self.desc(tuner, tunable) else {
            return;
        };
        let global = ns.is_global() || !desc.namespaced;
        let place = Place {
            cookie: if global {
                self.ns.global_cookie()
            } else {
                self.cookie(ns)
            },
            global,
            netns: None,
            label: if global {
                "global".to_string()
            } else {
                self.cookie(ns).to_string()
            },
            journal_cookie: self.cookie(ns),
        };
        self.emit(Change {
            tuner,
            tunable,
            name: desc.name,
            scenario,
            place,
            values: None,
            message,
            kind: Kind::Note,
        });
    }
}

/// The two log lines of a scenario (C bpftune's words), with the change's structured
/// journal fields (`BPFTUNE_*`, see report::log) taken from its record.
struct ChangeLine<'a> {
    rec: &'a ChangeRecord,
    scenario_desc: &'a str,
    /// `BPFTUNE_NETNS`.
    netns: &'a str,
    /// `BPFTUNE_NETNS_COOKIE`.
    cookie: u64,
}

impl ChangeLine<'_> {
    /// "Scenario '…' occurred for tunable '…' in [non-]global ns. …"
    fn scenario(&self) {
        let rec = self.rec;
        tracing::info!(
            tuner = rec.tuner.as_str(),
            tunable = rec.tunable.as_str(),
            scenario = rec.scenario.as_str(),
            netns = %self.netns,
            netns_cookie = self.cookie,
            "Scenario '{}' occurred for tunable '{}' in {}global ns. {}",
            rec.scenario,
            rec.tunable,
            if rec.global { "" } else { "non-" },
            self.scenario_desc
        );
    }

    /// The tuner's message, with the (old, new) values when something was changed; a
    /// proposal (observe mode) says what would have changed where.
    fn change(&self) {
        let rec = self.rec;
        let values = rec.old.as_ref().zip(rec.new.as_ref());
        let text = match values {
            Some((old, new)) if rec.proposed => Cow::Owned(format!(
                "would change {} in {} from ({old}) to ({new}): {}",
                rec.tunable,
                place(rec),
                rec.message
            )),
            _ => Cow::Borrowed(rec.message.as_str()),
        };
        match values {
            Some((old, new)) => tracing::info!(
                tuner = rec.tuner.as_str(),
                tunable = rec.tunable.as_str(),
                scenario = rec.scenario.as_str(),
                netns = %self.netns,
                netns_cookie = self.cookie,
                old = %old,
                new = %new,
                proposed = rec.proposed,
                "{text}"
            ),
            None => tracing::info!(
                tuner = rec.tuner.as_str(),
                tunable = rec.tunable.as_str(),
                scenario = rec.scenario.as_str(),
                netns = %self.netns,
                netns_cookie = self.cookie,
                "{text}"
            ),
        }
    }
}

/// Where a proposal would have happened, in its log line: "global ns", "netns NAME" or
/// "netns (cookie N)".
fn place(rec: &ChangeRecord) -> String {
    if rec.global {
        return "global ns".to_string();
    }
    match &rec.netns {
        Some(name) => format!("netns {name}"),
        None => format!("netns (cookie {})", rec.netns_cookie),
    }
}

/// `BPFTUNE_NETNS` of a journal entry: "global", else the namespace's /run/netns name
/// when it has one, else its cookie.
fn netns_label(target: &Target) -> String {
    match target {
        Target::Global => "global".to_string(),
        Target::Netns(info) => info.name.clone().unwrap_or_else(|| info.cookie.to_string()),
    }
}

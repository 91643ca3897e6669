//! The change line pair (C bpftune's two log lines) and informational notes.

use super::{lock, Engine};
use crate::core::change::ChangeRecord;
use crate::core::netns::Target;
use crate::core::tunable::SysctlValue;
use crate::core::tuner::Ns;

impl Engine {
    pub(super) fn note(&mut self, tuner: usize, tunable: usize, scenario: usize, ns: Ns, message: &str) {
        let Some(desc) = self.desc(tuner, tunable) else {
            return;
        };
        let global = ns.is_global() || !desc.namespaced;
        let meta = &self.metas[tuner];
        let (sc_name, sc_desc) = meta
            .scenarios
            .get(scenario)
            .map(|s| (s.name, s.description))
            .unwrap_or(("?", ""));
        let line = ChangeLine {
            tuner: meta.name,
            tunable: desc.name,
            scenario: sc_name,
            scenario_desc: sc_desc,
            netns: if global {
                "global".to_string()
            } else {
                self.cookie(ns).to_string()
            },
            cookie: self.cookie(ns),
            global,
        };
        line.scenario();
        line.change(None, false, message.trim_end());
        let rec = ChangeRecord {
            time: ChangeRecord::now(),
            tuner: meta.name.to_string(),
            tunable: desc.name.to_string(),
            scenario: sc_name.to_string(),
            netns_cookie: if global {
                self.ns.global_cookie()
            } else {
                self.cookie(ns)
            },
            global,
            netns: None,
            old: None,
            new: None,
            message: message.trim_end().to_string(),
            applied: false,
            proposed: false,
            event_ts_ns: 0,
            write_ts_ns: 0,
        };
        lock(&self.ledger).record(tuner, tunable, scenario, None, rec);
    }
}

/// The two log lines of a scenario (C bpftune's words), with the change's structured
/// journal fields (`BPFTUNE_*`, see core::log) taken from the change itself.
pub(super) struct ChangeLine<'a> {
    pub(super) tuner: &'a str,
    pub(super) tunable: &'a str,
    pub(super) scenario: &'a str,
    pub(super) scenario_desc: &'a str,
    pub(super) netns: String,
    pub(super) cookie: u64,
    pub(super) global: bool,
}

impl ChangeLine<'_> {
    /// "Scenario '…' occurred for tunable '…' in [non-]global ns. …"
    pub(super) fn scenario(&self) {
        tracing::info!(
            tuner = self.tuner,
            tunable = self.tunable,
            scenario = self.scenario,
            netns = %self.netns,
            netns_cookie = self.cookie,
            "Scenario '{}' occurred for tunable '{}' in {}global ns. {}",
            self.scenario,
            self.tunable,
            if self.global { "" } else { "non-" },
            self.scenario_desc
        );
    }

    /// The tuner's message; `values` (old, new) when something was (or, `proposed`,
    /// would have been) changed.
    pub(super) fn change(&self, values: Option<(&SysctlValue, &SysctlValue)>, proposed: bool, text: &str) {
        match values {
            Some((old, new)) => tracing::info!(
                tuner = self.tuner,
                tunable = self.tunable,
                scenario = self.scenario,
                netns = %self.netns,
                netns_cookie = self.cookie,
                old = %old,
                new = %new,
                proposed,
                "{text}"
            ),
            None => tracing::info!(
                tuner = self.tuner,
                tunable = self.tunable,
                scenario = self.scenario,
                netns = %self.netns,
                netns_cookie = self.cookie,
                "{text}"
            ),
        }
    }
}

/// Where a proposal would have happened, in its log line: "global ns", "netns NAME" or
/// "netns (cookie N)".
pub(super) fn place(target: &Target, cookie: u64) -> String {
    match target {
        Target::Global => "global ns".to_string(),
        Target::Netns(info) => match &info.name {
            Some(name) => format!("netns {name}"),
            None => format!("netns (cookie {cookie})"),
        },
    }
}

/// `BPFTUNE_NETNS` of a journal entry: "global", else the namespace's /run/netns name
/// when it has one, else its cookie.
pub(super) fn netns_label(target: &Target) -> String {
    match target {
        Target::Global => "global".to_string(),
        Target::Netns(info) => info.name.clone().unwrap_or_else(|| info.cookie.to_string()),
    }
}

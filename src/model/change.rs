//! The one structured change record: built once by the engine's `emit`; log lines,
//! journal fields, the ledger, metrics and the summary are rendered from it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::status::TunerState;
use crate::model::tunable::{Scenario, SysctlValue, TunableDesc};

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
    /// False for informational records and proposals (nothing written).
    pub applied: bool,
    /// Observe mode (`--observe`): the change bpftune would have made; nothing was
    /// written. Always false when `applied` is true.
    pub proposed: bool,
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

/// A tuner's own summary section (C bpftune's `summarize()` hook), e.g. the
/// congestion-control counts and per-path table of a tuner that switches algorithms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TunerSummary {
    /// Printed before the per-scenario lines, in the exit summary and `summary`.
    pub lines: Vec<String>,
    /// Printed after `lines` only when logging at debug level (`-d`).
    pub debug_lines: Vec<String>,
    /// The tuner's entry in the `jpaths` query (`null` if none).
    pub json: Option<serde_json::Value>,
}

//! What a tuner proposes and what became of it: the vocabulary between a tuner's
//! decision and the engine's write.

use crate::model::event::Ns;
use crate::model::tunable::SysctlValue;

/// One adaptive-sampling report ("Sample '%s': ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleReport {
    pub name: &'static str,
    pub calls: u64,
    pub every: u64,
}

impl SampleReport {
    /// Reports of time-gated samples (`sample_gate` in bpf/common.bpf.h): per sample,
    /// the calls seen and the calls that proceeded, summed over CPUs; "every" is the
    /// average stride. Samples never called are left out.
    pub fn gated(
        names: &[&'static str],
        per_sample: impl IntoIterator<Item = (u64, u64)>,
    ) -> Vec<SampleReport> {
        names
            .iter()
            .zip(per_sample)
            .map(|(&name, (calls, proceeded))| SampleReport {
                name,
                calls,
                every: calls / proceeded.max(1),
            })
            .filter(|r| r.calls > 0)
            .collect()
    }
}

/// A change a tuner wants. The core checks it against the live value, the
/// administrator's ownership and the clamps before writing.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Index into the tuner's tunables.
    pub tunable: usize,
    /// Index into the tuner's scenarios.
    pub scenario: usize,
    /// Namespace of the triggering event: namespaced tunables are written there,
    /// global ones in the initial namespace whatever this says.
    pub ns: Ns,
    /// The premise: the value the decision was based on. If the live value differs the
    /// proposal is stale and dropped (C bpftune #155).
    pub expect: Option<SysctlValue>,
    pub value: SysctlValue,
    /// The tuner's explanation line (second log line).
    pub message: String,
    /// Kernel timestamp of the triggering event (0 when not event driven).
    pub event_ts_ns: u64,
}

/// A change outside the sysctls (e.g. one connection's congestion control) that a
/// tuner would have made and, in observe mode, did not: see `TunerEnv::would_change` in the tuner layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldChange<'a> {
    /// Index into the tuner's tunables (usually a pseudo-tunable, [`crate::model::tunable::TunableDesc::other`]).
    pub tunable: usize,
    pub scenario: usize,
    pub ns: Ns,
    /// What it is now and what the tuner would have made it, in its own words
    /// (`cubic`, `bbr`).
    pub from: &'a str,
    pub to: &'a str,
    /// The tuner's explanation.
    pub message: &'a str,
}

/// What became of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written; in observe mode: proposed, recorded and simulated (nothing written).
    Applied,
    /// Live value already equal: nothing written, nothing logged or counted.
    Unchanged,
    /// Live value no longer matches the premise.
    Stale,
    /// The tuner is disabled (manual/gone) for the target namespace or the
    /// administrator owns this sysctl there.
    Disabled,
    /// The sysctl does not exist here (optional tunables).
    Missing,
    /// The namespace could not be found.
    NoNamespace,
    Failed(String),
}

/// Memory facts the core reads once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFacts {
    /// nr_free_buffer_pages estimate from /proc/zoneinfo (pages; 0 if unknown).
    pub free_buffer_pages: u64,
    /// Page size in bytes.
    pub page_size: u64,
}

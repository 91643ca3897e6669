//! The contract between the core and a tuner. The core knows no single tuner: it loads
//! each through this trait, routes ring-buffer events to it by id, and gives it a
//! [`TunerEnv`] through which every read and write of a sysctl passes.

use std::os::fd::BorrowedFd;

pub mod corr;
pub mod drive;
mod macros;
pub mod mem_triple;
pub mod strategy;
pub mod support;
#[cfg(test)]
pub(crate) mod testing;

use crate::bpf::{HookError, LoadConfig, SharedMaps, Slot};
use crate::kernel::sysctl::SysctlError;
pub use crate::model::change::TunerSummary;
use crate::model::event::Event;
pub use crate::model::event::Ns;
// The vocabulary a tuner speaks, re-exported so that a tuner imports its contract from
// one place.
pub use crate::model::proposal::{MemoryFacts, Outcome, Proposal, SampleReport, WouldChange};
pub use crate::model::status::{NsState, TunerState};
use crate::model::tunable::{Rate, Scenario, SysctlValue, TunableDesc};
use crate::tuner::strategy::Strategies;

/// Everything a tuner needs to load its BPF object.
pub struct StartCtx<'a> {
    pub shared: &'a mut SharedMaps,
    pub config: LoadConfig,
    pub tuner_id: u32,
    /// Programs to enable: one flavour per hook slot.
    pub programs: &'a [&'static str],
    /// cgroup-v2 directory for cgroup programs.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// The same environment `handle` and `tick` get: a start that needs a sysctl or a
    /// /proc file (e.g. the live limits its BPF side filters on) reads it here, never
    /// from the file system directly.
    pub env: &'a mut dyn TunerEnv,
}

#[derive(Debug, thiserror::Error)]
pub enum TunerError {
    #[error("BPF load for tuner '{tuner}' failed: {source:#}")]
    Load {
        tuner: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("could not attach tuner '{tuner}': program '{prog}': {source:#}")]
    Attach {
        tuner: &'static str,
        prog: String,
        source: libbpf_rs::Error,
    },
    #[error("tuner '{0}' is not supported on this kernel: {1}")]
    Unsupported(&'static str, String),
}

impl TunerError {
    pub fn load(tuner: &'static str, source: libbpf_rs::Error) -> TunerError {
        TunerError::Load { tuner, source }
    }

    /// A load or attach failure of a tuner's object.
    pub fn hook(tuner: &'static str, e: HookError) -> TunerError {
        match e {
            HookError::Load(source) => TunerError::Load { tuner, source },
            HookError::Attach { prog, source } => TunerError::Attach { tuner, prog, source },
        }
    }
}

/// The core services a tuner may use while handling an event: everything a tuner reads
/// or writes outside its own BPF maps goes through here, so that every tuner inherits
/// the stale checks, the administrator's ownership, rollback and the change records.
pub trait TunerEnv {
    fn rate(&self) -> Rate;
    /// Live value of one of this tuner's tunables: in `ns` for namespaced tunables, in
    /// the initial namespace otherwise. In observe mode (`--observe`) this is the value
    /// the tuner proposed last (the simulated value) while the live value has not changed
    /// since; events are rewritten to match (`Engine::simulated_event`).
    fn read(&mut self, tunable: usize, ns: Ns) -> Result<SysctlValue, SysctlError>;
    /// The value in the kernel, also in observe mode (where [`TunerEnv::read`] returns
    /// the simulated value): what the BPF side compared with before posting an event.
    fn read_live(&mut self, tunable: usize, ns: Ns) -> Result<SysctlValue, SysctlError> {
        self.read(tunable, ns)
    }
    fn apply(&mut self, proposal: Proposal) -> Outcome;
    /// Logs and counts a scenario without writing anything (C bpftune's
    /// `bpftuner_tunable_update`: e.g. "can no longer update thresholds").
    fn note(&mut self, tunable: usize, scenario: usize, ns: Ns, message: &str);
    /// Another process (`pid`, command name `comm`) wrote sysctl `path`
    /// (`net/ipv4/tcp_rmem`) in `ns`.
    fn admin_write(&mut self, ns: Ns, path: &str, pid: i32, comm: &str);
    /// Contents of `/proc/net/<file>` files (e.g. "netstat", "snmp", "sockstat") as seen
    /// from `ns`, one entry per name (`None` if unreadable); the namespace is entered once
    /// for all of them. Parse them with [`crate::kernel::procfs`].
    fn proc_net(&mut self, ns: Ns, files: &[&str]) -> Vec<Option<String>>;
    fn memory(&self) -> MemoryFacts;
    /// A system-wide `/proc/<path>` file that is not per namespace (e.g. "schedstat",
    /// "pressure/cpu"); `None` if unreadable or not a plain relative path.
    fn proc_file(&mut self, _path: &str) -> Option<String> {
        None
    }
    /// Whether an administrator has taken `tunable` over (in `ns` for namespaced
    /// tunables, in the initial namespace otherwise): for tuners that notice changes the
    /// cgroup/sysctl hook cannot see (netlink) and must not report them twice.
    fn admin_owned(&mut self, _tunable: usize, _ns: Ns) -> bool {
        false
    }
    /// Counts `n` occurrences of a scenario without a log line or change record: for
    /// changes too frequent to log one by one (per-socket choices); the tuner logs a
    /// representative one with [`TunerEnv::note`].
    fn count(&mut self, _tunable: usize, _scenario: usize, _ns: Ns, _n: u64) {}
    /// Observe mode (`--observe`): a change the tuner would have made outside the
    /// sysctls, which [`TunerEnv::apply`] cannot stand for (the engine only writes
    /// sysctls). Logged in the engine's proposal words after the scenario line ("would
    /// change <tunable> in <place> from (…) to (…): <message>"), counted as a proposal
    /// and recorded with `"proposed": true`; never part of `advice` (not a sysctl). Say
    /// it once per thing worth saying (e.g. per path) and count the rest with
    /// [`TunerEnv::count`].
    fn would_change(&mut self, w: WouldChange<'_>) {
        self.note(w.tunable, w.scenario, w.ns, w.message);
    }
    /// The tuner dropped an event because the live value no longer matches what the
    /// kernel saw (counted in `bpftune_events_stale_total`, like the engine's own check).
    fn stale(&mut self) {}
}

/// A tuner: descriptors, BPF hooks and event handling.
pub trait Tuner {
    fn name(&self) -> &'static str;
    fn tunables(&self) -> &'static [TunableDesc];
    fn scenarios(&self) -> &'static [Scenario];
    /// BPF hooks with their candidate flavours.
    fn slots(&self) -> &'static [Slot];
    /// Flavour probing: loads a throw-away copy with exactly `programs` enabled, attaches
    /// its tracing programs and releases everything before returning. cgroup programs
    /// are only loaded (see [`crate::bpf::attach_all`]). The copy's events carry
    /// [`crate::bpf::TRIAL_TUNER_ID`], which no tuner has.
    fn try_attach(
        &self,
        shared: &SharedMaps,
        config: &LoadConfig,
        programs: &[&'static str],
    ) -> Result<(), HookError>;
    /// Loads and attaches for real (the daemon falls back to other flavours if this
    /// fails, see [`crate::bpf::plan::start`]). On error nothing stays attached.
    fn start(&mut self, ctx: StartCtx<'_>) -> Result<(), TunerError>;
    fn handle(&mut self, event: &Event, env: &mut dyn TunerEnv);
    /// Called about once a second; most tuners do nothing.
    fn tick(&mut self, _env: &mut dyn TunerEnv) {}
    fn samples(&self) -> Vec<SampleReport> {
        Vec::new()
    }
    /// The tuner's own summary section (C bpftune's `summarize()` hook), refreshed by
    /// the daemon after every tick and at exit; `None` if the tuner has none.
    fn summary(&mut self) -> Option<TunerSummary> {
        None
    }
    /// Detaches and unloads.
    fn stop(&mut self) {}
    /// The tuner's strategies (see [`crate::tuner::strategy`]), if it has any: the daemon
    /// evaluates them when the current one's timeout expires and switches to the best.
    fn strategies(&mut self) -> Option<&mut Strategies> {
        None
    }
    /// Score of strategy `strategy` while `current` runs: higher is better, negative
    /// (or NaN) rules it out.
    fn evaluate_strategy(&mut self, _strategy: usize, _current: usize, _env: &mut dyn TunerEnv) -> f64 {
        -1.0
    }
    /// Detaches the programs of strategy `from` and attaches those of `to` (already the
    /// current one in [`Tuner::strategies`]). On error the tuner stops itself.
    fn switch_strategy(&mut self, _from: usize, _to: usize) -> Result<(), TunerError> {
        Ok(())
    }
    /// The namespace with this cookie vanished: drop whatever the tuner keeps per
    /// namespace, so that its memory stays bounded under namespace churn (C bpftune
    /// #93/#188). Cookies are never reused within a boot: that state could never serve again.
    fn forget_netns(&mut self, _cookie: u64) {}
}

/// Whether `ns` is the (non-global) namespace with `cookie`: the shared test
/// for the tuners' [`Tuner::forget_netns`].
pub fn ns_has_cookie(ns: Ns, cookie: u64) -> bool {
    matches!(ns, Ns::Netns { cookie: c, .. } if c == cookie)
}

/// Accepts `demo`, `demo_tuner.so` or a path ending in it (`-a`).
pub fn allow_matches(allow: &[String], name: &str) -> bool {
    if allow.is_empty() {
        return true;
    }
    allow.iter().any(|a| {
        let base = a.rsplit('/').next().unwrap_or(a);
        base == name || base.strip_suffix("_tuner.so") == Some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_forms() {
        let allow = vec!["demo_tuner.so".to_string(), "sysctl".to_string()];
        assert!(allow_matches(&allow, "demo"));
        assert!(allow_matches(&allow, "sysctl"));
        assert!(!allow_matches(&allow, "other"));
        assert!(allow_matches(&[], "anything"));
        assert!(allow_matches(
            &["/usr/lib64/bpftune/demo_tuner.so".into()],
            "demo"
        ));
        assert!(!allow_matches(&["demo_tuner.so.dpkg-new".into()], "demo"));
    }
}

//! [`TunerEnv`]: what one tuner sees of the engine.

use super::{lock, Engine};
use crate::kernel::netns::Target;
use crate::kernel::sysctl::SysctlError;
use crate::model::tunable::{Rate, SysctlValue};
use crate::tuner::{MemoryFacts, Ns, Outcome, Proposal, TunerEnv, WouldChange};

impl Engine {
    pub fn ctx(&mut self, tuner: usize) -> EngineCtx<'_> {
        EngineCtx { engine: self, tuner }
    }
}

/// The [`TunerEnv`] one tuner sees.
pub struct EngineCtx<'a> {
    engine: &'a mut Engine,
    tuner: usize,
}

impl EngineCtx<'_> {
    /// The live value of `tunable` where an event from `ns` puts it, with the
    /// bookkeeping cookie and sysctl name (`read` and `read_live` share it).
    fn live(&mut self, tunable: usize, ns: Ns) -> Result<(u64, &'static str, SysctlValue), SysctlError> {
        let desc = self
            .engine
            .desc(self.tuner, tunable)
            .ok_or_else(|| SysctlError::NotFound(format!("tunable #{tunable}")))?;
        let (cookie, target) = self
            .engine
            .target_for(&desc, ns)
            .ok_or(SysctlError::Netns(crate::kernel::netns::NetnsError::Gone))?;
        Ok((cookie, desc.name, self.engine.read_desc(&desc, &target)?))
    }
}

impl TunerEnv for EngineCtx<'_> {
    fn rate(&self) -> Rate {
        self.engine.rate
    }

    fn read(&mut self, tunable: usize, ns: Ns) -> Result<SysctlValue, SysctlError> {
        let (cookie, name, live) = self.live(tunable, ns)?;
        Ok(if self.engine.observe {
            self.engine.effective(cookie, name, live)
        } else {
            live
        })
    }

    fn read_live(&mut self, tunable: usize, ns: Ns) -> Result<SysctlValue, SysctlError> {
        self.live(tunable, ns).map(|(_, _, v)| v)
    }

    fn apply(&mut self, proposal: Proposal) -> Outcome {
        self.engine.apply(self.tuner, proposal)
    }

    fn count(&mut self, tunable: usize, scenario: usize, ns: Ns, n: u64) {
        let global = ns.is_global()
            || self
                .engine
                .desc(self.tuner, tunable)
                .is_some_and(|d| !d.namespaced);
        lock(&self.engine.ledger).add_count(self.tuner, tunable, scenario, global, n);
    }

    fn stale(&mut self) {
        self.engine.stats.event_stale(self.tuner);
    }

    fn note(&mut self, tunable: usize, scenario: usize, ns: Ns, message: &str) {
        self.engine.note(self.tuner, tunable, scenario, ns, message)
    }

    fn would_change(&mut self, w: WouldChange<'_>) {
        self.engine.would_change(self.tuner, w)
    }

    fn admin_write(&mut self, ns: Ns, path: &str, pid: i32, comm: &str) {
        self.engine.admin_write(ns, path, pid, comm)
    }

    fn proc_net(&mut self, ns: Ns, files: &[&str]) -> Vec<Option<String>> {
        // Only plain file names below /proc/net: a tuner cannot read elsewhere.
        let valid = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let read = || -> Vec<Option<String>> {
            files
                .iter()
                .map(|f| {
                    valid(f)
                        .then(|| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).ok())
                        .flatten()
                })
                .collect()
        };
        let texts = match self.engine.locate(ns) {
            Some(Target::Global) => Some(read()),
            Some(Target::Netns(info)) => {
                crate::kernel::netns::run_in_netns(&info.path, Some(info.ino), read).ok()
            }
            None => None,
        };
        texts.unwrap_or_else(|| vec![None; files.len()])
    }

    fn memory(&self) -> MemoryFacts {
        self.engine.memory
    }

    fn admin_owned(&mut self, tunable: usize, ns: Ns) -> bool {
        let Some(desc) = self.engine.desc(self.tuner, tunable) else {
            return false;
        };
        let cookie = if desc.namespaced {
            self.engine.cookie(ns)
        } else {
            self.engine.ns.global_cookie()
        };
        self.engine.admin_owned.contains(&(cookie, desc.name.to_string()))
    }

    fn proc_file(&mut self, path: &str) -> Option<String> {
        // Plain components only: a tuner cannot climb out of /proc.
        let valid = path
            .split('/')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        valid
            .then(|| std::fs::read_to_string(format!("/proc/{path}")).ok())
            .flatten()
    }
}

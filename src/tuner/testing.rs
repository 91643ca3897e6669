//! A [`TunerEnv`] over plain values for the tuners' glue tests: reads and applies like
//! the engine (stale premise → `Stale`, equal value → `Unchanged`), serves /proc/net
//! fixtures, and records what was applied.

use std::collections::HashMap;

use crate::kernel::sysctl::SysctlError;
use crate::model::tunable::{Rate, SysctlValue};
use crate::tuner::{MemoryFacts, Ns, Outcome, Proposal, TunerEnv};

#[derive(Default)]
pub struct FakeEnv {
    /// (tunable, namespace) → value; global tunables use `Ns::Global`.
    pub values: HashMap<(usize, Ns), SysctlValue>,
    /// Which tunables are per namespace (others are read and written globally).
    pub namespaced: Vec<bool>,
    /// (namespace, file name) → contents of /proc/net/<file>.
    pub proc: HashMap<(Ns, String), String>,
    /// System-wide /proc files ([`TunerEnv::proc_file`]), by relative path.
    pub files: HashMap<String, String>,
    pub applied: Vec<Proposal>,
    pub free_buffer_pages: u64,
}

impl FakeEnv {
    pub fn new(namespaced: &[bool]) -> FakeEnv {
        FakeEnv {
            namespaced: namespaced.to_vec(),
            free_buffer_pages: 1_000_000,
            ..FakeEnv::default()
        }
    }

    fn key(&self, tunable: usize, ns: Ns) -> (usize, Ns) {
        if self.namespaced.get(tunable).copied().unwrap_or(false) {
            (tunable, ns)
        } else {
            (tunable, Ns::Global)
        }
    }

    pub fn set(&mut self, tunable: usize, ns: Ns, v: &[i64]) {
        let k = self.key(tunable, ns);
        self.values.insert(k, SysctlValue::Ints(v.to_vec()));
    }

    pub fn set_value(&mut self, tunable: usize, ns: Ns, v: SysctlValue) {
        let k = self.key(tunable, ns);
        self.values.insert(k, v);
    }

    /// The value of `tunable` in `ns`; panics (a test failure) if it was never set.
    pub fn value(&self, tunable: usize, ns: Ns) -> SysctlValue {
        self.values
            .get(&self.key(tunable, ns))
            .cloned()
            .unwrap_or_else(|| panic!("tunable {tunable} not set in {ns:?}"))
    }

    /// Sets /proc/net/<file> of `ns`.
    pub fn set_proc(&mut self, ns: Ns, file: &str, text: impl Into<String>) {
        self.proc.insert((ns, file.to_string()), text.into());
    }

    pub fn get(&self, tunable: usize, ns: Ns) -> Option<i64> {
        self.values
            .get(&self.key(tunable, ns))
            .and_then(|v| v.ints().and_then(|x| x.first().copied()))
    }
}

impl TunerEnv for FakeEnv {
    fn rate(&self) -> Rate {
        Rate::DEFAULT
    }
    fn read(&mut self, tunable: usize, ns: Ns) -> Result<SysctlValue, SysctlError> {
        self.values
            .get(&self.key(tunable, ns))
            .cloned()
            .ok_or_else(|| SysctlError::NotFound(format!("tunable {tunable}")))
    }
    fn apply(&mut self, p: Proposal) -> Outcome {
        let k = self.key(p.tunable, p.ns);
        let live = self.values.get(&k).cloned();
        if p.expect.is_some() && p.expect != live {
            return Outcome::Stale;
        }
        if live.as_ref() == Some(&p.value) {
            return Outcome::Unchanged;
        }
        self.values.insert(k, p.value.clone());
        self.applied.push(p);
        Outcome::Applied
    }
    fn proc_file(&mut self, path: &str) -> Option<String> {
        self.files.get(path).cloned()
    }
    fn note(&mut self, _t: usize, _s: usize, _ns: Ns, _m: &str) {}
    fn admin_write(&mut self, _ns: Ns, _p: &str, _pid: i32, _comm: &str) {}
    fn proc_net(&mut self, ns: Ns, files: &[&str]) -> Vec<Option<String>> {
        files
            .iter()
            .map(|f| self.proc.get(&(ns, (*f).to_string())).cloned())
            .collect()
    }
    fn memory(&self) -> MemoryFacts {
        MemoryFacts {
            free_buffer_pages: self.free_buffer_pages,
            page_size: 4096,
        }
    }
}

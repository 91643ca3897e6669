//! The core half of every tuning action. A tuner proposes; the engine re-reads the live
//! value in the right namespace, drops stale or no-op proposals, refuses to touch what
//! the administrator owns, persists the original, writes, and records one
//! [`ChangeRecord`](crate::record::ledger::ChangeRecord) that feeds the log, the queries
//! and the exit summary.
//!
//! One concern a file: `apply.rs` (the checks and the write), `observe.rs` (observe
//! mode's proposals and simulation), `admin.rs` (what the administrator and each
//! namespace own, and the one-time messages), `rollback.rs` (`-R`), `env.rs` (the
//! [`TunerEnv`](crate::tuner::TunerEnv) a tuner sees) and `emit.rs` (the one place
//! a change is recorded and logged).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kernel::netns::{NetnsDiff, NetnsRegistry, Target};
use crate::kernel::sysctl::{SysctlError, SysctlStore};
use crate::model::tunable::{Rate, SysctlValue, TunableDesc};
use crate::record::ledger::{Ledger, TunerMeta};
use crate::record::originals::StateStore;
use crate::record::stats::Stats;
use crate::tuner::{MemoryFacts, Ns, NsState, TunerState};

mod admin;
mod apply;
mod emit;
mod env;
mod observe;
mod rollback;

use admin::Said;

pub use admin::missing_tunables_line;
pub use env::EngineCtx;

/// Where namespaces are found; the real one is [`NetnsRegistry`], tests use a fake.
pub trait Namespaces {
    fn global_cookie(&self) -> u64;
    fn is_global(&self, cookie: u64) -> bool {
        cookie == 0 || cookie == self.global_cookie()
    }
    /// Global for the initial namespace, the namespace's location otherwise.
    fn locate(&mut self, cookie: u64, ino: u64) -> Option<Target>;
    /// Rescans; returns the namespaces that appeared and vanished.
    fn refresh(&mut self) -> NetnsDiff {
        NetnsDiff::default()
    }
    /// Known non-global namespaces (for the metrics' `netns` labels).
    fn list(&self) -> Vec<crate::kernel::netns::NetnsInfo> {
        Vec::new()
    }
    /// How many namespaces are known (diagnostics only).
    fn known_len(&self) -> usize {
        0
    }
}

impl Namespaces for NetnsRegistry {
    fn global_cookie(&self) -> u64 {
        NetnsRegistry::global_cookie(self)
    }
    fn locate(&mut self, cookie: u64, ino: u64) -> Option<Target> {
        NetnsRegistry::locate(self, cookie, ino)
    }
    fn refresh(&mut self) -> NetnsDiff {
        NetnsRegistry::refresh(self)
    }
    fn list(&self) -> Vec<crate::kernel::netns::NetnsInfo> {
        NetnsRegistry::list(self)
    }
    fn known_len(&self) -> usize {
        NetnsRegistry::known_len(self)
    }
}

/// Locks the ledger even if a panicking thread poisoned it (it holds plain data).
pub fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Engine {
    rate: Rate,
    sysctl: Box<dyn SysctlStore>,
    ns: Box<dyn Namespaces>,
    ledger: Arc<Mutex<Ledger>>,
    store: StateStore,
    metas: Vec<TunerMeta>,
    ns_state: HashMap<(usize, u64), NsState>,
    /// (netns cookie, sysctl name) written by someone else: never ours again.
    admin_owned: HashSet<(u64, String)>,
    /// One-time messages already logged.
    said: HashSet<Said>,
    memory: MemoryFacts,
    /// Persistence failures are reported once; tuning goes on.
    persist_warned: bool,
    /// Observe mode (`--observe`): everything runs but the sysctl write.
    observe: bool,
    /// Observe mode: (netns cookie, sysctl name) -> the value we would have written, so
    /// that tuners build on what they would have done instead of proposing the first
    /// step again and again.
    overlay: HashMap<(u64, String), Simulated>,
    /// Counters for the metrics exporter.
    stats: Arc<Stats>,
    /// The bookkeeping sizes last logged (see [`Engine::sizes`]).
    sizes_logged: String,
}

/// A proposed value standing in for the live one (observe mode).
#[derive(Debug, Clone)]
struct Simulated {
    /// The live value it was proposed over: once the live value differs (someone else
    /// wrote it) the simulation is void.
    over: SysctlValue,
    value: SysctlValue,
}

impl Engine {
    pub fn new(
        rate: Rate,
        sysctl: Box<dyn SysctlStore>,
        ns: Box<dyn Namespaces>,
        ledger: Arc<Mutex<Ledger>>,
        store: StateStore,
        memory: MemoryFacts,
    ) -> Engine {
        Engine {
            rate,
            sysctl,
            ns,
            ledger,
            store,
            metas: Vec::new(),
            ns_state: HashMap::new(),
            admin_owned: HashSet::new(),
            said: HashSet::new(),
            memory,
            persist_warned: false,
            observe: false,
            overlay: HashMap::new(),
            stats: Arc::default(),
            sizes_logged: String::new(),
        }
    }

    /// Observe mode: proposals are logged, counted and recorded, and the tuners see them
    /// as simulated values, but nothing is written (or persisted for rollback).
    pub fn set_observe(&mut self, observe: bool) {
        self.observe = observe;
        lock(&self.ledger).set_observe(observe);
    }

    pub fn observe(&self) -> bool {
        self.observe
    }

    /// Registers a tuner; its index is its id in events.
    pub fn add_tuner(&mut self, meta: TunerMeta) -> usize {
        lock(&self.ledger).add_tuner(meta.clone());
        self.metas.push(meta);
        self.metas.len() - 1
    }

    pub fn set_tuner_state(&mut self, tuner: usize, state: TunerState) {
        if let Some(m) = self.metas.get_mut(tuner) {
            m.state = state;
        }
        lock(&self.ledger).set_state(tuner, state);
    }

    pub fn tuner_state(&self, tuner: usize) -> Option<TunerState> {
        self.metas.get(tuner).map(|m| m.state)
    }

    pub fn global_cookie(&self) -> u64 {
        self.ns.global_cookie()
    }

    /// The cookie the engine's bookkeeping is keyed by.
    fn cookie(&self, ns: Ns) -> u64 {
        match ns {
            Ns::Global => self.ns.global_cookie(),
            Ns::Netns { cookie, .. } => cookie,
        }
    }

    fn desc(&self, tuner: usize, tunable: usize) -> Option<TunableDesc> {
        self.metas
            .get(tuner)
            .and_then(|m| m.tunables.get(tunable))
            .copied()
    }

    /// Where a tunable of an event from `ns` lives: (bookkeeping cookie, location).
    fn target_for(&mut self, desc: &TunableDesc, ns: Ns) -> Option<(u64, Target)> {
        match ns {
            Ns::Netns { cookie, ino } if desc.namespaced => self.ns.locate(cookie, ino).map(|t| (cookie, t)),
            _ => Some((self.ns.global_cookie(), Target::Global)),
        }
    }

    /// Where a namespace-wide operation (e.g. reading /proc/net) happens for `ns`.
    fn locate(&mut self, ns: Ns) -> Option<Target> {
        match ns {
            Ns::Global => Some(Target::Global),
            Ns::Netns { cookie, ino } => self.ns.locate(cookie, ino),
        }
    }

    fn read_desc(&mut self, desc: &TunableDesc, target: &Target) -> Result<SysctlValue, SysctlError> {
        self.sysctl.read(target, desc.name, desc.string, desc.num_values)
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn ledger(&self) -> &Arc<Mutex<Ledger>> {
        &self.ledger
    }

    /// Counters shared with the metrics exporter.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests;

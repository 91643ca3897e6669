//! The core half of every tuning action. A tuner proposes; the engine re-reads the live
//! value in the right namespace, drops stale or no-op proposals, refuses to touch what
//! the administrator owns, persists the original, writes, and records one
//! [`ChangeRecord`] that feeds the log, the queries and the exit summary.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::change::{ChangeRecord, Ledger, TunerMeta};
use crate::core::events::{monotonic_ns, Event, MAX_VALUES};
use crate::core::netns::{NetnsDiff, NetnsRegistry, Target};
use crate::core::state::StateStore;
use crate::core::stats::{NsLabel, Stats};
use crate::core::sysctl::{SysctlError, SysctlStore};
use crate::core::tunable::{sysctl_name, Rate, SysctlValue, TunableDesc, TunableKind};
use crate::core::tuner::{MemoryFacts, Ns, NsState, Outcome, Proposal, TunerEnv, TunerState, WouldChange};

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
    fn list(&self) -> Vec<crate::core::netns::NetnsInfo> {
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
    fn list(&self) -> Vec<crate::core::netns::NetnsInfo> {
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
    said: HashSet<String>,
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

    /// The value the tuners see for `name` in `cookie`: the simulated one while the live
    /// value is still the one it was proposed over, else the live one (and a void
    /// simulation is dropped).
    fn effective(&mut self, cookie: u64, name: &str, live: SysctlValue) -> SysctlValue {
        let key = (cookie, name.to_string());
        match self.overlay.get(&key) {
            Some(sim) if sim.over == live => sim.value.clone(),
            Some(_) => {
                tracing::debug!(
                    "'{name}' in netns (cookie {cookie}) changed behind the simulation; observing the live value ({live}) again"
                );
                self.overlay.remove(&key);
                live
            }
            None => live,
        }
    }

    /// In observe mode, an event whose kernel-side value (`old`) is the live value a
    /// simulation stands on is rewritten to carry the simulated value: the tuner then
    /// judges the event (e.g. a socket buffer against the limit) as it would have in the
    /// world where the proposal had been written. Other events pass unchanged.
    pub fn simulated_event<'e>(&self, ev: &'e Event) -> Cow<'e, Event> {
        if !self.observe || self.overlay.is_empty() {
            return Cow::Borrowed(ev);
        }
        let Some(desc) = self.desc(ev.tuner_id as usize, ev.tunable_id as usize) else {
            return Cow::Borrowed(ev);
        };
        let n = usize::from(desc.num_values);
        if desc.string || desc.kind != TunableKind::Sysctl || n == 0 || n > MAX_VALUES {
            return Cow::Borrowed(ev);
        }
        let cookie = match ev.ns {
            Ns::Netns { cookie, .. } if desc.namespaced => cookie,
            _ => self.ns.global_cookie(),
        };
        let Some(sim) = self.overlay.get(&(cookie, desc.name.to_string())) else {
            return Cow::Borrowed(ev);
        };
        match (&sim.over, &sim.value) {
            (SysctlValue::Ints(over), SysctlValue::Ints(value))
                if over.as_slice() == &ev.old[..n] && value.len() == n =>
            {
                let mut ev = ev.clone();
                ev.old[..n].copy_from_slice(value);
                Cow::Owned(ev)
            }
            _ => Cow::Borrowed(ev),
        }
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

    fn cookie_state(&self, tuner: usize, cookie: u64) -> NsState {
        self.ns_state
            .get(&(tuner, cookie))
            .copied()
            .unwrap_or(NsState::Active)
    }

    pub fn ns_state(&self, tuner: usize, ns: Ns) -> NsState {
        self.cookie_state(tuner, self.cookie(ns))
    }

    /// Should an event from `ns` reach `tuner`? (active tuner, namespace not manual/gone)
    pub fn deliverable(&self, tuner: usize, ns: Ns) -> bool {
        matches!(
            self.tuner_state(tuner),
            Some(TunerState::Active | TunerState::Manual)
        ) && self.ns_state(tuner, ns) == NsState::Active
    }

    /// Drops bookkeeping for namespaces that are gone (keeps maps bounded under churn).
    pub fn forget_netns(&mut self, cookie: u64) {
        self.ns_state.retain(|(_, c), _| *c != cookie);
        self.stats.forget_netns(cookie);
        self.admin_owned.retain(|(c, _)| *c != cookie);
        self.overlay.retain(|(c, _), _| *c != cookie);
        if !self.ns.is_global(cookie) {
            lock(&self.ledger).forget_netns(cookie);
        }
        let suffix = format!(":{cookie}");
        self.said.retain(|k| !k.ends_with(&suffix));
        if let Err(e) = self.store.forget_netns(cookie) {
            tracing::debug!("could not update {}: {e}", self.store.path().display());
        }
    }

    /// Rescans namespaces: vanished ones become gone for every tuner and their
    /// bookkeeping is dropped (bounded memory under namespace churn).
    pub fn refresh_netns(&mut self) -> NetnsDiff {
        // The registry logs "netns created/vanished (cookie N, ...)" at debug.
        let diff = {
            let _caps = crate::core::privs::raise(crate::core::privs::SCAN_PROC);
            self.ns.refresh()
        };
        for info in &diff.vanished {
            self.forget_netns(info.cookie);
        }
        self.stats.set_namespaces(
            self.ns
                .list()
                .into_iter()
                .map(|i| {
                    let label = NsLabel {
                        name: i.name,
                        ino: i.ino,
                    };
                    (i.cookie, label)
                })
                .collect(),
        );
        // Growth under churn is the failure mode to watch (C bpftune #93/#188): the
        // sizes go to the debug log whenever they change, which the soak test samples.
        let sizes = self.sizes();
        if sizes != self.sizes_logged {
            tracing::debug!("bookkeeping sizes: {sizes}");
            self.sizes_logged = sizes;
        }
        diff
    }

    /// Sizes of every per-namespace map, as `key=N` pairs.
    pub fn sizes(&self) -> String {
        // One guard: two lock() calls in one format! would hold the first guard while
        // taking the second (a self-deadlock).
        // Originals and spans count per-namespace entries only: global ones are bounded by
        // the number of tunables and may appear at any time (the first change of a global
        // sysctl); per-namespace ones must go with their namespace.
        let (changes, spans) = {
            let l = lock(&self.ledger);
            (l.records().count(), l.spans().filter(|s| !s.global).count())
        };
        format!(
            "netns_known={} ns_states={} admin_owned={} said={} originals={} changes={} spans={}",
            self.ns.known_len(),
            self.ns_state.len(),
            self.admin_owned.len(),
            self.said.len(),
            self.store.entries().iter().filter(|e| !e.global).count(),
            changes,
            spans
        )
    }

    pub fn ctx(&mut self, tuner: usize) -> EngineCtx<'_> {
        EngineCtx { engine: self, tuner }
    }

    fn say_once(&mut self, key: String, msg: impl FnOnce() -> String, notice: bool) {
        if self.said.insert(key) {
            if notice {
                tracing::info!("{}", msg());
            } else {
                tracing::debug!("{}", msg());
            }
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

    fn apply(&mut self, tuner: usize, p: Proposal) -> Outcome {
        let Some(desc) = self.desc(tuner, p.tunable) else {
            return Outcome::Failed(format!("no tunable {}", p.tunable));
        };
        let tname = self.metas[tuner].name;
        let Some((cookie, target)) = self.target_for(&desc, p.ns) else {
            // Not found *now* (e.g. a brand-new container, rate-limited rescans): drop
            // this event only; "gone" is decided by the registry's vanish reports.
            tracing::debug!(
                "netns (cookie {}) not found for '{}'; dropping the event for '{tname}'",
                self.cookie(p.ns),
                desc.name
            );
            return Outcome::NoNamespace;
        };
        if self.cookie_state(tuner, cookie) != NsState::Active
            || self.admin_owned.contains(&(cookie, desc.name.to_string()))
        {
            let key = format!("skip:{tuner}:{}:{cookie}", desc.name);
            self.say_once(
                key,
                || {
                    format!(
                        "Skipping update of '{}' ; tuner '{tname}' is disabled in netns (cookie {cookie})",
                        desc.name
                    )
                },
                true,
            );
            return Outcome::Disabled;
        }
        if desc.read_only {
            tracing::error!(
                "refusing to write {} = {}: bpftune only reads it",
                desc.name,
                p.value
            );
            return Outcome::Failed(format!("'{}' is read-only for bpftune", desc.name));
        }
        if let Err(why) = validate(&desc, &p.value) {
            tracing::error!("refusing to write {} = {}: {why}", desc.name, p.value);
            return Outcome::Failed(why);
        }
        let live = match self.read_desc(&desc, &target) {
            Ok(v) => v,
            Err(SysctlError::NotFound(_)) => {
                let optional = desc.optional;
                self.say_once(
                    format!("missing:{}", desc.name),
                    || {
                        format!(
                            "sysctl '{}' is not available on this system{}; not tuning it",
                            desc.name,
                            if optional { " (optional)" } else { "" }
                        )
                    },
                    true,
                );
                return Outcome::Missing;
            }
            Err(e) => return self.failed(tuner, cookie, &target, &desc, e.to_string()),
        };
        let real = live.clone();
        let live = if self.observe {
            self.effective(cookie, desc.name, live)
        } else {
            live
        };
        if p.expect.as_ref().is_some_and(|e| *e != live) {
            tracing::debug!(
                "dropping stale proposal for '{}': live ({live}) != premise ({})",
                desc.name,
                p.expect.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            self.stats.event_stale(tuner);
            return Outcome::Stale;
        }
        if live == p.value {
            return Outcome::Unchanged;
        }
        if self.observe {
            return self.propose(tuner, cookie, &target, &desc, p, real, live);
        }
        let global = matches!(target, Target::Global);
        let ino = match &target {
            Target::Global => 0,
            Target::Netns(info) => info.ino,
        };
        let original = match self
            .store
            .before_write(desc.name, cookie, ino, global, &live, &p.value)
        {
            Ok(o) => Some(o),
            Err(e) => {
                // No write without a rollback record: after a crash the original would
                // be lost. Said once; every later proposal retries (space may return).
                if !self.persist_warned {
                    self.persist_warned = true;
                    tracing::warn!("cannot persist original values to {}: {e}; not changing any sysctl until it can be saved (a change could not be rolled back after a crash)", self.store.path().display());
                }
                return Outcome::Failed(format!("cannot persist the original of '{}': {e}", desc.name));
            }
        };
        if let Err(e) = crate::core::sysctl::write_desc(self.sysctl.as_ref(), &target, &desc, &p.value) {
            self.stats.write_failed(tuner, desc.name, &e.errno_name());
            return self.failed(tuner, cookie, &target, &desc, e.to_string());
        }
        let write_ts = monotonic_ns();
        let meta = &self.metas[tuner];
        let sc = meta.scenarios.get(p.scenario).copied();
        let (sc_name, sc_desc) = sc.map(|s| (s.name, s.description)).unwrap_or(("?", ""));
        let line = ChangeLine {
            tuner: tname,
            tunable: desc.name,
            scenario: sc_name,
            scenario_desc: sc_desc,
            netns: netns_label(&target),
            cookie,
            global,
        };
        line.scenario();
        line.change(Some((&live, &p.value)), false, p.message.trim_end());
        if p.event_ts_ns > 0 {
            tracing::debug!(
                "reaction: {} us from event to write of '{}'",
                write_ts.saturating_sub(p.event_ts_ns) / 1000,
                desc.name
            );
        }
        let netns = match &target {
            Target::Global => None,
            Target::Netns(info) => info.name.clone(),
        };
        let rec = ChangeRecord {
            time: ChangeRecord::now(),
            tuner: tname.to_string(),
            tunable: desc.name.to_string(),
            scenario: sc_name.to_string(),
            netns_cookie: cookie,
            global,
            netns,
            old: Some(live),
            new: Some(p.value),
            message: p.message.trim_end().to_string(),
            applied: true,
            proposed: false,
            event_ts_ns: p.event_ts_ns,
            write_ts_ns: write_ts,
        };
        lock(&self.ledger).record(tuner, p.tunable, p.scenario, original, rec);
        Outcome::Applied
    }

    /// Observe mode: everything [`Engine::apply`] does except the write and the
    /// persisted original. `real` is the live value, `current` what the tuner saw (the
    /// simulated value if there is one). Returns [`Outcome::Applied`]: for the tuner the
    /// simulation is the world, and its follow-ups (e.g. enabling tcp_moderate_rcvbuf
    /// after raising tcp_rmem) are proposed too.
    #[allow(clippy::too_many_arguments)]
    fn propose(
        &mut self,
        tuner: usize,
        cookie: u64,
        target: &Target,
        desc: &TunableDesc,
        p: Proposal,
        real: SysctlValue,
        current: SysctlValue,
    ) -> Outcome {
        let meta = &self.metas[tuner];
        let tname = meta.name;
        let sc = meta.scenarios.get(p.scenario).copied();
        let (sc_name, sc_desc) = sc.map(|s| (s.name, s.description)).unwrap_or(("?", ""));
        let global = matches!(target, Target::Global);
        let netns = match target {
            Target::Global => None,
            Target::Netns(info) => info.name.clone(),
        };
        let place = place(target, cookie);
        let message = p.message.trim_end().to_string();
        // Once per (tuner, tunable, namespace, value); the key ends in the cookie so that
        // forget_netns drops it with the namespace.
        let key = format!("would:{tuner}:{}:{}:{cookie}", desc.name, p.value);
        if self.said.insert(key) {
            let line = ChangeLine {
                tuner: tname,
                tunable: desc.name,
                scenario: sc_name,
                scenario_desc: sc_desc,
                netns: netns_label(target),
                cookie,
                global,
            };
            line.scenario();
            line.change(
                Some((&current, &p.value)),
                true,
                &format!(
                    "would change {} in {place} from ({current}) to ({}): {message}",
                    desc.name, p.value
                ),
            );
        }
        if p.value == real {
            // Back to the live value (e.g. leaving low memory): nothing to simulate.
            self.overlay.remove(&(cookie, desc.name.to_string()));
        } else {
            self.overlay.insert(
                (cookie, desc.name.to_string()),
                Simulated {
                    over: real,
                    value: p.value.clone(),
                },
            );
        }
        let rec = ChangeRecord {
            time: ChangeRecord::now(),
            tuner: tname.to_string(),
            tunable: desc.name.to_string(),
            scenario: sc_name.to_string(),
            netns_cookie: cookie,
            global,
            netns,
            old: Some(current),
            new: Some(p.value),
            message,
            applied: false,
            proposed: true,
            event_ts_ns: p.event_ts_ns,
            write_ts_ns: 0,
        };
        lock(&self.ledger).record(tuner, p.tunable, p.scenario, None, rec);
        Outcome::Applied
    }

    fn failed(
        &mut self,
        tuner: usize,
        cookie: u64,
        target: &Target,
        desc: &TunableDesc,
        why: String,
    ) -> Outcome {
        if matches!(target, Target::Netns(_)) {
            // C bpftune #103: stop retrying a namespace we cannot write.
            self.ns_state.insert((tuner, cookie), NsState::Gone);
            self.stats.set_ns_state(tuner, cookie, NsState::Gone);
            tracing::info!(
                "could not update '{}' in netns (cookie {cookie}): {why}; not tuning that namespace any more",
                desc.name
            );
        } else if self.said.insert(format!("fail:{}", desc.name)) {
            // Once per sysctl (every later proposal fails the same way and is counted
            // in bpftune_write_failures_total), as a warning: a tuner that cannot write
            // is not doing its job.
            tracing::warn!("could not update '{}': {why}", desc.name);
        }
        Outcome::Failed(why)
    }

    fn note(&mut self, tuner: usize, tunable: usize, scenario: usize, ns: Ns, message: &str) {
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

    /// [`TunerEnv::would_change`]: a proposal that is not a sysctl (nothing to read,
    /// simulate or persist), logged and recorded like [`Engine::propose`]'s.
    fn would_change(&mut self, tuner: usize, w: WouldChange<'_>) {
        let Some(desc) = self.desc(tuner, w.tunable) else {
            return;
        };
        // A namespace not found (any more) is still named by its cookie.
        let (cookie, target) = match self.target_for(&desc, w.ns) {
            Some((cookie, target)) => (cookie, Some(target)),
            None => (self.cookie(w.ns), None),
        };
        let global = matches!(target, Some(Target::Global));
        let netns = match &target {
            Some(Target::Netns(info)) => info.name.clone(),
            _ => None,
        };
        let (place, label) = match &target {
            Some(t) => (place(t, cookie), netns_label(t)),
            None => (format!("netns (cookie {cookie})"), cookie.to_string()),
        };
        let meta = &self.metas[tuner];
        let (sc_name, sc_desc) = meta
            .scenarios
            .get(w.scenario)
            .map(|s| (s.name, s.description))
            .unwrap_or(("?", ""));
        let (old, new) = (SysctlValue::Str(w.from.into()), SysctlValue::Str(w.to.into()));
        let message = w.message.trim_end();
        let line = ChangeLine {
            tuner: meta.name,
            tunable: desc.name,
            scenario: sc_name,
            scenario_desc: sc_desc,
            netns: label,
            cookie,
            global,
        };
        line.scenario();
        line.change(
            Some((&old, &new)),
            true,
            &format!(
                "would change {} in {place} from ({old}) to ({new}): {message}",
                desc.name
            ),
        );
        let rec = ChangeRecord {
            time: ChangeRecord::now(),
            tuner: meta.name.to_string(),
            tunable: desc.name.to_string(),
            scenario: sc_name.to_string(),
            netns_cookie: cookie,
            global,
            netns,
            old: Some(old),
            new: Some(new),
            message: message.to_string(),
            applied: false,
            proposed: true,
            event_ts_ns: 0,
            write_ts_ns: 0,
        };
        lock(&self.ledger).record(tuner, w.tunable, w.scenario, None, rec);
    }

    /// Once, after start-up registered the tuners: which of their sysctls this kernel
    /// lacks (every `net.ipv6.*` one when booted with `ipv6.disable=1`, newer sysctls on
    /// older kernels), said in one line. Those names are marked as said, so a later
    /// proposal for one is dropped without a line of its own: no flood, and the tuners
    /// keep running without them. Returns the missing names.
    pub fn report_missing_tunables(&mut self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = Vec::new();
        let mut missing: Vec<&'static str> = Vec::new();
        let descs: Vec<TunableDesc> = self
            .metas
            .iter()
            .filter(|m| m.state == TunerState::Active)
            .flat_map(|m| m.tunables.iter().copied())
            .filter(|d| d.kind == TunableKind::Sysctl)
            .collect();
        for desc in descs {
            if all.contains(&desc.name) {
                continue;
            }
            all.push(desc.name);
            if let Err(SysctlError::NotFound(_)) = self.read_desc(&desc, &Target::Global) {
                missing.push(desc.name);
                self.said.insert(format!("missing:{}", desc.name));
            }
        }
        if let Some(line) = missing_tunables_line(&missing, &all) {
            tracing::info!("{line}");
        }
        missing
    }

    /// Another process wrote `path` in `ns`: every tuner managing that sysctl hands that
    /// namespace over to the administrator.
    pub fn admin_write(&mut self, ns: Ns, path: &str, pid: i32, comm: &str) {
        let name = sysctl_name(path);
        let cookie = self.cookie(ns);
        let cmd = cmdline(pid).unwrap_or_else(|| {
            if comm.is_empty() {
                "?".to_string()
            } else {
                comm.to_string()
            }
        });
        let mut any = false;
        for t in 0..self.metas.len() {
            let meta = &self.metas[t];
            if !meta
                .tunables
                .iter()
                .any(|d| d.kind == TunableKind::Sysctl && d.name == name)
            {
                continue;
            }
            any = true;
            let tname = meta.name;
            tracing::info!(
                tuner = tname,
                tunable = name.as_str(),
                netns = %if ns.is_global() { "global".to_string() } else { cookie.to_string() },
                netns_cookie = cookie,
                "pid {pid}, cmd '{cmd}' modified sysctl '{name}' that tuner '{tname}' uses; disabling '{tname}' for namespace cookie {cookie}"
            );
            self.ns_state.insert((t, cookie), NsState::Manual);
            self.stats.set_ns_state(t, cookie, NsState::Manual);
            tracing::debug!("setting state of netns (cookie {cookie}) to manual for '{tname}'");
            if ns.is_global() {
                self.set_tuner_state(t, TunerState::Manual);
            }
        }
        if any {
            self.overlay.remove(&(cookie, name.clone()));
            self.admin_owned.insert((cookie, name));
        }
    }

    /// `-R`: restore every sysctl bpftune changed (this run and, from the persisted
    /// originals, earlier runs of this boot) unless someone else changed it since.
    /// Returns how many saved originals were kept, unrestored, because no registered
    /// tuner manages their sysctl (a plugin that is not loaded in this run).
    pub fn rollback(&mut self) -> usize {
        let entries = self.store.entries().to_vec();
        let mut kept = 0;
        let mut kept_names = std::collections::BTreeSet::new();
        if self.observe {
            // Observe mode writes nothing, not even a rollback: values an earlier,
            // enforcing run left stay recorded for a later -R run without --observe.
            if !entries.is_empty() {
                tracing::info!(
                    "observe mode: not rolling back {} sysctl value(s) saved by an earlier bpftune; run with -R and without --observe to restore them",
                    entries.len()
                );
            }
            return 0;
        }
        for e in entries {
            // Only sysctls a loaded tuner manages, with values that pass its limits:
            // the state file must not be a way to write arbitrary sysctls as root.
            let desc = self
                .metas
                .iter()
                .find_map(|m| m.tunables.iter().find(|d| d.name == e.sysctl).cloned());
            let Some(desc) = desc else {
                // Most likely a plugin's sysctl, and this run (a restart without the
                // plugin, or --rollback-now, which knows built-in tuners only) does not
                // load it. Not written, but not forgotten either: a later run that
                // loads the plugin restores it with -R. One line per sysctl, however
                // many namespaces it was changed in.
                kept += 1;
                if !kept_names.insert(e.sysctl.clone()) {
                    continue;
                }
                tracing::warn!(
                    "not rolling back '{}': no loaded tuner manages it; keeping its saved original for a run that loads its tuner (start bpftune with that plugin and -R to restore it)",
                    e.sysctl
                );
                continue;
            };
            // Originals may be negative (written by the kernel or an administrator); the
            // shape must still be the tunable's.
            if let Some(why) = validate(&desc, &e.original)
                .err()
                .filter(|why| why != "negative value")
            {
                tracing::warn!("not rolling back '{}' from the saved originals: {why}", e.sysctl);
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            let target = if e.global || self.ns.is_global(e.netns_cookie) {
                Some(Target::Global)
            } else {
                self.ns.locate(e.netns_cookie, e.netns_ino)
            };
            let Some(target) = target else {
                tracing::debug!(
                    "not rolling back '{}': netns (cookie {}) is gone",
                    e.sysctl,
                    e.netns_cookie
                );
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            };
            let (is_string, n) = match &e.original {
                SysctlValue::Str(_) => (true, 1),
                SysctlValue::Ints(v) => (false, v.len() as u8),
            };
            let live = match self.sysctl.read(&target, &e.sysctl, is_string, n) {
                Ok(v) => v,
                Err(err) => {
                    tracing::info!("cannot roll back '{}': {err}", e.sysctl);
                    continue;
                }
            };
            let where_ = if e.global {
                String::new()
            } else {
                format!(" in netns (cookie {})", e.netns_cookie)
            };
            if live == e.original {
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            if self.admin_owned.contains(&(e.netns_cookie, e.sysctl.clone())) || !e.is_ours(&live) {
                tracing::info!("Not rolling back '{}'{where_}: its value ({live}) was set by someone else after bpftune set ({}); leaving the administrator's value", e.sysctl, e.last_written);
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            tracing::info!(
                tunable = e.sysctl.as_str(),
                netns = %if e.global { "global".to_string() } else { e.netns_cookie.to_string() },
                netns_cookie = e.netns_cookie,
                old = %live,
                new = %e.original,
                "Rolling back sysctl values for '{}'{where_} from ({}) to original values ({})...",
                e.sysctl,
                live.c_style(),
                e.original.c_style()
            );
            match self.sysctl.write(&target, &e.sysctl, &e.original) {
                Ok(()) => {
                    self.stats.rollback_restored();
                    let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                }
                Err(err) => tracing::error!("rollback of '{}' failed: {err}", e.sysctl),
            }
        }
        kept
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

/// The two log lines of a scenario (C bpftune's words), with the change's structured
/// journal fields (`BPFTUNE_*`, see core::log) taken from the change itself.
struct ChangeLine<'a> {
    tuner: &'a str,
    tunable: &'a str,
    scenario: &'a str,
    scenario_desc: &'a str,
    netns: String,
    cookie: u64,
    global: bool,
}

impl ChangeLine<'_> {
    /// "Scenario '…' occurred for tunable '…' in [non-]global ns. …"
    fn scenario(&self) {
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
    fn change(&self, values: Option<(&SysctlValue, &SysctlValue)>, proposed: bool, text: &str) {
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
fn place(target: &Target, cookie: u64) -> String {
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
fn netns_label(target: &Target) -> String {
    match target {
        Target::Global => "global".to_string(),
        Target::Netns(info) => info.name.clone().unwrap_or_else(|| info.cookie.to_string()),
    }
}

/// Generic sanity limits every write must pass (tuners clamp more tightly).
fn validate(desc: &TunableDesc, value: &SysctlValue) -> Result<(), String> {
    match value {
        SysctlValue::Str(s) if desc.string => {
            if s.contains('\n') || s.len() > 127 {
                return Err("string too long or multi-line".into());
            }
            Ok(())
        }
        SysctlValue::Ints(v) if !desc.string => {
            if v.len() != usize::from(desc.num_values) {
                return Err(format!(
                    "{} values for a {}-value sysctl",
                    v.len(),
                    desc.num_values
                ));
            }
            if v.iter().any(|x| *x < 0) {
                return Err("negative value".into());
            }
            Ok(())
        }
        _ => Err("value type does not match the tunable".into()),
    }
}

/// First element of /proc/<pid>/cmdline, if the process still exists.
fn cmdline(pid: i32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            b.split(|&c| c == 0)
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
        })
        .filter(|s| !s.is_empty())
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
            .ok_or(SysctlError::Netns(crate::core::netns::NetnsError::Gone))?;
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
                crate::core::netns::run_in_netns(&info.path, Some(info.ino), read).ok()
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

/// The one start-up line about managed sysctls this kernel lacks (None if it has them
/// all). When every `net.ipv6.*` one is missing, IPv6 itself is off (`ipv6.disable=1`
/// or a kernel built without it), which is the likely question of whoever reads the log.
pub fn missing_tunables_line(missing: &[&str], all: &[&str]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let v6 = |n: &str| n.starts_with("net.ipv6.");
    let all_v6 = all.iter().filter(|n| v6(n)).count();
    let missing_v6 = missing.iter().filter(|n| v6(n)).count();
    if all_v6 > 0 && missing_v6 == all_v6 {
        let others: Vec<&str> = missing.iter().copied().filter(|n| !v6(n)).collect();
        let also = if others.is_empty() {
            String::new()
        } else {
            format!("; also not available: {}", others.join(", "))
        };
        return Some(format!(
            "IPv6 is not available on this kernel (no net.ipv6 sysctls: booted with ipv6.disable=1?): its {missing_v6} tunable(s) are not tuned{also}; the tuners run without them"
        ));
    }
    Some(format!(
        "sysctl(s) not available on this kernel, not tuned: {}; the tuners run without them",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests;

//! Counters the event loop and the engine update as they work, read by the metrics
//! exporter (`crate::report::metrics`) from another thread. Plain atomics for the hot counters
//! (one relaxed add per event); the namespace view is a small map behind a mutex that
//! the engine replaces only when namespaces or per-namespace tuner states change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::model::status::NsState;

/// Tuner ids beyond this are not counted (there are far fewer built-in tuners).
pub const MAX_TUNERS: usize = 64;

/// A tracked (non-global) network namespace, as the metrics label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsLabel {
    /// `/run/netns` name, when it has one.
    pub name: Option<String>,
    /// nsfs inode: the stable identity of an unnamed namespace.
    pub ino: u64,
}

impl NsLabel {
    /// The `netns` label value: the `/run/netns` name, else `ino:<inode>`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("ino:{}", self.ino),
        }
    }
}

/// Tracked namespaces (by cookie) and the per-namespace tuner states that differ from
/// "active" (by tuner id and cookie): a copy of the engine's bookkeeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetnsView {
    pub namespaces: BTreeMap<u64, NsLabel>,
    pub states: BTreeMap<(usize, u64), NsState>,
}

#[derive(Debug)]
pub struct Stats {
    received: [AtomicU64; MAX_TUNERS],
    stale: [AtomicU64; MAX_TUNERS],
    rollback_restores: AtomicU64,
    netns: Mutex<NetnsView>,
    /// Failed sysctl writes by (tuner, sysctl, errno name): rare, so a map is fine.
    write_failures: Mutex<BTreeMap<(usize, String, String), u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            received: [const { AtomicU64::new(0) }; MAX_TUNERS],
            stale: [const { AtomicU64::new(0) }; MAX_TUNERS],
            rollback_restores: AtomicU64::new(0),
            netns: Mutex::new(NetnsView::default()),
            write_failures: Mutex::new(BTreeMap::new()),
        }
    }
}

fn get(counters: &[AtomicU64], tuner: usize) -> u64 {
    counters.get(tuner).map_or(0, |c| c.load(Ordering::Relaxed))
}

impl Stats {
    /// A ring-buffer event for `tuner` reached the dispatcher.
    pub fn event_received(&self, tuner: usize) {
        if let Some(c) = self.received.get(tuner) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A proposal of `tuner` was dropped because the live value no longer matched the
    /// value the event was computed from.
    pub fn event_stale(&self, tuner: usize) {
        if let Some(c) = self.stale.get(tuner) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A sysctl was restored to its original value (`-R`).
    pub fn rollback_restored(&self) {
        self.rollback_restores.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of `sysctl` by `tuner` failed with `errno` (its symbolic name).
    pub fn write_failed(&self, tuner: usize, sysctl: &str, errno: &str) {
        let mut m = self.write_failures.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((tuner, sysctl.to_string(), errno.to_string()))
            .or_default() += 1;
    }

    /// Failed writes so far: ((tuner, sysctl, errno), count).
    pub fn write_failures(&self) -> Vec<((usize, String, String), u64)> {
        let m = self.write_failures.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn received(&self, tuner: usize) -> u64 {
        get(&self.received, tuner)
    }

    pub fn stale(&self, tuner: usize) -> u64 {
        get(&self.stale, tuner)
    }

    pub fn rollback_restores(&self) -> u64 {
        self.rollback_restores.load(Ordering::Relaxed)
    }

    fn view(&self) -> MutexGuard<'_, NetnsView> {
        // Plain data: a panicking writer cannot leave it inconsistent.
        self.netns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the set of tracked namespaces; states of namespaces no longer tracked
    /// are dropped with them.
    pub fn set_namespaces(&self, namespaces: BTreeMap<u64, NsLabel>) {
        let mut v = self.view();
        if v.namespaces != namespaces {
            v.states.retain(|(_, c), _| namespaces.contains_key(c));
            v.namespaces = namespaces;
        }
    }

    /// Records the state of `tuner` in the namespace `cookie`.
    pub fn set_ns_state(&self, tuner: usize, cookie: u64, state: NsState) {
        let mut v = self.view();
        if state == NsState::Active {
            v.states.remove(&(tuner, cookie));
        } else {
            v.states.insert((tuner, cookie), state);
        }
    }

    /// Forgets every per-tuner state of the namespace `cookie`.
    pub fn forget_netns(&self, cookie: u64) {
        self.view().states.retain(|(_, c), _| *c != cookie);
    }

    /// A copy of the namespace view (the lock is held only for the copy).
    pub fn netns_view(&self) -> NetnsView {
        self.view().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_view() {
        let s = Stats::default();
        s.event_received(1);
        s.event_received(1);
        s.event_stale(1);
        // Out-of-range ids are ignored, not a panic.
        s.event_received(MAX_TUNERS + 3);
        assert_eq!((s.received(1), s.stale(1), s.received(0)), (2, 1, 0));
        assert_eq!(s.received(MAX_TUNERS + 3), 0);
        let ns = |name: Option<&str>, ino| NsLabel {
            name: name.map(String::from),
            ino,
        };
        assert_eq!(ns(Some("blue"), 7).label(), "blue");
        assert_eq!(ns(None, 4026532000).label(), "ino:4026532000");
        s.set_namespaces(BTreeMap::from([(10, ns(Some("a"), 1)), (11, ns(None, 2))]));
        s.set_ns_state(0, 10, NsState::Manual);
        s.set_ns_state(0, 11, NsState::Gone);
        s.set_ns_state(0, 11, NsState::Active);
        assert_eq!(
            s.netns_view().states,
            BTreeMap::from([((0, 10), NsState::Manual)])
        );
        // Namespace 10 vanished: its state goes with it.
        s.set_namespaces(BTreeMap::from([(11, ns(None, 2))]));
        assert!(s.netns_view().states.is_empty());
        assert_eq!(s.netns_view().namespaces.len(), 1);
    }
}

//! Observe mode (`--observe`): proposals are logged, counted and recorded and the
//! tuners see them as simulated values, but nothing is written.

use std::borrow::Cow;

use super::emit::{Change, Kind, Place};
use super::{Engine, Said, Simulated};
use crate::kernel::netns::Target;
use crate::model::event::{Event, MAX_VALUES};
use crate::model::tunable::{SysctlValue, TunableDesc, TunableKind};
use crate::tuner::{Ns, Outcome, Proposal, WouldChange};

impl Engine {
    /// The value the tuners see for `name` in `cookie`: the simulated one while the live
    /// value is still the one it was proposed over, else the live one (and a void
    /// simulation is dropped).
    pub(super) fn effective(&mut self, cookie: u64, name: &str, live: SysctlValue) -> SysctlValue {
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

    /// Observe mode: everything [`Engine::apply`] does except the write and the
    /// persisted original. `real` is the live value, `current` what the tuner saw (the
    /// simulated value if there is one). Returns [`Outcome::Applied`]: for the tuner the
    /// simulation is the world, and its follow-ups (e.g. enabling tcp_moderate_rcvbuf
    /// after raising tcp_rmem) are proposed too.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn propose(
        &mut self,
        tuner: usize,
        cookie: u64,
        target: &Target,
        desc: &TunableDesc,
        p: Proposal,
        real: SysctlValue,
        current: SysctlValue,
    ) -> Outcome {
        // Logged once per (tuner, tunable, namespace, value); forget_netns drops the key
        // with the namespace.
        let key = Said::Would {
            tuner,
            tunable: desc.name,
            value: p.value.to_string(),
            cookie,
        };
        let log = self.said.insert(key);
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
        self.emit(Change {
            tuner,
            tunable: p.tunable,
            name: desc.name,
            scenario: p.scenario,
            place: Place::of(target, cookie),
            values: Some((current, p.value)),
            message: &p.message,
            kind: Kind::Proposed {
                event_ts_ns: p.event_ts_ns,
                log,
            },
        });
        Outcome::Applied
    }

    /// [`TunerEnv::would_change`](crate::tuner::TunerEnv::would_change): a
    /// proposal that is not a sysctl (nothing to read, simulate or persist), logged and
    /// recorded like [`Engine::propose`]'s.
    pub(super) fn would_change(&mut self, tuner: usize, w: WouldChange<'_>) {
        let Some(desc) = self.desc(tuner, w.tunable) else {
            return;
        };
        // A namespace not found (any more) is still named by its cookie.
        let place = match self.target_for(&desc, w.ns) {
            Some((cookie, target)) => Place::of(&target, cookie),
            None => Place::unlocated(self.cookie(w.ns)),
        };
        self.emit(Change {
            tuner,
            tunable: w.tunable,
            name: desc.name,
            scenario: w.scenario,
            place,
            values: Some((SysctlValue::Str(w.from.into()), SysctlValue::Str(w.to.into()))),
            message: w.message,
            kind: Kind::Proposed {
                event_ts_ns: 0,
                log: true,
            },
        });
    }
}

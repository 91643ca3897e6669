//! Observe mode (`--observe`): proposals are logged, counted and recorded and the
//! tuners see them as simulated values, but nothing is written.

use std::borrow::Cow;

use super::emit::{netns_label, place, ChangeLine};
use super::{lock, Engine, Simulated};
use crate::core::change::ChangeRecord;
use crate::core::events::{Event, MAX_VALUES};
use crate::core::netns::Target;
use crate::core::tunable::{SysctlValue, TunableDesc, TunableKind};
use crate::core::tuner::{Ns, Outcome, Proposal, WouldChange};

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

    /// [`TunerEnv::would_change`]: a proposal that is not a sysctl (nothing to read,
    /// simulate or persist), logged and recorded like [`Engine::propose`]'s.
    pub(super) fn would_change(&mut self, tuner: usize, w: WouldChange<'_>) {
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
}

//! The event loop: one wait over the ring buffer, the signal pipe and the `/run/netns`
//! watcher; events are dispatched to their tuner, tuners tick about once a second and
//! the namespace list is refreshed every few seconds (or at once on a watcher hint).

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Daemon;
use crate::engine::{lock, Engine};
use crate::model::event::Event;
use crate::tuner::{Ns, Tuner};

/// How often the namespace list is rescanned without an inotify hint (containers made
/// by unshare/clone have no /run/netns entry).
const NETNS_RESCAN: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_secs(1);
/// Plugin directories are rescanned once they have been quiet this long: `cp` into the
/// directory fires IN_ATTRIB (its fchmod) before the data is written and IN_CLOSE_WRITE
/// after, and a scan in between could load a half-written file, only to unload and
/// reload it when the copy finishes.
const PLUGIN_SETTLE: Duration = Duration::from_millis(250);
pub(super) const WAKE_RINGBUF: u64 = 0;
pub(super) const WAKE_SIGNAL: u64 = 1;
pub(super) const WAKE_NETNS: u64 = 2;
pub(super) const WAKE_PLUGINS: u64 = 3;

impl Daemon {
    /// Runs until SIGINT/SIGTERM.
    pub fn run_until_signal(&mut self) -> anyhow::Result<()> {
        let mut next_scan = Instant::now() + NETNS_RESCAN;
        // The first tick runs before any event is dispatched: tuners' start-up rules (a
        // sysctl put back to its default, algorithms appended to an allowed list) see the
        // values bpftune found, as C bpftune's init did. Deferred by a second, an event
        // could come first: one tuner set high_order_alloc_disable=1 for low memory and
        // another's start-up rule then put it back to 0.
        self.tick_tuners();
        let mut next_tick = Instant::now() + TICK;
        let mut plugins_due: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut due = next_tick.min(next_scan);
            if let Some(d) = self.notify.next_deadline() {
                // The watchdog ping (half WATCHDOG_USEC) may be due before the tick.
                due = due.min(d);
            }
            if let Some(p) = plugins_due {
                due = due.min(p);
            }
            let wait = due.saturating_duration_since(now);
            let ready = self.events.waiter.wait(Some(wait)).context("epoll_wait")?;
            let mut rescan = false;
            let mut plugins_changed = false;
            for token in ready {
                match token {
                    WAKE_SIGNAL => return Ok(()),
                    WAKE_RINGBUF => {
                        if let Err(e) = self.events.ring.consume() {
                            tracing::debug!("ring buffer consume: {e}");
                        }
                    }
                    WAKE_NETNS => {
                        rescan |= self.events.watcher.as_ref().is_some_and(|w| w.drain());
                    }
                    WAKE_PLUGINS => plugins_changed |= self.plugins.drain(),
                    _ => {}
                }
            }
            loop {
                let next = self.events.queue.borrow_mut().pop_front();
                let Some(ev) = next else { break };
                dispatch(&ev, &mut self.tuners, &mut self.engine);
            }
            if plugins_changed {
                // Every new event pushes the scan back: a file still being written
                // keeps the directory busy.
                plugins_due = Some(Instant::now() + PLUGIN_SETTLE);
            }
            if plugins_due.is_some_and(|p| Instant::now() >= p) {
                plugins_due = None;
                // Loading a plugin is a start-up in miniature (BPF load and attach, cgroup
                // programs): raise what start-up had (kernel::privs: idle is empty).
                let _caps = crate::kernel::privs::raise(crate::kernel::privs::KEEP);
                self.plugins
                    .scan(&mut self.tuners, &mut self.engine, &mut self._shared);
            }
            let now = Instant::now();
            if rescan || now >= next_scan {
                let diff = self.engine.refresh_netns();
                // Tuners keep per-namespace state too (paths, correlations): drop it.
                for info in &diff.vanished {
                    for t in self.tuners.iter_mut().flatten() {
                        t.forget_netns(info.cookie);
                    }
                }
                next_scan = now + NETNS_RESCAN;
            }
            if now >= next_tick {
                self.tick_tuners();
                self.plugins.reap(&mut self.tuners, &mut self.engine);
                if self.plugins.rewatch() {
                    // A plugin directory appeared: files may already be in it (a
                    // package creates the directory and installs into it at once).
                    plugins_due.get_or_insert(now + PLUGIN_SETTLE);
                }
                if let Some(line) = self
                    .lost
                    .as_ref()
                    .and_then(crate::bpf::lost_events_total)
                    .and_then(|total| self.lost_report.observe(total, now))
                {
                    tracing::warn!("{line}");
                }
                next_tick = now + TICK;
                let progress = {
                    let ledger = lock(&self.ledger);
                    if self.engine.observe() {
                        super::notify::Progress::Proposals(ledger.proposed_count())
                    } else {
                        super::notify::Progress::Changes(ledger.applied_count())
                    }
                };
                self.notify
                    .status(super::notify::status_line(&self.active, progress), now);
            }
            // A loop stuck anywhere above never gets here: systemd restarts it.
            self.notify.poll(now);
        }
    }

    /// One tick of every tuner (and its hook strategy), then its summary.
    fn tick_tuners(&mut self) {
        let now = Instant::now();
        for (id, t) in self.tuners.iter_mut().enumerate() {
            if let Some(t) = t {
                t.tick(&mut self.engine.ctx(id));
                crate::tuner::drive::drive(t.as_mut(), &mut self.engine.ctx(id), now);
                if let Some(s) = t.summary() {
                    lock(&self.ledger).set_extra(id, s);
                }
            }
        }
    }
}

pub(super) fn dispatch(ev: &Event, tuners: &mut [Option<Box<dyn Tuner>>], engine: &mut Engine) {
    let id = ev.tuner_id as usize;
    let Some(Some(tuner)) = tuners.get_mut(id) else {
        tracing::debug!("no tuner for id {id}");
        return;
    };
    engine.stats().event_received(id);
    let deliver = engine.deliverable(id, ev.ns);
    let (cookie, kind) = match ev.ns {
        Ns::Global => (engine.global_cookie(), "global netns"),
        Ns::Netns { cookie, .. } => (cookie, "non-global netns"),
    };
    tracing::debug!(
        "event scenario [{}] for tuner {}[{id}] netns {cookie} ({kind}) {}",
        ev.scenario_id,
        tuner.name(),
        if deliver {
            "sent"
        } else {
            "skipped due to inactive tuner/netns"
        }
    );
    if deliver {
        // Observe mode: the tuner judges the event against its simulated values.
        let ev = engine.simulated_event(ev);
        tuner.handle(&ev, &mut engine.ctx(id));
    }
}

#[cfg(test)]
#[path = "event_loop_prop.rs"]
mod prop_tests;

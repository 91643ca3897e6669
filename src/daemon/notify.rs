//! systemd's notification protocol (sd_notify(3), `Type=notify`) with the `sd-notify`
//! crate: READY=1 once every tuner is attached, STATUS= with a one-line summary (sent
//! when it changes, at most every [`STATUS_MIN_INTERVAL`]), WATCHDOG=1 from the event
//! loop every half `WATCHDOG_USEC`, STOPPING=1 at shutdown. Without `NOTIFY_SOCKET` (not
//! run by systemd) every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// STATUS= updates are rate-limited to one per this interval.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The daemon's side of the notification socket.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// Half of `WATCHDOG_USEC` (systemd's recommendation), when the watchdog is on.
    watchdog_every: Option<Duration>,
    next_ping: Option<Instant>,
    status: String,
    /// A changed status not yet sent because of the rate limit.
    pending: Option<String>,
    status_sent_at: Option<Instant>,
    failed: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog_every = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        Notifier::new(enabled, watchdog_every)
    }

    fn new(enabled: bool, watchdog_every: Option<Duration>) -> Notifier {
        Notifier {
            enabled,
            watchdog_every: watchdog_every.filter(|_| enabled),
            next_ping: None,
            status: String::new(),
            pending: None,
            status_sent_at: None,
            failed: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The watchdog ping interval (half of `WATCHDOG_USEC`), if the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // Logged once: a supervisor that went away must not flood the log.
            if !self.failed {
                self.failed = true;
                tracing::warn!("cannot notify the service manager: {e}");
            }
        }
    }

    /// READY=1 with the first STATUS=; starts the watchdog clock.
    pub fn ready(&mut self, status: String, now: Instant) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
        self.status_sent_at = Some(now);
        if let Some(every) = self.watchdog_every {
            self.send(&[NotifyState::Watchdog]);
            self.next_ping = Some(now + every);
        }
    }

    /// Offers the current status line: sent if it differs from the last one sent and the
    /// rate limit allows, otherwise kept and sent by a later call.
    pub fn status(&mut self, status: String, now: Instant) {
        if !self.enabled {
            return;
        }
        if status == self.status {
            self.pending = None;
            return;
        }
        let due = self
            .status_sent_at
            .is_none_or(|t| now.saturating_duration_since(t) >= STATUS_MIN_INTERVAL);
        if due {
            self.send(&[NotifyState::Status(&status)]);
            self.status = status;
            self.status_sent_at = Some(now);
            self.pending = None;
        } else {
            self.pending = Some(status);
        }
    }

    /// Sends a status kept back by the rate limit once it is allowed.
    fn flush_status(&mut self, now: Instant) {
        if let Some(s) = self.pending.take() {
            self.status(s, now);
        }
    }

    /// WATCHDOG=1 if a ping is due (and a held-back status); call on every loop wake-up.
    pub fn poll(&mut self, now: Instant) {
        if let (Some(every), Some(next)) = (self.watchdog_every, self.next_ping) {
            if now >= next {
                self.send(&[NotifyState::Watchdog]);
                // From `now`, not `next`: after a long stall, one ping, not a burst.
                self.next_ping = Some(now + every);
            }
        }
        self.flush_status(now);
    }

    /// When the event loop must wake up next for this notifier (the next watchdog ping or
    /// the end of the status rate limit), if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let status = self
            .pending
            .as_ref()
            .and(self.status_sent_at)
            .map(|t| t + STATUS_MIN_INTERVAL);
        match (self.next_ping, status) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// STOPPING=1 (and a last STATUS=).
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// What the daemon has done so far, for the STATUS= line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Enforcing: sysctl changes made.
    Changes(usize),
    /// Observe mode: changes proposed (none is made, so a change count would say 0).
    Proposals(u64),
}

/// The STATUS= line: "N tuner(s) active (names); M change(s) so far" (observe mode:
/// "…; observe mode: M proposal(s) so far").
pub fn status_line(active: &[&str], progress: Progress) -> String {
    let done = match progress {
        Progress::Changes(n) => format!("{n} change(s) so far"),
        Progress::Proposals(n) => format!("observe mode: {n} proposal(s) so far"),
    };
    format!("{} tuner(s) active ({}); {done}", active.len(), active.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_notifier_has_no_deadlines() {
        let mut n = Notifier::new(false, Some(Duration::from_secs(1)));
        let t0 = Instant::now();
        n.ready("x".into(), t0);
        n.status("y".into(), t0);
        assert_eq!(n.watchdog_interval(), None);
        assert_eq!(n.next_deadline(), None);
    }

    #[test]
    fn watchdog_deadline_advances_from_now() {
        // Enabled without a socket in the environment: sends are no-ops (sd_notify::notify
        // returns Ok without NOTIFY_SOCKET), the bookkeeping is what is tested.
        let mut n = Notifier::new(true, Some(Duration::from_millis(500)));
        let t0 = Instant::now();
        n.ready("a".into(), t0);
        assert_eq!(n.next_deadline(), Some(t0 + Duration::from_millis(500)));
        n.poll(t0 + Duration::from_millis(100));
        assert_eq!(n.next_deadline(), Some(t0 + Duration::from_millis(500)));
        let late = t0 + Duration::from_secs(3);
        n.poll(late);
        assert_eq!(n.next_deadline(), Some(late + Duration::from_millis(500)));
    }

    #[test]
    fn status_is_rate_limited_and_sent_later() {
        let mut n = Notifier::new(true, None);
        let t0 = Instant::now();
        n.ready("one".into(), t0);
        n.status("two".into(), t0 + Duration::from_secs(1));
        assert_eq!(n.status, "one");
        assert_eq!(n.next_deadline(), Some(t0 + STATUS_MIN_INTERVAL));
        n.poll(t0 + STATUS_MIN_INTERVAL);
        assert_eq!(n.status, "two");
        assert_eq!(n.next_deadline(), None);
        // Unchanged status: nothing pending.
        n.status("two".into(), t0 + STATUS_MIN_INTERVAL * 3);
        assert_eq!(n.next_deadline(), None);
    }

    #[test]
    fn status_line_format() {
        assert_eq!(
            status_line(&["foo", "bar"], Progress::Changes(3)),
            "2 tuner(s) active (foo, bar); 3 change(s) so far"
        );
        assert_eq!(
            status_line(&["foo"], Progress::Proposals(7)),
            "1 tuner(s) active (foo); observe mode: 7 proposal(s) so far"
        );
    }
}

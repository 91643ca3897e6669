//! Events the BPF side could not post because the ring buffer was full (a flood faster
//! than the daemon reads, or a daemon stopped for a while). The kernel counts them per
//! CPU in `lost_events_map`; this turns the count into log lines an operator sees
//! without drowning the log: the first loss at once, then at most one line a minute
//! while losses continue, and the total at exit. Metrics export the same counter.

use std::time::{Duration, Instant};

/// At most one "events lost" line per this interval while losses continue.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// When to say what about a monotonically growing lost-event total (pure: tested
/// without BPF).
#[derive(Debug, Default)]
pub(super) struct LossReport {
    /// Total already covered by a log line.
    reported: u64,
    last_line: Option<Instant>,
}

impl LossReport {
    /// The line to log now for a total of `total` lost events, if any.
    pub(super) fn observe(&mut self, total: u64, now: Instant) -> Option<String> {
        // A smaller total is a counter we did not see reset (a map re-created): start over.
        if total < self.reported {
            self.reported = 0;
        }
        let new = total - self.reported;
        if new == 0 {
            return None;
        }
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < REPORT_EVERY)
        {
            return None;
        }
        let since = match self.last_line {
            None => String::new(),
            Some(t) => format!(" in the last {} s", now.saturating_duration_since(t).as_secs()),
        };
        self.reported = total;
        self.last_line = Some(now);
        Some(format!(
            "ring buffer full: {new} event(s) lost{since} ({total} in all); events arrive faster than they are read, the tuners act on the ones that arrive"
        ))
    }

    /// The exit line: the total, when anything was lost.
    pub(super) fn summary(total: u64) -> Option<String> {
        (total > 0).then(|| format!("# {total} event(s) lost because the ring buffer was full"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_loss_at_once_then_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut r = LossReport::default();
        assert_eq!(r.observe(0, t0), None, "nothing lost, nothing said");
        let first = r.observe(1500, t0).expect("first loss is reported at once");
        assert!(first.contains("1500 event(s) lost (1500 in all)"), "{first}");
        assert_eq!(r.observe(9000, t0 + Duration::from_secs(1)), None, "throttled");
        assert_eq!(r.observe(9000, t0 + Duration::from_secs(59)), None, "throttled");
        let second = r
            .observe(9000, t0 + Duration::from_secs(61))
            .expect("a minute later");
        assert!(
            second.contains("7500 event(s) lost in the last 61 s (9000 in all)"),
            "{second}"
        );
        assert_eq!(
            r.observe(9000, t0 + Duration::from_secs(200)),
            None,
            "no new losses, no line"
        );
    }

    #[test]
    fn a_counter_that_went_backwards_starts_over() {
        let t0 = Instant::now();
        let mut r = LossReport::default();
        assert!(r.observe(100, t0).is_some());
        let line = r
            .observe(40, t0 + Duration::from_secs(120))
            .expect("new count after a reset");
        assert!(line.contains("40 event(s) lost"), "{line}");
    }

    #[test]
    fn summary_only_when_something_was_lost() {
        assert_eq!(LossReport::summary(0), None);
        assert_eq!(
            LossReport::summary(7).as_deref(),
            Some("# 7 event(s) lost because the ring buffer was full")
        );
    }
}

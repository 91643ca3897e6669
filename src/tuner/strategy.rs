//! Strategies (C bpftune's `bpftune_strategy`, reference §2.10): a tuner may implement
//! its job in more than one way, each a set of BPF programs. Every strategy has a
//! timeout; when the current one's expires, every strategy is evaluated and the tuner
//! switches to the best (detaching the current programs, attaching the new ones).
//! This module only decides ([`Strategies`], a state machine that knows no tuner);
//! `tuner::drive` drives any tuner that has strategies (called by the daemon every
//! tick); the tuner attaches and detaches (built-in tuners in their
//! `Tuner::switch_strategy`, plugins through the adapter in `crate::plugin`).

use std::time::{Duration, Instant};

/// One strategy of a tuner.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyDesc {
    pub name: String,
    pub description: String,
    /// How long the strategy runs before every strategy is evaluated again.
    pub timeout: Duration,
}

/// A tuner's strategies and which one is current.
#[derive(Debug, Clone)]
pub struct Strategies {
    descs: Vec<StrategyDesc>,
    current: usize,
    next_eval: Instant,
}

/// A decided switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: usize,
    pub to: usize,
}

impl Strategies {
    /// Starts with the first strategy; `None` when there is none.
    pub fn new(descs: Vec<StrategyDesc>, now: Instant) -> Option<Strategies> {
        let first = descs.first()?.timeout;
        Some(Strategies {
            descs,
            current: 0,
            next_eval: now + first,
        })
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn descs(&self) -> &[StrategyDesc] {
        &self.descs
    }

    /// Whether the current strategy's timeout has expired.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_eval
    }

    /// Given every strategy's score (higher is better; negative or NaN rules one out),
    /// picks the best and restarts the timeout; `Some` when that is a different strategy.
    /// Ties keep the current strategy (no switching back and forth on equal scores).
    pub fn decide(&mut self, now: Instant, scores: &[f64]) -> Option<Switch> {
        let usable = |s: f64| s.is_finite() && s >= 0.0;
        let mut best = self.current;
        let mut best_score = scores.get(self.current).copied().filter(|s| usable(*s));
        for (i, &s) in scores.iter().enumerate().take(self.descs.len()) {
            if usable(s) && best_score.is_none_or(|b| s > b) {
                best = i;
                best_score = Some(s);
            }
        }
        let from = self.current;
        self.current = best;
        self.next_eval = now + self.descs[best].timeout;
        (best != from).then_some(Switch { from, to: best })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn descs() -> Vec<StrategyDesc> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| StrategyDesc {
                name: n.to_string(),
                description: String::new(),
                timeout: Duration::from_secs(1 + i as u64),
            })
            .collect()
    }

    #[test]
    fn switches_to_the_best_after_timeout() {
        let t0 = Instant::now();
        assert!(Strategies::new(Vec::new(), t0).is_none());
        let mut s = Strategies::new(descs(), t0).expect("strategies");
        assert_eq!(s.current(), 0);
        assert!(!s.due(t0));
        assert!(s.due(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.decide(t1, &[1.0, 3.0, 2.0]), Some(Switch { from: 0, to: 1 }));
        // b's timeout (2 s) now applies.
        assert!(!s.due(t1 + Duration::from_secs(1)));
        assert!(s.due(t1 + Duration::from_secs(2)));
        // A tie keeps the current one; a ruled-out current one is left for any usable one.
        assert_eq!(s.decide(t1, &[3.0, 3.0, 0.0]), None);
        assert_eq!(s.decide(t1, &[-1.0, -1.0, 0.5]), Some(Switch { from: 1, to: 2 }));
        assert_eq!(s.decide(t1, &[f64::NAN, -1.0, -2.0]), None);
        assert_eq!(s.current(), 2);
    }
}

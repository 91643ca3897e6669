//! Strategies (C bpftune's `bpftune_strategy`, reference §2.10): a tuner may implement
//! its job in more than one way, each a set of BPF programs. Every strategy has a
//! timeout; when the current one's expires, every strategy is evaluated and the tuner
//! switches to the best (detaching the current programs, attaching the new ones).
//! This module decides ([`Strategies`]) and drives any [`Tuner`] that has strategies
//! ([`drive`], called by the daemon every tick); the tuner attaches and detaches
//! (built-in tuners in their [`Tuner::switch_strategy`], plugins through the adapter in
//! [`crate::core::plugin`]).

use std::time::{Duration, Instant};

use crate::core::tuner::{Tuner, TunerEnv};

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

/// If `tuner`'s current strategy timed out: evaluates every strategy, and switches to
/// the best one (logging the switch). Returns the switch made, if any.
pub fn drive(tuner: &mut dyn Tuner, env: &mut dyn TunerEnv, now: Instant) -> Option<Switch> {
    let (n, current) = {
        let st = tuner.strategies()?;
        if !st.due(now) {
            return None;
        }
        (st.descs().len(), st.current())
    };
    let scores: Vec<f64> = (0..n).map(|i| tuner.evaluate_strategy(i, current, env)).collect();
    let st = tuner.strategies()?;
    let sw = st.decide(now, &scores)?;
    let (from, to) = (st.descs()[sw.from].name.clone(), st.descs()[sw.to].name.clone());
    let name = tuner.name();
    // Attaching and detaching programs after start-up (core::privs: the effective set
    // is empty while idle; cgroup programs also need CAP_NET_ADMIN).
    let _caps = crate::core::privs::raise(&[
        caps::Capability::CAP_BPF,
        caps::Capability::CAP_PERFMON,
        caps::Capability::CAP_NET_ADMIN,
    ]);
    match tuner.switch_strategy(sw.from, sw.to) {
        Ok(()) => tracing::info!("{name}: switching strategy from '{from}' to '{to}' (scores {scores:?})"),
        Err(e) => tracing::error!("{name}: cannot switch strategy from '{from}' to '{to}': {e}"),
    }
    Some(sw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bpf::{HookError, LoadConfig, SharedMaps, Slot};
    use crate::core::events::Event;
    use crate::core::tunable::{Scenario, TunableDesc};
    use crate::core::tuner::{StartCtx, TunerError};
    use crate::tuners::fake_env::FakeEnv;

    /// A built-in-style tuner whose two strategies score by what the environment says
    /// (tunable 0's value: 1 favours strategy 1), recording the switches it was asked for.
    struct Fake {
        strategies: Strategies,
        switches: Vec<(usize, usize)>,
    }

    impl Tuner for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn tunables(&self) -> &'static [TunableDesc] {
            &[]
        }
        fn scenarios(&self) -> &'static [Scenario] {
            &[]
        }
        fn slots(&self) -> &'static [Slot] {
            &[]
        }
        fn try_attach(&self, _: &SharedMaps, _: &LoadConfig, _: &[&'static str]) -> Result<(), HookError> {
            Ok(())
        }
        fn start(&mut self, _: StartCtx<'_>) -> Result<(), TunerError> {
            Ok(())
        }
        fn handle(&mut self, _: &Event, _: &mut dyn TunerEnv) {}
        fn strategies(&mut self) -> Option<&mut Strategies> {
            Some(&mut self.strategies)
        }
        fn evaluate_strategy(&mut self, strategy: usize, _current: usize, env: &mut dyn TunerEnv) -> f64 {
            let want = env
                .read(0, crate::core::tuner::Ns::Global)
                .ok()
                .and_then(|v| v.ints().and_then(|x| x.first().copied()))
                .unwrap_or(0);
            if want as usize == strategy {
                1.0
            } else {
                0.0
            }
        }
        fn switch_strategy(&mut self, from: usize, to: usize) -> Result<(), TunerError> {
            self.switches.push((from, to));
            Ok(())
        }
    }

    #[test]
    fn drive_evaluates_on_timeout_and_switches() {
        let t0 = Instant::now();
        let mut f = Fake {
            strategies: Strategies::new(descs()[..2].to_vec(), t0).expect("strategies"),
            switches: Vec::new(),
        };
        let mut env = FakeEnv::new(&[false]);
        env.set(0, crate::core::tuner::Ns::Global, &[1]);
        // Not due yet: nothing evaluated.
        assert_eq!(drive(&mut f, &mut env, t0), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(drive(&mut f, &mut env, t1), Some(Switch { from: 0, to: 1 }));
        assert_eq!(f.switches, [(0, 1)]);
        // Same preference at the next timeout (2 s for strategy 1): no switch.
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(drive(&mut f, &mut env, t2), None);
        env.set(0, crate::core::tuner::Ns::Global, &[0]);
        assert_eq!(
            drive(&mut f, &mut env, t2 + Duration::from_secs(2)),
            Some(Switch { from: 1, to: 0 })
        );
        assert_eq!(f.switches, [(0, 1), (1, 0)]);
    }

    fn descs() -> Vec<StrategyDesc> {
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

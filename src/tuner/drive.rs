//! Drives the strategies of any tuner that has them: when the current strategy's
//! timeout expires, every strategy is scored by the tuner and the decision of
//! [`Strategies`] is carried out through `Tuner::switch_strategy`.

use std::time::Instant;

use crate::tuner::strategy::Switch;
use crate::tuner::{Tuner, TunerEnv};

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
    // Attaching and detaching programs after start-up (kernel::privs: the effective set
    // is empty while idle; cgroup programs also need CAP_NET_ADMIN).
    let _caps = crate::kernel::privs::raise(&[
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
    use std::time::Duration;

    use super::*;
    use crate::bpf::{HookError, LoadConfig, SharedMaps, Slot};
    use crate::model::event::Event;
    use crate::model::tunable::{Scenario, TunableDesc};
    use crate::tuner::strategy::tests::descs;
    use crate::tuner::strategy::Strategies;
    use crate::tuner::testing::FakeEnv;
    use crate::tuner::{StartCtx, TunerError};

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
                .read(0, crate::tuner::Ns::Global)
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
        env.set(0, crate::tuner::Ns::Global, &[1]);
        // Not due yet: nothing evaluated.
        assert_eq!(drive(&mut f, &mut env, t0), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(drive(&mut f, &mut env, t1), Some(Switch { from: 0, to: 1 }));
        assert_eq!(f.switches, [(0, 1)]);
        // Same preference at the next timeout (2 s for strategy 1): no switch.
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(drive(&mut f, &mut env, t2), None);
        env.set(0, crate::tuner::Ns::Global, &[0]);
        assert_eq!(
            drive(&mut f, &mut env, t2 + Duration::from_secs(2)),
            Some(Switch { from: 1, to: 0 })
        );
        assert_eq!(f.switches, [(0, 1), (1, 0)]);
    }
}

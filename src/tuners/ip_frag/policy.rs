//! ip_frag decisions as plain functions of (live values, observation) — no I/O, so they
//! are unit-tested without root.

use crate::model::tunable::Rate;
use crate::tuner::corr::{Corr, CORR_THRESHOLD};

/// Fragment memory of one namespace never grows past this share of the host's free
/// buffer memory: 1/16, so a fragment flood cannot make us hand it the machine.
pub const SHARE_OF_MEMORY: i64 = 16;
/// Upper bound when free memory is unknown: 1 GiB.
pub const FALLBACK_CAP: i64 = 1 << 30;

/// Growth bound (bytes) from the free-buffer-page estimate and the page size.
pub fn thresh_cap(free_buffer_pages: u64, page_size: u64) -> i64 {
    let bytes = free_buffer_pages.saturating_mul(page_size);
    match i64::try_from(bytes / SHARE_OF_MEMORY as u64) {
        Ok(0) | Err(_) => FALLBACK_CAP,
        Ok(c) => c,
    }
}

/// Reassembly failures per 100 reassembly requests between two observations (C
/// bpftune divided cumulative counters without checking for zero): `None` when no
/// reassembly was requested in between or a counter went backwards.
pub fn fail_percent(prev: Option<(u64, u64)>, now: (u64, u64)) -> Option<f64> {
    let (fails, reqds) = now;
    let (d_fails, d_reqds) = match prev {
        Some((pf, pr)) => (fails.checked_sub(pf)?, reqds.checked_sub(pr)?),
        None => (fails, reqds),
    };
    if d_reqds == 0 {
        return None;
    }
    Some(d_fails as f64 * 100.0 / d_reqds as f64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreshAction {
    /// "need to increase IP fragmentation high threshold"
    Increase(i64),
    /// "need to decrease IP fragmentation high threshold": raising it did not lower the
    /// failure rate (it rose with the threshold, r > 0.75).
    Decrease(i64),
}

/// Fragment memory is at `high` (the live high_thresh); `low` is the live low_thresh;
/// `corr` relates the thresholds we proposed to the failure rate that followed.
/// The threshold always stays above `low` (the kernel refuses anything else).
pub fn thresh_decision(rate: Rate, high: i64, low: i64, corr: &Corr, cap: i64) -> Option<ThreshAction> {
    if high <= 0 {
        return None;
    }
    if corr.r() > CORR_THRESHOLD {
        let n = rate.shrink(high);
        return (n > low && n < high).then_some(ThreshAction::Decrease(n));
    }
    let n = rate.grow(high)?.min(cap);
    (n > high && n > low).then_some(ThreshAction::Increase(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate::DEFAULT;
    const MB: i64 = 1 << 20;

    #[test]
    fn grows_by_a_step_within_the_cap() {
        let c = Corr::default();
        assert_eq!(
            thresh_decision(R, 4 * MB, 3 * MB, &c, 1 << 30),
            Some(ThreshAction::Increase(5 * MB))
        );
        assert_eq!(
            thresh_decision(R, 4 * MB, 3 * MB, &c, 9 * MB / 2),
            Some(ThreshAction::Increase(9 * MB / 2))
        );
        assert_eq!(thresh_decision(R, 4 * MB, 3 * MB, &c, 4 * MB), None, "at the cap");
        assert_eq!(thresh_decision(R, 0, 0, &c, 1 << 30), None);
    }

    #[test]
    fn shrinks_when_growth_raises_failures_but_never_to_low() {
        let mut c = Corr::default();
        // Failures rise with every increase (a flood of never-completed datagrams:
        // more memory only holds more garbage).
        for i in 0..12 {
            c.update((4 * MB + i * MB) as f64, 10.0 + i as f64 * 3.0);
        }
        assert!(c.r() > CORR_THRESHOLD);
        assert_eq!(
            thresh_decision(R, 8 * MB, 3 * MB, &c, 1 << 30),
            Some(ThreshAction::Decrease(6 * MB))
        );
        // 4 MiB -> 3 MiB would reach low_thresh (3 MiB): refused.
        assert_eq!(thresh_decision(R, 4 * MB, 3 * MB, &c, 1 << 30), None);
    }

    #[test]
    fn keeps_growing_when_growth_helps() {
        let mut c = Corr::default();
        for i in 0..12 {
            c.update((4 * MB + i * MB) as f64, 60.0 - i as f64 * 4.0);
        }
        assert!(c.r() < 0.0);
        assert_eq!(
            thresh_decision(R, 8 * MB, 3 * MB, &c, 1 << 30),
            Some(ThreshAction::Increase(10 * MB))
        );
    }

    #[test]
    fn fail_percent_guards_division_and_resets() {
        assert_eq!(fail_percent(None, (0, 0)), None);
        assert_eq!(fail_percent(None, (50, 200)), Some(25.0));
        assert_eq!(
            fail_percent(Some((50, 200)), (50, 200)),
            None,
            "no requests in between"
        );
        assert_eq!(fail_percent(Some((50, 200)), (60, 300)), Some(10.0));
        assert_eq!(
            fail_percent(Some((50, 200)), (10, 300)),
            None,
            "counter went backwards"
        );
    }

    #[test]
    fn cap_from_memory() {
        assert_eq!(thresh_cap(1_000_000, 4096), 256_000_000);
        assert_eq!(thresh_cap(0, 4096), FALLBACK_CAP);
        assert_eq!(
            thresh_cap(u64::MAX, u64::MAX),
            (u64::MAX / 16) as i64,
            "saturates, no overflow"
        );
    }
}

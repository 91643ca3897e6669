//! net_buffer decisions, pure: backlog growth, the flow-limit CPU mask, NAPI budget
//! growth with the 50 ms ceiling and the correlation back-off, and the start-up
//! high-order allocation rule.

use crate::model::tunable::{Rate, INT_MAX};
use crate::tuner::corr::{Corr, CORR_THRESHOLD};

/// Backlog packets per CPU we never go beyond: every queued skb pins its memory (≥ 2 KiB
/// with its data), so 2^20 packets is already gigabytes per CPU. C bpftune had no bound
/// but INT_MAX.
pub const BACKLOG_MAX: i64 = 1 << 20;

/// netdev_budget_usecs ceiling (C bpftune's NETDEV_BUDGET_USECS_MAX, issue #178: budgets
/// had reached ~300 ms of softirq time per poll cycle).
pub const BUDGET_USECS_MAX: i64 = 50_000;

/// The next netdev_max_backlog after backlog drops, or `None` at the bound.
pub fn backlog_growth(rate: Rate, live: i64) -> Option<i64> {
    if live <= 0 || live >= BACKLOG_MAX {
        return None;
    }
    let grown = rate.grow(live)?.max(live + 1);
    Some(grown.min(BACKLOG_MAX))
}

/// Drops seen in /proc/net/softnet_stat that the BPF hook did not see (kernels without
/// the CPU_BACKLOG drop reason) and that are enough to act on: at least
/// netdev_max_backlog/32 in one tick, the kernel side's threshold.
pub fn untraced_drops_warrant_growth(softnet_drops: u64, traced_drops: u64, max_backlog: i64) -> bool {
    traced_drops == 0 && softnet_drops > 0 && softnet_drops >= (max_backlog.max(0) as u64) >> 5
}

/// A CPU mask as the kernel prints and parses it (`%*pb`, `cpumask_parse`): hexadecimal,
/// in comma-separated groups of 32 bits, most significant group first ("3",
/// "00000000,00000003"). C bpftune wrote the mask as a decimal number, so CPU 4 and up
/// landed on the wrong CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    /// 32-bit groups, least significant first.
    words: Vec<u32>,
    /// Hex digits of each printed group, most significant first (keeps the kernel's shape).
    widths: Vec<usize>,
}

impl CpuMask {
    pub fn parse(text: &str) -> Option<CpuMask> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut words = Vec::new();
        let mut widths = Vec::new();
        for group in text.split(',') {
            if group.is_empty() || group.len() > 8 {
                return None;
            }
            words.push(u32::from_str_radix(group, 16).ok()?);
            widths.push(group.len());
        }
        words.reverse();
        Some(CpuMask { words, widths })
    }

    pub fn is_set(&self, cpu: u32) -> bool {
        let (w, b) = ((cpu / 32) as usize, cpu % 32);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// The mask with `cpu` added, or `None` if it is already set or beyond the mask's
    /// width (the kernel's mask covers every possible CPU, so that means a bogus CPU).
    pub fn with_cpu(&self, cpu: u32) -> Option<CpuMask> {
        let (w, b) = ((cpu / 32) as usize, cpu % 32);
        if self.is_set(cpu) || w >= self.words.len() {
            return None;
        }
        let mut out = self.clone();
        out.words[w] |= 1u32 << b;
        Some(out)
    }
}

impl std::fmt::Display for CpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self
            .words
            .iter()
            .rev()
            .zip(&self.widths)
            .enumerate()
            .map(|(i, (w, width))| {
                // Full groups keep 8 digits; the leading one keeps at least its width.
                let width = if i == 0 { *width } else { 8 };
                format!("{w:0width$x}")
            })
            .collect();
        f.write_str(&groups.join(","))
    }
}

/// Did NAPI run out of budget or time ("time squeeze") since the last reading? As C
/// bpftune: a CPU counts when its counter grew from a non-zero value (the first squeeze
/// of a CPU may be start-up noise).
pub fn squeezed(prev: &[u64], cur: &[u64]) -> bool {
    prev.iter().zip(cur).any(|(p, c)| *p > 0 && c > p)
}

/// What to do about time squeezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    Increase {
        budget: i64,
        usecs: i64,
    },
    /// Budget growth correlates with scheduler waiting: give CPU time back.
    Decrease {
        budget: i64,
        usecs: i64,
    },
    /// usecs would pass 50 ms: stop growing.
    Ceiling,
}

/// Decision on a time squeeze. `corr` holds (proposed budget, scheduler wait %) samples;
/// the caller adds the sample for the proposed increase before asking. `floor` is
/// (budget, usecs) as they were before we grew them: a back-off never goes below that
/// (the kernel's own minimum for usecs is 2 jiffies — 8000 µs at HZ=250 — so a fixed
/// floor such as the HZ=1000 default of 2000 µs would be rejected there).
pub fn budget_decision(
    rate: Rate,
    budget: i64,
    usecs: i64,
    floor: (i64, i64),
    corr: &Corr,
) -> Option<BudgetAction> {
    if budget <= 0 || usecs <= 0 {
        return None;
    }
    if corr.r() > CORR_THRESHOLD {
        let b = rate.shrink(budget).max(floor.0.min(budget));
        let u = rate.shrink(usecs).max(floor.1.min(usecs));
        return (b != budget || u != usecs).then_some(BudgetAction::Decrease { budget: b, usecs: u });
    }
    let b = rate.grow(budget).filter(|b| *b <= INT_MAX)?;
    let u = rate.grow(usecs)?;
    if u > BUDGET_USECS_MAX {
        return Some(BudgetAction::Ceiling);
    }
    Some(BudgetAction::Increase { budget: b, usecs: u })
}

/// The budget a squeeze would propose (the x of the correlation sample).
pub fn proposed_budget(rate: Rate, budget: i64) -> Option<i64> {
    rate.grow(budget).filter(|b| *b <= INT_MAX)
}

/// `uname -r` at least `major.minor`? ("6.18.44-fc" → (6, 18)).
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let (Some(ma), Some(mi)) = (it.next(), it.next()) else {
        return false;
    };
    (ma, mi) >= (major, minor)
}

/// Start-up rule: high-order allocations for skb page frags are not contended on
/// kernels ≥ 5.14, so `high_order_alloc_disable` should be 0 there.
pub fn enable_high_order_alloc(release: &str, live: i64) -> bool {
    live != 0 && kernel_at_least(release, 5, 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_grows_by_a_step_and_stops_at_the_bound() {
        let r = Rate::DEFAULT;
        assert_eq!(backlog_growth(r, 1000), Some(1250));
        // Tiny values still move (8 >> 2 = 2, 3 >> 2 = 0 → +1).
        assert_eq!(backlog_growth(r, 8), Some(10));
        assert_eq!(backlog_growth(r, 3), Some(4));
        assert_eq!(backlog_growth(r, BACKLOG_MAX - 10), Some(BACKLOG_MAX));
        assert_eq!(backlog_growth(r, BACKLOG_MAX), None);
        assert_eq!(backlog_growth(r, 0), None);
    }

    #[test]
    fn untraced_drops() {
        assert!(untraced_drops_warrant_growth(40, 0, 1000));
        assert!(!untraced_drops_warrant_growth(30, 0, 1000));
        assert!(!untraced_drops_warrant_growth(400, 5, 1000), "BPF saw them");
        assert!(!untraced_drops_warrant_growth(0, 0, 8));
        assert!(untraced_drops_warrant_growth(1, 0, 8));
    }

    #[test]
    fn cpumask_in_the_kernels_hex_format() {
        let m = CpuMask::parse("0").expect("valid");
        let m4 = m.with_cpu(1).expect("not yet set");
        assert_eq!(m4.to_string(), "2");
        assert_eq!(m4.with_cpu(1), None, "already set");
        // CPU 4 is bit 4 = 0x10, not decimal 16 (C bpftune's quirk).
        let wide = CpuMask::parse("00000000,00000000").expect("valid");
        let w = wide.with_cpu(4).expect("bit");
        assert_eq!(w.to_string(), "00000000,00000010");
        let w = w.with_cpu(33).expect("bit");
        assert_eq!(w.to_string(), "00000002,00000010");
        assert!(w.is_set(33) && w.is_set(4) && !w.is_set(5));
        assert_eq!(wide.with_cpu(64), None, "beyond the possible CPUs");
        assert_eq!(CpuMask::parse("ff").expect("valid").with_cpu(3), None);
        assert_eq!(CpuMask::parse("f").and_then(|m| m.with_cpu(3)), None);
        assert_eq!(CpuMask::parse(""), None);
        assert_eq!(CpuMask::parse("xyz"), None);
        assert_eq!(CpuMask::parse("123456789"), None);
    }

    #[test]
    fn squeeze_needs_growth_from_non_zero() {
        assert!(squeezed(&[4, 0], &[5, 0]));
        assert!(!squeezed(&[0, 0], &[3, 0]), "first squeeze of a CPU");
        assert!(!squeezed(&[4, 1], &[4, 1]));
        assert!(squeezed(&[4, 1], &[4, 2]));
    }

    /// Floors: the kernel defaults at HZ=1000.
    const F: (i64, i64) = (300, 2000);

    #[test]
    fn budget_grows_until_the_usecs_ceiling() {
        let r = Rate::DEFAULT;
        let c = Corr::default();
        assert_eq!(
            budget_decision(r, 300, 2000, F, &c),
            Some(BudgetAction::Increase {
                budget: 375,
                usecs: 2500
            })
        );
        assert_eq!(
            budget_decision(r, 300, 40_001, F, &c),
            Some(BudgetAction::Ceiling)
        );
        assert_eq!(
            budget_decision(r, 300, 40_000, F, &c),
            Some(BudgetAction::Increase {
                budget: 375,
                usecs: 50_000
            })
        );
        assert_eq!(budget_decision(r, INT_MAX, 2000, F, &c), None);
        assert_eq!(budget_decision(r, 0, 2000, F, &c), None);
    }

    #[test]
    fn budget_backs_off_when_scheduler_waits_follow_it() {
        let r = Rate::DEFAULT;
        let mut c = Corr::default();
        let mut budget = 300;
        for _ in 0..12 {
            budget = proposed_budget(r, budget).expect("grows");
            c.update(budget as f64, budget as f64 / 10.0);
        }
        assert_eq!(
            budget_decision(r, 1000, 10_000, F, &c),
            Some(BudgetAction::Decrease {
                budget: 750,
                usecs: 7500
            })
        );
        // Never below where we started.
        assert_eq!(
            budget_decision(r, 320, 2100, F, &c),
            Some(BudgetAction::Decrease {
                budget: 300,
                usecs: 2000
            })
        );
        assert_eq!(budget_decision(r, 300, 2000, F, &c), None);
        assert_eq!(
            budget_decision(r, 200, 1000, F, &c),
            None,
            "below the floor already"
        );
        assert_eq!(
            budget_decision(r, 1000, 10_000, (300, 8000), &c),
            Some(BudgetAction::Decrease {
                budget: 750,
                usecs: 8000
            }),
            "HZ=250: usecs cannot go below 8000"
        );
    }

    #[test]
    fn high_order_alloc_rule() {
        assert!(kernel_at_least("6.18.44-fc-v669", 5, 14));
        assert!(kernel_at_least("5.14.0-70.el9", 5, 14));
        assert!(!kernel_at_least("5.4.0-1", 5, 14));
        assert!(!kernel_at_least("garbage", 5, 14));
        assert!(enable_high_order_alloc("6.1.0", 1));
        assert!(!enable_high_order_alloc("6.1.0", 0));
        assert!(!enable_high_order_alloc("4.19.0", 1));
    }
}

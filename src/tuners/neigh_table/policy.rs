//! neigh_table decisions, pure: the per-device upper bound from prefix lengths, growth
//! of gc_thresh1/2/3 near the limit and shrinking of a grown table that emptied again.

use crate::model::tunable::{Rate, INT_MAX};

/// Floors of the thresholds (C bpftune's MIN_GC_THRESH1/2/3; also the kernel defaults).
pub const MIN_THRESH: [i64; 3] = [128, 512, 1024];
/// Per address: room for max(2^host bits, 256) × 4 neighbours (C bpftune's
/// NEIGH_TABLE_ADDR_MIN and NEIGH_TABLE_ADDR_FACTOR).
pub const ADDR_MIN: i64 = 256;
pub const ADDR_FACTOR: i64 = 4;

/// The largest gc_thresh3 that makes sense for a device with these prefixes (address
/// family width `bits`, 32 or 128): Σ max(2^(bits − prefixlen), 256) × 4, and "unbounded"
/// (INT_MAX) as soon as one prefix leaves ≥ 64 host bits (an IPv6 /64).
pub fn table_cap(bits: u32, prefixes: &[u8]) -> i64 {
    let mut sum: i64 = 0;
    for &p in prefixes {
        let host = bits.saturating_sub(u32::from(p));
        let room = if host >= 63 {
            INT_MAX
        } else {
            (1i64 << host).max(ADDR_MIN).saturating_mul(ADDR_FACTOR)
        };
        sum = sum.saturating_add(room).min(INT_MAX);
    }
    sum
}

/// What to do when the table is nearly full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullAction {
    /// New gc_thresh1..3.
    Grow([i64; 3]),
    /// gc_thresh3 already at or beyond what the device's prefixes justify.
    Excessive,
}

/// Growth by one step, gc_thresh3 bounded by `cap`, order thresh1 ≤ thresh2 ≤ thresh3 kept.
pub fn full_decision(rate: Rate, live: [i64; 3], cap: i64) -> FullAction {
    if live[2] >= cap {
        return FullAction::Excessive;
    }
    let g = |v: i64| rate.grow(v).map_or(INT_MAX, |n| n.max(v + 1).min(INT_MAX));
    let t3 = g(live[2]).min(cap);
    let t2 = g(live[1]).min(t3);
    let t1 = g(live[0]).min(t2);
    FullAction::Grow([t1, t2, t3])
}

/// Shrinking once a table grown past the defaults is nearly empty: one step down, and
/// straight back to the defaults once gc_thresh3 would reach them.
pub fn empty_decision(rate: Rate, live: [i64; 3]) -> Option<[i64; 3]> {
    if live[2] <= MIN_THRESH[2] {
        return None;
    }
    let t3 = rate.shrink(live[2]);
    if t3 <= MIN_THRESH[2] {
        return Some(MIN_THRESH);
    }
    let t2 = rate.shrink(live[1]).max(MIN_THRESH[1]).min(t3);
    let t1 = rate.shrink(live[0]).max(MIN_THRESH[0]).min(t2);
    Some([t1, t2, t3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_from_prefixes() {
        assert_eq!(table_cap(32, &[24]), 1024, "one /24: 256 × 4");
        assert_eq!(table_cap(32, &[16]), 65536 * 4);
        assert_eq!(table_cap(32, &[30]), 1024, "small subnets still get 256 × 4");
        assert_eq!(table_cap(32, &[24, 24]), 2048);
        assert_eq!(table_cap(32, &[0]), INT_MAX, "0/0 saturates");
        assert_eq!(table_cap(128, &[64]), INT_MAX);
        assert_eq!(table_cap(128, &[112]), 65536 * 4);
        assert_eq!(table_cap(32, &[]), 0, "no prefixes: nothing justifies growth");
    }

    #[test]
    fn grows_every_threshold_within_the_cap() {
        let r = Rate::DEFAULT;
        assert_eq!(
            full_decision(r, [16, 32, 64], 1024),
            FullAction::Grow([20, 40, 80])
        );
        assert_eq!(
            full_decision(r, [128, 512, 1000], 1024),
            FullAction::Grow([160, 640, 1024])
        );
        assert_eq!(full_decision(r, [128, 512, 1024], 1024), FullAction::Excessive);
        assert_eq!(
            full_decision(r, [1, 2, 3], 1024),
            FullAction::Grow([2, 3, 4]),
            "tiny values still move"
        );
        assert_eq!(
            full_decision(r, [900, 1000, 1010], 1024),
            FullAction::Grow([1024, 1024, 1024]),
            "order kept under the cap"
        );
        assert_eq!(full_decision(r, [16, 32, 64], 0), FullAction::Excessive);
    }

    #[test]
    fn shrinks_towards_the_defaults() {
        let r = Rate::DEFAULT;
        assert_eq!(empty_decision(r, [128, 512, 1024]), None);
        assert_eq!(
            empty_decision(r, [16, 32, 64]),
            None,
            "below the defaults: leave alone"
        );
        assert_eq!(empty_decision(r, [1000, 2000, 4000]), Some([750, 1500, 3000]));
        assert_eq!(empty_decision(r, [200, 600, 1300]), Some(MIN_THRESH));
        assert_eq!(empty_decision(r, [130, 520, 2000]), Some([128, 512, 1500]));
    }
}

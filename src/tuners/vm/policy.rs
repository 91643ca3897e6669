//! The vm tuner's decisions, as plain functions of what one tick measured (a [`Sample`]:
//! deltas of the reclaim counters over the interval, and the zone state at its end) and
//! of the machine ([`Machine`]). No I/O: `mod.rs` gathers the samples from the BPF side,
//! `/proc/vmstat`, `/proc/zoneinfo` and `/proc/meminfo`, and applies what is decided
//! through the engine.
//!
//! The rules (README table):
//! - **kswapd falls behind** — direct-reclaim stalls although kswapd had been woken
//!   (small allocations, which wake kswapd before they reclaim themselves; or any
//!   allocation while kswapd was awake),
//!   in [`REPEAT_OF`] of the last [`WINDOW`] intervals (since the tunable last
//!   changed) → `vm.watermark_scale_factor` grows one
//!   learning-rate step (kswapd wakes earlier and reclaims further ahead), or doubles
//!   when the stalls took at least 1/[`SEVERE_SHARE`] of the CPUs' time, up to
//!   [`wsf_cap`]. It relaxes one step toward the value found at start after
//!   [`CALM_INTERVALS`] intervals without a stall while free memory sits at least twice
//!   the high watermark.
//! - **atomic and high-order allocations run short** — high-order allocations falling
//!   back to another migrate type (`mm_page_alloc_extfrag`) or compaction stalls, while
//!   free memory is below the high watermark, repeatedly → `vm.min_free_kbytes` grows one
//!   step (a larger reserve for GFP_ATOMIC and softirq allocations), up to
//!   [`min_free_cap`].
//! - **slab crowds out a refaulting page cache** — file pages refaulting while
//!   reclaimable slab (dentries, inodes) holds more memory than the page cache's share,
//!   repeatedly → `vm.vfs_cache_pressure` grows one step, up to [`VFS_CACHE_PRESSURE_MAX`];
//!   it returns one step toward [`VFS_CACHE_PRESSURE_DEFAULT`] after a calm stretch.
//! - **a change made it worse** — stall time after a raise above the stall time before
//!   it by more than [`WORSE_FACTOR`] times (medians of the intervals): undo it ([`made_worse`]), and do not try that
//!   value again for [`CALM_INTERVALS`] intervals.

use crate::model::tunable::Rate;

/// Intervals (ticks, about a second each) a rule looks back over. The caller passes
/// only the intervals since the tunable last changed, so that evidence is never counted
/// for two changes. Twenty, not five: reclaim stalls come in clusters with seconds
/// between them (allocation bursts: bench/vm_reclaim.py's bursty profile stalled
/// 40–70 ms a second on average, but "3 of the last 5 s" held so rarely that the daemon
/// made one step in two minutes).
pub const WINDOW: usize = 20;
/// How many of the last [`WINDOW`] intervals must show a signal for it to count as
/// repeated: one stall is noise, three separate seconds of it are a pattern.
pub const REPEAT_OF: usize = 3;
/// Reclaimable slab must hold at least 1/this of memory to crowd anything.
pub const SLAB_SHARE_OF_MEMORY: u64 = 16;
/// Intervals a raise is watched before it is judged ([`made_worse`]), during which the
/// tunable is not raised again: the stall time of one 5-s window differed from the
/// next 100-fold under a steady load (21 ms then 2485 ms, bench/vm_reclaim.py), so five
/// seconds are too few to tell a worse value from a bad moment.
pub const WATCH: usize = 10;
/// Intervals without the signal before a raised value relaxes one step.
pub const CALM_INTERVALS: usize = 60;
/// Direct-reclaim stall time of at least 1/this of the CPUs' time over the window is
/// severe: the watermark gap then doubles instead of growing one learning-rate step.
/// In the reclaim recipe (1 GiB guest) the lever needed a factor of ~20 (10 → 200):
/// one +25 % step per [`WATCH`] intervals took 14 steps, two and a half minutes of
/// stalls, while the allocations stalled 1–18 % of the time; doubling takes five.
pub const SEVERE_SHARE: u64 = 100;

/// The kernel's default `vm.watermark_scale_factor` (0.1 % of memory between watermarks).
pub const WSF_DEFAULT: i64 = 10;
/// The kernel's upper bound of `vm.watermark_scale_factor` (3000 since 5.19, 1000 before);
/// [`wsf_cap`] stays well below either.
pub const WSF_KERNEL_MAX: i64 = 1000;
/// `vm.vfs_cache_pressure`: the kernel's default, and the range this tuner keeps to.
pub const VFS_CACHE_PRESSURE_DEFAULT: i64 = 100;
pub const VFS_CACHE_PRESSURE_MIN: i64 = 50;
pub const VFS_CACHE_PRESSURE_MAX: i64 = 500;

/// Facts about the machine, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Managed pages of all zones (`/proc/zoneinfo`), or MemTotal in pages.
    pub total_pages: u64,
    pub page_size: u64,
    /// CPUs (`/proc/stat`; 1 if unknown): stall time is summed over the tasks that
    /// stall, so its share is of the CPUs' time.
    pub cpus: u64,
}

impl Machine {
    fn total_kib(&self) -> i64 {
        i64::try_from(self.total_pages.saturating_mul(self.page_size) / 1024).unwrap_or(i64::MAX)
    }
}

/// One interval's measurements: counter deltas over it, zone state at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Direct-reclaim episodes (`mm_vmscan_direct_reclaim_begin`/`_end` pairs, or the
    /// `allocstall_*` delta).
    pub direct_stalls: u64,
    /// Time spent in direct reclaim, µs (BPF; or the PSI memory `some` delta).
    pub direct_stall_us: u64,
    /// Of the stalls, those in which kswapd had fallen behind: of order ≤ 3 (the
    /// allocation woke kswapd first) or begun while kswapd of the node was awake.
    pub stalls_kswapd_behind: u64,
    /// High-order allocations that fell back to another migrate type
    /// (`mm_page_alloc_extfrag` with order > 0).
    pub highorder_fallbacks: u64,
    /// `compact_stall` delta.
    pub compact_stalls: u64,
    /// `workingset_activate_file` delta: refaulted file pages that were in the workingset
    /// when evicted (thrashing, not a stream read again).
    pub thrash_refaults: u64,
    /// Zone state at the end of the interval, summed over zones (pages).
    pub free_pages: u64,
    pub high_wmark_pages: u64,
    /// `/proc/meminfo`: page cache (Cached) and reclaimable slab (SReclaimable), pages.
    pub file_pages: u64,
    pub slab_reclaimable_pages: u64,
}

impl Sample {
    fn kswapd_behind(&self) -> bool {
        self.stalls_kswapd_behind > 0
    }

    fn short_of_high_order(&self) -> bool {
        (self.highorder_fallbacks > 0 || self.compact_stalls > 0) && self.free_pages < self.high_wmark_pages
    }

    /// Reclaimable slab holds more than a quarter of what page cache and slab hold
    /// together, and at least [`SLAB_SHARE_OF_MEMORY`] of memory, while file pages of
    /// the workingset refault: the cache that is thrown out is needed again. The share
    /// of memory matters when anonymous memory fills the machine: then cache and slab
    /// are both small, and a quarter of almost nothing is no crowding (the reclaim
    /// recipe's guest raised vfs_cache_pressure on 30 MiB of slab without it).
    fn slab_crowds_cache(&self, m: &Machine) -> bool {
        let cache = self.file_pages.saturating_add(self.slab_reclaimable_pages);
        self.thrash_refaults > 0
            && cache > 0
            && self.slab_reclaimable_pages.saturating_mul(4) > cache
            && self.slab_reclaimable_pages.saturating_mul(SLAB_SHARE_OF_MEMORY) >= m.total_pages
    }

    fn calm(&self) -> bool {
        self.direct_stalls == 0
            && self.compact_stalls == 0
            && self.free_pages >= self.high_wmark_pages.saturating_mul(2)
    }
}

/// What one rule decided: the new value and why, in the tuner's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Raise { to: i64, why: String },
    Relax { to: i64, why: String },
}

impl Action {
    pub fn value(&self) -> i64 {
        match self {
            Action::Raise { to, .. } | Action::Relax { to, .. } => *to,
        }
    }
}

/// The intervals a rule looks back over: the last [`WINDOW`] of `window`.
fn recent(window: &[Sample]) -> &[Sample] {
    &window[window.len().saturating_sub(WINDOW)..]
}

fn repeated(window: &[Sample], signal: impl Fn(&Sample) -> bool) -> usize {
    recent(window).iter().filter(|s| signal(s)).count()
}

fn calm_for(window: &[Sample], n: usize) -> bool {
    window.len() >= n && window.iter().rev().take(n).all(Sample::calm)
}

/// One step up from `live`, capped; `None` when already at (or above) the cap.
fn step_up(rate: Rate, live: i64, cap: i64) -> Option<i64> {
    if live >= cap {
        return None;
    }
    let grown = rate.grow(live.max(1)).unwrap_or(cap);
    Some(grown.max(live + 1).min(cap))
}

/// One step down from `live` toward `floor` (never below it); `None` at the floor.
fn step_down(rate: Rate, live: i64, floor: i64) -> Option<i64> {
    if live <= floor {
        return None;
    }
    Some(rate.shrink(live).min(live - 1).max(floor))
}

/// The largest `vm.watermark_scale_factor` this tuner sets: the watermark gap (factor /
/// 10000 of memory) never exceeds 2 % of memory, nor 1 GiB on large machines (kswapd
/// then keeps whole gigabytes free for nothing).
pub fn wsf_cap(m: &Machine) -> i64 {
    let total_kib = m.total_kib().max(1);
    let by_size = (1i64 << 20).saturating_mul(10_000) / total_kib;
    by_size.clamp(WSF_DEFAULT, 200).min(WSF_KERNEL_MAX)
}

/// The largest `vm.min_free_kbytes`: 3 % of memory (the kernel's own default is about
/// sqrt(16 × memory) KiB, 0.2 % of 16 GiB).
pub fn min_free_cap(m: &Machine) -> i64 {
    m.total_kib() * 3 / 100
}

/// `vm.watermark_scale_factor`: grow while kswapd falls behind, relax toward `boot`
/// after a calm stretch.
pub fn wsf_decision(window: &[Sample], live: i64, boot: i64, m: &Machine, rate: Rate) -> Option<Action> {
    let behind = repeated(window, Sample::kswapd_behind);
    if behind >= REPEAT_OF {
        let n = recent(window).len();
        let stall_us: u64 = recent(window).iter().map(|s| s.direct_stall_us).sum();
        let cpu_us = m.cpus.max(1).saturating_mul(n as u64).saturating_mul(1_000_000);
        let severe = stall_us.saturating_mul(SEVERE_SHARE) >= cpu_us;
        let cap = wsf_cap(m);
        let to = if severe {
            (live >= 1 && live < cap).then(|| live.saturating_mul(2).min(cap))?
        } else {
            step_up(rate, live, cap)?
        };
        let how = if severe {
            format!(
                "; they took {:.1} % of the CPUs' time, so twice as early",
                stall_us as f64 * 100.0 / cpu_us as f64
            )
        } else {
            String::new()
        };
        return Some(Action::Raise {
            to,
            why: format!(
                "direct reclaim stalled allocations for {} ms in {behind} of the last {n} s although kswapd had been woken: kswapd cannot keep ahead, so wake it earlier{how}",
                stall_us / 1000
            ),
        });
    }
    if calm_for(window, CALM_INTERVALS) {
        let to = step_down(rate, live, boot)?;
        return Some(Action::Relax {
            to,
            why: format!("no direct reclaim for {CALM_INTERVALS} s and free memory at least twice the high watermark"),
        });
    }
    None
}

/// `vm.min_free_kbytes`: grow while high-order and atomic allocations run short.
pub fn min_free_decision(window: &[Sample], live: i64, m: &Machine, rate: Rate) -> Option<Action> {
    let short = repeated(window, Sample::short_of_high_order);
    if short < REPEAT_OF {
        return None;
    }
    let n = recent(window).len();
    let to = step_up(rate, live, min_free_cap(m))?;
    Some(Action::Raise {
        to,
        why: format!(
            "high-order allocations fell back or stalled in compaction in {short} of the last {n} s with free memory below the high watermark: reserve more for atomic allocations"
        ),
    })
}

/// `vm.vfs_cache_pressure`: grow while slab crowds out a refaulting page cache, return
/// toward the default (or `boot`, if that is above it) after a calm stretch. Never
/// outside [`VFS_CACHE_PRESSURE_MIN`]..=[`VFS_CACHE_PRESSURE_MAX`].
pub fn vfs_cache_decision(window: &[Sample], live: i64, boot: i64, m: &Machine, rate: Rate) -> Option<Action> {
    if !(VFS_CACHE_PRESSURE_MIN..=VFS_CACHE_PRESSURE_MAX).contains(&live) {
        // Set outside the range by someone on purpose: not ours to move.
        return None;
    }
    let crowded = repeated(window, |s| s.slab_crowds_cache(m));
    if crowded >= REPEAT_OF {
        let n = recent(window).len();
        let to = step_up(rate, live, VFS_CACHE_PRESSURE_MAX)?;
        return Some(Action::Raise {
            to,
            why: format!(
                "file pages of the workingset refaulted in {crowded} of the last {n} s while reclaimable slab held over a quarter of the cache: reclaim dentries and inodes sooner"
            ),
        });
    }
    let quiet = window.len() >= CALM_INTERVALS
        && window.iter().rev().take(CALM_INTERVALS).all(|s| !s.slab_crowds_cache(m));
    if quiet {
        let to = step_down(rate, live, boot.max(VFS_CACHE_PRESSURE_DEFAULT))?;
        return Some(Action::Relax {
            to,
            why: format!("no slab crowding for {CALM_INTERVALS} s"),
        });
    }
    None
}

/// Whether a raise made things worse: the median interval's direct-reclaim stall time
/// in the [`WATCH`] intervals after it is more than [`WORSE_FACTOR`] times that of as
/// many intervals before it (and larger by at least a millisecond, so that noise near
/// zero does not undo a change). Medians, not sums: stalls come in bursts, and one
/// second of 2.5 s stall among seconds of 20 ms decides a sum by itself
/// (bench/vm_reclaim.py, 1 GiB guest, steady load). A factor, not one learning-rate
/// step: at one value the stall time of one window differs from the next by ±50 %.
pub fn made_worse(before: &[Sample], after: &[Sample]) -> bool {
    let n = before.len().min(after.len());
    if n == 0 {
        return false;
    }
    let median = |w: &[Sample]| -> i64 {
        let mut us: Vec<u64> = w.iter().rev().take(n).map(|s| s.direct_stall_us).collect();
        us.sort_unstable();
        i64::try_from(us[us.len() / 2]).unwrap_or(i64::MAX)
    };
    let (b, a) = (median(before), median(after));
    a > b.saturating_mul(WORSE_FACTOR) && a - b > 1000
}

/// How many times the median stall time before a raise the median after it must
/// exceed for [`made_worse`].
pub const WORSE_FACTOR: i64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate::DEFAULT;
    /// 4 GiB of 4 KiB pages.
    const M: Machine = Machine {
        total_pages: 1 << 20,
        page_size: 4096,
        cpus: 2,
    };

    fn stalled() -> Sample {
        Sample {
            direct_stalls: 12,
            direct_stall_us: 10_000,
            stalls_kswapd_behind: 10,
            free_pages: 9_000,
            high_wmark_pages: 10_000,
            ..Sample::default()
        }
    }

    fn calm() -> Sample {
        Sample {
            free_pages: 500_000,
            high_wmark_pages: 10_000,
            ..Sample::default()
        }
    }

    #[test]
    fn caps_follow_the_machine() {
        // 1 GiB / 4 GiB = 2.5 % → the 2 % cap (200) applies; 256 GiB: 1 GiB is 0.39 %.
        assert_eq!(wsf_cap(&M), 200);
        let big = Machine {
            total_pages: 64 << 20,
            page_size: 4096,
            cpus: 2,
        };
        assert_eq!(wsf_cap(&big), 39);
        // Very large machines never go below the kernel default.
        let huge = Machine {
            total_pages: 1 << 30,
            page_size: 4096,
            cpus: 2,
        };
        assert_eq!(wsf_cap(&huge), WSF_DEFAULT);
        assert_eq!(min_free_cap(&M), 4 * 1024 * 1024 * 3 / 100);
    }

    #[test]
    fn repeated_stalls_while_kswapd_is_awake_raise_the_watermark_gap() {
        let w = [calm(), stalled(), calm(), stalled(), stalled()];
        match wsf_decision(&w, 10, 10, &M, R) {
            Some(Action::Raise { to, why }) => {
                assert_eq!(to, 12);
                assert!(why.contains("3 of the last 5 s"), "{why}");
                assert!(why.contains("30 ms"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Twice is not a pattern.
        assert_eq!(wsf_decision(&w[1..4], 10, 10, &M, R), None);
    }

    #[test]
    fn stalls_in_clusters_seconds_apart_are_repeated() {
        // Allocation bursts: a stalled second every seven, over the last 20 s.
        let mut w = vec![calm(); 25];
        for i in [8, 15, 22] {
            w[i] = stalled();
        }
        match wsf_decision(&w, 10, 10, &M, R) {
            Some(Action::Raise { to, why }) => {
                assert_eq!(to, 12);
                assert!(why.contains("in 3 of the last 20 s"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // A stall more than WINDOW intervals ago no longer counts.
        w[8] = calm();
        w[2] = stalled();
        assert_eq!(wsf_decision(&w, 10, 10, &M, R), None);
    }

    #[test]
    fn severe_stalls_double_the_watermark_gap_within_its_cap() {
        // 40 ms per second on 2 CPUs is 2 % of their time: severe.
        let heavy = Sample {
            direct_stall_us: 40_000,
            ..stalled()
        };
        let w = [heavy; 5];
        match wsf_decision(&w, 10, 10, &M, R) {
            Some(Action::Raise { to, why }) => {
                assert_eq!(to, 20);
                assert!(why.contains("2.0 % of the CPUs' time, so twice as early"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(wsf_decision(&w, 160, 10, &M, R).map(|a| a.value()), Some(200));
        assert_eq!(wsf_decision(&w, 200, 10, &M, R), None);
        // The same stalls on 8 CPUs are 0.5 % of their time: one step.
        let wide = Machine { cpus: 8, ..M };
        assert_eq!(wsf_decision(&w, 10, 10, &wide, R).map(|a| a.value()), Some(12));
        // Just under 1 %: one step.
        let light = [Sample {
            direct_stall_us: 19_999,
            ..stalled()
        }; 5];
        assert_eq!(wsf_decision(&light, 10, 10, &M, R).map(|a| a.value()), Some(12));
    }

    #[test]
    fn stalls_while_kswapd_sleeps_are_not_kswapd_falling_behind() {
        let asleep = Sample {
            stalls_kswapd_behind: 0,
            ..stalled()
        };
        assert_eq!(wsf_decision(&[asleep; 5], 10, 10, &M, R), None);
    }

    #[test]
    fn the_watermark_gap_stops_at_its_cap_and_relaxes_to_the_boot_value() {
        let w = [stalled(); 5];
        assert_eq!(wsf_decision(&w, 190, 10, &M, R).map(|a| a.value()), Some(200));
        assert_eq!(wsf_decision(&w, 200, 10, &M, R), None);
        let quiet = vec![calm(); CALM_INTERVALS];
        assert!(matches!(wsf_decision(&quiet, 30, 10, &M, R), Some(Action::Relax { to: 23, .. })));
        assert!(matches!(wsf_decision(&quiet, 11, 10, &M, R), Some(Action::Relax { to: 10, .. })));
        assert_eq!(wsf_decision(&quiet, 10, 10, &M, R), None);
        // Not calm while free memory is close to the high watermark.
        let tight = vec![
            Sample {
                free_pages: 15_000,
                ..calm()
            };
            CALM_INTERVALS
        ];
        assert_eq!(wsf_decision(&tight, 30, 10, &M, R), None);
    }

    #[test]
    fn high_order_shortage_below_the_high_watermark_raises_min_free() {
        let short = Sample {
            highorder_fallbacks: 40,
            free_pages: 8_000,
            high_wmark_pages: 10_000,
            ..Sample::default()
        };
        let w = [short; 3];
        assert_eq!(min_free_decision(&w, 67584, &M, R).map(|a| a.value()), Some(84480));
        // Plenty free: fallbacks alone are fragmentation, not a reserve too small.
        let roomy = Sample {
            free_pages: 50_000,
            ..short
        };
        assert_eq!(min_free_decision(&[roomy; 5], 67584, &M, R), None);
        let cap = min_free_cap(&M);
        assert_eq!(min_free_decision(&w, cap, &M, R), None);
        assert_eq!(min_free_decision(&w, cap - 10, &M, R).map(|a| a.value()), Some(cap));
    }

    #[test]
    fn slab_crowding_a_refaulting_cache_raises_vfs_cache_pressure_within_its_range() {
        let crowded = Sample {
            thrash_refaults: 5_000,
            file_pages: 100_000,
            slab_reclaimable_pages: 80_000,
            ..calm()
        };
        let w = [crowded; 5];
        assert_eq!(vfs_cache_decision(&w, 100, 100, &M, R).map(|a| a.value()), Some(125));
        assert_eq!(vfs_cache_decision(&w, 450, 100, &M, R).map(|a| a.value()), Some(500));
        assert_eq!(vfs_cache_decision(&w, 500, 100, &M, R), None);
        // An administrator's 1000 (or 10) is outside our range: left alone.
        assert_eq!(vfs_cache_decision(&w, 1000, 1000, &M, R), None);
        assert_eq!(vfs_cache_decision(&w, 10, 10, &M, R), None);
        // Slab small, or no refaults: nothing to do.
        let small = Sample {
            slab_reclaimable_pages: 10_000,
            ..crowded
        };
        assert_eq!(vfs_cache_decision(&[small; 5], 100, 100, &M, R), None);
        // A quarter of the cache but a small share of memory (anonymous memory fills
        // the machine): no crowding.
        let tiny = Sample {
            file_pages: 20_000,
            slab_reclaimable_pages: 30_000,
            ..crowded
        };
        assert_eq!(vfs_cache_decision(&[tiny; 5], 100, 100, &M, R), None);
        let warm = Sample {
            thrash_refaults: 0,
            ..crowded
        };
        assert_eq!(vfs_cache_decision(&[warm; 5], 100, 100, &M, R), None);
        // Quiet for a minute: back toward the default.
        let quiet = vec![warm; CALM_INTERVALS];
        assert_eq!(vfs_cache_decision(&quiet, 200, 100, &M, R).map(|a| a.value()), Some(150));
        assert_eq!(vfs_cache_decision(&quiet, 100, 100, &M, R), None);
    }

    #[test]
    fn a_raise_followed_by_more_stall_time_is_undone() {
        let before = [Sample {
            direct_stall_us: 10_000,
            ..stalled()
        }; 5];
        let worse = [Sample {
            direct_stall_us: 25_000,
            ..stalled()
        }; 5];
        let better = [Sample {
            direct_stall_us: 2_000,
            ..stalled()
        }; 5];
        assert!(made_worse(&before, &worse));
        assert!(!made_worse(&before, &better));
        // Up to twice as much: within the noise of one window against the next, kept.
        let same = [Sample {
            direct_stall_us: 19_000,
            ..stalled()
        }; 5];
        assert!(!made_worse(&before, &same));
        // Near zero, a doubling of almost nothing is not worse.
        let tiny_b = [Sample {
            direct_stall_us: 10,
            ..stalled()
        }; 5];
        let tiny_a = [Sample {
            direct_stall_us: 300,
            ..stalled()
        }; 5];
        assert!(!made_worse(&tiny_b, &tiny_a));
        // One burst second among ordinary ones is not "worse": medians, not sums.
        let mut burst = [Sample {
            direct_stall_us: 11_000,
            ..stalled()
        }; 5];
        burst[2].direct_stall_us = 2_500_000;
        assert!(!made_worse(&before, &burst));
        assert!(!made_worse(&[], &worse));
    }
}

//! udp_buffer decisions as plain functions of (live values, observation) — no I/O, so
//! they are unit-tested without root.

use crate::model::tunable::Rate;

/// Receive buffer limits stay within [8 KiB, 256 MiB] (C bpftune's UDP_BUFFER_MIN/MAX).
pub const UDP_BUFFER_MIN: i64 = 8192;
pub const UDP_BUFFER_MAX: i64 = 256 << 20;

/// A receive-buffer drop seen by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drop {
    /// The socket's `sk_rcvbuf` when the datagram was dropped.
    pub rcvbuf: i64,
    /// The application set SO_RCVBUF (the kernel stores twice the request, clipped
    /// to rmem_max).
    pub locked: bool,
}

/// One write: (which, new value). `RmemMax` first when both change, so that
/// rmem_default never exceeds rmem_max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmemWrite {
    Max(i64),
    Default(i64),
}

/// Receive-buffer drop → writes, given the live `max` (rmem_max) and `default`
/// (rmem_default).
///
/// * Default-sized socket (no SO_RCVBUF) with a buffer near rmem_default: grow
///   rmem_default by one step; if that passes rmem_max, raise rmem_max to the same value
///   first (a default above the max would be refused to every SO_RCVBUF user asking for
///   as much as the default; C bpftune grew rmem_max instead, which does nothing for
///   default-sized sockets).
/// * SO_RCVBUF socket whose request was clipped by rmem_max: grow rmem_max.
/// * Anything else (a socket that asked for a small buffer, or one created before the
///   last increase): nothing.
///
/// Every new value is within [UDP_BUFFER_MIN, UDP_BUFFER_MAX]; empty when nothing to do.
pub fn rmem_decision(rate: Rate, max: i64, default: i64, drop: Drop) -> Vec<RmemWrite> {
    if max <= 0 || default <= 0 {
        return Vec::new();
    }
    let in_bounds = |v: i64| (UDP_BUFFER_MIN..=UDP_BUFFER_MAX).contains(&v);
    if drop.locked {
        if !rate.nearly_full(drop.rcvbuf, max.saturating_mul(2)) {
            return Vec::new();
        }
        return match rate.grow(max) {
            Some(n) if n > max && in_bounds(n) => vec![RmemWrite::Max(n)],
            _ => Vec::new(),
        };
    }
    if !rate.nearly_full(drop.rcvbuf, default) {
        return Vec::new();
    }
    let Some(n) = rate.grow(default).filter(|&n| n > default && in_bounds(n)) else {
        return Vec::new();
    };
    if n > max {
        vec![RmemWrite::Max(n), RmemWrite::Default(n)]
    } else {
        vec![RmemWrite::Default(n)]
    }
}

/// Receive-drop rate in per mille (C bpftune's "drop rate"), 0 when nothing was
/// received (C divided by zero there).
pub fn drop_rate_per_mille(received: u64, drops: u64) -> u64 {
    if received == 0 {
        return 0;
    }
    u64::try_from(u128::from(drops) * 1000 / u128::from(received)).unwrap_or(u64::MAX)
}

pub use crate::tuner::mem_triple::MemAction;

/// udp_mem (pages), the same rule as tcp_mem: near udp_mem[1] (pressure) or udp_mem[2]
/// (exhaustion) each value becomes min(cap, grow(value)) with caps 1/16, 1/8 and 1/4 of
/// free buffer pages — a value above its cap is lowered to it (C bpftune proposed 0
/// there) — and min < pressure < max holds.
pub fn udp_mem_decision(rate: Rate, live: [i64; 3], allocated: i64, nr_free: i64) -> Option<MemAction> {
    crate::tuner::mem_triple::mem_decision(rate, live, allocated, nr_free)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate::DEFAULT;

    fn unlocked(rcvbuf: i64) -> Drop {
        Drop {
            rcvbuf,
            locked: false,
        }
    }

    #[test]
    fn default_sized_socket_grows_rmem_default() {
        assert_eq!(
            rmem_decision(R, 4_194_304, 16384, unlocked(16384)),
            vec![RmemWrite::Default(20480)]
        );
    }

    #[test]
    fn default_never_passes_max() {
        // rmem_default == rmem_max == 16 KiB (C bpftune's udp test setup): both grow,
        // max first.
        assert_eq!(
            rmem_decision(R, 16384, 16384, unlocked(16384)),
            vec![RmemWrite::Max(20480), RmemWrite::Default(20480)]
        );
    }

    #[test]
    fn old_sockets_are_no_evidence() {
        // Created with 16 KiB, the default is 64 KiB by now: no further growth from it.
        assert!(rmem_decision(R, 4_194_304, 65536, unlocked(16384)).is_empty());
        // Within one step of the default still counts (the kernel's view may lag).
        assert_eq!(
            rmem_decision(R, 4_194_304, 20480, unlocked(16384)),
            vec![RmemWrite::Default(25600)]
        );
    }

    #[test]
    fn so_rcvbuf_sockets() {
        // Asked for 4 KiB (got 8 KiB): the application's choice, not a limit.
        assert!(rmem_decision(
            R,
            16384,
            16384,
            Drop {
                rcvbuf: 8192,
                locked: true
            }
        )
        .is_empty());
        // Asked for more than rmem_max (got 2 × max): the max is too small.
        assert_eq!(
            rmem_decision(
                R,
                16384,
                16384,
                Drop {
                    rcvbuf: 32768,
                    locked: true
                }
            ),
            vec![RmemWrite::Max(20480)]
        );
    }

    #[test]
    fn bounds() {
        let max = UDP_BUFFER_MAX;
        assert!(
            rmem_decision(R, max, max, unlocked(max)).is_empty(),
            "never above 256 MiB"
        );
        assert!(rmem_decision(R, max, 240 << 20, unlocked(240 << 20)).is_empty());
        assert!(rmem_decision(R, 0, 16384, unlocked(16384)).is_empty());
        assert!(rmem_decision(R, 16384, 0, unlocked(0)).is_empty());
        // 6 KiB grows to 7.5 KiB: still below the 8 KiB floor, so no write.
        assert!(rmem_decision(R, 6144, 6144, unlocked(6144)).is_empty());
    }

    #[test]
    fn drop_rate_guards_division() {
        assert_eq!(drop_rate_per_mille(0, 5), 0);
        assert_eq!(drop_rate_per_mille(5000, 3341), 668);
        assert_eq!(drop_rate_per_mille(u64::MAX, u64::MAX), 1000);
    }

    #[test]
    fn udp_mem_values_meet_their_caps() {
        // nr_free 160000: caps 10000 / 20000 / 40000; min is above its cap: lowered to it.
        let live = [12000, 16000, 30000];
        assert_eq!(
            udp_mem_decision(R, live, 15000, 160_000),
            Some(MemAction::Pressure([10000, 20000, 37500]))
        );
        assert_eq!(
            udp_mem_decision(R, [20, 45, 50], 49, 160_000),
            Some(MemAction::Exhaustion([25, 56, 62]))
        );
        assert_eq!(udp_mem_decision(R, [20, 45, 50], 10, 160_000), None);
    }
}

//! tcp_buffer decisions as plain functions of (live values, observation) — no I/O, so
//! they are unit-tested without root.

use std::time::{Duration, Instant};

use crate::model::tunable::{Rate, INT_MAX};
use crate::tuner::corr::{Corr, CORR_THRESHOLD};

/// Buffers never reach 2^31 (the kernel's int limit; C bpftune #36/#93).
pub const BUFFER_CAP: i64 = INT_MAX - 1;
/// One socket's buffer limit never exceeds this fraction of all TCP memory
/// (tcp_mem[2]): 1/8, so a handful of bulk flows cannot starve everything else.
pub const BUFFER_SHARE_OF_TCP_MEM: i64 = 8;

/// Upper bound for tcp_rmem[2]/tcp_wmem[2] given tcp_mem[2] (pages) and the page size.
pub fn buffer_cap(tcp_mem_max_pages: i64, page_size: i64) -> i64 {
    tcp_mem_max_pages
        .checked_mul(page_size)
        .map_or(BUFFER_CAP, |bytes| {
            (bytes / BUFFER_SHARE_OF_TCP_MEM).min(BUFFER_CAP)
        })
}

/// Never shrink tcp_max_syn_backlog below this (C bpftune's TCP_SYN_BACKLOG_MIN).
pub const SYN_BACKLOG_MIN: i64 = 128;
/// Upper bound for tcp_max_syn_backlog growth.
pub const SYN_BACKLOG_MAX: i64 = 1 << 20;
/// Syncookies are judged ineffective after this many failures with no success.
pub const SYNCOOKIES_BAD_COUNT: u64 = 1024;
/// A buffer/latency correlation only counts if srtt actually moved by this fraction
/// of its mean: Pearson r on microsecond jitter is noise, not bufferbloat.
pub const MIN_LATENCY_SPREAD: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferAction {
    /// Raise max (scenario "need to increase TCP buffer size(s)").
    Increase([i64; 3]),
    /// Latency grows with the buffer: shrink max instead, never below the default.
    DecreaseLatency([i64; 3]),
}

/// rmem/wmem: `live` is the namespace's current (min default max), `sockbuf` the
/// socket's buffer when the kernel saw it at the limit.
/// `cap` bounds growth (see [`buffer_cap`]).
pub fn buffer_decision(
    rate: Rate,
    live: [i64; 3],
    sockbuf: i64,
    corr: &Corr,
    low_mem: bool,
    cap: i64,
) -> Option<BufferAction> {
    if low_mem || live[2] <= 0 {
        return None;
    }
    // The premise: the socket is (still) near the current max. If the max has been
    // raised meanwhile (a stale or duplicate event), do nothing (C bpftune #155).
    if !rate.nearly_full(sockbuf, live[2]) {
        return None;
    }
    if corr.r() > CORR_THRESHOLD && corr.y_spread() >= MIN_LATENCY_SPREAD {
        let new_max = rate.shrink(live[2]);
        if new_max <= live[1] {
            return None;
        }
        return Some(BufferAction::DecreaseLatency([live[0], live[1], new_max]));
    }
    let new_max = rate.grow(live[2])?.min(cap).min(BUFFER_CAP);
    (new_max > live[2]).then_some(BufferAction::Increase([live[0], live[1], new_max]))
}

/// Observe mode: the socket buffer the policy judges when the simulated max (`sim_max`,
/// what bpftune would have set) is above the kernel's live max (`kernel_max`). The BPF
/// side only reports a socket that is near the live max, i.e. one the live max holds
/// back; with the simulated max in place it would have grown with it (the kernel's
/// receive/send auto-tuning grows a buffer by up to twice the data moved per RTT), so
/// it is scaled by `sim_max / kernel_max`. Enforcing runs confirm the model: on the
/// 40 ms delay line sockets kept reaching each raised max up to the cap
/// (tests/observe.rs compares the two). Otherwise the buffer is taken as it is.
pub fn simulated_sockbuf(sockbuf: i64, kernel_max: i64, sim_max: i64) -> i64 {
    if kernel_max <= 0 || sim_max <= kernel_max {
        return sockbuf;
    }
    let scaled = i128::from(sockbuf) * i128::from(sim_max) / i128::from(kernel_max);
    i64::try_from(scaled).unwrap_or(i64::MAX)
}

// tcp_mem follows the rule every protocol memory triple follows (udp_mem too).
pub use crate::tuner::mem_triple::{
    mem_caps as tcp_mem_caps, mem_decision as tcp_mem_decision, MemAction,
    MEM_CAP_DIVISORS as TCP_MEM_CAP_DIVISORS,
};

/// How long TCP memory must stay below the pressure threshold before the low-memory
/// measures are undone. Memory pressure comes in bursts (a backup, a fan-in of many
/// senders) that pause for seconds and return; leaving at the first calm reading and
/// re-entering at the next burst flips four sysctls back and forth with every burst.
/// 30 s spans such pauses and many retransmission timeouts, yet restores metrics caching
/// and the SYN backlog within half a minute of the load really ending.
pub const LOW_MEM_CALM: Duration = Duration::from_secs(30);

/// The low-memory state with hysteresis: entered on the first near-exhaustion signal,
/// left only after memory stayed below the pressure threshold for [`LOW_MEM_CALM`].
/// Time is passed in, so the machine is tested without waiting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LowMem {
    low: bool,
    /// Start of the current run of calm readings while low.
    calm_since: Option<Instant>,
}

impl LowMem {
    pub fn is_low(&self) -> bool {
        self.low
    }

    /// A near-exhaustion signal: true if this enters the low-memory state.
    pub fn exhaustion(&mut self, _now: Instant) -> bool {
        self.calm_since = None;
        !std::mem::replace(&mut self.low, true)
    }

    /// A memory reading: `calm` if TCP memory is below the pressure threshold. True if
    /// this leaves the low-memory state.
    pub fn observe(&mut self, now: Instant, calm: bool) -> bool {
        if !self.low {
            return false;
        }
        if !calm {
            self.calm_since = None;
            return false;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) < LOW_MEM_CALM {
            return false;
        }
        *self = LowMem::default();
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynAction {
    /// Grow tcp_max_syn_backlog (syncookies off, memory fine, accepts keep up).
    Increase(i64),
    /// Flood not matched by accepted connections: an attack, shrink.
    Decrease(i64),
    /// Low memory under flood: enable syncookies instead of growing the queue.
    EnableSyncookies,
    /// Syncookies only fail: disable them.
    DisableSyncookies,
}

/// Observation for a SYN-queue overflow signal.
#[derive(Debug, Clone, Copy)]
pub struct SynObs {
    pub max_syn_backlog: i64,
    pub syncookies: i64,
    pub low_mem: bool,
    pub cookies_failed: u64,
    pub cookies_recv: u64,
}

pub fn syn_decision(rate: Rate, o: SynObs, corr: &Corr) -> Option<SynAction> {
    if o.syncookies != 0 {
        // With syncookies on the SYN queue is not what limits a flood; only check that
        // cookies do work.
        return (o.cookies_failed >= SYNCOOKIES_BAD_COUNT && o.cookies_recv == 0)
            .then_some(SynAction::DisableSyncookies);
    }
    if o.low_mem {
        return Some(SynAction::EnableSyncookies);
    }
    if corr.samples() > 10 && corr.r() < CORR_THRESHOLD {
        let new = rate.shrink(o.max_syn_backlog);
        return (new >= SYN_BACKLOG_MIN && new < o.max_syn_backlog).then_some(SynAction::Decrease(new));
    }
    let new = rate.grow(o.max_syn_backlog)?.min(SYN_BACKLOG_MAX);
    (new > o.max_syn_backlog).then_some(SynAction::Increase(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate::DEFAULT;

    fn correlated(spread: f64) -> Corr {
        let mut c = Corr::default();
        for i in 0..20 {
            let x = 1_000_000.0 * (i + 1) as f64;
            c.update(x, 40_000.0 * (1.0 + spread * i as f64 / 19.0));
        }
        c
    }

    #[test]
    fn grows_when_socket_at_the_max() {
        let live = [4096, 131072, 1310720];
        assert_eq!(
            buffer_decision(R, live, 1310720, &Corr::default(), false, BUFFER_CAP),
            Some(BufferAction::Increase([4096, 131072, 1638400]))
        );
        assert_eq!(
            buffer_decision(R, live, 1000000, &Corr::default(), false, BUFFER_CAP),
            Some(BufferAction::Increase([4096, 131072, 1638400]))
        );
    }

    #[test]
    fn observe_mode_judges_the_socket_against_the_simulated_max() {
        // Not observing (or no simulation): the buffer as the kernel reported it.
        assert_eq!(simulated_sockbuf(1_000_000, 1_310_720, 1_310_720), 1_000_000);
        // Simulated max below the live one (a proposed decrease): as reported.
        assert_eq!(simulated_sockbuf(1_000_000, 1_310_720, 1_000_000), 1_000_000);
        // A socket held back by the live max would have grown with the simulated one.
        let s = simulated_sockbuf(1_300_000, 1_310_720, 2_048_000);
        assert_eq!(s, 1_300_000 * 2_048_000 / 1_310_720);
        assert!(R.nearly_full(s, 2_048_000));
        assert_eq!(
            buffer_decision(
                R,
                [4096, 131072, 2_048_000],
                s,
                &Corr::default(),
                false,
                BUFFER_CAP
            ),
            Some(BufferAction::Increase([4096, 131072, 2_560_000]))
        );
        // ... up to the cap, where the proposals stop.
        let cap = buffer_cap(575_796, 4096);
        let mut max = 1_310_720;
        let mut steps = 0;
        while let Some(BufferAction::Increase(n)) = buffer_decision(
            R,
            [4096, 131072, max],
            simulated_sockbuf(1_300_000, 1_310_720, max),
            &Corr::default(),
            false,
            cap,
        ) {
            max = n[2];
            steps += 1;
            assert!(steps < 100, "no convergence");
        }
        assert_eq!(max, cap);
        assert_eq!(simulated_sockbuf(i64::MAX, 1, i64::MAX), i64::MAX);
    }

    #[test]
    fn stale_event_after_growth_is_ignored() {
        // The socket saw 1310720 but the max was raised to 3 MB meanwhile.
        assert_eq!(
            buffer_decision(
                R,
                [4096, 131072, 3_000_000],
                1310720,
                &Corr::default(),
                false,
                BUFFER_CAP
            ),
            None
        );
    }

    #[test]
    fn no_growth_in_low_memory() {
        assert_eq!(
            buffer_decision(
                R,
                [4096, 131072, 1310720],
                1310720,
                &Corr::default(),
                true,
                BUFFER_CAP
            ),
            None
        );
    }

    #[test]
    fn capped_below_int_max() {
        let live = [4096, 131072, 2_000_000_000];
        assert_eq!(
            buffer_decision(R, live, 2_000_000_000, &Corr::default(), false, BUFFER_CAP),
            Some(BufferAction::Increase([4096, 131072, BUFFER_CAP]))
        );
        assert_eq!(
            buffer_decision(
                R,
                [4096, 131072, BUFFER_CAP],
                BUFFER_CAP,
                &Corr::default(),
                false,
                BUFFER_CAP
            ),
            None
        );
    }

    #[test]
    fn growth_bounded_by_share_of_tcp_memory() {
        // tcp_mem[2] = 575796 pages of 4 KiB: one socket gets at most 1/8 (~295 MB).
        let cap = buffer_cap(575_796, 4096);
        assert_eq!(cap, 575_796 * 4096 / 8);
        let live = [4096, 131072, 280_000_000];
        assert_eq!(
            buffer_decision(R, live, 280_000_000, &Corr::default(), false, cap),
            Some(BufferAction::Increase([4096, 131072, cap]))
        );
        assert_eq!(
            buffer_decision(R, [4096, 131072, cap], cap, &Corr::default(), false, cap),
            None
        );
        assert_eq!(buffer_cap(i64::MAX, 4096), BUFFER_CAP);
    }

    #[test]
    fn latency_correlation_shrinks_but_not_below_default() {
        let c = correlated(1.0);
        assert!(c.r() > 0.9);
        assert_eq!(
            buffer_decision(R, [4096, 131072, 8_000_000], 8_000_000, &c, false, BUFFER_CAP),
            Some(BufferAction::DecreaseLatency([4096, 131072, 6_000_000]))
        );
        assert_eq!(
            buffer_decision(R, [4096, 131072, 160_000], 160_000, &c, false, BUFFER_CAP),
            None
        );
    }

    #[test]
    fn jitter_is_not_bufferbloat() {
        let c = correlated(0.05);
        assert!(c.r() > 0.9, "strong r on tiny jitter");
        assert!(matches!(
            buffer_decision(R, [4096, 131072, 8_000_000], 8_000_000, &c, false, BUFFER_CAP),
            Some(BufferAction::Increase(_))
        ));
    }

    #[test]
    fn tcp_mem_pressure_and_exhaustion() {
        let nr_free = 1_000_000;
        // Both signals move every value one step towards its cap.
        assert_eq!(
            tcp_mem_decision(R, [768, 1024, 1536], 1500, nr_free),
            Some(MemAction::Exhaustion([960, 1280, 1920]))
        );
        assert_eq!(
            tcp_mem_decision(R, [768, 1024, 100_000], 1000, nr_free),
            Some(MemAction::Pressure([960, 1280, 125_000]))
        );
        assert_eq!(tcp_mem_decision(R, [768, 1024, 100_000], 100, nr_free), None);
    }

    #[test]
    fn tcp_mem_values_go_to_min_of_cap_and_growth() {
        let nr_free = 1000; // caps 62, 125, 250
        assert_eq!(tcp_mem_caps(nr_free), [62, 125, 250]);
        assert_eq!(
            tcp_mem_decision(R, [50, 100, 240], 240, nr_free),
            Some(MemAction::Exhaustion([62, 125, 250]))
        );
        // At the caps: a fixpoint.
        assert_eq!(tcp_mem_decision(R, [62, 125, 250], 250, nr_free), None);
        // Above the caps (an administrator's or an old default): lowered to them.
        assert_eq!(
            tcp_mem_decision(R, [50, 100, 400], 400, nr_free),
            Some(MemAction::Exhaustion([62, 125, 250]))
        );
        assert_eq!(
            tcp_mem_decision(R, [60, 120, 240], 120, nr_free),
            Some(MemAction::Pressure([62, 125, 250]))
        );
        // Min and pressure above their caps while only under pressure.
        assert_eq!(
            tcp_mem_decision(R, [100_000, 200_000, 300_000], 200_000, 1_000_000),
            Some(MemAction::Pressure([62_500, 125_000, 250_000]))
        );
    }

    #[test]
    fn absurd_max_under_pressure_is_capped() {
        // The reference's C code would only ever *raise*; 2e9 pages is 8 TB of 4 KiB pages.
        assert_eq!(
            tcp_mem_decision(R, [50, 100, 2_000_000_000], 1000, 1_000_000),
            Some(MemAction::Pressure([62, 125, 250_000]))
        );
        // grow() overflowing is the cap too.
        assert_eq!(
            tcp_mem_decision(R, [50, 100, i64::MAX], 1000, 1_000_000),
            Some(MemAction::Pressure([62, 125, 250_000]))
        );
    }

    #[test]
    fn tcp_mem_keeps_min_below_pressure_below_max() {
        let nr_free = 1_000_000;
        let caps = tcp_mem_caps(nr_free);
        let vals = [
            1,
            3,
            50,
            100,
            62_499,
            62_500,
            70_000,
            125_000,
            200_000,
            250_000,
            2_000_000_000,
        ];
        let mut checked = 0;
        for &a in &vals {
            for &b in &vals {
                for &c in &vals {
                    for alloc in [b, c] {
                        let Some(MemAction::Pressure(n) | MemAction::Exhaustion(n)) =
                            tcp_mem_decision(R, [a, b, c], alloc, nr_free)
                        else {
                            continue;
                        };
                        checked += 1;
                        assert!(0 < n[0] && n[0] < n[1] && n[1] < n[2], "{:?} -> {n:?}", [a, b, c]);
                        assert!(
                            n.iter().zip(caps).all(|(v, cap)| *v <= cap),
                            "{n:?} above caps {caps:?}"
                        );
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} decisions checked");
        // Repeated pressure converges to the caps and then stops.
        let mut live = [50, 100, 2_000_000_000];
        for _ in 0..100 {
            match tcp_mem_decision(R, live, live[1], nr_free) {
                Some(MemAction::Pressure(n) | MemAction::Exhaustion(n)) => live = n,
                None => break,
            }
        }
        assert_eq!(live, caps);
    }

    #[test]
    fn low_memory_state_has_hysteresis() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut m = LowMem::default();
        assert!(!m.observe(at(0), true), "calm while normal is nothing");
        assert!(m.exhaustion(at(1)), "first exhaustion signal enters");
        assert!(!m.exhaustion(at(2)), "already low");
        assert!(m.is_low());
        // Calm for a while, then a burst: the calm period starts over.
        assert!(!m.observe(at(3), true));
        assert!(!m.observe(at(3 + 29), true));
        assert!(!m.observe(at(33), false));
        assert!(!m.observe(at(34), true));
        assert!(!m.observe(at(34 + 29), true), "29 s of calm is not enough");
        assert!(m.is_low());
        assert!(m.observe(at(34 + 30), true), "30 s of calm leaves");
        assert!(!m.is_low());
        assert!(!m.observe(at(100), true), "leaves once");
        // A new exhaustion enters again, and a near-exhaustion reset restarts the clock.
        assert!(m.exhaustion(at(200)));
        assert!(!m.observe(at(201), true));
        assert!(!m.exhaustion(at(220)));
        assert!(!m.observe(at(231), true), "the calm clock restarted at 231");
        assert!(!m.observe(at(260), true));
        assert!(m.observe(at(261), true));
    }

    #[test]
    fn syn_backlog_policy() {
        let base = SynObs {
            max_syn_backlog: 512,
            syncookies: 0,
            low_mem: false,
            cookies_failed: 0,
            cookies_recv: 0,
        };
        assert_eq!(
            syn_decision(R, base, &Corr::default()),
            Some(SynAction::Increase(640))
        );
        assert_eq!(
            syn_decision(
                R,
                SynObs {
                    low_mem: true,
                    ..base
                },
                &Corr::default()
            ),
            Some(SynAction::EnableSyncookies)
        );
        let mut flat = Corr::default();
        for i in 0..12 {
            flat.update(i as f64, 7.0);
        }
        assert_eq!(syn_decision(R, base, &flat), Some(SynAction::Decrease(384)));
        assert_eq!(
            syn_decision(
                R,
                SynObs {
                    max_syn_backlog: 150,
                    ..base
                },
                &flat
            ),
            None
        );
        let cookies = SynObs {
            syncookies: 1,
            cookies_failed: 2000,
            ..base
        };
        assert_eq!(
            syn_decision(R, cookies, &Corr::default()),
            Some(SynAction::DisableSyncookies)
        );
        assert_eq!(
            syn_decision(
                R,
                SynObs {
                    cookies_recv: 3,
                    ..cookies
                },
                &Corr::default()
            ),
            None
        );
    }
}

//! The rule every protocol memory triple follows (tcp_mem, udp_mem: min, pressure and
//! max, in pages): grow by one learning-rate step near pressure or exhaustion, within caps
//! derived from the free buffer pages. Shared by the tuners that manage such a triple.

use crate::model::tunable::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemAction {
    Pressure([i64; 3]),
    Exhaustion([i64; 3]),
}

/// Caps of a memory triple (min, pressure, max) as divisors of the free buffer pages (reference
/// §3.1): 1/16, 1/8 and 1/4 — a protocol may never claim more than a quarter of memory.
pub const MEM_CAP_DIVISORS: [i64; 3] = [16, 8, 4];

/// The caps of [`MEM_CAP_DIVISORS`] for `nr_free` free buffer pages.
pub fn mem_caps(nr_free: i64) -> [i64; 3] {
    MEM_CAP_DIVISORS.map(|d| nr_free / d)
}

/// A memory triple (pages, e.g. tcp_mem, udp_mem): `allocated` pages in use; `nr_free` the free-buffer-page estimate.
/// Near its max (exhaustion) or its pressure value every value becomes
/// min(cap, grow(value)) with the caps of [`mem_caps`]: a value below its cap grows
/// by one step, a value above it (e.g. an absurd max an administrator left behind) is
/// lowered to the cap. The result always keeps min < pressure < max.
pub fn mem_decision(rate: Rate, live: [i64; 3], allocated: i64, nr_free: i64) -> Option<MemAction> {
    let caps = mem_caps(nr_free);
    // Below 16 free pages there is nothing sensible to cap at.
    if caps[0] < 1 || live[2] <= 0 {
        return None;
    }
    let exhaustion = rate.nearly_full(allocated, live[2]);
    if !exhaustion && !rate.nearly_full(allocated, live[1]) {
        return None;
    }
    // grow() only overflows for values far above any cap: the cap is the answer then.
    let step = |v: i64, cap: i64| rate.grow(v).map_or(cap, |g| g.min(cap));
    let mut new = [
        step(live[0], caps[0]),
        step(live[1], caps[1]),
        step(live[2], caps[2]),
    ];
    // Strict order, settled from the top: max is the hard limit, pressure must lie
    // below it (else the kernel is never "under pressure" before refusing memory), min
    // below pressure (else it never leaves pressure).
    new[1] = new[1].min(new[2] - 1);
    new[0] = new[0].min(new[1] - 1);
    if new[0] < 1 || new == live {
        return None;
    }
    Some(if exhaustion {
        MemAction::Exhaustion(new)
    } else {
        MemAction::Pressure(new)
    })
}

//! The ring-buffer record shared by every tuner (`struct bpftune_event` in
//! `bpf/bpftune.h`) and its decoding. The record type is the one libbpf-cargo generates
//! from the BPF object's BTF, so C and Rust cannot drift apart.

use crate::core::probe::skel::types::bpftune_event as RawEvent;

/// Number of values one proposal carries.
pub const MAX_VALUES: usize = 3;
const AUX_MAX: usize = 4;

/// Size of the C struct, from the generated type.
pub const RAW_EVENT_SIZE: usize = std::mem::size_of::<RawEvent>();
// The decoder below relies on this layout: fail the build, not the daemon, if it changes.
const _: () = assert!(RAW_EVENT_SIZE == 184);
const _: () = assert!(std::mem::offset_of!(RawEvent, str) == 120);

/// Low-memory flags set by the kernel side.
pub const F_NEAR_PRESSURE: u32 = 0x1;
pub const F_NEAR_EXHAUSTION: u32 = 0x2;

/// The network namespace an event came from, or that a tunable is read or written in.
/// Tuners never see raw cookies: "global" is a value of its own, not cookie 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ns {
    /// The initial namespace (the daemon's own).
    Global,
    /// Another namespace: identified by its cookie (unique per boot), located through its
    /// nsfs inode number.
    Netns { cookie: u64, ino: u64 },
}

impl Ns {
    /// Classifies a (cookie, inode) pair from the kernel: cookie 0 (kernels without
    /// `net->net_cookie`) and the initial namespace's cookie are the global namespace.
    pub fn from_kernel(cookie: u64, ino: u64, global_cookie: u64) -> Ns {
        if cookie == 0 || cookie == global_cookie {
            Ns::Global
        } else {
            Ns::Netns { cookie, ino }
        }
    }

    pub fn is_global(self) -> bool {
        self == Ns::Global
    }
}

/// A decoded event, owned (ring-buffer memory is read-only and reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tuner_id: u32,
    pub scenario_id: u32,
    pub ns: Ns,
    pub pid: i32,
    /// CLOCK_MONOTONIC nanoseconds when the kernel posted the event.
    pub ts_ns: u64,
    pub tunable_id: u32,
    pub flags: u32,
    pub old: [i64; MAX_VALUES],
    pub new: [i64; MAX_VALUES],
    pub aux: [u64; AUX_MAX],
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("unexpected size event: {0} bytes, expected {RAW_EVENT_SIZE}")]
    Size(usize),
}

impl Event {
    /// Decodes one ring-buffer record; `global_cookie` is the initial namespace's cookie.
    pub fn parse(data: &[u8], global_cookie: u64) -> Result<Event, EventError> {
        if data.len() < RAW_EVENT_SIZE {
            return Err(EventError::Size(data.len()));
        }
        // SAFETY: `data` holds at least RAW_EVENT_SIZE bytes (checked above), the generated
        // RawEvent is repr(C) plain old data valid for any bit pattern, and read_unaligned
        // copes with the ring buffer's 8-byte alignment not being guaranteed to Rust.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<RawEvent>()) };
        let bytes: Vec<u8> = raw.str.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
        Ok(Event {
            tuner_id: raw.tuner_id,
            scenario_id: raw.scenario_id,
            ns: Ns::from_kernel(raw.netns_cookie, u64::from(raw.netns_ino), global_cookie),
            pid: raw.pid,
            ts_ns: raw.ts_ns,
            tunable_id: raw.tunable_id,
            flags: raw.flags,
            old: raw.old,
            new: raw.new,
            aux: raw.aux,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `bpf_ktime_get_ns` uses).
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_bytes(ev: &RawEvent) -> Vec<u8> {
        // SAFETY: RawEvent is repr(C) POD; viewing it as bytes for the test is sound.
        unsafe { std::slice::from_raw_parts((ev as *const RawEvent).cast::<u8>(), RAW_EVENT_SIZE).to_vec() }
    }

    fn raw(cookie: u64) -> RawEvent {
        let mut raw = RawEvent {
            tuner_id: 1,
            scenario_id: 2,
            netns_cookie: cookie,
            netns_ino: 4026531840,
            pid: 42,
            ts_ns: 7,
            tunable_id: 1,
            flags: F_NEAR_PRESSURE,
            old: [4096, 131072, 6291456],
            new: [4096, 131072, 7864320],
            aux: [1000, 0, 0, 0],
            ..RawEvent::default()
        };
        for (d, s) in raw.str.iter_mut().zip(b"net/ipv4/tcp_rmem") {
            *d = *s as _;
        }
        raw
    }

    #[test]
    fn parses_a_record() {
        let ev = Event::parse(&raw_bytes(&raw(4096)), 1).expect("valid record");
        assert_eq!(ev.tuner_id, 1);
        assert_eq!(
            ev.ns,
            Ns::Netns {
                cookie: 4096,
                ino: 4026531840
            }
        );
        assert_eq!(ev.new[2], 7864320);
        assert_eq!(ev.text, "net/ipv4/tcp_rmem");
        assert_eq!(ev.flags, F_NEAR_PRESSURE);
    }

    #[test]
    fn global_cookie_and_zero_are_the_initial_namespace() {
        assert_eq!(Event::parse(&raw_bytes(&raw(1)), 1).map(|e| e.ns), Ok(Ns::Global));
        assert_eq!(Event::parse(&raw_bytes(&raw(0)), 1).map(|e| e.ns), Ok(Ns::Global));
    }

    #[test]
    fn rejects_short_records() {
        assert_eq!(Event::parse(&[0u8; 10], 1), Err(EventError::Size(10)));
    }
}

#[cfg(test)]
#[path = "events_prop.rs"]
mod prop_tests;

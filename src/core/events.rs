//! The ring-buffer record shared by every tuner (mirror of `struct bpftune_event` in
//! `bpf/bpftune.h`) and its decoding.

/// Number of values one proposal carries.
pub const MAX_VALUES: usize = 3;
const STR_MAX: usize = 64;
const AUX_MAX: usize = 4;

/// Byte-for-byte mirror of `struct bpftune_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawEvent {
    pub tuner_id: u32,
    pub scenario_id: u32,
    pub netns_cookie: u64,
    pub netns_ino: u32,
    pub pid: i32,
    pub ts_ns: u64,
    pub tunable_id: u32,
    pub flags: u32,
    pub old: [i64; MAX_VALUES],
    pub new: [i64; MAX_VALUES],
    pub aux: [u64; AUX_MAX],
    pub str: [u8; STR_MAX],
}

/// Size of the C struct; checked against the BTF-derived type at build time below.
pub const RAW_EVENT_SIZE: usize = 184;
const _: () = assert!(std::mem::size_of::<RawEvent>() == RAW_EVENT_SIZE);

/// Low-memory flags set by the kernel side.
pub const F_NEAR_PRESSURE: u32 = 0x1;
pub const F_NEAR_EXHAUSTION: u32 = 0x2;

/// A decoded event, owned (ring-buffer memory is read-only and reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tuner_id: u32,
    pub scenario_id: u32,
    pub netns_cookie: u64,
    pub netns_ino: u64,
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
    /// Decodes one ring-buffer record.
    pub fn parse(data: &[u8]) -> Result<Event, EventError> {
        if data.len() < RAW_EVENT_SIZE {
            return Err(EventError::Size(data.len()));
        }
        // SAFETY: `data` holds at least RAW_EVENT_SIZE bytes (checked above), RawEvent is
        // repr(C) plain old data valid for any bit pattern, and read_unaligned copes with
        // the ring buffer's 8-byte alignment not being guaranteed to Rust.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<RawEvent>()) };
        let end = raw.str.iter().position(|&b| b == 0).unwrap_or(STR_MAX);
        Ok(Event {
            tuner_id: raw.tuner_id,
            scenario_id: raw.scenario_id,
            netns_cookie: raw.netns_cookie,
            netns_ino: u64::from(raw.netns_ino),
            pid: raw.pid,
            ts_ns: raw.ts_ns,
            tunable_id: raw.tunable_id,
            flags: raw.flags,
            old: raw.old,
            new: raw.new,
            aux: raw.aux,
            text: String::from_utf8_lossy(&raw.str[..end]).into_owned(),
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

    #[test]
    fn parses_a_record() {
        let mut raw = RawEvent {
            tuner_id: 1,
            scenario_id: 2,
            netns_cookie: 4096,
            netns_ino: 4026531840,
            pid: 42,
            ts_ns: 7,
            tunable_id: 1,
            flags: F_NEAR_PRESSURE,
            old: [4096, 131072, 6291456],
            new: [4096, 131072, 7864320],
            aux: [1000, 0, 0, 0],
            str: [0; STR_MAX],
        };
        raw.str[..17].copy_from_slice(b"net/ipv4/tcp_rmem");
        let ev = Event::parse(&raw_bytes(&raw)).expect("valid record");
        assert_eq!(ev.tuner_id, 1);
        assert_eq!(ev.netns_ino, 4026531840);
        assert_eq!(ev.new[2], 7864320);
        assert_eq!(ev.text, "net/ipv4/tcp_rmem");
        assert_eq!(ev.flags, F_NEAR_PRESSURE);
    }

    #[test]
    fn rejects_short_records() {
        assert_eq!(Event::parse(&[0u8; 10]), Err(EventError::Size(10)));
    }
}

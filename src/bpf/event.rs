//! The ring-buffer record shared by every tuner (`struct bpftune_event` in
//! `bpf/bpftune.h`) and its decoding into [`Event`]. The record type is the one
//! libbpf-cargo generates from the probe object's BTF, so C and Rust cannot drift apart.

#[cfg(test)]
use crate::model::event::F_NEAR_PRESSURE;
use crate::model::event::{Event, Ns};

/// The probe object (`src/bpf/probe.bpf.c`): the `-S` feature probes, and the BTF the
/// event type is generated from.
pub(crate) mod skel {
    #![allow(clippy::all, clippy::pedantic, clippy::restriction, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

use skel::types::bpftune_event as RawEvent;

/// Size of the C struct, from the generated type.
pub const RAW_EVENT_SIZE: usize = std::mem::size_of::<RawEvent>();
// The decoder below relies on this layout: fail the build, not the daemon, if it changes.
const _: () = assert!(RAW_EVENT_SIZE == 184);
const _: () = assert!(std::mem::offset_of!(RawEvent, str) == 120);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("unexpected size event: {0} bytes, expected {RAW_EVENT_SIZE}")]
    Size(usize),
}

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
        let ev = parse(&raw_bytes(&raw(4096)), 1).expect("valid record");
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
        assert_eq!(parse(&raw_bytes(&raw(1)), 1).map(|e| e.ns), Ok(Ns::Global));
        assert_eq!(parse(&raw_bytes(&raw(0)), 1).map(|e| e.ns), Ok(Ns::Global));
    }

    #[test]
    fn rejects_short_records() {
        assert_eq!(parse(&[0u8; 10], 1), Err(EventError::Size(10)));
    }
}

#[cfg(test)]
#[path = "event_prop.rs"]
mod prop_tests;

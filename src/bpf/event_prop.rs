//! Property-based tests of ring-buffer record decoding (issue 13 item 3): any bytes
//! decode or are refused by size without a panic, and a record with any field values
//! (wrong tuner ids, out-of-range scenario and tunable indices) decodes to exactly
//! those values.

use proptest::prelude::*;

use super::*;

fn bytes_of(ev: &RawEvent) -> Vec<u8> {
    // SAFETY: RawEvent is repr(C) plain old data; viewing it as bytes for the test is sound.
    unsafe { std::slice::from_raw_parts((ev as *const RawEvent).cast::<u8>(), RAW_EVENT_SIZE).to_vec() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2 * RAW_EVENT_SIZE), g in any::<u64>()) {
        match parse(&data, g) {
            Ok(ev) => {
                prop_assert!(data.len() >= RAW_EVENT_SIZE);
                prop_assert!(!ev.text.contains('\0'));
                prop_assert!(ev.text.len() <= 3 * (RAW_EVENT_SIZE - 120));
            }
            Err(e) => prop_assert_eq!(e, EventError::Size(data.len())),
        }
    }

    #[test]
    fn fields_decode_to_the_model(
        ids in any::<(u32, u32, u32, u32)>(),
        cookie in prop_oneof![Just(0u64), Just(1u64), any::<u64>()],
        ino in any::<u32>(),
        pid in any::<i32>(),
        ts in any::<u64>(),
        old in any::<[i64; 3]>(),
        new in any::<[i64; 3]>(),
        aux in any::<[u64; 4]>(),
        text in "[ -~]{0,70}",
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let (tuner_id, scenario_id, tunable_id, flags) = ids;
        let mut raw = RawEvent {
            tuner_id, scenario_id, netns_cookie: cookie, netns_ino: ino, pid, ts_ns: ts,
            tunable_id, flags, old, new, aux, ..RawEvent::default()
        };
        let n = text.len().min(raw.str.len() - 1);
        for (d, s) in raw.str.iter_mut().zip(&text.as_bytes()[..n]) {
            *d = *s as _;
        }
        // Extra bytes after the record (a newer kernel side) are ignored.
        let mut data = bytes_of(&raw);
        data.extend_from_slice(&tail);
        let ev = parse(&data, 1).expect("full record");
        prop_assert_eq!(ev.tuner_id, tuner_id);
        prop_assert_eq!(ev.scenario_id, scenario_id);
        prop_assert_eq!(ev.tunable_id, tunable_id);
        prop_assert_eq!(ev.flags, flags);
        prop_assert_eq!(ev.pid, pid);
        prop_assert_eq!(ev.ts_ns, ts);
        prop_assert_eq!(ev.old, old);
        prop_assert_eq!(ev.new, new);
        prop_assert_eq!(ev.aux, aux);
        prop_assert_eq!(ev.text, &text[..n]);
        let want = if cookie == 0 || cookie == 1 { Ns::Global } else { Ns::Netns { cookie, ino: u64::from(ino) } };
        prop_assert_eq!(ev.ns, want);
    }
}

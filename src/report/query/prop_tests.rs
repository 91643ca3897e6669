//! Property-based tests of the query request parser (issue 13 item 3): any bytes a
//! client can send give one reply and never a panic, and every known query is
//! recognised whatever terminator or trailing junk follows it.

use proptest::prelude::*;

use super::protocol::{handle_request, parse_request, Request};
use super::{QueryBackend, StatusRow, TunableRow, TunerRow, QUERIES, REQUEST_MAX};

/// Answers each query with a marker naming it, so a test sees which one was dispatched.
struct Marker;

impl QueryBackend for Marker {
    fn tuners(&self) -> Vec<TunerRow> {
        Vec::new()
    }
    fn tunables(&self) -> Vec<TunableRow> {
        Vec::new()
    }
    fn status(&self) -> Vec<StatusRow> {
        Vec::new()
    }
    fn summary(&self) -> String {
        "<summary>".into()
    }
    fn rollback(&self) -> String {
        "<rollback>".into()
    }
    fn changes_json(&self) -> String {
        "<jchanges>".into()
    }
    fn paths_json(&self) -> String {
        "<jpaths>".into()
    }
    fn advice(&self) -> String {
        "<advice>".into()
    }
    fn advice_json(&self) -> String {
        "<jadvice>".into()
    }
}

fn known_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(QUERIES.iter().map(|&(n, _)| n).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes (up to 3 × the accepted length): no panic, and an accepted
    /// request is non-empty, within REQUEST_MAX, and without trailing whitespace.
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..240)) {
        let reply = handle_request(&raw, &Marker);
        prop_assert!(!reply.is_empty());
        match parse_request(&raw) {
            Err(e) => {
                prop_assert!(e.starts_with("error"), "error reply {e:?}");
                prop_assert_eq!(reply, e);
            }
            Ok(Request::Unknown(req)) => {
                prop_assert!(!req.is_empty() && req.len() <= REQUEST_MAX);
                prop_assert_eq!(req.trim_ascii_end(), req);
                prop_assert!(reply.starts_with("unknown request '"), "reply {reply:?}");
                // Control characters are escaped so a reply cannot carry them raw.
                let shown = reply.lines().next().unwrap_or("");
                prop_assert!(!shown.chars().any(|c| c.is_control()));
            }
            Ok(Request::Known(q)) => {
                prop_assert!(QUERIES.iter().any(|&(n, _)| n == q.name()));
            }
        }
    }

    /// Reference model: a known name, optionally followed by ASCII whitespace and then
    /// a NUL plus anything, is that query.
    #[test]
    fn known_query_with_any_terminator_is_recognised(
        name in known_name(),
        ws in prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'\n', b'\r']), 0..4),
        nul_then in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let mut raw = name.as_bytes().to_vec();
        raw.extend_from_slice(&ws);
        if let Some(rest) = &nul_then {
            raw.push(0);
            raw.extend_from_slice(rest);
        }
        match parse_request(&raw) {
            Ok(Request::Known(q)) => prop_assert_eq!(q.name(), name),
            Ok(Request::Unknown(r)) => prop_assert!(false, "{name:?} parsed as unknown {r:?}"),
            Err(e) => prop_assert!(false, "{name:?} refused: {e}"),
        }
        let reply = handle_request(&raw, &Marker);
        let marker = format!("<{name}>");
        if ["summary", "rollback", "jchanges", "jpaths", "advice", "jadvice"].contains(&name) {
            prop_assert_eq!(reply, marker);
        }
    }

    /// Over-long requests are refused whatever they contain, before any UTF-8 check.
    #[test]
    fn over_long_requests_are_refused(
        body in prop::collection::vec(1u8..=255, REQUEST_MAX + 1..REQUEST_MAX * 4),
    ) {
        prop_assume!(!body.last().is_some_and(|b| b.is_ascii_whitespace()));
        prop_assert_eq!(parse_request(&body).err(), Some(super::ERR_TOO_LONG));
    }
}

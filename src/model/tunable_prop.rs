//! Property-based tests of sysctl text values (issue 13 item 3): any text a /proc/sys
//! file (or a planted state file) holds parses or is refused without a panic, and what
//! bpftune writes parses back to the same value.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(t in any::<String>(), string in any::<bool>(), n in 0u8..=4) {
        if let Ok(v) = SysctlValue::parse(&t, string, n) {
            // Whatever was accepted renders and parses back to itself.
            let back = SysctlValue::parse(&v.to_proc_text(), string, n);
            prop_assert_eq!(back, Ok(v.clone()));
            if let SysctlValue::Ints(ints) = &v {
                prop_assert!(n == 0 || ints.len() == usize::from(n));
            }
        }
    }

    /// Reference model: whitespace-separated decimal integers, any spacing (the kernel
    /// uses tabs), parse to exactly those integers when the count matches.
    #[test]
    fn integers_parse_to_the_model(
        ints in prop::collection::vec(any::<i64>(), 1..=3),
        seps in prop::collection::vec("[ \t]{1,3}", 3),
        trailer in "[ \t\n]{0,3}",
        want_n in 1u8..=3,
    ) {
        let mut text = String::new();
        for (i, x) in ints.iter().enumerate() {
            if i > 0 {
                text += &seps[i - 1];
            }
            text += &x.to_string();
        }
        text += &trailer;
        let got = SysctlValue::parse(&text, false, want_n);
        if ints.len() == usize::from(want_n) {
            prop_assert_eq!(got, Ok(SysctlValue::Ints(ints.clone())));
        } else {
            let is_count_error = matches!(got, Err(ParseError::Count { .. }));
            prop_assert!(is_count_error);
        }
    }

    /// Round trip of what bpftune writes: integers and single-line strings.
    #[test]
    fn written_values_read_back(ints in prop::collection::vec(any::<i64>(), 1..=3), s in "[a-z0-9_ ]{0,30}") {
        let v = SysctlValue::Ints(ints.clone());
        let n = u8::try_from(ints.len()).expect("1..=3");
        prop_assert_eq!(SysctlValue::parse(&v.to_proc_text(), false, n), Ok(v.clone()));
        prop_assert_eq!(SysctlValue::parse(&v.to_string(), false, n), Ok(v));
        let s = SysctlValue::Str(s.trim().to_string());
        prop_assert_eq!(SysctlValue::parse(&s.to_proc_text(), true, 1), Ok(s));
    }

    /// Integers out of i64 range or with junk are refused, not wrapped or truncated.
    #[test]
    fn non_integers_are_refused(x in any::<i64>(), junk in "[a-zA-Z.,x+]{1,4}") {
        let big = format!("{}0", if x < 0 { i64::MIN } else { i64::MAX });
        let is_ni = matches!(SysctlValue::parse(&big, false, 1), Err(ParseError::NotInteger(_)));
        prop_assert!(is_ni);
        let mixed = format!("{x}{junk}");
        prop_assert!(SysctlValue::parse(&mixed, false, 1).is_err(), "{mixed:?} accepted");
    }

    #[test]
    fn path_and_name_round_trip(name in "[a-z0-9_]{1,12}(\\.[a-z0-9_]{1,12}){0,4}") {
        prop_assert_eq!(sysctl_name(&sysctl_path(&name)), name);
    }

    /// Rate arithmetic on any value never panics (no overflow in grow/shrink/limits).
    #[test]
    fn rate_arithmetic_never_panics(r in 0u32..=4, v in any::<i64>(), lim in any::<i64>()) {
        let rate = Rate::from_learning_rate(r).expect("0..=4 valid");
        let _ = rate.grow(v);
        let _ = rate.shrink(v);
        let _ = rate.delta(v);
        let _ = rate.nearly_full(v, lim);
        let _ = rate.nearly_empty(v, lim);
    }
}

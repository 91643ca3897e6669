//! Property-based tests of the /proc parsers (issue 13 item 3): arbitrary text never
//! panics, and generated well-formed files parse to the values a reference model
//! computes from the same numbers.

use proptest::prelude::*;

use super::*;

/// Text made of the tokens these files contain, so the parsers get past their first
/// checks more often than with uniformly random strings.
fn procish() -> impl Strategy<Value = String> {
    let tok = prop::sample::select(vec![
        "Node ",
        "0, ",
        "zone ",
        "Normal",
        "DMA32",
        "managed",
        "high",
        "Tcp:",
        "TcpExt:",
        "cpu",
        "cpu0",
        "some ",
        "avg10=",
        "TCP:",
        "mem",
        "inuse",
        " ",
        "\t",
        "\n",
        "-1",
        "18446744073709551615",
        "99999999999999999999",
        "ffffffff",
        "NaN",
        "inf",
        "é",
        "\0",
    ]);
    prop::collection::vec(prop_oneof![tok.prop_map(str::to_string), any::<String>()], 0..60)
        .prop_map(|v| v.concat())
}

fn all_parsers(t: &str) {
    let _ = free_buffer_pages(t);
    let _ = snmp_counter(t, Some("Tcp:"), "mem");
    let _ = snmp_counter(t, None, "managed");
    let _ = snmp6_counter(t, "mem");
    let _ = sockstat_field(t, "TCP:", "mem");
    let _ = softnet_stat(t);
    let _ = schedstat_wait_percent(t);
    let _ = psi_some_avg10(t);
    let _ = route_onlink_prefixes(t, "eth0");
    let _ = if_inet6_prefixes(t, "eth0");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(t in any::<String>()) {
        all_parsers(&t);
    }

    #[test]
    fn proc_like_text_never_panics(t in procish()) {
        all_parsers(&t);
        if let Some(p) = psi_some_avg10(&t) {
            prop_assert!(p.is_finite() && p >= 0.0, "psi {p}");
        }
        if let Some(p) = schedstat_wait_percent(&t) {
            prop_assert!(p.is_finite() && p >= 0.0, "schedstat {p}");
        }
    }

    /// zoneinfo: Σ(managed − high) over Normal zones, else over DMA32 zones; only the
    /// first `high` of a zone counts (later ones belong to per-CPU pagesets).
    #[test]
    fn zoneinfo_matches_model(
        zones in prop::collection::vec(
            (prop::sample::select(vec!["DMA", "DMA32", "Normal", "Movable"]), any::<u64>(), any::<u64>(), any::<u64>()),
            0..6),
    ) {
        let mut text = String::new();
        for (i, (name, managed, high, pcp_high)) in zones.iter().enumerate() {
            text += &format!("Node {i}, zone {name:>8}\n  pages free     1\n        min      1\n");
            text += &format!("        high     {high}\n        managed  {managed}\n");
            text += &format!("  pagesets\n    cpu: 0\n              high:  {pcp_high}\n");
        }
        let sum = |n: &str| zones.iter().filter(|z| z.0 == n)
            .fold(0u64, |a, z| a.saturating_add(z.1.saturating_sub(z.2)));
        let want = match sum("Normal") { 0 => sum("DMA32"), n => n };
        prop_assert_eq!(free_buffer_pages(&text), want);
    }

    /// snmp/netstat: the value under a name in its own prefix's pair of lines; negative
    /// values (the kernel prints some counters signed) clamp to 0.
    #[test]
    fn snmp_matches_model(
        blocks in prop::collection::vec(
            (prop::sample::select(vec!["Ip:", "Tcp:", "TcpExt:", "Udp:"]),
             prop::collection::vec(("[A-Z][a-zA-Z]{0,8}", any::<i64>()), 1..8)),
            1..5),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut text = String::new();
        for (p, kv) in &blocks {
            text += &format!("{p} {}\n", kv.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(" "));
            text += &format!("{p} {}\n", kv.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>().join(" "));
        }
        let (prefix, kv) = &blocks[pick.index(blocks.len())];
        let name = &kv[pick.index(kv.len())].0;
        let want = blocks.iter().filter(|(p, _)| p == prefix)
            .find_map(|(_, kv)| kv.iter().find(|(k, _)| k == name))
            .map(|(_, v)| (*v).max(0) as u64);
        prop_assert_eq!(snmp_counter(&text, Some(prefix), name), want);
    }

    #[test]
    fn sockstat_matches_model(inuse in any::<i64>(), mem in any::<i64>(), udp_mem in any::<i64>()) {
        let text = format!("sockets: used 5\nTCP: inuse {inuse} orphan 0 tw 0 alloc 7 mem {mem}\nUDP: inuse 1 mem {udp_mem}\n");
        prop_assert_eq!(sockstat_field(&text, "TCP:", "mem"), Some(mem));
        prop_assert_eq!(sockstat_field(&text, "TCP:", "inuse"), Some(inuse));
        prop_assert_eq!(sockstat_field(&text, "UDP:", "mem"), Some(udp_mem));
        prop_assert_eq!(sockstat_field(&text, "TCP6:", "mem"), None);
    }

    #[test]
    fn softnet_matches_model(rows in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..16)) {
        let text: String = rows.iter()
            .map(|(p, d, s)| format!("{p:08x} {d:08x} {s:08x} 00000000 00000000 00000000\n"))
            .collect();
        let want: Vec<SoftnetRow> = rows.iter()
            .map(|&(processed, dropped, time_squeeze)| SoftnetRow { processed, dropped, time_squeeze })
            .collect();
        prop_assert_eq!(softnet_stat(&text), want);
    }

    #[test]
    fn schedstat_matches_model(cpus in prop::collection::vec((0u64..1 << 50, 0u64..1 << 50), 1..8)) {
        let mut text = String::from("version 15\ntimestamp 4295\n");
        for (i, (run, wait)) in cpus.iter().enumerate() {
            text += &format!("cpu{i} 0 0 0 0 0 0 {run} {wait} 9\ndomain0 3 1 2 3\n");
        }
        let run: u64 = cpus.iter().map(|c| c.0).sum();
        let wait: u64 = cpus.iter().map(|c| c.1).sum();
        let want = (run > 0).then(|| wait as f64 * 100.0 / run as f64);
        prop_assert_eq!(schedstat_wait_percent(&text), want);
    }

    #[test]
    fn psi_matches_model(avg10 in 0u32..10_000, avg60 in 0u32..10_000) {
        let a = format!("{}.{:02}", avg10 / 100, avg10 % 100);
        let text = format!("some avg10={a} avg60={}.00 avg300=0.00 total=1\nfull avg10=9.99 avg60=0.00 avg300=0.00 total=0\n", avg60 / 100);
        prop_assert_eq!(psi_some_avg10(&text), Some(f64::from(avg10) / 100.0));
    }
}

/// Regression: `f64::from_str` accepts "NaN" and "inf"; a PSI line carrying them used to
/// be returned as a pressure no threshold comparison can judge.
#[test]
fn psi_non_finite_values_are_refused() {
    for v in ["NaN", "inf", "-inf", "infinity", "-1.00"] {
        let text = format!("some avg10={v} avg60=0.00 avg300=0.00 total=1\n");
        assert_eq!(psi_some_avg10(&text), None, "{v}");
    }
}

/// Regression: Σ(managed − high) wrapped around (release) or panicked (debug) on a
/// zoneinfo whose managed counts add past u64::MAX.
#[test]
fn zoneinfo_sum_saturates() {
    let zone = |i: u32| {
        format!(
            "Node {i}, zone   Normal\n        high     0\n        managed  {}\n",
            u64::MAX - 1
        )
    };
    let text = format!("{}{}", zone(0), zone(1));
    assert_eq!(free_buffer_pages(&text), u64::MAX);
}

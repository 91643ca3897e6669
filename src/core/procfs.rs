//! Pure parsers for the /proc files tuners consult, so they are tested on fixtures.

/// nr_free_buffer_pages estimate: Σ(managed − high) over zones named "Normal", or over
/// "DMA32" zones when there is no Normal zone (machines under 4 GiB).
pub fn free_buffer_pages(zoneinfo: &str) -> u64 {
    let mut by_zone: Vec<(String, u64, u64)> = Vec::new();
    for line in zoneinfo.lines() {
        let t = line.trim();
        if let Some(rest) = line.strip_prefix("Node ") {
            if let Some(idx) = rest.find("zone") {
                let zone = rest[idx + 4..].trim().to_string();
                by_zone.push((zone, 0, 0));
            }
            continue;
        }
        let mut it = t.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Some(cur) = by_zone.last_mut() else { continue };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "managed" => cur.1 = v,
            "high" if cur.2 == 0 => cur.2 = v,
            _ => {}
        }
    }
    let sum = |name: &str| -> u64 {
        by_zone
            .iter()
            .filter(|(z, _, _)| z == name)
            .map(|(_, managed, high)| managed.saturating_sub(*high))
            .sum()
    };
    match sum("Normal") {
        0 => sum("DMA32"),
        n => n,
    }
}

/// Looks up `name` in a /proc/net/snmp or /proc/net/netstat style file: pairs of lines
/// "Prefix: Name1 Name2 ..." / "Prefix: v1 v2 ...". `prefix` ("Tcp:", "TcpExt:")
/// restricts the search; `None` searches all.
pub fn snmp_counter(text: &str, prefix: Option<&str>, name: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let mut n = names.split_whitespace();
        let mut v = values.split_whitespace();
        let (Some(pn), Some(pv)) = (n.next(), v.next()) else {
            continue;
        };
        if pn != pv || prefix.is_some_and(|p| p != pn) {
            continue;
        }
        for (k, val) in n.zip(v) {
            if k == name {
                return val.parse::<i64>().ok().map(|x| x.max(0) as u64);
            }
        }
    }
    None
}

/// A counter of /proc/net/snmp6 ("Name value" per line, e.g. "Udp6InDatagrams  42").
/// Whole-name match (C bpftune matched substrings, so "Ip6InReceives" also found
/// "Ip6InReceivesX").
pub fn snmp6_counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == name)
            .then(|| it.next()?.parse::<u64>().ok())
            .flatten()
    })
}

/// A field of one protocol's line in /proc/net/sockstat, e.g. ("TCP:", "mem") for the
/// pages TCP uses in "TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 3".
pub fn sockstat_field(text: &str, proto: &str, field: &str) -> Option<i64> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(proto))?;
    let mut it = line.split_whitespace().skip(1);
    while let Some(k) = it.next() {
        if k == field {
            return it.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONEINFO: &str = "Node 0, zone      DMA\n  pages free     3840\n        min      12\n        low      15\n        high     18\n        spanned  4095\n        present  3998\n        managed  3840\nNode 0, zone    DMA32\n  pages free     400000\n        high     1000\n        managed  700000\nNode 0, zone   Normal\n  pages free     5000000\n        min      10000\n        low      12000\n        high     14000\n        managed  5500000\n      nr_free_pages 5000000\n";

    #[test]
    fn zoneinfo_normal_zone() {
        assert_eq!(free_buffer_pages(ZONEINFO), 5_500_000 - 14_000);
    }

    #[test]
    fn zoneinfo_dma32_fallback() {
        let small = ZONEINFO.split("Node 0, zone   Normal").next().unwrap_or_default();
        assert_eq!(free_buffer_pages(small), 700_000 - 1000);
        assert_eq!(free_buffer_pages(""), 0);
    }

    #[test]
    fn snmp_lookup() {
        let text = "Tcp: RtoAlgorithm PassiveOpens ActiveOpens\nTcp: 1 17 3\nUdp: InDatagrams RcvbufErrors\nUdp: 100 5\nUdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 0\n";
        assert_eq!(snmp_counter(text, Some("Tcp:"), "PassiveOpens"), Some(17));
        assert_eq!(snmp_counter(text, Some("Udp:"), "RcvbufErrors"), Some(5));
        assert_eq!(snmp_counter(text, Some("UdpLite:"), "InDatagrams"), Some(0));
        assert_eq!(snmp_counter(text, None, "ActiveOpens"), Some(3));
        assert_eq!(snmp_counter(text, None, "Nope"), None);
    }

    #[test]
    fn snmp6_lookup() {
        let text = "Ip6InReceives                   \t17\nIp6ReasmReqds                   \t82\nIp6ReasmFails                   \t3\nUdp6InDatagrams                 \t5000\nUdp6RcvbufErrors                \t12\n";
        assert_eq!(snmp6_counter(text, "Udp6InDatagrams"), Some(5000));
        assert_eq!(snmp6_counter(text, "Udp6RcvbufErrors"), Some(12));
        assert_eq!(snmp6_counter(text, "Ip6ReasmFails"), Some(3));
        assert_eq!(snmp6_counter(text, "Ip6Reasm"), None);
        assert_eq!(snmp6_counter("", "Udp6InDatagrams"), None);
    }

    #[test]
    fn sockstat_lookup() {
        let text = "sockets: used 5\nTCP: inuse 5 orphan 0 tw 0 alloc 7 mem 3\nUDP: inuse 1 mem 2\nUDPLITE: inuse 0\n";
        assert_eq!(sockstat_field(text, "TCP:", "mem"), Some(3));
        assert_eq!(sockstat_field(text, "UDP:", "mem"), Some(2));
        assert_eq!(sockstat_field(text, "UDPLITE:", "mem"), None);
        assert_eq!(sockstat_field("UDP: inuse 1 mem 2\n", "TCP:", "mem"), None);
    }
}

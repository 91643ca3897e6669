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
            // Saturating: a corrupt or hostile file must not wrap the estimate around.
            .fold(0u64, |acc, (_, managed, high)| {
                acc.saturating_add(managed.saturating_sub(*high))
            })
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

/// One CPU's line of /proc/net/softnet_stat (hexadecimal columns: processed, dropped,
/// time_squeeze, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftnetRow {
    pub processed: u64,
    /// Packets dropped because the CPU's input backlog was full (netdev_max_backlog).
    pub dropped: u64,
    /// NAPI polls that ended with work left (netdev_budget or netdev_budget_usecs used up).
    pub time_squeeze: u64,
}

/// Parses /proc/net/softnet_stat: one row per online CPU; malformed lines are skipped.
pub fn softnet_stat(text: &str) -> Vec<SoftnetRow> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|t| u64::from_str_radix(t, 16).ok());
            Some(SoftnetRow {
                processed: it.next()??,
                dropped: it.next()??,
                time_squeeze: it.next()??,
            })
        })
        .collect()
}

/// Scheduler waiting time as a percentage of running time over all CPUs, from
/// /proc/schedstat (C bpftune: Σ run_delay · 100 / Σ rq_cpu_time, fields 8 and 7 of every
/// `cpuN` line). `None` without the file's data (CONFIG_SCHEDSTATS off) or running time.
pub fn schedstat_wait_percent(text: &str) -> Option<f64> {
    let (mut run, mut wait) = (0u64, 0u64);
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some(name) = it.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let f: Vec<u64> = it.filter_map(|t| t.parse().ok()).collect();
        if f.len() >= 8 {
            run = run.saturating_add(f[6]);
            wait = wait.saturating_add(f[7]);
        }
    }
    (run > 0).then(|| wait as f64 * 100.0 / run as f64)
}

/// `some avg10` of /proc/pressure/cpu: the share of the last 10 s in which runnable
/// tasks waited for a CPU, in percent (PSI; the stand-in for /proc/schedstat on kernels
/// built without CONFIG_SCHEDSTATS).
pub fn psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))
        .and_then(|v| v.parse::<f64>().ok())
        // f64 parsing accepts "NaN" and "inf", which no threshold comparison can judge.
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// Prefix lengths of the on-link (gateway-less) IPv4 routes through device `dev`, from
/// /proc/net/route ("Iface Destination Gateway Flags RefCnt Use Metric Mask ...", hex in
/// network byte order): the subnets whose hosts can become neighbours on it.
pub fn route_onlink_prefixes(text: &str, dev: &str) -> Vec<u8> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[0] != dev || u32::from_str_radix(f[2], 16).ok()? != 0 {
                return None;
            }
            let mask = u32::from_str_radix(f[7], 16).ok()?;
            u8::try_from(mask.count_ones()).ok()
        })
        .collect()
}

/// Prefix lengths of the IPv6 addresses of device `dev`, from /proc/net/if_inet6
/// ("address ifindex prefixlen scope flags name", hex numbers).
pub fn if_inet6_prefixes(text: &str, dev: &str) -> Vec<u8> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[5] != dev {
                return None;
            }
            u8::from_str_radix(f[2], 16).ok()
        })
        .collect()
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

    #[test]
    fn softnet_rows() {
        let text =
            "0039b4de 00000000 00000004 00000000 00000000\n0036e525 00000598 00000000 00000000\nbogus\n";
        let rows = softnet_stat(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].time_squeeze, 4);
        assert_eq!(rows[1].dropped, 1432);
        assert_eq!(rows[0].processed, 0x39b4de);
    }

    #[test]
    fn scheduler_wait() {
        let text = "version 15\ntimestamp 4295\ncpu0 0 0 10 2 5 3 1000 2500 7\ndomain0 3 1 2 3\ncpu1 0 0 1 1 1 1 1000 500 2\n";
        assert_eq!(schedstat_wait_percent(text), Some(150.0));
        assert_eq!(schedstat_wait_percent("version 15\n"), None);
        let psi = "some avg10=72.66 avg60=41.49 avg300=39.07 total=267394229\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(psi_some_avg10(psi), Some(72.66));
        assert_eq!(psi_some_avg10("full avg10=1.0\n"), None);
    }

    #[test]
    fn onlink_prefixes() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
veth1\t0000100A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
eth0\t0100000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
        assert_eq!(route_onlink_prefixes(route, "eth0"), vec![24, 32]);
        assert_eq!(route_onlink_prefixes(route, "veth1"), vec![16]);
        assert!(route_onlink_prefixes(route, "lo").is_empty());
        let inet6 = "fe80000000000000a8c1abfffe123456 05 40 20 80    veth1\n20010db8000000000000000000000001 05 70 00 80    veth1\n00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(if_inet6_prefixes(inet6, "veth1"), vec![64, 112]);
        assert_eq!(if_inet6_prefixes(inet6, "lo"), vec![128]);
    }
}

#[cfg(test)]
#[path = "procfs_prop.rs"]
mod prop_tests;

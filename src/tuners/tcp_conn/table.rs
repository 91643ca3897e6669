//! The per-path table of the tcp_conn tuner: a bounded (LRU) map from path to learning
//! state, and its renderings (summary lines in C bpftune's words, JSON for `jpaths`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use serde_json::{json, Value};

use super::policy::{AlgStats, PathStats, ALGS, ALG_COUNT};

/// A path: (netns, gateway) for routed destinations, (netns, remote address) for on-link
/// ones. `netns_cookie` is the namespace's real cookie (also for the initial one), as in
/// the kernel map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub netns_cookie: u64,
    /// IPv6, or IPv4 mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    pub via_gateway: bool,
}

impl PathKey {
    /// The address as shown to people: IPv4 for mapped addresses.
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PathEntry {
    pub stats: PathStats,
    /// Whether the namespace is the initial one (for display).
    pub global: bool,
    /// Loss-triggered switches to BBR seen on this path (observe mode: proposed).
    pub loss_switches: u64,
    /// Observe mode: the path's choice was proposed (said once per path).
    pub choice_proposed: bool,
    /// Logical time of the last update (LRU order).
    last_used: u64,
}

/// Bounded map of paths; the least recently updated path is evicted when full (the
/// kernel's choice map is an LRU of the same size).
#[derive(Debug)]
pub struct PathTable {
    max: usize,
    clock: u64,
    paths: HashMap<PathKey, PathEntry>,
}

impl PathTable {
    pub fn new(max: usize) -> PathTable {
        PathTable {
            max: max.max(1),
            clock: 0,
            paths: HashMap::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.paths.len()
    }

    /// The entry of `key`, created if new. Returns the entry and the key evicted to
    /// make room, if any.
    pub fn touch(&mut self, key: PathKey, global: bool) -> (&mut PathEntry, Option<PathKey>) {
        self.clock += 1;
        let mut evicted = None;
        if !self.paths.contains_key(&key) && self.paths.len() >= self.max {
            // O(n) only when a new path arrives at a full table.
            evicted = self
                .paths
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            if let Some(k) = evicted {
                self.paths.remove(&k);
            }
        }
        let clock = self.clock;
        let e = self.paths.entry(key).or_insert_with(|| PathEntry {
            stats: PathStats::default(),
            global,
            loss_switches: 0,
            choice_proposed: false,
            last_used: clock,
        });
        e.last_used = clock;
        (e, evicted)
    }

    /// Drops every path of the namespace with `cookie` (it vanished) and returns their
    /// keys. Without this, each namespace that ever carried traffic would keep its paths
    /// until 1024 others pushed them out: dead weight in the table and the `jpaths` query.
    pub fn forget_netns(&mut self, cookie: u64) -> Vec<PathKey> {
        let gone: Vec<PathKey> = self
            .paths
            .keys()
            .filter(|k| k.netns_cookie == cookie)
            .copied()
            .collect();
        for k in &gone {
            self.paths.remove(k);
        }
        gone
    }

    /// Paths in a stable order (namespace, address).
    fn sorted(&self) -> Vec<(&PathKey, &PathEntry)> {
        let mut v: Vec<_> = self.paths.iter().collect();
        v.sort_by_key(|(k, _)| **k);
        v
    }

    /// C bpftune's per-host table (printed at debug level), one row per path and
    /// algorithm, with the namespace cookie and path kind appended.
    pub fn debug_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.paths.is_empty() {
            return out;
        }
        out.push(format!(
            "# Summary: tcp_conn_tuner: {:>48} {:>8} {:>20} {:>8} {:>8} {:>8} {:>8} {:>20} {}",
            "IPAddress", "CongAlg", "Metric", "Count", "Greedy", "MinRtt", "MaxDlvr", "Netns", "Path"
        ));
        for (k, e) in self.sorted() {
            for (i, a) in e.stats.algs.iter().enumerate() {
                out.push(format!(
                    "# Summary: tcp_conn_tuner: {:>48} {:>8} {:>20} {:>8} {:>8} {:>8} {:>8} {:>20} {}",
                    k.ip().to_string(),
                    ALGS[i],
                    a.metric,
                    a.count,
                    a.greedy,
                    a.min_rtt_us,
                    a.max_rate,
                    if e.global {
                        "global".to_string()
                    } else {
                        k.netns_cookie.to_string()
                    },
                    if k.via_gateway { "gateway" } else { "on-link" }
                ));
            }
        }
        out
    }

    /// How many paths are tracked, of which how many are gateways.
    pub fn count_line(&self) -> String {
        let gw = self.paths.keys().filter(|k| k.via_gateway).count();
        format!(
            "# Summary: tcp_conn_tuner: tracking {} path(s) ({} on-link peer(s), {} gateway(s)); at most {}",
            self.paths.len(),
            self.paths.len() - gw,
            gw,
            self.max
        )
    }

    /// The table as JSON (`jpaths`).
    pub fn json(&self, available: &[usize]) -> Value {
        let alg_json = |a: &AlgStats| {
            json!({
                "metric": a.metric,
                "count": a.count,
                "greedy": a.greedy,
                "min_rtt_us": a.min_rtt_us,
                "max_rate_bytes_per_s": a.max_rate,
            })
        };
        let paths: Vec<Value> = self
            .sorted()
            .into_iter()
            .map(|(k, e)| {
                let algs: serde_json::Map<String, Value> = (0..ALG_COUNT)
                    .map(|i| (ALGS[i].to_string(), alg_json(&e.stats.algs[i])))
                    .collect();
                let greedy: Vec<&str> = if e.stats.ready() {
                    e.stats.greedy_set(available).iter().map(|&i| ALGS[i]).collect()
                } else {
                    Vec::new()
                };
                json!({
                    "netns_cookie": k.netns_cookie,
                    "global_netns": e.global,
                    "address": k.ip().to_string(),
                    "kind": if k.via_gateway { "gateway" } else { "on-link" },
                    "connections": e.stats.instances,
                    "min_rtt_us": e.stats.min_rtt_us,
                    "max_rate_bytes_per_s": e.stats.max_rate,
                    "loss_switches": e.loss_switches,
                    "greedy": greedy,
                    "algorithms": algs,
                })
            })
            .collect();
        json!({
            "paths_tracked": self.paths.len(),
            "max_paths": self.max,
            "paths": paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuners::tcp_conn::policy::Observation;

    fn key(last: u8, cookie: u64) -> PathKey {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 201, 0, last]);
        PathKey {
            netns_cookie: cookie,
            addr,
            via_gateway: false,
        }
    }

    #[test]
    fn on_link_peers_are_paths_of_their_own_and_the_table_is_bounded() {
        let mut t = PathTable::new(2);
        t.touch(key(1, 7), false);
        t.touch(key(2, 7), false);
        // Same address in another namespace: another path.
        let (_, ev) = t.touch(key(1, 7), false);
        assert_eq!(ev, None);
        let (_, ev) = t.touch(key(1, 8), false);
        assert_eq!(ev, Some(key(2, 7)), "least recently used goes");
        assert_eq!(t.len(), 2);
        assert!(t
            .count_line()
            .contains("tracking 2 path(s) (2 on-link peer(s), 0 gateway(s)); at most 2"));
        assert_eq!(key(2, 7).ip().to_string(), "10.201.0.2");
    }

    #[test]
    fn forgetting_a_namespace_drops_its_paths_only() {
        let mut t = PathTable::new(16);
        t.touch(key(1, 7), false);
        t.touch(key(2, 7), false);
        t.touch(key(1, 8), false);
        let mut gone = t.forget_netns(7);
        gone.sort();
        assert_eq!(gone, vec![key(1, 7), key(2, 7)]);
        assert_eq!(t.len(), 1);
        assert!(
            t.paths.contains_key(&key(1, 8)),
            "the other namespace's path stays"
        );
        assert!(t.forget_netns(7).is_empty(), "forgetting twice is harmless");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn renders_rows_and_json() {
        let mut t = PathTable::new(8);
        let (e, _) = t.touch(key(2, 9), false);
        for _ in 0..4 {
            e.stats.observe(
                Observation {
                    alg: Some(1),
                    min_rtt_us: 40_000,
                    rate: 1000,
                },
                2,
                &[0, 1],
            );
        }
        let lines = t.debug_lines();
        assert_eq!(lines.len(), 1 + ALG_COUNT);
        assert!(lines[0].contains("IPAddress") && lines[0].contains("MaxDlvr"));
        assert!(
            lines[2].contains("10.201.0.2") && lines[2].contains(" bbr ") && lines[2].contains("on-link")
        );
        let j = t.json(&[0, 1]);
        assert_eq!(j["paths_tracked"], 1);
        assert_eq!(j["paths"][0]["address"], "10.201.0.2");
        assert_eq!(j["paths"][0]["connections"], 4);
        assert_eq!(j["paths"][0]["algorithms"]["bbr"]["count"], 4);
        // cubic untried (value 0) ties with bbr's perfect record.
        assert_eq!(j["paths"][0]["greedy"], json!(["cubic", "bbr"]));
    }
}

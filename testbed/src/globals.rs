//! Global (init_net) sysctls a daemon under test or measurement may leave changed: the
//! values before it started, what its change records say it wrote, and putting back
//! what still holds its value (a safety net behind `-R`; values other processes set
//! are never touched).

use std::collections::BTreeMap;

/// Global (init_net) sysctls a tuner may touch; snapshotted before a daemon with
/// [`crate::daemon::DaemonConfig::restore_globals`] starts.
pub const GLOBAL_SYSCTLS: &[&str] = &[
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_moderate_rcvbuf",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_no_metrics_save",
    "net.ipv4.tcp_no_ssthresh_metrics_save",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.ipfrag_high_thresh",
    "net.ipv4.ipfrag_low_thresh",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.rmem_default",
    "net.core.wmem_default",
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.core.high_order_alloc_disable",
    "net.core.somaxconn",
    "net.ipv4.neigh.default.gc_thresh1",
    "net.ipv4.neigh.default.gc_thresh2",
    "net.ipv4.neigh.default.gc_thresh3",
    "net.ipv6.neigh.default.gc_thresh1",
    "net.ipv6.neigh.default.gc_thresh2",
    "net.ipv6.neigh.default.gc_thresh3",
];

/// The readable [`GLOBAL_SYSCTLS`] now, whitespace-normalised.
pub fn snapshot() -> BTreeMap<String, String> {
    GLOBAL_SYSCTLS
        .iter()
        .filter_map(|k| read_global(k).map(|v| (k.to_string(), v)))
        .collect()
}

/// From change records: {sysctl: (value before the first write, last value written)}
/// of the applied global writes to sysctls in `snap` (the values before start).
pub fn global_writes(
    mut recs: Vec<serde_json::Value>,
    snap: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    recs.sort_by_key(|c| c["write_ts_ns"].as_u64().unwrap_or(0));
    for c in recs {
        let Some(name) = c["tunable"].as_str() else {
            continue;
        };
        if c["global"] != true || c["applied"] != true {
            continue;
        }
        let Some(before) = snap.get(name) else { continue };
        let Some(new) = value_str(&c["new"]) else { continue };
        let old = out
            .get(name)
            .map(|(o, _)| o.clone())
            .or_else(|| value_str(&c["old"]))
            .unwrap_or_else(|| before.clone());
        out.insert(name.to_string(), (old, new));
    }
    out
}

/// Puts back what [`global_writes`] found, if the value is still the one daemon `pid`
/// wrote; returns (name, value left, value restored) of each.
pub fn restore(pid: u32, writes: BTreeMap<String, (String, String)>) -> Vec<(String, String, String)> {
    let mut restored = Vec::new();
    for (name, (old, new)) in writes {
        if read_global(&name).as_deref() != Some(new.as_str()) || old == new {
            continue;
        }
        eprintln!("bpftune-testbed: WARNING: bpftune (pid {pid}) left global {name} = {new:?} (was {old:?}); restoring");
        match crate::sysctl::write(&name, &old) {
            Ok(()) => restored.push((name, new, old)),
            Err(e) => eprintln!("bpftune-testbed: cannot restore {name}: {e:#}"),
        }
    }
    restored
}

/// A sysctl value from a change record (`[4096, 131072, 6291456]` or a string) as
/// /proc/sys prints it, whitespace-normalised.
fn value_str(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Array(a) => Some(a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        _ => None,
    }
}

/// A global sysctl, whitespace-normalised; None if unreadable.
pub fn read_global(key: &str) -> Option<String> {
    crate::sysctl::read(key)
        .ok()
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn change_values_as_proc_prints_them() {
        assert_eq!(
            value_str(&json!([4096, 131072, 6291456])).as_deref(),
            Some("4096 131072 6291456")
        );
        assert_eq!(value_str(&json!(1)).as_deref(), Some("1"));
        assert_eq!(value_str(&json!("cubic  reno")).as_deref(), Some("cubic reno"));
        assert_eq!(value_str(&json!(null)), None);
    }

    #[test]
    fn global_writes_keep_the_first_old_and_the_last_new_value() {
        let snap: BTreeMap<String, String> = [("net.ipv4.tcp_mem", "1 2 3"), ("net.core.rmem_max", "212992")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let rec = |t: u64, name: &str, global: bool, applied: bool, old: Value, new: Value| json!({"tunable": name, "global": global, "applied": applied, "old": old, "new": new, "write_ts_ns": t});
        let recs = vec![
            rec(
                30,
                "net.ipv4.tcp_mem",
                true,
                true,
                json!([1, 2, 4]),
                json!([1, 2, 5]),
            ),
            rec(
                10,
                "net.ipv4.tcp_mem",
                true,
                true,
                json!([1, 2, 3]),
                json!([1, 2, 4]),
            ),
            rec(
                20,
                "net.ipv4.tcp_rmem",
                false,
                true,
                json!([1, 2, 3]),
                json!([1, 2, 9]),
            ),
            rec(25, "net.core.rmem_max", true, false, json!(212992), json!(425984)),
            rec(
                26,
                "net.ipv4.udp_mem",
                true,
                true,
                json!([1, 1, 1]),
                json!([2, 2, 2]),
            ),
        ];
        let w = global_writes(recs, &snap);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w["net.ipv4.tcp_mem"], ("1 2 3".to_string(), "1 2 5".to_string()));
    }
}

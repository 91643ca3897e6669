//! Global (init_net) sysctls a daemon under test or measurement may leave changed: which
//! ones are the daemon's (its `jtunables` query), what its change records say it wrote,
//! and putting back what still holds its value (a safety net behind `-R`; values other
//! processes set are never touched).
//!
//! The sysctls are the daemon's own list, not one kept here: a hand-kept copy drifted
//! (it lacked `net.core.flow_limit_cpu_bitmap` and `net.ipv6.ip6frag_*`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};

/// The sysctls in a `jtunables` reply (`{tuner: {tunable: {"type", "num_values"}}}`):
/// every tunable with values (`num_values` 0 marks a pseudo-tunable, not a sysctl).
pub fn sysctl_tunables(jtunables: &str) -> Result<BTreeSet<String>> {
    let v: serde_json::Value = serde_json::from_str(jtunables)
        .with_context(|| format!("bpftune -q jtunables: not JSON: {jtunables:.300}"))?;
    let tuners = v
        .as_object()
        .with_context(|| format!("bpftune -q jtunables: not an object: {jtunables:.300}"))?;
    Ok(tuners
        .values()
        .filter_map(|t| t.as_object())
        .flat_map(|t| t.iter())
        .filter(|(_, d)| d["num_values"].as_u64().unwrap_or(0) > 0)
        .map(|(name, _)| name.clone())
        .collect())
}

/// From change records: {sysctl: (value before the first write, last value written)}
/// of the applied global writes to the daemon's sysctls `names` ([`sysctl_tunables`]).
/// A sysctl whose first record has no value before is left out: there is nothing known
/// to put back.
pub fn global_writes(
    mut recs: Vec<serde_json::Value>,
    names: &BTreeSet<String>,
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
        if !names.contains(name) {
            continue;
        }
        let Some(new) = value_str(&c["new"]) else { continue };
        let Some(old) = out
            .get(name)
            .map(|(o, _)| o.clone())
            .or_else(|| value_str(&c["old"]))
        else {
            continue;
        };
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
        let names: BTreeSet<String> = ["net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.core.rmem_max"]
            .iter()
            .map(|k| k.to_string())
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
        let w = global_writes(recs, &names);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w["net.ipv4.tcp_mem"], ("1 2 3".to_string(), "1 2 5".to_string()));
    }

    #[test]
    fn the_sysctls_are_the_jtunables_with_values() {
        let reply = r#"{
	"tcp_buffer": {
		"net.ipv4.tcp_rmem": {"type":"integer","num_values":3},
		"tcp_buffer_pressure": {"type":"integer","num_values":0}
	},
	"net_buffer": {
		"net.core.flow_limit_cpu_bitmap": {"type":"string","num_values":1}
	}
}
"#;
        let names = sysctl_tunables(reply).expect("parse");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["net.core.flow_limit_cpu_bitmap", "net.ipv4.tcp_rmem"]
        );
        assert!(sysctl_tunables("[1]").is_err());
        assert!(sysctl_tunables("bpftune: is bpftune running?").is_err());
    }
}

//! `advice` and `jadvice`: the values bpftune set (or, in observe mode, would set) as
//! sysctl.d fragments, one per namespace, and the same as JSON.

use std::fmt::Write as _;

use crate::model::tunable::SysctlValue;
use crate::record::ledger::{AdviceView, Ledger};

/// Advice entries grouped by namespace: the initial namespace first, then by cookie.
fn advice_by_ns(l: &Ledger) -> Vec<Vec<AdviceView<'_>>> {
    let mut groups: std::collections::BTreeMap<(bool, u64), Vec<AdviceView<'_>>> =
        std::collections::BTreeMap::new();
    for a in l.advice() {
        groups.entry((!a.global, a.cookie)).or_default().push(a);
    }
    groups.into_values().collect()
}

/// How to apply a namespace's fragment saved as FILE.
fn apply_hint(a: &AdviceView<'_>) -> String {
    match a.netns {
        _ if a.global => "save as /etc/sysctl.d/90-bpftune.conf and run: sysctl -p /etc/sysctl.d/90-bpftune.conf".to_string(),
        Some(name) => format!("applies inside that namespace only: save as FILE and run: ip netns exec {name} sysctl -p FILE"),
        None => "unnamed namespace: applies inside it only; save as FILE and run inside it (e.g. nsenter --net=/proc/PID/ns/net sysctl -p FILE)".to_string(),
    }
}

fn tunable_name(l: &Ledger, a: &AdviceView<'_>) -> Option<&'static str> {
    l.tuners
        .get(a.tuner)
        .and_then(|t| t.tunables.get(a.tunable))
        .map(|d| d.name)
}

/// `advice`: a ready-to-use sysctl.d fragment per namespace (`key = value` lines, each
/// preceded by its reasons as `#` comments): the values bpftune would set in observe
/// mode, else the values it set (to make them persistent).
pub fn advice(l: &Ledger) -> String {
    let mut s = if l.observe() {
        String::from("# bpftune advice (observe mode): values bpftune would set; NOT applied\n")
    } else {
        String::from(
            "# bpftune advice: values bpftune has set; make them persistent with these sysctl.d fragments\n",
        )
    };
    let groups = advice_by_ns(l);
    if groups.is_empty() {
        s.push_str("# no changes so far\n");
    }
    for group in groups {
        let Some(first) = group.first() else { continue };
        let header = match first.netns {
            _ if first.global => "global".to_string(),
            Some(name) => name.to_string(),
            None => format!("cookie {}", first.cookie),
        };
        let _ = writeln!(s, "\n# netns {header}: {}", apply_hint(first));
        for a in &group {
            let Some(name) = tunable_name(l, a) else { continue };
            let tuner = l.tuners.get(a.tuner).map(|t| t.name).unwrap_or("?");
            let _ = writeln!(
                s,
                "# {tuner}: {} from ({}) after {} {}",
                if a.proposed { "would change" } else { "changed" },
                a.original,
                a.count,
                if a.proposed { "proposal(s)" } else { "change(s)" }
            );
            for r in a.reasons {
                for line in r.lines() {
                    let _ = writeln!(s, "# {line}");
                }
            }
            let _ = writeln!(s, "{name} = {}", a.latest);
        }
    }
    s
}

/// `jadvice`: the advice as JSON.
pub fn advice_json(l: &Ledger) -> String {
    let namespaces: Vec<serde_json::Value> = advice_by_ns(l)
        .into_iter()
        .filter_map(|group| {
            let first = *group.first()?;
            let sysctls: Vec<serde_json::Value> = group
                .iter()
                .filter_map(|a| {
                    let name = tunable_name(l, a)?;
                    let ints = |v: &SysctlValue| match v {
                        SysctlValue::Ints(v) => serde_json::json!(v),
                        SysctlValue::Str(s) => serde_json::json!(s),
                    };
                    Some(serde_json::json!({
                        "tuner": l.tuners.get(a.tuner).map(|t| t.name),
                        "sysctl": name,
                        "value": a.latest.to_string(),
                        "values": ints(a.latest),
                        "original": a.original.to_string(),
                        "proposed": a.proposed,
                        "changes": a.count,
                        "reasons": a.reasons,
                    }))
                })
                .collect();
            Some(serde_json::json!({
                "global": first.global,
                "netns": if first.global { None } else { first.netns },
                "cookie": first.cookie,
                "apply": apply_hint(&first),
                "sysctls": sysctls,
            }))
        })
        .collect();
    let v = serde_json::json!({ "observe": l.observe(), "namespaces": namespaces });
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::ledger::summary;
    use super::*;
    use crate::record::ledger::tests::{ledger, rec};

    fn proposal(
        global: bool,
        cookie: u64,
        old: i64,
        new: i64,
        why: &str,
    ) -> crate::record::ledger::ChangeRecord {
        let mut r = rec(global, cookie, old, new);
        r.applied = false;
        r.proposed = true;
        r.message = why.to_string();
        r
    }

    /// `key = value` lines and comments only, as sysctl.d(5) wants them.
    fn parse_sysctl_d(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l
                    .split_once(" = ")
                    .unwrap_or_else(|| panic!("not key = value: {l:?}"));
                assert!(!k.contains(char::is_whitespace), "{l:?}");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn advice_in_observe_mode() {
        let mut l = ledger();
        l.set_observe(true);
        l.record(0, 0, 0, None, proposal(false, 9, 1310720, 1638400, "step one"));
        l.record(
            0,
            0,
            0,
            None,
            proposal(false, 9, 1638400, 2048000, "step two\nsecond line"),
        );
        l.record(0, 0, 0, None, proposal(true, 1, 6291456, 7864320, "global step"));
        let a = advice(&l);
        assert!(
            a.starts_with("# bpftune advice (observe mode): values bpftune would set; NOT applied\n"),
            "{a}"
        );
        let global = a
            .find("# netns global: save as /etc/sysctl.d/90-bpftune.conf")
            .expect("global header");
        let ns1 = a
            .find("# netns ns1: applies inside that namespace only: save as FILE and run: ip netns exec ns1 sysctl -p FILE")
            .expect("namespace header");
        assert!(global < ns1, "initial namespace first:\n{a}");
        assert!(a.contains(
            "# demo: would change from (4096 131072 1310720) after 2 proposal(s)\n# step one\n# step two\n# second line\nnet.ipv4.tcp_rmem = 4096 131072 2048000\n"
        ), "{a}");
        assert_eq!(
            parse_sysctl_d(&a),
            vec![
                ("net.ipv4.tcp_rmem".to_string(), "4096 131072 7864320".to_string()),
                ("net.ipv4.tcp_rmem".to_string(), "4096 131072 2048000".to_string()),
            ]
        );
        let j: serde_json::Value = serde_json::from_str(&advice_json(&l)).expect("valid JSON");
        assert_eq!(j["observe"], true);
        let ns = &j["namespaces"];
        assert_eq!(ns.as_array().map(Vec::len), Some(2));
        assert_eq!(
            (ns[0]["global"].clone(), ns[0]["netns"].clone()),
            (serde_json::json!(true), serde_json::Value::Null)
        );
        assert_eq!(ns[1]["netns"], "ns1");
        assert_eq!(ns[1]["cookie"], 9);
        let s = &ns[1]["sysctls"][0];
        assert_eq!(s["sysctl"], "net.ipv4.tcp_rmem");
        assert_eq!(s["value"], "4096 131072 2048000");
        assert_eq!(s["values"], serde_json::json!([4096, 131072, 2048000]));
        assert_eq!(s["original"], "4096 131072 1310720");
        assert_eq!(s["proposed"], true);
        assert_eq!(s["changes"], 2);
        assert_eq!(
            s["reasons"],
            serde_json::json!(["step one", "step two\nsecond line"])
        );
        // summary says clearly that nothing was applied, per namespace.
        let sum = summary(&l);
        assert!(
            sum.contains("# Observe mode (--observe): no sysctl was changed"),
            "{sum}"
        );
        assert!(sum.contains("# Proposed, NOT applied (observe mode): sysctl 'net.ipv4.tcp_rmem' in netns ns1 would change from (4096 131072 1310720 ) -> (4096 131072 2048000 ) (2 proposal(s))"), "{sum}");
        assert!(
            sum.contains("ip netns exec ns1 sysctl -w net.ipv4.tcp_rmem=\"4096 131072 2048000 \""),
            "{sum}"
        );
        assert!(
            !sum.contains("# sysctl 'net.ipv4.tcp_rmem' changed from"),
            "nothing changed:\n{sum}"
        );
        assert_eq!(l.applied_count(), 0);
        assert_eq!(l.proposed_count(), 3);
    }

    #[test]
    fn advice_when_enforcing_lists_applied_values() {
        let mut l = ledger();
        assert!(advice(&l).contains("# no changes so far"));
        l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
        let mut unnamed = rec(false, 33, 100, 200);
        unnamed.netns = None;
        l.record(0, 0, 0, None, unnamed);
        // Back where it started: nothing to make persistent.
        l.record(0, 0, 0, None, rec(false, 9, 1000, 2000));
        l.record(0, 0, 0, None, rec(false, 9, 2000, 1000));
        let a = advice(&l);
        assert!(a.starts_with("# bpftune advice: values bpftune has set;"), "{a}");
        assert!(a.contains("# demo: changed from (4096 131072 6291456) after 1 change(s)\nnet.ipv4.tcp_rmem = 4096 131072 7864320\n"), "{a}");
        assert!(a.contains("# netns cookie 33: unnamed namespace"), "{a}");
        assert!(!a.contains("ns1"), "reverted value left out:\n{a}");
        assert_eq!(parse_sysctl_d(&a).len(), 2);
        let j: serde_json::Value = serde_json::from_str(&advice_json(&l)).expect("valid JSON");
        assert_eq!(j["observe"], false);
        assert_eq!(j["namespaces"][0]["sysctls"][0]["proposed"], false);
        assert!(!summary(&l).contains("NOT applied"));
    }
}

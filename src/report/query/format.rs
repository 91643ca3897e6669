//! The one place that renders reply text: C bpftune's printf formats, byte for byte, and
//! the JSON replies.

use std::fmt::Write as _;

use super::{StatusRow, TunableRow, TunerRow, QUERIES};
use crate::model::tunable::{SysctlValue, TunableKind};
use crate::record::ledger::{AdviceView, Ledger};

/// `help`: `"%20s %40s\n"` per query.
pub fn format_help() -> String {
    QUERIES
        .iter()
        .map(|(name, desc)| format!("{name:>20} {desc:>40}\n"))
        .collect()
}

/// `tuners`: `"%20s %20s\n"` (name, state), as C bpftune; plugin tuners add the file
/// they were loaded from as a third column.
pub fn format_tuners(rows: &[TunerRow]) -> String {
    rows.iter()
        .map(|r| match &r.origin {
            None => format!("{:>20} {:>20}\n", r.name, r.state),
            Some(o) => format!("{:>20} {:>20} {o}\n", r.name, r.state),
        })
        .collect()
}

fn type_name(is_string: bool) -> &'static str {
    if is_string {
        "string"
    } else {
        "integer"
    }
}

/// `tunables`: `"%16s %50s %8s %2d\n"` (tuner, tunable, "string"|"integer", num_values).
pub fn format_tunables(rows: &[TunableRow]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{:>16} {:>50} {:>8} {:>2}\n",
                r.tuner,
                r.name,
                type_name(r.is_string),
                r.num_values
            )
        })
        .collect()
}

fn status_text(value: &Option<SysctlValue>) -> String {
    match value {
        None => "-".to_string(),
        Some(SysctlValue::Str(s)) => format!("\"{s}\""),
        Some(v @ SysctlValue::Ints(_)) => v.to_string(),
    }
}

/// `status`: `"%16s %50s %34s\n"` (tuner, sysctl, values; strings quoted; unreadable `-`).
pub fn format_status(rows: &[StatusRow]) -> String {
    rows.iter()
        .map(|r| format!("{:>16} {:>50} {:>34}\n", r.tuner, r.name, status_text(&r.value)))
        .collect()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Groups rows by tuner, keeping the order of first appearance.
fn group_by_tuner<'a, T>(rows: &'a [T], tuner: impl Fn(&T) -> &str) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut groups: Vec<(&'a str, Vec<&'a T>)> = Vec::new();
    for row in rows {
        let t: &'a str = tuner(row);
        match groups.iter_mut().find(|(name, _)| *name == t) {
            Some((_, v)) => v.push(row),
            None => groups.push((t, vec![row])),
        }
    }
    groups
}

/// Renders `{ "<tuner>": { "<key>": <value>, … }, … }`, tab-indented like C.
fn json_object<T>(rows: &[T], tuner: impl Fn(&T) -> &str, entry: impl Fn(&T) -> (String, String)) -> String {
    let groups = group_by_tuner(rows, tuner);
    let mut out = String::from("{\n");
    for (gi, (t, members)) in groups.iter().enumerate() {
        out.push('\t');
        out.push_str(&json_str(t));
        out.push_str(": {\n");
        for (mi, row) in members.iter().enumerate() {
            let (key, value) = entry(row);
            out.push_str("\t\t");
            out.push_str(&json_str(&key));
            out.push_str(": ");
            out.push_str(&value);
            if mi + 1 < members.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("\t}");
        if gi + 1 < groups.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

/// `jtunables`: `{ "<tuner>": { "<tunable>": {"type":"integer","num_values":N}, … }, … }`.
pub fn format_jtunables(rows: &[TunableRow]) -> String {
    json_object(
        rows,
        |r| r.tuner.as_str(),
        |r| {
            (
                r.name.clone(),
                format!(
                    "{{\"type\":\"{}\",\"num_values\":{}}}",
                    type_name(r.is_string),
                    r.num_values
                ),
            )
        },
    )
}

fn json_value(value: &Option<SysctlValue>) -> String {
    match value {
        None => "null".to_string(),
        Some(SysctlValue::Str(s)) => json_str(s),
        Some(SysctlValue::Ints(v)) if v.len() == 1 => v[0].to_string(),
        Some(SysctlValue::Ints(v)) => {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// `jstatus`: `{ "<tuner>": { "<sysctl>": [v0, v1, v2] | v | "str" | null, … } }`.
pub fn format_jstatus(rows: &[StatusRow]) -> String {
    json_object(
        rows,
        |r| r.tuner.as_str(),
        |r| (r.name.clone(), json_value(&r.value)),
    )
}

/// Per-tuner summary lines (C bpftune's format), used at exit and by `summary`.
pub fn tuner_summary(l: &Ledger, tuner: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Some(meta) = l.tuners.get(tuner) else {
        return out;
    };
    if let Some(extra) = l.extra(tuner) {
        out.extend(extra.lines.iter().cloned());
        if tracing::enabled!(tracing::Level::DEBUG) {
            out.extend(extra.debug_lines.iter().cloned());
        }
    }
    for global in [true, false] {
        for (ti, desc) in meta.tunables.iter().enumerate() {
            let mut any = false;
            for (si, sc) in meta.scenarios.iter().enumerate() {
                let n = l.count(tuner, ti, si, global);
                if n == 0 {
                    continue;
                }
                any = true;
                out.push(format!(
                    "# Summary: scenario '{}' occurred {} times for tunable '{}' in {}global ns. {}",
                    sc.name,
                    n,
                    desc.name,
                    if global { "" } else { "non-" },
                    sc.description
                ));
            }
            if !(any && global && desc.kind == TunableKind::Sysctl) {
                continue;
            }
            let span = l
                .spans()
                .find(|s| s.tuner == tuner && s.tunable == ti && s.global);
            // A value that went back where it started (e.g. low-memory measures
            // undone) has nothing to replicate.
            if let Some(s) = span.filter(|s| s.original != s.latest) {
                out.push(format!(
                    "# sysctl '{}' changed from ({}) -> ({})",
                    desc.name,
                    s.original.c_style(),
                    s.latest.c_style()
                ));
                out.push("# To replicate this change on another system, run the following as a privileged user in a terminal:".to_string());
                out.push(format!("sysctl -w {}=\"{}\"", desc.name, s.latest.c_style()));
            }
        }
    }
    // Observe mode: what would have been written, in every namespace.
    for a in l.advice().filter(|a| a.tuner == tuner && a.proposed) {
        let Some(desc) = meta.tunables.get(a.tunable) else {
            continue;
        };
        out.push(format!(
            "# Proposed, NOT applied (observe mode): sysctl '{}' in {} would change from ({}) -> ({}) ({} proposal(s))",
            desc.name,
            place(&a),
            a.original.c_style(),
            a.latest.c_style(),
            a.count
        ));
        out.push(format!(
            "# To apply it, run the following as a privileged user in a terminal (or use the 'advice' query):{}",
            if a.global { "" } else { " inside that namespace" }
        ));
        out.push(format!(
            "{}sysctl -w {}=\"{}\"",
            a.netns
                .filter(|_| !a.global)
                .map(|n| format!("ip netns exec {n} "))
                .unwrap_or_default(),
            desc.name,
            a.latest.c_style()
        ));
    }
    out
}

/// "global ns", "netns NAME" or "netns (cookie N)".
fn place(a: &AdviceView<'_>) -> String {
    match a.netns {
        _ if a.global => "global ns".to_string(),
        Some(name) => format!("netns {name}"),
        None => format!("netns (cookie {})", a.cookie),
    }
}

/// Text of the `summary` query.
pub fn summary(l: &Ledger) -> String {
    let mut s = String::from("# Summary of changes made across all tuners:\n");
    if l.observe() {
        s.push_str("# Observe mode (--observe): no sysctl was changed; proposals are marked 'NOT applied' (see the 'advice' query)\n");
    }
    for t in 0..l.tuners.len() {
        for line in tuner_summary(l, t) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

/// Text of the `rollback` query: commands restoring every sysctl we changed, in
/// the initial namespace and in named namespaces.
pub fn rollback(l: &Ledger) -> String {
    let mut s =
        String::from("# Summary of rollback operations needed to restore original state for all tuners:\n");
    for span in l.spans() {
        let Some(desc) = l
            .tuners
            .get(span.tuner)
            .and_then(|t| t.tunables.get(span.tunable))
        else {
            continue;
        };
        if span.original == span.latest {
            continue;
        }
        let cmd = format!("sysctl -w {}=\"{}\"", desc.name, span.original.c_style());
        if span.global {
            let _ = writeln!(
                s,
                "# To roll back changes to '{}', run the following as a privileged user in a terminal:",
                desc.name
            );
            let _ = writeln!(s, "{cmd}");
        } else if let Some(ns) = span.netns {
            let _ = writeln!(s, "# To roll back changes to '{}' in network namespace '{}', run the following as a privileged user in a terminal:", desc.name, ns);
            let _ = writeln!(s, "ip netns exec {ns} {cmd}");
        } else {
            let _ = writeln!(s, "# '{}' was changed in unnamed network namespace (cookie {}) from ({}); enter it (nsenter) to run: {cmd}", desc.name, span.cookie, span.original.c_style());
        }
    }
    s
}

/// `jpaths`: `{ "<tuner>": <its JSON>, … }` for every tuner that provides one (tcp_conn's
/// per-path learning table).
pub fn paths_json(l: &Ledger) -> String {
    let map: serde_json::Map<String, serde_json::Value> = l
        .tuners
        .iter()
        .enumerate()
        .filter_map(|(t, meta)| Some((meta.name.to_string(), l.extra(t)?.json.clone()?)))
        .collect();
    serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".to_string())
}

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

/// `jchanges`: the recent change records as a JSON array.
pub fn changes_json(l: &Ledger) -> String {
    let records: Vec<_> = l.records().collect();
    // Sized first, then written once: growing the string by doubling peaked at 2.5
    // times the reply, memory the query thread's allocator then keeps.
    let mut size = ByteCount(0);
    if serde_json::to_writer_pretty(&mut size, &records).is_err() {
        return "[]".to_string();
    }
    let mut out = Vec::with_capacity(size.0);
    if serde_json::to_writer_pretty(&mut out, &records).is_err() {
        return "[]".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
}

/// A writer that only counts bytes.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ledger::tests::{ledger, rec};

    #[test]
    fn summary_counts_and_spans() {
        let mut l = ledger();
        l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
        l.record(0, 0, 0, None, rec(true, 1, 7864320, 9830400));
        l.record(0, 0, 0, None, rec(false, 9, 1310720, 1638400));
        let s = summary(&l);
        assert!(s.starts_with("# Summary of changes made across all tuners:\n"));
        assert!(s.contains("occurred 2 times for tunable 'net.ipv4.tcp_rmem' in global ns."));
        assert!(s.contains("occurred 1 times for tunable 'net.ipv4.tcp_rmem' in non-global ns."));
        assert!(s.contains(
            "# sysctl 'net.ipv4.tcp_rmem' changed from (4096 131072 6291456 ) -> (4096 131072 9830400 )"
        ));
        assert!(s.contains("sysctl -w net.ipv4.tcp_rmem=\"4096 131072 9830400 \""));
        let r = rollback(&l);
        assert!(r.contains("sysctl -w net.ipv4.tcp_rmem=\"4096 131072 6291456 \""));
        assert!(r.contains("ip netns exec ns1 sysctl -w net.ipv4.tcp_rmem=\"4096 131072 1310720 \""));
        let j: serde_json::Value = serde_json::from_str(&changes_json(&l)).expect("valid JSON");
        assert_eq!(j.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn changes_json_is_sized_once_and_keeps_the_ring_bound() {
        let mut l = ledger();
        for i in 0..crate::record::ledger::MAX_RECORDS + 10 {
            l.record(0, 0, 0, None, rec(false, 9, 1000 + i as i64, 2000 + i as i64));
        }
        let recs: Vec<_> = l.records().collect();
        assert_eq!(recs.len(), crate::record::ledger::MAX_RECORDS, "oldest dropped");
        let text = changes_json(&l);
        assert_eq!(text, serde_json::to_string_pretty(&recs).expect("serialises"));
        // Sized first: no slack left from doubling.
        assert_eq!(text.capacity(), text.len());
    }

    #[test]
    fn persisted_original_wins() {
        let mut l = ledger();
        let orig = SysctlValue::Ints(vec![4096, 131072, 1000]);
        l.record(0, 0, 0, Some(orig), rec(true, 1, 2000, 3000));
        assert!(rollback(&l).contains("\"4096 131072 1000 \""));
    }

    #[test]
    fn tuner_sections_counts_and_json() {
        use crate::record::ledger::TunerSummary;
        let mut l = ledger();
        l.add_count(0, 0, 0, false, 5);
        l.set_extra(
            0,
            TunerSummary {
                lines: vec!["# Summary: own line".into()],
                debug_lines: vec!["# Summary: debug only".into()],
                json: Some(serde_json::json!({"paths_tracked": 1})),
            },
        );
        let s = summary(&l);
        let own = s.find("# Summary: own line").expect("own line");
        let counted = s
            .find("occurred 5 times for tunable 'net.ipv4.tcp_rmem' in non-global ns.")
            .expect("counted without a record");
        assert!(own < counted, "own section first, as C's summarize() hook: {s}");
        assert_eq!(l.applied_count(), 0);
        let j: serde_json::Value = serde_json::from_str(&paths_json(&l)).expect("valid JSON");
        assert_eq!(j["tcp_buffer"]["paths_tracked"], 1);
    }

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
            "# tcp_buffer: would change from (4096 131072 1310720) after 2 proposal(s)\n# step one\n# step two\n# second line\nnet.ipv4.tcp_rmem = 4096 131072 2048000\n"
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
        assert!(a.contains("# tcp_buffer: changed from (4096 131072 6291456) after 1 change(s)\nnet.ipv4.tcp_rmem = 4096 131072 7864320\n"), "{a}");
        assert!(a.contains("# netns cookie 33: unnamed namespace"), "{a}");
        assert!(!a.contains("ns1"), "reverted value left out:\n{a}");
        assert_eq!(parse_sysctl_d(&a).len(), 2);
        let j: serde_json::Value = serde_json::from_str(&advice_json(&l)).expect("valid JSON");
        assert_eq!(j["observe"], false);
        assert_eq!(j["namespaces"][0]["sysctls"][0]["proposed"], false);
        assert!(!summary(&l).contains("NOT applied"));
    }
}

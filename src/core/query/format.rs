//! The one place that renders reply text: C bpftune's printf formats, byte for byte, and
//! the JSON replies.

use std::fmt::Write as _;

use super::{StatusRow, TunableRow, TunerRow, QUERIES};
use crate::core::change::Ledger;
use crate::core::tunable::{SysctlValue, TunableKind};

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
    out
}

/// Text of the `summary` query.
pub fn summary(l: &Ledger) -> String {
    let mut s = String::from("# Summary of changes made across all tuners:\n");
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

/// `jchanges`: the recent change records as a JSON array.
pub fn changes_json(l: &Ledger) -> String {
    let records: Vec<_> = l.records().collect();
    serde_json::to_string_pretty(&records).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::change::tests::{ledger, rec};

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
    fn persisted_original_wins() {
        let mut l = ledger();
        let orig = SysctlValue::Ints(vec![4096, 131072, 1000]);
        l.record(0, 0, 0, Some(orig), rec(true, 1, 2000, 3000));
        assert!(rollback(&l).contains("\"4096 131072 1000 \""));
    }

    #[test]
    fn tuner_sections_counts_and_json() {
        use crate::core::change::TunerSummary;
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
}

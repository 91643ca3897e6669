//! The replies rendered from the change ledger: `summary` (and the summary logged at
//! exit), `rollback`, `jpaths` and `jchanges`.

use std::fmt::Write as _;

use crate::model::tunable::TunableKind;
use crate::record::ledger::{AdviceView, Ledger};

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

/// `jpaths`: `{ "<tuner>": <its JSON>, … }` for every tuner that provides one (e.g. the
/// per-path learning table of a congestion-control tuner).
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
    use crate::model::tunable::SysctlValue;
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
        assert_eq!(j["demo"]["paths_tracked"], 1);
    }
}

//! The plain-text tables of C bpftune (`help`, `tuners`, `tunables`, `status`): its
//! printf formats, byte for byte.

use super::super::{StatusRow, TunableRow, TunerRow};
use super::type_name;
use crate::model::tunable::SysctlValue;
use crate::report::query::Query;

/// `help`: `"%20s %40s\n"` per query.
pub fn format_help() -> String {
    Query::ALL
        .iter()
        .map(|q| format!("{:>20} {:>40}\n", q.name(), q.help()))
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

/// `tunables`: the reference's `"%16s %50s %8s %2d"` (tuner, tunable, "string"|"integer",
/// num_values) and a fifth column the reference lacks, the scope: `netns` (one value
/// per network namespace) or `global` (one per kernel). Appended, so that readers of
/// the first four columns see what they did.
pub fn format_tunables(rows: &[TunableRow]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{:>16} {:>50} {:>8} {:>2} {:>6}\n",
                r.tuner,
                r.name,
                type_name(r.is_string),
                r.num_values,
                scope(r.namespaced)
            )
        })
        .collect()
}

/// The scope column of `tunables` (not in `jtunables`: the PCP agent's reader of it
/// expects exactly type and num_values).
fn scope(namespaced: bool) -> &'static str {
    if namespaced {
        "netns"
    } else {
        "global"
    }
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

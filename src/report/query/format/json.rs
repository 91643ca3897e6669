//! The JSON tables (`jtunables`, `jstatus`): C bpftune's tab-indented objects.

use super::super::{StatusRow, TunableRow};
use super::type_name;
use crate::model::tunable::SysctlValue;

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

//! deploy/grafana/bpftune.json parses, and the `bpftune_` metrics it queries are exactly
//! the agreed list in deploy/grafana/metrics.txt (kept there for the metrics code).

use std::collections::BTreeSet;
use std::path::Path;

fn grafana(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every query string in the dashboard: panel target `expr`s and templating queries.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("bpftune_") => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// `bpftune_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("bpftune_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn dashboard_queries_exactly_the_agreed_metrics() {
    let agreed: BTreeSet<String> = grafana("metrics.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert!(agreed.len() >= 12, "metrics.txt lists {agreed:?}");
    for name in &agreed {
        assert!(name.starts_with("bpftune_"), "{name} lacks the bpftune_ prefix");
    }

    let dash: serde_json::Value =
        serde_json::from_str(&grafana("bpftune.json")).expect("bpftune.json is JSON");
    assert_eq!(dash["uid"], "bpftune");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for p in panels {
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {} has no query", p["title"]);
    }
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = used.difference(&agreed).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries metrics not in metrics.txt: {unknown:?}"
    );
    let unused: Vec<&String> = agreed.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "metrics.txt lists metrics no panel shows: {unused:?}"
    );
}

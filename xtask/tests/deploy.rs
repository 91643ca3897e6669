//! deploy/grafana/bpftune.json parses, and the `bpftune_` metrics it queries are exactly
//! the agreed list in deploy/grafana/metrics.txt (kept there for the metrics code); the
//! Kubernetes manifests apply in name order on a first install.

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

/// Top-level `kind`, `metadata.name`, `metadata.namespace` of a one-object manifest, and
/// every `serviceAccountName:`/`configMapRef` name it uses (line-based: our manifests
/// are plain block YAML, and the schema validation is scripts/validate-deploy.sh's job).
struct Manifest {
    kind: String,
    name: String,
    namespace: Option<String>,
    uses: Vec<(String, String)>,
}

fn manifest(text: &str) -> Manifest {
    let mut m = Manifest {
        kind: String::new(),
        name: String::new(),
        namespace: None,
        uses: Vec::new(),
    };
    let mut in_metadata = false;
    let mut in_configmap_ref = false;
    for line in text.lines() {
        let value = |l: &str| {
            l.split_once(':')
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        if !line.starts_with(' ') {
            in_metadata = line.starts_with("metadata:");
            if let Some(k) = line.strip_prefix("kind:") {
                m.kind = k.trim().to_string();
            }
            continue;
        }
        let t = line.trim_start();
        if in_metadata && line.starts_with("  ") && !line.starts_with("   ") {
            match t.split_once(':').map(|(k, _)| k) {
                Some("name") => m.name = value(t).unwrap_or_default(),
                Some("namespace") => m.namespace = value(t),
                _ => {}
            }
        }
        if t.starts_with("serviceAccountName:") {
            m.uses
                .push(("ServiceAccount".into(), value(t).unwrap_or_default()));
        }
        if t.starts_with("- configMapRef:") || t.starts_with("configMapRef:") {
            in_configmap_ref = true;
        } else if in_configmap_ref && t.starts_with("name:") {
            m.uses.push(("ConfigMap".into(), value(t).unwrap_or_default()));
            in_configmap_ref = false;
        }
    }
    m
}

/// `kubectl apply -f deploy/kubernetes/` applies the files in name order and fails on an
/// object whose namespace does not exist yet; a pod whose ServiceAccount is missing is
/// refused at creation. So on a first install the namespace comes first and what the
/// DaemonSet uses comes before it.
#[test]
fn kubernetes_manifests_apply_in_name_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    // kubectl's order: lexical by file name.
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut created: BTreeSet<(String, String)> = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("manifest");
        let m = manifest(&text);
        let file = f.file_name().expect("name").to_string_lossy().to_string();
        assert!(
            !m.kind.is_empty() && !m.name.is_empty(),
            "{file}: no kind or name"
        );
        if let Some(ns) = &m.namespace {
            assert!(
                created.contains(&("Namespace".to_string(), ns.clone())),
                "{file} ({}) is applied before its namespace {ns} exists: rename it",
                m.kind
            );
        }
        for used in &m.uses {
            assert!(
                created.contains(used),
                "{file} uses {} {} before it is applied: rename it",
                used.0,
                used.1
            );
        }
        created.insert((m.kind, m.name));
    }
    assert!(
        created.contains(&("DaemonSet".to_string(), "bpftune".to_string())),
        "{created:?}"
    );
}

//! The one-way rule of the source tree, checked on the source text (`docs/architecture.md`):
//! the top-level modules are layers in data-flow order and a layer imports only layers
//! before it; only the binary edge (`cli`, `daemon`, `main`) names the built-in tuners;
//! and no two modules import each other, directly or around a loop.
//!
//! An import is any `crate::…` / `$crate::…` path or `super::…` path in code (comments
//! are left out): `use` lines, paths in expressions and in macro bodies alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. `tuners` (the built-in tuners) sits right above the tuner
/// contract: a tuner sees the model, kernel I/O, BPF plumbing and its contract, never the
/// engine or the records.
const LAYERS: &[&str] = &[
    "model", "kernel", "bpf", "tuner", "tuners", "record", "engine", "plugin", "report", "cli", "daemon",
    "main",
];

/// Modules that may name the built-in tuners (`crate::tuners`): the binary edge only.
const TUNERS_USERS: &[&str] = &["tuners", "cli", "daemon", "main"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// Module path of a source file: `src/engine/apply.rs` → `[engine, apply]`,
/// `src/kernel/netns/mod.rs` → `[kernel, netns]`; a `#[path]`-included `x_prop.rs`
/// counts as `x`'s child.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        match stem {
            "mod" | "lib" => {}
            s => match s.strip_suffix("_prop") {
                Some(base) => {
                    parts.push(base.to_string());
                    parts.push("prop_tests".to_string());
                }
                None => parts.push(s.to_string()),
            },
        }
    }
    parts
}

/// Code without `//` comments (doc comments included: intra-doc links are not imports).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `code` (a file's code, comments left out) refers to, resolved from
/// its `module`: every `crate::a::b…` as `[a, b, …]` and every `super::…` relative to the
/// module it is written in — the file's, or an inline `mod x {` at the file's top level
/// (rustfmt puts its closing brace alone in column 0).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = module.to_vec();
    for line in code.lines() {
        let item = line.trim_start_matches("pub ").trim_start_matches("pub(crate) ");
        if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
            current = module.to_vec();
            current.push(name.to_string());
        } else if line == "}" {
            current = module.to_vec();
        }
        out.extend(line_references(&current, line));
    }
    out
}

fn line_references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut starts: Vec<(usize, bool)> = Vec::new();
    for (kw, is_super) in [("crate::", false), ("super::", true)] {
        for (i, _) in code.match_indices(kw) {
            // Must start a path: `mycrate::` is not `crate::` (but `$crate::` is), and
            // the second `super` of `super::super::` is part of the first one's path.
            let before = code[..i].chars().next_back();
            let inside = before.is_some_and(ident) || (is_super && code[..i].ends_with("super::"));
            if !inside {
                starts.push((i + kw.len(), is_super));
            }
        }
    }
    starts.sort();
    let mut out = Vec::new();
    for (start, is_super) in starts {
        let mut segs: Vec<String> = Vec::new();
        let mut rest = &code[start..];
        loop {
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            segs.push(rest[..end].to_string());
            rest = &rest[end..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        let path = if is_super {
            // super::super::x: one level up per `super`, the first one included.
            let mut base = module.to_vec();
            base.pop();
            let mut segs = segs.into_iter().peekable();
            while segs.peek().map(String::as_str) == Some("super") {
                segs.next();
                base.pop();
            }
            base.extend(segs);
            base
        } else {
            segs
        };
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Node of the cycle graph: a layer's module (`engine`, `tuner::strategy`), or a single
/// built-in tuner (`tuners::<name>`).
fn node(path: &[String]) -> String {
    path.iter().take(2).cloned().collect::<Vec<_>>().join("::")
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    violations: Vec<String>,
}

fn scan() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        src.display()
    );
    let mut g = Graph {
        edges: BTreeMap::new(),
        violations: Vec::new(),
    };
    for f in files {
        let rel = f.strip_prefix(&src).unwrap_or(&f);
        let module = module_of(rel);
        let Some(layer) = module.first().cloned() else {
            continue;
        };
        // lib.rs declares the layers; this file's own text is made of the paths it checks.
        if layer == "lib" || layer == "layers" || module.is_empty() {
            continue;
        }
        let Some(from) = rank(&layer) else {
            g.violations.push(format!(
                "{}: top-level module '{layer}' is in no layer (src/layers.rs)",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for path in references(&module, &code_of(&text)) {
            let target = &path[0];
            // Macros exported at the crate root (`crate::open_skel!`): defined in a layer
            // of their own file, checked there.
            let Some(to) = rank(target) else { continue };
            if to > from {
                g.violations.push(format!(
                    "{}: layer '{layer}' imports '{}' of the higher layer '{target}'",
                    rel.display(),
                    path.join("::")
                ));
            }
            if target == "tuners" && !TUNERS_USERS.contains(&layer.as_str()) {
                g.violations.push(format!(
                    "{}: '{layer}' names a built-in tuner ('{}'): only {TUNERS_USERS:?} may",
                    rel.display(),
                    path.join("::")
                ));
            }
            let (a, b) = (node(&module), node(&path));
            if a != b {
                g.edges.entry(a).or_default().insert(b);
            }
        }
    }
    g
}

/// A loop in the graph, as the list of its nodes, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(n, edges, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_layer_imports_a_higher_one() {
    let g = scan();
    assert!(
        g.violations.is_empty(),
        "layer violations:\n{}",
        g.violations.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let g = scan();
    // Parent modules that only declare their children (`mod x;`) import nothing from
    // them; a child's `super::` is an import of its parent. A real loop remains a loop.
    assert_eq!(find_cycle(&g.edges), None, "import cycle (each imports the next)");
}

#[test]
fn the_checker_sees_what_it_must_refuse() {
    // A lower layer naming a higher one, through `use`, a path in code and `super`.
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let refs = references(
        &m("kernel::sysctl"),
        &code_of("use crate::engine::Engine;\nlet x = $crate::tuner::Ns::Global; // crate::report\nuse super::netns;"),
    );
    let refs: Vec<String> = refs.iter().map(|p| p.join("::")).collect();
    assert_eq!(refs, ["engine::Engine", "tuner::Ns::Global", "kernel::netns"]);
    assert!(!code_of("// crate::report::log").contains("crate::"));
    // Inside an inline test module `super` is the file's own module.
    let refs = references(
        &m("tuner::strategy"),
        "use super::Tuner;\nmod tests {\n    use super::*;\n}\n",
    );
    assert_eq!(refs, [m("tuner::Tuner"), m("tuner::strategy")]);
    assert_eq!(
        module_of(Path::new("model/tunable_prop.rs")),
        m("model::tunable::prop_tests")
    );
    assert_eq!(module_of(Path::new("kernel/netns/mod.rs")), m("kernel::netns"));
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}

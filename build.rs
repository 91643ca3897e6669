//! Compiles every tuner's BPF C (CO-RE) into a libbpf-rs skeleton in OUT_DIR, and turns
//! the enums of every tuner's shared header into Rust constants (`<name>_ids.rs`), so that
//! tunable, scenario and sample indices are defined once, in C. The tuners are the ones
//! registered in `tuners! { … }` (src/tuners/mod.rs); nothing here names a tuner.
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

#[path = "build_registry.rs"]
mod registry;

/// The registry: every tuner named in `tuners! { … }` has its BPF object at
/// `src/tuners/<name>/<name>.bpf.c` and its skeleton at `OUT_DIR/<name>.skel.rs`.
const REGISTRY: &str = "src/tuners/mod.rs";

/// (skeleton name, source) of the BPF objects that belong to no tuner.
const CORE_OBJECTS: &[(&str, &str)] = &[("probe", "src/bpf/probe.bpf.c")];

/// (object name, source) of the example plugins' BPF parts.
const EXAMPLE_OBJECTS: &[(&str, &str)] = &[
    ("sample_tuner", "examples/plugins/sample_tuner/sample_tuner.bpf.c"),
    (
        "strategy_tuner",
        "examples/plugins/strategy_tuner/strategy_tuner.bpf.c",
    ),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={REGISTRY}");
    let registry = std::fs::read_to_string(REGISTRY).unwrap_or_else(|e| panic!("reading {REGISTRY}: {e}"));
    let tuners = registry::parse(&registry).unwrap_or_else(|e| panic!("{REGISTRY}: {e}"));
    let objects = tuners
        .iter()
        .map(|name| (name.clone(), format!("src/tuners/{name}/{name}.bpf.c")))
        .chain(CORE_OBJECTS.iter().map(|(n, s)| (n.to_string(), s.to_string())));
    for (name, src) in objects {
        let skel = out.join(format!("{name}.skel.rs"));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(["-I", "bpf", "-Wall", "-Wno-unused-variable"])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF object {src}: {e}"));
        println!("cargo:rerun-if-changed={src}");
        let header = src.replace(".bpf.c", ".h");
        if Path::new(&header).exists() {
            println!("cargo:rerun-if-changed={header}");
            let text = std::fs::read_to_string(&header).unwrap_or_else(|e| panic!("reading {header}: {e}"));
            let ids = enums_to_rust(&text).unwrap_or_else(|e| panic!("{header}: {e}"));
            std::fs::write(out.join(format!("{name}_ids.rs")), ids)
                .unwrap_or_else(|e| panic!("writing ids of {header}: {e}"));
        }
    }
    // The example plugins' BPF objects (no skeleton: a plugin embeds the object in its
    // shared object). The plugin tests compile the user-space part with clang and embed
    // these; BPFTUNE_EXAMPLE_BPF_DIR tells them where they are.
    for (name, src) in EXAMPLE_OBJECTS {
        SkeletonBuilder::new()
            .source(src)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang_args(["-I", "bpf", "-Wall", "-Wno-unused-variable"])
            .build()
            .unwrap_or_else(|e| panic!("building example BPF object {src}: {e}"));
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rustc-env=BPFTUNE_EXAMPLE_BPF_DIR={}", out.display());
    println!("cargo:rerun-if-changed=include/bpftune/plugin.h");
    for h in ["bpf/common.bpf.h", "bpf/bpftune.h", "bpf/vmlinux.h"] {
        println!("cargo:rerun-if-changed={h}");
    }
    git_label();
}

/// `bpftune_build_info{git=…}`: $BPFTUNE_GIT if set (packaging), else the commit this
/// build script last ran at (`git describe`; every clean build, and every build that
/// recompiles BPF). Not re-run on every commit: that would rebuild every BPF object.
fn git_label() {
    println!("cargo:rerun-if-env-changed=BPFTUNE_GIT");
    let git = env::var("BPFTUNE_GIT")
        .ok()
        .filter(|g| !g.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["describe", "--always", "--dirty", "--abbrev=12"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        });
    if let Some(g) = git {
        println!("cargo:rustc-env=BPFTUNE_GIT={g}");
    }
}

/// `enum name { A, B = 5, C, };` → `pub mod name { pub const A: usize = 0; … pub const COUNT:
/// usize = 7; }`. Only plain enums (optionally with integer initialisers) are supported;
/// anything else is an error rather than a silent mismatch.
fn enums_to_rust(header: &str) -> Result<String, String> {
    // Drop comments first so that they cannot hide or fake an entry.
    let mut text = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let end = rest[i..].find("*/").ok_or("unterminated comment")?;
        rest = &rest[i + end + 2..];
    }
    text.push_str(rest);
    let text: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");

    let mut out = String::from("// Generated by build.rs from the tuner's C header. Do not edit.\n");
    let mut rest = text.as_str();
    while let Some(i) = rest.find("enum ") {
        let after = &rest[i + 5..];
        let open = after.find('{').ok_or("enum without body")?;
        let name = after[..open].trim();
        let close = after.find('}').ok_or("enum without closing brace")?;
        rest = &after[close + 1..];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // a use such as `enum foo x;` in a prototype, not a definition
        }
        let _ = writeln!(out, "#[allow(dead_code)]\npub mod {name} {{");
        let mut next: usize = 0;
        let mut names: Vec<(usize, String)> = Vec::new();
        for entry in after[open + 1..close].split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (ident, value) = match entry.split_once('=') {
                Some((i, v)) => {
                    let v = v.trim();
                    let v = v
                        .parse::<usize>()
                        .map_err(|_| format!("enum {name}: unsupported initialiser {v:?}"))?;
                    (i.trim(), v)
                }
                None => (entry, next),
            };
            let _ = writeln!(out, "    pub const {ident}: usize = {value};");
            names.push((value, ident.to_string()));
            next = value + 1;
        }
        let _ = writeln!(
            out,
            "    /// Number of entries (one past the largest).\n    pub const COUNT: usize = {next};"
        );
        let mut table = vec![String::new(); next];
        for (v, n) in names {
            table[v] = n;
        }
        let _ = writeln!(out, "    /// Entry names by value (\"\" for gaps).\n    pub const NAMES: [&str; COUNT] = {table:?};\n}}");
    }
    Ok(out)
}

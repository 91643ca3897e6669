//! Compiles every tuner's BPF C (CO-RE) into a libbpf-rs skeleton in OUT_DIR.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// (skeleton name, source) for every BPF object; a new tuner adds one line here.
const OBJECTS: &[(&str, &str)] = &[
    ("tcp_buffer", "src/tuners/tcp_buffer/tcp_buffer.bpf.c"),
    ("sysctl", "src/tuners/sysctl/sysctl.bpf.c"),
    ("probe", "src/core/probe.bpf.c"),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (name, src) in OBJECTS {
        let skel = out.join(format!("{name}.skel.rs"));
        SkeletonBuilder::new()
            .source(src)
            .clang_args(["-I", "bpf", "-Wall", "-Wno-unused-variable"])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF object {src}: {e}"));
        println!("cargo:rerun-if-changed={src}");
        let header = src.replace(".bpf.c", ".h");
        if std::path::Path::new(&header).exists() {
            println!("cargo:rerun-if-changed={header}");
        }
    }
    for h in ["bpf/common.bpf.h", "bpf/bpftune.h", "bpf/vmlinux.h"] {
        println!("cargo:rerun-if-changed={h}");
    }
}

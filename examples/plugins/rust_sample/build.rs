//! Compiles the kernel side (the C sample's cgroup/sysctl program: an event for every
//! read of kernel.core_pattern) into OUT_DIR; src/lib.rs embeds it with include_bytes!.
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = "../sample_tuner/sample_tuner.bpf.c";
    SkeletonBuilder::new()
        .source(src)
        .obj(out.join("rust_sample.bpf.o"))
        .clang_args(["-I", "../../../bpf", "-Wall"])
        .build()
        .unwrap_or_else(|e| panic!("building {src}: {e}"));
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=../../../bpf/common.bpf.h");
}

//! bpftune: an always-on daemon that watches the kernel with BPF and auto-tunes
//! network sysctls, per network namespace, explaining every change.

pub mod cli;
pub mod core;
pub mod daemon;
pub mod metrics;
pub mod tuners;

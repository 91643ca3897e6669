//! bpftune: an always-on daemon that watches the kernel with BPF and auto-tunes
//! network sysctls, per network namespace, explaining every change.
//!
//! The modules are layers in data-flow order; a layer imports only the ones above it in
//! this list (checked by the test in `layers.rs`; see `docs/architecture.md`).

pub mod bpf;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod kernel;
pub mod model;
pub mod plugin;
pub mod record;
pub mod report;
pub mod tuner;
pub mod tuners;

#[cfg(test)]
mod layers;

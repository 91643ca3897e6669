//! The daemon core: knows no single tuner.

pub mod bpf;
pub mod cgroup;
pub mod change;
pub mod corr;
pub mod crashpoint;
pub mod engine;
pub mod events;
pub mod journal;
pub mod log;
#[cfg(test)]
pub mod mem_sysctl;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod plugin;
pub mod privs;
pub mod probe;
pub mod procfs;
pub mod query;
pub mod state;
pub mod stats;
pub mod strategy;
pub mod sysctl;
pub mod tunable;
pub mod tuner;
pub mod wait;

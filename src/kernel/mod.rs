//! Kernel I/O other than BPF: sysctls (in any network namespace), rtnetlink, namespace
//! discovery and entry, /proc parsers, capabilities, the one epoll wait, and the test
//! crash points. Imports only `model`.

pub mod crashpoint;
#[cfg(test)]
pub mod mem_sysctl;
pub mod netlink;
pub mod netns;
pub mod privs;
pub mod procfs;
pub mod sysctl;
pub mod wait;

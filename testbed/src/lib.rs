//! Network-namespace testbed for bpftune's root integration tests and
//! benchmarks.
//!
//! * [`Netns`]: a named network namespace, deleted on drop.
//! * [`VethPair`]: a veth pair between two namespaces (µs RTT).
//! * [`DelayLine`]: two namespaces joined by two TUN devices and a forwarder
//!   process that delays every packet (the only way to get a real RTT here:
//!   no netem). See [`delay`] for where the forwarder binary is found.
//! * [`SysctlGuard`]: set a global sysctl and restore it on drop.
//! * [`iperf3_throughput`], [`IperfServer`]: iperf3 helpers.
//! * [`ping`](ping::ping): ICMP RTT measurement (no `ping` binary needed).
//! * [`unique_name`], [`cleanup_stale`]: names that encode the creating pid
//!   so leftovers of killed processes can be removed.
//!
//! Everything needs root, `ip` (iproute2) and, for the iperf helpers,
//! `iperf3`. Create objects from a thread in the root netns.

pub mod cmd;
pub mod delay;
pub mod forwarder;
pub mod iperf;
pub mod names;
pub mod netns;
pub mod ping;
pub mod sysctl;
pub mod veth;

pub use delay::{find_forwarder, DelayConfig, DelayLine};
pub use iperf::{iperf3_run, iperf3_throughput, IperfResult, IperfServer};
pub use names::{cleanup_stale, parse_name, unique_name};
pub use netns::Netns;
pub use sysctl::SysctlGuard;
pub use veth::VethPair;

/// Whether an interface called `name` exists in the calling thread's netns.
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Whether the process runs as root (the root tests skip otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

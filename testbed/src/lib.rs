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
//! * [`Daemon`](daemon::Daemon): a real `bpftune` daemon with private
//!   run/state/cgroup directories, readiness, timestamped log, queries, stop,
//!   cleanup, optional restore of global sysctls it left changed; shared by the
//!   integration tests (`tests/common`) and the benchmarks (through
//!   `bpftune-testbed daemon`, [`supervise`]).
//! * [`bpfstats`]: per-program BPF run time from a daemon's own metrics.
//! * [`host`]: other bpftune daemons on the host; [`dirs`]: temp dirs that may
//!   hold a mount, and removal of those left by killed processes; [`globals`]:
//!   global sysctls a daemon left changed.
//!
//! Everything needs root, `ip` (iproute2) and, for the iperf helpers,
//! `iperf3`. Create objects from a thread in the root netns.

pub mod bpfstats;
pub mod client;
pub mod cmd;
pub mod daemon;
pub mod delay;
pub mod dirs;
pub mod forwarder;
pub mod globals;
pub mod host;
pub mod iperf;
pub mod names;
pub mod netns;
pub mod ping;
pub mod supervise;
pub mod sysctl;
pub mod veth;

pub use daemon::{Daemon, DaemonConfig};
pub use delay::{find_forwarder, DelayConfig, DelayLine};
pub use dirs::TempDir;
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

/// Whether the process runs as root (the root tests need it; see [`require_root`]).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics with "needs root: `what` …" unless the process runs as root. Root tests are
/// `#[ignore]`d (so a plain `cargo test` reports them as ignored, not passed) and call
/// this first: run with `--include-ignored` (`make test` does) by a non-root user, they
/// fail loudly instead of passing.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "needs root: {what} (BPF, network namespaces, sysctls); run as root, e.g. `make test`"
    );
}

/// Like [`require_root`], and panics unless `/dev/net/tun` exists (the delay line).
pub fn require_root_and_tun(what: &str) {
    require_root(what);
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "needs root: {what} needs /dev/net/tun for the delay line (modprobe tun)"
    );
}

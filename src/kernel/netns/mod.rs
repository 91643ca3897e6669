//! Network-namespace discovery and cookie → namespace resolution.
//!
//! A namespace is *identified* by its cookie (`SO_NETNS_COOKIE`, unique per boot and never
//! reused) and *located* through its nsfs inode number, which the BPF events carry next to
//! the cookie (`net->net_cookie`, `net->ns.inum`). Inode numbers are recycled as soon as a
//! namespace dies, so an inode alone never proves identity: a cookie is only learnt by
//! entering the namespace and asking a socket.
//!
//! Kernels without `SO_NETNS_COOKIE` (before 5.14: Debian 11's 5.10) identify a namespace
//! by its inode instead ([`Identity::Inode`], probed once): the "cookie" everywhere is then
//! the inode, the BPF side reports `net->ns.inum` in its place (`bpftune_ns_by_ino`, set by
//! the loader from the same probe), and the registry still enters a namespace to read it
//! (which proves the location holds one).
//!
//! Locations are `/proc/<pid>/ns/net` (read with `readlink`, which yields `net:[N]` without
//! opening anything) and the bind mounts in `/run/netns` (`ip netns add`). Nothing here keeps
//! a namespace file descriptor open beyond one operation: an open nsfs fd pins a namespace
//! alive, so every entry is opened right before `setns` on a short-lived thread and closed
//! right after.
//!
//! Steady-state cost: [`NetnsRegistry::refresh`] only `readlink`s `/proc/*/ns/net` and stats
//! `/run/netns/*`; a namespace is entered (one thread + `setns`) only when it is new, or
//! when none of the locations it was seen at last time still shows it (a possible inode
//! reuse).
//!
//! Modules: `enter` (run code inside a namespace, read the current cookie), `scan`
//! (pure scans of `/proc/*/ns/net` and `/run/netns`), `registry` (cookie → location,
//! rescans), `watch` (prompt rescans when `/run/netns` changes).

mod enter;
mod registry;
mod scan;
mod watch;

use std::io;
use std::path::PathBuf;

pub use enter::{current_cookie, current_ino, identity, run_in_netns, Identity};
pub use registry::{CookieReader, NetnsDiff, NetnsRegistry};
pub use scan::scan;
pub use watch::RunNetnsWatcher;

/// The calling thread's own network namespace.
pub const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";
/// Where `ip netns add` bind-mounts named namespaces.
pub const DEFAULT_RUN_NETNS: &str = "/run/netns";
/// Default proc mount.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// A known (non-global) network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsInfo {
    /// `SO_NETNS_COOKIE`: unique per boot, never reused; the inode where the kernel has
    /// no cookies ([`Identity::Inode`]).
    pub cookie: u64,
    /// nsfs inode number (`net:[ino]`); reused after the namespace dies.
    pub ino: u64,
    /// Where the namespace can be opened: `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub path: PathBuf,
    /// The `/run/netns` name, if the namespace has one.
    pub name: Option<String>,
}

/// Where an operation on behalf of an event has to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The daemon's own (initial) namespace: no `setns` needed.
    Global,
    /// Another namespace: enter it on a dedicated thread ([`run_in_netns`]).
    Netns(NetnsInfo),
}

/// Errors of namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace no longer exists at its known location (or the location now
    /// holds a different namespace).
    #[error("network namespace is gone")]
    Gone,
    /// The location exists but could not be opened or entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure (socket creation, thread spawn, …).
    #[error("network namespace i/o error: {0}")]
    Io(#[from] io::Error),
    /// `SO_NETNS_COOKIE` is not available (kernel < 5.14).
    #[error("netns cookies are not supported by this kernel")]
    CookieUnsupported,
}

#[cfg(test)]
pub(crate) mod tests;

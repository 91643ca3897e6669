//! Query server (daemon side) and client (`bpftune -q`).
//!
//! Protocol (C bpftune compatible): one request per connection; the client sends the
//! query name followed by one NUL byte (a newline or end-of-stream also terminates it);
//! the server replies with text followed by one NUL byte and closes the connection.
//! Queries: see [`Query`] ([`QUERIES`] as a table); a request is matched exactly, else by prefix in table order
//! (`tunersXYZ` means `tuners`, like C's `strncmp(req, name, strlen(name))`). Unknown
//! requests get `unknown request '<req>'; supported requests are:` plus the help listing.
//! Output formats are C's printf formats, byte for byte (see [`format`]).
//!
//! Deliberate differences from C bpftune:
//! * Transport: a Unix stream socket `<run_dir>/query.sock`, mode 0600, and the server
//!   checks the peer's `SO_PEERCRED` uid (root, or the daemon's own euid) — queries are
//!   root-only. C listened on TCP 127.0.0.1:ephemeral, open to every local user.
//! * `-p PORT` additionally listens on TCP **127.0.0.1**:PORT (C bound 0.0.0.0, i.e. all
//!   interfaces) and writes the bound port as `"%d\n"` to `<run_dir>/server-port` (the C
//!   port file). Without `-p` there is no TCP listener and no port file.
//! * The client reads until end of stream (C did a single `recv`, truncating large
//!   replies).
//! * `status`/`jstatus` show values read live at query time (C showed cached values); an
//!   unreadable sysctl shows as `-` (status) / `null` (jstatus).
//! * Requests are bounded: at most [`READ_MAX`] bytes are read within [`IO_TIMEOUT`];
//!   content longer than [`REQUEST_MAX`] bytes, empty or non-UTF-8 requests get an
//!   `error: ...` reply. A request without terminator is answered when the peer closes
//!   its write side or after [`IO_TIMEOUT`]. Each connection is served on its own thread,
//!   at most [`MAX_CONNS`] at once (more get [`ERR_BUSY`] and are closed without
//!   waiting); a slow or stuck client holds only its own thread, for at most
//!   [`IO_TIMEOUT`] while reading plus [`IO_TIMEOUT`] while writing the reply, so it
//!   cannot delay other queries. The server never exits on client errors.

//!
//! Layout: [`protocol`] parses a request into a [`Query`], [`format`] is the one place
//! that renders reply text, [`server`] owns the listeners and connections, [`client`] is
//! `bpftune -q`; `conn` holds the deadline I/O both sides share.

mod client;
mod conn;
pub mod format;
mod protocol;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::tunable::SysctlValue;

pub use client::{client, ClientError};
pub use protocol::{handle_request, Query};
pub use server::QueryServer;

/// Longest request content accepted (C: `BPFTUNE_MAX_REQ`-ish 80 bytes).
pub const REQUEST_MAX: usize = 80;
/// Most bytes the server reads from one connection.
pub const READ_MAX: usize = 128;
/// Largest reply the client accepts.
pub const REPLY_MAX: usize = 16 << 20;
/// Per-connection deadline on the server (read request + write reply).
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at the same time (one thread each); more are refused at once.
/// Each holds its thread for at most about 2 × [`IO_TIMEOUT`].
pub const MAX_CONNS: usize = 16;
/// Client connect/read/write timeout.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unix socket file name inside the run directory.
pub const SOCKET_NAME: &str = "query.sock";
/// C-compatible port file name inside the run directory (`BPFTUNE_PORT_FILE`).
pub const PORT_FILE_NAME: &str = "server-port";

/// Reply sent to a peer that is not allowed to query.
pub const PERMISSION_DENIED: &str = "permission denied";
pub const ERR_TOO_LONG: &str = "error: request too long (max 80 bytes)";
pub const ERR_MALFORMED: &str = "error: malformed request";
pub(crate) const ERR_INTERNAL: &str = "error: internal error";
/// Reply to a connection arriving while [`MAX_CONNS`] are being served.
pub const ERR_BUSY: &str = "error: server busy, try again";

/// Supported queries and their help descriptions, in C's table (= prefix match) order:
/// [`Query::ALL`] as (name, help) pairs.
pub const QUERIES: &[(&str, &str)] = &query_table();

const fn query_table() -> [(&'static str, &'static str); Query::ALL.len()] {
    let mut t = [("", ""); Query::ALL.len()];
    let mut i = 0;
    while i < t.len() {
        t[i] = (Query::ALL[i].name(), Query::ALL[i].help());
        i += 1;
    }
    t
}

/// One line of the `tuners` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunerRow {
    pub name: String,
    /// inactive / active / manual / gone
    pub state: String,
    /// The file a plugin tuner was loaded from; `None` for built-in tuners.
    pub origin: Option<String>,
}

/// One line of the `tunables` / `jtunables` queries (all tunables, sysctl or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableRow {
    pub tuner: String,
    pub name: String,
    pub is_string: bool,
    pub num_values: u8,
    pub is_sysctl: bool,
    /// One value per network namespace (`netns`) or one per kernel (`global`: the
    /// vm sysctls, tcp_mem, the neighbour thresholds, …).
    pub namespaced: bool,
}

/// One line of the `status` / `jstatus` queries (sysctl tunables only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub tuner: String,
    pub name: String,
    /// Live value; `None` = unreadable (e.g. IPv6 disabled): `-` in status, `null` in jstatus.
    pub value: Option<SysctlValue>,
}

/// What the daemon exposes to the query server. Called from the query thread.
pub trait QueryBackend: Send + Sync {
    /// Tuners in load order.
    fn tuners(&self) -> Vec<TunerRow>;
    /// Every tunable of every tuner, in tuner order.
    fn tunables(&self) -> Vec<TunableRow>;
    /// Sysctl tunables only, with values read at query time.
    fn status(&self) -> Vec<StatusRow>;
    /// Fully formatted summary, including its header line.
    fn summary(&self) -> String;
    /// Fully formatted rollback instructions, including its header line.
    fn rollback(&self) -> String;
    /// Recent change records as a JSON array (what, where, why, event and write times).
    fn changes_json(&self) -> String;
    /// `jpaths`: per-tuner learning state as a JSON object (e.g. a per-path table).
    fn paths_json(&self) -> String {
        "{}".to_string()
    }
    /// `advice`: a sysctl.d fragment per namespace with the values bpftune set (or, in
    /// observe mode, would set) and why.
    fn advice(&self) -> String;
    /// `jadvice`: the same as JSON.
    fn advice_json(&self) -> String;
}

/// `<run_dir>/query.sock`
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// `<run_dir>/server-port`
pub fn port_file_path(run_dir: &Path) -> PathBuf {
    run_dir.join(PORT_FILE_NAME)
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

//! Query server (daemon side) and client (`bpftune -q`).
//!
//! Protocol (C bpftune compatible): one request per connection; the client sends the
//! query name followed by one NUL byte (a newline or end-of-stream also terminates it);
//! the server replies with text followed by one NUL byte and closes the connection.
//! Queries: see [`QUERIES`]; a request is matched exactly, else by prefix in table order
//! (`tunersXYZ` means `tuners`, like C's `strncmp(req, name, strlen(name))`). Unknown
//! requests get `unknown request '<req>'; supported requests are:` plus the help listing.
//! Output formats are C's printf formats, byte for byte (see the `format_*` helpers).
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
//!   its write side or after [`IO_TIMEOUT`]. A slow or stuck client holds the (single,
//!   sequential) server thread for at most [`IO_TIMEOUT`] while reading plus
//!   [`IO_TIMEOUT`] while writing the reply; the server never exits on client errors.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::socket::MsgFlags;

use crate::core::tunable::SysctlValue;

/// Longest request content accepted (C: `BPFTUNE_MAX_REQ`-ish 80 bytes).
pub const REQUEST_MAX: usize = 80;
/// Most bytes the server reads from one connection.
pub const READ_MAX: usize = 128;
/// Largest reply the client accepts.
pub const REPLY_MAX: usize = 16 << 20;
/// Per-connection deadline on the server (read request + write reply).
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
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
const ERR_INTERNAL: &str = "error: internal error";

/// Supported queries and their help descriptions, in C's table (= prefix match) order.
pub const QUERIES: &[(&str, &str)] = &[
    ("help", "list supported queries"),
    ("tuners", "show state of tuners"),
    ("tunables", "show list of tunables"),
    ("jtunables", "show list of tunables(json)"),
    ("summary", "show summary of changes"),
    ("status", "show status of tunables"),
    ("jstatus", "show status of tunables(json)"),
    ("rollback", "show changes needed to roll back"),
    ("jchanges", "show recent change records(json)"),
    ("jpaths", "show per-path learning state(json)"),
];

/// One line of the `tuners` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunerRow {
    pub name: String,
    /// inactive / active / manual / gone
    pub state: String,
}

/// One line of the `tunables` / `jtunables` queries (all tunables, sysctl or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableRow {
    pub tuner: String,
    pub name: String,
    pub is_string: bool,
    pub num_values: u8,
    pub is_sysctl: bool,
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
    /// `jpaths`: per-tuner learning state as a JSON object (tcp_conn's per-path table).
    fn paths_json(&self) -> String {
        "{}".to_string()
    }
}

/// `<run_dir>/query.sock`
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// `<run_dir>/server-port`
pub fn port_file_path(run_dir: &Path) -> PathBuf {
    run_dir.join(PORT_FILE_NAME)
}

// ---------------------------------------------------------------------------------------
// Request parsing and reply formatting (pure)
// ---------------------------------------------------------------------------------------

enum Request<'a> {
    Known(&'static str),
    Unknown(&'a str),
}

/// Parses raw request bytes. `Err` carries the error reply.
fn parse_request(raw: &[u8]) -> Result<Request<'_>, &'static str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let body = raw[..end].trim_ascii_end();
    if body.len() > REQUEST_MAX {
        return Err(ERR_TOO_LONG);
    }
    let req = std::str::from_utf8(body).map_err(|_| ERR_MALFORMED)?;
    if req.is_empty() {
        return Err(ERR_MALFORMED);
    }
    if let Some(&(name, _)) = QUERIES.iter().find(|(name, _)| *name == req) {
        return Ok(Request::Known(name));
    }
    match QUERIES.iter().find(|(name, _)| req.starts_with(name)) {
        Some(&(name, _)) => Ok(Request::Known(name)),
        None => Ok(Request::Unknown(req)),
    }
}

/// Turns one request into its reply text (without the trailing NUL the server appends).
pub fn handle_request(raw: &[u8], backend: &dyn QueryBackend) -> String {
    match parse_request(raw) {
        Err(e) => e.to_string(),
        Ok(Request::Unknown(req)) => {
            let shown: String = req
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            format!(
                "unknown request '{shown}'; supported requests are:\n{}",
                format_help()
            )
        }
        Ok(Request::Known(name)) => match name {
            "help" => format_help(),
            "tuners" => format_tuners(&backend.tuners()),
            "tunables" => format_tunables(&backend.tunables()),
            "jtunables" => format_jtunables(&backend.tunables()),
            "summary" => backend.summary(),
            "status" => format_status(&backend.status()),
            "jstatus" => format_jstatus(&backend.status()),
            "rollback" => backend.rollback(),
            "jchanges" => backend.changes_json(),
            "jpaths" => backend.paths_json(),
            _ => ERR_INTERNAL.to_string(),
        },
    }
}

/// `help`: `"%20s %40s\n"` per query.
pub fn format_help() -> String {
    QUERIES
        .iter()
        .map(|(name, desc)| format!("{name:>20} {desc:>40}\n"))
        .collect()
}

/// `tuners`: `"%20s %20s\n"` (name, state).
pub fn format_tuners(rows: &[TunerRow]) -> String {
    rows.iter()
        .map(|r| format!("{:>20} {:>20}\n", r.name, r.state))
        .collect()
}

fn type_name(is_string: bool) -> &'static str {
    if is_string {
        "string"
    } else {
        "integer"
    }
}

/// `tunables`: `"%16s %50s %8s %2d\n"` (tuner, tunable, "string"|"integer", num_values).
pub fn format_tunables(rows: &[TunableRow]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{:>16} {:>50} {:>8} {:>2}\n",
                r.tuner,
                r.name,
                type_name(r.is_string),
                r.num_values
            )
        })
        .collect()
}

fn status_text(value: &Option<SysctlValue>) -> String {
    match value {
        None => "-".to_string(),
        Some(SysctlValue::Str(s)) => format!("\"{s}\""),
        Some(v @ SysctlValue::Ints(_)) => v.to_string(),
    }
}

/// `status`: `"%16s %50s %34s\n"` (tuner, sysctl, values; strings quoted; unreadable `-`).
pub fn format_status(rows: &[StatusRow]) -> String {
    rows.iter()
        .map(|r| format!("{:>16} {:>50} {:>34}\n", r.tuner, r.name, status_text(&r.value)))
        .collect()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Groups rows by tuner, keeping the order of first appearance.
fn group_by_tuner<'a, T>(rows: &'a [T], tuner: impl Fn(&T) -> &str) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut groups: Vec<(&'a str, Vec<&'a T>)> = Vec::new();
    for row in rows {
        let t: &'a str = tuner(row);
        match groups.iter_mut().find(|(name, _)| *name == t) {
            Some((_, v)) => v.push(row),
            None => groups.push((t, vec![row])),
        }
    }
    groups
}

/// Renders `{ "<tuner>": { "<key>": <value>, … }, … }`, tab-indented like C.
fn json_object<T>(rows: &[T], tuner: impl Fn(&T) -> &str, entry: impl Fn(&T) -> (String, String)) -> String {
    let groups = group_by_tuner(rows, tuner);
    let mut out = String::from("{\n");
    for (gi, (t, members)) in groups.iter().enumerate() {
        out.push('\t');
        out.push_str(&json_str(t));
        out.push_str(": {\n");
        for (mi, row) in members.iter().enumerate() {
            let (key, value) = entry(row);
            out.push_str("\t\t");
            out.push_str(&json_str(&key));
            out.push_str(": ");
            out.push_str(&value);
            if mi + 1 < members.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("\t}");
        if gi + 1 < groups.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

/// `jtunables`: `{ "<tuner>": { "<tunable>": {"type":"integer","num_values":N}, … }, … }`.
pub fn format_jtunables(rows: &[TunableRow]) -> String {
    json_object(
        rows,
        |r| r.tuner.as_str(),
        |r| {
            (
                r.name.clone(),
                format!(
                    "{{\"type\":\"{}\",\"num_values\":{}}}",
                    type_name(r.is_string),
                    r.num_values
                ),
            )
        },
    )
}

fn json_value(value: &Option<SysctlValue>) -> String {
    match value {
        None => "null".to_string(),
        Some(SysctlValue::Str(s)) => json_str(s),
        Some(SysctlValue::Ints(v)) if v.len() == 1 => v[0].to_string(),
        Some(SysctlValue::Ints(v)) => {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// `jstatus`: `{ "<tuner>": { "<sysctl>": [v0, v1, v2] | v | "str" | null, … } }`.
pub fn format_jstatus(rows: &[StatusRow]) -> String {
    json_object(
        rows,
        |r| r.tuner.as_str(),
        |r| (r.name.clone(), json_value(&r.value)),
    )
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

trait Conn: Read + Write + AsRawFd {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()>;
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()>;
    fn shut_wr(&self) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(d)
    }
    fn shut_wr(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Conn for TcpStream {
    fn set_rto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
    fn set_wto(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(d)
    }
    fn shut_wr(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Time left until `deadline`, or `None` if it has passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// Saw a NUL or newline terminator.
    Terminated,
    /// Peer closed its write side.
    Eof,
    /// Read [`READ_MAX`] bytes without a terminator.
    Full,
    /// Deadline passed.
    Timeout,
}

fn read_request<C: Conn>(c: &mut C, deadline: Instant) -> io::Result<(Vec<u8>, ReadEnd)> {
    let mut buf = vec![0u8; READ_MAX];
    let mut n = 0;
    let end = loop {
        if n == READ_MAX {
            break ReadEnd::Full;
        }
        let Some(left) = remaining(deadline) else {
            break ReadEnd::Timeout;
        };
        c.set_rto(Some(left))?;
        match c.read(&mut buf[n..]) {
            Ok(0) => break ReadEnd::Eof,
            Ok(k) => {
                let terminated = buf[n..n + k].iter().any(|&b| b == 0 || b == b'\n');
                n += k;
                if terminated {
                    break ReadEnd::Terminated;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => break ReadEnd::Timeout,
            Err(e) => return Err(e),
        }
    };
    buf.truncate(n);
    Ok((buf, end))
}

fn write_all_deadline<C: Conn>(c: &mut C, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let Some(left) = remaining(deadline) else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "write deadline passed"));
        };
        c.set_wto(Some(left))?;
        // MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE in the daemon.
        match nix::sys::socket::send(c.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => data = &data[k..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads and discards what the peer still sends (bounded), so that closing the socket
/// does not reset the connection before the peer has read the reply.
fn drain<C: Conn>(c: &mut C, deadline: Instant) {
    let limit = Instant::now() + Duration::from_millis(250);
    let deadline = deadline.min(limit);
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while total < 64 * 1024 {
        let Some(left) = remaining(deadline) else {
            return;
        };
        if c.set_rto(Some(left)).is_err() {
            return;
        }
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(k) => total += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn serve_conn<C: Conn>(c: &mut C, backend: &dyn QueryBackend, peer: &str) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let (req, end) = read_request(c, deadline)?;
    if req.is_empty() && end == ReadEnd::Timeout {
        tracing::debug!("query from {peer}: no request within {IO_TIMEOUT:?}, closing");
        return Ok(());
    }
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle_request(&req, backend)))
        .unwrap_or_else(|_| ERR_INTERNAL.to_string());
    tracing::debug!(
        "query from {peer}: '{}' -> {} bytes",
        String::from_utf8_lossy(&req).trim_end_matches(['\0', '\n']),
        reply.len()
    );
    let mut out = reply.into_bytes();
    out.push(0);
    // The reply gets its own deadline: a request that arrived just before the read
    // deadline (or one without terminator, answered on timeout) must still be answered.
    let deadline = Instant::now() + IO_TIMEOUT;
    write_all_deadline(c, &out, deadline)?;
    let _ = c.shut_wr();
    if end != ReadEnd::Eof {
        drain(c, deadline);
    }
    Ok(())
}

fn reply_and_close<C: Conn>(c: &mut C, text: &str) {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    let deadline = Instant::now() + IO_TIMEOUT;
    let _ = write_all_deadline(c, &out, deadline);
    let _ = c.shut_wr();
    drain(c, deadline);
}

fn peer_allowed(s: &UnixStream) -> Result<bool, nix::Error> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)?;
    let uid = cred.uid();
    Ok(uid == 0 || uid == nix::unistd::geteuid().as_raw())
}

fn serve_unix(mut s: UnixStream, backend: &dyn QueryBackend) {
    if let Err(e) = s.set_nonblocking(false) {
        tracing::debug!("query: cannot make connection blocking: {e}");
        return;
    }
    match peer_allowed(&s) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("query: refusing non-root peer on unix socket");
            reply_and_close(&mut s, PERMISSION_DENIED);
            return;
        }
        Err(e) => {
            tracing::debug!("query: cannot read peer credentials: {e}");
            reply_and_close(&mut s, PERMISSION_DENIED);
            return;
        }
    }
    if let Err(e) = serve_conn(&mut s, backend, "unix socket") {
        tracing::debug!("query connection (unix socket) failed: {e}");
    }
}

fn serve_tcp(mut s: TcpStream, peer: SocketAddr, backend: &dyn QueryBackend) {
    if let Err(e) = s.set_nonblocking(false) {
        tracing::debug!("query: cannot make connection blocking: {e}");
        return;
    }
    let peer = peer.to_string();
    if let Err(e) = serve_conn(&mut s, backend, &peer) {
        tracing::debug!("query connection ({peer}) failed: {e}");
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn serve_loop(
    unix: UnixListener,
    tcp: Option<TcpListener>,
    wake: UnixStream,
    backend: Arc<dyn QueryBackend>,
) {
    let backoff = || std::thread::sleep(Duration::from_millis(50));
    loop {
        let mut fds = [
            pollfd(wake.as_raw_fd()),
            pollfd(unix.as_raw_fd()),
            // poll(2) ignores negative fds.
            pollfd(tcp.as_ref().map_or(-1, |l| l.as_raw_fd())),
        ];
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd
        // structures that outlives the call; all fds are open (or -1, which poll ignores).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::debug!("query server: poll failed: {e}");
                backoff();
            }
            continue;
        }
        if fds[0].revents != 0 {
            break;
        }
        if fds[1].revents != 0 {
            match unix.accept() {
                Ok((s, _)) => serve_unix(s, &*backend),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!("query server: accept (unix) failed: {e}");
                    backoff();
                }
            }
        }
        if let Some(l) = tcp.as_ref().filter(|_| fds[2].revents != 0) {
            match l.accept() {
                Ok((s, peer)) => serve_tcp(s, peer, &*backend),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!("query server: accept (tcp) failed: {e}");
                    backoff();
                }
            }
        }
    }
    tracing::debug!("query server stopped");
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// The running query server: its listeners live on the "bpftune-query" thread.
/// Dropping it (or [`QueryServer::stop`]) stops the thread and removes the socket and
/// port files.
#[derive(Debug)]
pub struct QueryServer {
    thread: Option<JoinHandle<()>>,
    wake: Option<UnixStream>,
    socket_path: PathBuf,
    /// (dev, ino) of the socket file we created: only that file is removed on stop.
    socket_id: Option<(u64, u64)>,
    port_file: Option<PathBuf>,
    tcp_port: Option<u16>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes a stale socket file left by a previous run; refuses to touch anything else.
fn clear_stale_socket(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot stat {}", path.display()))),
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another bpftune query server is already listening on {}",
                    path.display()
                );
            }
            fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
    }
}

fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(".{PORT_FILE_NAME}.{}.tmp", std::process::id()));
    let res = (|| -> io::Result<()> {
        fs::write(&tmp, format!("{port}\n"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write port file {}", path.display()))
}

impl QueryServer {
    /// Binds `<run_dir>/query.sock` (mode 0600; a stale socket file is removed first)
    /// and, with `port`, TCP 127.0.0.1:port (0 = ephemeral) plus the port file; then
    /// spawns the "bpftune-query" thread.
    pub fn start(
        run_dir: &Path,
        port: Option<u16>,
        backend: Arc<dyn QueryBackend>,
    ) -> anyhow::Result<QueryServer> {
        let socket_path = socket_path(run_dir);
        clear_stale_socket(&socket_path)?;

        // Bind under a temporary name, restrict it, then rename: the socket is never
        // reachable with default permissions.
        let tmp = run_dir.join(format!(".{SOCKET_NAME}.{}.tmp", std::process::id()));
        if fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(&tmp);
        }
        let unix = UnixListener::bind(&tmp)
            .with_context(|| format!("cannot bind query socket {}", tmp.display()))?;
        let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&tmp, &socket_path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot create query socket {}", socket_path.display())));
        }
        // From here on, dropping `server` cleans up.
        let mut server = QueryServer {
            thread: None,
            wake: None,
            socket_id: file_id(&socket_path),
            socket_path,
            port_file: None,
            tcp_port: None,
        };
        unix.set_nonblocking(true)
            .context("cannot configure query socket")?;

        let port_path = port_file_path(run_dir);
        let tcp = match port {
            Some(p) => {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, p))
                    .with_context(|| format!("cannot listen on 127.0.0.1:{p}"))?;
                l.set_nonblocking(true)
                    .context("cannot configure query TCP listener")?;
                let actual = l.local_addr().context("cannot read bound port")?.port();
                write_port_file(&port_path, actual)?;
                server.port_file = Some(port_path);
                server.tcp_port = Some(actual);
                Some(l)
            }
            None => {
                // A port file from an earlier `-p` run would point at nothing.
                if fs::symlink_metadata(&port_path).is_ok_and(|m| m.file_type().is_file()) {
                    let _ = fs::remove_file(&port_path);
                }
                None
            }
        };

        let (wake_tx, wake_rx) = UnixStream::pair().context("cannot create wake-up pair")?;
        let thread = std::thread::Builder::new()
            .name("bpftune-query".into())
            .spawn(move || serve_loop(unix, tcp, wake_rx, backend))
            .context("cannot spawn query server thread")?;
        server.wake = Some(wake_tx);
        server.thread = Some(thread);
        Ok(server)
    }

    /// Path of the Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Bound TCP port, if `-p` was given.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// Stops the thread (after the connection in progress, a few seconds at most),
    /// joins it and removes the socket and port files.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        // Closing our end makes the thread's wake-up socket readable (EOF).
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::debug!("query server thread panicked");
            }
        }
        if let Some(id) = self.socket_id.take() {
            if file_id(&self.socket_path) == Some(id) {
                let _ = fs::remove_file(&self.socket_path);
            }
        }
        if let (Some(path), Some(port)) = (self.port_file.take(), self.tcp_port) {
            if fs::read_to_string(&path).is_ok_and(|s| s.trim() == port.to_string()) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

impl Drop for QueryServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// Client failures. `main` may map [`ClientError::raw_os_error`] to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{hint}could not connect to {target}: {err}")]
    Connect {
        hint: &'static str,
        target: String,
        err: io::Error,
    },
    #[error("query to {target} failed: {err}")]
    Io { target: String, err: io::Error },
    #[error("bpftune refused the query: permission denied (queries require root)")]
    PermissionDenied,
    #[error("bpftune at {target} closed the connection without replying")]
    NoReply { target: String },
    #[error("invalid query: {0}")]
    InvalidQuery(&'static str),
}

impl ClientError {
    /// errno of the underlying socket error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ClientError::Connect { err, .. } | ClientError::Io { err, .. } => err.raw_os_error(),
            ClientError::PermissionDenied => Some(libc::EACCES),
            _ => None,
        }
    }
}

fn connect_error(target: String, err: io::Error) -> ClientError {
    let hint = if err.kind() == io::ErrorKind::PermissionDenied {
        "queries require root; "
    } else {
        "is bpftune running? "
    };
    ClientError::Connect { hint, target, err }
}

fn exchange<C: Conn>(mut c: C, query: &str, target: &str) -> Result<String, ClientError> {
    let io_err = |err: io::Error| ClientError::Io {
        target: target.to_string(),
        err,
    };
    c.set_rto(Some(CLIENT_TIMEOUT)).map_err(io_err)?;
    c.set_wto(Some(CLIENT_TIMEOUT)).map_err(io_err)?;
    let mut req = query.as_bytes().to_vec();
    req.push(0);
    c.write_all(&req).map_err(io_err)?;
    let _ = c.shut_wr();

    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                out.extend_from_slice(&buf[..k]);
                if out.len() >= REPLY_MAX {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after the complete (NUL-terminated) reply is harmless.
            Err(_) if out.contains(&0) => break,
            Err(e) => return Err(io_err(e)),
        }
    }
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    } else if out.is_empty() {
        return Err(ClientError::NoReply {
            target: target.to_string(),
        });
    }
    let reply = String::from_utf8_lossy(&out).into_owned();
    if reply == PERMISSION_DENIED {
        return Err(ClientError::PermissionDenied);
    }
    Ok(reply)
}

/// Sends `query` to the daemon and returns its reply text (without the NUL; the caller
/// prints it followed by `"\n"` like C). With `port`: TCP 127.0.0.1:port; otherwise the
/// Unix socket in `run_dir`. Errors are [`ClientError`]s inside the `anyhow::Error`.
pub fn client(run_dir: &Path, port: Option<u16>, query: &str) -> anyhow::Result<String> {
    if query.contains('\0') {
        return Err(ClientError::InvalidQuery("contains a NUL byte").into());
    }
    let reply = match port {
        Some(p) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
            let target = addr.to_string();
            let s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
                .map_err(|e| connect_error(target.clone(), e))?;
            exchange(s, query, &target)?
        }
        None => {
            let path = socket_path(run_dir);
            let target = path.display().to_string();
            let s = UnixStream::connect(&path).map_err(|e| connect_error(target.clone(), e))?;
            exchange(s, query, &target)?
        }
    };
    Ok(reply)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake;

    impl QueryBackend for Fake {
        fn tuners(&self) -> Vec<TunerRow> {
            vec![
                TunerRow {
                    name: "tcp_buffer_tuner".into(),
                    state: "active".into(),
                },
                TunerRow {
                    name: "tcp_conn_tuner".into(),
                    state: "manual".into(),
                },
            ]
        }
        fn tunables(&self) -> Vec<TunableRow> {
            let row = |tuner: &str, name: &str, is_string, num_values, is_sysctl| TunableRow {
                tuner: tuner.into(),
                name: name.into(),
                is_string,
                num_values,
                is_sysctl,
            };
            vec![
                row("tcp_buffer_tuner", "net.ipv4.tcp_rmem", false, 3, true),
                row("tcp_buffer_tuner", "net.ipv4.tcp_no_metrics_save", false, 1, true),
                row("tcp_conn_tuner", "net.ipv4.tcp_congestion_control", true, 1, true),
                row("tcp_conn_tuner", "cong_\"quoted\"", false, 0, false),
            ]
        }
        fn status(&self) -> Vec<StatusRow> {
            let row = |tuner: &str, name: &str, value| StatusRow {
                tuner: tuner.into(),
                name: name.into(),
                value,
            };
            vec![
                row(
                    "tcp_buffer_tuner",
                    "net.ipv4.tcp_rmem",
                    Some(SysctlValue::Ints(vec![4096, 131072, 6291456])),
                ),
                row("tcp_buffer_tuner", "net.ipv6.conf.all.x", None),
                row(
                    "tcp_conn_tuner",
                    "net.ipv4.tcp_congestion_control",
                    Some(SysctlValue::Str("cubic".into())),
                ),
                row(
                    "tcp_buffer_tuner",
                    "net.ipv4.tcp_no_metrics_save",
                    Some(SysctlValue::Ints(vec![1])),
                ),
            ]
        }
        fn summary(&self) -> String {
            "# Summary of changes made across all tuners:\nSUMMARY\n".into()
        }
        fn changes_json(&self) -> String {
            "[]".to_string()
        }
        fn rollback(&self) -> String {
            "# Summary of rollback operations needed to restore original state for all tuners:\n".into()
        }
    }

    fn q(req: &str) -> String {
        handle_request(req.as_bytes(), &Fake)
    }

    fn sp(n: usize) -> String {
        " ".repeat(n)
    }

    #[test]
    fn help_is_right_aligned_20_40() {
        let h = q("help");
        assert_eq!(h.lines().count(), QUERIES.len());
        let first = h.lines().next().expect("line");
        assert_eq!(first, format!("{}help {}list supported queries", sp(16), sp(18)));
        for line in h.lines() {
            assert_eq!(line.len(), 61);
        }
        assert!(h.ends_with('\n'));
    }

    #[test]
    fn tuners_shape() {
        assert_eq!(
            q("tuners"),
            format!(
                "{}tcp_buffer_tuner {}active\n{}tcp_conn_tuner {}manual\n",
                sp(4),
                sp(14),
                sp(6),
                sp(14)
            )
        );
    }

    #[test]
    fn tunables_shape() {
        let t = q("tunables");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            format!(
                "tcp_buffer_tuner {}net.ipv4.tcp_rmem {}integer  3",
                sp(50 - 17),
                sp(1)
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "  tcp_conn_tuner {}net.ipv4.tcp_congestion_control {}string  1",
                sp(50 - 31),
                sp(2)
            )
        );
        assert!(lines[3].ends_with("integer  0"));
        for l in &lines {
            assert_eq!(l.len(), 16 + 1 + 50 + 1 + 8 + 1 + 2);
        }
    }

    #[test]
    fn status_shape() {
        let s = q("status");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            format!(
                "tcp_buffer_tuner {}net.ipv4.tcp_rmem {}4096 131072 6291456",
                sp(33),
                sp(34 - 19)
            )
        );
        assert!(lines[1].ends_with(&format!("{}-", sp(33))));
        assert!(lines[2].ends_with(&format!("{}\"cubic\"", sp(27))));
        assert!(lines[3].ends_with(&format!("{}1", sp(33))));
        for l in &lines {
            assert_eq!(l.len(), 16 + 1 + 50 + 1 + 34);
        }
    }

    #[test]
    fn summary_and_rollback_verbatim() {
        assert_eq!(q("summary"), Fake.summary());
        assert_eq!(q("rollback"), Fake.rollback());
    }

    #[test]
    fn jtunables_is_valid_json_in_order() {
        let j = q("jtunables");
        let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(
            v["tcp_buffer_tuner"]["net.ipv4.tcp_rmem"],
            serde_json::json!({"type": "integer", "num_values": 3})
        );
        assert_eq!(
            v["tcp_conn_tuner"]["net.ipv4.tcp_congestion_control"],
            serde_json::json!({"type": "string", "num_values": 1})
        );
        assert_eq!(
            v["tcp_conn_tuner"]["cong_\"quoted\""]["num_values"],
            serde_json::json!(0)
        );
        let a = j.find("tcp_buffer_tuner").expect("a");
        let b = j.find("tcp_conn_tuner").expect("b");
        assert!(a < b);
        assert!(j.contains("\n\t\"tcp_buffer_tuner\": {\n\t\t\"net.ipv4.tcp_rmem\": "));
    }

    #[test]
    fn jstatus_is_valid_json_with_value_kinds() {
        let j = q("jstatus");
        let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
        let buf = &v["tcp_buffer_tuner"];
        assert_eq!(
            buf["net.ipv4.tcp_rmem"],
            serde_json::json!([4096, 131072, 6291456])
        );
        assert_eq!(buf["net.ipv4.tcp_no_metrics_save"], serde_json::json!(1));
        assert!(buf["net.ipv6.conf.all.x"].is_null());
        assert!(buf
            .as_object()
            .expect("object")
            .contains_key("net.ipv6.conf.all.x"));
        assert_eq!(
            v["tcp_conn_tuner"]["net.ipv4.tcp_congestion_control"],
            serde_json::json!("cubic")
        );
        // Non-consecutive rows of one tuner are grouped together.
        assert_eq!(v.as_object().expect("object").len(), 2);
        assert_eq!(buf.as_object().expect("object").len(), 3);
    }

    #[test]
    fn empty_backend_json_is_valid() {
        let j = format_jstatus(&[]);
        assert_eq!(j, "{\n}\n");
        let _: serde_json::Value = serde_json::from_str(&j).expect("valid");
        let _: serde_json::Value = serde_json::from_str(&format_jtunables(&[])).expect("valid");
    }

    #[test]
    fn prefix_and_terminator_matching() {
        assert_eq!(q("tunersXYZ"), q("tuners"));
        assert_eq!(q("helpme"), q("help"));
        assert_eq!(q("status\n"), q("status"));
        assert_eq!(q("jstatus"), format_jstatus(&Fake.status()));
        assert_eq!(q("tunables"), format_tunables(&Fake.tunables()));
        assert_eq!(handle_request(b"tuners\0garbage", &Fake), q("tuners"));
        assert_eq!(handle_request(b"jtunables\r\n\0", &Fake), q("jtunables"));
        assert_eq!(handle_request(b"rollback  \t", &Fake), q("rollback"));
    }

    #[test]
    fn unknown_request_lists_help() {
        let r = q("foo");
        assert_eq!(
            r,
            format!(
                "unknown request 'foo'; supported requests are:\n{}",
                format_help()
            )
        );
        assert!(q(" tuners").starts_with("unknown request ' tuners'"));
        assert!(q("a\x1bb").starts_with("unknown request 'a\\u{1b}b'"));
    }

    #[test]
    fn too_long_and_malformed() {
        assert_eq!(q(&"a".repeat(81)), ERR_TOO_LONG);
        assert!(q(&"a".repeat(80)).starts_with("unknown request"));
        assert_eq!(handle_request(&[b'x'; READ_MAX], &Fake), ERR_TOO_LONG);
        assert_eq!(handle_request(b"", &Fake), ERR_MALFORMED);
        assert_eq!(handle_request(b"\0", &Fake), ERR_MALFORMED);
        assert_eq!(handle_request(b"  \n", &Fake), ERR_MALFORMED);
        assert_eq!(handle_request(b"\xff\xfetuners", &Fake), ERR_MALFORMED);
        assert_eq!(
            ERR_TOO_LONG,
            format!("error: request too long (max {REQUEST_MAX} bytes)")
        );
    }

    // ---- server integration ------------------------------------------------------------

    fn temp_run_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "bpftune-query-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn free_port() -> u16 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn raw_unix(path: &Path, send: &[u8], close_write: bool) -> io::Result<Vec<u8>> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(send)?;
        if close_write {
            s.shutdown(Shutdown::Write)?;
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn server_roundtrip_unix_and_tcp() {
        let dir = temp_run_dir();
        let port = free_port();
        let server = QueryServer::start(&dir, Some(port), Arc::new(Fake)).expect("start");
        let sock = socket_path(&dir);
        assert_eq!(server.socket_path(), sock.as_path());
        assert_eq!(server.tcp_port(), Some(port));
        let meta = fs::symlink_metadata(&sock).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(port_file_path(&dir)).expect("port file"),
            format!("{port}\n")
        );

        assert_eq!(client(&dir, None, "tuners").expect("unix"), q("tuners"));
        assert_eq!(client(&dir, Some(port), "jstatus").expect("tcp"), q("jstatus"));
        assert_eq!(client(&dir, None, "bogus").expect("unix"), q("bogus"));

        // Garbage and oversized requests do not hurt the server.
        let r = raw_unix(&sock, &[b'x'; 5000], false).expect("oversized");
        assert_eq!(r, format!("{ERR_TOO_LONG}\0").into_bytes());
        let r = raw_unix(&sock, b"\xff\xfe\x00", false).expect("non-utf8");
        assert_eq!(r, format!("{ERR_MALFORMED}\0").into_bytes());
        let r = raw_unix(&sock, b"", true).expect("empty");
        assert_eq!(r, format!("{ERR_MALFORMED}\0").into_bytes());
        drop(UnixStream::connect(&sock).expect("connect-and-close"));
        let r = raw_unix(&sock, b"status\n", false).expect("newline");
        assert_eq!(r, format!("{}\0", q("status")).into_bytes());
        let r = raw_unix(&sock, b"summary", true).expect("eof-terminated");
        assert_eq!(r, format!("{}\0", q("summary")).into_bytes());
        // Unterminated request, write side left open: answered after the read timeout.
        let t0 = Instant::now();
        let r = raw_unix(&sock, b"tuners", false).expect("unterminated");
        assert_eq!(r, format!("{}\0", q("tuners")).into_bytes());
        assert!(t0.elapsed() >= Duration::from_millis(1500));
        {
            let mut t = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("tcp");
            t.write_all(&[0xffu8; 300]).expect("write");
        }

        // A stuck client (connects, sends nothing) delays the next query by ≤ ~2 s.
        let stuck = UnixStream::connect(&sock).expect("stuck");
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(client(&dir, None, "help").expect("after stuck"), q("help"));
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(stuck);

        // A second server on the same run dir is refused while the first runs.
        let err = QueryServer::start(&dir, None, Arc::new(Fake)).expect_err("in use");
        assert!(err.to_string().contains("already listening"), "{err}");

        assert_eq!(client(&dir, Some(port), "tunables").expect("tcp"), q("tunables"));
        server.stop();
        assert!(fs::symlink_metadata(&sock).is_err(), "socket removed");
        assert!(
            fs::symlink_metadata(port_file_path(&dir)).is_err(),
            "port file removed"
        );

        let err = client(&dir, None, "tuners").expect_err("no server");
        let msg = err.to_string();
        assert!(
            msg.starts_with("is bpftune running? could not connect to"),
            "{msg}"
        );
        assert_eq!(
            err.downcast_ref::<ClientError>().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
        let err = client(&dir, Some(port), "tuners").expect_err("no tcp server");
        assert_eq!(
            err.downcast_ref::<ClientError>().and_then(|e| e.raw_os_error()),
            Some(libc::ECONNREFUSED)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_socket_is_replaced_and_non_socket_refused() {
        let dir = temp_run_dir();
        let sock = socket_path(&dir);
        drop(UnixListener::bind(&sock).expect("stale"));
        assert!(fs::symlink_metadata(&sock).is_ok());
        fs::write(port_file_path(&dir), "1234\n").expect("stale port file");
        let server = QueryServer::start(&dir, None, Arc::new(Fake)).expect("start over stale");
        assert!(server.tcp_port().is_none());
        assert!(fs::symlink_metadata(port_file_path(&dir)).is_err());
        assert_eq!(client(&dir, None, "tuners").expect("query"), q("tuners"));
        server.stop();
        assert!(fs::symlink_metadata(&sock).is_err());

        fs::write(&sock, "not a socket").expect("regular file");
        let err = QueryServer::start(&dir, None, Arc::new(Fake)).expect_err("refuse");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&sock).expect("kept"), "not a socket");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ephemeral_port_and_drop_cleans_up() {
        let dir = temp_run_dir();
        let server = QueryServer::start(&dir, Some(0), Arc::new(Fake)).expect("start");
        let port = server.tcp_port().expect("port");
        assert_ne!(port, 0);
        assert_eq!(
            fs::read_to_string(port_file_path(&dir)).expect("port file"),
            format!("{port}\n")
        );
        assert_eq!(client(&dir, Some(port), "help").expect("tcp"), q("help"));
        drop(server);
        assert!(fs::symlink_metadata(socket_path(&dir)).is_err());
        assert!(fs::symlink_metadata(port_file_path(&dir)).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_rejects_nul() {
        let err = client(Path::new("/nonexistent"), None, "tu\0ners").expect_err("nul");
        assert!(err.to_string().contains("NUL"));
    }
}

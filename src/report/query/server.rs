//! The query server: a Unix socket (and with `-p` a loopback TCP listener). One thread
//! accepts; each connection is served on its own short-lived thread, at most
//! [`MAX_CONNS`] at a time, one request per connection. A slow client therefore holds
//! only its own thread (for at most the per-connection deadlines), never the listener;
//! connections over the cap get a short "busy" reply without blocking and are closed.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::socket::MsgFlags;

use super::conn::{is_timeout, remaining, Conn};
use super::protocol::handle_request;
use super::{
    port_file_path, socket_path, QueryBackend, ERR_BUSY, ERR_INTERNAL, IO_TIMEOUT, MAX_CONNS,
    PERMISSION_DENIED, PORT_FILE_NAME, READ_MAX, SOCKET_NAME,
};
use crate::kernel::wait::Waiter;

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

pub(crate) fn write_all_deadline<C: Conn>(c: &mut C, mut data: &[u8], deadline: Instant) -> io::Result<()> {
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

fn serve_unix(s: &mut UnixStream, backend: &dyn QueryBackend) {
    if let Err(e) = s.set_nonblocking(false) {
        tracing::debug!("query: cannot make connection blocking: {e}");
        return;
    }
    match peer_allowed(s) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("query: refusing non-root peer on unix socket");
            reply_and_close(s, PERMISSION_DENIED);
            return;
        }
        Err(e) => {
            tracing::debug!("query: cannot read peer credentials: {e}");
            reply_and_close(s, PERMISSION_DENIED);
            return;
        }
    }
    if let Err(e) = serve_conn(s, backend, "unix socket") {
        tracing::debug!("query connection (unix socket) failed: {e}");
    }
}

fn serve_tcp(s: &mut TcpStream, peer: SocketAddr, backend: &dyn QueryBackend) {
    if let Err(e) = s.set_nonblocking(false) {
        tracing::debug!("query: cannot make connection blocking: {e}");
        return;
    }
    let peer = peer.to_string();
    if let Err(e) = serve_conn(s, backend, &peer) {
        tracing::debug!("query connection ({peer}) failed: {e}");
    }
}

/// Busy reply to a connection over the cap: one non-blocking send, then close. The
/// listener thread never waits on such a peer.
fn refuse_busy<C: Conn>(c: &C) {
    let mut out = ERR_BUSY.as_bytes().to_vec();
    out.push(0);
    let _ = nix::sys::socket::send(
        c.as_raw_fd(),
        &out,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
    let _ = c.shut_wr();
    // Unread input at close makes the kernel reset the connection, and the peer could
    // lose the reply: discard what has already arrived, without waiting for more.
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match nix::sys::socket::recv(c.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(k) if k > 0 => {}
            _ => break,
        }
    }
}

/// The connection threads: at most [`MAX_CONNS`] alive; finished ones are joined on the
/// next dispatch, all of them when the server stops.
struct ConnPool {
    backend: Arc<dyn QueryBackend>,
    active: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

/// Decrements the live-connection count when the connection thread ends, even by panic.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnPool {
    fn new(backend: Arc<dyn QueryBackend>, active: Arc<AtomicUsize>) -> ConnPool {
        ConnPool {
            backend,
            active,
            threads: Vec::new(),
        }
    }

    fn reap(&mut self) {
        let (done, live): (Vec<_>, Vec<_>) = self.threads.drain(..).partition(|t| t.is_finished());
        self.threads = live;
        for t in done {
            if t.join().is_err() {
                tracing::debug!("query connection thread panicked");
            }
        }
    }

    /// Serves `s` on a new thread, or refuses it at once when [`MAX_CONNS`] are live.
    /// Threads spawned here inherit the listener thread's (empty) effective capability
    /// set, see [`crate::kernel::privs`].
    fn dispatch<C, F>(&mut self, s: C, peer: String, serve: F)
    where
        C: Conn + Send + 'static,
        F: FnOnce(C, &dyn QueryBackend) + Send + 'static,
    {
        self.reap();
        if self.active.load(Ordering::Acquire) >= MAX_CONNS {
            tracing::debug!("query from {peer}: {MAX_CONNS} connections busy, refusing");
            refuse_busy(&s);
            return;
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.active));
        let backend = Arc::clone(&self.backend);
        let spawned = std::thread::Builder::new()
            .name("bpftune-qconn".into())
            .spawn(move || {
                let _slot = slot;
                serve(s, &*backend);
            });
        match spawned {
            Ok(t) => self.threads.push(t),
            // The closure (with the connection and slot) was dropped: the peer sees EOF.
            Err(e) => tracing::debug!("query from {peer}: cannot spawn connection thread: {e}"),
        }
    }

    fn join_all(&mut self) {
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::debug!("query connection thread panicked");
            }
        }
    }
}

const WAKE: u64 = 0;
const UNIX: u64 = 1;
const TCP: u64 = 2;

fn serve_loop(
    unix: UnixListener,
    tcp: Option<TcpListener>,
    wake: UnixStream,
    backend: Arc<dyn QueryBackend>,
    active: Arc<AtomicUsize>,
) {
    let backoff = || std::thread::sleep(Duration::from_millis(50));
    let set = match Waiter::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("query server: {e}");
            return;
        }
    };
    let mut armed = set.add(&wake, WAKE).and_then(|()| set.add(&unix, UNIX));
    if let Some(l) = &tcp {
        armed = armed.and_then(|()| set.add(l, TCP));
    }
    if let Err(e) = armed {
        tracing::error!("query server: {e}");
        return;
    }
    let mut pool = ConnPool::new(backend, active);
    loop {
        let ready = match set.wait(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("query server: wait failed: {e}");
                backoff();
                continue;
            }
        };
        if ready.contains(&WAKE) {
            break;
        }
        if ready.contains(&UNIX) {
            match unix.accept() {
                Ok((s, _)) => pool.dispatch(s, "unix socket".to_string(), |mut s, b| serve_unix(&mut s, b)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!("query server: accept (unix) failed: {e}");
                    backoff();
                }
            }
        }
        if let Some(l) = tcp.as_ref().filter(|_| ready.contains(&TCP)) {
            match l.accept() {
                Ok((s, peer)) => {
                    pool.dispatch(s, peer.to_string(), move |mut s, b| serve_tcp(&mut s, peer, b))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!("query server: accept (tcp) failed: {e}");
                    backoff();
                }
            }
        }
    }
    // Connections in progress end by their own deadlines; wait for them so that
    // stop() leaves no thread behind.
    pool.join_all();
    tracing::debug!("query server stopped");
}

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
    /// Connections being served right now (shared with the connection threads).
    active: Arc<AtomicUsize>,
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
            // The daemon holds the run directory's lock by now (daemon/instance.rs), so
            // an answer here comes from a daemon that takes no lock (C bpftune, an older
            // bpftune-rs): refused as always.
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
            active: Arc::new(AtomicUsize::new(0)),
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
        let active = Arc::clone(&server.active);
        let thread = std::thread::Builder::new()
            .name("bpftune-query".into())
            .spawn(move || {
                // Spawned early in start-up: queries need no capabilities of their own
                // (a namespace read raises what it needs on its setns thread).
                if let Err(e) = crate::kernel::privs::drop_to_idle() {
                    tracing::debug!("query server: {e}");
                }
                serve_loop(unix, tcp, wake_rx, backend, active)
            })
            .context("cannot spawn query server thread")?;
        server.wake = Some(wake_tx);
        server.thread = Some(thread);
        Ok(server)
    }

    /// Path of the Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Connections being served right now (at most [`MAX_CONNS`]).
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Bound TCP port, if `-p` was given.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// Stops the threads (after the connections in progress, a few seconds at most),
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

//! Serving the metrics: `GET /metrics` over HTTP (`--metrics-listen`) and a textfile for
//! node_exporter's textfile collector (`--metrics-textfile`).
//!
//! The HTTP side is one thread that blocks in accept(2) (no wake-ups while nobody
//! scrapes) and handles one connection at a time with bounded work: at most
//! [`MAX_REQUEST`] bytes of request head, read within [`REQUEST_DEADLINE`], parsed with
//! `httparse`, answered and closed. A slow or hostile client can delay a scrape by a few
//! seconds, never pile up threads or memory. Scrapers (Prometheus) make one request per
//! interval, so neither keep-alive nor concurrency is needed.
//!
//! Why not a server crate: the small synchronous one, `tiny_http`, hands each
//! connection to a worker pool that grows without bound (tiny-http/tiny-http#221, open)
//! and has no deadline for the request head, so slow clients cost a root daemon one
//! thread each; the others need an async runtime, which this daemon does not run. The
//! parsing, where the mistakes are made, is `httparse`'s (hyper's parser).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Source;

/// Largest request head we read.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long unread request bytes are drained after the reply.
const LINGER: Duration = Duration::from_millis(200);
/// Content type of `prometheus-client`'s text encoding.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-listen {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--metrics-textfile {path}: {why}")]
    Textfile { path: PathBuf, why: String },
    #[error("cannot start metrics thread: {0}")]
    Thread(std::io::Error),
}

/// `--metrics-listen`: `ADDR:PORT` (IPv6 as `[ADDR]:PORT`), or `:PORT` / `PORT` for
/// 127.0.0.1: metrics leave the host only when the operator names an address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = s.strip_prefix(':').unwrap_or(s);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("port out of range: {port}"));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("expected ADDR:PORT, [IPV6]:PORT, :PORT or PORT, got {s:?}"))
}

/// What to serve, and where.
#[derive(Debug, Clone, Default)]
pub struct ExporterConfig {
    pub listen: Option<SocketAddr>,
    pub textfile: Option<PathBuf>,
    /// How often the textfile is rewritten.
    pub interval: Duration,
}

/// The running exporter threads. [`Exporter::finish`] (or drop) stops them.
pub struct Exporter {
    http: Option<HttpServer>,
    textfile: Option<TextfileWriter>,
    source: Arc<Source>,
}

impl Exporter {
    /// Binds the listener, writes the textfile once (so a wrong path fails now, not in
    /// 15 s) and starts the threads.
    pub fn start(config: &ExporterConfig, source: Arc<Source>) -> Result<Exporter, MetricsError> {
        let mut textfile = None;
        if let Some(path) = &config.textfile {
            check_textfile_path(path)?;
            let text = source.render().map_err(|e| MetricsError::Textfile {
                path: path.clone(),
                why: format!("cannot render metrics: {e}"),
            })?;
            write_atomically(path, &text).map_err(|e| MetricsError::Textfile {
                path: path.clone(),
                why: e.to_string(),
            })?;
            textfile = Some(TextfileWriter::start(
                path.clone(),
                config.interval,
                source.clone(),
            )?);
        }
        let http = match config.listen {
            Some(addr) => Some(HttpServer::start(addr, source.clone())?),
            None => None,
        };
        Ok(Exporter {
            http,
            textfile,
            source,
        })
    }

    /// The address the HTTP server listens on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Stops both threads and writes the textfile one last time (final counters).
    pub fn finish(mut self) {
        self.http.take();
        if let Some(w) = self.textfile.take() {
            let path = w.path.clone();
            let failed = w.failed.clone();
            drop(w);
            write_logged(&path, &self.source, &failed);
        }
    }
}

fn check_textfile_path(path: &Path) -> Result<(), MetricsError> {
    let err = |why: String| MetricsError::Textfile {
        path: path.to_path_buf(),
        why,
    };
    if path.file_name().is_none() || path.is_dir() {
        return Err(err("not a file name".into()));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(err(format!("directory {} does not exist", dir.display())));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` atomically: writes a temporary file in the same directory (not
/// ending in `.prom`, so the textfile collector never reads it half-written) and renames
/// it over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One textfile write; a failure is logged once until a write succeeds again (the
/// daemon keeps running: the directory may come back).
fn write_logged(path: &Path, source: &Source, failed: &AtomicBool) {
    let result = source
        .render()
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|text| write_atomically(path, &text));
    match result {
        Ok(()) => {
            if failed.swap(false, Ordering::Relaxed) {
                tracing::info!("metrics textfile {} written again", path.display());
            }
        }
        Err(e) => {
            if !failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot write metrics textfile {}: {e}; will keep trying",
                    path.display()
                );
            }
        }
    }
}

struct TextfileWriter {
    path: PathBuf,
    failed: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TextfileWriter {
    fn start(path: PathBuf, interval: Duration, source: Arc<Source>) -> Result<Self, MetricsError> {
        let (tx, rx) = mpsc::channel::<()>();
        let failed = Arc::new(AtomicBool::new(false));
        let (p, f) = (path.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-textfile".into())
            .spawn(move || {
                // Sleeps until the next write or until stopped (sender dropped).
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    write_logged(&p, &source, &f);
                }
            })
            .map_err(MetricsError::Thread)?;
        Ok(TextfileWriter {
            path,
            failed,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for TextfileWriter {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct HttpServer {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(addr: SocketAddr, source: Arc<Source>) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, s) = (listener.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((stream, _)) => {
                            if s.load(Ordering::Relaxed) {
                                break;
                            }
                            serve_one(stream, &source);
                        }
                        Err(_) if s.load(Ordering::Relaxed) => break,
                        Err(e) => {
                            tracing::debug!("metrics: accept: {e}");
                            // e.g. EMFILE: do not spin.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(MetricsError::Thread)?;
        tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
        Ok(HttpServer {
            addr,
            listener,
            stopping,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // shutdown(2) on a listening socket wakes the thread blocked in accept(2).
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The response to one request: (status line, body).
pub(crate) fn route(method: &str, path: &str) -> (&'static str, bool) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", true),
        (_, "/metrics") => ("405 Method Not Allowed", false),
        _ => ("404 Not Found", false),
    }
}

fn serve_one(mut stream: TcpStream, source: &Source) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let (status, body, head_only) = loop {
        let left = REQUEST_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        let Some(space) = buf.get_mut(n..).filter(|s| !s.is_empty()) else {
            break ("431 Request Header Fields Too Large", None, false);
        };
        match stream.read(space) {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("");
                let (status, ok) = route(method, req.path.unwrap_or(""));
                if !ok {
                    break (status, None, false);
                }
                match source.render() {
                    Ok(text) => break (status, Some(text), method == "HEAD"),
                    Err(e) => {
                        tracing::warn!("metrics: cannot render: {e}");
                        break ("500 Internal Server Error", None, false);
                    }
                }
            }
            Err(_) => break ("400 Bad Request", None, false),
        }
    };
    let (ctype, body) = match &body {
        Some(b) => (CONTENT_TYPE, b.as_str()),
        None => ("text/plain; charset=utf-8", status),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let _ = stream.write_all(body.as_bytes());
    }
    let _ = stream.flush();
    // Lingering close: a client whose request we did not read to the end (too large,
    // malformed) would otherwise get a reset that can destroy our reply in flight.
    // Bounded: at most a few reads, LINGER in all.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGER;
    for _ in 0..16 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "serve_prop.rs"]
mod prop_tests;

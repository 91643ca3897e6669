//! The delay-line forwarder run by the `bpftune-delayline` binary.
//!
//! It creates (attaches to) two TUN devices by name in its own netns
//! (IFF_TUN | IFF_NO_PI, never TUNSETPERSIST, so the devices vanish when the
//! process exits), prints `ready A B` on stdout and then copies every packet
//! read from one device to the other after a fixed delay, with optional
//! random loss.
//!
//! Per direction there is a reader thread (blocking `read`, timestamp,
//! push onto an unbounded FIFO channel) and a writer thread (pop, sleep
//! until the packet's deadline, `write`). Buffers are recycled through a
//! second channel. The main thread watches for the end of life: stdin
//! closed (when `watch_stdin`), the parent process gone (`getppid()`
//! changed; `PR_SET_PDEATHSIG` is not used because it fires when the
//! parent *thread* exits), or `max_lifetime` reached.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::names::{random_seed, splitmix64};

/// Default bound on bytes queued per direction; packets beyond it are
/// dropped (counted as `overflow`).
pub const DEFAULT_QUEUE_LIMIT: usize = 256 << 20;

/// Largest accepted one-way delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Forwarder settings; [`ForwarderConfig::to_args`] and
/// [`ForwarderConfig::from_args`] are the command line of
/// `bpftune-delayline`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderConfig {
    /// First TUN device name (≤ 15 chars).
    pub dev_a: String,
    /// Second TUN device name (≤ 15 chars).
    pub dev_b: String,
    /// Delay applied to each packet, both directions.
    pub delay: Duration,
    /// Random loss in percent (0–100), both directions.
    pub loss_percent: f64,
    /// Largest packet expected; read buffers are a bit larger.
    pub mtu: u32,
    /// Exit after this long whatever happens.
    pub max_lifetime: Duration,
    /// Exit when stdin reaches EOF (the spawning process closed the pipe or
    /// died).
    pub watch_stdin: bool,
    /// Bytes queued per direction beyond which packets are dropped.
    pub queue_limit: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            dev_a: String::new(),
            dev_b: String::new(),
            delay: Duration::from_millis(20),
            loss_percent: 0.0,
            mtu: 9000,
            max_lifetime: Duration::from_secs(600),
            watch_stdin: true,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// Usage text of `bpftune-delayline`.
pub const USAGE: &str = "usage: bpftune-delayline --dev-a NAME --dev-b NAME [--delay-us N] \
[--loss PERCENT] [--mtu N] [--max-lifetime-s N] [--queue-limit BYTES] [--ignore-stdin]";

impl ForwarderConfig {
    /// Command-line arguments reproducing this configuration.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--dev-a".to_string(),
            self.dev_a.clone(),
            "--dev-b".to_string(),
            self.dev_b.clone(),
            "--delay-us".to_string(),
            self.delay.as_micros().to_string(),
            "--loss".to_string(),
            self.loss_percent.to_string(),
            "--mtu".to_string(),
            self.mtu.to_string(),
            "--max-lifetime-s".to_string(),
            self.max_lifetime.as_secs().max(1).to_string(),
            "--queue-limit".to_string(),
            self.queue_limit.to_string(),
        ];
        if !self.watch_stdin {
            v.push("--ignore-stdin".to_string());
        }
        v
    }

    /// Parse the arguments (without the program name).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<ForwarderConfig> {
        let mut c = ForwarderConfig::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
            match a.as_str() {
                "--dev-a" => c.dev_a = val("--dev-a")?,
                "--dev-b" => c.dev_b = val("--dev-b")?,
                "--delay-us" => {
                    c.delay = Duration::from_micros(val("--delay-us")?.parse().context("--delay-us")?)
                }
                "--delay-ms" => {
                    c.delay = Duration::from_millis(val("--delay-ms")?.parse().context("--delay-ms")?)
                }
                "--loss" => c.loss_percent = val("--loss")?.parse().context("--loss")?,
                "--mtu" => c.mtu = val("--mtu")?.parse().context("--mtu")?,
                "--max-lifetime-s" => {
                    c.max_lifetime =
                        Duration::from_secs(val("--max-lifetime-s")?.parse().context("--max-lifetime-s")?)
                }
                "--queue-limit" => c.queue_limit = val("--queue-limit")?.parse().context("--queue-limit")?,
                "--ignore-stdin" => c.watch_stdin = false,
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Check ranges and names.
    pub fn validate(&self) -> Result<()> {
        for d in [&self.dev_a, &self.dev_b] {
            if d.is_empty() || d.len() > 15 || d.contains(['/', ':', ' ', '\0']) {
                bail!("invalid device name {d:?}\n{USAGE}");
            }
        }
        if self.dev_a == self.dev_b {
            bail!("--dev-a and --dev-b must differ");
        }
        if !(0.0..=100.0).contains(&self.loss_percent) {
            bail!("loss must be within 0..=100, got {}", self.loss_percent);
        }
        if self.delay > MAX_DELAY {
            bail!("delay must be at most {MAX_DELAY:?}, got {:?}", self.delay);
        }
        if !(68..=65535).contains(&self.mtu) {
            bail!("mtu must be within 68..=65535, got {}", self.mtu);
        }
        Ok(())
    }
}

/// Open `/dev/net/tun` and attach it to (creating if needed) the TUN device
/// `name` with IFF_TUN | IFF_NO_PI. Not persistent: the device is removed
/// when the returned descriptor is closed.
pub fn open_tun(name: &str) -> Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("invalid TUN device name {name:?}");
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    // SAFETY: ifreq is plain old data (arrays and a union of integers and
    // pointers) for which all-zero bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to a struct ifreq, which `ifr` is; it
    // lives across the call and the descriptor is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("TUNSETIFF {name} (IFF_TUN|IFF_NO_PI)"));
    }
    let got: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    if got != name.as_bytes() {
        bail!(
            "TUNSETIFF created {:?} instead of {name:?}",
            String::from_utf8_lossy(&got)
        );
    }
    Ok(file)
}

/// Per-direction counters.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Packets written to the other side.
    pub forwarded: AtomicU64,
    /// Bytes written to the other side.
    pub bytes: AtomicU64,
    /// Packets dropped by the configured random loss.
    pub lost: AtomicU64,
    /// Packets dropped because the queue limit was reached.
    pub overflow: AtomicU64,
    /// Packets that filled the whole read buffer (possibly truncated) and were dropped.
    pub oversize: AtomicU64,
    /// Failed writes (e.g. the other device is down).
    pub write_errors: AtomicU64,
}

impl DirStats {
    fn render(&self, dir: &str) -> String {
        format!(
            "{dir}_pkts={} {dir}_bytes={} {dir}_lost={} {dir}_overflow={} {dir}_oversize={} {dir}_write_errors={}",
            self.forwarded.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            self.overflow.load(Ordering::Relaxed),
            self.oversize.load(Ordering::Relaxed),
            self.write_errors.load(Ordering::Relaxed),
        )
    }
}

struct Packet {
    deadline: Instant,
    buf: Box<[u8]>,
    len: usize,
}

struct Direction {
    input: Arc<File>,
    output: Arc<File>,
    delay: Duration,
    /// Drop a packet when a random u64 is below this (0 = never).
    loss_threshold: u64,
    buf_size: usize,
    queue_limit: usize,
    stats: Arc<DirStats>,
    name: String,
}

fn fatal(msg: String) -> ! {
    let _ = writeln!(std::io::stderr(), "bpftune-delayline: {msg}");
    std::process::exit(2)
}

impl Direction {
    fn start(self) -> Result<()> {
        let (tx, rx) = channel::<Packet>();
        let (pool_tx, pool_rx) = channel::<Box<[u8]>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let me = Arc::new(self);
        {
            let me = Arc::clone(&me);
            let queued = Arc::clone(&queued);
            let pool_tx = pool_tx.clone();
            std::thread::Builder::new()
                .name(format!("rd-{}", me.name))
                .spawn(move || me.read_loop(tx, pool_rx, pool_tx, queued))
                .context("spawn reader")?;
        }
        std::thread::Builder::new()
            .name(format!("wr-{}", me.name))
            .spawn(move || me.write_loop(rx, pool_tx, queued))
            .context("spawn writer")?;
        Ok(())
    }

    fn read_loop(
        &self,
        tx: Sender<Packet>,
        pool_rx: Receiver<Box<[u8]>>,
        pool_tx: Sender<Box<[u8]>>,
        queued: Arc<AtomicUsize>,
    ) {
        let mut rng = random_seed();
        let mut input = &*self.input;
        loop {
            let mut buf = pool_rx
                .try_recv()
                .unwrap_or_else(|_| vec![0u8; self.buf_size].into_boxed_slice());
            let len = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let _ = pool_tx.send(buf);
                    continue;
                }
                Err(e) => fatal(format!("{}: read: {e} (device gone?)", self.name)),
            };
            if len == 0 {
                let _ = pool_tx.send(buf);
                continue;
            }
            if len >= buf.len() {
                self.stats.oversize.fetch_add(1, Ordering::Relaxed);
                let _ = pool_tx.send(buf);
                continue;
            }
            if self.loss_threshold > 0 && splitmix64(&mut rng) < self.loss_threshold {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                let _ = pool_tx.send(buf);
                continue;
            }
            if queued.load(Ordering::Relaxed) + len > self.queue_limit {
                self.stats.overflow.fetch_add(1, Ordering::Relaxed);
                let _ = pool_tx.send(buf);
                continue;
            }
            queued.fetch_add(len, Ordering::Relaxed);
            let deadline = Instant::now() + self.delay;
            if tx.send(Packet { deadline, buf, len }).is_err() {
                return;
            }
        }
    }

    fn write_loop(&self, rx: Receiver<Packet>, pool_tx: Sender<Box<[u8]>>, queued: Arc<AtomicUsize>) {
        let mut output = &*self.output;
        while let Ok(p) = rx.recv() {
            let now = Instant::now();
            if p.deadline > now {
                std::thread::sleep(p.deadline - now);
            }
            let data = p.buf.get(..p.len).unwrap_or(&[]);
            match output.write(data) {
                Ok(_) => {
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(p.len as u64, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                    fatal(format!("{}: write: {e} (device gone)", self.name))
                }
                Err(_) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            queued.fetch_sub(p.len, Ordering::Relaxed);
            // The reader may be gone (fatal exit in progress): ignore.
            let _ = pool_tx.send(p.buf);
        }
    }
}

/// Why the forwarder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// stdin reached EOF.
    StdinClosed,
    /// The parent process exited.
    ParentGone,
    /// `max_lifetime` elapsed.
    Lifetime,
}

/// Handle on running forwarder threads.
pub struct Forwarder {
    a_to_b: Arc<DirStats>,
    b_to_a: Arc<DirStats>,
    // Keep the devices open for as long as the forwarder lives.
    _tun_a: Arc<File>,
    _tun_b: Arc<File>,
}

impl Forwarder {
    /// Create/attach the two TUN devices and start the four threads. The
    /// threads run until the process exits.
    pub fn start(cfg: &ForwarderConfig) -> Result<Forwarder> {
        cfg.validate()?;
        // Sleep precision matters for the delay: shrink the 50 µs default
        // timer slack (inherited by the threads spawned below).
        let _ = nix::sys::prctl::set_timerslack(1_000);
        let tun_a = Arc::new(open_tun(&cfg.dev_a)?);
        let tun_b = Arc::new(open_tun(&cfg.dev_b)?);
        let loss_threshold = if cfg.loss_percent <= 0.0 {
            0
        } else if cfg.loss_percent >= 100.0 {
            u64::MAX
        } else {
            (cfg.loss_percent / 100.0 * u64::MAX as f64) as u64
        };
        let buf_size = cfg.mtu as usize + 1024;
        let a_to_b = Arc::new(DirStats::default());
        let b_to_a = Arc::new(DirStats::default());
        for (input, output, stats, name) in [
            (&tun_a, &tun_b, &a_to_b, format!("{}>{}", cfg.dev_a, cfg.dev_b)),
            (&tun_b, &tun_a, &b_to_a, format!("{}>{}", cfg.dev_b, cfg.dev_a)),
        ] {
            Direction {
                input: Arc::clone(input),
                output: Arc::clone(output),
                delay: cfg.delay,
                loss_threshold,
                buf_size,
                queue_limit: cfg.queue_limit,
                stats: Arc::clone(stats),
                name,
            }
            .start()?;
        }
        Ok(Forwarder {
            a_to_b,
            b_to_a,
            _tun_a: tun_a,
            _tun_b: tun_b,
        })
    }

    /// One-line counters: `stats ab_pkts=… ba_pkts=…`.
    pub fn stats_line(&self) -> String {
        format!("stats {} {}", self.a_to_b.render("ab"), self.b_to_a.render("ba"))
    }

    /// Block until the end of life (see module docs) and say why.
    pub fn wait_for_exit(&self, cfg: &ForwarderConfig) -> ExitReason {
        let start = Instant::now();
        let ppid0 = nix::unistd::getppid();
        let stdin = std::io::stdin();
        let mut watch_stdin = cfg.watch_stdin;
        let mut scratch = [0u8; 256];
        loop {
            if ppid0.as_raw() <= 1 || nix::unistd::getppid() != ppid0 {
                return ExitReason::ParentGone;
            }
            let elapsed = start.elapsed();
            if elapsed >= cfg.max_lifetime {
                return ExitReason::Lifetime;
            }
            let tick = Duration::from_millis(200).min(cfg.max_lifetime - elapsed);
            if watch_stdin {
                let fd = stdin.as_fd();
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let timeout = nix::poll::PollTimeout::try_from(tick).unwrap_or(nix::poll::PollTimeout::ZERO);
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(0) => {}
                    Ok(_) => {
                        let revents = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
                        if revents.contains(nix::poll::PollFlags::POLLNVAL) {
                            watch_stdin = false;
                            continue;
                        }
                        match nix::unistd::read(fd.as_raw_fd(), &mut scratch) {
                            Ok(0) => return ExitReason::StdinClosed,
                            Ok(_) => {}
                            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                            Err(_) => return ExitReason::StdinClosed,
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => watch_stdin = false,
                }
            } else {
                std::thread::sleep(tick);
            }
        }
    }
}

/// Entry point of `bpftune-delayline`: returns the process exit code.
pub fn main_with_args<I: IntoIterator<Item = String>>(args: I) -> i32 {
    let mut out = std::io::stdout();
    let cfg = match ForwarderConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "error {e:#}");
            let _ = out.flush();
            let _ = writeln!(std::io::stderr(), "bpftune-delayline: {e:#}");
            return 2;
        }
    };
    let fwd = match Forwarder::start(&cfg) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(out, "error {e:#}");
            let _ = out.flush();
            return 1;
        }
    };
    if writeln!(out, "ready {} {}", cfg.dev_a, cfg.dev_b)
        .and_then(|_| out.flush())
        .is_err()
    {
        return 1;
    }
    let reason = fwd.wait_for_exit(&cfg);
    if reason == ExitReason::Lifetime {
        let _ = writeln!(
            std::io::stderr(),
            "bpftune-delayline: max lifetime {:?} reached, exiting",
            cfg.max_lifetime
        );
    }
    let _ = writeln!(out, "{}", fwd.stats_line());
    let _ = out.flush();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_roundtrip() -> Result<()> {
        let c = ForwarderConfig {
            dev_a: "bt-1-a".into(),
            dev_b: "bt-1-b".into(),
            delay: Duration::from_micros(20_500),
            loss_percent: 1.5,
            mtu: 1500,
            max_lifetime: Duration::from_secs(30),
            watch_stdin: false,
            queue_limit: 1 << 20,
        };
        assert_eq!(ForwarderConfig::from_args(c.to_args())?, c);
        Ok(())
    }

    #[test]
    fn args_rejected() {
        let base = ["--dev-a", "a", "--dev-b", "b"].map(String::from);
        assert!(ForwarderConfig::from_args(base.clone()).is_ok());
        let bad: &[&[&str]] = &[
            &["--dev-a", "a"],
            &["--dev-a", "a", "--dev-b", "a"],
            &["--dev-a", "a", "--dev-b", "b", "--loss", "101"],
            &["--dev-a", "a", "--dev-b", "b", "--mtu", "10"],
            &[
                "--dev-a",
                "a",
                "--dev-b",
                "b",
                "--delay-us",
                "18446744073709551615",
            ],
            &["--dev-a", "a", "--dev-b", "b", "--bogus"],
            &["--dev-a", "a", "--dev-b", "b", "--delay-us"],
            &["--dev-a", "a/x", "--dev-b", "b"],
            &["--dev-a", "0123456789abcdef", "--dev-b", "b"],
        ];
        for args in bad {
            assert!(
                ForwarderConfig::from_args(args.iter().map(|s| s.to_string())).is_err(),
                "{args:?}"
            );
        }
    }
}

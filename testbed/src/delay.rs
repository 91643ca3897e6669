//! A delay line: two namespaces joined by two TUN devices and a forwarder
//! process (`bpftune-delayline`) that delays (and optionally drops) packets.
//!
//! # Finding the forwarder binary
//!
//! [`find_forwarder`] looks, in order, at
//! 1. the environment variable `BPFTUNE_DELAYLINE` (path to the binary);
//! 2. `bpftune-delayline` next to the current executable or in one of its
//!    parent directories (up to 3 levels: tests run from
//!    `target/<profile>/deps/`, binaries live in `target/<profile>/`), then
//!    in `release/` or `debug/` below those directories;
//! 3. every directory of `PATH`.
//!
//! Cargo builds the binary for this crate's own integration tests and for
//! `cargo build/test --workspace`, but not when only another package's tests
//! are built (`cargo test -p bpftune`): run
//! `cargo build -p bpftune-testbed --bins` (same profile) first, or set
//! `BPFTUNE_DELAYLINE`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::forwarder::{ForwarderConfig, DEFAULT_QUEUE_LIMIT};
use crate::names::unique_name;
use crate::netns::Netns;

/// Environment variable naming the forwarder binary.
pub const FORWARDER_ENV: &str = "BPFTUNE_DELAYLINE";
/// File name of the forwarder binary.
pub const FORWARDER_NAME: &str = "bpftune-delayline";
/// Address of the left end (in [`DelayLine::left`]).
pub const LEFT_ADDR: &str = "10.201.0.1";
/// Address of the right end (in [`DelayLine::right`]).
pub const RIGHT_ADDR: &str = "10.201.0.2";
/// txqueuelen of the TUN devices (the default 500 overflows at 40 ms RTT).
pub const TXQUEUELEN: u32 = 10_000;

/// Delay line parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayConfig {
    /// Delay added in each direction (RTT = 2 × this).
    pub one_way_delay: Duration,
    /// Random loss in percent, applied in each direction.
    pub loss_percent: f64,
    /// MTU of both TUN devices.
    pub mtu: u32,
    /// The forwarder exits (and the link disappears) after this long.
    pub max_lifetime: Duration,
}

impl Default for DelayConfig {
    /// 20 ms one way, no loss, MTU 9000, 10 minutes.
    fn default() -> Self {
        DelayConfig {
            one_way_delay: Duration::from_millis(20),
            loss_percent: 0.0,
            mtu: 9000,
            max_lifetime: Duration::from_secs(600),
        }
    }
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Locate the `bpftune-delayline` binary (see the module docs for the order).
pub fn find_forwarder() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(FORWARDER_ENV) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        bail!("{FORWARDER_ENV}={} is not an executable file", p.display());
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let dirs: Vec<&Path> = exe.ancestors().skip(1).take(3).collect();
        let mut candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(FORWARDER_NAME)).collect();
        for d in &dirs {
            for profile in ["release", "debug"] {
                candidates.push(d.join(profile).join(FORWARDER_NAME));
            }
        }
        for c in candidates {
            if is_executable(&c) {
                return Ok(c);
            }
            tried.push(c);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(FORWARDER_NAME);
            if is_executable(&c) {
                return Ok(c);
            }
        }
    }
    bail!(
        "{FORWARDER_NAME} not found (set {FORWARDER_ENV}, or build it with \
         `cargo build -p bpftune-testbed --bins` in the same profile); tried {:?} and PATH",
        tried
    )
}

/// Two namespaces, [`left`](DelayLine::left) and
/// [`right`](DelayLine::right), joined by a point-to-point link with a
/// fixed one-way delay (see [`DelayConfig`]).
///
/// Left has [`LEFT_ADDR`] with peer [`RIGHT_ADDR`], right the reverse. Drop
/// kills the forwarder (the TUN devices vanish with it) and deletes the
/// namespaces. Create it from a thread in the root netns.
#[derive(Debug)]
pub struct DelayLine {
    cfg: DelayConfig,
    forwarder: Option<Child>,
    drain: Option<JoinHandle<()>>,
    output: Arc<Mutex<Vec<String>>>,
    left_dev: String,
    right_dev: String,
    left: Netns,
    right: Netns,
}

impl DelayLine {
    /// Build a delay line with namespace and device names prefixed `bt`.
    pub fn new(cfg: DelayConfig) -> Result<DelayLine> {
        Self::with_prefix(cfg, "bt")
    }

    /// Like [`DelayLine::new`] with a name prefix for the namespaces and TUN
    /// devices (see [`crate::unique_name`]).
    pub fn with_prefix(cfg: DelayConfig, prefix: &str) -> Result<DelayLine> {
        let forwarder = find_forwarder()?;
        Self::with_forwarder(cfg, prefix, &forwarder)
    }

    /// Like [`DelayLine::with_prefix`] with an explicit forwarder binary.
    pub fn with_forwarder(cfg: DelayConfig, prefix: &str, forwarder: &Path) -> Result<DelayLine> {
        let left = Netns::create(prefix)?;
        let right = Netns::create(prefix)?;
        let fcfg = ForwarderConfig {
            dev_a: unique_name(prefix),
            dev_b: unique_name(prefix),
            delay: cfg.one_way_delay,
            loss_percent: cfg.loss_percent,
            mtu: cfg.mtu,
            max_lifetime: cfg.max_lifetime,
            watch_stdin: true,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        };
        fcfg.validate()?;
        let mut child = Command::new(forwarder)
            .args(fcfg.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", forwarder.display()))?;
        let stdout = child.stdout.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut line = DelayLine {
            cfg,
            forwarder: Some(child),
            drain: None,
            output: Arc::clone(&output),
            left_dev: fcfg.dev_a.clone(),
            right_dev: fcfg.dev_b.clone(),
            left,
            right,
        };
        // From here on, Drop cleans up whatever fails.
        let stdout = stdout.ok_or_else(|| anyhow!("forwarder stdout not captured"))?;
        let (first_tx, first_rx) = channel::<String>();
        line.drain = Some(
            std::thread::Builder::new()
                .name("delayline-out".into())
                .spawn(move || {
                    let mut first = Some(first_tx);
                    for l in BufReader::new(stdout).lines() {
                        let Ok(l) = l else { break };
                        match first.take() {
                            Some(tx) => {
                                let _ = tx.send(l);
                            }
                            None => {
                                if let Ok(mut v) = output.lock() {
                                    v.push(l);
                                }
                            }
                        }
                    }
                })
                .context("spawn forwarder output thread")?,
        );
        let expect = format!("ready {} {}", fcfg.dev_a, fcfg.dev_b);
        match first_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l == expect => {}
            Ok(l) => bail!("forwarder {}: {l}", forwarder.display()),
            Err(RecvTimeoutError::Timeout) => {
                bail!("forwarder {} not ready after 10 s", forwarder.display())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = line.forwarder.as_mut().and_then(|c| c.wait().ok());
                bail!(
                    "forwarder {} exited before becoming ready ({status:?})",
                    forwarder.display()
                )
            }
        }
        for (dev, ns, local, peer) in [
            (&line.left_dev, &line.left, LEFT_ADDR, RIGHT_ADDR),
            (&line.right_dev, &line.right, RIGHT_ADDR, LEFT_ADDR),
        ] {
            crate::cmd::run("ip", &["link", "set", dev, "netns", ns.name()])?;
            let mtu = line.cfg.mtu.to_string();
            let qlen = TXQUEUELEN.to_string();
            ns.ip(&["link", "set", dev, "mtu", &mtu, "txqueuelen", &qlen])?;
            // No IPv6 chatter (RS/MLD) through the delay line; best effort.
            let _ = ns.sysctl_write(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "1");
            ns.ip(&["addr", "add", local, "peer", peer, "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(line)
    }

    /// The left namespace (address [`LEFT_ADDR`]).
    pub fn left(&self) -> &Netns {
        &self.left
    }

    /// The right namespace (address [`RIGHT_ADDR`]).
    pub fn right(&self) -> &Netns {
        &self.right
    }

    /// IPv4 address of the left end.
    pub fn left_addr(&self) -> &str {
        LEFT_ADDR
    }

    /// IPv4 address of the right end.
    pub fn right_addr(&self) -> &str {
        RIGHT_ADDR
    }

    /// TUN device in the left namespace.
    pub fn left_dev(&self) -> &str {
        &self.left_dev
    }

    /// TUN device in the right namespace.
    pub fn right_dev(&self) -> &str {
        &self.right_dev
    }

    /// The configuration used.
    pub fn config(&self) -> &DelayConfig {
        &self.cfg
    }

    /// Process id of the forwarder, while it runs.
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.forwarder.as_ref().map(Child::id)
    }

    /// Whether the forwarder is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.forwarder.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stop the forwarder and return its final counters line
    /// (`stats ab_pkts=… ab_lost=… ab_overflow=… ba_pkts=…`; "ab" is left →
    /// right). The namespaces are deleted when `self` drops.
    pub fn stop(mut self) -> Result<String> {
        self.stop_forwarder();
        let lines = self.output.lock().map_err(|_| anyhow!("output lock poisoned"))?;
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with("stats "))
            .cloned()
            .ok_or_else(|| anyhow!("forwarder printed no stats"))
    }

    fn stop_forwarder(&mut self) {
        if let Some(mut child) = self.forwarder.take() {
            // Closing stdin makes it print its counters and exit at once.
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(h) = self.drain.take() {
            // The forwarder is gone, so its stdout is at EOF.
            let _ = h.join();
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop_forwarder();
        // `left` and `right` drop next and delete the namespaces.
    }
}

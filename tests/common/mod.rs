//! Shared harness for bpftune's root integration tests, on top of `bpftune-testbed`
//! (the same harness the benchmarks use through `bpftune-testbed daemon`):
//!
//! * [`Daemon`]: `bpftune_testbed::Daemon` (private run/state/cgroup dirs, readiness,
//!   timestamped log, queries, stop, cleanup) with panicking conveniences for tests.
//! * [`setup`]: the start of every root test: fails loudly ("needs root: …") when not
//!   root, takes the lock (one daemon at a time; the tests also run with
//!   `--test-threads=1`), waits for other bpftune daemons to exit and removes leftovers
//!   of earlier, killed runs.
//! * Namespace helpers: [`Pair`] (two namespaces joined by veth), sysctl reads/writes,
//!   iperf3 runs.
//!
//! Every test that calls [`setup`] is `#[ignore = "needs root …"]`: a plain `cargo test`
//! reports it as ignored (not passed); `make test` runs them with `--include-ignored`.

#![allow(dead_code)]

use std::fs;
use std::ops::Deref;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bpftune_testbed::daemon::{self, DaemonConfig};
#[allow(unused_imports)]
pub use bpftune_testbed::daemon::{tail, wait_timeout};
#[allow(unused_imports)]
pub use bpftune_testbed::{
    iperf3_throughput, unique_name, IperfServer, Netns, SysctlGuard, TempDir, VethPair,
};

/// The daemon binary under test.
pub const BPFTUNE: &str = env!("CARGO_BIN_EXE_bpftune");
/// Prefix of every namespace / interface these tests create (see `unique_name`).
pub const PREFIX: &str = "bpt";
/// How long to wait for other bpftune daemons (other engineers' tests) to exit.
const EXCLUSIVE_WAIT: Duration = Duration::from_secs(180);
/// Readiness wait of [`Daemon::start`]. Loading and verifying every tuner's BPF
/// programs is CPU-bound: on a loaded 2-core host (load average 10) it took over 10 s,
/// the old limit, which made tests/rollback.rs's restart flake. Passing runs never wait
/// this long, so the margin costs nothing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises all daemon-using tests of one test binary.
pub static LOCK: Mutex<()> = Mutex::new(());

/// Takes [`LOCK`], ignoring poisoning (a failed test must not fail the next ones).
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held for the whole of a root test: this binary's lock and the host-wide one (root
/// tests of other test binaries or other checkouts wait for it).
pub struct TestGuard {
    _host: Option<nix::fcntl::Flock<fs::File>>,
    _local: MutexGuard<'static, ()>,
}

/// Common start of every root test: panics ("needs root: …") when not root; otherwise
/// the locks, after removing namespaces, devices and temp dirs left by killed runs.
pub fn setup(test: &str) -> TestGuard {
    bpftune_testbed::require_root(test);
    let local = lock();
    let host = match bpftune_testbed::host::host_test_lock() {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("{test}: WARNING: no host-wide test lock ({e:#}); running anyway");
            None
        }
    };
    let guard = TestGuard {
        _host: host,
        _local: local,
    };
    // Before any measurement or sysctl setup: another daemon would tune our namespaces.
    wait_for_exclusive_host();
    if let Ok(removed) = bpftune_testbed::cleanup_stale(PREFIX) {
        if !removed.is_empty() {
            eprintln!("{test}: removed stale test objects {removed:?}");
        }
    }
    let removed = bpftune_testbed::dirs::cleanup_stale_dirs();
    if !removed.is_empty() {
        eprintln!("{test}: removed stale temp dirs {removed:?}");
    }
    guard
}

/// The environment variable naming the file [`skip!`] appends to (`make test` sets it
/// to `target/test-skips.txt` and truncates that first; `.ci/run` counts its lines as
/// skipped, not passed).
pub const SKIPS_ENV: &str = "BPFTUNE_TEST_SKIPS";

/// Skips the rest of the current test because the machine lacks an environment feature
/// the test declares (2 CPUs, IPv6, cgroup creation, a tool): never for a failure. libtest
/// cannot mark a test ignored at run time and would count the early return as passed, so
/// this records `<test binary>::<test name>: <reason>` in the file named by
/// `BPFTUNE_TEST_SKIPS` (see [`SKIPS_ENV`]), prints the reason to stderr (also when
/// the variable is unset: a plain `cargo test --nocapture` shows it) and returns.
#[allow(unused_macros)]
macro_rules! skip {
    ($($reason:tt)+) => {{
        $crate::common::record_skip(env!("CARGO_CRATE_NAME"), &format!($($reason)+));
        return;
    }};
}
#[allow(unused_imports)]
pub(crate) use skip;

/// What [`skip!`] does before returning: one line to stderr and, with
/// `BPFTUNE_TEST_SKIPS` set, to that file. A file that cannot be written fails the test:
/// a skip must never be lost and so counted as a pass.
pub fn record_skip(binary: &str, reason: &str) {
    let file = std::env::var_os(SKIPS_ENV).map(std::path::PathBuf::from);
    record_skip_to(file.as_deref(), binary, std::thread::current().name(), reason);
}

/// [`record_skip`] with the file and the test's name given.
pub fn record_skip_to(file: Option<&Path>, binary: &str, test: Option<&str>, reason: &str) {
    let line = skip_line(binary, test, reason);
    eprintln!("SKIPPED {line}");
    if let Some(path) = file {
        use std::io::Write as _;
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
            .unwrap_or_else(|e| panic!("cannot record skip in {} ({SKIPS_ENV}): {e}", path.display()));
    }
}

/// `<binary>::<test>: <reason>` on one line (libtest names each test's thread after the
/// test).
pub fn skip_line(binary: &str, test: Option<&str>, reason: &str) -> String {
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{binary}::{}: {reason}", test.unwrap_or("?"))
}

/// Waits (up to 3 min) until no other bpftune daemon runs: a second daemon on the host
/// tunes our namespaces too and its writes look like an administrator's to ours.
pub fn wait_for_exclusive_host() {
    let others = bpftune_testbed::host::wait_for_exclusive_host(EXCLUSIVE_WAIT);
    if !others.is_empty() {
        eprintln!(
            "harness: WARNING: other bpftune daemons still running, results may be disturbed: {others:?}"
        );
    }
}

/// A temp dir (removed on drop); panics if it cannot be made.
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(tag).unwrap_or_else(|e| panic!("{e:#}"))
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// A running `bpftune -s -d -c <tmp>/cgroupv2 …` ([`bpftune_testbed::Daemon`]); the
/// methods here panic with the log tail instead of returning errors.
pub struct Daemon(Option<daemon::Daemon>);

impl Deref for Daemon {
    type Target = daemon::Daemon;
    fn deref(&self) -> &daemon::Daemon {
        self.0.as_ref().expect("daemon is only taken by kill9(self)")
    }
}

impl Daemon {
    /// `bpftune -s -d -c <tmp>/cgroupv2 <args>` with private run and state dirs; waits
    /// ([`READY_TIMEOUT`]) for "bpftune started", panics with the log tail otherwise.
    /// When it stops (also when a test panics) the testbed puts back every global
    /// sysctl it left changed ([`DaemonConfig::restore_globals`]), `-R` or not: tests
    /// share the host, and a daemon without `-R` would leave e.g. tcp_conn's addition to
    /// `net.ipv4.tcp_allowed_congestion_control` behind.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_cfg(Self::restoring(args))
    }

    /// Like [`Daemon::start`] but leaves the globals it changed when it stops: for a
    /// daemon whose successor takes over its state, where the successor's `-R` must
    /// find them as the first one left them.
    pub fn start_keeping_globals(args: &[&str]) -> Daemon {
        Self::start_cfg(DaemonConfig::new(BPFTUNE).args(args))
    }

    /// The configuration of [`Daemon::start`]: restores the globals it changed.
    fn restoring(args: &[&str]) -> DaemonConfig {
        let mut cfg = DaemonConfig::new(BPFTUNE).args(args);
        cfg.restore_globals = true;
        cfg
    }

    /// Like [`Daemon::start`] but with the given state directory (persisted originals),
    /// e.g. to restart after a crash. Globals are not put back when it stops: these
    /// tests prove that the persisted originals (a later `-R` or `--rollback-now`)
    /// restore them.
    pub fn start_with_state(args: &[&str], state_dir: &Path) -> Daemon {
        let mut cfg = DaemonConfig::new(BPFTUNE).args(args);
        cfg.state_dir = Some(state_dir.to_path_buf());
        Self::start_cfg(cfg)
    }

    /// Like [`Daemon::start`] with the packaged layout: the cgroup2 mount inside the run
    /// directory (`<run>/cgroupv2`, as `/var/run/bpftune/cgroupv2`).
    pub fn start_packaged_layout(args: &[&str]) -> Daemon {
        let mut cfg = Self::restoring(args);
        cfg.cgroup_in_run = true;
        Self::start_cfg(cfg)
    }

    /// Like [`Daemon::start`] but waits up to `ready` for "bpftune started" (loaded
    /// hosts, emulated guests: attaching every tuner can take longer than 10 s there).
    pub fn start_waiting(args: &[&str], ready: Duration) -> Daemon {
        Self::start_cfg_within(Self::restoring(args), ready)
    }

    /// Like [`Daemon::start_with_state`] with extra environment variables.
    pub fn start_with_state_env(args: &[&str], state_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cfg = DaemonConfig::new(BPFTUNE).args(args);
        cfg.state_dir = Some(state_dir.to_path_buf());
        cfg.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::start_cfg(cfg)
    }

    fn start_cfg(cfg: DaemonConfig) -> Daemon {
        Self::start_cfg_within(cfg, READY_TIMEOUT)
    }

    fn start_cfg_within(mut cfg: DaemonConfig, ready: Duration) -> Daemon {
        cfg.wait_for_others = EXCLUSIVE_WAIT;
        let d = daemon::Daemon::start(cfg, ready).unwrap_or_else(|e| panic!("{e:#}"));
        let (others, _) = d.others_at_start();
        if !others.is_empty() {
            eprintln!("harness: WARNING: started next to other bpftune daemons: {others:?}");
        }
        Daemon(Some(d))
    }

    /// Spawns `bpftune <args>` on this daemon's run, state and cgroup directories
    /// without waiting for this (or any other) daemon to exit and without waiting for
    /// readiness: a successor started while this one stops, or a second daemon beside
    /// it. This daemon must outlive it (its temp dir holds the shared directories).
    pub fn spawn_beside(&self, args: &[&str]) -> Daemon {
        let mut cfg = DaemonConfig::new(BPFTUNE).args(args);
        cfg.state_dir = Some(self.state_dir().to_path_buf());
        cfg.shared_dirs = Some((self.run_dir().to_path_buf(), self.cgroup_dir().to_path_buf()));
        cfg.wait_for_others = Duration::ZERO;
        cfg.tag = "beside".to_string();
        Daemon(Some(
            daemon::Daemon::spawn(cfg).unwrap_or_else(|e| panic!("{e:#}")),
        ))
    }

    /// SIGTERM without waiting (see [`Daemon::terminate`] to reap it).
    pub fn sigterm(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Waits ([`READY_TIMEOUT`]) for "bpftune started", panics with the log tail.
    pub fn expect_ready(&self) {
        if let Err(e) = self.wait_ready(READY_TIMEOUT) {
            panic!("{e:#}");
        }
    }

    /// Like [`daemon::Daemon::wait_for`] but panics with `what` and the log tail.
    pub fn expect_log(&self, pattern: &str, timeout: Duration, what: &str) {
        if !self.wait_for(pattern, timeout) {
            panic!(
                "{what}: log has no {pattern:?} after {timeout:?} (daemon alive: {}); log tail:\n{}",
                self.alive(),
                self.tail(60)
            );
        }
    }

    /// `bpftune -q <q>` against this daemon: (exit code, stdout).
    pub fn query(&self, q: &str) -> (i32, String) {
        let (code, out, _) = self.query_full(&["-q", q]);
        (code, out)
    }

    /// `bpftune <args>` as a client with this daemon's run dir: (exit code, stdout, stderr).
    pub fn query_full(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.client(args).unwrap_or_else(|e| panic!("{e:#}"));
        (o.code, o.stdout, o.stderr)
    }

    /// `query(q)`, panicking unless it succeeds; returns stdout.
    pub fn query_ok(&self, q: &str) -> String {
        let (code, out, err) = self.query_full(&["-q", q]);
        if code != 0 {
            panic!(
                "bpftune -q {q} exited {code}; stderr: {err}; daemon log tail:\n{}",
                self.tail(40)
            );
        }
        out
    }

    /// SIGTERM and wait (≤ 15 s, then SIGKILL and panic): (exit status, full log).
    pub fn stop(self) -> (ExitStatus, String) {
        let st = self.terminate();
        (st, self.log())
    }

    /// Like [`Daemon::stop`] but keeps `self` (and its directories) for inspection.
    pub fn terminate(&self) -> ExitStatus {
        match (**self).terminate(Duration::from_secs(15)) {
            Ok(exit) => exit.status,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// SIGKILL (a crash): returns the log. The state dir stays as it was.
    pub fn kill9(mut self) -> String {
        self.0.take().map(daemon::Daemon::kill9).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.as_ref().is_some_and(|d| d.alive()) {
            eprintln!("--- bpftune log tail (test failed) ---\n{}\n---", self.tail(40));
        }
    }
}

/// Runs `bpftune <args>` with `BPFTUNE_RUN_DIR=run_dir`: (exit code, stdout, stderr).
pub fn client(run_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = daemon::client(Path::new(BPFTUNE), Some(run_dir), args).unwrap_or_else(|e| panic!("{e:#}"));
    (o.code, o.stdout, o.stderr)
}

/// Runs `bpftune <args>` (no daemon involved): (exit code, stdout, stderr).
pub fn run_bpftune(args: &[&str]) -> (i32, String, String) {
    let o = daemon::client(Path::new(BPFTUNE), None, args).unwrap_or_else(|e| panic!("{e:#}"));
    (o.code, o.stdout, o.stderr)
}

// ---------------------------------------------------------------------------------------
// Sysctls and namespaces
// ---------------------------------------------------------------------------------------

/// The initial namespace's value of every sysctl a built-in tuner may write (from the
/// descriptors), taken when created; on drop, every one that changed is put back. For a
/// daemon the testbed does not run (a bare `Command`): tests share the host, and such a
/// daemon without `-R` leaves e.g. tcp_conn's start-up addition to
/// `net.ipv4.tcp_allowed_congestion_control` behind.
pub struct GlobalsGuard(Vec<(String, String)>);

impl GlobalsGuard {
    pub fn take() -> GlobalsGuard {
        let mut values = Vec::new();
        for t in bpftune::tuners::all() {
            for d in t.tunables() {
                if d.kind != bpftune::model::tunable::TunableKind::Sysctl {
                    continue;
                }
                if let Ok(v) = bpftune_testbed::sysctl::read(d.name) {
                    values.push((d.name.to_string(), v));
                }
            }
        }
        GlobalsGuard(values)
    }
}

impl Drop for GlobalsGuard {
    fn drop(&mut self) {
        for (name, was) in &self.0 {
            match bpftune_testbed::sysctl::read(name) {
                Ok(now) if now.trim() != was.trim() => {
                    eprintln!("harness: {name} was left at {now:?}; restoring {was:?}");
                    if let Err(e) = bpftune_testbed::sysctl::write(name, was) {
                        eprintln!("harness: cannot restore {name}: {e:#}");
                    }
                }
                _ => {}
            }
        }
    }
}

/// Parses whitespace-separated integers ("4096\t131072\t262144").
pub fn ints(s: &str) -> Vec<i64> {
    s.split_whitespace()
        .map(|x| {
            x.parse::<i64>()
                .unwrap_or_else(|e| panic!("not an integer {x:?} in {s:?}: {e}"))
        })
        .collect()
}

/// A sysctl of the root netns (the test thread's namespace), as integers.
pub fn global_ints(key: &str) -> Vec<i64> {
    ints(&bpftune_testbed::sysctl::read(key).unwrap_or_else(|e| panic!("read {key}: {e:#}")))
}

/// A sysctl of namespace `ns`, as integers.
pub fn ns_ints(ns: &Netns, key: &str) -> Vec<i64> {
    ints(
        &ns.sysctl_read(key)
            .unwrap_or_else(|e| panic!("read {key} in {}: {e:#}", ns.name())),
    )
}

/// Writes a sysctl in `ns` (in-process; the daemon, if running, sees this as an admin
/// write just like `sysctl -w`).
pub fn ns_set(ns: &Netns, key: &str, value: &str) {
    ns.sysctl_write(key, value)
        .unwrap_or_else(|e| panic!("write {key}={value} in {}: {e:#}", ns.name()));
}

/// `ip netns exec <ns> sysctl -w key="value"` (an administrator's write).
pub fn admin_sysctl(ns: Option<&Netns>, key: &str, value: &str) {
    let kv = format!("{key}={value}");
    let mut cmd = match ns {
        Some(ns) => ns.command(&["sysctl", "-w", &kv]),
        None => {
            let mut c = Command::new("sysctl");
            c.args(["-w", &kv]);
            c
        }
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sysctl: {e}"));
    assert!(
        out.status.success(),
        "sysctl -w {kv} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cookie of the root netns (the test thread's).
pub fn root_cookie() -> u64 {
    bpftune_testbed::netns::socket_netns_cookie().expect("SO_NETNS_COOKIE in the root netns")
}

pub fn netns(tag: &str) -> Netns {
    Netns::create(PREFIX).unwrap_or_else(|e| panic!("cannot create netns ({tag}): {e:#}"))
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair: `rx` (receiver, server side) and `tx` (sender).
pub struct Pair {
    // Field order = drop order: the veth goes first, then the namespaces.
    pub veth: VethPair,
    pub rx: Netns,
    pub tx: Netns,
}

impl Pair {
    pub fn new() -> Pair {
        let rx = netns("rx");
        let tx = netns("tx");
        let n = 10 + SUBNET.fetch_add(1, Ordering::Relaxed) % 200;
        let veth = VethPair::with_prefix(
            &rx,
            &tx,
            &format!("10.213.{n}.1/24"),
            &format!("10.213.{n}.2/24"),
            PREFIX,
        )
        .unwrap_or_else(|e| panic!("cannot create veth pair: {e:#}"));
        Pair { veth, rx, tx }
    }

    /// Address of the receiver.
    pub fn rx_addr(&self) -> &str {
        self.veth.addr_a()
    }

    /// `secs` seconds of iperf3 from `tx` to `rx` (new server each time); bits/s.
    pub fn iperf(&self, secs: u32) -> f64 {
        iperf(&self.rx, &self.tx, self.rx_addr(), secs)
    }

    /// Rounds of `secs` seconds of iperf3 until `done()` (checked after each round and
    /// once more 1 s after the last), at most `rounds`; whether it became true. The
    /// receiver's autotuning reaches a small `tcp_rmem` max within one round on an idle
    /// machine, but a busy one (netns teardown of earlier tests still running) may need
    /// more than one.
    pub fn iperf_until(&self, secs: u32, rounds: u32, mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..rounds {
            self.iperf(secs);
            if done() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        done()
    }

    /// [`Pair::iperf_until`] `d` logs `pattern` (3-s rounds, at most 4); panics with
    /// `what`, TCP's memory state and the log tail if it never does.
    pub fn iperf_until_log(&self, d: &Daemon, pattern: &str, what: &str) {
        if !self.iperf_until(3, 4, || d.wait_for(pattern, Duration::from_millis(200))) {
            panic!(
                "{what}: log has no {pattern:?} after 4 rounds of iperf3 (daemon alive: {})\n{}\nlog tail:\n{}",
                d.alive(),
                tcp_memory_line(),
                d.tail(60)
            );
        }
    }
}

/// The TCP line of /proc/net/protocols (memory pages, pressure flag): for failure
/// messages, since the tuners hold buffer growth back while TCP memory is under pressure.
pub fn tcp_memory_line() -> String {
    fs::read_to_string("/proc/net/protocols")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("protocol") || l.starts_with("TCP "))
        .map(|l| l.chars().take(60).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// iperf3 from `client` to a fresh server in `server` at `addr`; received bits/s.
pub fn iperf(server: &Netns, client: &Netns, addr: &str, secs: u32) -> f64 {
    let port = 5201;
    let srv = IperfServer::start(server, port)
        .unwrap_or_else(|e| panic!("iperf3 server in {}: {e:#}", server.name()));
    let bps = iperf3_throughput(client, addr, port, secs, false)
        .unwrap_or_else(|e| panic!("iperf3 {} -> {addr}: {e:#}", client.name()));
    drop(srv);
    bps
}

/// nr_free_buffer_pages as the kernel estimates it: Σ(managed − high) over the "Normal"
/// zones of /proc/zoneinfo ("DMA32" if there is none). Independent of the daemon's parser.
pub fn nr_free_buffer_pages() -> u64 {
    let text = fs::read_to_string("/proc/zoneinfo").expect("read /proc/zoneinfo");
    let mut zones: Vec<(String, u64, u64)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("Node ") {
            let zone = line.split_whitespace().last().unwrap_or("").to_string();
            zones.push((zone, 0, 0));
            continue;
        }
        let Some(z) = zones.last_mut() else { continue };
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["managed", v] => z.1 = v.parse().unwrap_or(0),
            ["high", v] if z.2 == 0 => z.2 = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let sum = |name: &str| {
        zones
            .iter()
            .filter(|z| z.0 == name)
            .map(|z| z.1.saturating_sub(z.2))
            .sum::<u64>()
    };
    match sum("Normal") {
        0 => sum("DMA32"),
        n => n,
    }
}

/// Resident set size of `pid` in kB (VmRSS), 0 if it cannot be read.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of `pid` (from /proc/PID/status).
pub fn thread_count(pid: u32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

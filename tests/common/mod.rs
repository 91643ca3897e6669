//! Shared harness for bpftune's root integration tests.
//!
//! * [`Daemon`]: a `bpftune -s -d -c <tmp>/cgroupv2 …` child with private run/state
//!   directories (env `BPFTUNE_RUN_DIR` / `BPFTUNE_STATE_DIR`) and stderr captured in a
//!   log file; stopped (SIGTERM, then SIGKILL) and cleaned up on drop.
//! * [`lock`]: one daemon at a time (the tests also run with `--test-threads=1`).
//! * Namespace helpers on top of `bpftune-testbed`: [`Pair`] (two namespaces joined by
//!   veth), sysctl reads/writes, iperf3 runs.
//!
//! Everything here needs root; tests call [`setup`] first, which skips (returns `None`)
//! when not root and removes leftovers of earlier, killed test runs.

#![allow(dead_code)]

use std::cell::RefCell;
use std::fs;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use bpftune_testbed::{iperf3_throughput, unique_name, IperfServer, Netns, SysctlGuard, VethPair};

/// The daemon binary under test.
pub const BPFTUNE: &str = env!("CARGO_BIN_EXE_bpftune");
/// Prefix of every namespace / interface these tests create (see `unique_name`).
pub const PREFIX: &str = "bpt";
/// Prefix of our temp directories: `<tmp>/bpftune-it-<pid>-<n>`.
const TMP_PREFIX: &str = "bpftune-it-";

/// Serialises all daemon-using tests of one test binary.
pub static LOCK: Mutex<()> = Mutex::new(());

/// Takes [`LOCK`], ignoring poisoning (a failed test must not fail the next ones).
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Common start of every root test: `None` (test skipped) when not root; otherwise the
/// global lock, after removing namespaces, devices and temp dirs left by killed runs.
pub fn setup(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !bpftune_testbed::is_root() {
        eprintln!("skipping {test}: needs root");
        return None;
    }
    let guard = lock();
    // Before any measurement or sysctl setup: another daemon would tune our namespaces.
    wait_for_exclusive_host();
    if let Ok(removed) = bpftune_testbed::cleanup_stale(PREFIX) {
        if !removed.is_empty() {
            eprintln!("{test}: removed stale test objects {removed:?}");
        }
    }
    cleanup_stale_dirs();
    Some(guard)
}

// ---------------------------------------------------------------------------------------
// Temp directories that may contain a cgroup2 mount
// ---------------------------------------------------------------------------------------

/// Mount points (from /proc/self/mountinfo) at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Unmounts whatever is mounted below `dir` (a cgroup2 mount left by a killed daemon),
/// then removes `dir`. Never recurses into a mount: if something is still mounted the
/// directory is left alone (a cgroup2 mount is the host's cgroup tree!).
pub fn remove_dir_safely(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if !mounts_below(dir).is_empty() {
        eprintln!("harness: not removing {}: still has mounts", dir.display());
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("harness: cannot remove {}: {e}", dir.display());
        }
    }
}

fn cleanup_stale_dirs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !bpftune_testbed::names::pid_alive(pid) {
            remove_dir_safely(&e.path());
        }
    }
}

/// A directory under the system temp dir, removed (safely) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{TMP_PREFIX}{}-{n}-{tag}", std::process::id()));
        if path.exists() {
            remove_dir_safely(&path);
        }
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir_safely(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// Log lines that are noise when showing a tail (libbpf's loader chatter).
fn interesting(line: &str) -> bool {
    !line.contains("libbpf:")
}

/// The last `n` interesting lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| interesting(l)).collect();
    let start = lines.len().saturating_sub(n);
    let mut t = lines[start..].join("\n");
    if let Some(l) = log
        .lines()
        .find(|l| l.contains("modified sysctl") && l.contains("bpftune'"))
    {
        t.push_str(&format!(
            "\nNOTE: another bpftune daemon wrote sysctls during this test, e.g.: {l}"
        ));
    }
    t
}

/// A running `bpftune` daemon.
pub struct Daemon {
    child: RefCell<Option<Child>>,
    pid: u32,
    dir: Option<TempDir>,
    run_dir: PathBuf,
    state_dir: PathBuf,
    cgroup: PathBuf,
    log_path: PathBuf,
}

impl Daemon {
    /// `bpftune -s -d -c <tmp>/cgroupv2 <args>` with private run and state dirs; waits
    /// (10 s) for "bpftune started", panics with the log tail otherwise.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_inner(args, None)
    }

    /// Like [`Daemon::start`] but with the given state directory (persisted originals),
    /// e.g. to restart after a crash.
    pub fn start_with_state(args: &[&str], state_dir: &Path) -> Daemon {
        Self::start_inner(args, Some(state_dir))
    }

    /// Like [`Daemon::start`] with the packaged layout: the cgroup2 mount inside the run
    /// directory (`<run>/cgroupv2`, as `/var/run/bpftune/cgroupv2`).
    pub fn start_packaged_layout(args: &[&str]) -> Daemon {
        Self::start_inner_with(args, None, true)
    }

    /// The cgroup-v2 directory passed with `-c`.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup
    }

    fn start_inner(args: &[&str], state: Option<&Path>) -> Daemon {
        Self::start_inner_with(args, state, false)
    }

    fn start_inner_with(args: &[&str], state: Option<&Path>, cgroup_in_run: bool) -> Daemon {
        wait_for_exclusive_host();
        let dir = TempDir::new("daemon");
        let run_dir = dir.path().join("run");
        let state_dir = state
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state"));
        let cgroup = if cgroup_in_run {
            run_dir.join("cgroupv2")
        } else {
            dir.path().join("cgroupv2")
        };
        let log_path = dir.path().join("bpftune.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let mut cmd = Command::new(BPFTUNE);
        cmd.arg("-s").arg("-d").arg("-c").arg(&cgroup).args(args);
        cmd.env("BPFTUNE_RUN_DIR", &run_dir)
            .env("BPFTUNE_STATE_DIR", &state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent. If the test thread dies without dropping us (e.g. the test
        // process is killed), the daemon gets SIGTERM and rolls back / detaches.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BPFTUNE}: {e}"));
        let pid = child.id();
        let d = Daemon {
            child: RefCell::new(Some(child)),
            pid,
            dir: Some(dir),
            run_dir,
            state_dir,
            cgroup,
            log_path,
        };
        if !d.wait_for("bpftune started", Duration::from_secs(10)) {
            panic!(
                "bpftune {args:?} did not start within 10 s (alive: {}); log tail:\n{}",
                d.alive(),
                d.tail(60)
            );
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        match self.child.borrow_mut().as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log_path) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    }

    /// The last `n` interesting log lines (for panic messages), with a note if another
    /// bpftune daemon interfered.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let mut t = tail(&log, n);
        if let Some(note) = interference(&log, self.pid).filter(|_| !t.contains("NOTE: another")) {
            t.push_str(&format!("\n{note}"));
        }
        t
    }

    /// Polls the log until it contains `pattern`; false on timeout or daemon exit.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |log| log.contains(pattern))
    }

    /// Polls the log until `pred(log)`; false on timeout or daemon exit.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.log()) {
                return true;
            }
            if Instant::now() >= deadline || !self.alive() {
                // One last look: the line may have been written just before exiting.
                return pred(&self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Daemon::wait_for`] but panics with `what` and the log tail.
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
        client(&self.run_dir, args)
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

    fn take_child(&self) -> Option<Child> {
        self.child.borrow_mut().take()
    }

    /// SIGTERM and wait (≤ 15 s, then SIGKILL and panic): (exit status, full log).
    pub fn stop(self) -> (ExitStatus, String) {
        let st = self.terminate();
        (st, self.log())
    }

    /// Like [`Daemon::stop`] but keeps `self` (and its directories) for inspection.
    pub fn terminate(&self) -> ExitStatus {
        let mut child = self.take_child().expect("daemon already stopped");
        signal(self.pid, libc::SIGTERM);
        match wait_timeout(&mut child, Duration::from_secs(15)) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bpftune did not exit within 15 s of SIGTERM; log tail:\n{}",
                    self.tail(60)
                );
            }
        }
    }

    /// SIGKILL (a crash): returns the log. The state dir stays as it was.
    pub fn kill9(self) -> String {
        if let Some(mut child) = self.take_child() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.take_child() {
            signal(self.pid, libc::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                eprintln!("--- bpftune log tail (test failed) ---\n{}\n---", self.tail(40));
            }
        }
        // TempDir's drop unmounts a cgroup2 mount a killed daemon left behind.
        self.dir.take();
    }
}

/// Other `bpftune` processes on the host (pid, command line).
pub fn other_bpftunes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "bpftune" || !bpftune_testbed::names::pid_alive(pid) {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        out.push((pid, cmd.trim().to_string()));
    }
    out
}

/// Waits (up to 3 min) until no other bpftune daemon runs: a second daemon on the host
/// tunes our namespaces too and its writes look like an administrator's to ours.
pub fn wait_for_exclusive_host() {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut said = false;
    loop {
        let others = other_bpftunes();
        if others.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("harness: WARNING: other bpftune processes still running, results may be disturbed: {others:?}");
            return;
        }
        if !said {
            eprintln!("harness: waiting for other bpftune processes to exit: {others:?}");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A note if the log shows sysctl writes by another bpftune (our own are never logged).
pub fn interference(log: &str, own: u32) -> Option<String> {
    let foreign: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("modified sysctl") && l.contains("bpftune'"))
        .take(3)
        .collect();
    let others: Vec<(u32, String)> = other_bpftunes().into_iter().filter(|(p, _)| *p != own).collect();
    if foreign.is_empty() && others.is_empty() {
        return None;
    }
    Some(format!("NOTE: another bpftune daemon was active during this test (running now: {others:?}); its writes: {foreign:#?}"))
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid (not yet reaped, so not reused).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for `child` up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Runs `bpftune <args>` with `BPFTUNE_RUN_DIR=run_dir`: (exit code, stdout, stderr).
pub fn client(run_dir: &Path, args: &[&str]) -> (i32, String, String) {
    output(Command::new(BPFTUNE).args(args).env("BPFTUNE_RUN_DIR", run_dir))
}

/// Runs `bpftune <args>` (no daemon involved): (exit code, stdout, stderr).
pub fn run_bpftune(args: &[&str]) -> (i32, String, String) {
    output(Command::new(BPFTUNE).args(args))
}

/// Runs a bpftune command to completion: (exit code, stdout, stderr).
fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BPFTUNE}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// Sysctls and namespaces
// ---------------------------------------------------------------------------------------

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

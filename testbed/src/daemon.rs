//! A real `bpftune` daemon for a test or a benchmark: one harness for both.
//!
//! [`Daemon::spawn`] runs `bpftune -s [-d] -c <cgroup> <args>` with private run and
//! state directories (env `BPFTUNE_RUN_DIR` / `BPFTUNE_STATE_DIR`) under a [`TempDir`],
//! after waiting for other bpftune daemons to go (they would tune our namespaces). Its
//! stderr is read line by line, each line stamped with CLOCK_MONOTONIC; readiness is the
//! line "bpftune started". The daemon gets SIGTERM if the thread that started it dies
//! (`PR_SET_PDEATHSIG`). Stopping is SIGTERM, then SIGKILL; dropping also unmounts a
//! cgroup2 mount a killed daemon left and removes the directories. Optionally, global
//! (init_net) sysctls the daemon wrote and left behind are put back
//! ([`DaemonConfig::restore_globals`]).
//!
//! The integration tests use it through `tests/common`; the benchmarks through
//! `bpftune-testbed daemon` (see [`crate::supervise`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::dirs::TempDir;
use crate::globals;
use crate::host::{self, BpftuneProcess};

// The one-shot client runs, re-exported where the tests have always found them.
pub use crate::client::{client, wait_timeout, ClientOutput};

/// The daemon's readiness line (followed by ": tuners … attached in N ms").
pub const READY_LINE: &str = "bpftune started";

/// One line of the daemon's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// CLOCK_MONOTONIC ns when it was read ([`host::monotonic_ns`]).
    pub t_ns: u64,
    pub text: String,
    /// The first line containing [`READY_LINE`].
    pub ready: bool,
}

/// Called (on the reader thread) for every stderr line as it is read.
pub type LineCallback = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// How to start a daemon. `DaemonConfig::new(bin)` gives: no extra args, `-d`, fresh
/// state dir, cgroup2 mount at `<tmp>/cgroupv2`, wait up to 3 min for other daemons,
/// no global restore.
#[derive(Clone)]
pub struct DaemonConfig {
    /// The `bpftune` binary.
    pub bin: PathBuf,
    /// Arguments after `-s [-d] -c <cgroup>`.
    pub args: Vec<String>,
    /// Pass `-d` (debug log lines).
    pub debug: bool,
    /// Use this state directory (persisted originals) instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Packaged layout: the cgroup2 mount inside the run dir (`<run>/cgroupv2`).
    pub cgroup_in_run: bool,
    /// Use this run directory and cgroup directory instead of fresh ones (e.g. another
    /// daemon's, to start its successor or a second daemon beside it).
    pub shared_dirs: Option<(PathBuf, PathBuf)>,
    /// Wait up to this long for other bpftune daemons to exit before starting (zero:
    /// do not wait); see [`Daemon::others_at_start`].
    pub wait_for_others: Duration,
    /// Before stopping, read the daemon's change records and its sysctls (`jtunables`,
    /// [`Daemon::global_sysctls`]); after it exited, write back every init_net sysctl of
    /// those it changed that still holds the value it wrote (values other processes set
    /// since are never touched). A safety net behind `-R`.
    pub restore_globals: bool,
    /// Names the temp directory (`bpftune-tb-<pid>-<n>-<tag>`).
    pub tag: String,
    /// See [`LineCallback`].
    pub on_line: Option<LineCallback>,
    /// Extra environment variables for the daemon (e.g. the test-only
    /// `BPFTUNE_TEST_CRASH_AT`).
    pub env: Vec<(String, String)>,
}

impl DaemonConfig {
    pub fn new(bin: impl Into<PathBuf>) -> DaemonConfig {
        DaemonConfig {
            bin: bin.into(),
            args: Vec::new(),
            debug: true,
            state_dir: None,
            cgroup_in_run: false,
            shared_dirs: None,
            wait_for_others: Duration::from_secs(180),
            restore_globals: false,
            tag: "daemon".to_string(),
            on_line: None,
            env: Vec::new(),
        }
    }

    /// Sets [`DaemonConfig::args`].
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> DaemonConfig {
        self.args = args.iter().map(|a| a.as_ref().to_string()).collect();
        self
    }
}

/// How a daemon ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub status: ExitStatus,
    /// Global sysctls put back ([`DaemonConfig::restore_globals`]): (name, value the
    /// daemon left, value restored).
    pub restored: Vec<(String, String, String)>,
}

/// How long after "bpftune started" the global restore waits before it reads the
/// daemon's changes: the first tick (at once) and one more (a second later) are done.
const FIRST_TICK_SETTLE: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct LogState {
    lines: Vec<LogLine>,
    ready: Option<usize>,
    eof: bool,
}

#[derive(Default)]
struct LogBuf {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl LogBuf {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the daemon's stderr until EOF.
fn read_lines(stderr: impl std::io::Read, buf: &LogBuf, on_line: Option<LineCallback>) {
    let mut r = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match r.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let t_ns = host::monotonic_ns();
        let text = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        let line = {
            let mut st = buf.lock();
            let ready = st.ready.is_none() && text.contains(READY_LINE);
            if ready {
                st.ready = Some(st.lines.len());
            }
            let line = LogLine { t_ns, text, ready };
            st.lines.push(line.clone());
            line
        };
        buf.changed.notify_all();
        if let Some(cb) = &on_line {
            cb(&line);
        }
    }
    buf.lock().eof = true;
    buf.changed.notify_all();
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running (or stopped) `bpftune` daemon; see the module documentation.
pub struct Daemon {
    child: Mutex<Option<Child>>,
    pid: u32,
    spawn_ns: u64,
    log: Arc<LogBuf>,
    reader: Mutex<Option<JoinHandle<()>>>,
    dir: Option<TempDir>,
    bin: PathBuf,
    run_dir: PathBuf,
    state_dir: PathBuf,
    cgroup: PathBuf,
    restore_globals: bool,
    others_at_start: Vec<BpftuneProcess>,
    waited: Duration,
}

impl Daemon {
    /// Starts the daemon (after the wait for other daemons) without waiting for it to be
    /// ready; see [`Daemon::wait_ready`].
    pub fn spawn(cfg: DaemonConfig) -> Result<Daemon> {
        let t0 = Instant::now();
        let others_at_start = if cfg.wait_for_others.is_zero() {
            host::other_daemons()
        } else {
            host::wait_for_exclusive_host(cfg.wait_for_others)
        };
        let waited = t0.elapsed();
        let dir = TempDir::new(&cfg.tag)?;
        let run_dir = dir.path().join("run");
        let state_dir = cfg.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let cgroup = if cfg.cgroup_in_run {
            run_dir.join("cgroupv2")
        } else {
            dir.path().join("cgroupv2")
        };
        let (run_dir, cgroup) = cfg.shared_dirs.clone().unwrap_or((run_dir, cgroup));
        let mut cmd = Command::new(&cfg.bin);
        cmd.arg("-s");
        if cfg.debug {
            cmd.arg("-d");
        }
        cmd.arg("-c").arg(&cgroup).args(&cfg.args);
        cmd.env("BPFTUNE_RUN_DIR", &run_dir)
            .env("BPFTUNE_STATE_DIR", &state_dir)
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent. If the thread that started the daemon dies without stopping it
        // (e.g. the process is killed), the daemon gets SIGTERM and rolls back / detaches.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let spawn_ns = host::monotonic_ns();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", cfg.bin.display()))?;
        let pid = child.id();
        let log = Arc::new(LogBuf::default());
        let reader = match child.stderr.take() {
            Some(stderr) => {
                let buf = Arc::clone(&log);
                let cb = cfg.on_line.clone();
                std::thread::Builder::new()
                    .name("bpftune-log".into())
                    .spawn(move || read_lines(stderr, &buf, cb))
                    .ok()
            }
            None => None,
        };
        Ok(Daemon {
            child: Mutex::new(Some(child)),
            pid,
            spawn_ns,
            log,
            reader: Mutex::new(reader),
            dir: Some(dir),
            bin: cfg.bin,
            run_dir,
            state_dir,
            cgroup,
            restore_globals: cfg.restore_globals,
            others_at_start,
            waited,
        })
    }

    /// [`Daemon::spawn`] + [`Daemon::wait_ready`]`(ready_timeout)`.
    pub fn start(cfg: DaemonConfig, ready_timeout: Duration) -> Result<Daemon> {
        let args = cfg.args.clone();
        let d = Daemon::spawn(cfg)?;
        d.wait_ready(ready_timeout)
            .with_context(|| format!("bpftune {args:?}"))?;
        Ok(d)
    }

    /// Waits for the readiness line; an error (with the log tail) if the daemon exits or
    /// `timeout` passes first.
    pub fn wait_ready(&self, timeout: Duration) -> Result<LogLine> {
        self.wait_until(timeout, |_| self.ready().is_some());
        match self.ready() {
            Some(l) => Ok(l),
            None => Err(anyhow!(
                "did not start within {timeout:?} (alive: {}); log tail:\n{}",
                self.alive(),
                self.tail(60)
            )),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CLOCK_MONOTONIC ns just before the daemon was spawned.
    pub fn spawn_ns(&self) -> u64 {
        self.spawn_ns
    }

    /// The readiness line, once read.
    pub fn ready(&self) -> Option<LogLine> {
        let st = self.log.lock();
        st.ready.and_then(|i| st.lines.get(i).cloned())
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The cgroup-v2 directory passed with `-c`.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup
    }

    /// Other bpftune daemons still running when this one was started (the wait for
    /// them timed out), and how long that wait took.
    pub fn others_at_start(&self) -> (&[BpftuneProcess], Duration) {
        (&self.others_at_start, self.waited)
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        match lock(&self.child).as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Its exit status if it has exited by itself (None while running or once stopped).
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        lock(&self.child)
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// All stderr lines so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.log.lock().lines.clone()
    }

    /// The whole log so far (stderr, one line each).
    pub fn log(&self) -> String {
        join(&self.log.lock().lines)
    }

    /// The last `n` interesting log lines (for error messages), with a note if another
    /// bpftune daemon interfered.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let mut t = tail(&log, n);
        if let Some(note) = host::interference(&log, self.pid).filter(|_| !t.contains("NOTE: another")) {
            t.push_str(&format!("\n{note}"));
        }
        t
    }

    /// Waits until the log contains `pattern`; false on timeout or daemon exit.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |log| log.contains(pattern))
    }

    /// Waits until `pred(log)` holds, re-evaluated on every new line; false on timeout
    /// or daemon exit (after one last look).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = usize::MAX;
        loop {
            let (text, n, eof) = {
                let st = self.log.lock();
                (
                    (st.lines.len() != seen).then(|| join(&st.lines)),
                    st.lines.len(),
                    st.eof,
                )
            };
            if let Some(text) = text {
                if pred(&text) {
                    return true;
                }
                seen = n;
            }
            let now = Instant::now();
            if now >= deadline || eof || !self.alive() {
                return pred(&self.log());
            }
            let st = self.log.lock();
            if st.lines.len() == seen && !st.eof {
                let wait = (deadline - now).min(Duration::from_millis(50));
                drop(self.log.changed.wait_timeout(st, wait));
            }
        }
    }

    /// `bpftune <args>` as a client of this daemon (its run dir).
    pub fn client<S: AsRef<str>>(&self, args: &[S]) -> Result<ClientOutput> {
        client(&self.bin, Some(&self.run_dir), args)
    }

    /// `bpftune -q <q>` against this daemon.
    pub fn query(&self, q: &str) -> Result<ClientOutput> {
        self.client(&["-q", q])
    }

    /// The daemon's change records (`-q jchanges`).
    pub fn changes(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.query("jchanges")?;
        if out.code != 0 {
            bail!("bpftune -q jchanges exited {}: {}", out.code, out.stderr.trim());
        }
        let text = out.stdout.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(text)
            .with_context(|| format!("bpftune -q jchanges: not a JSON array: {:.300}", text))
    }

    /// The sysctls this daemon's tuners manage (`-q jtunables`; see
    /// [`globals::sysctl_tunables`]): what [`DaemonConfig::restore_globals`] puts back.
    pub fn global_sysctls(&self) -> Result<BTreeSet<String>> {
        let out = self.query("jtunables")?;
        if out.code != 0 {
            bail!("bpftune -q jtunables exited {}: {}", out.code, out.stderr.trim());
        }
        globals::sysctl_tunables(&out.stdout)
    }

    /// {sysctl: (value before, last value written)} of the init_net sysctls this daemon
    /// changed (empty unless [`DaemonConfig::restore_globals`]).
    fn global_writes(&self) -> BTreeMap<String, (String, String)> {
        if !self.restore_globals || !self.alive() {
            return BTreeMap::new();
        }
        let Some(ready) = self.ready() else {
            return BTreeMap::new();
        };
        // The daemon's first tick runs right after "bpftune started" and may still be
        // writing (tcp_conn's allowed list, net_buffer's start-up rule): a daemon stopped
        // at once would leave that write out of the changes read below, and so behind.
        let since_ready = Duration::from_nanos(host::monotonic_ns().saturating_sub(ready.t_ns));
        if let Some(rest) = FIRST_TICK_SETTLE.checked_sub(since_ready) {
            std::thread::sleep(rest);
        }
        let names = match self.global_sysctls() {
            Ok(n) => n,
            Err(e) => {
                eprintln!(
                    "bpftune-testbed: WARNING: bpftune (pid {}): no global restore: {e:#}",
                    self.pid
                );
                return BTreeMap::new();
            }
        };
        globals::global_writes(self.changes().unwrap_or_default(), &names)
    }

    fn join_reader(&self) {
        if let Some(h) = lock(&self.reader).take() {
            let _ = h.join();
        }
    }

    /// SIGTERM and wait up to `timeout` (then SIGKILL and an error with the log tail);
    /// then the global restore. The directories stay until drop.
    pub fn terminate(&self, timeout: Duration) -> Result<Exit> {
        let writes = self.global_writes();
        let mut child = lock(&self.child)
            .take()
            .ok_or_else(|| anyhow!("bpftune (pid {}) already stopped", self.pid))?;
        let status = match child.try_wait() {
            Ok(Some(st)) => Some(st),
            _ => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                wait_timeout(&mut child, timeout)
            }
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            self.join_reader();
            bail!(
                "bpftune (pid {}) did not exit within {timeout:?} of SIGTERM; log tail:\n{}",
                self.pid,
                self.tail(60)
            );
        };
        self.join_reader();
        let restored = globals::restore(self.pid, writes);
        Ok(Exit { status, restored })
    }

    /// [`Daemon::terminate`], then the whole log; the directories are removed.
    pub fn stop(self, timeout: Duration) -> Result<(Exit, String)> {
        let exit = self.terminate(timeout)?;
        Ok((exit, self.log()))
    }

    /// SIGKILL (a crash): nothing is restored; returns the log. A state dir given in
    /// the config is left as it was.
    pub fn kill9(self) -> String {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if lock(&self.child).is_some() {
            if let Err(e) = self.terminate(Duration::from_secs(5)) {
                eprintln!("bpftune-testbed: {e:#}");
            }
        }
        // TempDir's drop unmounts a cgroup2 mount a killed daemon left behind.
        self.dir.take();
    }
}

fn join(lines: &[LogLine]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&l.text);
        s.push('\n');
    }
    s
}

/// Log lines that are noise in a tail (libbpf's loader chatter).
fn interesting(line: &str) -> bool {
    !line.contains("libbpf:")
}

/// The last `n` interesting lines of `log`, with a note if another bpftune daemon
/// wrote sysctls meanwhile (our own writes are never logged as an administrator's).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_readiness_found() {
        let buf = LogBuf::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let cb: LineCallback = Arc::new(move |l: &LogLine| lock(&s2).push(l.ready));
        let input = b"libbpf: x\nbpftune started: tuners a attached in 5 ms\nbpftune started again\nlast";
        read_lines(&input[..], &buf, Some(cb));
        let st = buf.lock();
        assert!(st.eof);
        assert_eq!(st.lines.len(), 4);
        assert_eq!(st.ready, Some(1));
        assert_eq!(st.lines[3].text, "last");
        assert!(st.lines.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
        assert_eq!(*lock(&seen), vec![false, true, false, false]);
    }

    #[test]
    fn tail_skips_libbpf_and_notes_foreign_writes() {
        let log = "libbpf: a\none\ntwo\nthree\n";
        assert_eq!(tail(log, 2), "two\nthree");
        let log = "x\nmodified sysctl 'net.ipv4.tcp_rmem' ... cmd 'bpftune'\n";
        assert!(tail(log, 1).contains("NOTE: another bpftune daemon"));
    }
}

//! The benchmarks reach the tests' daemon harness (`bpftune_testbed::Daemon`) through
//! `bpftune-testbed daemon` (JSON lines on stdout, commands on stdin). These tests pin
//! that protocol and its cleanup, so that bench/bench.py cannot drift from the tests.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{setup, wait_timeout, BPFTUNE};
use serde_json::Value;

/// `bpftune-testbed`, built next to `bpftune` by `cargo build/test --workspace`.
fn testbed() -> PathBuf {
    let p = Path::new(BPFTUNE).with_file_name("bpftune-testbed");
    assert!(
        p.is_file(),
        "{} missing: build the workspace (`cargo build --release --workspace`)",
        p.display()
    );
    p
}

struct Harness {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
}

impl Harness {
    fn start() -> Harness {
        let mut child = Command::new(testbed())
            .args(["daemon", "--bpftune", BPFTUNE, "--no-debug", "--restore-globals"])
            .args(["--wait-others-s", "60", "--tag", "harness-test", "--", "-R"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start bpftune-testbed daemon");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Harness { child, stdin, events }
    }

    /// The next event of `kind` (others are skipped) within `timeout`.
    fn expect(&self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == kind && pred(&v) => return v,
                Ok(v) => skipped.push(v),
                Err(e) => panic!("no {kind:?} event within {timeout:?} ({e}); got {skipped:#?}"),
            }
        }
    }

    fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write a command to the harness");
        stdin.flush().expect("flush");
    }
}

fn pid_alive(pid: u64) -> bool {
    bpftune_testbed::names::pid_alive(pid as u32)
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn bench_harness_starts_queries_and_stops_a_daemon_and_cleans_up() {
    let _g = setup("bench_harness_starts_queries_and_stops_a_daemon_and_cleans_up");
    let mut h = Harness::start();
    let spawned = h.expect("spawned", Duration::from_secs(90), |_| true);
    let pid = spawned["pid"].as_u64().expect("pid");
    let run_dir = PathBuf::from(spawned["run_dir"].as_str().expect("run_dir"));
    let dir = run_dir.parent().expect("temp dir").to_path_buf();
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(bpftune_testbed::dirs::TMP_PREFIX)),
        "temp dir {}",
        dir.display()
    );
    let ready = h.expect("log", Duration::from_secs(10), |v| v["ready"] == true);
    let line = ready["line"].as_str().unwrap_or("");
    assert!(line.contains("bpftune started: tuners"), "{line}");
    assert!(
        ready["t_ns"].as_u64() > spawned["spawn_ns"].as_u64(),
        "CLOCK_MONOTONIC stamps: spawned {spawned}, ready {ready}"
    );

    h.send("query tuners");
    let reply = h.expect("reply", Duration::from_secs(10), |_| true);
    assert_eq!(reply["cmd"], "query tuners");
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(
        reply["stdout"].as_str().unwrap_or("").contains("tcp_buffer"),
        "{reply}"
    );
    h.send("query jchanges");
    let reply = h.expect("reply", Duration::from_secs(10), |_| true);
    let changes: Value =
        serde_json::from_str(reply["stdout"].as_str().unwrap_or("")).expect("jchanges is JSON");
    assert!(changes.is_array(), "{changes}");

    h.send("stop");
    let exited = h.expect("exited", Duration::from_secs(30), |_| true);
    assert_eq!(exited["code"], 0, "daemon exit: {exited}");
    assert_eq!(exited["restored"], serde_json::json!([]), "{exited}");
    let st = wait_timeout(&mut h.child, Duration::from_secs(10)).expect("harness exits after `exited`");
    assert!(st.success(), "harness exit status {st}");
    assert!(!pid_alive(pid), "daemon {pid} still running");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn a_killed_bench_harness_stops_its_daemon_and_cleanup_removes_its_dirs() {
    let _g = setup("a_killed_bench_harness_stops_its_daemon_and_cleanup_removes_its_dirs");
    let mut h = Harness::start();
    let spawned = h.expect("spawned", Duration::from_secs(90), |_| true);
    let pid = spawned["pid"].as_u64().expect("pid");
    let cgroup = PathBuf::from(spawned["cgroup"].as_str().expect("cgroup"));
    let dir = cgroup.parent().expect("temp dir").to_path_buf();
    h.expect("log", Duration::from_secs(10), |v| v["ready"] == true);
    assert!(
        bpftune_testbed::dirs::is_mount_point(&cgroup),
        "cgroup2 not mounted at {}",
        cgroup.display()
    );

    // SIGKILL: no cleanup by the harness; the daemon gets SIGTERM (PDEATHSIG) and exits.
    h.child.kill().expect("SIGKILL the harness");
    let _ = h.child.wait();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_alive(pid), "daemon {pid} outlived its killed harness");
    assert!(
        dir.exists(),
        "the killed harness could not have removed {}",
        dir.display()
    );

    let out = Command::new(testbed())
        .args(["cleanup", "--prefix", common::PREFIX])
        .output()
        .expect("bpftune-testbed cleanup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cleanup: {text}");
    assert!(!dir.exists(), "cleanup left {}: {text}", dir.display());
    assert!(
        !bpftune_testbed::dirs::is_mount_point(&cgroup),
        "{} still mounted",
        cgroup.display()
    );
}

/// The testbed's safety net behind `-R` (`DaemonConfig::restore_globals`, on for every
/// benchmark daemon) covers every sysctl of every built-in tuner that this kernel has:
/// its list is the daemon's own (`-q jtunables`), not a copy that can drift (the old
/// hand-kept one lacked net.core.flow_limit_cpu_bitmap and net.ipv6.ip6frag_*).
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn testbed_restores_every_sysctl_of_every_builtin_tuner() {
    let _g = setup("testbed_restores_every_sysctl_of_every_builtin_tuner");
    let d = common::Daemon::start(&[]);
    let restored = d
        .global_sysctls()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.tail(30)));
    let mut checked = 0;
    for t in bpftune::tuners::all() {
        for desc in t.tunables() {
            let path = format!("/proc/sys/{}", desc.name.replace('.', "/"));
            if desc.kind != bpftune::model::tunable::TunableKind::Sysctl || !Path::new(&path).exists() {
                continue;
            }
            checked += 1;
            assert!(
                restored.contains(desc.name),
                "{} ({}) is not among the sysctls the testbed restores: {restored:?}",
                desc.name,
                t.name()
            );
        }
    }
    assert!(
        checked > 20,
        "only {checked} sysctls of the built-in tuners exist here"
    );
}

/// Tests share the host: a daemon a test starts without `-R` changes globals (tcp_conn
/// extends the allowed congestion-control list at start) and would leave them behind.
/// `common::Daemon::start` has the testbed put back every global it left changed when
/// it stops (or when the test panics), so a test leaves the host as it found it.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn a_daemon_without_rollback_leaves_no_global_changed() {
    let _g = setup("a_daemon_without_rollback_leaves_no_global_changed");
    const ALLOWED: &str = "net.ipv4.tcp_allowed_congestion_control";
    let guard = common::SysctlGuard::set(ALLOWED, "reno").unwrap_or_else(|e| panic!("{ALLOWED}: {e:#}"));
    let d = common::Daemon::start(&["-a", "tcp_conn", "-a", "sysctl"]);
    d.expect_log(
        "updating 'net.ipv4.tcp_allowed_congestion_control' to '",
        Duration::from_secs(5),
        "start-up change",
    );
    let changed = guard.current().expect("read the allowed list");
    assert_ne!(changed.trim(), "reno", "tcp_conn changed nothing");
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 20));
    assert_eq!(
        guard.current().expect("read the allowed list").trim(),
        "reno",
        "the daemon's {changed:?} was left behind\n{}",
        common::tail(&log, 20)
    );
}

//! Daemon lifecycle: a second daemon on the same run directory is refused and must not
//! disturb the first; SIGTERM exits cleanly and leaves nothing mounted or listening.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{admin_sysctl, netns, setup, wait_timeout, Daemon, BPFTUNE};

fn is_mounted(path: &std::path::Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn second_daemon_is_refused_and_leaves_the_first_alone() {
    let _g = setup("second_daemon_is_refused_and_leaves_the_first_alone");
    // Packaged layout: the cgroup2 mount lives in the run directory.
    let d = Daemon::start_packaged_layout(&["-R"]);
    let cg = d.cgroup_dir().to_path_buf();
    assert!(
        is_mounted(&cg),
        "first daemon should have mounted cgroup2 at {}",
        cg.display()
    );

    let mut second = Command::new(BPFTUNE)
        .args(["-s", "-c"])
        .arg(&cg)
        .env("BPFTUNE_RUN_DIR", d.run_dir())
        .env("BPFTUNE_STATE_DIR", d.state_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second bpftune");
    let status = wait_timeout(&mut second, Duration::from_secs(10));
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let mut err = String::new();
    if let Some(mut e) = second.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut err);
    }
    let status = status.unwrap_or_else(|| panic!("second daemon on the same run dir did not exit:\n{err}"));
    assert_eq!(
        status.code(),
        Some(1),
        "second daemon exit status; stderr:\n{err}"
    );
    assert!(
        err.contains("another bpftune"),
        "second daemon should say another bpftune runs:\n{err}"
    );

    // The first one is untouched: still answering, still mounted, still watching.
    assert!(d.alive(), "first daemon died:\n{}", d.tail(30));
    let tuners = d.query_ok("tuners");
    assert!(
        tuners
            .lines()
            .any(|l| l.split_whitespace().eq(["tcp_buffer", "active"])),
        "tuners:\n{tuners}"
    );
    let ns = netns("adm");
    let cookie = ns.cookie().expect("cookie");
    admin_sysctl(Some(&ns), "net.ipv4.tcp_wmem", "4096 16384 4194304");
    d.expect_log(
        &format!("modified sysctl 'net.ipv4.tcp_wmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie {cookie}"),
        Duration::from_secs(5),
        "the first daemon still sees sysctl writes",
    );

    // The refused daemon found the cgroup2 mount in the run dir and must not treat it as
    // a leftover of its own to unmount.
    assert!(
        is_mounted(&cg),
        "the refused second daemon unmounted the first daemon's cgroup2 at {}\nsecond daemon's stderr:\n{err}",
        cg.display()
    );

    let pid = d.pid();
    let sock = d.run_dir().join("query.sock");
    // terminate() keeps the directories, so leftovers are visible (Drop would clean up).
    let st = d.terminate();
    let tail = d.tail(30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        !is_mounted(&cg),
        "cgroup2 mount {} left after exit\n{tail}",
        cg.display()
    );
    assert!(!sock.exists(), "query socket left after exit");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "daemon process still exists"
    );
}

/// A start-up that fails after the cgroup mount and the query socket exist (here: an
/// allow-list naming no tuner) releases both: exit 1, nothing mounted, no socket.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn failed_start_leaves_no_mount_and_no_socket() {
    let _g = setup("failed_start_leaves_no_mount_and_no_socket");
    let dir = common::temp_dir("failstart");
    let run = dir.path().join("run");
    let cg = run.join("cgroupv2");
    let out = Command::new(BPFTUNE)
        .args(["-s", "-a", "no_such_tuner", "-c"])
        .arg(&cg)
        .env("BPFTUNE_RUN_DIR", &run)
        .env("BPFTUNE_STATE_DIR", dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run bpftune");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(err.contains("-a no_such_tuner: no such tuner"), "{err}");
    assert!(err.contains("no ringbuf events to watch, exiting."), "{err}");
    // The mount happened (the run dir was set up) and was undone.
    assert!(run.exists(), "run dir was created");
    assert!(!is_mounted(&cg), "cgroup2 left mounted at {}", cg.display());
    assert!(!cg.exists(), "cgroup dir left behind");
    assert!(!run.join("query.sock").exists(), "query socket left behind");
}

//! What every daemon start logs before "bpftune started": the support-level lines of
//! `bpftune -S` in C bpftune's words, through whichever log sink is in use (stderr with
//! `-s`, journald when run by systemd, syslog(3) otherwise), and libbpf's messages with
//! one "libbpf: " prefix.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{setup, wait_timeout, Daemon, TempDir, BPFTUNE};

const FULLY: &str = "bpftune works fully";
const LEGACY: &str = "bpftune works in legacy mode";
const NETNS: &str = "bpftune supports per-netns policy (via netns cookie)";
const STARTED: &str = "bpftune started";

/// Position of the first line of `log` that ends with `text` (the text after whatever
/// prefix the sink adds), or panics with the log.
fn line_index(log: &str, text: &str) -> usize {
    log.lines()
        .position(|l| l.trim_end().ends_with(text) || (text == STARTED && l.contains(STARTED)))
        .unwrap_or_else(|| panic!("no line ending in {text:?} in log:\n{}", common::tail(log, 40)))
}

/// `level` then the netns line then "bpftune started", in that order.
fn assert_support_lines_first(log: &str, level: &str) {
    let (l, n, s) = (
        line_index(log, level),
        line_index(log, NETNS),
        line_index(log, STARTED),
    );
    assert!(
        l < n && n < s,
        "order of level ({l}), netns ({n}) and started ({s}) lines:\n{}",
        common::tail(log, 40)
    );
}

#[test]
fn stderr_start_logs_support_lines_and_single_libbpf_prefix() {
    let Some(_g) = setup("stderr_start_logs_support_lines_and_single_libbpf_prefix") else {
        return;
    };
    // The harness runs `bpftune -s -d …`.
    let d = Daemon::start(&[]);
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}");
    assert_support_lines_first(&log, FULLY);
    assert!(
        log.lines().any(|l| l.starts_with(&format!("bpftune: {FULLY}"))),
        "stderr lines carry the 'bpftune: ' prefix:\n{}",
        common::tail(&log, 20)
    );
    assert!(!log.contains(LEGACY), "not legacy mode on this kernel");
    // -d shows libbpf's loader messages: each with exactly one prefix.
    let libbpf: Vec<&str> = log.lines().filter(|l| l.contains("libbpf: ")).collect();
    assert!(!libbpf.is_empty(), "-d should show libbpf's messages");
    let doubled: Vec<&&str> = libbpf
        .iter()
        .filter(|l| l.contains("libbpf: libbpf:"))
        .take(3)
        .collect();
    assert!(doubled.is_empty(), "doubled libbpf prefix: {doubled:?}");
}

#[test]
fn legacy_start_logs_legacy_mode() {
    let Some(_g) = setup("legacy_start_logs_legacy_mode") else {
        return;
    };
    let d = Daemon::start(&["-L"]);
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}");
    assert_support_lines_first(&log, LEGACY);
    assert!(
        !log.contains(FULLY),
        "-L must not claim full mode:\n{}",
        common::tail(&log, 30)
    );
}

/// A daemon started without `-s` (so through the syslog sink), SIGTERMed on drop.
struct Bare {
    child: Option<Child>,
    _dir: TempDir,
}

impl Bare {
    /// Runs `cmd` (a `bpftune` command) with private run/state/cgroup directories.
    fn spawn(cmd: &mut Command) -> Bare {
        let dir = TempDir::new("bare");
        cmd.env("BPFTUNE_RUN_DIR", dir.path().join("run"))
            .env("BPFTUNE_STATE_DIR", dir.path().join("state"))
            .arg("-c")
            .arg(dir.path().join("cgroupv2"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BPFTUNE}: {e}"));
        Bare {
            child: Some(child),
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            if wait_timeout(&mut c, Duration::from_secs(15)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_file(path: &Path, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Under systemd (stderr is the journal stream named by JOURNAL_STREAM) every line is a
/// `<priority>message` record; the support lines are NOTICE (5).
#[test]
fn journal_start_logs_support_lines() {
    let Some(_g) = setup("journal_start_logs_support_lines") else {
        return;
    };
    let tmp = TempDir::new("journal");
    let log_path = tmp.path().join("journal.log");
    let file = fs::File::create(&log_path).expect("create log file");
    let meta = file.metadata().expect("stat log file");
    let mut cmd = Command::new(BPFTUNE);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(Stdio::from(file));
    let mut d = Bare::spawn(&mut cmd);
    let log = wait_file(&log_path, STARTED, Duration::from_secs(15));
    d.stop();
    assert!(log.contains(STARTED), "journal daemon did not start:\n{log}");
    assert_support_lines_first(&log, FULLY);
    for text in [FULLY, NETNS] {
        assert!(
            log.lines().any(|l| l == format!("<5>{text}")),
            "{text:?} as a NOTICE journal record:\n{}",
            common::tail(&log, 20)
        );
    }
}

/// syslog(3): this machine has no /dev/log, so the daemon runs in a private mount
/// namespace where a tmpfs /dev holds our datagram socket bind-mounted as /dev/log.
/// The host's /dev is never touched.
#[test]
fn syslog_start_logs_support_lines() {
    let Some(_g) = setup("syslog_start_logs_support_lines") else {
        return;
    };
    let tmp = TempDir::new("syslog");
    let sock_path = tmp.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind syslog socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("socket timeout");
    let c = |s: &[u8]| CString::new(s).expect("no NUL in path");
    let (root, dev, tmpfs, log, src) = (
        c(b"/"),
        c(b"/dev"),
        c(b"tmpfs"),
        c(b"/dev/log"),
        c(sock_path.as_os_str().as_bytes()),
    );
    let mut cmd = Command::new(BPFTUNE);
    cmd.env_remove("JOURNAL_STREAM").stderr(Stdio::null());
    // SAFETY: only async-signal-safe system calls on CStrings built before fork; no
    // allocation in the child.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                dev.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            let fd = libc::open(log.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
            check(fd)?;
            libc::close(fd);
            check(libc::mount(
                src.as_ptr(),
                log.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            Ok(())
        });
    }
    let mut d = Bare::spawn(&mut cmd);
    let mut msgs: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline && !msgs.iter().any(|m| m.contains(STARTED)) {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    d.stop();
    let log = msgs.join("\n");
    assert!(log.contains(STARTED), "syslog daemon did not start:\n{log}");
    assert_support_lines_first(&log, FULLY);
    for text in [FULLY, NETNS] {
        // <29> = LOG_DAEMON | LOG_NOTICE, then timestamp and "bpftune[pid]: ".
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("<29>") && m.contains("bpftune[") && m.trim_end().ends_with(text)),
            "{text:?} as a NOTICE daemon syslog message:\n{log}"
        );
    }
}

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
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn stderr_start_logs_support_lines_and_single_libbpf_prefix() {
    let _g = setup("stderr_start_logs_support_lines_and_single_libbpf_prefix");
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
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn legacy_start_logs_legacy_mode() {
    let _g = setup("legacy_start_logs_legacy_mode");
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
    /// Dropped after the daemon stopped (`Drop` stops it first): puts back the globals
    /// it left changed.
    _globals: common::GlobalsGuard,
    _dir: TempDir,
}

impl Bare {
    /// Runs `cmd` (a `bpftune` command) with private run/state/cgroup directories.
    fn spawn(cmd: &mut Command) -> Bare {
        let globals = common::GlobalsGuard::take();
        let dir = common::temp_dir("bare");
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
            _globals: globals,
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
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn journal_start_logs_support_lines() {
    let _g = setup("journal_start_logs_support_lines");
    let tmp = common::temp_dir("journal");
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
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn syslog_start_logs_support_lines() {
    let _g = setup("syslog_start_logs_support_lines");
    let tmp = common::temp_dir("syslog");
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

// ---------------------------------------------------------------------------------------
// Stale cgroup programs (reference §1.10)
// ---------------------------------------------------------------------------------------

use libbpf_rs::libbpf_sys;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `r0 = 1; exit`: allow everything (a no-op for sysctl and sockops programs).
const ALLOW: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];

/// Loads a no-op program of `prog_type` named `name` (the kernel keeps 15 characters).
fn load_noop(
    prog_type: libbpf_sys::bpf_prog_type,
    attach: libbpf_sys::bpf_attach_type,
    name: &str,
) -> OwnedFd {
    let name = CString::new(name).expect("name");
    let opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        ..Default::default()
    };
    let mut opts = opts;
    // SAFETY: ALLOW is two valid 8-byte instructions (bpf_insn layout); the strings and
    // opts outlive the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            c"GPL".as_ptr(),
            ALLOW.as_ptr().cast(),
            ALLOW.len() as _,
            &mut opts,
        )
    };
    assert!(
        fd >= 0,
        "load {name:?}: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: a fresh fd owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A child cgroup of the cgroup-v2 root with legacy (link-less, BPF_F_ALLOW_MULTI)
/// attachments; whatever is still attached is detached, and the cgroup removed, on drop.
struct StaleCgroup {
    path: std::path::PathBuf,
    dir: fs::File,
}

const SYSCTL: (libbpf_sys::bpf_prog_type, libbpf_sys::bpf_attach_type) = (
    libbpf_sys::BPF_PROG_TYPE_CGROUP_SYSCTL,
    libbpf_sys::BPF_CGROUP_SYSCTL,
);
const SOCKOPS: (libbpf_sys::bpf_prog_type, libbpf_sys::bpf_attach_type) = (
    libbpf_sys::BPF_PROG_TYPE_SOCK_OPS,
    libbpf_sys::BPF_CGROUP_SOCK_OPS,
);

impl StaleCgroup {
    /// Err: the reason the cgroup cannot be created (the test skips).
    fn new() -> Result<StaleCgroup, String> {
        let root = Path::new("/sys/fs/cgroup/unified");
        let root = if root.is_dir() {
            root
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let path = root.join(format!("{}-stale-{}", common::PREFIX, std::process::id()));
        if let Err(e) = fs::create_dir(&path) {
            return Err(format!("needs a cgroup it can create: {}: {e}", path.display()));
        }
        let dir = fs::File::open(&path).expect("open cgroup");
        Ok(StaleCgroup { path, dir })
    }

    /// Loads and attaches (legacy) a no-op program; returns (prog id, fd).
    fn attach(
        &self,
        kind: (libbpf_sys::bpf_prog_type, libbpf_sys::bpf_attach_type),
        name: &str,
    ) -> (u32, OwnedFd) {
        let fd = load_noop(kind.0, kind.1, name);
        // SAFETY: both fds are open.
        let rc = unsafe {
            libbpf_sys::bpf_prog_attach(
                fd.as_raw_fd(),
                self.dir.as_raw_fd(),
                kind.1,
                libbpf_sys::BPF_F_ALLOW_MULTI,
            )
        };
        assert_eq!(rc, 0, "attach {name}: {}", std::io::Error::from_raw_os_error(-rc));
        let mut info = libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: `info` is writable for `len` bytes; all-zero asks for no arrays.
        let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
        assert_eq!(rc, 0, "prog info of {name}");
        (info.id, fd)
    }

    fn attached(&self, attach: libbpf_sys::bpf_attach_type) -> Vec<u32> {
        let mut ids = [0u32; 64];
        let mut cnt = ids.len() as u32;
        let mut flags = 0u32;
        // SAFETY: `ids` has room for `cnt` entries.
        let rc = unsafe {
            libbpf_sys::bpf_prog_query(
                self.dir.as_raw_fd(),
                attach,
                0,
                &mut flags,
                ids.as_mut_ptr(),
                &mut cnt,
            )
        };
        assert_eq!(rc, 0, "query cgroup");
        ids[..cnt as usize].to_vec()
    }
}

impl Drop for StaleCgroup {
    fn drop(&mut self) {
        for attach in [SYSCTL.1, SOCKOPS.1] {
            for id in self.attached(attach) {
                // SAFETY: plain syscall wrappers on fds we own.
                unsafe {
                    let fd = libbpf_sys::bpf_prog_get_fd_by_id(id);
                    if fd >= 0 {
                        libbpf_sys::bpf_prog_detach2(fd, self.dir.as_raw_fd(), attach);
                        libc::close(fd);
                    }
                }
            }
        }
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// After a `kill -9` of a bpftune that attached without links (C bpftune does), its
/// programs stay on the cgroup. A new daemon detaches those — and only those: not
/// another tool's program, not one a live process still holds.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn stale_bpftune_cgroup_programs_are_detached_at_start() {
    let _g = setup("stale_bpftune_cgroup_programs_are_detached_at_start");
    let cg = match StaleCgroup::new() {
        Ok(cg) => cg,
        Err(reason) => common::skip!("{reason}"),
    };
    let (stale_sysctl, fd) = cg.attach(SYSCTL, "bpftune_sysctl_write");
    drop(fd);
    let (stale_conn, fd) = cg.attach(SOCKOPS, "bpftune_conn_tuner");
    drop(fd);
    // Another tool's programs, with and without an owner: never ours to detach.
    let (other, other_fd) = cg.attach(SYSCTL, "other_tool_sysctl");
    let (other_ops, fd) = cg.attach(SOCKOPS, "othertool_ops");
    drop(fd);
    // A bpftune program whose fd a live process (this test) still holds.
    let (held, _held_fd) = cg.attach(SYSCTL, "bpftune_sysctl_write");

    let dir = common::temp_dir("stale");
    let log_path = dir.path().join("bpftune.log");
    let file = fs::File::create(&log_path).expect("log file");
    let _globals = common::GlobalsGuard::take();
    let mut cmd = Command::new(BPFTUNE);
    // The daemon uses the child cgroup itself (`-c`), so nothing else on the host runs
    // these programs or sees them detached.
    cmd.args(["-s", "-d"]).stderr(Stdio::from(file));
    let mut child = cmd
        .env("BPFTUNE_RUN_DIR", dir.path().join("run"))
        .env("BPFTUNE_STATE_DIR", dir.path().join("state"))
        .arg("-c")
        .arg(&cg.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start bpftune");
    let log = wait_file(&log_path, STARTED, Duration::from_secs(15));
    // Our own sysctl program is attached through a link while the daemon runs.
    let during = cg.attached(SYSCTL.1);
    // SAFETY: kill(2) on our own, not yet reaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if wait_timeout(&mut child, Duration::from_secs(15)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        log.contains(STARTED),
        "daemon did not start:\n{}",
        common::tail(&log, 40)
    );
    for (id, name) in [(stale_sysctl, "bpftune_sysctl_"), (stale_conn, "bpftune_conn_tu")] {
        assert!(
            log.contains(&format!("detaching old BPF program '{name}' (id {id}")),
            "stale {name} (id {id}) not detached:\n{}",
            common::tail(&log, 40)
        );
    }
    assert_eq!(
        log.matches("detaching old BPF program").count(),
        2,
        "exactly the two stale programs:\n{}",
        common::tail(&log, 40)
    );
    assert!(
        log.contains(&format!(
            "(id {held}) attached: live process(es) [{}] hold it",
            std::process::id()
        )),
        "held program should be left alone with a reason:\n{}",
        common::tail(&log, 40)
    );
    let sysctl_now = cg.attached(SYSCTL.1);
    let ops_now = cg.attached(SOCKOPS.1);
    assert!(
        !sysctl_now.contains(&stale_sysctl) && !ops_now.contains(&stale_conn),
        "{sysctl_now:?} {ops_now:?}"
    );
    assert!(
        sysctl_now.contains(&other) && sysctl_now.contains(&held),
        "{sysctl_now:?}"
    );
    assert!(ops_now.contains(&other_ops), "{ops_now:?}");
    assert!(
        during.len() == sysctl_now.len() + 1,
        "the daemon's own program was attached while it ran and is gone after: {during:?} vs {sysctl_now:?}"
    );
    drop(other_fd);
}

// ---------------------------------------------------------------------------------------
// Restart next to a stopping predecessor (issue 20 item 1)
// ---------------------------------------------------------------------------------------

const SMALL_RMEM: &str = "4096 131072 262144";
const RAISE_1: &str =
    "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)";
const WAITING: &str = "s for the bpftune that is stopping (pid";

/// The persisted entry for `sysctl` in namespace `cookie` of `<state_dir>/originals.json`.
fn persisted(state_dir: &Path, sysctl: &str, cookie: u64) -> Option<serde_json::Value> {
    let text = fs::read_to_string(state_dir.join("originals.json")).ok()?;
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("originals.json is not JSON ({e}):\n{text}"));
    json["entries"]
        .as_array()?
        .iter()
        .find(|e| e["sysctl"] == sysctl && e["netns_cookie"] == cookie)
        .cloned()
}

/// `pkill -TERM bpftune; bpftune &` twenty times: each successor is started right after
/// the SIGTERM (not after the exit), waits for its predecessor, starts, and holds the
/// originals the first daemon saved; the last one (-R) restores them.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn restart_right_after_sigterm_takes_over_twenty_times_in_a_row() {
    let _g = setup("restart_right_after_sigterm_takes_over_twenty_times_in_a_row");
    let p = common::Pair::new();
    common::ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    common::ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let cookie = p.rx.cookie().expect("receiver cookie");

    // Its successors take over its state; the last one's -R restores the globals.
    let first = Daemon::start_keeping_globals(&[]);
    let first_pid = first.pid();
    p.iperf_until_log(&first, RAISE_1, "receiver tcp_rmem raise");
    let raised = common::ns_ints(&p.rx, "net.ipv4.tcp_rmem");
    assert!(raised[2] > 262144, "not raised: {raised:?}");
    let entry = persisted(first.state_dir(), "net.ipv4.tcp_rmem", cookie)
        .unwrap_or_else(|| panic!("no persisted original\n{}", first.tail(30)));
    assert_eq!(
        entry["original"],
        serde_json::json!([4096, 131072, 262144]),
        "{entry}"
    );
    // Everything the first daemon saved (the sender's tcp_wmem may be there too).
    let saved = fs::read_to_string(first.state_dir().join("originals.json")).expect("state file");
    let n = serde_json::from_str::<serde_json::Value>(&saved).expect("JSON")["entries"]
        .as_array()
        .map_or(0, Vec::len);

    const CYCLES: usize = 20;
    let t0 = Instant::now();
    let mut waits = 0;
    let mut prev: Option<Daemon> = None;
    for cycle in 1..=CYCLES {
        let cur = prev.as_ref().unwrap_or(&first);
        let last = cycle == CYCLES;
        cur.sigterm();
        let next = first.spawn_beside(if last { &["-R"] } else { &[] });
        next.expect_ready();
        let st = cur.terminate();
        assert!(
            st.success(),
            "cycle {cycle}: predecessor exit status {st}\n{}",
            cur.tail(30)
        );
        // The successor's start came after the predecessor's last line (its final state
        // write and release of everything).
        let ready = next.ready().expect("ready line");
        let cur_last = cur.lines().last().map(|l| l.t_ns).unwrap_or(0);
        assert!(
            ready.t_ns >= cur_last,
            "cycle {cycle}: successor ready before its predecessor's last line\npredecessor:\n{}\nsuccessor:\n{}",
            cur.tail(20),
            next.tail(20)
        );
        let log = next.log();
        if log.contains(WAITING) {
            waits += 1;
            assert!(
                log.contains(&format!(
                    "the previous bpftune (pid {}) has exited after",
                    cur.pid()
                )),
                "cycle {cycle}: takeover line\n{}",
                next.tail(30)
            );
        }
        assert!(
            log.contains(&format!(
                "found {n} original sysctl value(s) saved by an earlier bpftune (pid {first_pid})"
            )),
            "cycle {cycle}: successor did not take over the originals\n{}",
            next.tail(40)
        );
        // Nothing lost or rewritten on the way: the file is the first daemon's, byte for
        // byte (successors without traffic change nothing).
        assert_eq!(
            fs::read_to_string(next.state_dir().join("originals.json"))
                .ok()
                .as_deref(),
            Some(saved.as_str()),
            "cycle {cycle}: persisted originals"
        );
        assert_eq!(
            common::ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
            raised,
            "cycle {cycle}"
        );
        prev = Some(next);
    }
    let elapsed = t0.elapsed();
    let last = prev.expect("successor");
    let (st, log) = last.stop();
    assert!(st.success(), "last exit status {st}\n{}", common::tail(&log, 30));
    eprintln!(
        "{CYCLES} stop/start cycles in {:.1} s ({:.0} ms each); {waits} successor(s) logged a wait",
        elapsed.as_secs_f64(),
        elapsed.as_millis() as f64 / CYCLES as f64
    );
    assert_eq!(
        common::ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "the last (-R) successor restores the first daemon's original\n{}",
        common::tail(&log, 30)
    );
    assert!(persisted(first.state_dir(), "net.ipv4.tcp_rmem", cookie).is_none());
}

/// A live, healthy daemon still makes a second one on the same run directory exit 1 with
/// the message a second daemon always got; the first keeps running.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn second_daemon_beside_a_running_one_exits_1() {
    let _g = setup("second_daemon_beside_a_running_one_exits_1");
    let d = Daemon::start(&[]);
    let second = d.spawn_beside(&[]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = second.try_exit_status() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "second daemon still running\n{}",
            second.tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = second.log();
    assert_eq!(status.code(), Some(1), "exit status\n{}", common::tail(&log, 30));
    let msg = format!(
        "could not start query server: another bpftune query server is already listening on {}",
        d.run_dir().join("query.sock").display()
    );
    assert!(log.contains(&msg), "no {msg:?} in\n{}", common::tail(&log, 30));
    assert!(
        !log.contains(STARTED) && !log.contains(WAITING),
        "{}",
        common::tail(&log, 30)
    );
    assert!(d.alive(), "first daemon died\n{}", d.tail(30));
    d.query_ok("tuners");
    let (st, _) = d.stop();
    assert!(st.success(), "{st}");
}

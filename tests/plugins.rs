//! Plugin tuners: the C examples (examples/plugins) are built with clang here, their BPF
//! parts (built by build.rs) embedded; the daemon loads them from its `-l` directory at
//! start-up and while running, refuses untrusted files with a reason, unloads removed
//! ones, disables one whose callback fails, and switches strategies on their timeout.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{netns, ns_ints, setup, temp_dir, Daemon, TempDir};

const BPF_DIR: &str = env!("BPFTUNE_EXAMPLE_BPF_DIR");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Builds examples/plugins/<example>/<example>.c into `out` with `defines`.
fn build_plugin(example: &str, out: &Path, defines: &[&str]) {
    let src = format!("{ROOT}/examples/plugins/{example}/{example}.c");
    let obj = format!("-DBPF_OBJ=\"{BPF_DIR}/{example}.bpf.o\"");
    let st = Command::new("clang")
        .args(["-O2", "-Wall", "-Werror", "-fPIC", "-shared"])
        .arg(format!("-I{ROOT}/include"))
        .arg(obj)
        .args(defines)
        .arg(&src)
        .arg("-o")
        .arg(out)
        .status()
        .expect("clang");
    assert!(st.success(), "building {src} failed");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644)).expect("chmod plugin");
}

fn libdir(tag: &str) -> TempDir {
    let d = temp_dir(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod libdir");
    d
}

/// Reads kernel.core_pattern (the sample's BPF program reports every read by others).
fn read_core_pattern() {
    std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read core_pattern");
}

/// Puts `from` into `dir` as `name` atomically (rename), as a package manager would.
fn install(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::copy(from, &tmp).expect("copy plugin");
    std::fs::set_permissions(&tmp, std::fs::metadata(from).expect("stat").permissions()).expect("chmod");
    let dst = dir.join(name);
    std::fs::rename(&tmp, &dst).expect("rename plugin");
    dst
}

/// A copy in `stage` of target/release/librust_sample.so, next to this test's own directory (target/release/deps).
fn rust_sample(stage: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let lib = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("librust_sample.so"))
        .expect("target dir");
    assert!(
        lib.exists(),
        "{} missing: build the workspace first (cargo build --release --workspace)",
        lib.display()
    );
    let copy = stage.join("rust_sample.so");
    std::fs::copy(&lib, &copy).expect("copy rust sample");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    copy
}

fn count(log: &str, pat: &str) -> usize {
    log.lines().filter(|l| l.contains(pat)).count()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn plugins_load_unload_and_refusals_while_running() {
    let _g = setup("plugins_load_unload_and_refusals_while_running");
    let stage = temp_dir("plugin-stage");
    let dir = libdir("plugin-lib");
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    let wrong_abi = stage.path().join("wrong_abi.so");
    build_plugin("sample_tuner", &wrong_abi, &["-DSAMPLE_ABI=99"]);
    let failing = stage.path().join("failing.so");
    build_plugin("sample_tuner", &failing, &["-DSAMPLE_FAIL"]);
    let writable = stage.path().join("writable.so");
    std::fs::copy(&sample, &writable).expect("copy");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o646)).expect("chmod");

    let d = Daemon::start(&["-l", &dir.path().display().to_string()]);
    let path = dir.path().join("sample_tuner.so");

    // New file → loaded, its BPF program reports reads of kernel.core_pattern.
    std::fs::copy(&sample, &path).expect("copy plugin in");
    d.expect_log(
        "plugin tuner 'sample' (id ",
        Duration::from_secs(5),
        "sample loaded",
    );
    d.expect_log(
        "sample: sample tuner initialised",
        Duration::from_secs(2),
        "init called",
    );
    let tuners = d.query_ok("tuners");
    assert!(
        tuners.lines().any(|l| l
            .split_whitespace()
            .eq(["sample", "active", &path.display().to_string()])),
        "tuners lists the plugin with its origin:\n{tuners}"
    );
    assert!(
        tuners
            .lines()
            .any(|l| l.split_whitespace().eq(["tcp_buffer", "active"])),
        "built-in tuners are listed as before:\n{tuners}"
    );
    read_core_pattern();
    let me = std::process::id();
    d.expect_log(
        &format!("sample: kernel.core_pattern read by pid {me} "),
        Duration::from_secs(5),
        "sample event",
    );
    let summary = d.query_ok("summary");
    eprintln!("summary:\n{summary}");

    // Removed → unloaded (fini called); the tuner stays listed as gone.
    std::fs::remove_file(&path).expect("remove plugin");
    d.expect_log(
        "unloaded: its file was removed or replaced",
        Duration::from_secs(5),
        "sample unloaded",
    );
    d.expect_log(
        "sample: sample tuner finished after 1 event(s)",
        Duration::from_secs(2),
        "fini called",
    );
    let tuners = d.query_ok("tuners");
    assert!(
        tuners
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["sample", "gone"])),
        "unloaded plugin shows as gone:\n{tuners}"
    );

    // The Rust sample (a cdylib of the workspace, built by `make build`).
    let rust = rust_sample(stage.path());
    install(&rust, dir.path(), "rust_sample_tuner.so");
    d.expect_log(
        "plugin tuner 'rust_sample' (id ",
        Duration::from_secs(5),
        "rust sample loaded",
    );
    read_core_pattern();
    d.expect_log(
        &format!("rust_sample: kernel.core_pattern read by pid {me} (plugins_load_un), seen from Rust"),
        Duration::from_secs(5),
        "rust sample event",
    );
    // Its demo proposal goes through the engine: a reader named bpftune_demo in a
    // namespace gets that namespace's somaxconn raised by one, recorded as a change.
    let ns = netns("plugin");
    let before = ns_ints(&ns, "net.core.somaxconn")[0];
    let demo = stage.path().join("bpftune_demo");
    std::fs::copy("/bin/cat", &demo).expect("copy cat");
    let st = ns
        .command(&[&demo.display().to_string(), "/proc/sys/kernel/core_pattern"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run demo reader");
    assert!(st.success(), "demo reader failed");
    d.expect_log(
        &format!(
            "rust_sample: proposed net.core.somaxconn {before} -> {}: applied",
            before + 1
        ),
        Duration::from_secs(5),
        "rust sample proposal applied",
    );
    assert_eq!(
        ns_ints(&ns, "net.core.somaxconn"),
        [before + 1],
        "somaxconn raised in the namespace"
    );
    let changes = d.query_ok("jchanges");
    assert!(
        changes.contains("rust_sample") && changes.contains("net.core.somaxconn"),
        "change recorded:\n{changes}"
    );

    // Refusals, each with its reason.
    let ww = install(&writable, dir.path(), "sample_tuner.so");
    d.expect_log(
        "refused: writable by group or others (mode 646)",
        Duration::from_secs(5),
        "world-writable refused",
    );
    std::fs::remove_file(&ww).expect("rm");
    install(&wrong_abi, dir.path(), "sample_tuner.so");
    d.expect_log(
        "refused: ABI version 99, this bpftune implements 1",
        Duration::from_secs(5),
        "wrong ABI refused",
    );
    install(&sample, dir.path(), "sample_tuner.so.dpkg-new");
    d.expect_log(
        "sample_tuner.so.dpkg-new' refused: name is not",
        Duration::from_secs(5),
        "temp name refused",
    );
    install(&sample, dir.path(), "tcp_buffer_tuner.so");
    d.expect_log(
        "refused: 'tcp_buffer' is the name of a built-in tuner",
        Duration::from_secs(5),
        "built-in name refused",
    );
    // Another event in the directory rescans it: refusals are not logged again.
    install(&sample, dir.path(), "unrelated.txt");
    std::thread::sleep(Duration::from_millis(500));
    let log = d.log();
    for reason in [
        "refused: ABI version 99",
        "so.dpkg-new' refused",
        "name of a built-in tuner",
    ] {
        assert_eq!(count(&log, reason), 1, "{reason} logged once:\n{}", d.tail(30));
    }

    // Replaced by a version whose event callback fails → disabled with a log line.
    install(&failing, dir.path(), "sample_tuner.so");
    assert!(
        d.wait_until(Duration::from_secs(5), |log| count(
            log,
            "sample: sample tuner initialised"
        ) == 2),
        "failing sample loaded:\n{}",
        d.tail(20)
    );
    read_core_pattern();
    d.expect_log(
        "event callback returned -5; disabling it",
        Duration::from_secs(5),
        "failing plugin disabled",
    );
    d.expect_log(
        "unloaded: a callback failed",
        Duration::from_secs(3),
        "failing plugin unloaded",
    );
    assert!(d.alive(), "daemon survives a failing plugin");
    let (st, log) = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", common::tail(&log, 30));
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn allow_list_and_strategies() {
    let _g = setup("allow_list_and_strategies");
    let dir = libdir("plugin-lib-allow");
    build_plugin("sample_tuner", &dir.path().join("sample_tuner.so"), &[]);
    build_plugin("strategy_tuner", &dir.path().join("strategy_tuner.so"), &[]);

    // Only the named plugin runs: no built-in tuner, not the sample.
    let d = Daemon::start(&["-l", &dir.path().display().to_string(), "-a", "strategy_tuner.so"]);
    let tuners = d.query_ok("tuners");
    let names: Vec<&str> = tuners
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["strategy"], "tuners:\n{tuners}");
    assert!(!d.log().contains("no such tuner"), "{}", d.tail(20));

    // Strategy 'a' first; its 1 s timeout passes and 'b' (scored higher) takes over,
    // then 'a' again: the programs are swapped each time.
    d.expect_log(
        "strategy: switching strategy from 'a' to 'b'",
        Duration::from_secs(4),
        "switch to b",
    );
    // Reads until both programs have reported one: each was attached in its turn.
    let both = |l: &str| l.contains("seen by strategy a") && l.contains("seen by strategy b");
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while !both(&d.log()) && std::time::Instant::now() < deadline {
        read_core_pattern();
        std::thread::sleep(Duration::from_millis(200));
    }
    d.expect_log(
        "strategy: switching strategy from 'b' to 'a'",
        Duration::from_secs(4),
        "switch back to a",
    );
    let log = d.log();
    assert!(
        both(&log),
        "both strategies' programs reported reads:\n{}",
        d.tail(30)
    );
    // Every event names the program attached at the time: after the first switch to 'b'
    // and before the switch back, only 'b' can have seen the read.
    let after_b = log.split("from 'a' to 'b'").nth(1).unwrap_or_default();
    let window = after_b.split("from 'b' to 'a'").next().unwrap_or_default();
    if window.contains("seen by strategy") {
        assert!(
            !window.contains("seen by strategy a"),
            "strategy a's program saw a read while b was current:\n{window}"
        );
    }
    let (st, log) = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", common::tail(&log, 30));
    assert_eq!(
        count(&log, "plugin tuner 'sample'"),
        0,
        "sample must not load with -a strategy_tuner.so"
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn plugin_dir_created_after_start_is_watched() {
    let _g = setup("plugin_dir_created_after_start_is_watched");
    let stage = temp_dir("plugin-stage-later");
    let parent = libdir("plugin-lib-later");
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    let dir = parent.path().join("not-yet");

    let d = Daemon::start(&["-l", &dir.display().to_string()]);
    std::fs::create_dir(&dir).expect("mkdir libdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod libdir");
    d.expect_log(
        &format!("plugin directory {} now exists; watching it", dir.display()),
        Duration::from_secs(5),
        "new directory watched",
    );
    install(&sample, &dir, "sample_tuner.so");
    d.expect_log(
        "plugin tuner 'sample' (id ",
        Duration::from_secs(5),
        "sample loaded from the new directory",
    );
    let (st, log) = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", common::tail(&log, 30));
    assert_eq!(count(&log, "now exists; watching it"), 1, "logged once");
}

/// Built-in tuners and their states, from `-q tuners` (plugins have a third column).
fn builtin_states(tuners: &str) -> Vec<String> {
    tuners
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn a_plugin_that_crashes_the_daemon_is_quarantined_until_its_file_changes() {
    let _g = setup("a_plugin_that_crashes_the_daemon_is_quarantined_until_its_file_changes");
    // The crashing daemon cannot put back what it changed (tcp_conn's start-up addition
    // to the allowed congestion-control list), and the next one finds nothing of its own
    // to restore: the test does, from the tuners' descriptors.
    let _globals = common::GlobalsGuard::take();
    // No core file from the crash below (the daemon inherits this limit).
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid rlimit; affects this test process and its children.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let stage = temp_dir("plugin-stage-crash");
    let dir = libdir("plugin-lib-crash");
    let state = temp_dir("plugin-state-crash");
    let crashing = stage.path().join("crashing.so");
    build_plugin("sample_tuner", &crashing, &["-DSAMPLE_CRASH"]);
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    let path = install(&crashing, dir.path(), "sample_tuner.so");
    let args = ["-l", &dir.path().display().to_string()];

    // First run: loaded; its event callback dereferences NULL → the daemon dies of it.
    let d = Daemon::start_with_state(&args, state.path());
    d.expect_log(
        "plugin tuner 'sample' (id ",
        Duration::from_secs(5),
        "crashing sample loaded",
    );
    let before = builtin_states(&d.query_ok("tuners"));
    read_core_pattern();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = d.try_exit_status().expect("the daemon died of its plugin");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "killed by SIGSEGV: {st:?}");
    let record = std::fs::read_to_string(state.path().join("plugin-crash")).expect("crash record");
    assert!(
        record.contains("callback=event\n") && record.contains("signal=11\n"),
        "crash record:\n{record}"
    );
    drop(d);

    // Second run (systemd's restart): that file version is refused with the reason,
    // every built-in tuner runs as before, and the daemon survives the same event.
    let d = Daemon::start_with_state(&args, state.path());
    d.expect_log(
        &format!(
            "plugin '{}' crashed bpftune (SIGSEGV in its event callback) at ",
            path.display()
        ),
        Duration::from_secs(5),
        "crashing sample refused",
    );
    assert!(
        d.log().contains("; refusing it until the file changes"),
        "{}",
        d.tail(20)
    );
    let tuners = d.query_ok("tuners");
    assert!(
        !tuners
            .lines()
            .any(|l| l.starts_with("sample ") && l.contains("active")),
        "quarantined plugin is not active:\n{tuners}"
    );
    assert_eq!(
        builtin_states(&tuners),
        before,
        "built-in tuners as before:\n{tuners}"
    );
    read_core_pattern();
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.alive(), "daemon survives: {}", d.tail(20));
    assert_eq!(count(&d.log(), "plugin tuner 'sample' (id "), 0, "not loaded");

    // Replaced by another file → loaded again.
    install(&sample, dir.path(), "sample_tuner.so");
    d.expect_log(
        "changed since it crashed bpftune; trying it again",
        Duration::from_secs(5),
        "replaced file retried",
    );
    d.expect_log(
        "plugin tuner 'sample' (id ",
        Duration::from_secs(5),
        "replacement loaded",
    );
    read_core_pattern();
    d.expect_log(
        "sample: kernel.core_pattern read by pid",
        Duration::from_secs(5),
        "replacement handles the event",
    );
    let (st, log) = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", common::tail(&log, 30));
}

// ---------------------------------------------------------------------------------------
// Trust (issue 20 item 3): the directory chain from `/`, ACLs, and loading the checked file
// ---------------------------------------------------------------------------------------

use bpftune::plugin::trust::{self, AclWriter, Refusal};
use bpftune::plugin::{PluginError, PluginSpec};
use std::os::unix::fs::MetadataExt as _;

const NOBODY: u32 = 65534;

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), None).expect("chown");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sets `p`'s access ACL from (tag, perm, id) entries (the kernel's xattr format, so no
/// `setfacl` is needed); false if the file system has no ACLs.
fn set_acl(p: &Path, entries: &[(u16, u16, u32)]) -> bool {
    let mut v = trust::ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: NUL-terminated path and name, a buffer of v.len() bytes.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP),
            "setxattr {}: {e}",
            p.display()
        );
        return false;
    }
    true
}

/// `<base>/<name>/lib/sample_tuner.so` (a copy of `plugin`): the top directory with
/// `top_mode`, the rest 0755/0644 and root's. Returns (top, lib, file).
fn tree(base: &Path, name: &str, top_mode: u32, plugin: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let top = base.join(name);
    let lib = top.join("lib");
    std::fs::create_dir_all(&lib).expect("mkdir");
    chmod(&lib, 0o755);
    chmod(&top, top_mode);
    let file = lib.join("sample_tuner.so");
    std::fs::copy(plugin, &file).expect("copy plugin");
    chmod(&file, 0o644);
    let top = std::fs::canonicalize(&top).expect("canonical");
    (top.clone(), top.join("lib"), top.join("lib/sample_tuner.so"))
}

fn refusal(p: &Path) -> Refusal {
    match trust::open(p, 0) {
        Ok(_) => panic!("{} accepted", p.display()),
        Err(r) => r,
    }
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn untrusted_plugin_paths_are_refused_with_the_reason() {
    let _g = setup("untrusted_plugin_paths_are_refused_with_the_reason");
    let stage = temp_dir("plugin-trust-stage");
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    let base = libdir("plugin-trust");
    const USER_OBJ: u16 = trust::ACL_USER_OBJ;
    const NOID: u32 = u32::MAX;

    // The case: /X world-writable, not sticky; /X/lib 0755 root → refused.
    let (top, _, f) = tree(base.path(), "ww", 0o777, &sample);
    let r = refusal(&f);
    assert_eq!(
        r,
        Refusal::AncestorMode {
            dir: top.display().to_string(),
            mode: 0o777
        }
    );
    assert_eq!(
        PluginError::from(r).to_string(),
        format!(
            "refused: ancestor directory {} is writable by group or others (mode 0777, not sticky)",
            top.display()
        )
    );
    // Group-writable is no better.
    chmod(&top, 0o775);
    assert!(matches!(refusal(&f), Refusal::AncestorMode { mode: 0o775, .. }));

    // An ancestor owned by another user (who could chmod it and rename lib away).
    let (top, _, f) = tree(base.path(), "nobody", 0o755, &sample);
    chown(&top, NOBODY);
    assert_eq!(
        refusal(&f),
        Refusal::AncestorOwner {
            dir: top.display().to_string(),
            uid: NOBODY
        }
    );

    // Sticky and root's (like /tmp): accepted, and the checked file loads.
    let (top, lib, f) = tree(base.path(), "sticky", 0o1777, &sample);
    let spec = PluginSpec::open(&f, 0).expect("plugin under a sticky root-owned ancestor loads");
    assert_eq!(spec.name, "sample");
    drop(spec);
    // …but only with root's entries in it: the sticky bit protects root's entries only.
    chown(&lib, NOBODY);
    assert_eq!(
        refusal(&f),
        Refusal::DirOwner {
            dir: lib.display().to_string(),
            uid: NOBODY
        }
    );
    chown(&lib, 0);
    // An ancestor's ACL granting write (mode bits 0755 through the mask r-x).
    chmod(&top, 0o755);
    let acl_dir = set_acl(
        &top,
        &[
            (USER_OBJ, 7, NOID),
            (trust::ACL_USER, 7, NOBODY),
            (trust::ACL_GROUP_OBJ, 5, NOID),
            (trust::ACL_MASK, 5, NOID),
            (trust::ACL_OTHER, 5, NOID),
        ],
    );
    if acl_dir {
        assert_eq!(std::fs::metadata(&top).expect("stat").mode() & 0o7777, 0o755);
        assert_eq!(
            refusal(&f),
            Refusal::DirAcl {
                dir: top.display().to_string(),
                who: AclWriter::User(NOBODY)
            }
        );
    } else {
        eprintln!("no POSIX ACLs on {}: ACL refusals not tried", top.display());
    }

    // The file itself: group-writable, another owner, an ACL granting write, a symlink.
    let (_, lib, f) = tree(base.path(), "file", 0o755, &sample);
    chmod(&f, 0o664);
    assert_eq!(refusal(&f), Refusal::FileMode(0o664));
    assert!(PluginError::from(refusal(&f))
        .to_string()
        .contains("refused: writable by group or others (mode 664)"));
    chmod(&f, 0o644);
    chown(&f, NOBODY);
    assert_eq!(refusal(&f), Refusal::FileOwner(NOBODY));
    chown(&f, 0);
    assert_eq!(trust::check(&f, 0), Ok("sample".to_string()));
    if set_acl(
        &f,
        &[
            (USER_OBJ, 6, NOID),
            (trust::ACL_USER, 6, NOBODY),
            (trust::ACL_GROUP_OBJ, 4, NOID),
            (trust::ACL_MASK, 4, NOID),
            (trust::ACL_OTHER, 4, NOID),
        ],
    ) {
        // The mode bits alone say 0644: only the ACL shows nobody's write entry.
        assert_eq!(std::fs::metadata(&f).expect("stat").mode() & 0o777, 0o644);
        assert_eq!(refusal(&f), Refusal::FileAcl(AclWriter::User(NOBODY)));
        assert_eq!(
            PluginError::from(refusal(&f)).to_string(),
            "refused: its POSIX ACL grants write to user uid 65534"
        );
    }
    let link = lib.join("link_tuner.so");
    std::os::unix::fs::symlink(&sample, &link).expect("symlink");
    assert_eq!(refusal(&link), Refusal::Symlink);
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn a_plugin_replaced_after_its_check_is_not_the_one_loaded() {
    let _g = setup("a_plugin_replaced_after_its_check_is_not_the_one_loaded");
    let stage = temp_dir("plugin-swap-stage");
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    // Different content: loading it would fail on its ABI version.
    let other = stage.path().join("other.so");
    build_plugin("sample_tuner", &other, &["-DSAMPLE_ABI=99"]);
    let strategy = stage.path().join("strategy_tuner.so");
    build_plugin("strategy_tuner", &strategy, &[]);
    let base = libdir("plugin-swap");
    let (_, lib, f) = tree(base.path(), "x", 0o755, &sample);

    // The file renamed over between the check and the load (where the daemon's
    // trust::open and PluginSpec::load meet): the checked one loads, never the new one.
    for (what, mode) in [("untrusted (0666)", 0o666), ("trusted-looking (0644)", 0o644)] {
        let checked = trust::open(&f, 0).expect("checked");
        let checked_ino = checked.metadata.ino();
        let tmp = lib.join(".swap");
        std::fs::copy(&other, &tmp).expect("copy");
        chmod(&tmp, mode);
        std::fs::rename(&tmp, &f).expect("swap");
        assert_ne!(std::fs::metadata(&f).expect("stat").ino(), checked_ino);
        let spec = PluginSpec::load(checked).unwrap_or_else(|e| panic!("swapped to {what}: {e}"));
        assert_eq!(spec.name, "sample", "swapped to {what}: the checked file loaded");
        drop(spec);
        // What the path names now is judged on its own.
        match PluginSpec::open(&f, 0) {
            Err(PluginError::Refused(Refusal::FileMode(0o666))) => assert_eq!(mode, 0o666),
            Err(PluginError::Abi { found: 99, .. }) => assert_eq!(mode, 0o644),
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: the ABI-99 build loaded"),
        }
        std::fs::copy(&sample, &tmp).expect("copy");
        chmod(&tmp, 0o644);
        std::fs::rename(&tmp, &f).expect("restore");
    }

    // The whole directory swapped after the check: still the checked file.
    let checked = trust::open(&f, 0).expect("checked");
    let evil = base.path().join("x/evil");
    std::fs::create_dir(&evil).expect("mkdir");
    chmod(&evil, 0o777);
    std::fs::copy(&other, evil.join("sample_tuner.so")).expect("copy");
    std::fs::rename(&lib, base.path().join("x/old")).expect("rename lib away");
    std::fs::rename(&evil, &lib).expect("rename evil in");
    let spec = PluginSpec::load(checked).expect("checked file loads after a directory swap");
    assert_eq!(spec.name, "sample");
    drop(spec);
    assert!(matches!(
        trust::open(&f, 0),
        Err(Refusal::DirMode { mode: 0o777, .. })
    ));

    // glibc finds loaded libraries by name (here /proc/self/fd/N) and inode: a library
    // unloaded, then another file opened under a reused descriptor number, is the new
    // file; the same inode still mapped is refused rather than silently reused.
    let dir = libdir("plugin-swap-names");
    let s = install(&sample, dir.path(), "sample_tuner.so");
    let t = install(&strategy, dir.path(), "strategy_tuner.so");
    for _ in 0..3 {
        assert_eq!(PluginSpec::open(&s, 0).expect("sample").name, "sample");
        assert_eq!(PluginSpec::open(&t, 0).expect("strategy").name, "strategy");
    }
    let twin_dir = libdir("plugin-swap-twin");
    let twin = twin_dir.path().join("sample_tuner.so");
    std::fs::hard_link(&s, &twin).expect("hard link");
    let held = PluginSpec::open(&s, 0).expect("sample");
    match PluginSpec::open(&twin, 0) {
        Err(PluginError::Open(m)) => assert!(m.contains("same inode) is still mapped"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the same inode was loaded twice"),
    }
    drop(held);
    assert_eq!(
        PluginSpec::open(&twin, 0).expect("twin after unload").name,
        "sample"
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn the_daemon_refuses_a_plugin_under_a_world_writable_ancestor() {
    let _g = setup("the_daemon_refuses_a_plugin_under_a_world_writable_ancestor");
    let stage = temp_dir("plugin-ww-stage");
    let sample = stage.path().join("sample_tuner.so");
    build_plugin("sample_tuner", &sample, &[]);
    let base = libdir("plugin-ww");
    let (top, lib, f) = tree(base.path(), "X", 0o777, &sample);

    let d = Daemon::start(&["-l", &lib.display().to_string()]);
    d.expect_log(
        &format!(
            "plugin '{}' refused: ancestor directory {} is writable by group or others (mode 0777, not sticky)",
            f.display(),
            top.display()
        ),
        Duration::from_secs(5),
        "ancestor refusal logged",
    );
    // Fixed, and the plugin installed again (a new file version): loaded.
    chmod(&top, 0o755);
    install(&sample, &lib, "sample_tuner.so");
    d.expect_log(
        "plugin tuner 'sample' (id ",
        Duration::from_secs(5),
        "loaded once the ancestor is fixed",
    );
    let (st, log) = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", common::tail(&log, 30));
    assert_eq!(count(&log, "refused: ancestor directory"), 1, "logged once");
}

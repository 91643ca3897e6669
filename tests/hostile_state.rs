//! Hostile state around the daemon (issue 13 item 2): a run directory pre-created by
//! another user, or planted as a symlink, makes the daemon refuse to start with a
//! message naming the directory, without a panic and without touching the directory
//! (no socket bound in it, nothing mounted under it).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use common::{setup, temp_dir, BPFTUNE};

/// Starts `bpftune -s` on `run`; the start-up must fail before any BPF is loaded.
fn start_on(run: &std::path::Path, state: &std::path::Path) -> (i32, String) {
    let out = Command::new(BPFTUNE)
        .args(["-s", "-c"])
        .arg(run.join("cgroupv2"))
        .env("BPFTUNE_RUN_DIR", run)
        .env("BPFTUNE_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("run bpftune");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn run_dir_of_another_user_or_a_symlink_is_refused() {
    let _g = setup("run_dir_of_another_user_or_a_symlink_is_refused");
    let dir = temp_dir("hostile-run");
    let state = dir.path().join("state");

    // Pre-created by nobody (as a local user could create /var/run/bpftune before boot).
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).expect("chown nobody");
    let (code, err) = start_on(&run, &state);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let entries: Vec<_> = std::fs::read_dir(&run)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "daemon created {entries:?} in another user's directory"
    );

    // A symlink planted where the run directory should be, pointing at a directory the
    // attacker wants the root daemon to create files in.
    let target = dir.path().join("victim");
    std::fs::create_dir(&target).expect("mkdir victim");
    let link = dir.path().join("run-link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let (code, err) = start_on(&link, &state);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symlinks are not followed"), "{err}");
    assert!(
        std::fs::read_dir(&target).expect("ls").next().is_none(),
        "wrote through the symlink"
    );

    // World-writable (a shared /tmp-like directory).
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let (code, err) = start_on(&open, &state);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
}

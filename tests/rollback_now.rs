//! `--rollback-now`: the one-shot form of `-R` for package removal and the Kubernetes
//! preStop hook. After a daemon without `-R` stopped and left its changes, it restores
//! the persisted originals and exits; it refuses while a daemon answers on the run dir.

mod common;

use std::process::Command;

use common::{ns_ints, ns_set, setup, temp_dir, Daemon, Pair, TempDir, BPFTUNE};

const SMALL_RMEM: &str = "4096 131072 262144";

fn rollback_now(state: &std::path::Path, run: &std::path::Path) -> (i32, String) {
    let out = Command::new(BPFTUNE)
        .arg("--rollback-now")
        .env("BPFTUNE_STATE_DIR", state)
        .env("BPFTUNE_RUN_DIR", run)
        .output()
        .expect("run bpftune --rollback-now");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A pair whose receiver starts with a small tcp_rmem, and a daemon without `-R` (it
/// leaves its changes in place when it stops) on a private state dir that has raised it.
fn tuned_daemon() -> (Pair, TempDir, Daemon) {
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let state = temp_dir("state");
    let d = Daemon::start_with_state(&[], state.path());
    p.iperf_until_log(
        &d,
        "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) ->",
        "receiver tcp_rmem raise",
    );
    (p, state, d)
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn rollback_now_restores_what_a_stopped_daemon_left() {
    let _g = setup("rollback_now_restores_what_a_stopped_daemon_left");
    let (p, state, d) = tuned_daemon();

    // While the daemon runs it owns the state file: refused, nothing restored.
    let (code, text) = rollback_now(state.path(), d.run_dir());
    assert_eq!(code, 1, "--rollback-now next to a running daemon: {text}");
    assert!(text.contains("a bpftune daemon is running"), "{text}");
    assert!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem")[2] > 262144,
        "restored too early"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    let raised = ns_ints(&p.rx, "net.ipv4.tcp_rmem");
    assert!(
        raised[2] > 262144,
        "no -R: the raise stays after exit: {raised:?}"
    );

    let run = temp_dir("run");
    let (code, text) = rollback_now(state.path(), run.path());
    eprintln!("{text}");
    assert_eq!(code, 0, "--rollback-now: {text}");
    assert!(
        text.contains("Rolling back sysctl values for 'net.ipv4.tcp_rmem'"),
        "no rollback line: {text}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "receiver tcp_rmem after --rollback-now"
    );
    let json = std::fs::read_to_string(state.path().join("originals.json")).unwrap_or_default();
    assert!(
        !json.contains("net.ipv4.tcp_rmem"),
        "the restored entry is still persisted: {json}"
    );

    // A second run has nothing left to do.
    let (code, text) = rollback_now(state.path(), run.path());
    assert_eq!(code, 0, "second --rollback-now: {text}");
    assert!(text.contains("0 persisted original value(s)"), "{text}");
}

/// `--rollback-now` right after the daemon's SIGTERM (a preStop-like sequence): it waits
/// for the stopping daemon instead of refusing or racing it, then restores.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn rollback_now_right_after_sigterm_waits_for_the_stopping_daemon() {
    let _g = setup("rollback_now_right_after_sigterm_waits_for_the_stopping_daemon");
    let (p, state, d) = tuned_daemon();
    d.sigterm();
    let (code, text) = rollback_now(state.path(), d.run_dir());
    let st = d.terminate();
    assert!(st.success(), "daemon exit status {st}\n{}", d.tail(30));
    assert_eq!(code, 0, "--rollback-now after SIGTERM: {text}");
    assert!(
        text.contains("s for the bpftune that is stopping (pid"),
        "no wait line: {text}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "receiver tcp_rmem after --rollback-now\n{text}"
    );
}

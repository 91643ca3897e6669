//! `-R`: on exit, every sysctl bpftune changed goes back to its original value — unless an
//! administrator changed it since — and originals persisted before a crash are restored by
//! the next `-R` run.

mod common;

use std::time::Duration;

use common::{admin_sysctl, ns_ints, ns_set, setup, temp_dir, Daemon, Pair};

const SMALL_RMEM: &str = "4096 131072 262144";
const RAISE_1: &str =
    "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)";

/// Receiver with a small tcp_rmem max, sender with a large tcp_wmem max.
fn pair() -> Pair {
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    p
}

fn raise(d: &Daemon, p: &Pair) -> Vec<i64> {
    p.iperf_until_log(d, RAISE_1, "receiver tcp_rmem raise");
    let v = ns_ints(&p.rx, "net.ipv4.tcp_rmem");
    assert!(
        v[2] > 262144,
        "receiver tcp_rmem not raised: {v:?}\n{}",
        d.tail(40)
    );
    v
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn rollback_restores_namespace_values_on_exit() {
    let _g = setup("rollback_restores_namespace_values_on_exit");
    let p = pair();
    let d = Daemon::start(&["-R"]);
    let raised = raise(&d, &p);

    // The queries show what was done and how to undo it.
    let summary = d.query_ok("summary");
    assert!(
        summary.contains("# Summary: scenario 'need to increase TCP buffer size(s)' occurred")
            && summary.contains("'net.ipv4.tcp_rmem' in non-global ns"),
        "summary query:\n{summary}"
    );
    let rollback = d.query_ok("rollback");
    let cmd = format!(
        "ip netns exec {} sysctl -w net.ipv4.tcp_rmem=\"4096 131072 262144",
        p.rx.name()
    );
    assert!(
        rollback.contains(&cmd),
        "rollback query should contain {cmd:?}:\n{rollback}"
    );

    let (st, log) = d.stop();
    let tail = common::tail(&log, 40);
    assert!(st.success(), "exit status {st}\n{tail}");
    let line = log
        .lines()
        .find(|l| {
            l.contains("Rolling back sysctl values for 'net.ipv4.tcp_rmem'")
                && l.contains("(4096 131072 262144 )")
        })
        .unwrap_or_else(|| panic!("no rollback line for the receiver's tcp_rmem:\n{tail}"));
    eprintln!("{line}");
    let from = format!("from ({} {} {} )", raised[0], raised[1], raised[2]);
    assert!(
        line.contains(&from),
        "rollback line should start from the raised value {from:?}: {line}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "receiver tcp_rmem after rollback\n{tail}"
    );
    assert_eq!(
        ns_ints(&p.tx, "net.ipv4.tcp_wmem"),
        vec![4096, 16384, 33554432],
        "sender tcp_wmem after rollback\n{tail}"
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn rollback_keeps_an_administrators_later_value() {
    let _g = setup("rollback_keeps_an_administrators_later_value");
    let p = pair();
    let d = Daemon::start(&["-R"]);
    raise(&d, &p);
    let admin_value = "4096 131072 500000";
    admin_sysctl(Some(&p.rx), "net.ipv4.tcp_rmem", admin_value);
    let cookie = p.rx.cookie().expect("receiver cookie");
    d.expect_log(
        &format!("modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie {cookie}"),
        Duration::from_secs(5),
        "admin write after bpftune's raise",
    );
    let (st, log) = d.stop();
    let tail = common::tail(&log, 40);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        log.contains("Not rolling back 'net.ipv4.tcp_rmem'"),
        "expected \"Not rolling back\":\n{tail}"
    );
    assert!(
        !log.lines().any(
            |l| l.contains("Rolling back sysctl values for 'net.ipv4.tcp_rmem'")
                && l.contains(&format!("cookie {cookie})"))
        ),
        "the administrator's value was rolled back:\n{tail}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(admin_value),
        "administrator's value must survive exit\n{tail}"
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn originals_survive_a_crash_and_are_restored_by_the_next_rollback_run() {
    let _g = setup("originals_survive_a_crash_and_are_restored_by_the_next_rollback_run");
    let p = pair();
    let state = temp_dir("state");
    let cookie = p.rx.cookie().expect("receiver cookie");

    let d = Daemon::start_with_state(&[], state.path());
    let first_pid = d.pid();
    raise(&d, &p);
    let log = d.kill9();
    let raised = ns_ints(&p.rx, "net.ipv4.tcp_rmem");
    assert!(raised[2] > 262144, "still raised after the crash: {raised:?}");

    let file = state.path().join("originals.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{} after kill -9: {e}\n{}",
            file.display(),
            common::tail(&log, 30)
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", file.display()));
    let entries = json
        .get("entries")
        .and_then(|e| e.as_array())
        .unwrap_or_else(|| panic!("no entries in {text}"));
    let entry = entries
        .iter()
        .find(|e| e["sysctl"] == "net.ipv4.tcp_rmem" && e["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("no tcp_rmem entry for cookie {cookie} in {text}"));
    eprintln!("persisted: {entry}");
    let n = entries.len();

    let d = Daemon::start_with_state(&["-R"], state.path());
    d.expect_log(
        &format!("found {n} original sysctl value(s) saved by an earlier bpftune (pid {first_pid})"),
        Duration::from_secs(1),
        "inherited originals",
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        raised,
        "nothing is restored before exit"
    );
    let (st, log) = d.stop();
    let tail = common::tail(&log, 40);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        log.contains("Rolling back sysctl values for 'net.ipv4.tcp_rmem'"),
        "rollback line:\n{tail}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "receiver tcp_rmem after the -R run\n{tail}"
    );
    // Restored entries are forgotten.
    if let Ok(text) = std::fs::read_to_string(&file) {
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let left = json["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["sysctl"] == "net.ipv4.tcp_rmem" && e["netns_cookie"] == cookie);
        assert!(!left, "restored original still persisted: {text}");
    }
}

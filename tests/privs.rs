//! Least privilege (reference §1.11, `core::privs`): once started, every thread of the
//! daemon has an empty effective capability set and only `privs::KEEP` permitted, and
//! tuning still works — a namespace tuning event changes the sysctl (setns + write), an
//! administrator's write is detected, `-R` restores at exit (rollback + cgroup unmount)
//! — with the effective sets empty again after each of them.

mod common;
#[path = "common/sysd.rs"]
mod sysd;

use std::time::Duration;

use common::{admin_sysctl, ns_ints, ns_set, setup, Daemon, Pair};

const SMALL_RMEM: &str = "4096 131072 262144";
/// CAP_NET_ADMIN(12) CAP_SYS_PTRACE(19) CAP_SYS_ADMIN(21) CAP_PERFMON(38) CAP_BPF(39):
/// `bpftune::core::privs::KEEP`.
const KEEP_MASK: u64 = (1 << 12) | (1 << 19) | (1 << 21) | (1 << 38) | (1 << 39);

/// (thread name, CapEff, CapPrm) of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a short-lived thread that just exited
        };
        let get = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {key} in {status}"))
                .to_string()
        };
        let hex = |key: &str| u64::from_str_radix(&get(key), 16).unwrap_or_else(|e| panic!("{key}: {e}"));
        out.push((get("Name:"), hex("CapEff:"), hex("CapPrm:")));
    }
    assert!(!out.is_empty(), "no threads of {pid}");
    out
}

fn assert_idle(d: &Daemon, when: &str) {
    // A raise is held for microseconds; sample a few times so a snapshot taken during
    // an operation is not mistaken for an idle state.
    let mut last = Vec::new();
    for _ in 0..20 {
        last = thread_caps(d.pid());
        if last.iter().all(|(_, eff, _)| *eff == 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{when}: {last:x?}");
    for (name, eff, prm) in &last {
        assert_eq!(
            *eff, 0,
            "{when}: thread {name} has effective capabilities {eff:#x}"
        );
        assert_eq!(
            prm & !KEEP_MASK,
            0,
            "{when}: thread {name} keeps capabilities beyond KEEP permitted: {prm:#x}"
        );
    }
    let main = &last
        .iter()
        .find(|(n, _, _)| n == "bpftune")
        .expect("main thread")
        .2;
    assert_eq!(*main, KEEP_MASK, "{when}: permitted set of the main thread");
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn idle_effective_set_is_empty_and_tuning_still_works() {
    let _g = setup("idle_effective_set_is_empty_and_tuning_still_works");
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let d = Daemon::start(&["-R"]);
    assert_idle(&d, "after start");

    // A namespace tuning event: setns + /proc/sys write, raised on the setns thread.
    p.iperf(3);
    d.expect_log(
        "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)",
        Duration::from_secs(3),
        "receiver tcp_rmem raise",
    );
    assert!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem")[2] > 262144,
        "tcp_rmem not raised\n{}",
        d.tail(30)
    );
    assert_idle(&d, "after tuning");

    // An administrator's write is still detected.
    let tx_cookie = p.tx.cookie().expect("cookie of tx");
    admin_sysctl(Some(&p.tx), "net.ipv4.tcp_rmem", "4096 131072 6291456");
    d.expect_log(
        &format!("modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie {tx_cookie}"),
        Duration::from_secs(5),
        "admin write in the sender's namespace",
    );
    // Queries (served by their own thread, which dropped its capabilities too) still work.
    let summary = d.query_ok("summary");
    assert!(summary.contains("net.ipv4.tcp_rmem"), "summary:\n{summary}");
    assert_idle(&d, "after the admin write and a query");

    // -R at exit: rollback in the namespace and the cgroup unmount, raised for shutdown.
    let cgroup = d.cgroup_dir().to_path_buf();
    let (st, log) = d.stop();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "receiver tcp_rmem after rollback\n{tail}"
    );
    assert!(
        !bpftune_testbed::dirs::is_mount_point(&cgroup),
        "cgroup2 still mounted at {} after exit\n{tail}",
        cgroup.display()
    );
    // EPERM after start-up would be a capability raised too little. (RLIMIT_MEMLOCK may
    // be refused at start-up by a container's hard limit: not ours, and not needed.)
    let eperm: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Operation not permitted") && !l.contains("memory limit"))
        .collect();
    assert!(eperm.is_empty(), "EPERM: {eperm:#?}\n{tail}");
}

/// CapabilityBoundingSet= of packaging/bpftune.service, as capability numbers.
fn unit_bounding_set() -> Vec<u8> {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/bpftune.service"))
        .expect("read packaging/bpftune.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("unit has CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|name| {
            name.parse::<caps::Capability>()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .index()
        })
        .collect()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn the_units_bounding_set_is_enough_to_start_tune_and_roll_back() {
    let _g = setup("the_units_bounding_set_is_enough_to_start_tune_and_roll_back");
    let keep = unit_bounding_set();
    eprintln!("bounding set: {keep:?}");
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let mut d = sysd::SysDaemon::spawn_bounded("bounded", &["-s", "-R"], &[], Some(keep.clone()));
    assert!(
        d.wait_stderr("bpftune started", Duration::from_secs(20)),
        "no start:\n{}",
        d.stderr()
    );
    let bnd = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    let bnd = bnd
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    // What this (test) process may pass on: a container may lack some of them itself
    // (e.g. CAP_SYS_RESOURCE).
    let ours = std::fs::read_to_string("/proc/self/status").expect("own status");
    let ours = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .unwrap_or_default();
    let ours = u64::from_str_radix(ours, 16).expect("own CapBnd");
    let expect: u64 = keep.iter().map(|c| 1u64 << c).sum::<u64>() & ours;
    assert_eq!(
        u64::from_str_radix(&bnd, 16).ok(),
        Some(expect),
        "CapBnd of the daemon"
    );
    let log = d.stderr();
    for tuner in [
        "tcp_buffer",
        "neigh_table",
        "net_buffer",
        "udp_buffer",
        "ip_frag",
        "tcp_conn",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("bpftune started") && l.contains(tuner)),
            "{tuner} not attached with the unit's bounding set:\n{log}"
        );
    }
    p.iperf(3);
    assert!(
        d.wait_stderr(
            "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144)",
            Duration::from_secs(3)
        ),
        "no tuning with the unit's bounding set:\n{}",
        d.stderr()
    );
    let st = d.terminate();
    let log = d.stderr();
    assert!(st.success(), "exit {st}\n{log}");
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "rollback\n{log}"
    );
    let eperm: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Operation not permitted") && !l.contains("memory limit"))
        .collect();
    assert!(eperm.is_empty(), "EPERM: {eperm:#?}");
}

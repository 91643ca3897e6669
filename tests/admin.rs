//! An administrator's sysctl write hands the namespace (or, in the initial namespace, the
//! tuner) over to the administrator: bpftune never writes there again.

mod common;

use std::time::Duration;

use common::{
    admin_sysctl, global_ints, iperf, netns, ns_ints, ns_set, root_cookie, setup, Daemon, SysctlGuard,
    VethPair, PREFIX,
};

const SMALL_RMEM: &str = "4096 131072 262144";

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn admin_write_in_a_namespace_disables_tuning_there_only() {
    let _g = setup("admin_write_in_a_namespace_disables_tuning_there_only");
    // One sender, two receivers: X (the administrator takes it over) and Y (left to bpftune).
    let tx = netns("tx");
    let x = netns("x");
    let y = netns("y");
    let vx = VethPair::with_prefix(&x, &tx, "10.214.1.1/24", "10.214.1.2/24", PREFIX).expect("veth x");
    let vy = VethPair::with_prefix(&y, &tx, "10.214.2.1/24", "10.214.2.2/24", PREFIX).expect("veth y");
    ns_set(&y, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let x_cookie = x.cookie().expect("cookie of x");

    let d = Daemon::start(&["-R"]);
    admin_sysctl(Some(&x), "net.ipv4.tcp_rmem", SMALL_RMEM);
    d.expect_log(
        &format!("modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie {x_cookie}"),
        Duration::from_secs(5),
        "admin write in namespace x",
    );
    d.expect_log(
        &format!("setting state of netns (cookie {x_cookie}) to manual for 'tcp_buffer'"),
        Duration::from_secs(2),
        "namespace x set to manual",
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("disabling 'tcp_buffer' for namespace cookie {x_cookie}")))
        .unwrap_or_default();
    // The writer (sysctl) has usually exited before its /proc/PID/cmdline is read, so
    // the command may show as '?' (as in C bpftune); only its pid is certain.
    assert!(
        line.contains("pid ") && line.contains(", cmd '"),
        "writer pid/cmd: {line}"
    );
    eprintln!("admin write logged as: {line}");

    // Traffic into X: at its (small) max, but X belongs to the administrator now.
    iperf(&x, &tx, vx.addr_a(), 3);
    // Same traffic into Y, configured before the daemon started: tuned.
    iperf(&y, &tx, vy.addr_a(), 3);
    d.expect_log(
        "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)",
        Duration::from_secs(3),
        "raise in namespace y",
    );
    let x_rmem = ns_ints(&x, "net.ipv4.tcp_rmem");
    let y_rmem = ns_ints(&y, "net.ipv4.tcp_rmem");
    let tail = d.tail(50);
    assert_eq!(
        x_rmem,
        common::ints(SMALL_RMEM),
        "bpftune changed tcp_rmem in the administrator's namespace\n{tail}"
    );
    assert!(
        y_rmem[2] > 262144,
        "namespace y should still be tuned: {y_rmem:?}\n{tail}"
    );
    let skipped = d
        .log()
        .lines()
        .filter(|l| l.contains(&format!("netns {x_cookie} (non-global netns) skipped")))
        .count();
    eprintln!("events from the administrator's namespace skipped: {skipped}");
    // Proof that X's traffic did produce events (the test exercised the override).
    assert!(
        skipped > 0,
        "no event from x was seen (and skipped); traffic did not reach the tuner?\n{tail}"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}; log:\n{}", common::tail(&log, 40));
    assert_eq!(
        ns_ints(&x, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "x after exit\n{}",
        common::tail(&log, 30)
    );
    drop((vx, vy));
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn admin_write_in_the_initial_namespace_makes_the_tuner_manual() {
    let _g = setup("admin_write_in_the_initial_namespace_makes_the_tuner_manual");
    let guard = SysctlGuard::save("net.ipv4.tcp_rmem").expect("save global tcp_rmem");
    let cookie = root_cookie();
    let d = Daemon::start(&["-R"]);
    assert!(
        d.log().contains(&format!("(cookie {cookie})")),
        "start line should name the initial netns cookie {cookie}:\n{}",
        d.tail(10)
    );
    let tuners = d.query_ok("tuners");
    assert!(
        has_row(&tuners, "tcp_buffer", "active"),
        "tcp_buffer active before:\n{tuners}"
    );

    // Writing the current value back is harmless and still an administrator's change.
    let current = global_ints("net.ipv4.tcp_rmem");
    let value = current.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
    admin_sysctl(None, "net.ipv4.tcp_rmem", &value);
    d.expect_log(
        &format!("modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer' for namespace cookie {cookie}"),
        Duration::from_secs(5),
        "admin write in the initial namespace",
    );
    let tuners = d.query_ok("tuners");
    assert!(
        has_row(&tuners, "tcp_buffer", "manual"),
        "tcp_buffer should be manual:\n{tuners}\n{}",
        d.tail(20)
    );
    assert!(
        has_row(&tuners, "sysctl", "active"),
        "sysctl tuner stays active:\n{tuners}"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}; log:\n{}", common::tail(&log, 30));
    assert_eq!(
        global_ints("net.ipv4.tcp_rmem"),
        current,
        "global tcp_rmem\n{}",
        common::tail(&log, 30)
    );
    drop(guard);
}

fn has_row(text: &str, name: &str, state: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, state])
}

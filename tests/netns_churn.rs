//! Namespace churn: 200 namespaces created and destroyed while the daemon runs must not
//! leak file descriptors or threads, nor stop the daemon from answering.

mod common;

use std::time::Duration;

use bpftune_testbed::ping::ping;
use common::{fd_count, netns, setup, thread_count, Daemon, VethPair, PREFIX};

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn netns_churn_leaks_nothing() {
    let _g = setup("netns_churn_leaks_nothing");
    let d = Daemon::start(&["-R"]);
    std::thread::sleep(Duration::from_secs(1));
    let (fds0, threads0) = (fd_count(d.pid()), thread_count(d.pid()));

    let mut made = 0;
    let mut names = std::collections::HashSet::new();
    for round in 0..10 {
        let batch: Vec<_> = (0..20).map(|_| netns("churn")).collect();
        made += batch.len();
        names.extend(batch.iter().map(|n| n.name().to_string()));
        // A little traffic in some of them, so events come from short-lived namespaces.
        if round % 3 == 0 {
            let v = VethPair::with_prefix(&batch[0], &batch[1], "10.216.0.1/24", "10.216.0.2/24", PREFIX)
                .expect("veth");
            let rtts = ping(
                &batch[1],
                v.addr_a(),
                3,
                Duration::from_millis(20),
                Duration::from_secs(2),
            )
            .expect("ping");
            assert!(!rtts.is_empty(), "no ping reply inside a churn namespace");
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(batch);
    }
    assert_eq!(made, 200);
    // Past the daemon's rescan period, so every vanished namespace has been noticed.
    std::thread::sleep(Duration::from_secs(6));

    assert!(d.alive(), "daemon died during churn:\n{}", d.tail(40));
    let (fds1, threads1) = (fd_count(d.pid()), thread_count(d.pid()));
    eprintln!("daemon fds {fds0} -> {fds1}, threads {threads0} -> {threads1}");
    assert!(fds1 <= fds0 + 5, "fd leak: {fds0} -> {fds1}\n{}", d.tail(20));
    assert!(threads1 <= threads0 + 2, "thread leak: {threads0} -> {threads1}");
    let tuners = d.query_ok("tuners");
    assert!(
        tuners
            .lines()
            .any(|l| l.split_whitespace().eq(["tcp_buffer", "active"])),
        "tuners after churn:\n{tuners}"
    );
    // The daemon must have seen the churn (named namespaces: inotify on /run/netns plus
    // the mount table), and forgotten every one of ours it saw (bounded registry).
    // Log lines: "netns created (cookie C, ino I, /run/netns/NAME)", "netns vanished
    // (cookie C, ino I)".
    let log = d.log();
    let cookie_of = |l: &str| -> Option<u64> {
        let rest = l.split("(cookie ").nth(1)?;
        rest.split(',').next()?.trim().parse().ok()
    };
    let ours: std::collections::HashSet<u64> = log
        .lines()
        .filter(|l| l.contains("netns created"))
        .filter(|l| names.iter().any(|n| l.contains(&format!("/run/netns/{n})"))))
        .filter_map(cookie_of)
        .collect();
    let forgotten = log
        .lines()
        .filter(|l| l.contains("netns vanished"))
        .filter_map(cookie_of)
        .filter(|c| ours.contains(c))
        .count();
    eprintln!(
        "daemon noticed {} of our 200 namespaces, forgot {forgotten} of them",
        ours.len()
    );
    assert!(
        ours.len() >= 100,
        "the daemon noticed only {} of 200 namespaces\n{}",
        ours.len(),
        d.tail(20)
    );
    assert_eq!(
        forgotten,
        ours.len(),
        "namespaces noticed but never forgotten\n{}",
        d.tail(20)
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
}

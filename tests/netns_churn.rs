//! Namespace churn: namespaces created and destroyed while the daemon runs must not leak
//! file descriptors or threads, nor stop the daemon from answering; every tuner attaches
//! and stays active, and the daemon exits 0 on SIGTERM.
//!
//! This is also the kernel matrix's daemon check (scripts/kernel-matrix-suite.sh runs it
//! in every guest):
//!
//! * `BPFTUNE_CHURN_NAMESPACES=N`: churn N namespaces (default 200; batches of 20, or of
//!   10 below 100) instead of 200.
//! * `BPFTUNE_CHURN_REPORT=DIR`: also leave `daemon.env` (status, start_seconds,
//!   churn_namespaces, churn_ok, churn_seconds, fds/threads before/after), `daemon.log`
//!   (the daemon's stderr) and `daemon-tuners.txt` (`-q tuners` after the churn) in DIR,
//!   for scripts/kernel-matrix-report.py; written when the test ends, failed or not.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bpftune_testbed::daemon::{Daemon, DaemonConfig};
use bpftune_testbed::ping::ping;
use common::{fd_count, netns, setup, thread_count, VethPair, BPFTUNE, PREFIX};

/// Readiness wait: verifying every tuner's programs takes long under emulation.
const READY: Duration = Duration::from_secs(120);

/// What the kernel matrix reads; written on drop (so also when an assertion fails).
struct Report {
    dir: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
    tuners: String,
    daemon: Option<Daemon>,
}

impl Report {
    fn set(&mut self, key: &'static str, value: impl ToString) {
        let value = value.to_string();
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.env.push((key, value)),
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon")
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = &self.daemon {
                eprintln!("--- bpftune log tail (test failed) ---\n{}\n---", d.tail(40));
            }
        }
        let Some(dir) = &self.dir else { return };
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let log = self.daemon.as_ref().map(|d| d.log()).unwrap_or_default();
        for (name, text) in [
            ("daemon.env", env.as_str()),
            ("daemon.log", log.as_str()),
            ("daemon-tuners.txt", self.tuners.as_str()),
        ] {
            if let Err(e) = std::fs::write(dir.join(name), text) {
                eprintln!(
                    "BPFTUNE_CHURN_REPORT: cannot write {}: {e}",
                    dir.join(name).display()
                );
            }
        }
    }
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn netns_churn_leaks_nothing() {
    let _g = setup("netns_churn_leaks_nothing");
    let n: usize = std::env::var("BPFTUNE_CHURN_NAMESPACES")
        .ok()
        .map(|v| v.parse().expect("BPFTUNE_CHURN_NAMESPACES: a number"))
        .unwrap_or(200)
        .max(2);
    let batch_size = if n < 100 { 10 } else { 20 };
    let mut r = Report {
        dir: std::env::var_os("BPFTUNE_CHURN_REPORT").map(PathBuf::from),
        env: Vec::new(),
        tuners: String::new(),
        daemon: None,
    };
    r.set("status", "no-start");
    r.set("churn_namespaces", n);
    r.set("churn_ok", "");

    let t0 = Instant::now();
    let mut cfg = DaemonConfig::new(BPFTUNE).args(&["-R"]);
    cfg.wait_for_others = Duration::from_secs(180);
    r.daemon = Some(Daemon::spawn(cfg).unwrap_or_else(|e| panic!("{e:#}")));
    let ready = r.daemon().wait_ready(READY);
    r.set("start_seconds", format!("{:.1}", t0.elapsed().as_secs_f64()));
    if let Err(e) = ready {
        if let Some(st) = r.daemon().try_exit_status() {
            r.set("status", format!("exited-{}", st.code().unwrap_or(-1)));
        }
        panic!("{e:#}");
    }
    r.set("status", "started");
    let log = r.daemon().log();
    let attach_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not attach tuner") || l.contains("cannot run on this kernel"))
        .collect();
    assert!(
        attach_errors.is_empty(),
        "not every tuner attached:\n{}",
        attach_errors.join("\n")
    );

    std::thread::sleep(Duration::from_secs(1));
    let pid = r.daemon().pid();
    let (fds0, threads0) = (fd_count(pid), thread_count(pid));
    r.set("fds_before", fds0);
    r.set("threads_before", threads0);

    let tc = Instant::now();
    let mut made = 0;
    let mut names = HashSet::new();
    let mut round = 0;
    while made < n {
        let batch: Vec<_> = (0..batch_size.min(n - made)).map(|_| netns("churn")).collect();
        made += batch.len();
        names.extend(batch.iter().map(|n| n.name().to_string()));
        // A little traffic in some of them, so events come from short-lived namespaces.
        if round % 3 == 0 && batch.len() >= 2 {
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
        round += 1;
    }
    assert_eq!(made, n);
    r.set("churn_ok", 1);
    // Past the daemon's rescan period, so every vanished namespace has been noticed.
    std::thread::sleep(Duration::from_secs(6));
    r.set("churn_seconds", format!("{:.1}", tc.elapsed().as_secs_f64()));

    let alive = r.daemon().alive();
    let (fds1, threads1) = (fd_count(pid), thread_count(pid));
    r.set("fds_after", fds1);
    r.set("threads_after", threads1);
    if !alive {
        r.set("status", "died-during-churn");
    }
    assert!(alive, "daemon died during churn");
    eprintln!("daemon fds {fds0} -> {fds1}, threads {threads0} -> {threads1}");
    let q = r.daemon().query("tuners").unwrap_or_else(|e| panic!("{e:#}"));
    r.tuners = q.stdout.clone();
    assert_eq!(q.code, 0, "bpftune -q tuners: {}", q.stderr);
    assert!(fds1 <= fds0 + 5, "fd leak: {fds0} -> {fds1}");
    assert!(threads1 <= threads0 + 2, "thread leak: {threads0} -> {threads1}");
    // Every tuner the daemon runs is still active (the query lists "NAME STATE").
    let states: Vec<Vec<&str>> = q.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(
        states.iter().any(|w| w[..] == ["tcp_buffer", "active"]),
        "tuners after churn:\n{}",
        q.stdout
    );
    let inactive: Vec<String> = states
        .iter()
        .filter(|w| w.len() == 2 && w[1] != "active")
        .map(|w| w.join(" "))
        .collect();
    assert!(
        inactive.is_empty(),
        "tuners not active after churn: {inactive:?}\n{}",
        q.stdout
    );

    // The daemon must have seen the churn (named namespaces: inotify on /run/netns plus
    // the mount table), and forgotten every one of ours it saw (bounded registry).
    // Log lines: "netns created (cookie C, ino I, /run/netns/NAME)", "netns vanished
    // (cookie C, ino I)".
    let log = r.daemon().log();
    let cookie_of = |l: &str| -> Option<u64> {
        let rest = l.split("(cookie ").nth(1)?;
        rest.split(',').next()?.trim().parse().ok()
    };
    // Where namespaces are identified by inode (5.10: no cookies) the kernel reuses the
    // inode of a deleted namespace for a later one, so one value can name several of
    // ours in turn: count occurrences, and let each "vanished" line forget one of them.
    let mut ours: HashMap<u64, usize> = HashMap::new();
    for c in log
        .lines()
        .filter(|l| l.contains("netns created"))
        .filter(|l| names.iter().any(|n| l.contains(&format!("/run/netns/{n})"))))
        .filter_map(cookie_of)
    {
        *ours.entry(c).or_default() += 1;
    }
    let noticed: usize = ours.values().sum();
    let mut forgotten = 0;
    for c in log
        .lines()
        .filter(|l| l.contains("netns vanished"))
        .filter_map(cookie_of)
    {
        if let Some(k) = ours.get_mut(&c).filter(|k| **k > 0) {
            *k -= 1;
            forgotten += 1;
        }
    }
    eprintln!("daemon noticed {noticed} of our {n} namespaces, forgot {forgotten} of them");
    assert!(
        noticed >= n / 2,
        "the daemon noticed only {noticed} of {n} namespaces"
    );
    assert_eq!(forgotten, noticed, "namespaces noticed but never forgotten");

    // SIGTERM: a clean exit 0.
    let exit = r.daemon().terminate(Duration::from_secs(30));
    let status = match &exit {
        Ok(e) if e.status.success() => "started".to_string(),
        Ok(e) => format!("stop-failed-{}", e.status.code().unwrap_or(-1)),
        Err(_) => "stop-failed-timeout".to_string(),
    };
    r.set("status", &status);
    let exit = exit.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(exit.status.success(), "exit status {} on SIGTERM", exit.status);
}

//! tcp_mem (global!): 100 connections into a server that never reads push TCP memory
//! past a lowered tcp_mem; bpftune raises tcp_mem (capped at ¼ of free buffer pages).
//! Every global sysctl touched is restored by guards, also when an assertion fails.

mod common;

use std::io::{ErrorKind, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    global_ints, netns, nr_free_buffer_pages, ns_ints, setup, Daemon, Netns, SysctlGuard, VethPair, PREFIX,
};

const SERVER: &str = "10.215.0.1";
const PORT: u16 = 7777;
const CONNS: usize = 100;

/// A server in `srv` that accepts and never reads, and `CONNS` clients in `cli`.
struct Load {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<Vec<TcpStream>>>,
    clients: Vec<TcpStream>,
}

impl Load {
    fn start(srv: &Netns, cli: &Netns) -> Load {
        // Sockets belong to the namespace they were created in, whichever thread uses them.
        let listener = srv
            .run_in(|| Ok(TcpListener::bind((SERVER, PORT))?))
            .expect("listen in server netns");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            held
        });
        let clients = cli
            .run_in(|| {
                (0..CONNS)
                    .map(|_| TcpStream::connect((SERVER, PORT)).map_err(Into::into))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .expect("connect clients");
        for c in &clients {
            c.set_nonblocking(true).expect("nonblocking client");
        }
        Load {
            stop,
            acceptor: Some(acceptor),
            clients,
        }
    }

    /// Writes on every connection until its buffers are full, for `dur`.
    fn push(&mut self, dur: Duration) -> u64 {
        let buf = vec![0x5au8; 64 * 1024];
        let deadline = Instant::now() + dur;
        let mut total = 0u64;
        while Instant::now() < deadline {
            for c in &mut self.clients {
                loop {
                    match c.write(&buf) {
                        Ok(n) => total += n as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Exhaustion may reset a connection; keep loading the others.
                        Err(_) => break,
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.clients.clear();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            drop(a.join());
        }
    }
}

fn tcp_mem_pages() -> i64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "mem")
                .nth(1)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(-1)
}

/// The server namespace and the client namespace, joined by veth.
fn server_and_clients() -> (Netns, Netns, VethPair) {
    let srv = netns("srv");
    let cli = netns("cli");
    let veth =
        VethPair::with_prefix(&srv, &cli, &format!("{SERVER}/24"), "10.215.0.2/24", PREFIX).expect("veth");
    (srv, cli, veth)
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn tcp_mem_pressure_raises_tcp_mem_within_the_cap() {
    let _g = setup("tcp_mem_pressure_raises_tcp_mem_within_the_cap");
    let (srv, cli, _veth) = server_and_clients();
    let cap = (nr_free_buffer_pages() / 4) as i64;
    // Pressure only: tcp_mem[1] is easy to reach, tcp_mem[2] is not.
    let guard = SysctlGuard::set("net.ipv4.tcp_mem", "768 1024 100000").expect("lower tcp_mem");
    let before = global_ints("net.ipv4.tcp_mem");

    let d = Daemon::start(&["-R"]);
    let mut load = Load::start(&srv, &cli);
    let bytes = load.push(Duration::from_secs(4));
    let in_use = tcp_mem_pages();
    let after = global_ints("net.ipv4.tcp_mem");
    let found = d.wait_for("Due to near memory pressure change net.ipv4.tcp_mem(min pressure max) from (768 1024 100000) -> (960 1280 125000)", Duration::from_secs(2));
    drop(load);
    eprintln!(
        "wrote {bytes} bytes; TCP memory in use {in_use} pages; tcp_mem {before:?} -> {after:?}; cap {cap}"
    );

    let log = d.log();
    let tail = common::tail(&log, 40);
    assert!(found, "first tcp_mem raise (25 %) not logged:\n{tail}");
    assert!(
        log.contains("Scenario 'approaching TCP memory pressure' occurred for tunable 'net.ipv4.tcp_mem' in global ns."),
        "pressure scenario line:\n{tail}"
    );
    assert!(
        after.iter().zip(&before).all(|(a, b)| a >= b),
        "tcp_mem must only grow: {before:?} -> {after:?}"
    );
    assert!(
        after[1] > before[1] && after[2] > before[2],
        "tcp_mem pressure/max not raised: {before:?} -> {after:?}\n{tail}"
    );
    assert!(
        after[0] <= after[1] && after[1] <= after[2],
        "tcp_mem out of order: {after:?}"
    );
    assert!(
        after[2] <= cap,
        "tcp_mem[2] {} above nr_free_buffer_pages/4 = {cap}",
        after[2]
    );

    let (st, log) = d.stop();
    let tail = common::tail(&log, 40);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        log.contains("Rolling back sysctl values for 'net.ipv4.tcp_mem'"),
        "tcp_mem rollback:\n{tail}"
    );
    assert_eq!(
        global_ints("net.ipv4.tcp_mem"),
        before,
        "tcp_mem after rollback\n{}",
        common::tail(&log, 30)
    );
    drop(guard);
}

/// Near tcp_mem[2] (exhaustion) bpftune raises tcp_mem and enters its low-memory
/// measures (tcp_no_metrics_save=1 … in the namespace of the sockets that hit it). They
/// are undone only after memory stayed below tcp_mem[1] for 30 s (policy::LOW_MEM_CALM,
/// unit-tested with injected time): seconds after the burst they are still set; `-R`
/// at exit restores exactly the earlier values.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn tcp_mem_exhaustion_raises_max_and_sets_low_memory_tunables() {
    let _g = setup("tcp_mem_exhaustion_raises_max_and_sets_low_memory_tunables");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !bpftune::tuners::net_buffer::policy::kernel_at_least(release.trim(), 5, 11) {
        // Not understood yet (issue 23): in the 5.10 guest this load reached only the
        // pressure band in 3 of 6 runs (tcp_mem 768 1024 1536 -> 3660 4882 7322 in seven
        // pressure steps, no exhaustion signal); it passed in the others.
        common::skip!(
            "on {} this load often never nears tcp_mem[2] (flaky, issue 23)",
            release.trim()
        );
    }
    let (srv, cli, _veth) = server_and_clients();
    let cap = (nr_free_buffer_pages() / 4) as i64;
    let ns_before: Vec<(i64, i64)> = [&srv, &cli]
        .iter()
        .map(|n| {
            (
                ns_ints(n, "net.ipv4.tcp_no_metrics_save")[0],
                ns_ints(n, "net.ipv4.tcp_max_syn_backlog")[0],
            )
        })
        .collect();
    let global_nms = global_ints("net.ipv4.tcp_no_metrics_save");
    // Guards first: bpftune may touch these (high_order_alloc_disable is global). It
    // starts at 0 so that the low-memory rule sets it to 1 (a static key: CAP_SYS_ADMIN,
    // raised from the daemon's idle set for that write alone).
    let hoad =
        SysctlGuard::set("net.core.high_order_alloc_disable", "0").expect("set high_order_alloc_disable=0");
    let guard = SysctlGuard::set("net.ipv4.tcp_mem", "768 1024 1536").expect("lower tcp_mem");
    let before = global_ints("net.ipv4.tcp_mem");

    let d = Daemon::start(&["-R"]);
    let mut load = Load::start(&srv, &cli);
    // Memory crosses tcp_mem[1] (pressure) on its way to tcp_mem[2]: the first change may
    // be either; at least one must be for exhaustion. Loaded until it is, for at most
    // 60 s: 3 s are plenty on the host, but under emulation (the kernel matrix's 6.12
    // guest) the pressure raises alone took 18.6–19.9 s on a quiet host and over 20 s
    // next to other builds.
    let exhaustion = "Due to near memory exhaustion change net.ipv4.tcp_mem(min pressure max) from (";
    let mut bytes = load.push(Duration::from_secs(3));
    let t0 = Instant::now();
    let mut found = d.wait_for(exhaustion, Duration::from_secs(2));
    while !found && t0.elapsed() < Duration::from_secs(60) {
        bytes += load.push(Duration::from_secs(1));
        found = d.wait_for(exhaustion, Duration::from_millis(500));
    }
    let after = global_ints("net.ipv4.tcp_mem");
    let entered = d.wait_for(
        "Due to low memory conditions, set 'net.ipv4.tcp_no_metrics_save'",
        Duration::from_secs(2),
    );
    drop(load);
    // Memory is released at once; a few calm seconds must not end the low-memory state.
    let left = d.wait_for("Due to leaving low memory conditions", Duration::from_secs(5));
    let still_set: Vec<i64> = [&srv, &cli]
        .iter()
        .map(|n| ns_ints(n, "net.ipv4.tcp_no_metrics_save")[0])
        .collect();
    let hoad_low = global_ints("net.core.high_order_alloc_disable");
    eprintln!("wrote {bytes} bytes; tcp_mem {before:?} -> {after:?} (cap {cap})");

    let log = d.log();
    let tail = d.tail(40);
    // The tail is mostly other tuners' debug lines: name the tcp_mem ones.
    let mem_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("net.ipv4.tcp_mem"))
        .take(30)
        .collect();
    assert!(
        found,
        "no tcp_mem raise for exhaustion logged; tcp_mem lines:\n{}\n{}\n{tail}",
        mem_lines.join("\n"),
        common::tcp_memory_line()
    );
    let first = log
        .lines()
        .find(|l| l.contains("change net.ipv4.tcp_mem(min pressure max) from"))
        .unwrap_or_default();
    assert!(
        first.contains("from (768 1024 1536) -> (768 1024 1920)")
            || first.contains("from (768 1024 1536) -> (960 1280 1920)"),
        "first tcp_mem change should raise max by 25 % (and min/pressure too if only near pressure): {first}"
    );
    assert!(
        log.contains("Scenario 'approaching TCP memory exhaustion' occurred for tunable 'net.ipv4.tcp_mem' in global ns."),
        "exhaustion scenario line:\n{tail}"
    );
    assert!(
        entered,
        "low-memory measure tcp_no_metrics_save=1 not logged:\n{tail}"
    );
    assert!(
        log.contains("Scenario 'set tunable on entering low-memory state' occurred for tunable 'net.ipv4.tcp_no_metrics_save' in non-global ns."),
        "tcp_no_metrics_save must be set in the sockets' namespace:\n{tail}"
    );
    assert!(
        !left,
        "low-memory state left within seconds of the burst (hysteresis is 30 s):\n{tail}"
    );
    assert!(
        log.contains("Due to low memory conditions, set 'net.core.high_order_alloc_disable'"),
        "low-memory measure high_order_alloc_disable=1 not logged:\n{tail}"
    );
    let hoad_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("high_order_alloc_disable"))
        .collect();
    assert_eq!(
        hoad_low,
        [1],
        "high_order_alloc_disable in low memory: {hoad_lines:#?}"
    );
    assert!(!log.contains("could not update"), "a write failed:\n{tail}");
    assert!(
        still_set.contains(&1),
        "tcp_no_metrics_save should still be 1 (srv, cli): {still_set:?}\n{tail}"
    );
    assert!(
        after[2] > before[2] && after[2] <= cap,
        "tcp_mem[2] {before:?} -> {after:?} (cap {cap})"
    );
    assert_eq!(
        global_ints("net.ipv4.tcp_no_metrics_save"),
        global_nms,
        "initial namespace's tcp_no_metrics_save must not change"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 40));
    for (n, b) in [&srv, &cli].iter().zip(&ns_before) {
        let now = (
            ns_ints(n, "net.ipv4.tcp_no_metrics_save")[0],
            ns_ints(n, "net.ipv4.tcp_max_syn_backlog")[0],
        );
        assert_eq!(
            now,
            *b,
            "(tcp_no_metrics_save, tcp_max_syn_backlog) in {} after -R\n{}",
            n.name(),
            common::tail(&log, 30)
        );
    }
    assert_eq!(
        global_ints("net.ipv4.tcp_mem"),
        before,
        "tcp_mem after rollback\n{}",
        common::tail(&log, 30)
    );
    assert_eq!(
        global_ints("net.core.high_order_alloc_disable"),
        [0],
        "net.core.high_order_alloc_disable after exit (-R restores the 0 it found)"
    );
    drop(guard);
    drop(hoad);
}

/// An absurd tcp_mem max (2e9 pages) under pressure: every value becomes
/// min(cap, value + 25 %) — min and pressure grow, max is lowered to ¼ of the free buffer
/// pages — and min < pressure < max holds throughout.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn absurd_tcp_mem_max_is_lowered_to_the_cap_under_pressure() {
    let _g = setup("absurd_tcp_mem_max_is_lowered_to_the_cap_under_pressure");
    let (srv, cli, _veth) = server_and_clients();
    let cap = (nr_free_buffer_pages() / 4) as i64;
    let guard = SysctlGuard::set("net.ipv4.tcp_mem", "50 100 2000000000").expect("set tcp_mem");
    let before = global_ints("net.ipv4.tcp_mem");
    assert_eq!(before, vec![50, 100, 2_000_000_000]);

    let d = Daemon::start(&["-R"]);
    let mut load = Load::start(&srv, &cli);
    let bytes = load.push(Duration::from_secs(3));
    let prefix =
        "Due to near memory pressure change net.ipv4.tcp_mem(min pressure max) from (50 100 2000000000) -> (";
    let found = d.wait_for(prefix, Duration::from_secs(2));
    let after = global_ints("net.ipv4.tcp_mem");
    drop(load);
    eprintln!("wrote {bytes} bytes; tcp_mem {before:?} -> {after:?}; cap {cap}");

    let log = d.log();
    let tail = common::tail(&log, 40);
    assert!(found, "first tcp_mem change not logged:\n{tail}");
    let first: Vec<i64> = log
        .lines()
        .find_map(|l| l.split(prefix).nth(1))
        .and_then(|rest| rest.split(')').next())
        .map(common::ints)
        .unwrap_or_default();
    assert_eq!(first.len(), 3, "first change {first:?}");
    assert_eq!(
        &first[..2],
        &[62, 125],
        "min and pressure grow by 25 %: {first:?}"
    );
    assert!(
        first[2] <= cap && first[2] > cap - cap / 100,
        "max lowered to nr_free_buffer_pages/4 = {cap}: {first:?}"
    );
    assert!(
        after[0] < after[1] && after[1] < after[2] && after[2] <= cap,
        "min < pressure < max <= cap: {after:?} (cap {cap})"
    );
    for l in log
        .lines()
        .filter(|l| l.contains("change net.ipv4.tcp_mem(min pressure max)"))
    {
        let to: Vec<i64> = l
            .rsplit("-> (")
            .next()
            .and_then(|r| r.split(')').next())
            .map(common::ints)
            .unwrap_or_default();
        assert!(
            to.len() == 3 && to[0] < to[1] && to[1] < to[2] && to[2] <= cap,
            "every change keeps min < pressure < max <= cap: {l}"
        );
    }

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 40));
    assert_eq!(
        global_ints("net.ipv4.tcp_mem"),
        before,
        "tcp_mem after rollback\n{}",
        common::tail(&log, 30)
    );
    drop(guard);
}

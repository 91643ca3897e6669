//! Root tests: real namespaces, veth, TUN delay line, iperf3.
//! Each is `#[ignore = "needs root …"]` (reported as ignored by a plain `cargo test`);
//! run with `--include-ignored` (`make test`), a test fails loudly ("needs root: …")
//! when not root or when /dev/net/tun or iperf3 is missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bpftune_testbed::forwarder::ForwarderConfig;
use bpftune_testbed::names::{base36, list_netns, parse_name};
use bpftune_testbed::ping::ping;
use bpftune_testbed::{
    cleanup_stale, iperf3_run, iperf3_throughput, link_exists, unique_name, DelayConfig, DelayLine,
    IperfServer, Netns, SysctlGuard, VethPair,
};

const PREFIX: &str = "btt";
const FORWARDER: &str = env!("CARGO_BIN_EXE_bpftune-delayline");

/// Timing-sensitive tests run one at a time (2 cores).
static TIMING: Mutex<()> = Mutex::new(());

fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Panics ("needs root: …") unless root with /dev/net/tun.
fn require_root(test: &str) {
    bpftune_testbed::require_root_and_tun(test);
}

/// Panics unless `prog` can be run.
fn require(test: &str, prog: &str) {
    let ok = Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "{test} needs {prog} (scripts/install-deps.sh installs it)");
}

fn delay_line(delay_ms: u64) -> Result<DelayLine> {
    DelayLine::with_forwarder(
        DelayConfig {
            one_way_delay: Duration::from_millis(delay_ms),
            ..DelayConfig::default()
        },
        PREFIX,
        Path::new(FORWARDER),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn netns_basics() -> Result<()> {
    require_root("netns_basics");
    let ns = Netns::create(PREFIX)?;
    let name = ns.name().to_string();
    assert!(name.len() <= 15);
    assert_eq!(parse_name(&name).map(|p| p.pid), Some(std::process::id()));
    assert!(ns.path().exists());
    let out = ns.exec(&["ip", "-o", "link", "show", "lo"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("UP"));
    let err = ns.exec(&["ip", "link", "show", "nonexistent0"]);
    let msg = format!("{:#}", err.err().context("exec should fail")?);
    assert!(msg.contains("nonexistent0"), "{msg}");

    // Per-netns sysctl: written inside, root untouched.
    let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")?;
    ns.sysctl_write("net.ipv4.tcp_rmem", "4096 131072 1310720")?;
    let inside = ns.sysctl_read("net.ipv4.tcp_rmem")?;
    assert_eq!(
        inside.split_whitespace().collect::<Vec<_>>(),
        ["4096", "131072", "1310720"]
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")?,
        root_before
    );
    let via_exec = ns.exec(&["sysctl", "-n", "net.ipv4.tcp_rmem"])?;
    assert!(String::from_utf8_lossy(&via_exec.stdout).contains("1310720"));

    // Cookies: distinct per namespace, stable per namespace.
    let other = Netns::create(PREFIX)?;
    let c1 = ns.cookie()?;
    assert_eq!(c1, ns.cookie()?);
    assert_ne!(c1, other.cookie()?);
    assert_ne!(c1, bpftune_testbed::netns::socket_netns_cookie()?);

    let mut child = ns.spawn(&["sleep", "0.1"])?;
    assert!(child.wait()?.success());

    drop(ns);
    drop(other);
    assert!(!Path::new("/run/netns").join(&name).exists());
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn veth_pair_ping_and_teardown() -> Result<()> {
    require_root("veth_pair_ping_and_teardown");
    let a = Netns::create(PREFIX)?;
    let b = Netns::create(PREFIX)?;
    let names = [a.name().to_string(), b.name().to_string()];
    let pair = VethPair::with_prefix(&a, &b, "10.203.0.1/24", "10.203.0.2/24", PREFIX)?;
    let devs = [pair.dev_a().to_string(), pair.dev_b().to_string()];
    assert_eq!(pair.addr_b(), "10.203.0.2");
    // The ends left the root netns.
    assert!(!link_exists(&devs[0]) && !link_exists(&devs[1]));
    let rtts = ping(
        &a,
        pair.addr_b(),
        3,
        Duration::from_millis(50),
        Duration::from_secs(2),
    )?;
    ensure!(rtts.len() == 3, "veth ping lost replies: {rtts:?}");
    ensure!(median(rtts.clone()) < Duration::from_millis(10), "{rtts:?}");
    let back = ping(&b, pair.addr_a(), 1, Duration::ZERO, Duration::from_secs(2))?;
    ensure!(back.len() == 1);

    drop(pair);
    drop(b);
    drop(a);
    for n in &names {
        ensure!(!Path::new("/run/netns").join(n).exists(), "netns {n} leaked");
    }
    for d in &devs {
        ensure!(!link_exists(d), "link {d} leaked");
    }
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn delay_line_rtt_and_teardown() -> Result<()> {
    require_root("delay_line_rtt_and_teardown");
    let _t = timing_lock();
    let dl = delay_line(20)?;
    let names = [dl.left().name().to_string(), dl.right().name().to_string()];
    let devs = [dl.left_dev().to_string(), dl.right_dev().to_string()];
    let pid = dl.forwarder_pid().context("forwarder pid")?;
    assert!(names.iter().all(|n| n.starts_with("btt-")));

    let rtts = ping(
        dl.left(),
        dl.right_addr(),
        10,
        Duration::from_millis(20),
        Duration::from_secs(1),
    )?;
    ensure!(rtts.len() >= 9, "delay line lost pings: {rtts:?}");
    let min = rtts.iter().min().copied().unwrap_or_default();
    let med = median(rtts.clone());
    eprintln!("delay line RTTs: min {min:?} median {med:?} all {rtts:?}");
    ensure!(min >= Duration::from_millis(40), "RTT below 2 × delay: {rtts:?}");
    ensure!(med < Duration::from_millis(80), "RTT too high: {rtts:?}");
    let back = ping(
        dl.right(),
        dl.left_addr(),
        2,
        Duration::from_millis(10),
        Duration::from_secs(1),
    )?;
    ensure!(back.len() == 2 && back.iter().all(|r| *r >= Duration::from_millis(40)));

    let stats = dl.stop()?;
    ensure!(
        stats.contains("ab_pkts=") && !stats.contains("ab_pkts=0 "),
        "{stats}"
    );
    for n in &names {
        ensure!(!Path::new("/run/netns").join(n).exists(), "netns {n} leaked");
    }
    for d in &devs {
        ensure!(!link_exists(d), "TUN {d} leaked");
    }
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "forwarder still running"
    );
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn delay_line_loss() -> Result<()> {
    require_root("delay_line_loss");
    let dl = DelayLine::with_forwarder(
        DelayConfig {
            one_way_delay: Duration::from_millis(1),
            loss_percent: 100.0,
            ..DelayConfig::default()
        },
        PREFIX,
        Path::new(FORWARDER),
    )?;
    let rtts = ping(
        dl.left(),
        dl.right_addr(),
        2,
        Duration::ZERO,
        Duration::from_millis(200),
    )?;
    ensure!(rtts.is_empty(), "100 % loss let pings through: {rtts:?}");
    let stats = dl.stop()?;
    ensure!(stats.contains("ab_lost=2"), "{stats}");
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn delay_line_iperf_smoke() -> Result<()> {
    require_root("delay_line_iperf_smoke");
    require("delay_line_iperf_smoke", "iperf3");
    let _t = timing_lock();
    let dl = delay_line(20)?;
    let server = IperfServer::start(dl.right(), 5201)?;
    let bps = iperf3_throughput(dl.left(), dl.right_addr(), server.port(), 1, false)?;
    eprintln!("delay line iperf3 1 s: {:.0} Mbit/s", bps / 1e6);
    ensure!(bps > 50e6, "delay line too slow: {bps} bit/s");
    let rev = iperf3_run(dl.left(), dl.right_addr(), server.port(), 1, true, &[])?;
    ensure!(rev.received_bps > 50e6, "reverse too slow: {rev:?}");
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn iperf_server_rejects_bad_setup() -> Result<()> {
    require_root("iperf_server_rejects_bad_setup");
    require("iperf_server_rejects_bad_setup", "iperf3");
    let ns = Netns::create(PREFIX)?;
    let _s = IperfServer::start(&ns, 5301)?;
    // Second server on the same port exits early: an error, not a hang.
    ensure!(IperfServer::start(&ns, 5301).is_err());
    // No server there: an error with iperf3's message.
    let e = iperf3_throughput(&ns, "127.0.0.1", 5302, 1, false);
    ensure!(e.is_err());
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn sysctl_guard_restores() -> Result<()> {
    require_root("sysctl_guard_restores");
    let key = "net.core.netdev_budget";
    let before = bpftune_testbed::sysctl::read(key)?;
    let new = (before.parse::<u64>()? + 1).to_string();
    {
        let g = SysctlGuard::set(key, &new)?;
        assert_eq!(g.current()?, new);
        assert_eq!(g.old_value(), before);
    }
    assert_eq!(bpftune_testbed::sysctl::read(key)?, before);
    {
        let _g = SysctlGuard::save(key)?;
        bpftune_testbed::sysctl::write(key, &new)?;
    }
    assert_eq!(bpftune_testbed::sysctl::read(key)?, before);
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn cleanup_stale_removes_only_dead_owners() -> Result<()> {
    require_root("cleanup_stale_removes_only_dead_owners");
    // A pid that just exited (reuse within the test is very unlikely).
    let mut child = Command::new("true").spawn()?;
    let dead_pid = child.id();
    child.wait()?;
    let prefix = "btc";
    let stale = format!(
        "{prefix}-{}-zz{}",
        base36(u64::from(dead_pid)),
        base36(u64::from(std::process::id()) % 1000)
    );
    bpftune_testbed::cmd::run("ip", &["netns", "add", &stale])?;
    let live = Netns::create(prefix)?;
    let removed = cleanup_stale(prefix)?;
    let still = list_netns(prefix)?;
    // Clean up by hand in case the assertion fails.
    if still.contains(&stale) {
        bpftune_testbed::cmd::run_quiet("ip", &["netns", "del", &stale]);
    }
    ensure!(removed.contains(&stale), "not removed: {removed:?}");
    ensure!(still.contains(&live.name().to_string()), "live netns removed");
    ensure!(!still.contains(&stale));
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn forwarder_exits_after_max_lifetime() -> Result<()> {
    require_root("forwarder_exits_after_max_lifetime");
    let cfg = ForwarderConfig {
        dev_a: unique_name(PREFIX),
        dev_b: unique_name(PREFIX),
        max_lifetime: Duration::from_secs(1),
        ..ForwarderConfig::default()
    };
    let mut child = Command::new(FORWARDER)
        .args(cfg.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    let mut exited = false;
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(5) {
        seen |= link_exists(&cfg.dev_a);
        if child.try_wait()?.is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    ensure!(seen, "TUN device never appeared");
    ensure!(exited, "forwarder ignored max lifetime");
    ensure!(start.elapsed() >= Duration::from_millis(900));
    ensure!(
        !link_exists(&cfg.dev_a) && !link_exists(&cfg.dev_b),
        "TUN devices outlived the forwarder"
    );
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn forwarder_exits_when_parent_dies() -> Result<()> {
    require_root("forwarder_exits_when_parent_dies");
    let dev = unique_name(PREFIX);
    let cfg = ForwarderConfig {
        dev_a: dev.clone(),
        dev_b: unique_name(PREFIX),
        watch_stdin: false,
        ..ForwarderConfig::default()
    };
    // sh starts the forwarder in the background and exits after 0.5 s; the
    // forwarder (stdin ignored) must notice that its parent is gone.
    let script = format!("{FORWARDER} {} >/dev/null & sleep 0.5", cfg.to_args().join(" "));
    let status = Command::new("sh").args(["-c", &script]).status()?;
    ensure!(status.success());
    let start = Instant::now();
    while link_exists(&dev) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(!link_exists(&dev), "forwarder survived its parent");
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn no_leftovers_with_test_prefix() -> Result<()> {
    require_root("no_leftovers_with_test_prefix");
    // Create and drop a full set, then check nothing of *this process* with
    // the test prefix survives that set (other tests may be running).
    let (names, devs) = {
        let dl = delay_line(1)?;
        let pair = VethPair::with_prefix(dl.left(), dl.right(), "10.204.0.1/24", "10.204.0.2/24", PREFIX)?;
        (
            vec![dl.left().name().to_string(), dl.right().name().to_string()],
            vec![
                dl.left_dev().to_string(),
                dl.right_dev().to_string(),
                pair.dev_a().to_string(),
                pair.dev_b().to_string(),
            ],
        )
    };
    let now = list_netns(PREFIX)?;
    for n in &names {
        ensure!(!now.contains(n), "{n} left behind: {now:?}");
    }
    for d in &devs {
        ensure!(!link_exists(d), "{d} left behind");
    }
    Ok(())
}

#[test]
fn find_forwarder_from_test_exe() -> Result<()> {
    // Tests run from target/<profile>/deps; the binary is in target/<profile>.
    let found = bpftune_testbed::find_forwarder()?;
    ensure!(found.file_name() == Path::new(FORWARDER).file_name(), "{found:?}");
    Ok(())
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn teardown_on_panic() -> Result<()> {
    require_root("teardown_on_panic");
    let names = Mutex::new(Vec::<String>::new());
    let result = std::panic::catch_unwind(|| {
        let dl = DelayLine::with_prefix(DelayConfig::default(), PREFIX);
        if let (Ok(dl), Ok(mut n)) = (dl, names.lock()) {
            n.extend([
                dl.left().name().to_string(),
                dl.right().name().to_string(),
                dl.left_dev().to_string(),
                dl.right_dev().to_string(),
            ]);
        }
        panic!("simulated test failure");
    });
    ensure!(result.is_err());
    let names = names.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    ensure!(names.len() == 4, "delay line was not created");
    let ns_now = list_netns(PREFIX)?;
    for n in names.iter() {
        ensure!(!ns_now.contains(n) && !link_exists(n), "{n} leaked after panic");
    }
    Ok(())
}

//! net_buffer (global sysctls!), recipe G: RPS steers a veth's packets to CPU 1 while the
//! sender is pinned to CPU 0, so a UDP burst overflows CPU 1's input backlog when
//! netdev_max_backlog is small. bpftune sees the drops (kfree_skb reason CPU_BACKLOG),
//! grows netdev_max_backlog and sets CPU 0's flow-limit bit; a rerun of the same burst
//! drops ≥ 90 % fewer packets; -R restores; an administrator's write hands it over.
//! Every global sysctl touched is restored by guards, also when an assertion fails.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{admin_sysctl, global_ints, setup, Daemon, Pair, SysctlGuard};

const PORT: u16 = 7811;
const BURST: usize = 200_000;
const SIZE: usize = 1000;

/// Saves every sysctl net_buffer may write but those in `own` (which the test guards
/// itself, after these, so that they are restored first). The list is net_buffer's own
/// descriptors: a copy kept here would miss a sysctl the tuner learns to write.
fn guard_net_buffer_sysctls_except(own: &[&str]) -> Vec<SysctlGuard> {
    let tuner = bpftune::tuners::all()
        .into_iter()
        .find(|t| t.name() == "net_buffer")
        .expect("net_buffer is a built-in tuner");
    for k in own {
        assert!(
            tuner.tunables().iter().any(|d| d.name == *k),
            "{k} is not net_buffer's"
        );
    }
    let mut guards = Vec::new();
    for d in tuner
        .tunables()
        .iter()
        .filter(|d| d.writable() && d.num_values > 0)
    {
        // The guards restore init_net only: the premise of this file.
        assert!(!d.namespaced, "net_buffer's {} is per namespace", d.name);
        if own.contains(&d.name) {
            continue;
        }
        let k = d.name;
        if !sysctl_exists(k) {
            // A kernel without it (CONFIG_NET_FLOW_LIMIT off: no flow_limit_cpu_bitmap):
            // nothing to write, nothing to restore.
            eprintln!("{k}: not on this kernel");
            continue;
        }
        guards.push(SysctlGuard::save(k).unwrap_or_else(|e| panic!("save {k}: {e:#}")));
    }
    guards
}

fn sysctl_exists(key: &str) -> bool {
    std::path::Path::new("/proc/sys")
        .join(key.replace('.', "/"))
        .exists()
}

const FLOW_LIMIT: &str = "/proc/sys/net/core/flow_limit_cpu_bitmap";

/// Σ of the "dropped" column of /proc/net/softnet_stat (backlog drops, all CPUs).
fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .expect("read softnet_stat")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// Recipe G's receiver side: RPS on the receiving veth sends its packets to CPU 1's
/// backlog; a bound UDP socket keeps the packets from being answered with ICMP.
struct Receiver {
    _sock: UdpSocket,
}

fn receiver(pair: &Pair) -> Receiver {
    let dev = pair.veth.dev_a().to_string();
    let script = format!("echo 2 > /sys/class/net/{dev}/queues/rx-0/rps_cpus");
    pair.rx.exec(&["sh", "-c", &script]).expect("enable RPS to CPU 1");
    let addr = pair.rx_addr().to_string();
    let sock = pair
        .rx
        .run_in(move || Ok(UdpSocket::bind((addr.as_str(), PORT))?))
        .expect("bind UDP receiver");
    Receiver { _sock: sock }
}

/// 200 000 × 1000-byte datagrams from the sender namespace, sender pinned to CPU 0;
/// returns the backlog drops the burst caused.
fn burst(pair: &Pair) -> u64 {
    let dst = format!("{}:{PORT}", pair.rx_addr());
    let before = softnet_drops();
    pair.tx
        .run_in(move || {
            let mut cpus = nix::sched::CpuSet::new();
            cpus.set(0)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let buf = [0x5au8; SIZE];
            for _ in 0..BURST {
                // ENOBUFS and the like only mean fewer packets; the burst goes on.
                let _ = sock.send_to(&buf, &dst);
            }
            Ok(())
        })
        .expect("UDP burst");
    // Queued packets are processed (or dropped) within milliseconds.
    std::thread::sleep(Duration::from_millis(100));
    softnet_drops().saturating_sub(before)
}

fn backlog() -> i64 {
    global_ints("net.core.netdev_max_backlog")[0]
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn backlog_drops_grow_netdev_max_backlog() {
    let _g = setup("backlog_drops_grow_netdev_max_backlog");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        common::skip!("recipe G needs 2 CPUs");
    }
    // Guards first: everything net_buffer may write is global.
    let _saved = guard_net_buffer_sysctls_except(&["net.core.netdev_max_backlog"]);
    // None on a kernel without flow limits (CONFIG_NET_FLOW_LIMIT off): the backlog is
    // tuned all the same, the flow-limit step has nothing to set.
    let bitmap_before = std::fs::read_to_string(FLOW_LIMIT).ok();
    let backlog_guard =
        SysctlGuard::set("net.core.netdev_max_backlog", "8").expect("lower netdev_max_backlog");
    let pair = Pair::new();
    let _rx = receiver(&pair);

    // The largest of three bursts: whether one burst overflows depends on scheduling.
    let untuned = (0..3).map(|_| burst(&pair)).max().unwrap_or(0);
    eprintln!("untuned (netdev_max_backlog 8): {untuned} backlog drops");
    assert!(
        untuned >= 200,
        "recipe G produced only {untuned} backlog drops at netdev_max_backlog 8"
    );

    let d = Daemon::start(&["-a", "net_buffer", "-a", "sysctl", "-R"]);
    // The kernel side learns netdev_max_backlog on the daemon's first tick.
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    let mut last = backlog();
    let mut sizes = vec![last];
    // Burst until the backlog has stopped growing for three bursts in a row: growth needs
    // backlog/32 drops within the window, so quiet bursts mean drops have (nearly)
    // stopped at this size. Whether a burst overflows at all depends on scheduling (a
    // CI run saw 0, 1606, 3, 1548, 0, 0 drops at sizes 41..78), so two quiet bursts were
    // not enough evidence. The host is shared: allow up to 24 bursts in all.
    let mut quiet = 0;
    // The outcome: the median of three bursts once the backlog has stopped growing. If
    // those bursts still overflow often enough to grow it (drops at a size are bimodal,
    // and three quiet bursts can come by chance: a CI run stopped at 121 and then saw
    // 134 drops in the median), the daemon is not done: tune on and measure again.
    let mut bursts = 0;
    let (tuned, tuned_backlog) = loop {
        while bursts < 24 {
            bursts += 1;
            let drops = burst(&pair);
            std::thread::sleep(Duration::from_millis(300));
            let now = backlog();
            eprintln!("tuning burst: {drops} drops, netdev_max_backlog {last} -> {now}");
            sizes.push(now);
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
            if quiet >= 3 {
                break;
            }
        }
        let at = backlog();
        let mut after: Vec<u64> = (0..3).map(|_| burst(&pair)).collect();
        after.sort_unstable();
        std::thread::sleep(Duration::from_millis(300));
        let now = backlog();
        if now == at || bursts >= 24 {
            break (after[1], at);
        }
        eprintln!("outcome bursts {after:?} grew netdev_max_backlog {at} -> {now}: tuning on");
        sizes.push(now);
        last = now;
        quiet = 0;
    };
    d.expect_log(
        "Due to excessive drops, change net.core.netdev_max_backlog from (8) -> (10)",
        Duration::from_secs(1),
        "first backlog growth (25 %)",
    );
    let log = d.log();
    let tail = d.tail(40);
    assert!(
        log.contains("Scenario 'need to increase max backlog size' occurred for tunable 'net.core.netdev_max_backlog' in global ns."),
        "scenario line:\n{tail}"
    );
    if bitmap_before.is_some() {
        assert!(
            log.contains("To prioritize small flows, change net.core.flow_limit_cpu_bitmap from ("),
            "the sender's CPU gets a flow-limit table:\n{tail}"
        );
        let bitmap = std::fs::read_to_string(FLOW_LIMIT).expect("bitmap");
        let mask = u64::from_str_radix(&bitmap.trim().replace(',', ""), 16).expect("hex cpumask");
        assert!(mask & 1 != 0, "CPU 0's bit (hex mask) must be set: {bitmap:?}");
    } else {
        assert!(
            !log.contains("flow_limit_cpu_bitmap from ("),
            "a change to a missing sysctl:\n{tail}"
        );
    }
    assert!(
        sizes.windows(2).all(|w| w[1] >= w[0]),
        "backlog only grows: {sizes:?}"
    );

    eprintln!(
        "tuned (netdev_max_backlog {tuned_backlog}, after {:?}): {tuned} backlog drops vs {untuned} untuned",
        t0.elapsed()
    );
    assert!(
        tuned * 10 <= untuned,
        "drops must fall by ≥ 90 %: {untuned} -> {tuned} (backlog 8 -> {tuned_backlog})\n{tail}"
    );

    let (st, log) = d.stop();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        log.contains("Rolling back sysctl values for 'net.core.netdev_max_backlog'"),
        "rollback:\n{tail}"
    );
    assert_eq!(backlog(), 8, "netdev_max_backlog after -R\n{tail}");
    assert_eq!(
        std::fs::read_to_string(FLOW_LIMIT).ok(),
        bitmap_before,
        "flow_limit_cpu_bitmap after -R"
    );

    // An administrator's value is theirs: no growth after it, whatever the drops.
    let d = Daemon::start(&["-a", "net_buffer", "-a", "sysctl"]);
    std::thread::sleep(Duration::from_millis(1200));
    admin_sysctl(None, "net.core.netdev_max_backlog", "16");
    d.expect_log(
        "modified sysctl 'net.core.netdev_max_backlog' that tuner 'net_buffer' uses",
        Duration::from_secs(3),
        "admin write noticed",
    );
    let drops = burst(&pair);
    std::thread::sleep(Duration::from_millis(500));
    assert!(drops > 0, "the admin check needs drops");
    assert_eq!(
        backlog(),
        16,
        "no change after the administrator's write\n{}",
        d.tail(30)
    );
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    assert!(
        !log.contains("change net.core.netdev_max_backlog from (16)"),
        "{}",
        common::tail(&log, 30)
    );
    drop(backlog_guard);
}

/// Σ of the time_squeeze column of /proc/net/softnet_stat.
fn softnet_squeezes() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .expect("read softnet_stat")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// A NAPI budget of 8 packets per softirq round makes the same burst end rounds with work
/// left ("time squeeze", softnet_stat column 3): bpftune grows netdev_budget and
/// netdev_budget_usecs by 25 % per second of squeezes; -R restores both.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn time_squeezes_grow_the_napi_budget() {
    let _g = setup("time_squeezes_grow_the_napi_budget");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        common::skip!("needs 2 CPUs");
    }
    let _saved = guard_net_buffer_sysctls_except(&["net.core.netdev_budget", "net.core.netdev_budget_usecs"]);
    let budget = SysctlGuard::set("net.core.netdev_budget", "8").expect("lower netdev_budget");
    // The kernel's minimum for usecs is 2 jiffies (8000 at HZ=250): start from the live
    // value, below 40 ms so that one step up stays under the 50 ms ceiling.
    let usecs = SysctlGuard::save("net.core.netdev_budget_usecs").expect("save netdev_budget_usecs");
    let u0: i64 = usecs.old_value().trim().parse().expect("usecs");
    assert!(u0 <= 40_000, "netdev_budget_usecs {u0} leaves no room to grow");
    let pair = Pair::new();
    let _rx = receiver(&pair);

    let d = Daemon::start(&["-a", "net_buffer", "-a", "sysctl", "-R"]);
    let s0 = softnet_squeezes();
    for _ in 0..3 {
        burst(&pair);
        if d.wait_for(
            "change net.core.netdev_budget from (8) -> (10)",
            Duration::from_millis(1500),
        ) {
            break;
        }
    }
    let squeezes = softnet_squeezes() - s0;
    d.expect_log(
        "To maximize # packets processed per NAPI cycle, change net.core.netdev_budget from (8) -> (10)",
        Duration::from_secs(2),
        "budget growth",
    );
    d.expect_log(
        &format!(
            "To maximize # packets processed per NAPI cycle, change netdev_budget_usecs from ({u0}) -> ({})",
            u0 + u0 / 4
        ),
        Duration::from_secs(1),
        "usecs growth",
    );
    let log = d.log();
    assert!(
        log.contains("Scenario 'need to increase # of packets processed per NAPI poll' occurred for tunable 'net.core.netdev_budget' in global ns."),
        "scenario line:\n{}",
        d.tail(30)
    );
    let grown = global_ints("net.core.netdev_budget")[0];
    eprintln!("{squeezes} time squeezes; netdev_budget 8 -> {grown}");
    assert!(grown > 8, "netdev_budget {grown}");
    let (st, log) = d.stop();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert_eq!(global_ints("net.core.netdev_budget"), vec![8], "-R\n{tail}");
    assert_eq!(
        global_ints("net.core.netdev_budget_usecs"),
        vec![u0],
        "-R\n{tail}"
    );
    drop(usecs);
    drop(budget);
}

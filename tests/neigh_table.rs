//! neigh_table (global tables!), recipe E: with arp_cache thresholds lowered to
//! 16/32/64, adding 200 neighbours in a namespace fails with ENOBUFS once 64 are in the
//! table. bpftune grows the thresholds (via RTM_SETNEIGHTBL) as the table fills, so the
//! same additions succeed; -R restores; a change made with `ip ntable change` (netlink,
//! invisible to the cgroup/sysctl hook) is noticed and hands the tables over.
//!
//! Low thresholds make the kernel's forced GC evict other entries (the host's gateway
//! too), so they are in place only for the few seconds a phase needs, and a guard puts
//! the original thresholds back at once, also when an assertion fails.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{setup, Daemon, Pair};

const KEYS: [&str; 3] = [
    "net.ipv4.neigh.default.gc_thresh1",
    "net.ipv4.neigh.default.gc_thresh2",
    "net.ipv4.neigh.default.gc_thresh3",
];
const KEYS6: [&str; 3] = [
    "net.ipv6.neigh.default.gc_thresh1",
    "net.ipv6.neigh.default.gc_thresh2",
    "net.ipv6.neigh.default.gc_thresh3",
];

fn thresholds() -> [i64; 3] {
    KEYS.map(|k| common::global_ints(k)[0])
}

/// `ip ntable change name arp_cache thresh1 a thresh2 b thresh3 c` (netlink).
fn ntable_change(t: [i64; 3]) {
    ntable_change_in("arp_cache", t);
}

fn ntable_change_in(table: &str, t: [i64; 3]) {
    let st = Command::new("ip")
        .args(["ntable", "change", "name", table])
        .args(["thresh1", &t[0].to_string(), "thresh2", &t[1].to_string()])
        .args(["thresh3", &t[2].to_string()])
        .status()
        .expect("run ip ntable change");
    assert!(st.success(), "ip ntable change {t:?} failed");
}

/// Restores a table's thresholds on drop (and on [`Thresholds::restore`]).
struct Thresholds {
    keys: [&'static str; 3],
    saved: [i64; 3],
}

impl Thresholds {
    fn save() -> Thresholds {
        Self::save_keys(KEYS)
    }

    fn save_keys(keys: [&'static str; 3]) -> Thresholds {
        Thresholds {
            keys,
            saved: keys.map(|k| common::global_ints(k)[0]),
        }
    }

    fn restore(&self) {
        // Through /proc/sys: independent of the code under test. thresh3 first, so that
        // raising it stops forced GC at once.
        for (k, v) in self.keys.iter().zip(self.saved).rev() {
            if let Err(e) = bpftune_testbed::sysctl::write(k, &v.to_string()) {
                eprintln!("cannot restore {k}={v}: {e:#}");
            }
        }
    }
}

impl Drop for Thresholds {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Adds `n` stale neighbours 10.213.x.(10+i) on the receiver's veth, one `ip` call each
/// (a batch stops at the first failure); returns how many failed.
fn add_neighbours(pair: &Pair, n: usize) -> usize {
    let base = pair
        .rx_addr()
        .rsplit_once('.')
        .map(|(b, _)| b.to_string())
        .expect("IPv4 address");
    let dev = pair.veth.dev_a();
    (0..n)
        .filter(|i| {
            let ip = format!("{base}.{}", 10 + i);
            let ok = Command::new("ip")
                .args([
                    "-n",
                    pair.rx.name(),
                    "neigh",
                    "add",
                    &ip,
                    "lladdr",
                    "02:00:00:00:00:01",
                ])
                .args(["dev", dev, "nud", "stale"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            !ok
        })
        .count()
}

fn flush(pair: &Pair) {
    let _ = pair.rx.ip(&["neigh", "flush", "dev", pair.veth.dev_a()]);
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn nearly_full_arp_table_grows_its_thresholds() {
    let _g = setup("nearly_full_arp_table_grows_its_thresholds");
    let pair = Pair::new();
    let dev = pair.veth.dev_a().to_string();
    let guard = Thresholds::save();
    const LOW: [i64; 3] = [16, 32, 64];

    // Untuned.
    ntable_change(LOW);
    let untuned = add_neighbours(&pair, 200);
    flush(&pair);
    guard.restore();
    eprintln!("untuned (16/32/64): {untuned} of 200 additions failed");
    assert!(
        untuned >= 100,
        "recipe E: expected ≥ 100 ENOBUFS failures, got {untuned}"
    );

    // Tuned, from the same thresholds.
    ntable_change(LOW);
    let d = Daemon::start(&["-a", "neigh_table", "-a", "sysctl", "-R"]);
    let tuned = add_neighbours(&pair, 200);
    let grown = thresholds();
    flush(&pair);
    eprintln!("tuned: {tuned} of 200 additions failed; thresholds 16/32/64 -> {grown:?}");
    d.expect_log(
        &format!("updated thresholds for arp_cache table, dev '{dev}' (ifindex "),
        Duration::from_secs(1),
        "growth logged",
    );
    let log = d.log();
    let tail = d.tail(40);
    assert!(
        log.contains("thresh1: 16 to 20, thresh2: 32 to 40, thresh3: 64 to 80"),
        "first step +25 %:\n{tail}"
    );
    assert!(
        log.contains("Scenario 'neighbour table nearly full' occurred for tunable 'net.ipv4.neigh.default.gc_thresh3' in global ns."),
        "scenario line:\n{tail}"
    );
    assert!(
        grown[2] > 200 && grown[2] <= 1024 && grown[0] <= grown[1] && grown[1] <= grown[2],
        "thresholds must have grown past the 200 entries, within the /24's cap of 1024, ordered: {grown:?}\n{tail}"
    );
    assert!(
        tuned * 10 <= untuned,
        "failures must fall by ≥ 90 %: {untuned} -> {tuned}\n{tail}"
    );
    let (st, log) = d.stop();
    let after_rollback = thresholds();
    guard.restore();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(
        log.contains("Rolling back sysctl values for 'net.ipv4.neigh.default.gc_thresh3'"),
        "rollback:\n{tail}"
    );
    assert_eq!(
        after_rollback, LOW,
        "-R restores the thresholds (via netlink)\n{tail}"
    );

    // The administrator's netlink change: noticed, and the tables are theirs.
    let d = Daemon::start(&["-a", "neigh_table", "-a", "sysctl"]);
    std::thread::sleep(Duration::from_millis(1200));
    ntable_change(LOW);
    d.expect_log(
        "modified sysctl 'net.ipv4.neigh.default.gc_thresh1' that tuner 'neigh_table' uses; disabling 'neigh_table'",
        Duration::from_secs(4),
        "ip ntable change noticed",
    );
    let fails = add_neighbours(&pair, 100);
    let now = thresholds();
    flush(&pair);
    guard.restore();
    let (st, log) = d.stop();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(fails > 0, "the admin check needs a full table");
    assert_eq!(
        now, LOW,
        "no change after the administrator's netlink write\n{tail}"
    );
    assert!(!log.contains("updated thresholds"), "{tail}");
    // The guard's /proc/sys restore while the daemon still ran is reported by the
    // sysctl tuner (pid and command known); the netlink change once per threshold.
    assert_eq!(
        log.matches("cmd 'netlink RTM_SETNEIGHTBL (e.g. ip ntable change)' modified sysctl 'net.ipv4.neigh.default.gc_thresh").count(),
        3,
        "each threshold changed via netlink reported once:\n{tail}"
    );
    drop(guard);
}

/// A table grown far past the defaults and nearly empty shrinks one step when entries go.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn nearly_empty_grown_table_shrinks() {
    let _g = setup("nearly_empty_grown_table_shrinks");
    let pair = Pair::new();
    let guard = Thresholds::save();
    // High thresholds are harmless to the host (no forced GC).
    ntable_change([1000, 2000, 4000]);
    let d = Daemon::start(&["-a", "neigh_table", "-a", "sysctl", "-R"]);
    assert_eq!(add_neighbours(&pair, 10), 0, "adding 10 neighbours");
    flush(&pair);
    d.expect_log(
        "reduced thresholds for arp_cache table, thresh1: 1000 to 750, thresh2: 2000 to 1500, thresh3: 4000 to 3000",
        Duration::from_secs(3),
        "shrink logged",
    );
    assert_eq!(thresholds(), [750, 1500, 3000], "{}", d.tail(20));
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    assert_eq!(thresholds(), [1000, 2000, 4000], "-R\n{}", common::tail(&log, 30));
    drop(guard);
}

/// The IPv6 table (ndisc_cache) grows like the IPv4 one; its cap comes from the device's
/// IPv6 prefixes (/proc/net/if_inet6 in the device's namespace).
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn nearly_full_ndisc_table_grows_its_thresholds() {
    let _g = setup("nearly_full_ndisc_table_grows_its_thresholds");
    if !std::path::Path::new("/proc/sys/net/ipv6/neigh/default/gc_thresh3").exists() {
        common::skip!("needs IPv6 (no /proc/sys/net/ipv6/neigh/default/gc_thresh3)");
    }
    let pair = Pair::new();
    let dev = pair.veth.dev_a().to_string();
    pair.rx
        .ip(&["-6", "addr", "add", "fd00:bc::1/64", "dev", &dev, "nodad"])
        .expect("IPv6 address");
    let guard = Thresholds::save_keys(KEYS6);
    ntable_change_in("ndisc_cache", [16, 32, 64]);
    let d = Daemon::start(&["-a", "neigh_table", "-a", "sysctl", "-R"]);
    let failed = (0..120)
        .filter(|i| {
            let ip = format!("fd00:bc::{:x}", 0x100 + i);
            !Command::new("ip")
                .args([
                    "-n",
                    pair.rx.name(),
                    "-6",
                    "neigh",
                    "add",
                    &ip,
                    "lladdr",
                    "02:00:00:00:00:02",
                ])
                .args(["dev", &dev, "nud", "stale"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count();
    let grown = KEYS6.map(|k| common::global_ints(k)[0]);
    let _ = pair.rx.ip(&["-6", "neigh", "flush", "dev", &dev]);
    guard.restore();
    eprintln!("ndisc_cache: {failed} of 120 additions failed; thresholds 16/32/64 -> {grown:?}");
    d.expect_log(
        &format!("updated thresholds for ndisc_cache table, dev '{dev}' (ifindex "),
        Duration::from_secs(1),
        "IPv6 growth logged",
    );
    assert!(
        d.log().contains("Scenario 'neighbour table nearly full' occurred for tunable 'net.ipv6.neigh.default.gc_thresh3' in global ns."),
        "{}",
        d.tail(30)
    );
    assert!(
        grown[2] > 120,
        "ndisc thresholds grew past the entries: {grown:?}"
    );
    assert!(failed <= 12, "{failed} of 120 IPv6 neighbour additions failed");
    drop(d);
    drop(guard);
}

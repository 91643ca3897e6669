//! Least privilege (reference §1.11, `kernel::privs`): once started, every thread of the
//! daemon has an empty effective capability set and only `privs::KEEP` permitted, and
//! tuning still works — a namespace tuning event changes the sysctl (setns + write), an
//! administrator's write is detected, `-R` restores at exit (rollback + cgroup unmount)
//! — with the effective sets empty again after each of them.

mod common;
#[path = "common/sysd.rs"]
mod sysd;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bpftune::kernel::netlink::NeighTableStore;
use bpftune::kernel::netns::{NetnsInfo, Target};
use bpftune::kernel::sysctl::{write_desc, ProcSysctl, SysctlError, SysctlStore};
use bpftune::model::tunable::{SysctlValue, TunableDesc};
use common::{admin_sysctl, global_ints, ns_ints, ns_set, setup, Daemon, Pair, SysctlGuard};

const SMALL_RMEM: &str = "4096 131072 262144";
/// CAP_NET_ADMIN(12) CAP_SYS_PTRACE(19) CAP_SYS_ADMIN(21) CAP_PERFMON(38) CAP_BPF(39):
/// `bpftune::kernel::privs::KEEP`.
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
    p.iperf_until_log(
        &d,
        "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)",
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
    for tuner in bpftune::tuners::names() {
        assert!(
            log.lines()
                .any(|l| l.contains("bpftune started") && l.contains(tuner)),
            "{tuner} not attached with the unit's bounding set:\n{log}"
        );
    }
    let raised = "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144)";
    assert!(
        p.iperf_until(3, 4, || d.stderr().contains(raised)),
        "no tuning with the unit's bounding set:\n{}\n{}",
        common::tcp_memory_line(),
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

/// A different value the kernel accepts for `name` (from `v`), to prove a write really
/// happened: booleans flip, other integers grow by one (a value may sit at its minimum:
/// `netdev_budget_usecs` is often exactly 2 ticks) except a low threshold, which is
/// bounded by its high one and moves down, the last of several values moves, a CPU mask
/// flips CPU 0, a list loses its last entry.
fn changed(name: &str, v: &SysctlValue) -> SysctlValue {
    match v {
        SysctlValue::Ints(xs) => {
            let mut xs = xs.clone();
            let last = xs.len() - 1;
            xs[last] = match xs[last] {
                0 => 1,
                1 => 0,
                x if name.ends_with("low_thresh") => x - 1,
                x => x + 1,
            };
            SysctlValue::Ints(xs)
        }
        SysctlValue::Str(s) if name.ends_with("_bitmap") => {
            let zero = s.chars().all(|c| c == '0' || c == ',');
            SysctlValue::Str(if zero { "1" } else { "0" }.to_string())
        }
        SysctlValue::Str(s) => {
            let mut words: Vec<&str> = s.split_whitespace().collect();
            if words.len() > 1 {
                words.pop();
            }
            SysctlValue::Str(words.join(" "))
        }
    }
}

/// Compares what was written with what the kernel shows (masks print with leading zeros).
fn same(a: &SysctlValue, b: &SysctlValue) -> bool {
    let norm = |v: &SysctlValue| match v {
        SysctlValue::Str(s) => {
            let t = s.trim().trim_start_matches(['0', ',']);
            SysctlValue::Str(if t.is_empty() { "0" } else { t }.to_string())
        }
        other => other.clone(),
    };
    norm(a) == norm(b)
}

/// Every sysctl a built-in tuner can write (from the descriptors, not a hand-kept list)
/// is written through the engine's write path (`kernel::sysctl::write_desc`, the store the
/// daemon builds) from a thread holding only the daemon's idle set — empty effective,
/// `privs::KEEP` permitted — to a different value and back, in the initial namespace or,
/// for per-namespace ones, in a test namespace. Before that the same write is tried with
/// nothing raised: it must fail with EPERM/EACCES exactly for the descriptors that
/// declare capabilities (`write_caps`) and succeed for the others, so a descriptor
/// neither lacks a capability its kernel handler checks (the high_order_alloc_disable
/// bug: static keys check CAP_SYS_ADMIN) nor raises one it does not need. A sysctl two
/// tuners declare must declare the same capabilities. Global values are restored even on
/// failure (SysctlGuard).
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn every_managed_sysctl_is_writable_with_idle_capabilities() {
    let _g = setup("every_managed_sysctl_is_writable_with_idle_capabilities");
    let ns = common::netns("write caps");
    let ino = std::fs::metadata(ns.path()).expect("netns inode").ino();
    let ns_target = Target::Netns(NetnsInfo {
        cookie: ns.cookie().expect("cookie"),
        ino,
        path: ns.path(),
        name: Some(ns.name().to_string()),
    });
    let mut descs: BTreeMap<&'static str, (TunableDesc, Vec<&'static str>)> = BTreeMap::new();
    for t in bpftune::tuners::all() {
        for d in t.tunables().iter().filter(|d| d.writable()) {
            let e = descs.entry(d.name).or_insert((*d, Vec::new()));
            assert_eq!(
                e.0.write_caps,
                d.write_caps,
                "'{}' is declared by {:?} and {} with different write capabilities",
                d.name,
                e.1,
                t.name()
            );
            e.1.push(t.name());
        }
    }
    assert!(
        descs.len() >= 25,
        "too few writable descriptors: {:?}",
        descs.keys()
    );
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, (desc, tuners)) in &descs {
        let target = if desc.namespaced {
            ns_target.clone()
        } else {
            Target::Global
        };
        let store = NeighTableStore::new(ProcSysctl::default());
        let before = match store.read(&target, name, desc.string, desc.num_values) {
            Ok(v) => v,
            Err(SysctlError::NotFound(_)) if desc.optional => {
                report.push(format!("{name}: not on this kernel (optional)"));
                continue;
            }
            Err(e) => panic!("read {name}: {e}"),
        };
        let _restore = (!desc.namespaced).then(|| SysctlGuard::save(name).expect("save global sysctl"));
        let new = changed(name, &before);
        assert_ne!(new, before, "{name}: no different value to write");
        let desc = *desc;
        let t2 = target.clone();
        let (bare, with, after, back, eff) = std::thread::spawn(move || {
            let store = NeighTableStore::new(ProcSysctl::default());
            bpftune::kernel::privs::drop_to_idle().expect("drop to the idle set");
            let bare = store.write(&t2, desc.name, &new);
            if bare.is_ok() {
                // Undo the unprivileged write before the real one.
                let _ = store.write(&t2, desc.name, &before);
            }
            let with = write_desc(&store, &t2, &desc, &new);
            let after = store.read(&t2, desc.name, desc.string, desc.num_values);
            let back = write_desc(&store, &t2, &desc, &before);
            let eff = caps::read(None, caps::CapSet::Effective).expect("effective set");
            (
                bare.map_err(|e| e.to_string()),
                with.map_err(|e| e.to_string()),
                after.map(|v| (v, new)).map_err(|e| e.to_string()),
                back.map_err(|e| e.to_string()),
                eff,
            )
        })
        .join()
        .expect("writer thread");
        let declared = bpftune::kernel::privs::names(&desc.write_caps.iter().copied().collect());
        report.push(format!(
            "{name} ({}; {}): caps {declared:?}; without them: {}",
            tuners.join(","),
            if desc.namespaced { "netns" } else { "global" },
            match &bare {
                Ok(()) => "ok".to_string(),
                Err(e) => e.clone(),
            }
        ));
        let mut fail = |m: String| failures.push(format!("{name}: {m}"));
        match (&bare, desc.write_caps.is_empty()) {
            (Err(e), true) => fail(format!(
                "refused with the idle set although the descriptor declares no capability: {e}"
            )),
            (Ok(()), false) => fail(format!("declares {declared:?} but the write needs none")),
            (Err(e), false) if !e.contains("permission denied") => {
                fail(format!("without capabilities: expected EPERM/EACCES, got {e}"))
            }
            _ => {}
        }
        if let Err(e) = &with {
            fail(format!("write with its declared capabilities failed: {e}"));
        }
        match &after {
            Ok((v, new)) if same(v, new) => {}
            Ok((v, new)) => fail(format!("wrote {new}, the kernel holds {v}")),
            Err(e) => fail(format!("read back: {e}")),
        }
        if let Err(e) = &back {
            fail(format!("restoring the original failed: {e}"));
        }
        if !eff.is_empty() {
            fail(format!("effective set not empty after the writes: {eff:?}"));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n\n{}",
        failures.join("\n"),
        report.join("\n")
    );
}

/// net_buffer's start-up rule (C bpftune's): `net.core.high_order_alloc_disable=1` on a
/// kernel ≥ 5.14 is set to 0. The daemon does it with its idle set (its handler checks
/// CAP_SYS_ADMIN: this failed with EPERM on every kernel before the descriptor said so),
/// and `-R` puts the 1 back at exit. Before 5.14 (the 5.10 guest) the rule does not
/// apply, and the 1 must stay.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn net_buffer_enables_high_order_allocations_with_idle_capabilities() {
    let _g = setup("net_buffer_enables_high_order_allocations_with_idle_capabilities");
    const HOAD: &str = "net.core.high_order_alloc_disable";
    if std::fs::metadata("/proc/sys/net/core/high_order_alloc_disable").is_err() {
        panic!(
            "{HOAD} is missing: this kernel predates it (the rule does not apply); run this test on ≥ 5.1"
        );
    }
    let guard = SysctlGuard::set(HOAD, "1").expect("set high_order_alloc_disable=1");
    let d = Daemon::start(&["-R", "-a", "net_buffer"]);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    if !bpftune::tuners::net_buffer::policy::kernel_at_least(release.trim(), 5, 14) {
        // Before 5.14 high-order page-frag allocations still contend: the rule does not
        // apply, and the daemon must leave the 1 alone.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(global_ints(HOAD), [1], "changed on {release}\n{}", d.tail(30));
        let (st, log) = d.stop();
        assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
        drop(guard);
        return;
    }
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        global_ints(HOAD) == [0]
    });
    assert!(ok, "{HOAD} still {:?}\n{}", global_ints(HOAD), d.tail(30));
    d.expect_log(
        "Scenario 'need to enable high-order allocation for skb page frags' occurred for tunable 'net.core.high_order_alloc_disable' in global ns.",
        Duration::from_secs(1),
        "scenario line of the start-up rule",
    );
    assert_idle(&d, "after the start-up rule");
    let (st, log) = d.stop();
    let tail = common::tail(&log, 30);
    assert!(st.success(), "exit status {st}\n{tail}");
    assert!(!log.contains("could not update"), "a write failed:\n{tail}");
    assert_eq!(global_ints(HOAD), [1], "rollback at exit\n{tail}");
    drop(guard);
}

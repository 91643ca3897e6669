//! Crash anywhere (RELIABILITY.md item 1): a daemon tuning three namespace pairs under
//! iperf3 traffic is killed with SIGKILL — at a random moment, or exactly between
//! persisting an original and writing the sysctl (`BPFTUNE_TEST_CRASH_AT=persist:K`),
//! or in the middle of rewriting the state file (`state-rewrite:K`); sometimes an
//! administrator then sets a value. A restart with `-R` in the same state directory,
//! stopped with SIGTERM, must put every sysctl bpftune changed back to its original
//! and leave the administrator's value alone.
//!
//! `BPFTUNE_CRASH_N` iterations (CI: 3, one per kind; `reliability/reliability.py
//! crash` runs 60), `BPFTUNE_CRASH_SEED` makes the random choices repeatable,
//! `BPFTUNE_CRASH_OUT` receives one line per iteration.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{admin_sysctl, global_ints, ns_ints, ns_set, setup, temp_dir, Daemon, Pair};

const RX_RMEM: &str = "4096 131072 262144";
const TX_WMEM: &str = "4096 16384 33554432";
const ADMIN_RMEM: &str = "4096 131072 300000";
/// The integer sysctls the built-in tuners may write, per namespace (`namespaced`) or
/// global, that this kernel has. From the tuners' own descriptors (what `-q jtunables`
/// reports): a list kept here covered only the sysctls this traffic was expected to
/// move, and would not grow with the tuners.
fn tuner_sysctls(namespaced: bool) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = bpftune::tuners::all()
        .iter()
        .flat_map(|t| t.tunables().iter())
        .filter(|d| {
            d.kind == bpftune::model::tunable::TunableKind::Sysctl
                && d.writable()
                && !d.string
                && d.num_values > 0
                && d.namespaced == namespaced
                && std::path::Path::new("/proc/sys").join(d.proc_path()).exists()
        })
        .map(|d| d.name)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// xorshift64*: repeatable random choices from a printed seed, no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn pair() -> Pair {
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", RX_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", TX_WMEM);
    p
}

/// Every namespaced key of both sides of every pair: ((pair, side, key), value).
type Snapshot = Vec<((usize, &'static str, &'static str), Vec<i64>)>;

fn snapshot(pairs: &[Pair]) -> Snapshot {
    let keys = tuner_sysctls(true);
    let mut v = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        for (side, ns) in [("rx", &p.rx), ("tx", &p.tx)] {
            for &key in &keys {
                v.push(((i, side, key), ns_ints(ns, key)));
            }
        }
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Random,
    Persist,
    StateRewrite,
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn crash_anywhere_then_rollback_restores_every_original() {
    let _g = setup("crash_anywhere_then_rollback_restores_every_original");
    let n = env_u64("BPFTUNE_CRASH_N").unwrap_or(3);
    let seed = env_u64("BPFTUNE_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1
    });
    eprintln!("crash: {n} iterations, BPFTUNE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut out = std::env::var_os("BPFTUNE_CRASH_OUT").map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.to_string_lossy()))
    });
    let global_keys = tuner_sysctls(false);
    let globals_before: Vec<Vec<i64>> = global_keys.iter().map(|k| global_ints(k)).collect();
    let mut failures: Vec<String> = Vec::new();
    let (mut changed_total, mut point_hits) = (0usize, 0u64);

    for i in 0..n {
        let kind = [Kind::Random, Kind::Persist, Kind::StateRewrite][(i % 3) as usize];
        let k = 1 + rng.below(6);
        let kill_after = Duration::from_millis(200 + rng.below(3000));
        let admin = rng.below(2) == 1;
        let pairs: Vec<Pair> = (0..3).map(|_| pair()).collect();
        let before = snapshot(&pairs);
        let state = temp_dir("crash");
        let point = match kind {
            Kind::Random => String::new(),
            Kind::Persist => format!("persist:{k}"),
            Kind::StateRewrite => format!("state-rewrite:{k}"),
        };
        let env: Vec<(&str, &str)> = if point.is_empty() {
            Vec::new()
        } else {
            vec![("BPFTUNE_TEST_CRASH_AT", point.as_str())]
        };
        let d = Daemon::start_with_state_env(&[], state.path(), &env);
        let t0 = Instant::now();
        // The kill happens while traffic runs: inside the scope, before the iperf3
        // threads are joined.
        let (log, hit, crashed_at) = std::thread::scope(|s| {
            for p in &pairs {
                s.spawn(move || p.iperf(3));
            }
            let mut hit = false;
            if kind == Kind::Random {
                std::thread::sleep(kill_after);
            } else {
                // The crash point fires by itself, or never if there were fewer than K
                // writes (then the daemon is killed once traffic is over).
                while d.alive() && t0.elapsed() < Duration::from_secs(4) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                hit = !d.alive();
            }
            let at = t0.elapsed();
            (d.kill9(), hit, at)
        });
        point_hits += u64::from(hit);
        let during = snapshot(&pairs);
        let changed = before.iter().zip(&during).filter(|(b, a)| b.1 != a.1).count();
        changed_total += changed;
        if admin {
            admin_sysctl(Some(&pairs[0].rx), "net.ipv4.tcp_rmem", ADMIN_RMEM);
        }

        let d = Daemon::start_with_state(&["-R"], state.path());
        let (st, log2) = d.stop();
        let after = snapshot(&pairs);
        let mut bad = Vec::new();
        for ((key, want), (_, got)) in before.iter().zip(&after) {
            let want = if admin && *key == (0, "rx", "net.ipv4.tcp_rmem") {
                common::ints(ADMIN_RMEM)
            } else {
                want.clone()
            };
            if *got != want {
                bad.push(format!(
                    "pair {} {} {}: {got:?}, want {want:?}",
                    key.0, key.1, key.2
                ));
            }
        }
        if !st.success() {
            bad.push(format!("-R run exited {st}"));
        }
        let state_file = state.path().join("originals.json");
        if let Ok(text) = std::fs::read_to_string(&state_file) {
            if text.contains("\"entries\"") && !text.contains("\"entries\": []") {
                bad.push(format!("entries left in {}: {text}", state_file.display()));
            }
        }
        let line = format!(
            "iteration={i} kind={kind:?} point={} hit={hit} crashed_after_ms={} changed_before_crash={changed} admin={admin} result={}",
            if point.is_empty() { "-" } else { &point },
            crashed_at.as_millis(),
            if bad.is_empty() { "ok" } else { "FAIL" }
        );
        eprintln!("crash: {line}");
        if let Some(f) = out.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        if !bad.is_empty() {
            failures.push(format!(
                "{line}\n  {}\n  crashed run:\n{}\n  -R run:\n{}",
                bad.join("\n  "),
                common::tail(&log, 15),
                common::tail(&log2, 25)
            ));
        }
    }
    let globals_after: Vec<Vec<i64>> = global_keys.iter().map(|k| global_ints(k)).collect();
    for ((k, b), a) in global_keys.iter().zip(&globals_before).zip(&globals_after) {
        if b != a {
            failures.push(format!("global {k}: {a:?}, was {b:?} before the crashes"));
        }
    }
    eprintln!(
        "crash: {n} tried, {} survived, {} failed; {changed_total} sysctls changed before the crashes; crash points hit {point_hits} times",
        n as usize - failures.len().min(n as usize),
        failures.len()
    );
    // Not vacuous: the daemon did change sysctls before some crash.
    assert!(changed_total > 0, "no sysctl was changed before any crash");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

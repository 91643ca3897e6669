//! Soak (RELIABILITY.md item 6): a `-R` daemon runs while scenarios cycle — a new pair
//! of namespaces per cycle with iperf3 traffic (tcp_rmem/tcp_wmem raises), an
//! administrator's write every third cycle, extra bare namespaces created and destroyed
//! (netns churn) and a query every second from another thread. RSS, fds, threads, CPU
//! time and the daemon's bookkeeping sizes (its "bookkeeping sizes:" debug line) are
//! sampled after each cycle's namespaces are gone; at the end the RSS slope must be about
//! zero and fds/sizes must be back at their first values (no per-namespace residue).
//!
//! CI runs 60 s (the default). The 1-hour run: `reliability/reliability.py soak
//! --guest` (inside a qemu guest, see RELIABILITY.md) or `BPFTUNE_SOAK_SECS=3600
//! BPFTUNE_SOAK_SAMPLE_SECS=60 BPFTUNE_SOAK_OUT=soak.csv` on a host with nothing else
//! running. BPFTUNE_SOAK_OUT receives one CSV line per sample as it is taken.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    admin_sysctl, client, fd_count, iperf3_throughput, netns, rss_kb, setup, thread_count, Daemon,
    IperfServer, Pair,
};

/// iperf3 from tx to rx; false if iperf3 itself failed (a slow emulated guest can miss
/// the server's start-up deadline): that is the harness, not the daemon under test.
fn traffic(p: &Pair, secs: u32) -> bool {
    let srv = match IperfServer::start(&p.rx, 5201) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: iperf3 server: {e:#}");
            return false;
        }
    };
    let r = iperf3_throughput(&p.tx, p.rx_addr(), 5201, secs, false);
    drop(srv);
    r.map_err(|e| eprintln!("soak: iperf3: {e:#}")).is_ok()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample of the daemon's resources.
#[derive(Debug, Clone, Default)]
struct Sample {
    t_s: f64,
    rss_kb: u64,
    fds: usize,
    threads: usize,
    cpu_s: f64,
    sizes: Vec<(String, u64)>,
    log_lines: usize,
    queries_ok: u64,
    queries_failed: u64,
}

/// Capacity of the daemon's ring of recent change records (`MAX_RECORDS` in
/// src/record/ledger.rs).
const CHANGE_RING: u64 = bpftune::record::ledger::MAX_RECORDS as u64;

const SIZE_KEYS: [&str; 7] = [
    "netns_known",
    "ns_states",
    "admin_owned",
    "said",
    "originals",
    "changes",
    "spans",
];

/// utime + stime of `pid` in seconds (fields 14 and 15 of /proc/PID/stat).
fn cpu_s(pid: u32) -> f64 {
    let hz = 100.0; // USER_HZ is 100 on every Linux ABI bpftune supports
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // comm may contain spaces: fields start after the last ')'.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / hz)
        })
        .unwrap_or(0.0)
}

/// The last "bookkeeping sizes: k=v ..." line of the log.
fn sizes(log: &str) -> Vec<(String, u64)> {
    let Some(line) = log.lines().rev().find(|l| l.contains("bookkeeping sizes: ")) else {
        return Vec::new();
    };
    let Some((_, kv)) = line.split_once("bookkeeping sizes: ") else {
        return Vec::new();
    };
    kv.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn size(s: &Sample, key: &str) -> u64 {
    s.sizes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

fn csv_header() -> String {
    format!(
        "t_s,rss_kb,fds,threads,cpu_s,{},log_lines,queries_ok,queries_failed",
        SIZE_KEYS.join(",")
    )
}

fn csv_line(s: &Sample) -> String {
    let sizes: Vec<String> = SIZE_KEYS.iter().map(|k| size(s, k).to_string()).collect();
    format!(
        "{:.1},{},{},{},{:.2},{},{},{},{}",
        s.t_s,
        s.rss_kb,
        s.fds,
        s.threads,
        s.cpu_s,
        sizes.join(","),
        s.log_lines,
        s.queries_ok,
        s.queries_failed
    )
}

/// Least-squares slope of y over x.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[test]
fn slope_of_a_line_and_of_noise() {
    let xs: Vec<f64> = (0..10).map(f64::from).collect();
    let ys: Vec<f64> = xs.iter().map(|x| 3.0 * x + 1.0).collect();
    assert!((slope(&xs, &ys) - 3.0).abs() < 1e-9);
    let flat = [5.0, 7.0, 5.0, 7.0, 5.0, 7.0, 5.0, 7.0, 5.0, 7.0];
    assert!(slope(&xs, &flat).abs() < 0.25);
    let log = "x\n... bookkeeping sizes: netns_known=3 ns_states=1 spans=2\n... bookkeeping sizes: netns_known=4 ns_states=0";
    let s = Sample {
        sizes: sizes(log),
        ..Sample::default()
    };
    assert_eq!((size(&s, "netns_known"), size(&s, "spans")), (4, 0));
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn soak_resources_stay_flat() {
    let _g = setup("soak_resources_stay_flat");
    let secs = env_u64("BPFTUNE_SOAK_SECS", 60);
    let every = env_u64("BPFTUNE_SOAK_SAMPLE_SECS", (secs / 12).max(5));
    let out_path = std::env::var_os("BPFTUNE_SOAK_OUT").map(PathBuf::from);
    let mut out = out_path.as_ref().map(|p| {
        let mut f = fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let _ = writeln!(f, "{}", csv_header());
        f
    });

    // Under TCG with one vCPU, verifying and attaching every tuner takes minutes.
    let ready = env_u64("BPFTUNE_SOAK_READY_SECS", 60);
    let d = Daemon::start_waiting(&["-R"], Duration::from_secs(ready));
    let pid = d.pid();
    let run_dir = d.run_dir().to_path_buf();

    // A query every second, checked for a correct answer (the tuner list).
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let querier = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let q = ["tuners", "status", "summary", "jchanges"][(i % 4) as usize];
                let (code, outp, err) = client(&run_dir, &["-q", q]);
                let good = code == 0
                    && match q {
                        "tuners" => outp.contains("tcp_buffer"),
                        "jchanges" => serde_json::from_str::<serde_json::Value>(&outp).is_ok(),
                        _ => !outp.is_empty(),
                    };
                if good {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!(
                        "soak: query {q} failed ({code}): {err} {}",
                        &outp[..outp.len().min(200)]
                    );
                }
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut take = |d: &Daemon, samples: &mut Vec<Sample>| {
        let log = d.log();
        let s = Sample {
            t_s: start.elapsed().as_secs_f64(),
            rss_kb: rss_kb(pid),
            fds: fd_count(pid),
            threads: thread_count(pid),
            cpu_s: cpu_s(pid),
            sizes: sizes(&log),
            log_lines: log.lines().count(),
            queries_ok: ok.load(Ordering::SeqCst),
            queries_failed: failed.load(Ordering::SeqCst),
        };
        let line = csv_line(&s);
        eprintln!("soak sample: {line}");
        if let Some(f) = out.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
        samples.push(s);
    };
    // Let the rescan that follows start-up settle, then take the baseline.
    std::thread::sleep(Duration::from_secs(6));
    take(&d, &mut samples);
    let mut next_sample = Instant::now() + Duration::from_secs(every);
    let mut cycle = 0u64;
    let mut traffic_failed = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        {
            // Kernel defaults (tcp_rmem max 6 MiB): a write here would be an
            // administrator's write, which hands the namespace over (no tuning).
            let p = Pair::new();
            traffic_failed += u64::from(!traffic(&p, 3));
            if cycle % 3 == 1 {
                admin_sysctl(Some(&p.rx), "net.ipv4.tcp_rmem", "4096 131072 400000");
                traffic_failed += u64::from(!traffic(&p, 1));
            }
            // Bare namespaces: created and destroyed without traffic.
            let bare: Vec<_> = (0..4).map(|_| netns("soak")).collect();
            std::thread::sleep(Duration::from_millis(300));
            drop(bare);
        }
        assert!(d.alive(), "daemon died in cycle {cycle}:\n{}", d.tail(60));
        cycle += 1;
        if Instant::now() >= next_sample {
            // Namespaces are gone: the /run/netns watcher triggers a rescan, the
            // periodic one runs every 5 s; wait for it so sizes are at rest.
            std::thread::sleep(Duration::from_secs(6));
            take(&d, &mut samples);
            next_sample = Instant::now() + Duration::from_secs(every);
        }
    }
    std::thread::sleep(Duration::from_secs(6));
    take(&d, &mut samples);
    stop.store(true, Ordering::SeqCst);
    let _ = querier.join();
    // Rollback and teardown of every tuner: slow in an emulated guest.
    let st = (*d)
        .terminate(Duration::from_secs(ready.max(15)))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .status;
    let log = d.log();
    let tail = common::tail(&log, 40);
    assert!(st.success(), "exit status {st}\n{tail}");
    if let Some(p) = std::env::var_os("BPFTUNE_SOAK_LOG") {
        let _ = fs::write(&p, &log);
    }
    let applied = log.matches("Scenario '").count();
    let sizes_lines: Vec<&str> = log.lines().filter(|l| l.contains("bookkeeping sizes")).collect();
    eprintln!(
        "soak: {applied} scenario lines; {} sizes lines, peak {:?}",
        sizes_lines.len(),
        sizes_lines.iter().max_by_key(|l| l.len())
    );

    let first = &samples[0];
    // The reference: the larger of the baseline and the sample after the first cycles
    // (one-time global messages and global originals may appear once, then stay).
    let base = |f: &dyn Fn(&Sample) -> u64| samples.iter().take(2).map(f).max().unwrap_or(0);
    let last = &samples[samples.len() - 1];
    eprintln!(
        "soak: {cycle} cycles in {:.0} s, {} samples; queries ok {} failed {}",
        last.t_s,
        samples.len(),
        last.queries_ok,
        last.queries_failed
    );
    eprintln!(
        "soak: {traffic_failed} of the cycles' iperf3 runs failed to start or run (harness, not daemon)"
    );
    assert!(cycle >= 3, "too few cycles ({cycle}) to judge");
    assert!(
        applied > 0,
        "nothing was tuned: the soak would not exercise the write path"
    );
    assert_eq!(last.queries_failed, 0, "failed queries\n{tail}");
    assert!(last.queries_ok > 0, "no query answered");
    // Warm-up: allocator arenas and BPF maps grow in the first cycles; judge the rest.
    // The recent change records are a bounded ring that grows with every change until
    // it is full (a few kB each with the query replies that carry them): once a run
    // has filled it, judge only what comes after, so a plateau is not taken for a leak
    // and a leak is not hidden behind the filling.
    let judged = match samples.iter().position(|s| size(s, "changes") >= CHANGE_RING) {
        Some(full) if samples.len() - full >= 3 => {
            eprintln!(
                "soak: change ring full ({CHANGE_RING}) at {:.1} min: RSS {} -> {} kB while it filled; judging the {} samples after",
                samples[full].t_s / 60.0,
                first.rss_kb,
                samples[full].rss_kb,
                samples.len() - full
            );
            &samples[full..]
        }
        _ => &samples[samples.len().min(2) - 1..],
    };
    let xs: Vec<f64> = judged.iter().map(|s| s.t_s / 60.0).collect();
    let rss: Vec<f64> = judged.iter().map(|s| s.rss_kb as f64).collect();
    let k = slope(&xs, &rss);
    let minutes = (last.t_s - judged[0].t_s) / 60.0;
    eprintln!(
        "soak: RSS {} -> {} kB, slope {k:.1} kB/min over {minutes:.1} min; fds {} -> {}",
        first.rss_kb, last.rss_kb, first.fds, last.fds
    );
    // "About zero": less than 1 MiB of projected growth over the judged run, which a
    // leak of one allocation per namespace or event would exceed within minutes.
    assert!(
        k * minutes < 1024.0,
        "RSS grows {k:.1} kB/min ({} samples: {:?})",
        rss.len(),
        rss
    );
    let fds0 = base(&|s: &Sample| s.fds as u64);
    assert!(
        last.fds as u64 <= fds0,
        "fds grew {fds0} -> {} over the soak",
        last.fds
    );
    for key in SIZE_KEYS {
        // Recent change records are a bounded ring (MAX_RECORDS) that fills with tuning; the
        // rest must be back to where they were once the namespaces are gone.
        if key == "changes" {
            continue;
        }
        let v0 = base(&|s: &Sample| size(s, key));
        assert!(
            size(last, key) <= v0,
            "bookkeeping '{key}' grew {v0} -> {} (per-namespace residue)",
            size(last, key)
        );
    }
}

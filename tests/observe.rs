//! Observe mode (`--observe`, issue 11 item 1): on the 40 ms delay line of
//! tests/outcome.rs the daemon proposes instead of writing — nothing written, nothing
//! persisted, each proposal logged once, shown by `summary` and `advice` — and the
//! proposals stop where they should instead of repeating the first step; an
//! administrator's write still hands the sysctl over.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bpftune_testbed::{find_forwarder, DelayConfig, DelayLine, IperfServer, Netns};
use common::{admin_sysctl, ns_ints, ns_set, setup, temp_dir, Daemon, Pair};
use serde_json::Value;

const PORT: u16 = 5201;
const RECEIVER_RMEM: &str = "4096 131072 1310720";
const SENDER_WMEM: &str = "4096 16384 33554432";
/// At least this many iperf3 runs of 2 s per phase (observe, then enforce), the same
/// traffic for both …
const MIN_RUNS: usize = 6;
/// … then more until two runs in a row add no step (the phase has converged), at most
/// this many. How many runs a phase needs depends on how fast this host forwards.
const MAX_RUNS: usize = 16;
/// Only tcp_buffer (and the administrator watch): tcp_conn would put the enforcing
/// phase's connections on another congestion control than the observed ones (observe
/// mode leaves them alone), and the phases would not see the same traffic.
const TUNERS: [&str; 4] = ["-a", "tcp_buffer", "-a", "sysctl"];

fn forwarder() -> PathBuf {
    find_forwarder().unwrap_or_else(|e| {
        panic!(
            "{e:#}\nThe delay line needs the testbed's forwarder binary: run `cargo build -p bpftune-testbed --bins` \
             (or `cargo build --workspace`) in the same profile before `cargo test`."
        )
    })
}

/// The traffic of one phase: new 2 s connections, sender (left) → receiver (right), at
/// least MIN_RUNS, then until two runs in a row add no line with `step` to the daemon's
/// log (at most MAX_RUNS). A run the iperf3 server refused (still finishing the previous
/// one) is repeated once.
fn traffic(line: &DelayLine, d: &Daemon, step: &str) -> Vec<f64> {
    let once = || bpftune_testbed::iperf3_throughput(line.left(), line.right_addr(), PORT, 2, false);
    let steps = || d.log().matches(step).count();
    let mut mbit = Vec::new();
    let mut quiet = 0;
    while mbit.len() < MAX_RUNS && (mbit.len() < MIN_RUNS || quiet < 2) {
        let before = steps();
        let bps = once()
            .or_else(|e| {
                eprintln!("iperf3 failed ({e:#}); once more");
                std::thread::sleep(Duration::from_millis(500));
                once()
            })
            .unwrap_or_else(|e| panic!("iperf3 over the delay line: {e:#}"));
        mbit.push(bps / 1e6);
        // Events of the run's last moments are handled within a tick.
        std::thread::sleep(Duration::from_millis(300));
        quiet = if steps() == before { quiet + 1 } else { 0 };
    }
    mbit
}

/// Entries of the daemon's persisted originals (none if there is no file).
fn persisted(state_dir: &Path) -> Vec<Value> {
    let file = state_dir.join("originals.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", file.display()));
    json["entries"].as_array().cloned().unwrap_or_default()
}

/// The `jadvice` entry for `sysctl` in the namespace named `ns`.
fn advised(d: &Daemon, ns: &str, sysctl: &str) -> Option<Value> {
    let j: Value = serde_json::from_str(&d.query_ok("jadvice")).expect("jadvice is JSON");
    j["namespaces"].as_array()?.iter().find(|n| n["netns"] == ns)?["sysctls"]
        .as_array()?
        .iter()
        .find(|s| s["sysctl"] == sysctl)
        .cloned()
}

/// The fragment `advice` prints for namespace `ns` (its header line up to the next one).
fn fragment(advice: &str, ns: &str) -> String {
    let header = format!("# netns {ns}:");
    let start = advice
        .find(&header)
        .unwrap_or_else(|| panic!("no {header:?} in advice:\n{advice}"));
    let rest = &advice[start..];
    let end = rest[1..].find("\n# netns ").map_or(rest.len(), |i| i + 2);
    rest[..end].to_string()
}

/// `ip netns exec <ns> sysctl -p FILE`: the fragment is valid sysctl.d syntax.
fn sysctl_p(ns: &Netns, file: &Path) {
    let out = ns
        .command(&["sysctl", "-p", &file.to_string_lossy()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run sysctl -p: {e}"));
    assert!(
        out.status.success(),
        "sysctl -p {} failed: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn observe_proposes_without_writing_and_converges_like_tuning() {
    let _g = setup("observe_proposes_without_writing_and_converges_like_tuning");
    bpftune_testbed::require_root_and_tun("the delay line");
    let cfg = DelayConfig {
        one_way_delay: Duration::from_millis(20),
        mtu: 9000,
        max_lifetime: Duration::from_secs(300),
        ..DelayConfig::default()
    };
    let line = DelayLine::with_forwarder(cfg, common::PREFIX, &forwarder())
        .unwrap_or_else(|e| panic!("delay line: {e:#}"));
    let (tx, rx) = (line.left(), line.right());
    let rx_name = rx.name().to_string();
    ns_set(rx, "net.ipv4.tcp_rmem", RECEIVER_RMEM);
    ns_set(tx, "net.ipv4.tcp_wmem", SENDER_WMEM);
    let srv = IperfServer::start(rx, PORT).unwrap_or_else(|e| panic!("iperf3 server: {e:#}"));

    // Phase 1: observe.
    let state = temp_dir("observe-state");
    // The proposals are counted for Prometheus too (written to the textfile at exit).
    let textfile = state.path().join("bpftune.prom");
    let textfile_arg = textfile.to_string_lossy().into_owned();
    let d = Daemon::start_with_state(
        &[
            &["--observe", "-R", "--metrics-textfile", &textfile_arg][..],
            &TUNERS[..],
        ]
        .concat(),
        state.path(),
    );
    d.expect_log(
        "observe mode: proposed changes are logged as 'would change'",
        Duration::from_secs(1),
        "observe mode announced",
    );
    let observed_mbit = traffic(
        &line,
        &d,
        &format!("would change net.ipv4.tcp_rmem in netns {rx_name} "),
    );
    let first = format!(
        "would change net.ipv4.tcp_rmem in netns {rx_name} from (4096 131072 1310720) to (4096 131072 1638400): Due to need to increase max buffer size to maximize throughput"
    );
    d.expect_log(&first, Duration::from_secs(2), "first rmem proposal");
    let log = d.log();
    let tail = common::tail(&log, 40);
    assert_eq!(
        ns_ints(rx, "net.ipv4.tcp_rmem"),
        common::ints(RECEIVER_RMEM),
        "observe mode wrote tcp_rmem\n{tail}"
    );
    assert!(
        persisted(state.path()).is_empty(),
        "observe mode persisted originals\n{tail}"
    );
    let proposals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("would change net.ipv4.tcp_rmem in netns {rx_name} ")))
        .collect();
    let mut distinct = proposals.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        proposals.len(),
        "a proposal was logged twice:\n{}",
        proposals.join("\n")
    );
    let scenario_lines = log
        .matches("Scenario 'need to increase TCP buffer size(s)' occurred for tunable 'net.ipv4.tcp_rmem' in non-global ns.")
        .count();
    assert!(
        scenario_lines >= proposals.len(),
        "each proposal keeps the reference's Scenario line ({scenario_lines} Scenario lines, {} proposals)\n{tail}",
        proposals.len()
    );

    let summary = d.query_ok("summary");
    assert!(
        summary.contains("# Observe mode (--observe): no sysctl was changed"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "# Proposed, NOT applied (observe mode): sysctl 'net.ipv4.tcp_rmem' in netns {rx_name} would change from (4096 131072 1310720 ) -> "
        )),
        "summary lacks the proposal:\n{summary}"
    );
    let advice = d.query_ok("advice");
    let ours = fragment(&advice, &rx_name);
    let entry =
        advised(&d, &rx_name, "net.ipv4.tcp_rmem").unwrap_or_else(|| panic!("no jadvice entry:\n{advice}"));
    assert_eq!(entry["proposed"], true);
    let proposed_max = entry["values"][2]
        .as_i64()
        .unwrap_or_else(|| panic!("jadvice values: {entry}"));
    assert!(
        ours.contains(&format!("\nnet.ipv4.tcp_rmem = 4096 131072 {proposed_max}\n")),
        "advice fragment:\n{ours}"
    );
    let jchanges: Value = serde_json::from_str(&d.query_ok("jchanges")).expect("jchanges is JSON");
    let records = jchanges.as_array().cloned().unwrap_or_default();
    assert!(
        records.iter().all(|r| r["applied"] == false),
        "observe mode recorded an applied change"
    );
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    assert!(
        log.contains(&format!(
            "# Proposed, NOT applied (observe mode): sysctl 'net.ipv4.tcp_rmem' in netns {rx_name}"
        )),
        "exit summary lacks the proposal\n{}",
        common::tail(&log, 30)
    );
    // The exit summary counts every proposal (at least those jchanges had).
    let counted: usize = log
        .lines()
        .find_map(|l| {
            l.split("# Observe mode: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "exit summary lacks the proposal count\n{}",
                common::tail(&log, 30)
            )
        });
    let recorded = records.iter().filter(|r| r["proposed"] == true).count();
    assert!(
        counted >= recorded && recorded > 0,
        "{counted} counted, {recorded} in jchanges"
    );
    let metrics = std::fs::read_to_string(&textfile).expect("metrics textfile written at exit");
    let proposed_metric: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("bpftune_proposals_total{")
                && l.contains("tuner=\"tcp_buffer\"")
                && l.contains("tunable=\"net.ipv4.tcp_rmem\"")
                && l.contains("ns_kind=\"netns\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // At least those logged before the snapshot above (one may come after it).
    assert!(
        proposed_metric >= proposals.len() as f64 && proposed_metric > 0.0,
        "bpftune_proposals_total for tcp_rmem {proposed_metric} < {} proposals logged:\n{metrics}",
        proposals.len()
    );
    assert!(
        !metrics.contains("bpftune_changes_total{"),
        "observe mode counted a change:\n{metrics}"
    );
    assert_eq!(
        ns_ints(rx, "net.ipv4.tcp_rmem"),
        common::ints(RECEIVER_RMEM),
        "still unchanged after exit"
    );

    // The fragment is sysctl.d syntax: apply it in a namespace of its own.
    let probe = common::netns("advice");
    let dir = temp_dir("advice");
    let file = dir.path().join("90-bpftune.conf");
    std::fs::write(&file, &ours).expect("write advice fragment");
    sysctl_p(&probe, &file);
    assert_eq!(
        ns_ints(&probe, "net.ipv4.tcp_rmem"),
        vec![4096, 131072, proposed_max]
    );

    // Phase 2: the same traffic, enforcing.
    ns_set(rx, "net.ipv4.tcp_rmem", RECEIVER_RMEM);
    let d = Daemon::start(&[&["-R"][..], &TUNERS[..]].concat());
    let tuned_mbit = traffic(&line, &d, "change net.ipv4.tcp_rmem(min default max)");
    let tuned = ns_ints(rx, "net.ipv4.tcp_rmem");
    let raises = d
        .log()
        .lines()
        .filter(|l| l.contains("change net.ipv4.tcp_rmem(min default max)"))
        .count();
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    drop(srv);
    let ratio = proposed_max as f64 / tuned[2] as f64;
    eprintln!(
        "OBSERVE: {} proposals, proposed max {proposed_max} ({observed_mbit:.0?} Mbit/s); tuning: {raises} raises, max {} ({tuned_mbit:.0?} Mbit/s); proposed/tuned {ratio:.2}",
        proposals.len(),
        tuned[2]
    );
    assert!(
        (0.75..=1.25).contains(&ratio),
        "proposed tcp_rmem max {proposed_max} is not within 25 % of the tuned {}",
        tuned[2]
    );
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn an_admin_write_in_observe_mode_hands_the_sysctl_over() {
    let _g = setup("an_admin_write_in_observe_mode_hands_the_sysctl_over");
    let pair = Pair::new();
    ns_set(&pair.rx, "net.ipv4.tcp_rmem", "4096 131072 262144");
    let rx_name = pair.rx.name().to_string();
    let d = Daemon::start(&["--observe"]);
    pair.iperf(1);
    let would = format!("would change net.ipv4.tcp_rmem in netns {rx_name} ");
    d.expect_log(
        &would,
        Duration::from_secs(2),
        "rmem proposal before the admin write",
    );
    admin_sysctl(Some(&pair.rx), "net.ipv4.tcp_rmem", "4096 131072 300000");
    d.expect_log(
        "modified sysctl 'net.ipv4.tcp_rmem' that tuner 'tcp_buffer' uses; disabling 'tcp_buffer'",
        Duration::from_secs(2),
        "admin write detected in observe mode",
    );
    let before = d.log().matches(&would).count();
    pair.iperf(1);
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    assert_eq!(
        log.matches(&would).count(),
        before,
        "proposals after the administrator took tcp_rmem over:\n{}",
        common::tail(&log, 30)
    );
    assert_eq!(ns_ints(&pair.rx, "net.ipv4.tcp_rmem"), vec![4096, 131072, 300000]);
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
}

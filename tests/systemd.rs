//! Running under systemd: the notification protocol (READY/STATUS/WATCHDOG/STOPPING to a
//! NOTIFY_SOCKET the test binds — PID 1 here is not systemd), journald's native protocol
//! with structured fields of a real change (to a journal socket the test binds), and the
//! packaged unit file accepted by `systemd-analyze verify`.

mod common;
#[path = "common/sysd.rs"]
mod sysd;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ns_ints, ns_set, setup, temp_dir, Pair, BPFTUNE};
use sysd::{field, fields, Listener, SysDaemon};

fn has_line(data: &[u8], line: &str) -> bool {
    String::from_utf8_lossy(data).lines().any(|l| l == line)
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn notify_ready_status_watchdog_and_stopping() {
    let _g = setup("notify_ready_status_watchdog_and_stopping");
    let sock = Listener::bind("notify");
    let path = sock.path.to_string_lossy().into_owned();
    // 1 s watchdog: the daemon must ping every 0.5 s (twice per tick of its loop).
    let mut d = SysDaemon::spawn(
        "notify",
        &["-s"],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    let mut seen = Vec::new();
    let ready = sock.until(Duration::from_secs(20), &mut seen, |m| has_line(m, "READY=1"));
    let log = d.stderr();
    let Some((_, ready)) = ready else {
        panic!("no READY=1 (got {seen:?}); stderr:\n{log}");
    };
    // READY=1 only once every tuner is attached, i.e. after the start-up line.
    assert!(
        log.contains("bpftune started"),
        "READY=1 before 'bpftune started':\n{log}"
    );
    for (_, m) in &seen[..seen.len() - 1] {
        assert!(!has_line(m, "READY=1"), "READY=1 twice");
    }
    let ready = String::from_utf8_lossy(&ready).into_owned();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 without STATUS=: {ready:?}"));
    assert!(
        status.contains("tuner(s) active (")
            && status.contains("tcp_buffer")
            && status.ends_with("0 change(s) so far"),
        "STATUS line: {status:?}"
    );

    // Watchdog pings over 4 s: expected every 0.5 s.
    let window = Duration::from_secs(4);
    // The first ping goes with READY=1; counted from the next one.
    let mut pings = Vec::new();
    let end = Instant::now() + window;
    while let Some((t, m)) = sock.next(end.saturating_duration_since(Instant::now())) {
        if has_line(&m, "WATCHDOG=1") {
            pings.push(t);
        }
        if Instant::now() >= end {
            break;
        }
    }
    let gaps: Vec<u128> = pings.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    eprintln!(
        "watchdog pings: {} in {window:?}; gaps (ms) {gaps:?}",
        pings.len()
    );
    assert!(
        (6..=10).contains(&pings.len()),
        "expected about 8 WATCHDOG=1 in {window:?} with WATCHDOG_USEC=1s, got {} (gaps {gaps:?})",
        pings.len()
    );
    assert!(
        gaps.iter().all(|&g| (300..=800).contains(&g)),
        "watchdog gaps should be about 500 ms: {gaps:?}"
    );

    let st = d.terminate();
    assert!(st.success(), "exit status {st}; stderr:\n{}", d.stderr());
    let mut after = Vec::new();
    let stopping = sock.until(Duration::from_secs(2), &mut after, |m| has_line(m, "STOPPING=1"));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGTERM (got {after:?})");
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn journal_native_protocol_carries_the_fields_of_a_real_change() {
    let _g = setup("journal_native_protocol_carries_the_fields_of_a_real_change");
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", "4096 131072 262144");
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let journal = Listener::bind("journal");
    let jpath = journal.path.to_string_lossy().into_owned();
    let notify = Listener::bind("journal-notify");
    let npath = notify.path.to_string_lossy().into_owned();
    // As systemd starts it: stderr is the journal stream (JOURNAL_STREAM matches fd 2),
    // no -s; the journal socket is the test's. NOTIFY_SOCKET too: STATUS= must follow
    // the changes.
    let mut d = SysDaemon::spawn(
        "journal",
        &["-R"],
        &[
            ("JOURNAL_STREAM", "{JOURNAL_STREAM}"),
            ("BPFTUNE_JOURNAL_SOCKET", &jpath),
            ("NOTIFY_SOCKET", &npath),
        ],
    );
    let mut seen = Vec::new();
    let started = journal.until(Duration::from_secs(20), &mut seen, |m| {
        field(&fields(m), "MESSAGE").is_some_and(|s| s.starts_with("bpftune started"))
    });
    assert!(
        started.is_some(),
        "no 'bpftune started' entry; stderr:\n{}",
        d.stderr()
    );
    for (_, m) in &seen {
        let f = fields(m);
        assert_eq!(field(&f, "SYSLOG_IDENTIFIER"), Some("bpftune"), "{f:?}");
        assert!(field(&f, "PRIORITY").is_some(), "{f:?}");
    }

    p.iperf(3);
    let is_change =
        |m: &[u8]| field(&fields(m), "MESSAGE").is_some_and(|s| s.contains("change net.ipv4.tcp_rmem"));
    let first = journal.until(Duration::from_secs(5), &mut seen, is_change);
    // Whatever else the run produced (later raises), until a quiet second.
    let _ = journal.until(Duration::from_secs(1), &mut seen, |_| false);
    let changes: Vec<Vec<(String, String)>> = seen
        .iter()
        .filter(|(_, m)| is_change(m))
        .map(|(_, m)| fields(m))
        .collect();
    if first.is_none() || changes.is_empty() {
        let msgs: Vec<String> = seen
            .iter()
            .map(|(_, m)| field(&fields(m), "MESSAGE").unwrap_or_default().to_string())
            .collect();
        panic!(
            "no tcp_rmem change entry; journal: {msgs:#?}\nstderr:\n{}",
            d.stderr()
        );
    }
    let f = &changes[0];
    eprintln!("first change entry: {f:?}");
    let msg = field(f, "MESSAGE").unwrap_or_default();
    assert!(
        msg.contains("change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (")
            && !msg.contains("tuner="),
        "MESSAGE is the reference's text, without the structured fields: {msg:?}"
    );
    for f in &changes {
        assert_eq!(field(f, "PRIORITY"), Some("5"), "{f:?}");
        assert_eq!(field(f, "SYSLOG_IDENTIFIER"), Some("bpftune"), "{f:?}");
        assert_eq!(field(f, "BPFTUNE_TUNER"), Some("tcp_buffer"), "{f:?}");
        assert_eq!(field(f, "BPFTUNE_TUNABLE"), Some("net.ipv4.tcp_rmem"), "{f:?}");
        assert_eq!(field(f, "BPFTUNE_NETNS"), Some(p.rx.name()), "{f:?}");
        // The structured values agree with the text of the same entry.
        let (old, new) = (
            field(f, "BPFTUNE_OLD").unwrap_or("?"),
            field(f, "BPFTUNE_NEW").unwrap_or("?"),
        );
        let text = field(f, "MESSAGE").unwrap_or_default();
        assert!(text.contains(&format!("from ({old}) -> ({new})")), "{f:?}");
    }
    assert_eq!(field(f, "BPFTUNE_OLD"), Some("4096 131072 262144"));
    // Each change starts where the previous one ended, and the last one's value is the
    // one now in the namespace.
    for w in changes.windows(2) {
        assert_eq!(field(&w[1], "BPFTUNE_OLD"), field(&w[0], "BPFTUNE_NEW"), "{w:?}");
    }
    let live = ns_ints(&p.rx, "net.ipv4.tcp_rmem");
    let live = live.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
    let last = &changes[changes.len() - 1];
    assert_eq!(
        field(last, "BPFTUNE_NEW"),
        Some(live.as_str()),
        "the value now in the namespace"
    );
    let scenario = field(f, "BPFTUNE_SCENARIO").unwrap_or_default().to_string();
    assert!(!scenario.is_empty(), "{f:?}");
    // The "Scenario ... occurred" line before it carries the same scenario.
    assert!(
        seen.iter().any(|(_, m)| {
            let g = fields(m);
            field(&g, "MESSAGE").is_some_and(|s| s.starts_with("Scenario '"))
                && field(&g, "BPFTUNE_SCENARIO") == Some(scenario.as_str())
                && field(&g, "BPFTUNE_TUNABLE") == Some("net.ipv4.tcp_rmem")
        }),
        "no Scenario entry with BPFTUNE_SCENARIO={scenario}"
    );
    // STATUS= is updated (rate-limited, within 5 s) to count the changes.
    let mut notes = Vec::new();
    let status = notify.until(Duration::from_secs(8), &mut notes, |m| {
        String::from_utf8_lossy(m).lines().any(|l| {
            l.strip_prefix("STATUS=")
                .and_then(|s| s.strip_suffix(" change(s) so far"))
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= changes.len())
        })
    });
    assert!(
        status.is_some(),
        "no STATUS= counting {} change(s): {:?}",
        changes.len(),
        notes
            .iter()
            .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
            .collect::<Vec<_>>()
    );

    // Nothing went to the stream while the socket worked.
    assert!(!d.stderr().contains("change net.ipv4.tcp_rmem"), "{}", d.stderr());

    // The journal goes away: the rollback lines at exit fall back to stderr, with the
    // failure said once.
    drop(journal);
    let st = d.terminate();
    let err = d.stderr();
    assert!(st.success(), "exit status {st}; stderr:\n{err}");
    assert_eq!(
        err.matches("cannot send to the journal socket").count(),
        1,
        "stderr:\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("<5>Rolling back sysctl values for 'net.ipv4.tcp_rmem'")),
        "rollback line on stderr after the fallback:\n{err}"
    );
}

/// The packaged unit with ExecStart pointing at the built binary.
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/bpftune.service"))
        .expect("read packaging/bpftune.service");
    let unit = unit.replace("ExecStart=/usr/sbin/bpftune", &format!("ExecStart={BPFTUNE}"));
    assert!(
        unit.contains(&format!("ExecStart={BPFTUNE}")),
        "unit has no ExecStart=/usr/sbin/bpftune"
    );
    let path = dir.join("bpftune.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

fn systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !systemd_analyze() {
        common::skip!("needs systemd-analyze (scripts/install-deps.sh installs it)");
    }
    let dir = temp_dir("unit");
    let unit = unit_for_test(dir.path());
    // verify runs `man bpftune(8)` for Documentation=: point man at docs/man/bpftune.8 (the
    // package installs it); without man(1) the check is skipped by --man=no.
    let man = dir.path().join("man");
    std::fs::create_dir_all(man.join("man8")).expect("mkdir man8");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man/bpftune.8"),
        man.join("man8/bpftune.8"),
    )
    .expect("copy docs/man/bpftune.8");
    let have_man = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").env("MANPATH", &man);
    if !have_man {
        cmd.arg("--man=no");
    }
    let out = cmd.arg(&unit).output().expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about *our* unit are what matters; verify also loads the units we name in
    // After=/WantedBy= from the host, whose own complaints are not ours.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("bpftune.service")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&unit).expect("read unit");
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.contains(key), "unit lacks {key}");
    }
    // We write /proc/sys and tune other namespaces' networking: these must stay off.
    for key in ["ProtectKernelTunables=yes", "PrivateNetwork=yes"] {
        assert!(!text.contains(key), "unit must not set {key}");
    }
}

#[test]
fn unit_file_security_exposure_is_low() {
    if !systemd_analyze() {
        common::skip!("needs systemd-analyze (scripts/install-deps.sh installs it)");
    }
    let dir = temp_dir("unit-sec");
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("{line}");
    let score: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    // README publishes the score ("rates it **3.4 OK**"): the unit and the README must
    // agree, so a change to either that the other does not follow fails here.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let published: f64 = readme
        .split("rates it\n**")
        .nth(1)
        .or_else(|| readme.split("rates it **").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("README.md does not publish the score as 'rates it **N.N OK**'"));
    assert_eq!(
        score, published,
        "systemd-analyze rates the unit {score}, README.md publishes {published}: {line}"
    );
}

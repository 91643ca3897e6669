//! Prometheus metrics end to end: a daemon with `--metrics-listen :PORT` (the default,
//! loopback form) and `--metrics-textfile` is scraped over HTTP before and after
//! udp_buffer raises net.core.rmem_default for drops in a test namespace (the scenario of
//! tests/udp_buffer.rs); the scrape and the textfile are parsed with a Prometheus text
//! parser. Also: bad flags and paths stop the daemon at start with exit 1.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use bpftune_testbed::daemon::{Daemon as TbDaemon, DaemonConfig};
use common::{netns, run_bpftune, setup, temp_dir, Daemon, Netns, SysctlGuard, BPFTUNE};
use prometheus_parse::{Scrape, Value};

const PORT: u16 = 9921;

/// A TCP port nobody listens on right now (bound to 0, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 0");
    l.local_addr().expect("addr").port()
}

/// Parses exposition text; every non-comment line must be a sample the parser took.
fn parse(text: &str) -> Scrape {
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let s = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    assert_eq!(s.samples.len(), lines, "unparsed lines in:\n{text}");
    assert!(text.ends_with("# EOF\n"), "truncated:\n{text}");
    s
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn scrape(port: u16) -> Scrape {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics port");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    parse(body)
}

/// Listening TCP sockets on `port` in /proc/net/tcp{,6}: their local addresses (hex).
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for l in std::fs::read_to_string(f).unwrap_or_default().lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            if *state == "0A" && local.ends_with(&format!(":{port:04X}")) {
                out.push(local.to_string());
            }
        }
    }
    out
}

/// Bursts of datagrams into a default-sized UDP socket in `ns` (drops → udp_buffer event).
fn udp_burst(ns: &Netns) {
    let (rx, tx) = ns
        .run_in(|| {
            Ok((
                UdpSocket::bind(("127.0.0.1", PORT))?,
                UdpSocket::bind(("127.0.0.1", 0))?,
            ))
        })
        .expect("sockets in netns");
    let payload = [0x55u8; 1000];
    for _ in 0..5000 {
        let _ = tx.send_to(&payload, ("127.0.0.1", PORT));
    }
    drop(rx);
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn metrics_over_http_and_textfile() {
    let _g = setup("metrics_over_http_and_textfile");
    let ns = netns("metrics");
    let _guards = [
        SysctlGuard::save("net.ipv4.udp_mem").expect("save udp_mem"),
        SysctlGuard::set("net.core.rmem_max", "16384").expect("set rmem_max"),
        SysctlGuard::set("net.core.rmem_default", "16384").expect("set rmem_default"),
        // The kernel measures BPF run time only while this is set.
        SysctlGuard::set("kernel.bpf_stats_enabled", "1").expect("enable bpf stats"),
    ];
    let dir = temp_dir("metrics");
    let textfile = dir.path().join("bpftune.prom");
    let port = free_port();
    let d = Daemon::start(&[
        "-a",
        "udp_buffer",
        "-a",
        "sysctl",
        "-R",
        "--metrics-listen",
        &format!(":{port}"),
        "--metrics-textfile",
        &textfile.to_string_lossy(),
    ]);
    // ":PORT" listens on loopback only.
    d.expect_log(
        &format!("serving Prometheus metrics on http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(5),
        "metrics listener",
    );
    assert_eq!(
        listeners(port),
        vec![format!("0100007F:{port:04X}")],
        "not loopback-only"
    );

    // Written at start already.
    let first_ino = std::fs::metadata(&textfile)
        .expect("textfile written at start")
        .ino();
    parse(&std::fs::read_to_string(&textfile).expect("read textfile"));

    let before = scrape(port);
    let build = before
        .samples
        .iter()
        .find(|s| s.metric == "bpftune_build_info")
        .expect("build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build.labels.get("git").is_some_and(|g| !g.is_empty()));
    let rmem_default = [
        ("tunable", "net.core.rmem_default"),
        ("netns", "global"),
        ("index", "0"),
    ];
    assert_eq!(
        value(&before, "bpftune_tunable_value", &rmem_default),
        Some(16384.0)
    );
    let changes = [
        ("tuner", "udp_buffer"),
        ("tunable", "net.core.rmem_default"),
        ("ns_kind", "global"),
    ];
    assert_eq!(value(&before, "bpftune_changes_total", &changes), None);
    assert_eq!(
        value(
            &before,
            "bpftune_tuner_state",
            &[("tuner", "udp_buffer"), ("netns", "global"), ("state", "active")]
        ),
        Some(1.0)
    );

    // Drops in the test namespace: udp_buffer raises rmem_default (a global sysctl).
    let until = Instant::now() + Duration::from_secs(20);
    let after = loop {
        udp_burst(&ns);
        std::thread::sleep(Duration::from_millis(300));
        let s = scrape(port);
        if value(&s, "bpftune_changes_total", &changes).is_some() || Instant::now() > until {
            break s;
        }
    };
    let tail = d.tail(30);
    assert!(
        value(&after, "bpftune_changes_total", &changes).is_some_and(|n| n >= 1.0),
        "no change counted:\n{tail}"
    );
    let live: f64 = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .expect("rmem_default")
        .trim()
        .parse()
        .expect("number");
    let reported = value(&after, "bpftune_tunable_value", &rmem_default).expect("rmem_default value");
    assert!(reported > 16384.0, "value did not move: {reported}\n{tail}");
    // Read at scrape time: equal to the live value unless another raise came in between.
    assert!(reported <= live, "reported {reported} > live {live}");
    assert!(
        value(
            &after,
            "bpftune_events_received_total",
            &[("tuner", "udp_buffer")]
        )
        .is_some_and(|n| n >= 1.0),
        "events received"
    );
    assert!(
        value(&after, "bpftune_events_lost_total", &[]).is_some(),
        "lost-event counter"
    );
    assert!(
        value(&after, "bpftune_netns_tracked", &[]).is_some_and(|n| n >= 1.0),
        "test namespace tracked"
    );
    assert_eq!(
        value(
            &after,
            "bpftune_tuner_state",
            &[("tuner", "udp_buffer"), ("netns", ns.name())]
        ),
        Some(1.0),
        "per-namespace state labelled by /run/netns name"
    );
    // The udp_buffer programs ran (bpf_stats_enabled=1), attributed to their tuner.
    let runs: f64 = after
        .samples
        .iter()
        .filter(|s| s.metric == "bpftune_bpf_run_count_total" && s.labels.get("tuner") == Some("udp_buffer"))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(runs >= 1.0, "no BPF run counted for udp_buffer");
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "bpftune_bpf_run_time_seconds_total"
                && s.labels.get("tuner") == Some("udp_buffer")),
        "BPF run time"
    );

    // Exit (-R rolls back): the last textfile write has the final counters, and the
    // file was replaced (rename), not rewritten in place.
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    let text = std::fs::read_to_string(&textfile).expect("textfile at exit");
    let fin = parse(&text);
    assert_ne!(
        std::fs::metadata(&textfile).expect("stat").ino(),
        first_ino,
        "not replaced atomically"
    );
    assert!(value(&fin, "bpftune_changes_total", &changes).is_some_and(|n| n >= 1.0));
    assert!(
        value(&fin, "bpftune_rollback_restores_total", &[]).is_some_and(|n| n >= 1.0),
        "rollback restores at exit:\n{text}"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("bpftune.prom")],
        "temporary file left"
    );
    assert!(listeners(port).is_empty(), "still listening after exit");
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn bad_metrics_flags_exit_1() {
    let _g = setup("bad_metrics_flags_exit_1");
    for bad in ["nonsense", "70000", "host:9100"] {
        let (code, _, err) = run_bpftune(&["--metrics-listen", bad]);
        assert_eq!(code, 1, "--metrics-listen {bad}: {err}");
        assert!(err.contains("--metrics-listen"), "{err}");
    }
    // Valid syntax, but nowhere to write / a port already taken: refused at start.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port().to_string();
    let cases = [
        (
            vec!["--metrics-textfile", "/nonexistent-bpftune-dir/x.prom"],
            "--metrics-textfile",
        ),
        (vec!["--metrics-listen", busy_port.as_str()], "--metrics-listen"),
    ];
    for (args, want) in cases {
        let mut cfg = DaemonConfig::new(BPFTUNE).args(&[&["-a", "udp_buffer"][..], &args[..]].concat());
        cfg.tag = "metrics-bad".into();
        let d = TbDaemon::spawn(cfg).unwrap_or_else(|e| panic!("{e:#}"));
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = d.try_exit_status() {
                break st;
            }
            assert!(
                Instant::now() < until,
                "{args:?}: daemon did not exit:\n{}",
                d.tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(1), "{args:?}:\n{}", d.tail(20));
        assert!(
            d.log().contains(want),
            "{args:?}: no error naming {want}:\n{}",
            d.tail(20)
        );
    }
}

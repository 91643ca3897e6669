use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

use super::serve::route;
use super::*;
use crate::kernel::netns::tests::TempDir;
use crate::model::tunable::sysctl_path;
use crate::record::ledger::tests::{ledger, rec};
use crate::record::stats::NsLabel;

/// Parses exposition text strictly: every line is a comment or a sample the parser
/// understood, and every `# TYPE x counter` family has only `x_total` samples.
pub(crate) fn parse(text: &str) -> Scrape {
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "lines the parser skipped:\n{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for s in &scrape.samples {
        if let Some(c) = counters.iter().find(|c| s.metric.starts_with(**c)) {
            assert_eq!(s.metric, format!("{c}_total"), "counter sample name");
        }
    }
    scrape
}

pub(crate) fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn source(ledger: Ledger, stats: Stats, sysctls: &[(&str, &str)]) -> (TempDir, Source) {
    let t = TempDir::new("metrics");
    for (name, content) in sysctls {
        let p = t.0.join(sysctl_path(name));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    let src = Source {
        ledger: Arc::new(Mutex::new(ledger)),
        stats: Arc::new(stats),
        lost_events: None,
        programs: vec![("demo", "bpftune_estab_buffer_tp")],
        sysctl: ProcSysctl::new(&t.0),
    };
    (t, src)
}

fn ns(name: Option<&str>, ino: u64) -> NsLabel {
    NsLabel {
        name: name.map(String::from),
        ino,
    }
}

#[test]
fn renders_every_metric_family() {
    let mut l = ledger();
    l.record(0, 0, 0, None, rec(true, 1, 6291456, 7864320));
    l.record(0, 0, 0, None, rec(true, 1, 7864320, 9830400));
    l.record(0, 0, 0, None, rec(false, 9, 1310720, 1638400));
    l.record(0, 0, 0, None, rec(false, 77, 100, 200)); // namespace no longer tracked
    let mut note = rec(true, 1, 0, 0);
    note.applied = false; // informational: counted in the summary, not a write
    l.record(0, 0, 0, None, note);
    l.count_proposal(0, 0, 0, false);
    let stats = Stats::default();
    stats.set_namespaces(BTreeMap::from([
        (9, ns(Some("blue"), 4026531999)),
        (12, ns(None, 4026532001)),
    ]));
    stats.set_ns_state(0, 12, NsState::Manual);
    for _ in 0..3 {
        stats.event_received(0);
    }
    stats.event_stale(0);
    stats.rollback_restored();
    stats.write_failed(0, "net.core.high_order_alloc_disable", "EPERM");
    stats.write_failed(0, "net.core.high_order_alloc_disable", "EPERM");
    let (_t, src) = source(l, stats, &[("net.ipv4.tcp_rmem", "4096\t131072\t9830400\n")]);
    let text = src.render().expect("renders");
    let s = parse(&text);

    let v = |m: &str, l: &[(&str, &str)]| value(&s, m, l);
    assert_eq!(
        v("bpftune_build_info", &[("version", VERSION), ("git", GIT)]),
        Some(1.0)
    );
    let change = |kind| {
        v(
            "bpftune_changes_total",
            &[
                ("tuner", "demo"),
                ("tunable", "net.ipv4.tcp_rmem"),
                ("scenario", "need to increase TCP buffer size(s)"),
                ("ns_kind", kind),
            ],
        )
    };
    assert_eq!(
        change("global"),
        Some(2.0),
        "informational records are not writes"
    );
    assert_eq!(change("netns"), Some(2.0));
    assert_eq!(v("bpftune_proposals_total", &[("ns_kind", "netns")]), Some(1.0));
    // Global value read live from the (fake) /proc/sys, one sample per position.
    for (i, want) in [4096.0, 131072.0, 9830400.0].into_iter().enumerate() {
        let idx = i.to_string();
        let labels = [
            ("tunable", "net.ipv4.tcp_rmem"),
            ("netns", "global"),
            ("index", idx.as_str()),
        ];
        assert_eq!(v("bpftune_tunable_value", &labels), Some(want));
    }
    // Per-namespace value: the latest write, labelled by /run/netns name.
    let labels = [
        ("tunable", "net.ipv4.tcp_rmem"),
        ("netns", "blue"),
        ("index", "2"),
    ];
    assert_eq!(v("bpftune_tunable_value", &labels), Some(1638400.0));
    let tunable_ns: std::collections::BTreeSet<&str> = s
        .samples
        .iter()
        .filter(|x| x.metric == "bpftune_tunable_value")
        .filter_map(|x| x.labels.get("netns"))
        .collect();
    assert_eq!(
        tunable_ns,
        ["blue", "global"].into(),
        "untracked namespace (cookie 77) reported:\n{text}"
    );
    let state = |ns, st| {
        v(
            "bpftune_tuner_state",
            &[("tuner", "demo"), ("netns", ns), ("state", st)],
        )
    };
    assert_eq!(state("global", "active"), Some(1.0));
    assert_eq!(state("blue", "active"), Some(1.0));
    assert_eq!(state("ino:4026532001", "manual"), Some(1.0));
    assert_eq!(state("ino:4026532001", "active"), None, "one state per namespace");
    assert_eq!(
        v("bpftune_events_received_total", &[("tuner", "demo")]),
        Some(3.0)
    );
    assert_eq!(v("bpftune_events_stale_total", &[("tuner", "demo")]), Some(1.0));
    assert_eq!(v("bpftune_rollback_restores_total", &[]), Some(1.0));
    assert_eq!(
        v(
            "bpftune_write_failures_total",
            &[
                ("tuner", "demo"),
                ("tunable", "net.core.high_order_alloc_disable"),
                ("errno", "EPERM")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(v("bpftune_netns_tracked", &[]), Some(2.0));
    // No BPF in a unit test: families without samples are left out, not sampled as 0.
    assert!(!text.contains("bpftune_bpf_run_count_total"), "{text}");
}

#[test]
fn netns_labels_are_capped() {
    let stats = Stats::default();
    stats.set_namespaces((1..=300u64).map(|c| (c, ns(None, 1000 + c))).collect());
    let labels = netns_labels(&stats.netns_view());
    let mut distinct: std::collections::BTreeSet<&str> = labels.values().map(String::as_str).collect();
    distinct.insert("global");
    assert_eq!(distinct.len(), MAX_NETNS_LABELS);
    assert_eq!(labels.get(&1).map(String::as_str), Some("ino:1001"));
    assert_eq!(labels.get(&300).map(String::as_str), Some(OTHER_NETNS));
    // "other" aggregates: the state gauge counts namespaces.
    let (_t, src) = source(ledger(), stats, &[]);
    let s = parse(&src.render().expect("renders"));
    let other = [("tuner", "demo"), ("netns", OTHER_NETNS), ("state", "active")];
    assert_eq!(value(&s, "bpftune_tuner_state", &other), Some((300 - 254) as f64));
    let netns: std::collections::BTreeSet<&str> =
        s.samples.iter().filter_map(|x| x.labels.get("netns")).collect();
    assert_eq!(netns.len(), MAX_NETNS_LABELS);
}

#[test]
fn program_names_map_to_tuners() {
    let progs = [("demo", "bpftune_estab_buffer_tp"), ("sysctl", "bpftune_sysctl")];
    assert_eq!(
        program_owner(&progs, "bpftune_estab_b"),
        Some(("demo", "bpftune_estab_buffer_tp"))
    );
    assert_eq!(
        program_owner(&progs, "bpftune_sysctl"),
        Some(("sysctl", "bpftune_sysctl"))
    );
    // A short name must match exactly (it was not truncated).
    assert_eq!(program_owner(&progs, "bpftune_est"), None);
}

#[test]
fn listen_addresses() {
    let p = |s: &str| parse_listen(s).map(|a| a.to_string());
    assert_eq!(p("9100"), Ok("127.0.0.1:9100".into()));
    assert_eq!(p(":9100"), Ok("127.0.0.1:9100".into()));
    assert_eq!(p("0.0.0.0:9100"), Ok("0.0.0.0:9100".into()));
    assert_eq!(p("[::1]:9100"), Ok("[::1]:9100".into()));
    for bad in ["", ":", "70000", "host:9100", "1.2.3.4", "::1:9100", "9100x"] {
        assert!(parse_listen(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn routes() {
    assert_eq!(route("GET", "/metrics"), ("200 OK", true));
    assert_eq!(route("GET", "/metrics?name[]=x"), ("200 OK", true));
    assert_eq!(route("HEAD", "/metrics"), ("200 OK", true));
    assert_eq!(route("POST", "/metrics"), ("405 Method Not Allowed", false));
    assert_eq!(route("GET", "/").0, "404 Not Found");
    assert_eq!(route("GET", "/metrics/x").0, "404 Not Found");
}

fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

#[test]
fn http_server() {
    let (_t, src) = source(ledger(), Stats::default(), &[]);
    let config = ExporterConfig {
        listen: Some(parse_listen("0").expect("port 0")),
        ..Default::default()
    };
    let exp = Exporter::start(&config, Arc::new(src)).expect("starts");
    let addr = exp.local_addr().expect("listening");
    assert!(addr.ip().is_loopback());
    let (head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let s = parse(&body);
    assert_eq!(
        value(&s, "bpftune_build_info", &[("version", VERSION)]),
        Some(1.0)
    );
    // The request may arrive in pieces.
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(b"GET /metr").expect("send");
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"ics HTTP/1.0\r\n\r\n").expect("send");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let (head, body) = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{head}");
    assert!(http(addr, b"GET / HTTP/1.1\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 404"));
    assert!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 405"));
    assert!(http(addr, b"\x01\x02 garbage\r\n\r\n")
        .0
        .starts_with("HTTP/1.1 400"));
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(serve::MAX_REQUEST + 100, b'a');
    assert!(http(addr, &huge).0.starts_with("HTTP/1.1 431"));
    // A second exporter on the same port is refused, with the address in the error.
    let again = ExporterConfig {
        listen: Some(addr),
        ..Default::default()
    };
    let (_t2, src2) = source(ledger(), Stats::default(), &[]);
    let err = Exporter::start(&again, Arc::new(src2))
        .err()
        .expect("port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    // Stopping wakes the thread blocked in accept(2).
    let started = Instant::now();
    exp.finish();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn textfile_is_rewritten_atomically_and_survives_a_lost_directory() {
    let t = TempDir::new("metrics-textfile");
    let dir = t.0.join("collector");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.join("bpftune.prom");
    let stats = Arc::new(Stats::default());
    let (_s, mut src) = source(ledger(), Stats::default(), &[]);
    src.stats = stats.clone();
    let config = ExporterConfig {
        textfile: Some(path.clone()),
        interval: Duration::from_millis(20),
        ..Default::default()
    };
    let exp = Exporter::start(&config, Arc::new(src)).expect("starts");
    // Written at start, then rewritten (a new inode each time: rename, not in place).
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    parse(&read());
    let ino = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
    let first = ino(&path);
    stats.event_received(0);
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("rewrite", &|| {
        read().contains("bpftune_events_received_total{tuner=\"demo\"} 1")
    });
    assert_ne!(ino(&path), first, "replaced by rename");
    let leftovers = |d: &std::path::Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    // The directory vanishes: the writer keeps going (logs once) and resumes when it is back.
    std::fs::remove_dir_all(&dir).expect("rmdir");
    std::thread::sleep(Duration::from_millis(100));
    std::fs::create_dir(&dir).expect("mkdir again");
    stats.event_received(0);
    wait_for("rewrite after the directory came back", &|| {
        read().contains("bpftune_events_received_total{tuner=\"demo\"} 2")
    });
    stats.event_received(0);
    exp.finish();
    // The final write at exit has the last counts, and no temporary file is left.
    assert!(read().contains("bpftune_events_received_total{tuner=\"demo\"} 3"));
    parse(&read());
    assert_eq!(leftovers(&dir), 1);
}

#[test]
fn bad_textfile_paths_are_refused() {
    let t = TempDir::new("metrics-badpath");
    for bad in [t.0.join("missing/bpftune.prom"), t.0.clone()] {
        let (_s, src) = source(ledger(), Stats::default(), &[]);
        let config = ExporterConfig {
            textfile: Some(bad.clone()),
            interval: Duration::from_secs(15),
            ..Default::default()
        };
        let err = Exporter::start(&config, Arc::new(src)).err().expect("refused");
        assert!(err.to_string().contains("--metrics-textfile"), "{err}");
    }
}

#[test]
fn atomic_write_replaces() {
    let t = TempDir::new("metrics-atomic");
    let p = t.0.join("x.prom");
    write_atomically(&p, "a\n").expect("write");
    write_atomically(&p, "b\n").expect("rewrite");
    assert_eq!(std::fs::read_to_string(&p).expect("read"), "b\n");
    assert_eq!(
        std::fs::read_dir(&t.0).expect("ls").count(),
        1,
        "temporary file left"
    );
}

/// The lost-event counter is a per-CPU array shared by every BPF object: a scrape
/// reports the sum over CPUs.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn lost_events_sum_over_cpus() {
    if !crate::kernel::netns::tests::is_root("lost_events_sum_over_cpus") {
        return;
    }
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let map = MapHandle::create(MapType::PercpuArray, Some("lost_test"), 4, 8, 1, &opts).expect("create map");
    let cpus = libbpf_rs::num_possible_cpus().expect("possible CPUs");
    let values: Vec<Vec<u8>> = (0..cpus).map(|i| (i as u64 + 1).to_ne_bytes().to_vec()).collect();
    map.update_percpu(&0u32.to_ne_bytes(), &values, MapFlags::ANY)
        .expect("update");
    let (_t, mut src) = source(ledger(), Stats::default(), &[]);
    src.lost_events = Some(map);
    let s = parse(&src.render().expect("renders"));
    let want = (1..=cpus as u64).sum::<u64>() as f64;
    assert_eq!(value(&s, "bpftune_events_lost_total", &[]), Some(want));
}

//! The query interface (`bpftune -q`, `-p PORT`): every query's shape, error replies,
//! and robustness against garbage.

mod common;

use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{global_ints, setup, Daemon};

const QUERIES: [&str; 8] = [
    "help",
    "tuners",
    "tunables",
    "jtunables",
    "summary",
    "status",
    "jstatus",
    "rollback",
];

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn every_query_answers_in_the_documented_shape() {
    let _g = setup("every_query_answers_in_the_documented_shape");
    let d = Daemon::start(&["-R"]);

    let help = d.query_ok("help");
    for q in QUERIES {
        assert!(
            help.lines().any(|l| words(l).first() == Some(&q)),
            "help should list {q}:\n{help}"
        );
    }

    // Every built-in tuner is listed active, and every tunable it manages that this
    // kernel has is listed with its type and value count.
    let tuners = d.query_ok("tuners");
    for name in bpftune::tuners::names() {
        assert!(
            tuners.lines().any(|l| words(l) == [name, "active"]),
            "tuners: {name} active:\n{tuners}"
        );
    }

    let tunables = d.query_ok("tunables");
    for t in bpftune::tuners::all() {
        for desc in t.tunables() {
            let path = format!("/proc/sys/{}", desc.name.replace('.', "/"));
            if !std::path::Path::new(&path).exists() {
                continue;
            }
            assert!(
                tunables
                    .lines()
                    .any(|l| words(l).get(..2) == Some(&[t.name(), desc.name][..])),
                "tunables should list {} {}:\n{tunables}",
                t.name(),
                desc.name
            );
        }
    }
    assert!(
        tunables
            .lines()
            .any(|l| words(l) == ["tcp_buffer", "net.ipv4.tcp_rmem", "integer", "3", "netns"]),
        "tunables should list tcp_buffer net.ipv4.tcp_rmem integer 3 netns:\n{tunables}"
    );

    let live = global_ints("net.ipv4.tcp_rmem");
    let jt = d.query_ok("jtunables");
    let v: serde_json::Value =
        serde_json::from_str(&jt).unwrap_or_else(|e| panic!("jtunables is not JSON ({e}):\n{jt}"));
    let rmem = &v["tcp_buffer"]["net.ipv4.tcp_rmem"];
    assert_eq!(rmem["type"], "integer", "jtunables tcp_rmem: {rmem}");
    assert_eq!(rmem["num_values"], 3, "jtunables tcp_rmem: {rmem}");

    let js = d.query_ok("jstatus");
    let v: serde_json::Value =
        serde_json::from_str(&js).unwrap_or_else(|e| panic!("jstatus is not JSON ({e}):\n{js}"));
    let arr = v["tcp_buffer"]["net.ipv4.tcp_rmem"]
        .as_array()
        .unwrap_or_else(|| panic!("jstatus tcp_rmem is not an array:\n{js}"));
    let vals: Vec<i64> = arr
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("non-integer in {arr:?}")))
        .collect();
    assert_eq!(vals, live, "jstatus tcp_rmem vs /proc/sys/net/ipv4/tcp_rmem");
    assert!(
        v["tcp_buffer"]["net.ipv4.tcp_moderate_rcvbuf"].is_number(),
        "single-valued sysctls are bare numbers:\n{js}"
    );

    let status = d.query_ok("status");
    let want: Vec<String> = ["tcp_buffer".to_string(), "net.ipv4.tcp_rmem".to_string()]
        .into_iter()
        .chain(live.iter().map(i64::to_string))
        .collect();
    assert!(
        status.lines().any(|l| words(l) == want),
        "status should show {want:?}:\n{status}"
    );

    let summary = d.query_ok("summary");
    assert!(
        summary.starts_with("# Summary of changes made across all tuners:"),
        "summary header:\n{summary}"
    );
    let rollback = d.query_ok("rollback");
    assert!(
        rollback
            .starts_with("# Summary of rollback operations needed to restore original state for all tuners:"),
        "rollback header:\n{rollback}"
    );

    // Unknown requests: an error reply listing the supported ones (exit code 0, like C).
    let (code, out) = d.query("frobnicate");
    assert!(
        out.starts_with("unknown request 'frobnicate'; supported requests are:"),
        "unknown query reply (exit {code}):\n{out}"
    );
    assert!(
        out.contains("jstatus"),
        "unknown reply should list the queries:\n{out}"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
}

/// Sends `data` on a raw connection and returns the reply up to the NUL.
fn raw<S: std::io::Read + std::io::Write>(mut s: S, data: &[u8], shut: impl FnOnce(&S)) -> String {
    s.write_all(data).expect("send garbage");
    shut(&s);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn garbage_requests_get_an_error_and_the_daemon_keeps_serving() {
    let _g = setup("garbage_requests_get_an_error_and_the_daemon_keeps_serving");
    let port = free_port();
    let d = Daemon::start(&["-R", "-p", &port.to_string()]);
    let sock = d.run_dir().join("query.sock");

    let text_garbage = vec![b'x'; 10 * 1024];
    let mut bin_garbage = Vec::with_capacity(10 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..10 * 1024 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bin_garbage.push((x >> 16) as u8 | 1); // no NUL terminator anywhere
    }
    for (what, data) in [
        ("10 KB of text", &text_garbage),
        ("10 KB of binary", &bin_garbage),
    ] {
        let s = UnixStream::connect(&sock).expect("connect query.sock");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let reply = raw(s, data, |s| {
            let _ = s.shutdown(Shutdown::Write);
        });
        assert!(
            reply.starts_with("error") || reply.starts_with("unknown request"),
            "{what} on the unix socket: reply {reply:?}"
        );
        let t = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect tcp port");
        t.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let reply = raw(t, data, |s| {
            let _ = s.shutdown(Shutdown::Write);
        });
        assert!(
            reply.starts_with("error") || reply.starts_with("unknown request"),
            "{what} on tcp: reply {reply:?}"
        );
    }
    // A client that connects and says nothing, then one that hangs up at once.
    drop(UnixStream::connect(&sock).expect("connect"));
    drop(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"));

    assert!(d.alive(), "daemon died after garbage:\n{}", d.tail(30));
    let tuners = d.query_ok("tuners");
    assert!(tuners.contains("tcp_buffer"), "tuners after garbage:\n{tuners}");

    // `-p PORT` client: same answer over TCP.
    let (code, out, err) = d.query_full(&["-p", &port.to_string(), "-q", "tuners"]);
    assert_eq!(code, 0, "bpftune -p {port} -q tuners: {err}");
    assert_eq!(out, tuners, "TCP and unix socket answers differ");
    // The port file (C's server-port) names the port.
    let pf = std::fs::read_to_string(d.run_dir().join("server-port")).unwrap_or_default();
    assert_eq!(pf.trim(), port.to_string(), "server-port file");
    // Bound to loopback only (C bound 0.0.0.0).
    assert_eq!(
        listen_addr(port).as_deref(),
        Some("0100007F"),
        "query port must listen on 127.0.0.1 only"
    );

    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
    assert!(!sock.exists(), "query socket left behind after exit");
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Local address (hex, as in /proc/net/tcp) of the listener on `port` in the root netns.
fn listen_addr(port: u16) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, p) = f.get(1)?.split_once(':')?;
        (p == want && f.get(3) == Some(&"0A")).then(|| addr.to_string())
    })
}

/// `bpftune -q jstatus` as an unprivileged user (`nobody`), e.g. C bpftune's PCP agent,
/// which queries as the `pcp` user: the root-only Unix socket refuses it with a clear
/// error; with a daemon started with `-p` it is answered over TCP 127.0.0.1 (the port
/// file is world-readable, as C's is).
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn an_unprivileged_client_is_refused_and_served_over_tcp_with_p() {
    let _g = setup("an_unprivileged_client_is_refused_and_served_over_tcp_with_p");
    let as_nobody = |run_dir: &std::path::Path| {
        // The private run dir sits in a root-only temp dir: let `nobody` reach the port
        // file (the real one, /var/run/bpftune, is 0755 under a 0755 /var/run).
        // Only the test's own directories below the system temp dir are opened up.
        let tmp = std::env::temp_dir();
        assert!(
            run_dir.starts_with(&tmp),
            "run dir {} not under {}",
            run_dir.display(),
            tmp.display()
        );
        let mut dir = run_dir.to_path_buf();
        while let Some(parent) = dir.parent().map(std::path::Path::to_path_buf) {
            if parent == tmp || !parent.starts_with(&tmp) {
                break;
            }
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(md) = std::fs::metadata(&parent) {
                let mode = md.permissions().mode() | 0o011;
                let _ = std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode));
            }
            dir = parent;
        }
        let o = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(common::BPFTUNE)
            .args(["-q", "jstatus"])
            .env("BPFTUNE_RUN_DIR", run_dir)
            .output()
            .expect("run setpriv");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let d = Daemon::start(&["-R"]);
    let (code, out, err) = as_nobody(d.run_dir());
    assert_ne!(code, 0, "nobody was answered on the root-only socket:\n{out}");
    assert!(
        err.contains("queries require root, or a daemon started with -p PORT"),
        "refusal should say why and what helps:\n{err}"
    );
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));

    let port = free_port();
    let d = Daemon::start(&["-R", "-p", &port.to_string()]);
    let (code, out, err) = as_nobody(d.run_dir());
    assert_eq!(code, 0, "nobody with -p: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("jstatus as nobody is not JSON ({e}):\n{out}"));
    assert!(
        v["tcp_buffer"]["net.ipv4.tcp_rmem"].is_array(),
        "jstatus as nobody:\n{out}"
    );
    let (st, log) = d.stop();
    assert!(st.success(), "exit status {st}\n{}", common::tail(&log, 30));
}

/// reliability/reliability.py fuzzes the query server from the query names the daemon's
/// `help` reply lists (`query_names`), not from a copy that drifts (one lacked advice and
/// jadvice): it finds every query of the table, in order.
#[test]
fn reliability_fuzz_derives_every_query_from_help() {
    let help = bpftune::report::query::format::format_help();
    let script = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("reliability", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
print(" ".join(m.query_names(sys.stdin.buffer.read())))
"#;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            concat!(env!("CARGO_MANIFEST_DIR"), "/reliability/reliability.py"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(help.as_bytes()).expect("write help");
        stdin.write_all(b"\0").expect("write NUL");
    }
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "{out:?}");
    let want: Vec<&str> = bpftune::report::query::QUERIES.iter().map(|(q, _)| *q).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.join(" "));
}

//! Query protocol, formats and server round trips.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::format::*;
use super::*;

struct Fake;

impl QueryBackend for Fake {
    fn tuners(&self) -> Vec<TunerRow> {
        vec![
            TunerRow {
                name: "tcp_buffer_tuner".into(),
                state: "active".into(),
                origin: None,
            },
            TunerRow {
                name: "tcp_conn_tuner".into(),
                state: "manual".into(),
                origin: None,
            },
        ]
    }
    fn tunables(&self) -> Vec<TunableRow> {
        let row = |tuner: &str, name: &str, is_string, num_values, is_sysctl| TunableRow {
            tuner: tuner.into(),
            name: name.into(),
            is_string,
            num_values,
            is_sysctl,
            namespaced: name != "net.ipv4.tcp_no_metrics_save",
        };
        vec![
            row("tcp_buffer_tuner", "net.ipv4.tcp_rmem", false, 3, true),
            row("tcp_buffer_tuner", "net.ipv4.tcp_no_metrics_save", false, 1, true),
            row("tcp_conn_tuner", "net.ipv4.tcp_congestion_control", true, 1, true),
            row("tcp_conn_tuner", "cong_\"quoted\"", false, 0, false),
        ]
    }
    fn status(&self) -> Vec<StatusRow> {
        let row = |tuner: &str, name: &str, value| StatusRow {
            tuner: tuner.into(),
            name: name.into(),
            value,
        };
        vec![
            row(
                "tcp_buffer_tuner",
                "net.ipv4.tcp_rmem",
                Some(SysctlValue::Ints(vec![4096, 131072, 6291456])),
            ),
            row("tcp_buffer_tuner", "net.ipv6.conf.all.x", None),
            row(
                "tcp_conn_tuner",
                "net.ipv4.tcp_congestion_control",
                Some(SysctlValue::Str("cubic".into())),
            ),
            row(
                "tcp_buffer_tuner",
                "net.ipv4.tcp_no_metrics_save",
                Some(SysctlValue::Ints(vec![1])),
            ),
        ]
    }
    fn summary(&self) -> String {
        "# Summary of changes made across all tuners:\nSUMMARY\n".into()
    }
    fn changes_json(&self) -> String {
        "[]".to_string()
    }
    fn rollback(&self) -> String {
        "# Summary of rollback operations needed to restore original state for all tuners:\n".into()
    }
    fn advice(&self) -> String {
        "# ADVICE\n".into()
    }
    fn advice_json(&self) -> String {
        "{\"observe\": false, \"namespaces\": []}".into()
    }
}

fn q(req: &str) -> String {
    handle_request(req.as_bytes(), &Fake)
}

fn sp(n: usize) -> String {
    " ".repeat(n)
}

#[test]
fn help_is_right_aligned_20_40() {
    let h = q("help");
    assert_eq!(h.lines().count(), QUERIES.len());
    let first = h.lines().next().expect("line");
    assert_eq!(first, format!("{}help {}list supported queries", sp(16), sp(18)));
    for line in h.lines() {
        assert_eq!(line.len(), 61);
    }
    assert!(h.ends_with('\n'));
}

#[test]
fn tuners_shape() {
    assert_eq!(
        q("tuners"),
        format!(
            "{}tcp_buffer_tuner {}active\n{}tcp_conn_tuner {}manual\n",
            sp(4),
            sp(14),
            sp(6),
            sp(14)
        )
    );
}

#[test]
fn tunables_shape() {
    let t = q("tunables");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        format!(
            "tcp_buffer_tuner {}net.ipv4.tcp_rmem {}integer  3  netns",
            sp(50 - 17),
            sp(1)
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "  tcp_conn_tuner {}net.ipv4.tcp_congestion_control {}string  1  netns",
            sp(50 - 31),
            sp(2)
        )
    );
    assert!(lines[1].ends_with("integer  1 global"), "{}", lines[1]);
    assert!(lines[3].ends_with("integer  0  netns"));
    for l in &lines {
        assert_eq!(l.len(), 16 + 1 + 50 + 1 + 8 + 1 + 2 + 1 + 6);
    }
}

#[test]
fn status_shape() {
    let s = q("status");
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        format!(
            "tcp_buffer_tuner {}net.ipv4.tcp_rmem {}4096 131072 6291456",
            sp(33),
            sp(34 - 19)
        )
    );
    assert!(lines[1].ends_with(&format!("{}-", sp(33))));
    assert!(lines[2].ends_with(&format!("{}\"cubic\"", sp(27))));
    assert!(lines[3].ends_with(&format!("{}1", sp(33))));
    for l in &lines {
        assert_eq!(l.len(), 16 + 1 + 50 + 1 + 34);
    }
}

#[test]
fn summary_and_rollback_verbatim() {
    assert_eq!(q("summary"), Fake.summary());
    assert_eq!(q("rollback"), Fake.rollback());
}

#[test]
fn jtunables_is_valid_json_in_order() {
    let j = q("jtunables");
    let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
    assert_eq!(
        v["tcp_buffer_tuner"]["net.ipv4.tcp_rmem"],
        serde_json::json!({"type": "integer", "num_values": 3})
    );
    assert_eq!(
        v["tcp_conn_tuner"]["net.ipv4.tcp_congestion_control"],
        serde_json::json!({"type": "string", "num_values": 1})
    );
    assert_eq!(
        v["tcp_conn_tuner"]["cong_\"quoted\""]["num_values"],
        serde_json::json!(0)
    );
    let a = j.find("tcp_buffer_tuner").expect("a");
    let b = j.find("tcp_conn_tuner").expect("b");
    assert!(a < b);
    assert!(j.contains("\n\t\"tcp_buffer_tuner\": {\n\t\t\"net.ipv4.tcp_rmem\": "));
}

#[test]
fn jstatus_is_valid_json_with_value_kinds() {
    let j = q("jstatus");
    let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
    let buf = &v["tcp_buffer_tuner"];
    assert_eq!(
        buf["net.ipv4.tcp_rmem"],
        serde_json::json!([4096, 131072, 6291456])
    );
    assert_eq!(buf["net.ipv4.tcp_no_metrics_save"], serde_json::json!(1));
    assert!(buf["net.ipv6.conf.all.x"].is_null());
    assert!(buf
        .as_object()
        .expect("object")
        .contains_key("net.ipv6.conf.all.x"));
    assert_eq!(
        v["tcp_conn_tuner"]["net.ipv4.tcp_congestion_control"],
        serde_json::json!("cubic")
    );
    // Non-consecutive rows of one tuner are grouped together.
    assert_eq!(v.as_object().expect("object").len(), 2);
    assert_eq!(buf.as_object().expect("object").len(), 3);
}

#[test]
fn empty_backend_json_is_valid() {
    let j = format_jstatus(&[]);
    assert_eq!(j, "{\n}\n");
    let _: serde_json::Value = serde_json::from_str(&j).expect("valid");
    let _: serde_json::Value = serde_json::from_str(&format_jtunables(&[])).expect("valid");
}

#[test]
fn prefix_and_terminator_matching() {
    assert_eq!(q("tunersXYZ"), q("tuners"));
    assert_eq!(q("helpme"), q("help"));
    assert_eq!(q("status\n"), q("status"));
    assert_eq!(q("jstatus"), format_jstatus(&Fake.status()));
    assert_eq!(q("tunables"), format_tunables(&Fake.tunables()));
    assert_eq!(handle_request(b"tuners\0garbage", &Fake), q("tuners"));
    assert_eq!(handle_request(b"jtunables\r\n\0", &Fake), q("jtunables"));
    assert_eq!(handle_request(b"rollback  \t", &Fake), q("rollback"));
}

#[test]
fn unknown_request_lists_help() {
    let r = q("foo");
    assert_eq!(
        r,
        format!(
            "unknown request 'foo'; supported requests are:\n{}",
            format_help()
        )
    );
    assert!(q(" tuners").starts_with("unknown request ' tuners'"));
    assert!(q("a\x1bb").starts_with("unknown request 'a\\u{1b}b'"));
}

#[test]
fn too_long_and_malformed() {
    assert_eq!(q(&"a".repeat(81)), ERR_TOO_LONG);
    assert!(q(&"a".repeat(80)).starts_with("unknown request"));
    assert_eq!(handle_request(&[b'x'; READ_MAX], &Fake), ERR_TOO_LONG);
    assert_eq!(handle_request(b"", &Fake), ERR_MALFORMED);
    assert_eq!(handle_request(b"\0", &Fake), ERR_MALFORMED);
    assert_eq!(handle_request(b"  \n", &Fake), ERR_MALFORMED);
    assert_eq!(handle_request(b"\xff\xfetuners", &Fake), ERR_MALFORMED);
    assert_eq!(
        ERR_TOO_LONG,
        format!("error: request too long (max {REQUEST_MAX} bytes)")
    );
}

// ---- server integration ------------------------------------------------------------

fn temp_run_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "bpftune-query-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("mkdir");
    d
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

fn raw_unix(path: &Path, send: &[u8], close_write: bool) -> io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(send)?;
    if close_write {
        s.shutdown(Shutdown::Write)?;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn server_roundtrip_unix_and_tcp() {
    let dir = temp_run_dir();
    let port = free_port();
    let server = QueryServer::start(&dir, Some(port), Arc::new(Fake)).expect("start");
    let sock = socket_path(&dir);
    assert_eq!(server.socket_path(), sock.as_path());
    assert_eq!(server.tcp_port(), Some(port));
    let meta = fs::symlink_metadata(&sock).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(port_file_path(&dir)).expect("port file"),
        format!("{port}\n")
    );

    assert_eq!(client(&dir, None, "tuners").expect("unix"), q("tuners"));
    assert_eq!(client(&dir, Some(port), "jstatus").expect("tcp"), q("jstatus"));
    assert_eq!(client(&dir, None, "bogus").expect("unix"), q("bogus"));

    // Garbage and oversized requests do not hurt the server.
    let r = raw_unix(&sock, &[b'x'; 5000], false).expect("oversized");
    assert_eq!(r, format!("{ERR_TOO_LONG}\0").into_bytes());
    let r = raw_unix(&sock, b"\xff\xfe\x00", false).expect("non-utf8");
    assert_eq!(r, format!("{ERR_MALFORMED}\0").into_bytes());
    let r = raw_unix(&sock, b"", true).expect("empty");
    assert_eq!(r, format!("{ERR_MALFORMED}\0").into_bytes());
    drop(UnixStream::connect(&sock).expect("connect-and-close"));
    let r = raw_unix(&sock, b"status\n", false).expect("newline");
    assert_eq!(r, format!("{}\0", q("status")).into_bytes());
    let r = raw_unix(&sock, b"summary", true).expect("eof-terminated");
    assert_eq!(r, format!("{}\0", q("summary")).into_bytes());
    // Unterminated request, write side left open: answered after the read timeout.
    let t0 = Instant::now();
    let r = raw_unix(&sock, b"tuners", false).expect("unterminated");
    assert_eq!(r, format!("{}\0", q("tuners")).into_bytes());
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    {
        let mut t = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("tcp");
        t.write_all(&[0xffu8; 300]).expect("write");
    }

    // A stuck client (connects, sends nothing) delays the next query by ≤ ~2 s.
    let stuck = UnixStream::connect(&sock).expect("stuck");
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    assert_eq!(client(&dir, None, "help").expect("after stuck"), q("help"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(stuck);

    // A second server on the same run dir is refused while the first runs.
    let err = QueryServer::start(&dir, None, Arc::new(Fake)).expect_err("in use");
    assert!(err.to_string().contains("already listening"), "{err}");

    assert_eq!(client(&dir, Some(port), "tunables").expect("tcp"), q("tunables"));
    server.stop();
    assert!(fs::symlink_metadata(&sock).is_err(), "socket removed");
    assert!(
        fs::symlink_metadata(port_file_path(&dir)).is_err(),
        "port file removed"
    );

    let err = client(&dir, None, "tuners").expect_err("no server");
    let msg = err.to_string();
    assert!(
        msg.starts_with("is bpftune running? could not connect to"),
        "{msg}"
    );
    assert_eq!(
        err.downcast_ref::<ClientError>().and_then(|e| e.raw_os_error()),
        Some(libc::ENOENT)
    );
    let err = client(&dir, Some(port), "tuners").expect_err("no tcp server");
    assert_eq!(
        err.downcast_ref::<ClientError>().and_then(|e| e.raw_os_error()),
        Some(libc::ECONNREFUSED)
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn stale_socket_is_replaced_and_non_socket_refused() {
    let dir = temp_run_dir();
    let sock = socket_path(&dir);
    drop(UnixListener::bind(&sock).expect("stale"));
    assert!(fs::symlink_metadata(&sock).is_ok());
    fs::write(port_file_path(&dir), "1234\n").expect("stale port file");
    let server = QueryServer::start(&dir, None, Arc::new(Fake)).expect("start over stale");
    assert!(server.tcp_port().is_none());
    assert!(fs::symlink_metadata(port_file_path(&dir)).is_err());
    assert_eq!(client(&dir, None, "tuners").expect("query"), q("tuners"));
    server.stop();
    assert!(fs::symlink_metadata(&sock).is_err());

    fs::write(&sock, "not a socket").expect("regular file");
    let err = QueryServer::start(&dir, None, Arc::new(Fake)).expect_err("refuse");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(fs::read_to_string(&sock).expect("kept"), "not a socket");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn ephemeral_port_and_drop_cleans_up() {
    let dir = temp_run_dir();
    let server = QueryServer::start(&dir, Some(0), Arc::new(Fake)).expect("start");
    let port = server.tcp_port().expect("port");
    assert_ne!(port, 0);
    assert_eq!(
        fs::read_to_string(port_file_path(&dir)).expect("port file"),
        format!("{port}\n")
    );
    assert_eq!(client(&dir, Some(port), "help").expect("tcp"), q("help"));
    drop(server);
    assert!(fs::symlink_metadata(socket_path(&dir)).is_err());
    assert!(fs::symlink_metadata(port_file_path(&dir)).is_err());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn client_rejects_nul() {
    let err = client(Path::new("/nonexistent"), None, "tu\0ners").expect_err("nul");
    assert!(err.to_string().contains("NUL"));
}

/// Issue 11 item 6: the C project's PCP agent (`pmdabpftune.python`) reads `jtunables`
/// and `jstatus` (reference §1.3): tuner objects keyed by tuner name, tunables keyed by
/// their sysctl name; a tunable is exactly `{"type", "num_values"}`; a status value is
/// an array (several values), a number (one) or a string. Pinned here so that they stay
/// readable unchanged.
#[test]
fn jtunables_and_jstatus_keep_the_pcp_field_names() {
    let t: serde_json::Value = serde_json::from_str(&q("jtunables")).expect("valid JSON");
    let tuners = t.as_object().expect("object of tuners");
    assert_eq!(
        tuners.keys().collect::<Vec<_>>(),
        ["tcp_buffer_tuner", "tcp_conn_tuner"]
    );
    for (tuner, tunables) in tuners {
        for (name, desc) in tunables.as_object().expect("object of tunables") {
            let keys: Vec<&String> = desc.as_object().expect("tunable object").keys().collect();
            assert_eq!(keys, ["num_values", "type"], "{tuner}/{name}");
            assert!(matches!(desc["type"].as_str(), Some("integer" | "string")));
            assert!(desc["num_values"].is_u64());
        }
    }
    let s: serde_json::Value = serde_json::from_str(&q("jstatus")).expect("valid JSON");
    let buf = s["tcp_buffer_tuner"].as_object().expect("object of sysctls");
    assert_eq!(
        buf.keys().collect::<Vec<_>>(),
        [
            "net.ipv4.tcp_no_metrics_save",
            "net.ipv4.tcp_rmem",
            "net.ipv6.conf.all.x"
        ]
    );
    assert!(buf["net.ipv4.tcp_rmem"].is_array());
    assert!(buf["net.ipv4.tcp_no_metrics_save"].is_i64());
    assert!(buf["net.ipv6.conf.all.x"].is_null());
    assert!(s["tcp_conn_tuner"]["net.ipv4.tcp_congestion_control"].is_string());
}

/// Opens a connection that sends one byte of a request and then stalls (slow loris).
fn loris(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).expect("loris connect");
    s.write_all(b"s").expect("loris write");
    s
}

#[test]
fn slow_clients_do_not_starve_queries_and_over_cap_is_refused_fast() {
    let dir = temp_run_dir();
    let server = QueryServer::start(&dir, None, Arc::new(Fake)).expect("start");
    let sock = socket_path(&dir);

    // MAX_CONNS - 1 stalled clients: a valid query still gets the last slot and answers
    // well before any stalled client's read deadline (IO_TIMEOUT) could free one.
    let mut held: Vec<UnixStream> = (0..MAX_CONNS - 1).map(|_| loris(&sock)).collect();
    let until = Instant::now() + Duration::from_secs(1);
    while server.connections() < MAX_CONNS - 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.connections(), MAX_CONNS - 1);
    let t0 = Instant::now();
    assert_eq!(
        client(&dir, None, "tuners").expect("query beside lorises"),
        q("tuners")
    );
    assert!(t0.elapsed() < IO_TIMEOUT / 2, "query took {:?}", t0.elapsed());

    // The cap is full: one more stalled client, then a new connection is refused at
    // once with the busy reply instead of waiting. (The probe sends nothing: whatever a
    // refused peer sends after the refusal may reset the connection.)
    held.push(loris(&sock));
    while server.connections() < MAX_CONNS && Instant::now() < until + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.connections(), MAX_CONNS);
    let t0 = Instant::now();
    let r = raw_unix(&sock, b"", false).expect("over cap");
    assert_eq!(r, format!("{ERR_BUSY}\0").into_bytes());
    assert!(t0.elapsed() < IO_TIMEOUT / 2, "refusal took {:?}", t0.elapsed());

    // Once the stalled clients leave, every slot is released and queries answer again.
    drop(held);
    let until = Instant::now() + IO_TIMEOUT * 3;
    while server.connections() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), 0);
    assert_eq!(client(&dir, None, "status").expect("after"), q("status"));
    server.stop();
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_query_parses_from_its_name_and_is_in_the_table() {
    assert_eq!(QUERIES.len(), Query::ALL.len());
    for (q, &(name, help)) in Query::ALL.iter().zip(QUERIES) {
        assert_eq!((q.name(), q.help()), (name, help));
        assert_eq!(Query::parse(name), Some(*q));
    }
    assert_eq!(Query::parse("tunersXYZ"), Some(Query::Tuners));
    assert_eq!(Query::parse("nope"), None);
}

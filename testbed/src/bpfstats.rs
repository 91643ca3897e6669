//! BPF run time of a daemon's programs, as the daemon itself exports it: the
//! `bpftune_bpf_run_time_seconds_total` and `bpftune_bpf_run_count_total` counters of
//! its Prometheus metrics (`--metrics-listen`), labelled by tuner and program (the
//! daemon maps kernel program names to tuners; see src/metrics/bpf_stats.rs). The kernel
//! only counts while run-time statistics are on: [`enable_run_time_stats`] turns them on
//! for as long as the returned descriptor is open (`BPF_ENABLE_STATS`, nothing global
//! is written; the kernel undoes it when the descriptor closes, even on a crash).
//!
//! Used by `bpftune-testbed daemon --bpf-stats` (command `bpfstats`, see
//! [`crate::supervise`]) for the benchmarks' per-program figures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// `BPF_ENABLE_STATS` (bpf(2) command 32).
const BPF_ENABLE_STATS: libc::c_long = 32;
/// `BPF_STATS_RUN_TIME`.
const BPF_STATS_RUN_TIME: u32 = 0;

/// Turns the kernel's per-program run-time accounting on while the descriptor is open.
pub fn enable_run_time_stats() -> Result<OwnedFd> {
    // union bpf_attr, member enable_stats { __u32 type; }: 8 bytes are enough, the
    // kernel checks that the rest of what we pass is zero.
    let mut attr = [0u32; 2];
    attr[0] = BPF_STATS_RUN_TIME;
    // SAFETY: bpf(2) reads `size` bytes from `attr`, which is valid and large enough for
    // the duration of the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("bpf(BPF_ENABLE_STATS)");
    }
    let fd = i32::try_from(fd).map_err(|_| anyhow!("bpf(BPF_ENABLE_STATS) returned {fd}"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A loopback TCP port nobody listens on right now (bound to 0, then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `GET /metrics` from `addr`: the body. Retries a refused connection until `timeout`
/// (the exporter starts with the daemon).
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut c = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e).with_context(|| format!("connect to the metrics port {addr}")),
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.set_write_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).context("reading the metrics reply")?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP reply: {:.200}", reply))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics: {:.200}", head);
    }
    Ok(body.to_string())
}

/// One program's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgRun {
    pub tuner: String,
    pub program: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

const RUN_TIME: &str = "bpftune_bpf_run_time_seconds_total";
const RUN_COUNT: &str = "bpftune_bpf_run_count_total";

/// Splits `{k="v",…} value` into labels and value (OpenMetrics text; values may
/// contain `\"`, `\\` and `\n` escapes).
fn labels_and_value(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let mut labels = Vec::new();
    let mut chars = rest.strip_prefix('{')?.chars();
    loop {
        let mut key = String::new();
        loop {
            match chars.next()? {
                '}' if key.is_empty() => {
                    let value = chars.as_str().split_whitespace().next()?.parse().ok()?;
                    return Some((labels, value));
                }
                '=' => break,
                ',' => {}
                c => key.push(c),
            }
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key, val));
    }
}

/// The per-program counters in a metrics scrape, sorted by (tuner, program).
pub fn parse_prog_runs(text: &str) -> Vec<ProgRun> {
    let mut by: std::collections::BTreeMap<(String, String), (u64, u64)> = Default::default();
    for line in text.lines() {
        let (is_time, rest) = if let Some(r) = line.strip_prefix(RUN_TIME) {
            (true, r)
        } else if let Some(r) = line.strip_prefix(RUN_COUNT) {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = labels_and_value(rest) else {
            continue;
        };
        let get = |k: &str| {
            labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let e = by.entry((get("tuner"), get("program"))).or_default();
        if is_time {
            e.0 = (value * 1e9).round() as u64;
        } else {
            e.1 = value.round() as u64;
        }
    }
    by.into_iter()
        .map(|((tuner, program), (run_time_ns, run_cnt))| ProgRun {
            tuner,
            program,
            run_time_ns,
            run_cnt,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_time_and_count_per_program() {
        let text = "# HELP bpftune_bpf_run_time_seconds Time\n\
            # TYPE bpftune_bpf_run_time_seconds counter\n\
            bpftune_bpf_run_time_seconds_total{tuner=\"udp_buffer\",program=\"bpftune_udp_fail_rcv_btf\"} 0.000123456789\n\
            bpftune_bpf_run_time_seconds_total{tuner=\"ip_frag\",program=\"bpftune_frag_drop_btf\"} 1.5e-6\n\
            bpftune_bpf_run_count_total{tuner=\"udp_buffer\",program=\"bpftune_udp_fail_rcv_btf\"} 1000\n\
            bpftune_bpf_run_count_total{tuner=\"ip_frag\",program=\"bpftune_frag_drop_btf\"} 3\n\
            bpftune_events_received_total{tuner=\"ip_frag\"} 9\n\
            # EOF\n";
        let runs = parse_prog_runs(text);
        assert_eq!(
            runs,
            vec![
                ProgRun {
                    tuner: "ip_frag".into(),
                    program: "bpftune_frag_drop_btf".into(),
                    run_time_ns: 1500,
                    run_cnt: 3
                },
                ProgRun {
                    tuner: "udp_buffer".into(),
                    program: "bpftune_udp_fail_rcv_btf".into(),
                    run_time_ns: 123_457,
                    run_cnt: 1000
                },
            ]
        );
    }

    #[test]
    fn label_escapes_and_garbage() {
        let (l, v) = labels_and_value("{a=\"x\\\"y\",b=\"\\\\\"} 2").unwrap_or_default();
        assert_eq!(l, vec![("a".into(), "x\"y".into()), ("b".into(), "\\".into())]);
        assert_eq!(v, 2.0);
        assert!(labels_and_value("{a=x} 1").is_none());
        assert!(labels_and_value("{a=\"x\"}").is_none());
        assert!(parse_prog_runs("bpftune_bpf_run_count_total{tuner=\"t\" 1\n").is_empty());
    }
}

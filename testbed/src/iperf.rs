//! iperf3 client and server helpers.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::Netns;

/// Summary of one `iperf3 -J` client run.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfResult {
    /// `end.sum_received.bits_per_second` (what the receiver got).
    pub received_bps: f64,
    /// `end.sum_sent.bits_per_second`.
    pub sent_bps: f64,
    /// `end.sum_sent.retransmits` (TCP, sender side; 0 if absent).
    pub retransmits: u64,
}

/// Extract the summary from `iperf3 -J` output.
pub fn parse_iperf_json(json: &str) -> Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 output is not valid JSON")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let end = v.get("end").ok_or_else(|| anyhow!("iperf3 JSON has no `end`"))?;
    let bps = |section: &str| -> Result<f64> {
        end.get(section)
            .and_then(|s| s.get("bits_per_second"))
            .and_then(|b| b.as_f64())
            .ok_or_else(|| anyhow!("iperf3 JSON has no end.{section}.bits_per_second"))
    };
    Ok(IperfResult {
        received_bps: bps("sum_received")?,
        sent_bps: bps("sum_sent").unwrap_or(0.0),
        retransmits: end
            .get("sum_sent")
            .and_then(|s| s.get("retransmits"))
            .and_then(|r| r.as_u64())
            .unwrap_or(0),
    })
}

/// Run `iperf3 -c server_addr -p port -t seconds -J [-R] extra…` in
/// `client_ns` and return its summary. Without `-R` the client (in
/// `client_ns`) sends; with it the server sends.
pub fn iperf3_run(
    client_ns: &Netns,
    server_addr: &str,
    port: u16,
    seconds: u32,
    reverse: bool,
    extra_args: &[&str],
) -> Result<IperfResult> {
    let port = port.to_string();
    let secs = seconds.max(1).to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        server_addr,
        "-p",
        &port,
        "-t",
        &secs,
        "-J",
        // Do not hang forever if the path is broken.
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        args.push("-R");
    }
    args.extend_from_slice(extra_args);
    let out = client_ns
        .command(&args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run iperf3 (is it installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse_iperf_json(&stdout) {
        Ok(r) if out.status.success() => Ok(r),
        Ok(_) => bail!(
            "iperf3 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "iperf3 exited with {}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }),
    }
}

/// Throughput in bits/s received by the receiving side of an iperf3 TCP
/// test from `client_ns` to `server_addr:port` (see [`iperf3_run`]).
pub fn iperf3_throughput(
    client_ns: &Netns,
    server_addr: &str,
    port: u16,
    seconds: u32,
    reverse: bool,
) -> Result<f64> {
    Ok(iperf3_run(client_ns, server_addr, port, seconds, reverse, &[])?.received_bps)
}

/// An `iperf3 -s` running in a namespace; killed on drop.
#[derive(Debug)]
pub struct IperfServer {
    child: Child,
    port: u16,
}

impl IperfServer {
    /// Start `iperf3 -s -p port` in `ns` and wait (up to 3 s) until it
    /// listens.
    pub fn start(ns: &Netns, port: u16) -> Result<IperfServer> {
        let p = port.to_string();
        let child = ns
            .command(&["iperf3", "-s", "-p", &p])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf3 -s (is it installed?)")?;
        let mut server = IperfServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("iperf3 -s -p {port} exited early ({status})");
            }
            // A listener on the port that is *our* process (not another
            // server that already held the port).
            let inodes = ns.run_in(|| tcp_listen_inodes(port))?;
            if !inodes.is_empty() && pid_has_socket(server.child.id(), &inodes) {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!("iperf3 -s -p {port} not listening after 3 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id (iperf3 itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Socket inodes of the TCP listeners on `port` in the calling thread's
/// netns (from `/proc/thread-self/net/tcp{,6}`).
pub fn tcp_listen_inodes(port: u16) -> Result<Vec<u64>> {
    let want = format!("{port:04X}");
    let mut out = Vec::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state == "0A" && local.rsplit(':').next() == Some(want.as_str()) {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    Ok(out)
}

/// Whether a TCP socket of the calling thread's netns listens on `port`.
pub fn tcp_listening(port: u16) -> Result<bool> {
    Ok(!tcp_listen_inodes(port)?.is_empty())
}

/// Whether process `pid` has one of the socket `inodes` open.
fn pid_has_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path())
            .ok()
            .and_then(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()
            })
            .is_some_and(|i| inodes.contains(&i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_json() -> Result<()> {
        let j = r#"{"start":{},"intervals":[],"end":{"streams":[],
            "sum_sent":{"bytes":1,"bits_per_second":2.5e9,"retransmits":7},
            "sum_received":{"bytes":1,"bits_per_second":2.4e9}}}"#;
        let r = parse_iperf_json(j)?;
        assert_eq!(r.received_bps, 2.4e9);
        assert_eq!(r.sent_bps, 2.5e9);
        assert_eq!(r.retransmits, 7);
        Ok(())
    }

    #[test]
    fn iperf_json_errors() {
        assert!(parse_iperf_json("").is_err());
        assert!(parse_iperf_json(r#"{"end":{}}"#).is_err());
        let e = parse_iperf_json(r#"{"start":{},"end":{},"error":"unable to connect"}"#);
        assert!(
            format!("{:#}", e.err().map(|e| e.to_string()).unwrap_or_default()).contains("unable to connect")
        );
    }
}

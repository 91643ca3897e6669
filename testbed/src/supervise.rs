//! `bpftune-testbed daemon`: one [`Daemon`] driven over JSON lines, so that scripts
//! (bench/bench.py) use the very harness the Rust tests use instead of their own.
//!
//! stdout, one JSON object per line:
//!
//! ```text
//! {"event":"spawned","pid":P,"spawn_ns":T,"run_dir":D,"state_dir":D,"cgroup":D,"waited_ms":W,"others":[…]}
//! {"event":"log","t_ns":T,"line":"…","ready":false}       every stderr line of the daemon
//! {"event":"reply","cmd":"query jchanges","code":0,"stdout":"…","stderr":"…"}
//! {"event":"reply","cmd":"bpfstats","code":0,"t_ns":T,"progs":[{"tuner":…,"program":…,"run_time_ns":N,"run_cnt":N}],"stdout":"","stderr":""}
//! {"event":"exited","code":0,"signal":null,"restored":[{"sysctl":…,"left":…,"restored":…}]}
//! {"event":"error","message":"…"}
//! ```
//!
//! T are CLOCK_MONOTONIC ns (spawn_ns: just before the daemon was spawned; t_ns: when
//! the line was read). `others` are bpftune daemons still running after the wait.
//!
//! stdin, one command per line: `query WHAT` (`bpftune -q WHAT` against this daemon),
//! `bpfstats` (only with `--bpf-stats`: the daemon's per-program BPF run time and run
//! count so far, from its own metrics, scraped at CLOCK_MONOTONIC `t_ns`; see
//! [`crate::bpfstats`]),
//! `stop` (SIGTERM, ≤ 15 s, then SIGKILL; global restore; cleanup), `kill9`. EOF on
//! stdin (when it is a pipe, socket or terminal), SIGTERM/SIGINT/SIGHUP: `stop`. When the
//! daemon exits by itself: `exited`, cleanup, exit. The process exits after `exited`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::daemon::{Daemon, DaemonConfig, LogLine};

/// Writes one event line to stdout (errors ignored: the reader may be gone, and we
/// still have to stop the daemon).
pub fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Should EOF on stdin end the hold? Only for pipes, sockets and terminals
/// (`</dev/null` in a background job must not).
pub fn stdin_watchable() -> bool {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return true;
    }
    let Ok(fd) = stdin.as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

/// What stdin said.
enum Input {
    Line(String),
    Eof,
    Nothing,
}

/// Line reader on stdin with a timeout (poll), so that signals and the daemon's own
/// exit are noticed.
struct Stdin {
    watch: bool,
    buf: Vec<u8>,
}

impl Stdin {
    fn next(&mut self, timeout: Duration) -> Input {
        if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            return Input::Line(String::from_utf8_lossy(&line).trim().to_string());
        }
        if !self.watch {
            std::thread::sleep(timeout);
            return Input::Nothing;
        }
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let stdin = std::io::stdin();
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => Input::Nothing,
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.contains(PollFlags::POLLNVAL) {
                    self.watch = false;
                    return Input::Nothing;
                }
                let mut chunk = [0u8; 4096];
                match nix::unistd::read(libc::STDIN_FILENO, &mut chunk) {
                    Ok(0) => Input::Eof,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        Input::Nothing
                    }
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => Input::Nothing,
                    Err(_) => Input::Eof,
                }
            }
            Err(_) => {
                self.watch = false;
                Input::Nothing
            }
        }
    }
}

fn exit_event(status: Option<std::process::ExitStatus>, restored: &[(String, String, String)]) -> Value {
    json!({
        "event": "exited",
        "code": status.and_then(|s| s.code()),
        "signal": status.and_then(|s| s.signal()),
        "restored": restored
            .iter()
            .map(|(n, left, back)| json!({"sysctl": n, "left": left, "restored": back}))
            .collect::<Vec<_>>(),
    })
}

/// The `bpfstats` reply: the per-program counters from the daemon's metrics at `metrics`.
fn bpfstats_reply(cmd: &str, metrics: Option<SocketAddr>) -> Value {
    let fail = |why: String| json!({"event": "reply", "cmd": cmd, "code": -1, "stdout": "", "stderr": why});
    let Some(addr) = metrics else {
        return fail("bpfstats needs `bpftune-testbed daemon --bpf-stats`".to_string());
    };
    match crate::bpfstats::scrape(addr, Duration::from_secs(10)) {
        Ok(text) => {
            let t_ns = crate::host::monotonic_ns();
            let progs: Vec<Value> = crate::bpfstats::parse_prog_runs(&text)
                .into_iter()
                .map(|p| {
                    json!({"tuner": p.tuner, "program": p.program, "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt})
                })
                .collect();
            json!({"event": "reply", "cmd": cmd, "code": 0, "t_ns": t_ns, "progs": progs, "stdout": "", "stderr": ""})
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

/// Runs the protocol until the daemon is stopped or exits; `stop` is set by the
/// caller's signal handler. `metrics`: where the daemon serves its metrics (it was
/// started with `--metrics-listen` there), for `bpfstats`.
pub fn run(mut cfg: DaemonConfig, stop: &AtomicBool, metrics: Option<SocketAddr>) -> Result<()> {
    cfg.on_line = Some(Arc::new(|l: &LogLine| {
        emit(&json!({"event": "log", "t_ns": l.t_ns, "line": l.text, "ready": l.ready}));
    }));
    // Hold stdout until "spawned" is out: the reader thread's first lines come after it.
    let out = std::io::stdout().lock();
    let d = match Daemon::spawn(cfg) {
        Ok(d) => d,
        Err(e) => {
            drop(out);
            emit(&json!({"event": "error", "message": format!("{e:#}")}));
            return Err(e);
        }
    };
    let (others, waited) = d.others_at_start();
    let spawned = json!({
        "event": "spawned",
        "pid": d.pid(),
        "spawn_ns": d.spawn_ns(),
        "run_dir": d.run_dir(),
        "state_dir": d.state_dir(),
        "cgroup": d.cgroup_dir(),
        "waited_ms": waited.as_millis() as u64,
        "others": others.iter().map(|o| json!({"pid": o.pid, "cmdline": o.cmdline})).collect::<Vec<_>>(),
    });
    drop(out);
    emit(&spawned);

    let mut input = Stdin {
        watch: stdin_watchable(),
        buf: Vec::new(),
    };
    loop {
        if let Some(st) = d.try_exit_status() {
            // Exited by itself: collect the status, then clean up.
            let exit = d.terminate(Duration::from_secs(1)).ok();
            drop(d);
            emit(&exit_event(exit.map(|e| e.status).or(Some(st)), &[]));
            return Ok(());
        }
        let cmd = if stop.load(Ordering::SeqCst) {
            "stop".to_string()
        } else {
            match input.next(Duration::from_millis(100)) {
                Input::Line(l) => l,
                Input::Eof => "stop".to_string(),
                Input::Nothing => continue,
            }
        };
        let (verb, rest) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
        match verb {
            "" => {}
            "query" => {
                let reply = match d.query(rest.trim()) {
                    Ok(o) => {
                        json!({"event": "reply", "cmd": cmd, "code": o.code, "stdout": o.stdout, "stderr": o.stderr})
                    }
                    Err(e) => {
                        json!({"event": "reply", "cmd": cmd, "code": -1, "stdout": "", "stderr": format!("{e:#}")})
                    }
                };
                emit(&reply);
            }
            "bpfstats" => emit(&bpfstats_reply(&cmd, metrics)),
            "stop" => {
                let ev = match d.terminate(Duration::from_secs(15)) {
                    Ok(exit) => exit_event(Some(exit.status), &exit.restored),
                    Err(e) => {
                        eprintln!("bpftune-testbed: {e:#}");
                        exit_event(None, &[])
                    }
                };
                drop(d);
                emit(&ev);
                return Ok(());
            }
            "kill9" => {
                drop(d.kill9());
                emit(&exit_event(None, &[]));
                return Ok(());
            }
            _ => emit(
                &json!({"event": "error", "message": format!("unknown command {cmd:?} (query WHAT | bpfstats | stop | kill9)")}),
            ),
        }
    }
}

//! Running the daemon the way systemd does (no `-s`, chosen environment, stderr to a file)
//! and listening on datagram sockets the tests bind (NOTIFY_SOCKET, the journal socket).
//! The common harness always passes `-s`, which would bypass the journal.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::common::{temp_dir, TempDir, BPFTUNE};

/// A datagram socket bound in a temp dir; a thread forwards (arrival time, bytes).
pub struct Listener {
    pub path: PathBuf,
    rx: Receiver<(Instant, Vec<u8>)>,
    _dir: TempDir,
}

impl Listener {
    pub fn bind(tag: &str) -> Listener {
        let dir = temp_dir(tag);
        let path = dir.path().join("socket");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        Listener { path, rx, _dir: dir }
    }

    /// The next datagram within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(Instant, Vec<u8>)> {
        match self.rx.recv_timeout(timeout) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Datagrams until one satisfies `pred` (returned last) or `timeout` passes (`None`);
    /// everything received is appended to `seen`.
    pub fn until(
        &self,
        timeout: Duration,
        seen: &mut Vec<(Instant, Vec<u8>)>,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Option<(Instant, Vec<u8>)> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let d = self.next(left)?;
            seen.push(d.clone());
            if pred(&d.1) {
                return Some(d);
            }
        }
    }
}

/// `bpftune -c <tmp>/cgroupv2 <args>` with private run/state dirs, extra environment and
/// stderr written to `<tmp>/stderr`. SIGTERM (then SIGKILL) on drop; after that, every
/// global sysctl it left changed is put back (a daemon without `-R` leaves tcp_conn's
/// start-up addition to `net.ipv4.tcp_allowed_congestion_control`: the systemd tests
/// left "reno bbr cubic" on the host after every CI run).
pub struct SysDaemon {
    child: Option<Child>,
    pub stderr_path: PathBuf,
    dir: TempDir,
    /// Dropped after the daemon has been stopped (fields drop after `Drop::drop`).
    _globals: crate::common::GlobalsGuard,
}

impl SysDaemon {
    /// `env` may use `{JOURNAL_STREAM}`: replaced by `<dev>:<ino>` of the stderr file, as
    /// systemd sets it for a service whose stderr is the journal.
    pub fn spawn(tag: &str, args: &[&str], env: &[(&str, &str)]) -> SysDaemon {
        Self::spawn_bounded(tag, args, env, None)
    }

    /// Like [`SysDaemon::spawn`]; with `bounding`, every capability not in it is dropped
    /// from the bounding set before exec (as systemd's CapabilityBoundingSet= does).
    pub fn spawn_bounded(
        tag: &str,
        args: &[&str],
        env: &[(&str, &str)],
        bounding: Option<Vec<u8>>,
    ) -> SysDaemon {
        let globals = crate::common::GlobalsGuard::take();
        let dir = temp_dir(tag);
        let stderr_path = dir.path().join("stderr");
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let meta = stderr.metadata().expect("stat stderr file");
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        let mut cmd = Command::new(BPFTUNE);
        cmd.arg("-c")
            .arg(dir.path().join("cgroupv2"))
            .args(args)
            .env("BPFTUNE_RUN_DIR", dir.path().join("run"))
            .env("BPFTUNE_STATE_DIR", dir.path().join("state"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v.replace("{JOURNAL_STREAM}", &stream));
        }
        if let Some(keep) = bounding {
            // SAFETY: prctl(PR_CAPBSET_DROP) is async-signal-safe and only changes the
            // child's own bounding set; `keep` is moved into the closure.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    for cap in 0..64u8 {
                        if !keep.contains(&cap) {
                            // EINVAL for numbers past the kernel's last capability.
                            libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn bpftune");
        SysDaemon {
            child: Some(child),
            stderr_path,
            dir,
            _globals: globals,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until stderr contains `pat` (or the daemon died / `timeout`).
    pub fn wait_stderr(&mut self, pat: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.stderr().contains(pat) {
                return true;
            }
            if !self.alive() {
                return self.stderr().contains(pat);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM and wait (15 s, then SIGKILL and panic).
    pub fn terminate(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("daemon already stopped");
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "bpftune did not exit within 15 s of SIGTERM; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for SysDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..300 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fields of a journal datagram (native protocol) or of an sd_notify message
/// (`KEY=value` lines), as (name, value) text pairs.
pub fn fields(data: &[u8]) -> Vec<(String, String)> {
    bpftune::report::journal::decode_entry(data)
        .unwrap_or_else(|e| panic!("undecodable datagram ({e}): {:?}", String::from_utf8_lossy(data)))
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

pub fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

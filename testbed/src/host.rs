//! What else runs on the host: other bpftune daemons (they would tune our namespaces,
//! and their writes look like an administrator's to ours), and the clock both the
//! daemon's change records and our timestamps use.

use std::fs;
use std::time::{Duration, Instant};

use crate::names::pid_alive;

/// CLOCK_MONOTONIC in ns: the clock of the daemon's `event_ts_ns`/`write_ts_ns` and of
/// Python's `time.clock_gettime_ns(time.CLOCK_MONOTONIC)`, so comparable across processes.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// A running `bpftune` daemon (not a one-shot client such as `bpftune -q`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpftuneProcess {
    pub pid: u32,
    pub ppid: u32,
    /// argv joined with spaces.
    pub cmdline: String,
}

/// Whether an argv (without argv[0]) is a one-shot client invocation (query, version,
/// support table, help, libdir) rather than a daemon.
pub fn is_client_invocation<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().map(AsRef::as_ref).any(|a| {
        matches!(
            a,
            "-q" | "--query"
                | "-V"
                | "--version"
                | "-S"
                | "--support"
                | "-h"
                | "--help"
                | "-P"
                | "--print-libdir"
        ) || a.starts_with("--query=")
            || (a.starts_with("-q") && !a.starts_with("--"))
    })
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": fields after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is `ancestor` or one of its descendants (up to 8 levels up).
pub fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..8 {
        if p == ancestor {
            return true;
        }
        match ppid_of(p) {
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// Live bpftune daemons on the host that are not descendants of `not_under` (pass
/// `std::process::id()`: daemons this process started are its own, not "others").
pub fn bpftune_daemons(not_under: u32) -> Vec<BpftuneProcess> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "bpftune" || !pid_alive(pid) || descends_from(pid, not_under) {
            continue;
        }
        let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if is_client_invocation(argv.get(1..).unwrap_or(&[])) {
            continue;
        }
        out.push(BpftuneProcess {
            pid,
            ppid: ppid_of(pid).unwrap_or(0),
            cmdline: argv.join(" "),
        });
    }
    out
}

/// Other bpftune daemons, i.e. not started by this process.
pub fn other_daemons() -> Vec<BpftuneProcess> {
    bpftune_daemons(std::process::id())
}

/// Waits up to `timeout` until no other bpftune daemon runs; returns those still
/// running then (empty: the host is ours). Says once on stderr that it waits.
pub fn wait_for_exclusive_host(timeout: Duration) -> Vec<BpftuneProcess> {
    let deadline = Instant::now() + timeout;
    let mut said = false;
    loop {
        let others = other_daemons();
        if others.is_empty() || Instant::now() >= deadline {
            return others;
        }
        if !said {
            let list: Vec<String> = others
                .iter()
                .map(|o| format!("{} ({})", o.pid, o.cmdline))
                .collect();
            eprintln!(
                "bpftune-testbed: waiting up to {timeout:?} for other bpftune daemons to exit: {}",
                list.join(", ")
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A note if `log` (of our daemon `own`) shows sysctl writes by another bpftune (our
/// own writes are never logged as an administrator's) or another daemon runs now.
pub fn interference(log: &str, own: u32) -> Option<String> {
    let foreign: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("modified sysctl") && l.contains("bpftune'"))
        .take(3)
        .collect();
    let others: Vec<(u32, String)> = other_daemons()
        .into_iter()
        .filter(|o| o.pid != own)
        .map(|o| (o.pid, o.cmdline))
        .collect();
    if foreign.is_empty() && others.is_empty() {
        return None;
    }
    Some(format!(
        "NOTE: another bpftune daemon was active during this test (running now: {others:?}); its writes: {foreign:#?}"
    ))
}

/// Path of the host-wide lock every root test holds while it runs.
pub const HOST_TEST_LOCK: &str = "/run/bpftune-root-tests.lock";

/// Takes the host-wide test lock (blocking): root tests of different test binaries and of
/// different checkouts on one host touch global sysctls and watch every namespace, so
/// they run one at a time. The lock is released when the returned file is dropped (or
/// the process dies), so a killed test never leaves it held.
pub fn host_test_lock() -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_TEST_LOCK)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("flock {HOST_TEST_LOCK}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_not_daemons() {
        for client in [
            &["-q", "status"][..],
            &["-qstatus"],
            &["--query=jchanges"],
            &["-V"],
            &["-S", "-L"],
            &["-h"],
            &["-P"],
        ] {
            assert!(is_client_invocation(client), "{client:?}");
        }
        for daemon in [
            &["-s", "-d", "-c", "/tmp/x"][..],
            &[],
            &["-R", "-p", "1234"],
            &["--stderr"],
        ] {
            assert!(!is_client_invocation(daemon), "{daemon:?}");
        }
    }

    #[test]
    fn own_process_tree() {
        let me = std::process::id();
        assert!(descends_from(me, me));
        assert!(!descends_from(1, me));
        assert!(monotonic_ns() > 0);
    }
}

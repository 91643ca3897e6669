//! One daemon per run directory, and a clean hand-over when one replaces another
//! (issue 20 item 1).
//!
//! `<run_dir>/bpftune.lock` is `flock`ed for the daemon's whole life and released as the
//! very last thing, after its last rollback and state-file write, after its BPF links
//! are closed and its cgroup2 mount is unmounted; a daemon that dies (crash, `kill -9`)
//! loses it with its last fd, so a file left behind blocks nobody. So "the lock is free"
//! means exactly "no predecessor is left that could still touch what we are about to
//! take over". The file holds `<pid> <state>`: `running`
//! from start-up, `stopping` from the moment SIGTERM/SIGINT arrives (written by the
//! signal handler itself, so a busy event loop cannot delay it), `rollback` while
//! `--rollback-now` holds it.
//!
//! A starting daemon that finds the lock taken:
//! * holder `stopping` (or `rollback`): waits for it, at most [`TAKEOVER_WAIT`], said
//!   once in the log, then takes over (the state file it leaves is complete by then);
//! * holder `running` and answering on the query socket: a live daemon; after a short
//!   grace ([`SIGNAL_GRACE`], for a SIGTERM sent just before we started but not yet
//!   delivered) it is refused with the message a second daemon always got
//!   ("another bpftune query server is already listening on …");
//! * holder `running` but not answering (between its lock and its socket, or failing at
//!   start-up): waited for like a stopping one.
//!
//! The file is never removed: a daemon waiting on the old inode while a third one
//! created a new file would give two lock holders.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::report::query::socket_path;

/// Name of the lock file in the run directory.
pub const LOCK_NAME: &str = "bpftune.lock";
/// How long a starting daemon waits for a predecessor to finish stopping.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(30);
/// How long a live holder must stay `running` and answering before it is refused: a
/// SIGTERM sent right before our start (`pkill bpftune; bpftune &`) may not have been
/// delivered yet.
pub const SIGNAL_GRACE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(20);

/// What the lock holder says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopping,
    /// `--rollback-now`.
    Rollback,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopping => "stopping",
            State::Rollback => "rollback",
        }
    }
}

/// `<pid> <state>\n`
fn record(pid: u32, state: State) -> Vec<u8> {
    format!("{pid} {}\n", state.word()).into_bytes()
}

/// Parses a lock file's text; `None` for an empty, torn or foreign text.
pub fn parse(text: &str) -> Option<(u32, State)> {
    let mut w = text.split_whitespace();
    let pid = w.next()?.parse().ok()?;
    let state = match w.next()? {
        "running" => State::Running,
        "stopping" => State::Stopping,
        "rollback" => State::Rollback,
        _ => return None,
    };
    w.next().is_none().then_some((pid, state))
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cannot open lock file {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot lock {path}: {source}")]
    Lock { path: String, source: nix::Error },
    /// A live daemon: the message a second daemon has always been refused with.
    #[error("another bpftune query server is already listening on {socket}")]
    Running { socket: String },
    #[error(
        "the bpftune that is stopping (pid {pid}) has not exited within {} s (it still holds {path}); not starting beside it: wait for it or kill it, then start again",
        .waited.as_secs()
    )]
    StillStopping {
        pid: u32,
        path: String,
        waited: Duration,
    },
    #[error(
        "bpftune (pid {pid}) holds {path} but has not answered on {socket} nor exited within {} s; not starting beside it",
        .waited.as_secs()
    )]
    Unresponsive {
        pid: u32,
        path: String,
        socket: String,
        waited: Duration,
    },
}

/// The predecessor a daemon waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    pub pid: Option<u32>,
    pub waited: Duration,
}

/// The held lock. Dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct Instance {
    lock: Flock<File>,
    path: PathBuf,
    /// Signal actions that write `stopping` into the file; removed before the fd closes.
    hooks: Vec<signal_hook::SigId>,
}

impl Instance {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_state(&self, state: State) -> io::Result<()> {
        // One pwrite at offset 0; `stopping`/`rollback` are longer than `running`, so the
        // new record always covers the old one and no truncation (a moment with an
        // empty file) is needed.
        self.lock.write_all_at(&record(std::process::id(), state), 0)
    }

    /// Marks this daemon `stopping` (idempotent; also done by the signal hooks).
    pub fn mark_stopping(&self) {
        if let Err(e) = self.write_state(State::Stopping) {
            tracing::debug!("cannot mark {} stopping: {e}", self.path.display());
        }
    }

    /// Writes `stopping` into the lock file as soon as `sig` is delivered, from the
    /// signal handler: the event loop may be busy when a successor is started right
    /// after the signal.
    pub fn mark_stopping_on(&mut self, sig: i32) -> io::Result<()> {
        let fd = self.lock.as_raw_fd();
        let bytes = record(std::process::id(), State::Stopping);
        let action = move || {
            // SAFETY: pwrite(2) is async-signal-safe; `fd` stays open while this action
            // is registered (it is unregistered in Drop before the file is closed) and
            // `bytes` is owned by the closure and never reallocated.
            unsafe {
                libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), 0);
            }
        };
        // SAFETY: the action only calls pwrite (async-signal-safe), allocates nothing,
        // takes no lock and does not panic.
        let id = unsafe { signal_hook::low_level::register(sig, action) }?;
        self.hooks.push(id);
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for id in self.hooks.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

fn open(path: &Path) -> Result<File, InstanceError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| InstanceError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// The holder's record, read through our own (unlocked) open file.
fn read_holder(file: &File) -> Option<(u32, State)> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse(std::str::from_utf8(&buf[..n]).ok()?)
}

fn answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Takes the run directory's lock as `state` ([`State::Running`] for the daemon,
/// [`State::Rollback`] for `--rollback-now`), waiting up to `wait` for a predecessor that
/// is stopping (see the module docs). Returns the lock and, if there was one, the
/// predecessor waited for.
pub fn acquire(
    run_dir: &Path,
    state: State,
    wait: Duration,
) -> Result<(Instance, Option<Predecessor>), InstanceError> {
    let path = run_dir.join(LOCK_NAME);
    let shown = path.display().to_string();
    let socket = socket_path(run_dir);
    let t0 = Instant::now();
    let mut file = open(&path)?;
    let mut told = false;
    let mut pid = None;
    // Since when the holder has been seen running and answering, without a break.
    let mut live_since: Option<Instant> = None;
    let lock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
            Err((_, source)) => return Err(InstanceError::Lock { path: shown, source }),
        }
        let holder = read_holder(&file);
        if let Some((p, _)) = holder {
            pid = Some(p);
        }
        let now = Instant::now();
        match holder {
            Some((_, State::Running)) if answers(&socket) => {
                let since = *live_since.get_or_insert(now);
                if now.duration_since(since) >= SIGNAL_GRACE {
                    return Err(InstanceError::Running {
                        socket: socket.display().to_string(),
                    });
                }
            }
            other => {
                live_since = None;
                if !told {
                    told = true;
                    let secs = wait.as_secs();
                    match other {
                        Some((p, State::Stopping)) => tracing::info!(
                            "waiting up to {secs} s for the bpftune that is stopping (pid {p}) to exit"
                        ),
                        Some((p, State::Rollback)) => tracing::info!(
                            "waiting up to {secs} s for bpftune --rollback-now (pid {p}) to finish"
                        ),
                        Some((p, State::Running)) => tracing::info!(
                            "waiting up to {secs} s for bpftune (pid {p}), which holds {shown} but does not answer on {} (starting or stopping)",
                            socket.display()
                        ),
                        None => tracing::info!(
                            "waiting up to {secs} s for the bpftune that holds {shown} to exit"
                        ),
                    }
                }
            }
        }
        let waited = t0.elapsed();
        if waited >= wait {
            let p = pid.unwrap_or(0);
            return Err(match holder {
                Some((_, State::Running)) => InstanceError::Unresponsive {
                    pid: p,
                    path: shown,
                    socket: socket.display().to_string(),
                    waited,
                },
                _ => InstanceError::StillStopping {
                    pid: p,
                    path: shown,
                    waited,
                },
            });
        }
        std::thread::sleep(POLL);
    };
    let instance = Instance {
        lock,
        path,
        hooks: Vec::new(),
    };
    // Ours now: replace whatever the predecessor (or a killed one) left.
    let written = instance
        .lock
        .set_len(0)
        .and_then(|()| instance.write_state(state));
    if let Err(e) = written {
        tracing::warn!("cannot write {}: {e}", instance.path.display());
    }
    let predecessor = told.then(|| Predecessor {
        pid,
        waited: t0.elapsed(),
    });
    Ok((instance, predecessor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixListener;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bpftune-instance-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    /// A holder of the lock (another open file description: flock conflicts with it
    /// even in the same process), saying `text`.
    fn hold(dir: &Path, text: &str) -> Flock<File> {
        let mut f = open(&dir.join(LOCK_NAME)).expect("open");
        f.set_len(0).expect("truncate");
        f.write_all(text.as_bytes()).expect("write");
        Flock::lock(f, FlockArg::LockExclusiveNonblock).expect("lock")
    }

    #[test]
    fn records_parse_and_torn_or_foreign_text_does_not() {
        assert_eq!(parse("42 running\n"), Some((42, State::Running)));
        assert_eq!(parse("42 stopping\n"), Some((42, State::Stopping)));
        assert_eq!(parse("7 rollback\n"), Some((7, State::Rollback)));
        for bad in [
            "",
            "42",
            "42 runn",
            "42 stoppingx",
            "x running",
            "42 running extra",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse(std::str::from_utf8(&record(9, State::Stopping)).expect("utf8")),
            Some((9, State::Stopping))
        );
    }

    #[test]
    fn free_lock_is_taken_and_says_running() {
        let d = temp("free");
        // A file left by a killed daemon (no holder): taken over at once.
        std::fs::write(d.join(LOCK_NAME), "99999 stopping\n").expect("write");
        let (i, pred) = acquire(&d, State::Running, Duration::from_secs(1)).expect("acquire");
        assert_eq!(pred, None);
        let text = std::fs::read_to_string(i.path()).expect("read");
        assert_eq!(parse(&text), Some((std::process::id(), State::Running)));
        i.mark_stopping();
        let text = std::fs::read_to_string(i.path()).expect("read");
        assert_eq!(parse(&text), Some((std::process::id(), State::Stopping)));
        // While held, a second acquire (nobody answers, holder stopping) times out.
        let t0 = Instant::now();
        let e = acquire(&d, State::Running, Duration::from_millis(200)).expect_err("held");
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(matches!(e, InstanceError::StillStopping { .. }), "{e}");
        assert!(e.to_string().contains("has not exited within 0 s"), "{e}");
        drop(i);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stopping_holder_is_waited_for_then_taken_over() {
        let d = temp("stopping");
        let held = hold(&d, "4242 stopping\n");
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let (i, pred) = acquire(&d, State::Running, Duration::from_secs(5)).expect("acquire");
        t.join().expect("join");
        let pred = pred.expect("waited");
        assert_eq!(pred.pid, Some(4242));
        assert!(pred.waited >= Duration::from_millis(250), "{pred:?}");
        let text = std::fs::read_to_string(i.path()).expect("read");
        assert_eq!(parse(&text), Some((std::process::id(), State::Running)));
        drop(i);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn live_holder_answering_on_the_socket_is_refused_after_the_grace() {
        let d = temp("live");
        let _held = hold(&d, "4242 running\n");
        let _listener = UnixListener::bind(socket_path(&d)).expect("bind");
        let t0 = Instant::now();
        let e = acquire(&d, State::Running, Duration::from_secs(5)).expect_err("live");
        assert!(t0.elapsed() >= SIGNAL_GRACE && t0.elapsed() < Duration::from_secs(4));
        assert_eq!(
            e.to_string(),
            format!(
                "another bpftune query server is already listening on {}",
                socket_path(&d).display()
            )
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn holder_marking_itself_stopping_within_the_grace_is_waited_for() {
        let d = temp("grace");
        let held = hold(&d, "4242 running\n");
        let listener = UnixListener::bind(socket_path(&d)).expect("bind");
        let t = std::thread::spawn(move || {
            // A SIGTERM delivered late: `stopping` appears, later the process is gone.
            std::thread::sleep(Duration::from_millis(300));
            held.write_all_at(b"4242 stopping\n", 0).expect("mark");
            std::thread::sleep(Duration::from_millis(300));
            drop(listener);
            drop(held);
        });
        let (_i, pred) = acquire(&d, State::Running, Duration::from_secs(5)).expect("acquire");
        t.join().expect("join");
        assert_eq!(pred.map(|p| p.pid), Some(Some(4242)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn silent_running_holder_is_bounded() {
        let d = temp("silent");
        let _held = hold(&d, "4242 running\n");
        let e = acquire(&d, State::Running, Duration::from_millis(200)).expect_err("silent");
        assert!(matches!(e, InstanceError::Unresponsive { pid: 4242, .. }), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn signal_hook_marks_stopping() {
        let d = temp("signal");
        let (mut i, _) = acquire(&d, State::Running, Duration::from_secs(1)).expect("acquire");
        // SIGUSR2: nothing else in the test binary uses it, and with an action
        // registered it no longer terminates the process.
        i.mark_stopping_on(libc::SIGUSR2).expect("hook");
        // SAFETY: raise(3) has no preconditions; the action registered above handles it.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        let text = std::fs::read_to_string(i.path()).expect("read");
        assert_eq!(parse(&text), Some((std::process::id(), State::Stopping)));
        drop(i);
        let _ = std::fs::remove_dir_all(&d);
    }
}

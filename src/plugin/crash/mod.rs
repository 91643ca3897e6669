//! Crash quarantine: a plugin whose code kills the daemon (SIGSEGV, SIGBUS, SIGILL,
//! SIGFPE, SIGABRT) must not kill it again after systemd restarts it, or the daemon
//! loops. Before each plugin callback the daemon records which plugin file (path, dev,
//! ino, size, mtime) and which callback it enters in a preallocated static buffer
//! ([`Inside`]); a handler for those signals, installed once at start-up ([`start_up`]),
//! writes that record with write(2) to `<state dir>/plugin-crash` (opened at start-up)
//! if the signal came while the buffer was set, then lets the signal kill the process
//! as it would have (systemd still sees the crash). The next start reads the record and
//! adds the file version to `<state dir>/plugin-quarantine` ([`Quarantine`]); that exact
//! version is refused until the file changes.
//!
//! What this does not contain: the crash itself (the daemon still dies once), a plugin
//! that corrupts the daemon's memory and lets it crash later (outside its callback, so
//! not attributed), a hang (systemd's watchdog restarts the daemon), or a crash on
//! another thread.
//!
//! Layout: [`signal`] is the marker and the handler (async-signal-safe), [`record`] the
//! record's text, [`quarantine`] the refused versions; this file starts it all up.

mod quarantine;
mod record;
mod signal;

use std::fs;
use std::os::fd::IntoRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use quarantine::read_small;
pub use quarantine::{Quarantine, Verdict};
pub use record::{parse_record, reason, record_prefix, signal_name, utc, Crash};
pub use signal::{Inside, Suspended};

/// File written by the signal handler.
pub const CRASH_FILE: &str = "plugin-crash";
/// File versions refused because they crashed the daemon.
pub const QUARANTINE_FILE: &str = "plugin-quarantine.json";

/// One version of a plugin file: a replaced or rewritten file is another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// At daemon start-up, before any plugin is loaded: moves a crash record the previous
/// run left into the quarantine, opens a fresh `plugin-crash` for this run's handler and
/// installs the handler. Failures are logged: the daemon runs on, without quarantine.
pub fn start_up(state_dir: &Path) -> Quarantine {
    // The state store creates its directory on its first write; the handler needs its
    // file now. Same mode as the store's.
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
    {
        tracing::warn!("cannot create {}: {e}", state_dir.display());
    }
    let mut q = Quarantine::load(state_dir.join(QUARANTINE_FILE));
    let crash_file = state_dir.join(CRASH_FILE);
    match read_small(&crash_file) {
        Ok(Some(text)) => {
            if let Some(c) = parse_record(&text) {
                tracing::warn!(
                    "the last bpftune run died in plugin '{}' ({} in its {} callback); quarantining that file version",
                    c.path.display(),
                    signal_name(c.signal),
                    c.callback
                );
                q.add(&c);
                // Saved before the record is truncated below: a crash in between must
                // not lose it.
                if let Err(e) = q.save() {
                    tracing::warn!("cannot save the plugin quarantine: {e}");
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read {}: {e}", crash_file.display()),
    }
    let fd = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&crash_file);
    match fd {
        Ok(f) => {
            // Kept open for the life of the process: the handler writes to it.
            signal::set_record_file(f.into_raw_fd());
            if let Err(e) = signal::install() {
                tracing::warn!("plugin crash quarantine unavailable: cannot install the signal handler: {e}");
            }
        }
        Err(e) => tracing::warn!(
            "plugin crash quarantine unavailable: cannot open {}: {e}",
            crash_file.display()
        ),
    }
    q
}

/// A record as the handler writes it, for the tests of every part.
#[cfg(test)]
mod fixture {
    use std::path::Path;

    use super::{record_prefix, signal::tail_lines, FileId};

    pub(super) const ID: FileId = FileId {
        dev: 2049,
        ino: 1234,
        size: 16_000,
        mtime_ns: 1_700_000_000_123_456_789,
    };

    pub(super) fn record(callback: &str, sig: i32, secs: u64) -> String {
        let mut v = record_prefix(Path::new("/usr/lib/bpftune/x_tuner.so"), ID);
        v.extend_from_slice(format!("callback={callback}\n").as_bytes());
        let mut tail = [0u8; 64];
        let n = tail_lines(&mut tail, sig, secs);
        v.extend_from_slice(&tail[..n]);
        String::from_utf8(v).expect("utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{record, ID};
    use super::*;

    #[test]
    fn start_up_moves_a_record_into_the_saved_quarantine() {
        let dir = std::env::temp_dir().join(format!("bpftune-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(CRASH_FILE), record("event", libc::SIGSEGV, 7)).expect("write");
        let q = start_up(&dir);
        let path = Path::new("/usr/lib/bpftune/x_tuner.so");
        assert!(matches!(q.check(path, ID), Verdict::Refuse(_)));
        assert_eq!(
            fs::read(dir.join(CRASH_FILE)).expect("read").len(),
            0,
            "truncated"
        );
        // The next start (no new crash) still refuses it: the quarantine was saved.
        let q = start_up(&dir);
        assert!(matches!(q.check(path, ID), Verdict::Refuse(_)));
        let _ = fs::remove_dir_all(&dir);
    }
}

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

use std::cell::UnsafeCell;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::fd::IntoRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// File written by the signal handler.
pub const CRASH_FILE: &str = "plugin-crash";
/// File versions refused because they crashed the daemon.
pub const QUARANTINE_FILE: &str = "plugin-quarantine.json";
/// First line of a crash record (its format version).
const MAGIC: &str = "bpftune-plugin-crash 1";
/// The record buffer: a path is at most PATH_MAX (4096) bytes, the rest < 200.
const RECORD_MAX: usize = 4096 + 512;
/// Most file versions kept in quarantine (the oldest go first).
const QUARANTINE_MAX: usize = 64;
/// Largest crash or quarantine file read.
const READ_MAX: u64 = 256 << 10;

/// The signals a crashing plugin raises.
const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// One version of a plugin file: a replaced or rewritten file is another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

// ---------------------------------------------------------------------------------------
// The marker: written by the thread that runs plugin callbacks, read by the handler.
// ---------------------------------------------------------------------------------------

/// The record of the callback running now (valid up to `LEN`).
struct RecordBuf(UnsafeCell<[u8; RECORD_MAX]>);
// SAFETY: written only by the thread that owns `OWNER` (compare-exchange from 0), while
// `LEN` is 0; read only by the signal handler on that same thread, after `LEN` (Acquire)
// says how much is valid.
unsafe impl Sync for RecordBuf {}
static RECORD: RecordBuf = RecordBuf(UnsafeCell::new([0; RECORD_MAX]));
/// Valid bytes in `RECORD`; 0 when no plugin code runs.
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Thread id (gettid) of the thread inside a plugin; 0 when none.
static OWNER: AtomicI32 = AtomicI32::new(0);
/// `<state dir>/plugin-crash`, opened at start-up; -1 before.
static FD: AtomicI32 = AtomicI32::new(-1);

/// The signal actions that were in place before ours (Rust's stack-overflow guard for
/// SIGSEGV/SIGBUS, the default otherwise): a fatal signal outside a plugin goes to them.
struct OldActions(UnsafeCell<[libc::sigaction; SIGNALS.len()]>);
// SAFETY: written once in `install` before `INSTALLED` is set (Release) and before our
// handler can run; only read afterwards.
unsafe impl Sync for OldActions {}
// SAFETY: sigaction is plain data; all-zero is a valid (SIG_DFL) value.
static OLD: OldActions = OldActions(UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn gettid() -> i32 {
    // SAFETY: gettid(2) has no preconditions and is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// While alive, the current thread is inside a plugin callback: a fatal signal is
/// recorded against that plugin file. Dropped (cleared) when the callback returns.
#[must_use = "the marker is cleared when this guard is dropped"]
pub struct Inside {
    armed: bool,
}

impl Inside {
    /// Marks the current thread as running `callback` of the plugin whose
    /// [`record_prefix`] is `prefix`. Nested or concurrent use (not expected: plugin
    /// callbacks run on the event-loop thread, one at a time) leaves the first marker.
    pub fn enter(prefix: &[u8], callback: &str) -> Inside {
        let me = gettid();
        if OWNER
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Inside { armed: false };
        }
        const KEY: &[u8] = b"callback=";
        let len = prefix.len() + KEY.len() + callback.len() + 1;
        if prefix.is_empty() || len > RECORD_MAX {
            OWNER.store(0, Ordering::Release);
            return Inside { armed: false };
        }
        // SAFETY: we own the buffer (OWNER is our tid and LEN is 0, so the handler on
        // this thread does not read it while it is being written).
        let buf = unsafe { &mut *RECORD.0.get() };
        let mut n = 0;
        for part in [prefix, KEY, callback.as_bytes(), b"\n"] {
            buf[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        LEN.store(n, Ordering::Release);
        Inside { armed: true }
    }

    /// Back in the daemon's own code for a while (a host call made by the plugin: the
    /// engine, logging): a crash there is the daemon's, not the plugin's.
    pub fn suspend() -> Suspended {
        let me = gettid();
        if OWNER.load(Ordering::Acquire) != me {
            return Suspended { len: 0 };
        }
        Suspended {
            len: LEN.swap(0, Ordering::AcqRel),
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        if self.armed {
            LEN.store(0, Ordering::Release);
            OWNER.store(0, Ordering::Release);
        }
    }
}

/// See [`Inside::suspend`]: restores the marker when dropped.
#[must_use = "the marker is restored when this guard is dropped"]
pub struct Suspended {
    len: usize,
}

impl Drop for Suspended {
    fn drop(&mut self) {
        if self.len != 0 {
            LEN.store(self.len, Ordering::Release);
        }
    }
}

/// The part of a crash record that names the plugin file (built once per load).
/// Empty (no record, so no quarantine) for a path with a newline, which the record's
/// line format cannot carry.
pub fn record_prefix(path: &Path, id: FileId) -> Vec<u8> {
    let p = path.as_os_str().as_bytes();
    if p.contains(&b'\n') {
        return Vec::new();
    }
    let mut v = format!(
        "{MAGIC}\ndev={}\nino={}\nsize={}\nmtime_ns={}\npath=",
        id.dev, id.ino, id.size, id.mtime_ns
    )
    .into_bytes();
    v.extend_from_slice(p);
    v.push(b'\n');
    v
}

/// Writes `n` in decimal into `out`; the number of bytes (async-signal-safe: no
/// allocation, no formatting machinery).
fn put_u64(out: &mut [u8], mut n: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &tmp[i..];
    let k = digits.len().min(out.len());
    out[..k].copy_from_slice(&digits[..k]);
    k
}

/// The handler's last lines, `signal=N\ntime=SECS\n`, into `out` (≥ 64 bytes); the
/// number of bytes. Async-signal-safe.
fn tail_lines(out: &mut [u8; 64], sig: i32, secs: u64) -> usize {
    let mut n = 0;
    for (key, val) in [(&b"signal="[..], sig.max(0) as u64), (&b"time="[..], secs)] {
        out[n..n + key.len()].copy_from_slice(key);
        n += key.len();
        n += put_u64(&mut out[n..], val);
        out[n] = b'\n';
        n += 1;
    }
    n
}

/// write(2) until done or an error (async-signal-safe).
fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes; fd is ours (or write fails).
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r > 0 {
            buf = &buf[r as usize..];
        } else if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// The handler: everything here is async-signal-safe (atomics, write, fsync,
/// clock_gettime, sigaction, raise).
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _uctx: *mut libc::c_void) {
    let len = LEN.load(Ordering::Acquire);
    let fd = FD.load(Ordering::Relaxed);
    if len != 0 && fd >= 0 && OWNER.load(Ordering::Acquire) == gettid() {
        // SAFETY: LEN (Acquire) covers bytes the owner (this very thread, interrupted)
        // wrote before publishing it.
        let rec = unsafe { &(&*RECORD.0.get())[..len.min(RECORD_MAX)] };
        write_all(fd, rec);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let mut tail = [0u8; 64];
        let n = tail_lines(&mut tail, sig, ts.tv_sec.max(0) as u64);
        write_all(fd, &tail[..n]);
        // SAFETY: fsync on our descriptor.
        unsafe { libc::fsync(fd) };
        // SA_RESETHAND made the action SIG_DFL and SA_NODEFER leaves the signal
        // unblocked: raising it kills the process with this signal now.
        // SAFETY: raise(3) is async-signal-safe.
        unsafe { libc::raise(sig) };
        return;
    }
    // Not a plugin's: hand the signal to whoever had it before us.
    if INSTALLED.load(Ordering::Acquire) {
        if let Some(i) = SIGNALS.iter().position(|s| *s == sig) {
            // SAFETY: OLD was written before INSTALLED was set and is only read now.
            let old = unsafe { &(*OLD.0.get())[i] };
            // SAFETY: reinstalling a previously valid action.
            unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
        }
    }
    // SAFETY: info is the kernel's siginfo for this signal (SA_SIGINFO).
    let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
    if sent {
        // kill(2), raise(3), abort(3): send it again, to the old action.
        // SAFETY: raise(3) is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
    // A fault: returning re-executes the faulting instruction, which faults again into
    // the old action.
}

/// Installs the handler for the fatal signals (once), with an alternate signal stack
/// for this thread (the one that runs plugin callbacks) if it has none, so that a
/// plugin that overflows its stack is still recorded.
fn install() -> io::Result<()> {
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: querying the current alternate stack into a zeroed stack_t.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: NULL new stack: query only.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) } == 0 && cur.ss_flags & libc::SS_DISABLE != 0 {
        // Leaked on purpose: the stack must outlive every signal this thread can get.
        let size = 64 << 10;
        let mem: &'static mut [u8] = Vec::leak(vec![0u8; size]);
        let st = libc::stack_t {
            ss_sp: mem.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: st describes leaked memory of `size` bytes.
        if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: OLD is written only here, before INSTALLED is set and before our handler
    // is installed (the handler reads it only once INSTALLED is set).
    let old = unsafe { &mut *OLD.0.get() };
    for (i, sig) in SIGNALS.iter().enumerate() {
        // SAFETY: a zeroed sigaction is valid; fields set below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_fatal as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND | libc::SA_NODEFER;
        // SAFETY: act.sa_mask is a valid sigset_t to clear.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installing a valid action; the old one is saved into OLD.
        if unsafe { libc::sigaction(*sig, &act, &mut old[i]) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Records and the quarantine: plain functions and a small JSON file.
// ---------------------------------------------------------------------------------------

/// A crash record as read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    pub path: PathBuf,
    pub id: FileId,
    pub callback: String,
    pub signal: i32,
    /// Seconds since the epoch.
    pub time: u64,
}

/// Parses a record the handler wrote; `None` for anything incomplete (e.g. the daemon
/// was killed half-way) or not a record.
pub fn parse_record(text: &str) -> Option<Crash> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let (mut dev, mut ino, mut size, mut mtime, mut path, mut cb, mut sig, mut time) =
        (None, None, None, None, None, None, None, None);
    for l in lines {
        let (k, v) = l.split_once('=')?;
        match k {
            "dev" => dev = v.parse().ok(),
            "ino" => ino = v.parse().ok(),
            "size" => size = v.parse().ok(),
            "mtime_ns" => mtime = v.parse().ok(),
            "path" => path = Some(PathBuf::from(v)),
            "callback" => cb = Some(v.to_string()),
            "signal" => sig = v.parse().ok(),
            "time" => time = v.parse().ok(),
            _ => {}
        }
    }
    Some(Crash {
        path: path?,
        id: FileId {
            dev: dev?,
            ino: ino?,
            size: size?,
            mtime_ns: mtime?,
        },
        callback: cb?,
        signal: sig?,
        time: time?,
    })
}

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGABRT => "SIGABRT".into(),
        n => format!("signal {n}"),
    }
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic
/// Gregorian; no time-zone database in a daemon that may run in a scratch image).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The refusal logged for a quarantined file (after `plugin '<path>' `).
pub fn reason(c: &Crash) -> String {
    format!(
        "crashed bpftune ({} in its {} callback) at {}; refusing it until the file changes",
        signal_name(c.signal),
        c.callback,
        utc(c.time)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    id: FileId,
    reason: String,
}

/// What to do with a plugin file, given the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not quarantined.
    Load,
    /// This version crashed the daemon: refuse with this reason.
    Refuse(String),
    /// An earlier version crashed the daemon; this one is another file: try it (and
    /// forget the old version).
    Changed,
}

/// File versions that crashed the daemon, kept in `<state dir>/plugin-quarantine.json`.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// `None`: not persisted (no state dir given, or a test).
    file: Option<PathBuf>,
    entries: Vec<Entry>,
}

impl Quarantine {
    /// The verdict for `path` whose current version is `id`.
    pub fn check(&self, path: &Path, id: FileId) -> Verdict {
        match self.entries.iter().find(|e| e.path == path) {
            None => Verdict::Load,
            Some(e) if e.id == id => Verdict::Refuse(e.reason.clone()),
            Some(_) => Verdict::Changed,
        }
    }

    /// Adds the crashed version in `c` (replacing an older entry for that path).
    pub fn add(&mut self, c: &Crash) {
        self.entries.retain(|e| e.path != c.path);
        self.entries.push(Entry {
            path: c.path.clone(),
            id: c.id,
            reason: reason(c),
        });
        let extra = self.entries.len().saturating_sub(QUARANTINE_MAX);
        self.entries.drain(..extra);
    }

    /// Forgets `path` (its file changed); saves if anything changed.
    pub fn forget(&mut self, path: &Path) {
        let n = self.entries.len();
        self.entries.retain(|e| e.path != path);
        if self.entries.len() != n {
            if let Err(e) = self.save() {
                tracing::warn!("cannot update the plugin quarantine: {e}");
            }
        }
    }

    fn load(file: PathBuf) -> Quarantine {
        let entries = match read_small(&file) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("ignoring the plugin quarantine {}: {e}", file.display());
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("cannot read the plugin quarantine {}: {e}", file.display());
                Vec::new()
            }
        };
        Quarantine {
            file: Some(file),
            entries,
        }
    }

    /// Writes the list atomically (temporary file, fsync, rename), mode 0600.
    fn save(&self) -> io::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let tmp = file.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let text = serde_json::to_string_pretty(&self.entries).map_err(io::Error::other)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)
    }
}

/// Reads a file of at most [`READ_MAX`] bytes, not through a symlink; `None` if absent.
fn read_small(path: &Path) -> io::Result<Option<String>> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(READ_MAX).read_to_string(&mut text)?;
    Ok(Some(text))
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
            let old = FD.swap(f.into_raw_fd(), Ordering::AcqRel);
            if old >= 0 {
                // SAFETY: `old` was ours (an earlier start_up in this process, e.g. a test).
                unsafe { libc::close(old) };
            }
            if let Err(e) = install() {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: FileId = FileId {
        dev: 2049,
        ino: 1234,
        size: 16_000,
        mtime_ns: 1_700_000_000_123_456_789,
    };

    fn record(callback: &str, sig: i32, secs: u64) -> String {
        let mut v = record_prefix(Path::new("/usr/lib/bpftune/x_tuner.so"), ID);
        v.extend_from_slice(format!("callback={callback}\n").as_bytes());
        let mut tail = [0u8; 64];
        let n = tail_lines(&mut tail, sig, secs);
        v.extend_from_slice(&tail[..n]);
        String::from_utf8(v).expect("utf-8")
    }

    #[test]
    fn a_record_round_trips_and_names_signal_callback_and_time() {
        let c = parse_record(&record("event", libc::SIGSEGV, 1_764_293_025)).expect("parsed");
        assert_eq!(c.path, Path::new("/usr/lib/bpftune/x_tuner.so"));
        assert_eq!(c.id, ID);
        assert_eq!(
            reason(&c),
            "crashed bpftune (SIGSEGV in its event callback) at 2025-11-28 01:23:45 UTC; refusing it until the file changes"
        );
    }

    #[test]
    fn incomplete_or_foreign_records_are_ignored() {
        let full = record("tick", libc::SIGABRT, 5);
        // Killed half-way through the write: no signal/time lines.
        let cut = &full[..full.find("signal=").expect("signal line")];
        assert_eq!(parse_record(cut), None);
        assert_eq!(parse_record(""), None);
        assert_eq!(parse_record("something else\npath=/x\n"), None);
        assert!(parse_record(&full).is_some());
    }

    #[test]
    fn a_path_with_a_newline_gets_no_record() {
        assert!(record_prefix(Path::new("/tmp/a\nb/x_tuner.so"), ID).is_empty());
    }

    #[test]
    fn decimal_and_dates() {
        let mut b = [0u8; 20];
        let n = put_u64(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = put_u64(&mut b, u64::MAX);
        assert_eq!(&b[..n], u64::MAX.to_string().as_bytes());
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn quarantine_refuses_that_version_only() {
        let c = parse_record(&record("init", libc::SIGBUS, 0)).expect("parsed");
        let mut q = Quarantine::default();
        assert_eq!(q.check(&c.path, ID), Verdict::Load);
        q.add(&c);
        assert!(
            matches!(q.check(&c.path, ID), Verdict::Refuse(r) if r.contains("SIGBUS in its init callback"))
        );
        let replaced = FileId { ino: 99, ..ID };
        assert_eq!(q.check(&c.path, replaced), Verdict::Changed);
        assert_eq!(q.check(Path::new("/other_tuner.so"), ID), Verdict::Load);
        q.forget(&c.path);
        assert_eq!(q.check(&c.path, ID), Verdict::Load);
    }

    #[test]
    fn quarantine_is_bounded() {
        let mut q = Quarantine::default();
        for i in 0..(QUARANTINE_MAX + 5) {
            let mut c = parse_record(&record("event", libc::SIGSEGV, 0)).expect("parsed");
            c.path = PathBuf::from(format!("/p/{i}_tuner.so"));
            q.add(&c);
        }
        assert_eq!(q.entries.len(), QUARANTINE_MAX);
        assert_eq!(q.check(Path::new("/p/0_tuner.so"), ID), Verdict::Load);
    }

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

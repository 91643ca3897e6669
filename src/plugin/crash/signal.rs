//! The async-signal-safe half: the marker set around every plugin callback
//! ([`Inside`]), the static buffer it fills, and the fatal-signal handler that writes
//! that buffer to the crash file opened at start-up.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// The record buffer: a path is at most PATH_MAX (4096) bytes, the rest < 200.
const RECORD_MAX: usize = 4096 + 512;

/// The signals a crashing plugin raises.
const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

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
    /// [`record_prefix`](super::record_prefix) is `prefix`. Nested or concurrent use
    /// (not expected: plugin callbacks run on the event-loop thread, one at a time)
    /// leaves the first marker.
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

/// Writes `n` in decimal into `out`; the number of bytes (async-signal-safe: no
/// allocation, no formatting machinery).
pub(super) fn put_u64(out: &mut [u8], mut n: u64) -> usize {
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
pub(super) fn tail_lines(out: &mut [u8; 64], sig: i32, secs: u64) -> usize {
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
pub(super) fn install() -> io::Result<()> {
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

/// Makes `fd` (`<state dir>/plugin-crash`) the file the handler writes to, for the life
/// of the process; closes the one an earlier call set.
pub(super) fn set_record_file(fd: RawFd) {
    let old = FD.swap(fd, Ordering::AcqRel);
    if old >= 0 {
        // SAFETY: `old` was ours (an earlier start_up in this process, e.g. a test).
        unsafe { libc::close(old) };
    }
}

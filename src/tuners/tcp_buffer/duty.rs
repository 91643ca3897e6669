//! Duty cycle for the per-`sendmsg` wmem hook.
//!
//! `tcp:tcp_sendmsg_locked` fires once per `sendmsg`; even a program that returns at once
//! costs the tracepoint dispatch (~50–60 ns here), about 0.6 % of a core for a 20 Gbit/s
//! loopback sender — although a sender rarely sits at its `tcp_wmem[2]` limit. So the
//! program is attached only for a [`WINDOW`] at the start of every [`PERIOD`], and
//! continuously for [`ARMED`] after each applied wmem change (a sender at its limit
//! usually needs several +25 % steps). A sender that reaches its limit is therefore seen
//! within `PERIOD - WINDOW` plus the first sampled call of the next window, i.e. under 1 s,
//! at `WINDOW / PERIOD` of the cost while nothing needs tuning.
//!
//! A window is skipped while no TCP memory is in use at all (`/proc/net/sockstat`, global
//! across namespaces, read by the tuner's tick through its environment and handed over
//! with [`DutyCycle::set_memory_in_use`]): a sender at its limit has a full send queue,
//! so it holds TCP memory. An idle host then pays one file read a second instead of an
//! attach and a detach (tracepoint enable/disable patches kernel text).
//!
//! The attachment is a BPF link fd owned by a small thread (libbpf's program objects are
//! not `Send`; a program fd and a link fd are): closing the fd detaches.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys;

/// How long the hook is attached at the start of every period.
pub const WINDOW: Duration = Duration::from_millis(100);
/// One window per period: the bound on how late a sender at its limit is noticed.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Stay attached this long after an applied wmem change.
pub const ARMED: Duration = Duration::from_secs(3);

/// The schedule, as a pure function of time: whether the hook should be attached at
/// `now`, and when to look again. `start` is the start of the first period.
pub fn schedule(now: Instant, start: Instant, armed_until: Option<Instant>) -> (bool, Instant) {
    let since = now.saturating_duration_since(start);
    let periods = since.as_nanos() / PERIOD.as_nanos();
    let period_start = start + PERIOD * u32::try_from(periods).unwrap_or(u32::MAX);
    let window_end = period_start + WINDOW;
    let next_period = period_start + PERIOD;
    let in_window = now < window_end;
    let boundary = if in_window { window_end } else { next_period };
    match armed_until.filter(|&a| a > now) {
        // Armed: attached; look again when the arming runs out (a re-arm wakes us).
        Some(a) => (true, a),
        None => (in_window, boundary),
    }
}

/// Attaches `prog` (tp_btf or fentry: `tp` None; raw_tp: the tracepoint's name) and
/// returns the link fd.
fn attach(prog: &OwnedFd, tp: Option<&CString>) -> io::Result<OwnedFd> {
    let name = tp.map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `name` is null or a NUL-terminated string that outlives the call; `prog`
    // is an open program fd.
    let fd = unsafe { libbpf_sys::bpf_raw_tracepoint_open(name, prog.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh link fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub struct DutyCycle {
    /// Dropping it (disconnecting the channel) stops the thread.
    wake: Option<Sender<()>>,
    armed_until: Arc<Mutex<Option<Instant>>>,
    /// Whether any TCP socket holds memory, as the tuner's last tick saw it (unknown
    /// counts as in use, so a start before the first tick is not skipped).
    memory_in_use: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DutyCycle {
    /// Attaches once (so that a failure shows at start-up, where the daemon can fall back
    /// to another flavour), then hands the link to the duty-cycle thread.
    pub fn start(prog: OwnedFd, tp: Option<&str>) -> io::Result<DutyCycle> {
        let tp = tp
            .map(CString::new)
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let first = attach(&prog, tp.as_ref())?;
        let (wake, rx) = mpsc::channel::<()>();
        let armed_until = Arc::new(Mutex::new(None));
        let armed = armed_until.clone();
        let memory_in_use = Arc::new(AtomicBool::new(true));
        let in_use = memory_in_use.clone();
        let thread = std::thread::Builder::new()
            .name("wmem-duty".into())
            .spawn(move || {
                // Spawned during start-up with all of its capabilities: this thread only
                // needs the BPF ones, and only around re-attaching.
                if let Err(e) = crate::kernel::privs::drop_to_idle() {
                    tracing::debug!("wmem-duty: {e}");
                }
                let start = Instant::now();
                let mut link = Some(first);
                loop {
                    let now = Instant::now();
                    let until = *armed.lock().unwrap_or_else(|e| e.into_inner());
                    let (mut want, mut next) = schedule(now, start, until);
                    let armed = until.is_some_and(|a| a > now);
                    if want && link.is_none() && !armed && !in_use.load(Ordering::Relaxed) {
                        // Nothing can be at its send limit: skip this window.
                        want = false;
                        next = schedule(next, start, None).1;
                    }
                    if want && link.is_none() {
                        let _caps = crate::kernel::privs::raise(crate::kernel::privs::BPF);
                        link = attach(&prog, tp.as_ref())
                            .map_err(|e| tracing::debug!("tcp_buffer: re-attaching the wmem hook: {e}"))
                            .ok();
                    } else if !want {
                        link = None;
                    }
                    match rx.recv_timeout(next.saturating_duration_since(now)) {
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                drop(link);
            })?;
        Ok(DutyCycle {
            wake: Some(wake),
            armed_until,
            memory_in_use,
            thread: Some(thread),
        })
    }

    /// What the tick read from `/proc/net/sockstat`: `None` (unreadable) counts as in use.
    pub fn set_memory_in_use(&self, tcp_mem_pages: Option<i64>) {
        self.memory_in_use
            .store(tcp_mem_pages.is_none_or(|pages| pages > 0), Ordering::Relaxed);
    }

    /// A wmem change was applied: keep the hook attached for [`ARMED`].
    pub fn arm(&self) {
        *self.armed_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + ARMED);
        if let Some(w) = &self.wake {
            let _ = w.send(());
        }
    }
}

impl Drop for DutyCycle {
    /// Stops the thread, which detaches (closes the link) on its way out.
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fraction of time attached over `span`, stepping through the schedule.
    fn attached_fraction(start: Instant, span: Duration, armed: Option<Instant>) -> f64 {
        let mut now = start;
        let mut on = Duration::ZERO;
        while now < start + span {
            let (want, next) = schedule(now, start, armed);
            assert!(next > now, "schedule must move forward");
            let next = next.min(start + span);
            if want {
                on += next - now;
            }
            now = next;
        }
        on.as_secs_f64() / span.as_secs_f64()
    }

    #[test]
    fn attached_one_window_per_period() {
        let t0 = Instant::now();
        let f = attached_fraction(t0, Duration::from_secs(20), None);
        let expect = WINDOW.as_secs_f64() / PERIOD.as_secs_f64();
        assert!((f - expect).abs() < 1e-6, "fraction {f} vs {expect}");
        // Window at the start of each period, then off until the next period.
        assert_eq!(schedule(t0, t0, None), (true, t0 + WINDOW));
        assert_eq!(schedule(t0 + WINDOW, t0, None), (false, t0 + PERIOD));
        assert_eq!(
            schedule(t0 + PERIOD * 7 + WINDOW / 2, t0, None),
            (true, t0 + PERIOD * 7 + WINDOW)
        );
    }

    #[test]
    fn a_sender_at_its_limit_is_seen_within_one_second() {
        let t0 = Instant::now();
        // Whenever a sender reaches its limit, the next attached instant is at most
        // PERIOD - WINDOW away.
        let mut worst = Duration::ZERO;
        for ms in (0..3000).step_by(7) {
            let at = t0 + Duration::from_millis(ms);
            let mut now = at;
            while !schedule(now, t0, None).0 {
                now = schedule(now, t0, None).1;
            }
            worst = worst.max(now - at);
        }
        assert!(worst <= PERIOD - WINDOW, "worst wait {worst:?}");
        assert!(worst < Duration::from_secs(1));
    }

    #[test]
    fn armed_stays_attached_then_falls_back() {
        let t0 = Instant::now();
        let armed = t0 + Duration::from_millis(2500);
        let (want, next) = schedule(t0 + Duration::from_millis(300), t0, Some(armed));
        assert!(want, "armed: attached outside the window too");
        assert_eq!(next, armed, "look again when the arming runs out");
        assert_eq!(schedule(armed, t0, Some(armed)), (false, t0 + PERIOD * 3));
        // The whole armed span is attached.
        let f = attached_fraction(t0, Duration::from_millis(2500), Some(armed));
        assert!((f - 1.0).abs() < 1e-9, "{f}");
    }
}

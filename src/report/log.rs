//! Syslog-level logging on top of the `tracing` macros.
//!
//! Level mapping (syslog priorities, as in C bpftune):
//!
//! | macro             | priority        | shown by default |
//! |-------------------|-----------------|------------------|
//! | `tracing::error!` | `LOG_ERR` (3)     | yes |
//! | `tracing::warn!`  | `LOG_WARNING` (4) | yes |
//! | `tracing::info!`  | `LOG_NOTICE` (5)  | yes — every tuning action, summary and support message |
//! | `tracing::debug!` | `LOG_DEBUG` (7)   | only with `-d` |
//! | `tracing::trace!` | `LOG_DEBUG` (7)   | only with `-d` |
//!
//! The default threshold is NOTICE; [`set_debug`] (or `LogOptions::debug`) switches to
//! DEBUG at run time (debug/trace callsites are re-evaluated on every call, so the switch
//! takes effect immediately).
//!
//! Destinations:
//! * [`Destination::Stderr`]: `bpftune: <message>\n` (a message that already ends in `\n`
//!   is not given a second one).
//! * [`Destination::Syslog`]: when started by systemd with stderr connected to the journal
//!   (`JOURNAL_STREAM` matches fd 2), `<prio>message\n` on stderr (sd-daemon(3) prefix,
//!   parsed by journald); otherwise syslog(3) via `/dev/log` with ident "bpftune", facility
//!   LOG_DAEMON and the PID, messages truncated at 1024 bytes. Unlike C bpftune the message
//!   is passed as an argument to a `"%s"` format, never as the format string. Without a
//!   syslog socket (minimal containers) one notice is printed and stderr is used instead.
//!
//! * [`Sink::JournalNative`]: when stderr is the journal (as above) and the journal's
//!   native socket exists (`/run/systemd/journal/socket`, [`crate::report::journal`]), each
//!   message is one native-protocol datagram with MESSAGE (the same text as on the other
//!   sinks), PRIORITY, SYSLOG_IDENTIFIER=bpftune and the structured fields below. If a send
//!   fails, a notice is printed once and that message (and every later failing one) goes to
//!   stderr with the `<prio>` prefix instead.
//!
//! Message composition: the event's `message` field, followed by every other field as
//! ` key=value` — except the structured fields of [`STRUCTURED_FIELDS`] (`tuner`,
//! `tunable`, `scenario`, `netns`, `netns_cookie`, `old`, `new`), which only the journal
//! gets, as `BPFTUNE_<NAME>` fields (`journalctl BPFTUNE_TUNER=<tuner>`). Span fields
//! are not printed. Logging never panics; write errors are ignored.

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::report::journal::{self, JournalWriter};

/// syslog priorities used by bpftune.
pub const LOG_ERR: u8 = 3;
pub const LOG_WARNING: u8 = 4;
pub const LOG_NOTICE: u8 = 5;
pub const LOG_DEBUG: u8 = 7;

/// syslog(3) messages are truncated to this many bytes (at a char boundary).
pub const SYSLOG_MSG_MAX: usize = 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// journald (when run by systemd) or syslog(3); stderr if neither is available.
    Syslog,
    /// `bpftune: ` prefixed lines on stderr (`-s`, `-q`, `-S`).
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    pub destination: Destination,
    /// Show DEBUG messages (`-d`).
    pub debug: bool,
}

/// Concrete sink actually in use (after resolving [`Destination::Syslog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Sink {
    Stderr = 0,
    Journal = 1,
    Syslog = 2,
    /// journald's native protocol (datagrams with structured fields).
    JournalNative = 3,
}

/// `tracing` field names that are structured data for the journal (`BPFTUNE_<NAME>`)
/// rather than text appended to the message.
pub const STRUCTURED_FIELDS: &[&str] = &[
    "tuner",
    "tunable",
    "scenario",
    "netns",
    "netns_cookie",
    "old",
    "new",
    // On change lines: true in observe mode (a change bpftune would have made).
    "proposed",
];

static DEBUG: AtomicBool = AtomicBool::new(false);
static SINK: AtomicU8 = AtomicU8::new(Sink::Stderr as u8);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
static OPENLOG: OnceLock<()> = OnceLock::new();
static JOURNAL: OnceLock<Option<JournalWriter>> = OnceLock::new();
static JOURNAL_FAILED: AtomicBool = AtomicBool::new(false);

/// Installs the global `tracing` subscriber and selects the destination.
///
/// May be called more than once: later calls only change destination and level (the
/// subscriber itself is installed once). Fails if another global subscriber was already
/// installed by someone else.
pub fn init(opts: &LogOptions) -> anyhow::Result<()> {
    set_debug(opts.debug);
    let sink = resolve_sink(opts.destination);
    SINK.store(sink as u8, Ordering::Relaxed);

    INSTALLED
        .get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(BpftuneLayer);
            tracing::subscriber::set_global_default(subscriber)
                .map_err(|e| format!("cannot install logger: {e}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Switches DEBUG messages on or off at run time.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether DEBUG messages are currently shown.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// The sink currently in use.
pub fn current_sink() -> Sink {
    match SINK.load(Ordering::Relaxed) {
        1 => Sink::Journal,
        2 => Sink::Syslog,
        3 => Sink::JournalNative,
        _ => Sink::Stderr,
    }
}

/// syslog priority of a `tracing` level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => LOG_ERR,
        Level::WARN => LOG_WARNING,
        Level::INFO => LOG_NOTICE,
        _ => LOG_DEBUG,
    }
}

/// A stderr line: `bpftune: <msg>` plus a newline unless `msg` already ends in one.
pub fn format_stderr(msg: &str) -> String {
    let mut s = String::with_capacity(msg.len() + 10);
    s.push_str("bpftune: ");
    s.push_str(msg);
    if !msg.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A journald stream record: every line of `msg` prefixed with `<prio>` (sd-daemon(3)),
/// so that continuation lines of a multi-line message keep the priority too.
pub fn format_journal(prio: u8, msg: &str) -> String {
    let body = msg.strip_suffix('\n').unwrap_or(msg);
    let mut s = String::with_capacity(body.len() + 8);
    for line in body.split('\n') {
        let _ = write!(s, "<{prio}>{line}");
        s.push('\n');
    }
    s
}

/// Truncates `msg` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_at_char_boundary(msg: &str, max: usize) -> &str {
    if msg.len() <= max {
        return msg;
    }
    let mut end = max;
    while end > 0 && !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

fn resolve_sink(dest: Destination) -> Sink {
    match dest {
        Destination::Stderr => Sink::Stderr,
        Destination::Syslog => {
            if stderr_is_journal() {
                // Started by systemd: the native protocol when journald's socket is
                // there (it carries the structured fields), the stream otherwise.
                let path = journal::socket_path();
                let writer = JOURNAL.get_or_init(|| {
                    if std::fs::symlink_metadata(&path).is_err() {
                        return None;
                    }
                    JournalWriter::new(&path).ok()
                });
                if writer.is_some() {
                    Sink::JournalNative
                } else {
                    Sink::Journal
                }
            } else if std::fs::symlink_metadata("/dev/log").is_ok() {
                OPENLOG.get_or_init(|| {
                    // SAFETY: the ident is a 'static C string literal, as openlog(3)
                    // requires (it keeps the pointer); the flags are valid constants.
                    unsafe {
                        libc::openlog(
                            c"bpftune".as_ptr(),
                            libc::LOG_NDELAY | libc::LOG_PID,
                            libc::LOG_DAEMON,
                        )
                    };
                });
                Sink::Syslog
            } else {
                write_stderr("bpftune: no syslog socket (/dev/log); logging to stderr\n");
                Sink::Stderr
            }
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<ino>` for services whose stdout/stderr go to the
/// journal; it only applies if fd 2 is still that stream.
fn stderr_is_journal() -> bool {
    let Ok(val) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = parse_journal_stream(&val) else {
        return false;
    };
    // dev_t/ino_t are u64 on 64-bit Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(libc::STDERR_FILENO) {
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

fn parse_journal_stream(val: &str) -> Option<(u64, u64)> {
    let (dev, ino) = val.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn write_stderr(line: &str) {
    // One write of the whole line under std's stderr lock: lines never interleave.
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
}

fn write_syslog(prio: u8, msg: &str) {
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    let msg = truncate_at_char_boundary(msg, SYSLOG_MSG_MAX);
    let cmsg = match CString::new(msg) {
        Ok(c) => c,
        Err(_) => match CString::new(msg.replace('\0', "\\0")) {
            Ok(c) => c,
            Err(_) => return,
        },
    };
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the
    // call, and the format is the constant "%s" consuming exactly one string argument.
    unsafe { libc::syslog(libc::c_int::from(prio), c"%s".as_ptr(), cmsg.as_ptr()) };
}

/// Emits one already-composed message at `prio` to the current sink, honouring the
/// level threshold. Usable without `tracing` (e.g. for adapters).
pub fn emit(prio: u8, msg: &str) {
    emit_structured(prio, msg, &[]);
}

/// Like [`emit`], with structured journal fields (`(JOURNAL_NAME, value)`); sinks other
/// than the native journal print only `msg`.
pub fn emit_structured(prio: u8, msg: &str, fields: &[(String, String)]) {
    if prio > threshold() {
        return;
    }
    match current_sink() {
        Sink::Stderr => write_stderr(&format_stderr(msg)),
        Sink::Journal => write_stderr(&format_journal(prio, msg)),
        Sink::Syslog => write_syslog(prio, msg),
        Sink::JournalNative => write_journal(prio, msg, fields),
    }
}

fn write_journal(prio: u8, msg: &str, fields: &[(String, String)]) {
    let Some(Some(w)) = JOURNAL.get() else {
        write_stderr(&format_journal(prio, msg));
        return;
    };
    if let Err(e) = w.send(&journal::encode_entry(prio, msg, fields)) {
        if !JOURNAL_FAILED.swap(true, Ordering::Relaxed) {
            write_stderr(&format_journal(
                LOG_WARNING,
                &format!(
                    "cannot send to the journal socket {} ({e}); such messages go to stderr",
                    w.path().display()
                ),
            ));
        }
        write_stderr(&format_journal(prio, msg));
    }
}

/// The journal field name of a structured `tracing` field (`tuner` -> `BPFTUNE_TUNER`), or
/// `None` for a field that is appended to the message text.
pub fn journal_field_name(field: &str) -> Option<String> {
    STRUCTURED_FIELDS
        .contains(&field)
        .then(|| format!("BPFTUNE_{}", field.to_ascii_uppercase()))
}

fn threshold() -> u8 {
    if debug_enabled() {
        LOG_DEBUG
    } else {
        LOG_NOTICE
    }
}

/// The layer: filters by the syslog threshold and writes the composed message.
struct BpftuneLayer;

impl<S: tracing::Subscriber> Layer<S> for BpftuneLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if priority(meta.level()) <= LOG_NOTICE {
            Interest::always()
        } else {
            // Re-checked on every call so that set_debug() works at run time.
            Interest::sometimes()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        priority(meta.level()) <= threshold()
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let prio = priority(event.metadata().level());
        if prio > threshold() {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let structured = std::mem::take(&mut v.structured);
        emit_structured(prio, &v.finish(), &structured);
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
    /// [`STRUCTURED_FIELDS`] as (journal name, value).
    structured: Vec<(String, String)>,
}

impl MessageVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            return self.message;
        }
        let mut msg = self.message;
        while msg.ends_with('\n') {
            msg.pop();
        }
        msg.push_str(&self.fields);
        msg
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if let Some(name) = journal_field_name(field.name()) {
            self.structured.push((name, value.to_string()));
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // fmt::Arguments' Debug is its Display.
            let _ = write!(self.message, "{value:?}");
        } else if let Some(name) = journal_field_name(field.name()) {
            // `%value` fields arrive here; their Debug is the value's Display.
            self.structured.push((name, format!("{value:?}")));
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_prefix_and_single_newline() {
        assert_eq!(format_stderr("hello"), "bpftune: hello\n");
        assert_eq!(format_stderr("hello\n"), "bpftune: hello\n");
        assert_eq!(format_stderr(""), "bpftune: \n");
        assert_eq!(format_stderr("a\nb"), "bpftune: a\nb\n");
    }

    #[test]
    fn journal_prefix() {
        assert_eq!(format_journal(5, "tuned x"), "<5>tuned x\n");
        assert_eq!(format_journal(3, "oops\n"), "<3>oops\n");
        assert_eq!(format_journal(7, "a\nb\n"), "<7>a\n<7>b\n");
        assert_eq!(format_journal(5, ""), "<5>\n");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 5);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
        assert_eq!(truncate_at_char_boundary("abcdef", 3), "abc");
        // 'é' is two bytes: cutting at 2 would split it.
        assert_eq!(truncate_at_char_boundary("aé", 2), "a");
        let long = "é".repeat(1000);
        let t = truncate_at_char_boundary(&long, SYSLOG_MSG_MAX);
        assert!(t.len() <= SYSLOG_MSG_MAX);
        assert_eq!(t.len(), SYSLOG_MSG_MAX);
    }

    #[test]
    fn journal_stream_parsing() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream("812345"), None);
    }

    #[test]
    fn visitor_appends_fields() {
        let v = MessageVisitor {
            message: "changed x\n".into(),
            fields: " netns=3".into(),
            structured: Vec::new(),
        };
        assert_eq!(v.finish(), "changed x netns=3");
        let v = MessageVisitor {
            message: "plain\n".into(),
            fields: String::new(),
            structured: Vec::new(),
        };
        assert_eq!(v.finish(), "plain\n");
    }

    /// Records what the layer would emit, through the same visitor.
    /// (message as printed, structured journal fields) per event.
    type Captured = Vec<(String, Vec<(String, String)>)>;
    struct Capture(std::sync::Arc<std::sync::Mutex<Captured>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut v = MessageVisitor::default();
            event.record(&mut v);
            let structured = std::mem::take(&mut v.structured);
            if let Ok(mut out) = self.0.lock() {
                out.push((v.finish(), structured));
            }
        }
    }

    #[test]
    fn structured_fields_are_kept_out_of_the_message() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sub = tracing_subscriber::registry().with(Capture(out.clone()));
        tracing::subscriber::with_default(sub, || {
            let old = 4096u64;
            tracing::info!(
                tuner = "demo",
                tunable = "net.ipv4.tcp_rmem",
                netns_cookie = 7u64,
                old = %old,
                other = 3,
                "change {}\n",
                "x"
            );
        });
        let out = out.lock().expect("lock");
        let (msg, fields) = &out[0];
        assert_eq!(msg, "change x other=3");
        assert_eq!(
            fields,
            &vec![
                ("BPFTUNE_TUNER".to_string(), "demo".to_string()),
                ("BPFTUNE_TUNABLE".to_string(), "net.ipv4.tcp_rmem".to_string()),
                ("BPFTUNE_NETNS_COOKIE".to_string(), "7".to_string()),
                ("BPFTUNE_OLD".to_string(), "4096".to_string()),
            ]
        );
        assert_eq!(journal_field_name("x"), None);
    }

    #[test]
    fn init_twice_and_log_does_not_panic() {
        let opts = LogOptions {
            destination: Destination::Stderr,
            debug: false,
        };
        init(&opts).expect("first init");
        init(&LogOptions { debug: true, ..opts }).expect("re-init");
        assert!(debug_enabled());
        tracing::info!("log test {}", 1);
        tracing::debug!(x = 5, "debug line with field");
        set_debug(false);
        tracing::debug!("hidden");
        assert_eq!(current_sink(), Sink::Stderr);
    }
}

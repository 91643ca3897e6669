//! Crash records as text: the prefix built once per plugin load (the handler appends
//! the callback, signal and time), and their parsing and wording at the next start.

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::FileId;

/// First line of a crash record (its format version).
const MAGIC: &str = "bpftune-plugin-crash 1";

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

#[cfg(test)]
mod tests {
    use super::super::fixture::{record, ID};
    use super::super::signal::put_u64;
    use super::*;

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
}

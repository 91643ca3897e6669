//! The systemd journal's native protocol (systemd.journal-fields(7), "Native Journal
//! Protocol"): one datagram per entry to `/run/systemd/journal/socket`, each field either
//! `NAME=value\n` or, when the value contains a newline (or is not text), the binary-safe
//! form `NAME\n<u64 little-endian length><value>\n`.
//!
//! Written here rather than taken from `tracing-journald`: that crate maps `INFO` to
//! priority 6 and prefixes/renames fields by its own rules, while bpftune keeps the syslog
//! priorities of C bpftune (`INFO` is NOTICE, 5), the reference's MESSAGE text unchanged
//! and its own `BPFTUNE_*` field names — and the protocol is a few lines.
//!
//! `BPFTUNE_JOURNAL_SOCKET` overrides the socket path; it exists for tests only (they bind
//! a datagram socket of their own and read what the daemon sends).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald listens for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Test-only override of [`JOURNAL_SOCKET`].
pub const JOURNAL_SOCKET_ENV: &str = "BPFTUNE_JOURNAL_SOCKET";
/// `SYSLOG_IDENTIFIER` of every entry (`journalctl -t bpftune`).
pub const IDENTIFIER: &str = "bpftune";

/// The journal socket path in use: the test override or the system's.
pub fn socket_path() -> PathBuf {
    std::env::var_os(JOURNAL_SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET))
}

/// Whether a field name is valid for journald: `[A-Z0-9_]`, not starting with `_` (those
/// are trusted fields journald sets itself), at most 64 characters.
pub fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Appends one field to a datagram under construction. Invalid names are skipped (journald
/// would drop the whole entry).
pub fn push_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    if !valid_field_name(name) {
        return;
    }
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// One complete entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then `extra` in order.
pub fn encode_entry(prio: u8, message: &str, extra: &[(String, String)]) -> Vec<u8> {
    let message = message.strip_suffix('\n').unwrap_or(message);
    let mut buf = Vec::with_capacity(message.len() + 64 + extra.len() * 32);
    push_field(&mut buf, "MESSAGE", message.as_bytes());
    push_field(&mut buf, "PRIORITY", prio.to_string().as_bytes());
    push_field(&mut buf, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
    for (name, value) in extra {
        push_field(&mut buf, name, value.as_bytes());
    }
    buf
}

/// Decodes a datagram back into (name, value) pairs, in order. For tests and tools: the
/// daemon only writes.
pub fn decode_entry(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let nl = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("field without terminating newline")?;
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            out.push((name, line[eq + 1..].to_vec()));
            data = &data[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len_bytes: [u8; 8] = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or("binary field without length")?;
            let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| "length overflow")?;
            let value = rest
                .get(8..8 + len)
                .ok_or("binary field shorter than its length")?;
            if rest.get(8 + len) != Some(&b'\n') {
                return Err("binary field not followed by a newline".into());
            }
            out.push((name, value.to_vec()));
            data = &rest[8 + len + 1..];
        }
    }
    Ok(out)
}

/// An unbound datagram socket that sends entries to the journal.
#[derive(Debug)]
pub struct JournalWriter {
    sock: UnixDatagram,
    path: PathBuf,
}

impl JournalWriter {
    pub fn new(path: &Path) -> io::Result<JournalWriter> {
        Ok(JournalWriter {
            sock: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one entry. Entries too large for one datagram (journald would need a memfd;
    /// bpftune's are a few hundred bytes) fail with EMSGSIZE and go to the fallback.
    pub fn send(&self, entry: &[u8]) -> io::Result<()> {
        let n = self.sock.send_to(entry, &self.path)?;
        if n != entry.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(data: &[u8]) -> Vec<(String, String)> {
        decode_entry(data)
            .expect("decodes")
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).expect("utf8")))
            .collect()
    }

    #[test]
    fn simple_fields_use_the_text_form() {
        let e = encode_entry(5, "hello world\n", &[("BPFTUNE_TUNER".into(), "demo".into())]);
        assert_eq!(
            e,
            b"MESSAGE=hello world\nPRIORITY=5\nSYSLOG_IDENTIFIER=bpftune\nBPFTUNE_TUNER=demo\n"
        );
    }

    #[test]
    fn multi_line_values_use_the_binary_form_and_round_trip() {
        let e = encode_entry(
            3,
            "line one\nline two",
            &[("BPFTUNE_OLD".into(), "a=b\nc".into())],
        );
        let mut expect = b"MESSAGE\n".to_vec();
        expect.extend_from_slice(&17u64.to_le_bytes());
        expect.extend_from_slice(b"line one\nline two\n");
        assert!(e.starts_with(&expect), "{e:?}");
        assert_eq!(
            fields(&e),
            vec![
                ("MESSAGE".into(), "line one\nline two".into()),
                ("PRIORITY".into(), "3".into()),
                ("SYSLOG_IDENTIFIER".into(), "bpftune".into()),
                ("BPFTUNE_OLD".into(), "a=b\nc".into()),
            ]
        );
    }

    #[test]
    fn values_with_equals_signs_stay_in_the_text_form() {
        let e = encode_entry(5, "x=1 y=2", &[]);
        assert_eq!(fields(&e)[0], ("MESSAGE".into(), "x=1 y=2".into()));
    }

    #[test]
    fn invalid_field_names_are_skipped() {
        assert!(valid_field_name("BPFTUNE_NETNS"));
        assert!(!valid_field_name("_PID"));
        assert!(!valid_field_name("lower"));
        assert!(!valid_field_name("1ABC"));
        assert!(!valid_field_name(""));
        assert!(!valid_field_name(&"A".repeat(65)));
        let e = encode_entry(
            5,
            "m",
            &[("_PID".into(), "1".into()), ("bad name".into(), "x".into())],
        );
        assert_eq!(fields(&e).len(), 3);
    }

    #[test]
    fn truncated_binary_fields_are_rejected() {
        let mut e = b"MESSAGE\n".to_vec();
        e.extend_from_slice(&100u64.to_le_bytes());
        e.extend_from_slice(b"short\n");
        assert!(decode_entry(&e).is_err());
        assert!(decode_entry(b"NO_NEWLINE=x").is_err());
    }

    #[test]
    fn writer_sends_datagrams_to_a_bound_socket() {
        let dir = std::env::temp_dir().join(format!("bpftune-journal-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        let w = JournalWriter::new(&path).expect("writer");
        w.send(&encode_entry(5, "ping", &[])).expect("send");
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(fields(&buf[..n])[0], ("MESSAGE".into(), "ping".into()));
        drop(rx);
        let _ = std::fs::remove_file(&path);
        // Nobody listening any more: the send fails (the logger then falls back to stderr).
        assert!(w.send(b"MESSAGE=x\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

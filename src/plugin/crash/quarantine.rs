//! The quarantine: file versions that crashed the daemon, in a small JSON file.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{reason, Crash, FileId};

/// Most file versions kept in quarantine (the oldest go first).
const QUARANTINE_MAX: usize = 64;
/// Largest crash or quarantine file read.
const READ_MAX: u64 = 256 << 10;

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

    pub(super) fn load(file: PathBuf) -> Quarantine {
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
    pub(super) fn save(&self) -> io::Result<()> {
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
pub(super) fn read_small(path: &Path) -> io::Result<Option<String>> {
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

#[cfg(test)]
mod tests {
    use super::super::fixture::{record, ID};
    use super::super::parse_record;
    use super::*;

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
}

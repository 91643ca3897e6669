//! Persisted original values: before bpftune first changes a sysctl in a namespace,
//! the value it found is written atomically (temp file, fsync, rename) to
//! `<state_dir>/originals.json`, so a restart with `-R` after `kill -9` can still
//! restore it. Entries carry the value bpftune last wrote: rollback only restores a
//! sysctl whose live value is still ours, never one an administrator changed since.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::tunable::SysctlValue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub sysctl: String,
    pub netns_cookie: u64,
    pub netns_ino: u64,
    pub global: bool,
    pub original: SysctlValue,
    pub last_written: SysctlValue,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    boot_id: String,
    pid: u32,
    entries: Vec<Entry>,
}

/// The persisted originals of this boot.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    file: File,
}

/// `/proc/sys/kernel/random/boot_id`: originals from another boot are meaningless
/// (sysctls reset at boot, netns cookies are per boot).
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl StateStore {
    /// Opens (or starts) the store in `dir`. Returns the store and how many entries an
    /// earlier run of this boot left behind (pid of that run).
    pub fn open(dir: &Path, boot: &str) -> (StateStore, Option<(usize, u32)>) {
        let path = dir.join("originals.json");
        let mut inherited = None;
        let mut file = File {
            boot_id: boot.to_string(),
            pid: std::process::id(),
            entries: Vec::new(),
        };
        if let Ok(text) = fs::read_to_string(&path) {
            match serde_json::from_str::<File>(&text) {
                Ok(old) if old.boot_id == boot && !old.entries.is_empty() => {
                    inherited = Some((old.entries.len(), old.pid));
                    file.entries = old.entries;
                }
                Ok(_) => tracing::debug!("ignoring {}: written in another boot", path.display()),
                Err(e) => tracing::warn!("ignoring unreadable {}: {e}", path.display()),
            }
        }
        (StateStore { path, file }, inherited)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[Entry] {
        &self.file.entries
    }

    pub fn original(&self, cookie: u64, sysctl: &str) -> Option<&SysctlValue> {
        self.file
            .entries
            .iter()
            .find(|e| e.netns_cookie == cookie && e.sysctl == sysctl)
            .map(|e| &e.original)
    }

    /// Call before writing `new` over `live`: keeps the first original, notes the new
    /// value and persists. Returns the original.
    pub fn before_write(
        &mut self,
        sysctl: &str,
        cookie: u64,
        ino: u64,
        global: bool,
        live: &SysctlValue,
        new: &SysctlValue,
    ) -> io::Result<SysctlValue> {
        let original = match self
            .file
            .entries
            .iter_mut()
            .find(|e| e.netns_cookie == cookie && e.sysctl == sysctl)
        {
            Some(e) => {
                e.last_written = new.clone();
                e.original.clone()
            }
            None => {
                self.file.entries.push(Entry {
                    sysctl: sysctl.to_string(),
                    netns_cookie: cookie,
                    netns_ino: ino,
                    global,
                    original: live.clone(),
                    last_written: new.clone(),
                });
                live.clone()
            }
        };
        self.file.pid = std::process::id();
        self.persist()?;
        Ok(original)
    }

    /// Forgets one entry (restored, or its namespace is gone).
    pub fn remove(&mut self, cookie: u64, sysctl: &str) -> io::Result<()> {
        self.file
            .entries
            .retain(|e| !(e.netns_cookie == cookie && e.sysctl == sysctl));
        self.persist()
    }

    /// Forgets every entry of a namespace that no longer exists (nothing left to restore).
    pub fn forget_netns(&mut self, cookie: u64) -> io::Result<()> {
        let before = self.file.entries.len();
        self.file.entries.retain(|e| e.global || e.netns_cookie != cookie);
        if self.file.entries.len() == before {
            return Ok(());
        }
        self.persist()
    }

    fn persist(&self) -> io::Result<()> {
        if self.file.entries.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.file).map_err(io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bpftune-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn v(x: i64) -> SysctlValue {
        SysctlValue::Ints(vec![4096, 131072, x])
    }

    #[test]
    fn first_original_is_kept_and_survives_restart() {
        let dir = tmpdir("keep");
        let (mut s, inh) = StateStore::open(&dir, "boot-a");
        assert!(inh.is_none());
        assert_eq!(
            s.before_write("net.ipv4.tcp_rmem", 7, 1, true, &v(100), &v(125))
                .expect("persist"),
            v(100)
        );
        assert_eq!(
            s.before_write("net.ipv4.tcp_rmem", 7, 1, true, &v(125), &v(156))
                .expect("persist"),
            v(100)
        );
        let (s2, inh) = StateStore::open(&dir, "boot-a");
        assert_eq!(inh.map(|(n, _)| n), Some(1));
        assert_eq!(s2.original(7, "net.ipv4.tcp_rmem"), Some(&v(100)));
        assert_eq!(s2.entries()[0].last_written, v(156));
        let (s3, inh) = StateStore::open(&dir, "boot-b");
        assert!(inh.is_none() && s3.entries().is_empty());
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn removing_last_entry_removes_file() {
        let dir = tmpdir("rm");
        let (mut s, _) = StateStore::open(&dir, "b");
        s.before_write("x", 1, 1, true, &v(1), &v(2)).expect("persist");
        assert!(s.path().exists());
        s.remove(1, "x").expect("remove");
        assert!(!s.path().exists());
        let _ = fs::remove_dir_all(&dir);
    }
}

//! Persisted original values: before bpftune first changes a sysctl in a namespace,
//! the value it found is written atomically (temp file, fsync, rename) to
//! `<state_dir>/originals.json`, so a restart with `-R` after `kill -9` can still
//! restore it. Entries carry the value bpftune last wrote (and the one before, for a
//! crash between persisting and writing): rollback only restores a sysctl whose live
//! value is still ours, never one an administrator changed since.
//!
//! The file is trusted only if it is a regular file (never followed through a
//! symlink), owned by us, not writable by group or others and at most [`MAX_FILE`]
//! bytes: anything else is moved aside to `originals.json.rejected` with a warning and
//! a fresh record is started (its entries could name sysctls and values a local user
//! chose). Corrupt or truncated files are moved aside the same way. Files are created
//! 0600 with `O_CREAT|O_EXCL|O_NOFOLLOW`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernel::crashpoint::{self, Point};
use crate::model::tunable::SysctlValue;

/// Largest state file read (about 40 000 entries); a bigger one is rejected.
pub const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub sysctl: String,
    pub netns_cookie: u64,
    pub netns_ino: u64,
    pub global: bool,
    pub original: SysctlValue,
    pub last_written: SysctlValue,
    /// The value bpftune wrote before `last_written`: after a crash between persisting
    /// `last_written` and writing it, the live value is this one, still ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_written: Option<SysctlValue>,
}

impl Entry {
    /// Is `live` a value bpftune wrote (so rollback may replace it)?
    pub fn is_ours(&self, live: &SysctlValue) -> bool {
        *live == self.last_written || self.previous_written.as_ref() == Some(live)
    }
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

/// Why an existing state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("it is a symbolic link (not followed)")]
    Symlink,
    #[error("it is not a regular file")]
    NotRegular,
    #[error("it is owned by uid {0}, not by us")]
    Owner(u32),
    #[error("it is writable by group or others (mode {0:o})")]
    Writable(u32),
    #[error("it is larger than {MAX_FILE} bytes")]
    TooBig,
    #[error("it cannot be parsed: {0}")]
    Corrupt(String),
    #[error("it cannot be read: {0}")]
    Io(io::Error),
}

/// Reads and checks the state file; `Ok(None)` if there is none.
fn read_checked(path: &Path) -> Result<Option<File>, Reject> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Reject::Symlink),
        Err(e) => return Err(Reject::Io(e)),
    };
    let md = f.metadata().map_err(Reject::Io)?;
    if !md.file_type().is_file() {
        return Err(Reject::NotRegular);
    }
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != euid {
        return Err(Reject::Owner(md.uid()));
    }
    if md.mode() & 0o022 != 0 {
        return Err(Reject::Writable(md.mode() & 0o7777));
    }
    if md.len() > MAX_FILE {
        return Err(Reject::TooBig);
    }
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Reject::Corrupt(e.to_string()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(Reject::TooBig);
    }
    serde_json::from_str::<File>(&text)
        .map(Some)
        .map_err(|e| Reject::Corrupt(e.to_string()))
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
        match read_checked(&path) {
            Ok(None) => {}
            Ok(Some(old)) if old.boot_id == boot && !old.entries.is_empty() => {
                inherited = Some((old.entries.len(), old.pid));
                file.entries = old.entries;
            }
            Ok(Some(_)) => tracing::debug!("ignoring {}: written in another boot", path.display()),
            Err(why) => {
                // Keep the evidence for the administrator, out of the way of our
                // rewrites (rename moves a symlink itself, never its target).
                let aside = path.with_extension("json.rejected");
                let moved = match fs::rename(&path, &aside) {
                    Ok(()) => format!("moved to {}", aside.display()),
                    Err(e) => format!("could not move it aside: {e}"),
                };
                tracing::warn!(
                    "not using saved original values in {}: {why} ({moved}); sysctls changed by an earlier bpftune cannot be rolled back",
                    path.display()
                );
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
    /// value and persists. Returns the original. On error nothing changed, in memory
    /// or on disk: the caller must not write (there would be no rollback record).
    pub fn before_write(
        &mut self,
        sysctl: &str,
        cookie: u64,
        ino: u64,
        global: bool,
        live: &SysctlValue,
        new: &SysctlValue,
    ) -> io::Result<SysctlValue> {
        let saved = self.file.entries.clone();
        let original = match self
            .file
            .entries
            .iter_mut()
            .find(|e| e.netns_cookie == cookie && e.sysctl == sysctl)
        {
            Some(e) => {
                e.previous_written = Some(std::mem::replace(&mut e.last_written, new.clone()));
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
                    previous_written: None,
                });
                live.clone()
            }
        };
        self.file.pid = std::process::id();
        if let Err(e) = self.persist() {
            self.file.entries = saved;
            return Err(e);
        }
        crashpoint::check(Point::Persist);
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
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.file).map_err(io::Error::other)?;
        // A leftover temp file (crash mid-rewrite) or anything planted under its name
        // is removed, never opened: O_EXCL|O_NOFOLLOW create a fresh file of our own.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            let half = text.len() / 2;
            f.write_all(&text[..half])?;
            // The extra fsync only when a crash test armed this point.
            if crashpoint::is_armed(Point::StateRewrite) {
                f.sync_all()?;
                crashpoint::check(Point::StateRewrite);
            }
            f.write_all(&text[half..])?;
            f.sync_all()
        })();
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &self.path)) {
            // Do not leave a partial file behind (e.g. a full disk).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
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

    fn write_mode(path: &Path, text: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::write(path, text).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn good_file(dir: &Path) -> Vec<u8> {
        let (mut s, _) = StateStore::open(dir, "b");
        s.before_write("x", 1, 1, true, &v(1), &v(2)).expect("persist");
        let text = fs::read(s.path()).expect("read");
        fs::remove_file(s.path()).expect("rm");
        text
    }

    /// Each hostile or broken file is rejected (moved aside, never followed or
    /// trusted), a fresh record starts, and the next persist works.
    #[test]
    fn hostile_and_broken_files_are_rejected_not_trusted() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tmpdir("hostile");
        fs::create_dir_all(&dir).expect("mkdir");
        let good = good_file(&dir);
        let path = dir.join("originals.json");
        let victim = dir.join("victim");
        type Plant<'a> = Box<dyn Fn() + 'a>;
        let cases: Vec<(&str, Plant)> = vec![
            ("corrupt", Box::new(|| write_mode(&path, b"{not json", 0o600))),
            (
                "truncated",
                Box::new(|| write_mode(&path, &good[..good.len() / 2], 0o600)),
            ),
            ("empty", Box::new(|| write_mode(&path, b"", 0o600))),
            ("world-writable", Box::new(|| write_mode(&path, &good, 0o666))),
            ("group-writable", Box::new(|| write_mode(&path, &good, 0o620))),
            (
                "symlink",
                Box::new(|| {
                    write_mode(&victim, &good, 0o600);
                    std::os::unix::fs::symlink(&victim, &path).expect("symlink");
                }),
            ),
            ("directory", Box::new(|| fs::create_dir(&path).expect("mkdir"))),
            (
                "huge",
                Box::new(|| {
                    write_mode(&path, b"", 0o600);
                    let f = fs::OpenOptions::new().write(true).open(&path).expect("open");
                    f.set_len(MAX_FILE + 1).expect("set_len");
                }),
            ),
            (
                "fifo",
                Box::new(|| {
                    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
                    // SAFETY: c is a valid NUL-terminated path for the call's duration.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }),
            ),
        ];
        for (name, plant) in cases {
            let aside = path.with_extension("json.rejected");
            let _ = fs::remove_file(&aside);
            let _ = fs::remove_dir(&aside);
            plant();
            let (mut s, inherited) = StateStore::open(&dir, "b");
            assert!(inherited.is_none() && s.entries().is_empty(), "{name}: trusted");
            assert!(
                fs::symlink_metadata(&aside).is_ok(),
                "{name}: not moved aside to {}",
                aside.display()
            );
            s.before_write("y", 1, 1, true, &v(1), &v(3))
                .expect("persist after reject");
            let md = fs::symlink_metadata(&path).expect("state file");
            assert!(md.file_type().is_file(), "{name}: state is a regular file");
            assert_eq!(md.mode() & 0o777, 0o600, "{name}: mode");
            if name == "symlink" {
                assert_eq!(fs::read(&victim).expect("victim"), good, "symlink target written");
                let _ = fs::remove_file(&victim);
            }
            s.remove(1, "y").expect("remove");
            assert!(!path.exists(), "{name}: left a file");
            let _ = fs::remove_file(&aside);
            let _ = fs::remove_dir(&aside);
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn planted_temp_file_symlink_is_not_followed() {
        let dir = tmpdir("tmplink");
        fs::create_dir_all(&dir).expect("mkdir");
        let victim = dir.join("victim");
        fs::write(&victim, "precious").expect("write");
        std::os::unix::fs::symlink(&victim, dir.join("originals.json.tmp")).expect("symlink");
        let (mut s, _) = StateStore::open(&dir, "b");
        s.before_write("x", 1, 1, true, &v(1), &v(2)).expect("persist");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
        assert!(!dir.join("originals.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn failed_persist_changes_nothing_and_previous_write_counts_as_ours() {
        let dir = tmpdir("fail");
        let (mut s, _) = StateStore::open(&dir, "b");
        s.before_write("x", 1, 1, true, &v(1), &v(2)).expect("persist");
        s.before_write("x", 1, 1, true, &v(2), &v(3)).expect("persist");
        let e = &s.entries()[0];
        assert!(e.is_ours(&v(3)) && e.is_ours(&v(2)) && !e.is_ours(&v(1)));
        let before = s.entries().to_vec();
        // The directory disappears and a file takes its place: persisting fails.
        fs::remove_dir_all(&dir).expect("rm");
        fs::write(&dir, "x").expect("file");
        assert!(s.before_write("x", 1, 1, true, &v(3), &v(4)).is_err());
        assert!(s.before_write("z", 1, 1, true, &v(3), &v(4)).is_err());
        assert_eq!(s.entries(), &before[..]);
        let _ = fs::remove_file(&dir);
    }
}

#[cfg(test)]
#[path = "originals_prop.rs"]
mod prop_tests;

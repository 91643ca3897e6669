//! Temporary directories that may end up holding a mount (a daemon's cgroup2 mount),
//! and the removal of those left by killed processes.
//!
//! Names are `<tmp>/bpftune-tb-<pid>-<n>-<tag>`: the pid of the creating process, so
//! [`cleanup_stale_dirs`] can tell leftovers (owner dead) from directories in use.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::names::pid_alive;

/// Prefix of the directories made by [`TempDir`].
pub const TMP_PREFIX: &str = "bpftune-tb-";
/// Prefixes used before the harness was shared (tests: `bpftune-it-`, bench:
/// `bpftune-bench-`); their leftovers are removed by the same rule.
const LEGACY_PREFIXES: [&str; 2] = ["bpftune-it-", "bpftune-bench-"];

/// Mount points (from /proc/self/mountinfo) at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Whether `path` itself is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_below(path).iter().any(|m| m == path)
}

/// Unmounts whatever is mounted below `dir` (e.g. the cgroup2 mount of a killed
/// daemon), then removes `dir`. Never recurses into a mount: if something is still
/// mounted the directory is left alone (a cgroup2 mount is the host's cgroup tree!).
/// Best effort; problems are printed, never returned.
pub fn remove_dir_safely(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if !mounts_below(dir).is_empty() {
        eprintln!(
            "bpftune-testbed: not removing {}: still has mounts",
            dir.display()
        );
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("bpftune-testbed: cannot remove {}: {e}", dir.display());
        }
    }
}

/// The owner pid encoded in a temp dir name of ours (or of the legacy harnesses).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = std::iter::once(TMP_PREFIX)
        .chain(LEGACY_PREFIXES)
        .find_map(|p| name.strip_prefix(p))?;
    rest.split('-').next()?.parse().ok()
}

/// Removes (safely, see [`remove_dir_safely`]) temp directories whose creating process
/// is gone. Returns the directories removed.
pub fn cleanup_stale_dirs() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else { continue };
        if pid != std::process::id() && !pid_alive(pid) {
            let path = e.path();
            remove_dir_safely(&path);
            if !path.exists() {
                removed.push(path);
            }
        }
    }
    removed
}

/// A directory under the system temp dir, removed (safely) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    /// `<tmp>/bpftune-tb-<pid>-<n>-<tag>`, created empty.
    pub fn new(tag: &str) -> Result<TempDir> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{TMP_PREFIX}{}-{n}-{tag}", std::process::id()));
        if path.exists() {
            remove_dir_safely(&path);
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir_safely(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid("bpftune-tb-123-0-daemon"), Some(123));
        assert_eq!(owner_pid("bpftune-it-77-3-state"), Some(77));
        assert_eq!(owner_pid("bpftune-bench-9-abc"), Some(9));
        assert_eq!(owner_pid("bpftune-tb-x-0"), None);
        assert_eq!(owner_pid("other-123"), None);
    }

    #[test]
    fn temp_dir_is_removed_on_drop() -> Result<()> {
        let d = TempDir::new("unit")?;
        let p = d.path().to_path_buf();
        fs::write(p.join("f"), "x")?;
        assert!(
            owner_pid(
                &p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ) == Some(std::process::id())
        );
        drop(d);
        assert!(!p.exists());
        Ok(())
    }
}

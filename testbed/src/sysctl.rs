//! Sysctl helpers and [`SysctlGuard`], which restores a root-netns value.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Map a sysctl key to its `/proc/sys` path. Accepts dotted keys
/// (`net.ipv4.tcp_rmem`) and slash keys (`net/ipv4/tcp_rmem`, also with a
/// leading `/proc/sys/`). Use the slash form for keys containing an
/// interface name with a dot (`net/ipv4/conf/eth0.100/forwarding`).
pub fn sysctl_path(key: &str) -> Result<PathBuf> {
    let key = key.trim();
    let rel = if key.contains('/') {
        key.trim_start_matches("/proc/sys/")
            .trim_start_matches('/')
            .to_string()
    } else {
        key.replace('.', "/")
    };
    if rel.is_empty() {
        bail!("empty sysctl key");
    }
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        bail!("invalid sysctl key {key:?}");
    }
    Ok(Path::new("/proc/sys").join(rel))
}

/// Read a /proc/sys file, trimmed.
pub fn read_path(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(s.trim().to_string())
}

/// Write a /proc/sys file (one write(2), as sysctl(8) does).
pub fn write_path(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value.as_bytes()).with_context(|| format!("write {value:?} to {}", path.display()))
}

/// Read a sysctl of the calling thread's netns (normally the root netns).
pub fn read(key: &str) -> Result<String> {
    read_path(&sysctl_path(key)?)
}

/// Write a sysctl of the calling thread's netns (normally the root netns).
pub fn write(key: &str, value: &str) -> Result<()> {
    write_path(&sysctl_path(key)?, value)
}

/// Remembers a global (root netns) sysctl value and writes it back on drop.
///
/// Use it from a thread in the root netns (the test's own thread). Restoring
/// is best effort: a failure is printed to stderr, never panics.
#[derive(Debug)]
pub struct SysctlGuard {
    key: String,
    path: PathBuf,
    old: String,
}

impl SysctlGuard {
    /// Save the current value of `key`, then write `value`.
    pub fn set(key: &str, value: &str) -> Result<SysctlGuard> {
        let guard = SysctlGuard::save(key)?;
        write_path(&guard.path, value)?;
        Ok(guard)
    }

    /// Only save the current value of `key`; it is restored on drop (for
    /// code under test that changes it).
    pub fn save(key: &str) -> Result<SysctlGuard> {
        let path = sysctl_path(key)?;
        let old = read_path(&path)?;
        Ok(SysctlGuard {
            key: key.to_string(),
            path,
            old,
        })
    }

    /// The key as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value that will be restored.
    pub fn old_value(&self) -> &str {
        &self.old
    }

    /// The current value.
    pub fn current(&self) -> Result<String> {
        read_path(&self.path)
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = write_path(&self.path, &self.old) {
            eprintln!(
                "bpftune-testbed: cannot restore {} to {:?}: {e:#}",
                self.key, self.old
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            sysctl_path("net.ipv4.tcp_rmem").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/tcp_rmem"))
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding"))
        );
        assert_eq!(
            sysctl_path("/proc/sys/net/core/rmem_max").ok(),
            Some(PathBuf::from("/proc/sys/net/core/rmem_max"))
        );
        assert!(sysctl_path("").is_err());
        assert!(sysctl_path("net/../../etc/passwd").is_err());
        assert!(sysctl_path("net..ipv4").is_err());
    }
}

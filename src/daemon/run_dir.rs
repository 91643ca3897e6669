//! The run directory (`/var/run/bpftune`, or `BPFTUNE_RUN_DIR`) holds the query socket,
//! the port file and the cgroup mount marker. Whoever can change its entries can swap
//! the socket for their own or plant symlinks where bpftune writes, so the daemon uses
//! it only if it is a real directory (not a symlink), owned by the daemon's euid and not
//! writable by group or others (issue 13 item 2: pre-created by another user). There is
//! no silent takeover: a chown or chmod by the daemon would follow a planted symlink
//! or hand a used directory over; the operator is told what to remove instead.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};

use anyhow::Context as _;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("run directory {0} is not a directory (symlinks are not followed); remove it")]
    NotDir(String),
    #[error("run directory {dir} is owned by uid {uid}, not by us (uid {owner}); remove it")]
    Owner { dir: String, uid: u32, owner: u32 },
    #[error("run directory {dir} is writable by group or others (mode {mode:o}); remove it")]
    Writable { dir: String, mode: u32 },
    #[error("cannot inspect run directory {dir}: {source}")]
    Stat { dir: String, source: io::Error },
}

/// Creates the run directory if needed (0755 whatever the umask, so it passes
/// [`check`]) and checks it for this daemon's euid.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    Ok(check(dir, unsafe { libc::geteuid() })?)
}

/// Checks `dir` (already created) for use by a daemon whose euid is `owner`.
pub fn check(dir: &Path, owner: u32) -> Result<(), RunDirError> {
    let d = dir.display().to_string();
    let md = std::fs::symlink_metadata(dir).map_err(|source| RunDirError::Stat {
        dir: d.clone(),
        source,
    })?;
    if !md.file_type().is_dir() {
        return Err(RunDirError::NotDir(d));
    }
    if md.uid() != owner {
        return Err(RunDirError::Owner {
            dir: d,
            uid: md.uid(),
            owner,
        });
    }
    if md.mode() & 0o022 != 0 {
        return Err(RunDirError::Writable {
            dir: d,
            mode: md.mode() & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bpftune-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn own_private_dir_is_accepted_others_refused() {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let d = temp("modes");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(check(&d, me).is_ok());
        // Another user's directory (simulated by expecting a different owner).
        assert!(matches!(check(&d, me.wrapping_add(1)), Err(RunDirError::Owner { uid, .. }) if uid == me));
        for mode in [0o775, 0o757, 0o777, 0o1777] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert!(
                matches!(check(&d, me), Err(RunDirError::Writable { mode: m, .. }) if m == mode),
                "{mode:o}"
            );
        }
        // A planted symlink to a good directory is refused, not followed.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = temp("link");
        std::os::unix::fs::symlink(&d, &link).expect("symlink");
        assert!(matches!(check(&link, me), Err(RunDirError::NotDir(_))));
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&d);
        assert!(matches!(check(&d, me), Err(RunDirError::Stat { .. })));
    }

    /// A real directory of another user (nobody), as a `/var/run/bpftune` pre-created by
    /// a local user would be.
    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn directory_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root: chowns a directory");
        let d = temp("nobody");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).expect("chown");
        let got = check(&d, 0);
        let _ = std::fs::remove_dir_all(&d);
        let e = got.expect_err("another user's directory accepted");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}

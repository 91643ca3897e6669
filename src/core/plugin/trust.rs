//! Trust checks made before a plugin file is opened (`dlopen` runs its constructors, so
//! a file is checked first): exact `<name>_tuner.so` name, a regular file (not a
//! symlink), owned by the trusted owner (root) and not writable by group or others, in
//! a directory with the same properties. C bpftune #123: temporary and package-manager
//! files (`.dpkg-new`, `~`, `.tmp`) were loaded as plugins.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why a plugin file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("name is not <name>_tuner.so with a name of letters, digits and '_'")]
    Name,
    #[error("not a regular file (symlinks are not followed)")]
    NotRegular,
    #[error("owned by uid {0}, not root")]
    FileOwner(u32),
    #[error("writable by group or others (mode {0:o})")]
    FileMode(u32),
    #[error("directory {dir} is owned by uid {uid}, not root")]
    DirOwner { dir: String, uid: u32 },
    #[error("directory {dir} is writable by group or others (mode {mode:o})")]
    DirMode { dir: String, mode: u32 },
    #[error("cannot stat: {0}")]
    Stat(String),
}

/// `sample_tuner.so` → `sample`; `None` for anything else (`x_tuner.so.dpkg-new`,
/// `x_tuner.so~`, `.x_tuner.so.tmp`, `_tuner.so`).
pub fn tuner_name(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix("_tuner.so")?;
    let ok = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(stem)
}

/// Checks `path` and its directory; returns the tuner name. `owner` is the trusted
/// owner's uid (0 in the daemon).
pub fn check(path: &Path, owner: u32) -> Result<String, Refusal> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(tuner_name)
        .ok_or(Refusal::Name)?
        .to_string();
    let md = std::fs::symlink_metadata(path).map_err(|e| Refusal::Stat(e.to_string()))?;
    if !md.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if md.uid() != owner {
        return Err(Refusal::FileOwner(md.uid()));
    }
    if md.mode() & 0o022 != 0 {
        return Err(Refusal::FileMode(md.mode() & 0o7777));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The directory itself may be reached through a symlink (/usr/lib64 on some
    // distributions): what matters is who can change its entries.
    let dmd = std::fs::metadata(dir).map_err(|e| Refusal::Stat(e.to_string()))?;
    let dir_s = dir.display().to_string();
    if dmd.uid() != owner {
        return Err(Refusal::DirOwner {
            dir: dir_s,
            uid: dmd.uid(),
        });
    }
    if dmd.mode() & 0o022 != 0 {
        return Err(Refusal::DirMode {
            dir: dir_s,
            mode: dmd.mode() & 0o7777,
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn names() {
        assert_eq!(tuner_name("sample_tuner.so"), Some("sample"));
        assert_eq!(tuner_name("tcp_x2_tuner.so"), Some("tcp_x2"));
        for bad in [
            "sample_tuner.so.dpkg-new",
            "sample_tuner.so~",
            "sample_tuner.so.tmp",
            ".sample_tuner.so.swp",
            "_tuner.so",
            "sam-ple_tuner.so",
            "sample.so",
        ] {
            assert_eq!(tuner_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_and_dir_rules() {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let dir = std::env::temp_dir().join(format!("bpftune-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let f = dir.join("ok_tuner.so");
        std::fs::write(&f, b"x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(check(&f, me), Ok("ok".to_string()));
        assert_eq!(check(&f, me.wrapping_add(1)), Err(Refusal::FileOwner(me)));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).expect("chmod");
        assert_eq!(check(&f, me), Err(Refusal::FileMode(0o646)));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        assert_eq!(check(&f, me), Err(Refusal::FileMode(0o664)));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let link = dir.join("link_tuner.so");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert_eq!(check(&link, me), Err(Refusal::NotRegular));
        assert_eq!(check(&dir.join("ok_tuner.so.dpkg-new"), me), Err(Refusal::Name));

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        assert!(matches!(check(&f, me), Err(Refusal::DirMode { mode: 0o777, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
#[path = "trust_prop.rs"]
mod prop_tests;

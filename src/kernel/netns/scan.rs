//! Pure scans of `/proc/<pid>/ns/net` links and `/run/netns` bind mounts (no namespace is
//! entered, nothing is kept open).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8+): a 64-bit mount id that is never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// Parses the target of a `/proc/<pid>/ns/net` link: `net:[4026531840]`.
pub(crate) fn parse_ns_link(target: &OsStr) -> Option<u64> {
    let b = target.as_bytes();
    let inner = b.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

pub(crate) fn parse_pid(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// What identifies a location between two scans.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LocKey {
    /// `/proc/<pid>/ns/net`.
    Pid(u32),
    /// `/run/netns/<name>` on mount `mnt_id` (unique mount id where the kernel has it).
    Run { name: OsString, mnt_id: u64 },
}

/// One place where a namespace was seen.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub(crate) path: PathBuf,
    pub(crate) name: Option<String>,
    pub(crate) key: LocKey,
}

/// `stat` following the mount/link: (inode, mount id, is directory).
pub(crate) fn stat_ino_mnt(path: &Path) -> io::Result<(u64, u64, bool)> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `cpath` is a NUL-terminated string that outlives the call, and `stx` points to
    // writable memory of the size of `struct statx`.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            0,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID | STATX_MNT_ID_UNIQUE,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            let meta = std::fs::metadata(path)?;
            return Ok((meta.ino(), 0, meta.is_dir()));
        }
        return Err(err);
    }
    // SAFETY: the buffer was zero-initialised (a valid `statx` value) and statx succeeded.
    let stx = unsafe { stx.assume_init() };
    let mnt_id = if stx.stx_mask & (libc::STATX_MNT_ID | STATX_MNT_ID_UNIQUE) != 0 {
        stx.stx_mnt_id
    } else {
        0
    };
    let is_dir = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
    Ok((stx.stx_ino, mnt_id, is_dir))
}

/// Entries of a `/run/netns`-style directory: (name, inode, mount id), sorted by name.
pub(crate) fn scan_run_dir(dir: &Path) -> Vec<(OsString, u64, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name();
        match stat_ino_mnt(&ent.path()) {
            Ok((ino, mnt_id, false)) => out.push((name, ino, mnt_id)),
            Ok((_, _, true)) => {}
            Err(e) => tracing::debug!("netns: skipping {}: {e}", ent.path().display()),
        }
    }
    out.sort();
    out
}

/// Scans `run_netns` (first, so its entries are preferred) and `proc_root/*/ns/net`,
/// keeping inodes accepted by `keep`.
pub(crate) fn scan_locations(
    proc_root: &Path,
    run_netns: &Path,
    keep: impl Fn(u64) -> bool,
) -> HashMap<u64, Vec<Location>> {
    let mut out: HashMap<u64, Vec<Location>> = HashMap::new();
    for (name, ino, mnt_id) in scan_run_dir(run_netns) {
        if !keep(ino) {
            continue;
        }
        out.entry(ino).or_default().push(Location {
            path: run_netns.join(&name),
            name: Some(name.to_string_lossy().into_owned()),
            key: LocKey::Run { name, mnt_id },
        });
    }
    let rd = match std::fs::read_dir(proc_root) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!("netns: cannot list {}: {e}", proc_root.display());
            return out;
        }
    };
    for ent in rd.flatten() {
        let fname = ent.file_name();
        let Some(pid) = parse_pid(&fname) else {
            continue;
        };
        let path = ent.path().join("ns/net");
        // Processes exiting mid-scan (ENOENT, ESRCH) are simply skipped.
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let Some(ino) = parse_ns_link(target.as_os_str()) else {
            continue;
        };
        if !keep(ino) {
            continue;
        }
        out.entry(ino).or_default().push(Location {
            path,
            name: None,
            key: LocKey::Pid(pid),
        });
    }
    // Stable preference: named entries (by name), then processes by ascending pid (the
    // oldest process of a container is the likeliest to stay).
    for locs in out.values_mut() {
        locs.sort_by_key(|l| match l.key {
            LocKey::Run { .. } => (0, 0),
            LocKey::Pid(pid) => (1, pid),
        });
    }
    out
}

/// Pure scan of a proc root and a `/run/netns`-style directory: nsfs inode → (path, name).
///
/// Inodes of `proc_root/<pid>/ns/net` come from the link text (`net:[N]`), inodes of
/// `run_netns` entries from `stat` (which follows the bind mount). Processes that vanish
/// mid-scan are skipped. For an inode seen in both places the `run_netns` entry wins: it
/// carries a name and outlives processes. The global namespace is included.
pub fn scan(proc_root: &Path, run_netns: &Path) -> HashMap<u64, (PathBuf, Option<String>)> {
    scan_locations(proc_root, run_netns, |_| true)
        .into_iter()
        .filter_map(|(ino, locs)| {
            let first = locs.into_iter().next()?;
            Some((ino, (first.path, first.name)))
        })
        .collect()
}

/// Whether `path` currently shows the namespace `ino` (readlink for `/proc` links, stat
/// otherwise). Cheap: no open.
pub(crate) fn still_points_to(path: &Path, ino: u64) -> bool {
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(found) = parse_ns_link(target.as_os_str()) {
            return found == ino;
        }
    }
    matches!(stat_ino_mnt(path), Ok((found, _, false)) if found == ino)
}

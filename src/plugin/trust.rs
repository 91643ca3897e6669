//! Trust checks made before a plugin file is loaded (`dlopen` runs its constructors, so
//! a file is checked first), on the very file that is then loaded: [`open`] walks the
//! directory chain from `/` one descriptor at a time (`openat`, `O_PATH | O_NOFOLLOW`),
//! checks each directory and then the file through its own descriptor, and returns that
//! descriptor ([`Checked`]); the loader `dlopen`s `/proc/self/fd/N` of it, so a file
//! renamed over the checked one between the check and the load is never what runs.
//!
//! The rules: exact `<name>_tuner.so` name (C bpftune #123: temporary and
//! package-manager files such as `.dpkg-new`, `~`, `.tmp` were loaded as plugins); the
//! file is a regular file (not a symlink), owned by the trusted owner (root), not
//! writable by group or others, and without a POSIX ACL entry granting write; its
//! directory is owned by root (or the trusted owner) and not writable by group or
//! others (mode or ACL), sticky or not; every ancestor up to `/` is owned by root (or
//! the trusted owner) and not writable by group or others unless it is sticky (like
//! `/tmp`: the sticky bit keeps others from renaming or removing the next component,
//! which is itself checked to be root's). Without the ancestor rule, a root-owned
//! plugin directory `/X/lib` under a world-writable `/X` could be renamed away and
//! replaced by anyone.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Why a plugin file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("name is not <name>_tuner.so with a name of letters, digits and '_'")]
    Name,
    #[error("a symlink (symlinks are not followed)")]
    Symlink,
    #[error("not a regular file")]
    NotRegular,
    #[error("owned by uid {0}, not root")]
    FileOwner(u32),
    #[error("writable by group or others (mode {0:o})")]
    FileMode(u32),
    #[error("its POSIX ACL grants write to {0}")]
    FileAcl(AclWriter),
    #[error("directory {dir} is owned by uid {uid}, not root")]
    DirOwner { dir: String, uid: u32 },
    #[error("directory {dir} is writable by group or others (mode {mode:o})")]
    DirMode { dir: String, mode: u32 },
    #[error("ancestor directory {dir} is owned by uid {uid}, not root")]
    AncestorOwner { dir: String, uid: u32 },
    #[error("ancestor directory {dir} is writable by group or others (mode {mode:04o}, not sticky)")]
    AncestorMode { dir: String, mode: u32 },
    #[error("directory {dir}: its POSIX ACL grants write to {who} (and it is not a sticky ancestor)")]
    DirAcl { dir: String, who: AclWriter },
    #[error("{what} is not a directory (a symlink or another file: changed while being checked?)")]
    NotDir { what: String },
    #[error("cannot read the POSIX ACL of {what}: {reason}")]
    Acl { what: String, reason: String },
    #[error("cannot open or stat: {0}")]
    Stat(String),
}

/// `sample_tuner.so` → `sample`; `None` for anything else (`x_tuner.so.dpkg-new`,
/// `x_tuner.so~`, `.x_tuner.so.tmp`, `_tuner.so`).
pub fn tuner_name(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix("_tuner.so")?;
    let ok = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(stem)
}

// ---------------------------------------------------------------------------------------
// POSIX ACLs (`system.posix_acl_access`, the kernel's `posix_acl_xattr` format)
// ---------------------------------------------------------------------------------------

/// The extended attribute holding a file's access ACL.
pub const ACL_XATTR: &str = "system.posix_acl_access";
/// `POSIX_ACL_XATTR_VERSION`: the only version the kernel reads or writes.
pub const ACL_VERSION: u32 = 2;
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
pub const ACL_WRITE: u16 = 0x02;

/// Who, besides the owner, an ACL lets write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclWriter {
    User(u32),
    Group(u32),
    /// The owning group, in an ACL without a mask (where it is the effective group class).
    OwningGroup,
    /// The mask: the most any named user or group entry may be granted.
    Mask,
    Others,
}

impl fmt::Display for AclWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclWriter::User(u) => write!(f, "user uid {u}"),
            AclWriter::Group(g) => write!(f, "group gid {g}"),
            AclWriter::OwningGroup => f.write_str("the owning group"),
            AclWriter::Mask => f.write_str("the ACL mask (group class)"),
            AclWriter::Others => f.write_str("others"),
        }
    }
}

/// Why an ACL could not be judged: refused (a file whose ACL cannot be read is not trusted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("{0} bytes: not a 4-byte header and 8-byte entries")]
    Size(usize),
    #[error("version {0}, not 2")]
    Version(u32),
    #[error("unknown entry tag {0:#x}")]
    Tag(u16),
}

/// The first entry of an ACL (`system.posix_acl_access` bytes) that lets someone other
/// than the owner write, or `None`. Refused as write grants: named users and groups,
/// the mask and others whenever their entry has the write bit — even a named entry the
/// mask currently limits, as a later `chmod g+w` would make it effective — and the owning
/// group when there is no mask (then it is the group class itself). With a mask, the
/// owning group's bits are limited by it, so the mask entry decides.
pub fn acl_write_grant(xattr: &[u8]) -> Result<Option<AclWriter>, AclError> {
    let (header, entries) = xattr
        .split_first_chunk::<4>()
        .ok_or(AclError::Size(xattr.len()))?;
    let version = u32::from_le_bytes(*header);
    if version != ACL_VERSION {
        return Err(AclError::Version(version));
    }
    if entries.len() % 8 != 0 {
        return Err(AclError::Size(xattr.len()));
    }
    let mut has_mask = false;
    let mut group_obj_writes = false;
    let mut first = None;
    for e in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let writes = perm & ACL_WRITE != 0;
        let who = match tag {
            ACL_USER_OBJ => None,
            ACL_GROUP_OBJ => {
                group_obj_writes |= writes;
                None
            }
            ACL_USER => Some(AclWriter::User(id)),
            ACL_GROUP => Some(AclWriter::Group(id)),
            ACL_MASK => {
                has_mask = true;
                Some(AclWriter::Mask)
            }
            ACL_OTHER => Some(AclWriter::Others),
            t => return Err(AclError::Tag(t)),
        };
        if writes && first.is_none() {
            first = who;
        }
    }
    if first.is_none() && group_obj_writes && !has_mask {
        first = Some(AclWriter::OwningGroup);
    }
    Ok(first)
}

/// The access ACL of the file behind `fd` (`None`: it has none, or its file system has
/// no ACLs). `O_PATH` descriptors have no xattr calls of their own (`EBADF`): those are
/// read through `/proc/self/fd/N`, which names the same file.
fn acl_of(fd: BorrowedFd<'_>) -> Result<Option<Vec<u8>>, Errno> {
    // XATTR_SIZE_MAX: no ACL is larger, so one call reads it whole (no size-then-read race).
    let mut buf = vec![0u8; 65536];
    let name = c"system.posix_acl_access";
    // SAFETY: a valid fd, a NUL-terminated name and a buffer of buf.len() writable bytes.
    let mut n = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 && Errno::last() == Errno::EBADF {
        let proc = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| Errno::EINVAL)?;
        // SAFETY: NUL-terminated path and name, a buffer of buf.len() writable bytes.
        n = unsafe { libc::getxattr(proc.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    }
    if n < 0 {
        return match Errno::last() {
            // No ACL, or a file system without them (tmpfs without CONFIG_TMPFS_POSIX_ACL).
            Errno::ENODATA | Errno::EOPNOTSUPP => Ok(None),
            e => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// Who other than the owner the ACL of `fd` lets write; a refusal if it cannot be read.
fn acl_writer(fd: BorrowedFd<'_>, what: &str) -> Result<Option<AclWriter>, Refusal> {
    let refuse = |reason: String| Refusal::Acl {
        what: what.to_string(),
        reason,
    };
    match acl_of(fd).map_err(|e| refuse(e.desc().to_string()))? {
        None => Ok(None),
        Some(x) => acl_write_grant(&x).map_err(|e| refuse(e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// The walk
// ---------------------------------------------------------------------------------------

/// A plugin file that passed every check, held open: load it through [`Checked::fd`]
/// (`/proc/self/fd/N`), never by its path, so that what runs is what was checked.
#[derive(Debug)]
pub struct Checked {
    /// The tuner name its file name gives.
    pub name: String,
    /// The path it was checked under (for messages and the daemon's records).
    pub path: PathBuf,
    /// `O_PATH` descriptor of the file itself (not of a path to it).
    file: OwnedFd,
    /// `fstat` of that descriptor, as checked.
    pub metadata: std::fs::Metadata,
}

impl Checked {
    /// The checked file's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Gives up the descriptor (the loader keeps it open as long as the library).
    pub fn into_fd(self) -> OwnedFd {
        self.file
    }
}

/// `openat(dir, name, flags)` as an owned descriptor.
fn open_at(dir: Option<BorrowedFd<'_>>, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat` of an `O_PATH` descriptor as a `std::fs::Metadata` (std's `File::metadata`
/// is `statx(fd, "", AT_EMPTY_PATH)`, which O_PATH descriptors support).
fn metadata_of(fd: &OwnedFd) -> Result<std::fs::Metadata, Errno> {
    let dup = fd
        .try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))?;
    std::fs::File::from(dup)
        .metadata()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Checks one directory of the chain (`last`: the plugin's own directory).
fn check_dir(fd: &OwnedFd, shown: &Path, owner: u32, last: bool) -> Result<(), Refusal> {
    let dir = shown.display().to_string();
    let md = metadata_of(fd).map_err(|e| Refusal::Stat(format!("{dir}: {}", e.desc())))?;
    if !md.file_type().is_dir() {
        return Err(Refusal::NotDir { what: dir });
    }
    let (uid, mode) = (md.uid(), md.mode() & 0o7777);
    // Root can change anything anyway; a daemon run by another user also trusts its own.
    if uid != 0 && uid != owner {
        return Err(if last {
            Refusal::DirOwner { dir, uid }
        } else {
            Refusal::AncestorOwner { dir, uid }
        });
    }
    // A sticky ancestor (like /tmp) may be writable by others: they cannot rename or
    // remove entries that are not theirs, and its next component is checked to be root's.
    // The plugin's own directory may not: others could add files to it.
    let sticky_ancestor = !last && mode & libc::S_ISVTX != 0;
    if sticky_ancestor {
        return Ok(());
    }
    if mode & 0o022 != 0 {
        return Err(if last {
            Refusal::DirMode { dir, mode }
        } else {
            Refusal::AncestorMode { dir, mode }
        });
    }
    if let Some(who) = acl_writer(fd.as_fd(), &format!("directory {dir}"))? {
        return Err(Refusal::DirAcl { dir, who });
    }
    Ok(())
}

/// Opens the directory `dir` one component at a time from `/` (`O_PATH`,
/// `O_NOFOLLOW`), checking each; returns the descriptor of `dir`. Symlinks in `dir` are
/// resolved first (`/usr/lib64` → `/usr/lib` on some distributions): the chain checked
/// and walked is the real one, and a component that became a symlink since is refused.
fn open_dir_chain(dir: &Path, owner: u32) -> Result<OwnedFd, Refusal> {
    let canon = std::fs::canonicalize(dir).map_err(|e| Refusal::Stat(format!("{}: {e}", dir.display())))?;
    let names: Vec<&OsStr> = canon
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    let mut shown = PathBuf::from("/");
    let mut fd =
        open_at(None, OsStr::new("/"), flags).map_err(|e| Refusal::Stat(format!("/: {}", e.desc())))?;
    check_dir(&fd, &shown, owner, names.is_empty())?;
    for (i, name) in names.iter().enumerate() {
        shown.push(name);
        fd = open_at(Some(fd.as_fd()), name, flags).map_err(|e| match e {
            // O_NOFOLLOW | O_DIRECTORY on a symlink: ENOTDIR (ELOOP on some kernels).
            Errno::ENOTDIR | Errno::ELOOP => Refusal::NotDir {
                what: shown.display().to_string(),
            },
            e => Refusal::Stat(format!("{}: {}", shown.display(), e.desc())),
        })?;
        check_dir(&fd, &shown, owner, i + 1 == names.len())?;
    }
    Ok(fd)
}

/// Checks `path`, its directory and every ancestor, through descriptors, and returns the
/// open, checked file. `owner` is the trusted owner's uid (0 in the daemon).
pub fn open(path: &Path, owner: u32) -> Result<Checked, Refusal> {
    let file_name = path.file_name().ok_or(Refusal::Name)?;
    let name = file_name
        .to_str()
        .and_then(tuner_name)
        .ok_or(Refusal::Name)?
        .to_string();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_fd = open_dir_chain(dir, owner)?;
    // O_PATH: nothing of the file is opened (no FIFO wait, no device side effect) until
    // dlopen opens it through /proc/self/fd; O_NOFOLLOW on O_PATH gives the symlink itself.
    let file = open_at(Some(dir_fd.as_fd()), file_name, OFlag::O_PATH | OFlag::O_NOFOLLOW)
        .map_err(|e| Refusal::Stat(e.desc().to_string()))?;
    let md = metadata_of(&file).map_err(|e| Refusal::Stat(e.desc().to_string()))?;
    if md.file_type().is_symlink() {
        return Err(Refusal::Symlink);
    }
    if !md.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if md.uid() != owner {
        return Err(Refusal::FileOwner(md.uid()));
    }
    if md.mode() & 0o022 != 0 {
        return Err(Refusal::FileMode(md.mode() & 0o7777));
    }
    if let Some(who) = acl_writer(file.as_fd(), "the file")? {
        return Err(Refusal::FileAcl(who));
    }
    Ok(Checked {
        name,
        path: path.to_path_buf(),
        file,
        metadata: md,
    })
}

/// [`open`], keeping only the tuner name (for checks that load nothing).
pub fn check(path: &Path, owner: u32) -> Result<String, Refusal> {
    open(path, owner).map(|c| c.name)
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

    /// An ACL xattr from (tag, perm, id) entries.
    pub(super) fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    const NOID: u32 = u32::MAX;

    #[test]
    fn acl_parser() {
        // A minimal ACL (what `chmod 644` means): nobody else writes.
        let minimal = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 4, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&minimal), Ok(None));
        // The owner's own write is not a grant to others.
        let owner_rwx = acl(&[
            (ACL_USER_OBJ, 7, NOID),
            (ACL_GROUP_OBJ, 5, NOID),
            (ACL_OTHER, 5, NOID),
        ]);
        assert_eq!(acl_write_grant(&owner_rwx), Ok(None));
        // Named user with write, even masked to r-- (a dormant grant).
        let user = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_USER, 6, 1000),
            (ACL_GROUP_OBJ, 4, NOID),
            (ACL_MASK, 4, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&user), Ok(Some(AclWriter::User(1000))));
        let group = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 4, NOID),
            (ACL_GROUP, 2, 50),
            (ACL_MASK, 6, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&group), Ok(Some(AclWriter::Group(50))));
        let mask = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 4, NOID),
            (ACL_MASK, 6, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&mask), Ok(Some(AclWriter::Mask)));
        let other = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 4, NOID),
            (ACL_OTHER, 6, NOID),
        ]);
        assert_eq!(acl_write_grant(&other), Ok(Some(AclWriter::Others)));
        // Owning group with write: a grant without a mask, limited by a mask without write.
        let gobj = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 6, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&gobj), Ok(Some(AclWriter::OwningGroup)));
        let gobj_masked = acl(&[
            (ACL_USER_OBJ, 6, NOID),
            (ACL_GROUP_OBJ, 6, NOID),
            (ACL_MASK, 4, NOID),
            (ACL_OTHER, 4, NOID),
        ]);
        assert_eq!(acl_write_grant(&gobj_masked), Ok(None));
        // Malformed: refused, never read past the end.
        assert_eq!(acl_write_grant(&[]), Err(AclError::Size(0)));
        assert_eq!(acl_write_grant(&[2, 0, 0]), Err(AclError::Size(3)));
        assert_eq!(acl_write_grant(&minimal[..9]), Err(AclError::Size(9)));
        let mut v1 = minimal.clone();
        v1[0] = 1;
        assert_eq!(acl_write_grant(&v1), Err(AclError::Version(1)));
        assert_eq!(acl_write_grant(&acl(&[(0x40, 0, 0)])), Err(AclError::Tag(0x40)));
        // A header alone: an empty ACL grants nothing.
        assert_eq!(acl_write_grant(&acl(&[])), Ok(None));
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
        let opened = open(&f, me).expect("open");
        assert_eq!(opened.metadata.ino(), std::fs::metadata(&f).expect("stat").ino());
        if me != 0 {
            // Our files and directories are trusted by a daemon of ours only (the walk
            // meets our directory before the file).
            assert!(matches!(
                check(&f, me.wrapping_add(1)),
                Err(Refusal::DirOwner { uid, .. }) if uid == me
            ));
        }

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).expect("chmod");
        assert_eq!(check(&f, me), Err(Refusal::FileMode(0o646)));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        assert_eq!(check(&f, me), Err(Refusal::FileMode(0o664)));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let link = dir.join("link_tuner.so");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert_eq!(check(&link, me), Err(Refusal::Symlink));
        assert_eq!(check(&dir.join("ok_tuner.so.dpkg-new"), me), Err(Refusal::Name));
        std::fs::create_dir(dir.join("d_tuner.so")).expect("mkdir");
        assert_eq!(check(&dir.join("d_tuner.so"), me), Err(Refusal::NotRegular));

        // A relative path and a symlinked directory are judged by the real chain.
        let dlink = std::env::temp_dir().join(format!("bpftune-trust-{}-link", std::process::id()));
        let _ = std::fs::remove_file(&dlink);
        std::os::unix::fs::symlink(&dir, &dlink).expect("dir symlink");
        assert_eq!(check(&dlink.join("ok_tuner.so"), me), Ok("ok".to_string()));
        let _ = std::fs::remove_file(&dlink);

        // The plugin's own directory: writable by others is refused, sticky or not.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        assert!(matches!(check(&f, me), Err(Refusal::DirMode { mode: 0o777, .. })));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod dir");
        assert!(matches!(
            check(&f, me),
            Err(Refusal::DirMode { mode: 0o1777, .. })
        ));

        // An ancestor: writable by others only if sticky.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let sub = dir.join("lib");
        std::fs::create_dir(&sub).expect("mkdir lib");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod lib");
        let g = sub.join("ok_tuner.so");
        std::fs::write(&g, b"x").expect("write");
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(check(&g, me), Ok("ok".to_string()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        let want = format!(
            "ancestor directory {} is writable by group or others (mode 0777, not sticky)",
            std::fs::canonicalize(&dir).expect("canonical").display()
        );
        match check(&g, me) {
            Err(r @ Refusal::AncestorMode { mode: 0o777, .. }) => assert_eq!(r.to_string(), want),
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod dir");
        assert_eq!(check(&g, me), Ok("ok".to_string()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
#[path = "trust_prop.rs"]
mod prop_tests;

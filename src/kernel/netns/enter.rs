//! Entering a namespace (on a dedicated thread) and identifying the current one.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::{NetnsError, THREAD_SELF_NETNS};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h); not exported by every libc.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Runs `f` on a dedicated, short-lived OS thread that first `setns(CLONE_NEWNET)`s into the
/// namespace at `path`.
///
/// The namespace file is opened right before `setns` and closed right after it, so nothing
/// stays pinned. When `expected_ino` is `Some`, the opened file must be that nsfs inode,
/// otherwise (and when the path no longer exists) the result is [`NetnsError::Gone`]. The
/// caller's thread never changes namespace. Files opened by `f` (e.g. `/proc/sys/net/...`,
/// netlink sockets) resolve against the entered namespace; inside `f` use
/// `/proc/thread-self/...` rather than `/proc/self/...`. A panic in `f` is propagated.
pub fn run_in_netns<T: Send>(
    path: &Path,
    expected_ino: Option<u64>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("bpftune-netns".into())
            .spawn_scoped(s, move || -> Result<T, NetnsError> {
                enter_netns_privileged(path, expected_ino)?;
                Ok(f())
            })
            .map_err(NetnsError::Io)?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the namespace at `path` (fd closed before returning).
fn enter_netns(path: &Path, expected_ino: Option<u64>) -> Result<(), NetnsError> {
    let enter_err = |source: io::Error| NetnsError::Enter {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENOTDIR) => NetnsError::Gone,
        _ => enter_err(e),
    })?;
    if let Some(ino) = expected_ino {
        let meta = file.metadata().map_err(enter_err)?;
        if meta.ino() != ino {
            return Err(NetnsError::Gone);
        }
    }
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(e.into()))?;
    drop(file);
    Ok(())
}

/// [`enter_netns`] with the capabilities it needs raised on this (the new) thread only:
/// opening `/proc/PID/ns/net` and `setns`. They are lowered before the caller's work runs.
fn enter_netns_privileged(path: &Path, expected_ino: Option<u64>) -> Result<(), NetnsError> {
    let _caps = crate::kernel::privs::raise(crate::kernel::privs::ENTER_NETNS);
    enter_netns(path, expected_ino)
}

/// How this kernel lets a namespace be identified (see [`identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `SO_NETNS_COOKIE` (5.14+): unique per boot, never reused.
    Cookie,
    /// The nsfs inode number: kernels without `SO_NETNS_COOKIE` (5.10, 5.13). The kernel
    /// reuses an inode once its namespace is gone; the registry forgets a namespace when
    /// it vanishes, so only a reuse between two scans can be mistaken for the old one.
    Inode,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

/// The identity this kernel offers, probed once (a socket and one `getsockopt`): a
/// feature probe, not a version check, so a backport counts.
pub fn identity() -> Identity {
    *IDENTITY.get_or_init(|| identity_of(socket_cookie()))
}

/// [`Identity::Inode`] only when the kernel says it has no cookie option; any other
/// failure (no socket now) is not a kernel feature and leaves cookies in use.
fn identity_of(probe: Result<u64, NetnsError>) -> Identity {
    match probe {
        Err(NetnsError::CookieUnsupported) => Identity::Inode,
        _ => Identity::Cookie,
    }
}

/// The identity of the calling thread's network namespace: its cookie, or where the
/// kernel has none ([`Identity::Inode`]) its nsfs inode number. Everything that says
/// "cookie" in the daemon (events, the registry, the ledger) holds this value.
pub fn current_cookie() -> Result<u64, NetnsError> {
    match identity() {
        Identity::Cookie => socket_cookie(),
        Identity::Inode => current_ino(),
    }
}

/// `SO_NETNS_COOKIE` of the calling thread's current network namespace.
fn socket_cookie() -> Result<u64, NetnsError> {
    let sock = probe_socket()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `sock` is a valid open socket for the duration of the call; `cookie` and
    // `len` are live, writable locals and `len` holds the size of `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOPROTOOPT) => Err(NetnsError::CookieUnsupported),
            _ => Err(NetnsError::Io(err)),
        };
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(NetnsError::CookieUnsupported);
    }
    Ok(cookie)
}

/// A socket in the current netns: UDP/IPv4, or a unix socket where IPv4 is unavailable.
fn probe_socket() -> io::Result<OwnedFd> {
    match socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::EAFNOSUPPORT) => socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from),
        Err(e) => Err(e.into()),
    }
}

/// nsfs inode of the calling thread's network namespace.
pub fn current_ino() -> Result<u64, NetnsError> {
    Ok(std::fs::metadata(THREAD_SELF_NETNS)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_cookie_option_selects_inodes() {
        assert_eq!(identity_of(Ok(7)), Identity::Cookie);
        assert_eq!(identity_of(Err(NetnsError::CookieUnsupported)), Identity::Inode);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(identity_of(Err(NetnsError::Io(emfile))), Identity::Cookie);
    }
}

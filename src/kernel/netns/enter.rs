//! Entering a namespace (on a dedicated thread) and identifying the current one.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

/// Cookie of the calling thread's current network namespace.
pub fn current_cookie() -> Result<u64, NetnsError> {
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

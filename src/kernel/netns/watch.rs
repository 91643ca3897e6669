//! Prompt rescans: inotify on `/run/netns` (or its parent until it exists) and the mount
//! table's poll notification.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::scan::scan_run_dir;
use super::NetnsError;
use crate::kernel::wait::Waiter;

/// Watches `/run/netns` (inotify) and the mount table (`/proc/self/mounts` poll) so that
/// `ip netns add/del` can trigger a prompt [`super::NetnsRegistry::refresh`].
///
/// `ip netns add` creates the file before bind-mounting the namespace on it, so the
/// inotify event alone can come too early; the mount-table notification covers the mount.
/// When the directory does not exist yet, its parent is watched for its creation.
/// [`fd`](Self::fd) is an epoll descriptor to add to the daemon's poll set.
pub struct RunNetnsWatcher {
    waiter: Waiter,
    inotify: Inotify,
    /// Kept open for its poll notifications; never read.
    _mounts: Option<File>,
    dir: PathBuf,
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    dir_wd: Option<WatchDescriptor>,
    parent_wd: Option<WatchDescriptor>,
    signature: Vec<(OsString, u64, u64)>,
}

impl std::fmt::Debug for RunNetnsWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunNetnsWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn dir_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

fn parent_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR
}

impl RunNetnsWatcher {
    /// Starts watching `dir` (normally [`DEFAULT_RUN_NETNS`]).
    pub fn new(dir: &Path) -> Result<Self, NetnsError> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
        let waiter = Waiter::new()?;
        waiter.add(&inotify, 0)?;
        let mounts = match File::open("/proc/self/mounts") {
            // The mount table signals changes with POLLPRI.
            Ok(f) => match waiter.add_with(f.as_fd(), 1, EpollFlags::EPOLLPRI) {
                Ok(()) => Some(f),
                Err(e) => {
                    tracing::debug!("netns watcher: cannot poll mount table: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::debug!("netns watcher: cannot open mount table: {e}");
                None
            }
        };
        let watcher = RunNetnsWatcher {
            waiter,
            inotify,
            _mounts: mounts,
            dir: dir.to_path_buf(),
            state: Mutex::new(WatchState {
                dir_wd: None,
                parent_wd: None,
                signature: scan_run_dir(dir),
            }),
        };
        {
            let mut st = watcher.lock_state();
            watcher.arm(&mut st);
        }
        Ok(watcher)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the directory, or its parent while the directory is missing.
    fn arm(&self, st: &mut WatchState) {
        if st.dir_wd.is_none() {
            match self.inotify.add_watch(&self.dir, dir_flags()) {
                Ok(wd) => {
                    st.dir_wd = Some(wd);
                    if let Some(pwd) = st.parent_wd.take() {
                        let _ = self.inotify.rm_watch(pwd);
                    }
                    return;
                }
                // Missing on a host that never ran `ip netns add`: watch the parent
                // until it appears, without a word (nothing is wrong).
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    tracing::debug!("netns watcher: cannot watch {}: {e}", self.dir.display())
                }
            }
        }
        if st.dir_wd.is_none() && st.parent_wd.is_none() {
            if let Some(parent) = self.dir.parent() {
                match self.inotify.add_watch(parent, parent_flags()) {
                    Ok(wd) => st.parent_wd = Some(wd),
                    Err(e) => {
                        tracing::debug!("netns watcher: cannot watch {}: {e}", parent.display())
                    }
                }
            }
        }
    }

    /// Descriptor that becomes readable when something may have changed; then call
    /// [`drain`](Self::drain).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.waiter.as_fd()
    }

    /// Consumes pending notifications; true when the set of namespaces in the directory
    /// may have changed (a refresh is due).
    pub fn drain(&self) -> bool {
        let mut changed = false;
        // Clear the readiness of the mount table (edge-like POLLPRI) and inotify; the
        // inotify queue itself is read below.
        let _ = self.waiter.wait(Some(std::time::Duration::ZERO));
        let mut st = self.lock_state();
        let dir_name = self.dir.file_name().map(OsStr::to_os_string);
        loop {
            match self.inotify.read_events() {
                Ok(evs) if !evs.is_empty() => {
                    for ev in evs {
                        if Some(ev.wd) == st.dir_wd {
                            changed = true;
                            if ev.mask.intersects(
                                AddWatchFlags::IN_IGNORED
                                    | AddWatchFlags::IN_DELETE_SELF
                                    | AddWatchFlags::IN_MOVE_SELF,
                            ) {
                                if let Some(wd) = st.dir_wd.take() {
                                    let _ = self.inotify.rm_watch(wd);
                                }
                            }
                        } else if Some(ev.wd) == st.parent_wd && ev.name == dir_name {
                            changed = true;
                        }
                    }
                }
                Ok(_) => break,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::debug!("netns watcher: inotify read failed: {e}");
                    break;
                }
            }
        }
        if st.dir_wd.is_none() {
            self.arm(&mut st);
        }
        let signature = scan_run_dir(&self.dir);
        if signature != st.signature {
            st.signature = signature;
            changed = true;
        }
        changed
    }
}

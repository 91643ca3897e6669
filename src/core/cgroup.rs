//! The cgroup-v2 directory cgroup programs attach to (`-c`). By default bpftune mounts
//! its own cgroup2 hierarchy at `/var/run/bpftune/cgroupv2`: a fresh cgroup2 mount is
//! the root of the unified hierarchy, so programs there see every process.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

pub struct CgroupDir {
    path: PathBuf,
    dir: File,
    /// We mounted it (or adopted our own mount left by a killed daemon): unmount at exit.
    ours: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot create cgroup directory {0}: {1}")]
    Mkdir(String, io::Error),
    #[error("cannot mount cgroup2 at {0}: {1}")]
    Mount(String, nix::Error),
    #[error("{0} is not a cgroup-v2 directory")]
    NotCgroup2(String),
    #[error("cannot open cgroup directory {0}: {1}")]
    Open(String, io::Error),
}

fn is_cgroup2(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

impl CgroupDir {
    /// Uses `path` if it already is a cgroup2 directory, otherwise creates it and mounts
    /// cgroup2 there. `run_dir` marks mounts that are ours even if a previous daemon
    /// created them (so they are cleaned up after a `kill -9`).
    pub fn setup(path: &Path, run_dir: &Path) -> Result<CgroupDir, CgroupError> {
        let shown = path.display().to_string();
        let mut ours = false;
        if !is_cgroup2(path) {
            fs::create_dir_all(path).map_err(|e| CgroupError::Mkdir(shown.clone(), e))?;
            if !is_cgroup2(path) {
                mount(
                    Some("none"),
                    path,
                    Some("cgroup2"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(|e| CgroupError::Mount(shown.clone(), e))?;
                ours = true;
            }
        } else if path.starts_with(run_dir) {
            tracing::debug!("reusing cgroup2 mount {shown} left by an earlier bpftune");
            ours = true;
        }
        if !is_cgroup2(path) {
            return Err(CgroupError::NotCgroup2(shown));
        }
        let dir = File::open(path).map_err(|e| CgroupError::Open(shown, e))?;
        Ok(CgroupDir {
            path: path.to_path_buf(),
            dir,
            ours,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts our mount (programs attached with links must be detached first; the
    /// daemon drops its tuners before this). Same as dropping it.
    pub fn teardown(self) {
        drop(self);
    }
}

impl Drop for CgroupDir {
    /// A start-up that fails after the mount, or a normal exit, never leaves our
    /// cgroup2 mount behind.
    fn drop(&mut self) {
        if !self.ours {
            return;
        }
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::debug!("umount {}: {e}", self.path.display());
        }
        let _ = fs::remove_dir(&self.path);
    }
}

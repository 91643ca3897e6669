//! The cgroup-v2 directory cgroup programs attach to (`-c`). By default bpftune mounts
//! its own cgroup2 hierarchy at `/var/run/bpftune/cgroupv2`: a fresh cgroup2 mount is
//! the root of the unified hierarchy, so programs there see every process.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys;

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

    /// Detaches bpftune programs a killed daemon left on this cgroup, before our own are
    /// attached (reference §1.10): C bpftune attaches its cgroup programs without links,
    /// so after a `kill -9` they stay attached, run on every sysctl write / TCP event and
    /// post into a ring buffer nobody reads. Only programs attached directly (not through
    /// a BPF link), named `bpftune_*`, and whose fd no live process holds are detached: a
    /// link belongs to a live process (or a pin) and goes away with it; a running C
    /// bpftune holds its programs' fds; programs of other tools are never touched.
    /// Returns the number detached.
    pub fn detach_stale_programs(&self) -> usize {
        let linked = cgroup_link_prog_ids();
        let mut detached = 0;
        for (attach_type, kind) in [
            (libbpf_sys::BPF_CGROUP_SYSCTL, "cgroup/sysctl"),
            (libbpf_sys::BPF_CGROUP_SOCK_OPS, "sockops"),
        ] {
            for id in attached_prog_ids(self.fd(), attach_type) {
                if linked.contains(&id) {
                    continue;
                }
                let Some((prog, name)) = prog_by_id(id) else {
                    continue;
                };
                if !is_bpftune_prog(&name) {
                    continue;
                }
                let holders = fd_holders(id);
                if !holders.is_empty() {
                    tracing::info!(
                        "leaving {kind} program '{name}' (id {id}) attached: live process(es) {holders:?} hold it"
                    );
                    continue;
                }
                tracing::info!("detaching old BPF program '{name}' (id {id}, {kind})");
                // SAFETY: both fds are open for the duration of the call.
                let rc = unsafe {
                    libbpf_sys::bpf_prog_detach2(prog.as_raw_fd(), self.dir.as_raw_fd(), attach_type)
                };
                if rc == 0 {
                    detached += 1;
                } else {
                    tracing::error!(
                        "could not detach old BPF program '{name}' (id {id}): {}",
                        io::Error::from_raw_os_error(-rc)
                    );
                }
            }
        }
        detached
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

/// A program of bpftune's: ours and C bpftune's all start with "bpftune_" (the kernel
/// keeps 15 characters: `bpftune_sysctl_`, `bpftune_conn_tu`).
pub fn is_bpftune_prog(name: &str) -> bool {
    name.starts_with("bpftune_")
}

/// Ids of programs attached directly to `cgroup` with `attach_type`.
fn attached_prog_ids(cgroup: BorrowedFd<'_>, attach_type: libbpf_sys::bpf_attach_type) -> Vec<u32> {
    // BPF_F_ALLOW_MULTI allows 64 programs per attach type and cgroup.
    let mut ids = [0u32; 256];
    let mut cnt = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: `ids` has room for `cnt` entries; all pointers are to live locals.
    let rc = unsafe {
        libbpf_sys::bpf_prog_query(
            cgroup.as_raw_fd(),
            attach_type,
            0,
            &mut flags,
            ids.as_mut_ptr(),
            &mut cnt,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot list programs attached to the cgroup: {}",
            io::Error::from_raw_os_error(-rc)
        );
        return Vec::new();
    }
    ids[..(cnt as usize).min(ids.len())].to_vec()
}

/// Program ids attached to any cgroup through a BPF link.
fn cgroup_link_prog_ids() -> HashSet<u32> {
    let mut out = HashSet::new();
    let mut id = 0u32;
    loop {
        // SAFETY: `id` is a live local the call writes the next id into.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut id) } != 0 {
            break;
        }
        // SAFETY: plain syscall wrapper; a negative return is an error, not an fd.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue; // released meanwhile
        }
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid bpf_link_info (plain integers and unions of them),
        // and the kernel requires unused bytes to be zero.
        let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: `info` is writable for `len` bytes.
        let rc = unsafe {
            libbpf_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                (&mut info as *mut libbpf_sys::bpf_link_info).cast(),
                &mut len,
            )
        };
        if rc == 0 && info.type_ == libbpf_sys::BPF_LINK_TYPE_CGROUP {
            out.insert(info.prog_id);
        }
    }
    out
}

/// An fd for program `id` and its (kernel-truncated) name.
fn prog_by_id(id: u32) -> Option<(OwnedFd, String)> {
    // SAFETY: plain syscall wrapper; a negative return is an error, not an fd.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (_, name) = crate::bpf::prog_info(fd.as_fd())?;
    Some((fd, name))
}

/// `prog_id` of a `/proc/<pid>/fdinfo/<fd>` text of a BPF program fd.
pub fn fdinfo_prog_id(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Pids (other than ours) of processes holding an fd of BPF program `id`.
fn fd_holders(id: u32) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog")
                && fs::read_to_string(p.path().join("fdinfo").join(fd.file_name()))
                    .ok()
                    .and_then(|t| fdinfo_prog_id(&t))
                    == Some(id)
        });
        if holds {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftune_programs_by_name() {
        for ours in ["bpftune_sysctl_", "bpftune_conn_tu", "bpftune_sysctl_write"] {
            assert!(is_bpftune_prog(ours), "{ours}");
        }
        for theirs in ["sd_devices", "cilium_sock", "bpftune", "xbpftune_sysctl", ""] {
            assert!(!is_bpftune_prog(theirs), "{theirs}");
        }
    }

    #[test]
    fn prog_id_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t23\nprog_jited:\t1\nprog_tag:\t3b185187f1855c4c\nmemlock:\t4096\nprog_id:\t1234\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(fdinfo_prog_id(text), Some(1234));
        assert_eq!(fdinfo_prog_id("pos:\t0\nlink_type:\tcgroup\n"), None);
    }
}

//! Run time and run count of this daemon's own BPF programs, from the kernel's per-program
//! statistics (`run_time_ns`, `run_cnt`; only counted while `kernel.bpf_stats_enabled=1`).
//!
//! The programs are found through our own descriptor table (/proc/self/fd entries that
//! are `anon_inode:bpf-prog`) rather than through the tuners' objects: a scrape runs on
//! the exporter's thread and needs no access to the tuners, which the event loop owns.

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// One program's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgStat {
    /// Kernel program name (at most 15 characters).
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Statistics of every BPF program this process holds a descriptor of, one entry per
/// program (several descriptors of one program are counted once).
pub fn own_programs() -> Vec<ProgStat> {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for e in rd.flatten() {
        let is_prog = std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("anon_inode:bpf-prog"));
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if !is_prog {
            continue;
        }
        // SAFETY: the descriptor is open in this process (just listed); another thread
        // may close it meanwhile, in which case the info call below fails with EBADF or,
        // if the number was reused, returns some other object's info or EINVAL: a
        // wrong-but-harmless sample at worst, never memory unsafety.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Some((id, stat)) = prog_info(fd) {
            if ids.insert(id) {
                out.push(stat);
            }
        }
    }
    out
}

fn prog_info(fd: BorrowedFd<'_>) -> Option<(u32, ProgStat)> {
    let (info, name) = crate::bpf::prog_info(fd)?;
    Some((
        info.id,
        ProgStat {
            name,
            run_time_ns: info.run_time_ns,
            run_cnt: info.run_cnt,
        },
    ))
}

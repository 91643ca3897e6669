//! Least privilege (reference §1.11) with the `caps` crate.
//!
//! After start-up every thread of the daemon keeps an **empty effective set** and, in its
//! permitted set, only [`KEEP`]; each privileged operation raises exactly what it needs
//! for its own duration with [`raise`] (RAII: the previous effective set comes back when
//! the guard drops). Capabilities are per thread: the threads bpftune spawns (query
//! server, wmem duty cycle, the short-lived setns threads) call [`drop_to_idle`] or
//! [`raise`] on their own thread; a thread spawned from a thread inherits its sets.
//!
//! What needs what (found by running the daemon's tests with each one missing):
//!
//! | operation | capabilities |
//! |-----------|--------------|
//! | `setns(CLONE_NEWNET)` into a namespace | `CAP_SYS_ADMIN` |
//! | reading `/proc/PID/ns/net` of processes with more capabilities than our effective set (namespace discovery, entering by `/proc` path) | `CAP_SYS_PTRACE` |
//! | `/proc/sys` writes: none for the permission itself (proc_sys_permission() grants the owner bits to euid 0, in every namespace, whoever owns the namespace); what the sysctl's handler checks, declared per descriptor (`TunableDesc::write_caps`) and raised for that write alone: static keys (`proc_do_static_key`: `net.core.high_order_alloc_disable`) | `CAP_SYS_ADMIN` |
//! | `/proc/sys` writes of plugins' sysctls (handlers unknown to bpftune; e.g. module autoload) | `CAP_NET_ADMIN` |
//! | `RTM_SETNEIGHTBL` (the socket's opener and the sender are both checked) | `CAP_NET_ADMIN` |
//! | BPF syscalls after start (re-attaching a program, map lookups and updates, program info: kernels before the 2022 refinement of `kernel.unprivileged_bpf_disabled` — 5.15, and 5.14 unless backported — check `CAP_BPF` on every bpf() call while it is set, as Debian and Ubuntu set it; 6.1 and later only on program load and map creation) | `CAP_BPF`, `CAP_PERFMON` |
//! | shutdown: rollback, detaching, unmounting the cgroup2 hierarchy | all of [`KEEP`] |
//!
//! Everything else (memlock, mounting, loading programs) happens during start-up, before
//! the drop. A daemon that runs without some of these (not root, or a reduced bounding
//! set) keeps what it has: [`raise`] raises only what is permitted and the operation
//! then fails with its own error.

use caps::{CapSet, Capability, CapsHashSet};

/// The permitted set after start-up; every other capability is dropped for good.
pub const KEEP: &[Capability] = &[
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
];

/// Capabilities of a sysctl write whose handler may autoload a module or checks
/// `CAP_NET_ADMIN` itself (plugins' sysctls, whose handlers bpftune does not know).
/// Built-in descriptors name their own ([`crate::model::tunable::TunableDesc::write_caps`]).
pub const SYSCTL_WRITE: &[Capability] = &[Capability::CAP_NET_ADMIN];
/// Capabilities of writing a static-key sysctl (`proc_do_static_key` checks
/// `capable(CAP_SYS_ADMIN)`, whatever the file's mode): `net.core.high_order_alloc_disable`.
pub const STATIC_KEY: &[Capability] = &[Capability::CAP_SYS_ADMIN];
/// Capabilities of `RTM_SETNEIGHTBL` (neighbour-table thresholds of the initial namespace).
pub const NEIGH_TABLE: &[Capability] = &[Capability::CAP_NET_ADMIN];
/// Capabilities of entering a network namespace.
pub const ENTER_NETNS: &[Capability] = &[Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE];
/// Capabilities of scanning `/proc/*/ns/net`.
pub const SCAN_PROC: &[Capability] = &[Capability::CAP_SYS_PTRACE];
/// Capabilities of BPF syscalls after start-up.
pub const BPF: &[Capability] = &[Capability::CAP_BPF, Capability::CAP_PERFMON];

#[derive(Debug, thiserror::Error)]
#[error("capabilities: {0}")]
pub struct PrivsError(String);

impl From<caps::errors::CapsError> for PrivsError {
    fn from(e: caps::errors::CapsError) -> Self {
        PrivsError(e.to_string())
    }
}

/// The calling thread only: permitted := permitted ∩ [`KEEP`], effective and inheritable
/// := ∅ (and no ambient capabilities). Returns the permitted set kept.
pub fn drop_to_idle() -> Result<CapsHashSet, PrivsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = KEEP.iter().copied().filter(|c| permitted.contains(c)).collect();
    // Effective first: it must stay a subset of permitted at every step.
    caps::clear(None, CapSet::Effective)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // Ambient capabilities are cleared by the kernel when permitted shrinks; this is for
    // kernels/configurations that keep them (no-op otherwise).
    let _ = caps::clear(None, CapSet::Ambient);
    Ok(keep)
}

/// Raised capabilities of the calling thread; dropping it restores the effective set it
/// found. Not `Send`: capabilities belong to the thread that raised them.
#[must_use = "capabilities are lowered again when the guard is dropped"]
#[derive(Debug)]
pub struct Raised {
    previous: Option<CapsHashSet>,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

/// Raises `wanted` (those of them that are permitted) in the calling thread's effective
/// set until the returned guard drops.
pub fn raise(wanted: &[Capability]) -> Raised {
    let current = match caps::read(None, CapSet::Effective) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("cannot read the effective capability set: {e}");
            return Raised {
                previous: None,
                _thread_bound: std::marker::PhantomData,
            };
        }
    };
    if wanted.iter().all(|c| current.contains(c)) {
        // Already effective (before the drop, or nested): nothing to undo.
        return Raised {
            previous: None,
            _thread_bound: std::marker::PhantomData,
        };
    }
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let mut next = current.clone();
    next.extend(wanted.iter().copied().filter(|c| permitted.contains(c)));
    if next == current {
        return Raised {
            previous: None,
            _thread_bound: std::marker::PhantomData,
        };
    }
    if let Err(e) = caps::set(None, CapSet::Effective, &next) {
        tracing::debug!("cannot raise {wanted:?}: {e}");
        return Raised {
            previous: None,
            _thread_bound: std::marker::PhantomData,
        };
    }
    Raised {
        previous: Some(current),
        _thread_bound: std::marker::PhantomData,
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some(prev) = self.previous.take() {
            if let Err(e) = caps::set(None, CapSet::Effective, &prev) {
                // The operation is over either way; a thread left with raised
                // capabilities is what the idle-state test catches.
                tracing::warn!("cannot lower capabilities again: {e}");
            }
        }
    }
}

/// Names of a set, sorted (for logs and the README's list).
pub fn names(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own (capabilities are per thread), so the test process keeps its
    /// capabilities for the other tests.
    #[test]
    fn drop_then_raise_and_lower_on_one_thread() {
        std::thread::spawn(|| {
            let before = caps::read(None, CapSet::Permitted).expect("read permitted");
            let kept = drop_to_idle().expect("drop");
            assert!(caps::read(None, CapSet::Effective).expect("read").is_empty());
            let permitted = caps::read(None, CapSet::Permitted).expect("read");
            assert_eq!(permitted, kept);
            assert!(permitted.iter().all(|c| KEEP.contains(c) && before.contains(c)));
            if permitted.contains(&Capability::CAP_SYS_ADMIN) {
                {
                    let _g = raise(&[Capability::CAP_SYS_ADMIN]);
                    let eff = caps::read(None, CapSet::Effective).expect("read");
                    assert_eq!(names(&eff), vec!["CAP_SYS_ADMIN".to_string()]);
                    {
                        // Nested: already effective, nothing to undo on this level.
                        let _h = raise(&[Capability::CAP_SYS_ADMIN]);
                    }
                    assert!(caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).expect("has"));
                }
                assert!(caps::read(None, CapSet::Effective).expect("read").is_empty());
                // Not in the permitted set any more: cannot come back.
                let _g = raise(&[Capability::CAP_SYS_RESOURCE]);
                assert!(!caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_RESOURCE).expect("has"));
            }
        })
        .join()
        .expect("thread");
    }
}

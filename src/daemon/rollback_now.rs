//! `--rollback-now`: restore the originals a stopped bpftune persisted in
//! `<state_dir>/originals.json` and exit, without loading any BPF program. This is the
//! one-shot form of `-R` that the Debian package's prerm and the Kubernetes preStop hook
//! need: they run after the daemon has stopped (or while it is being replaced), when
//! there is no daemon left whose exit could roll back.
//!
//! It goes through the same [`Engine::rollback`] as `-R`, so the rule is the same: a
//! sysctl is restored only if it still holds the value bpftune last wrote; a value
//! somebody changed since is left alone. Only built-in tuners are registered (no plugin
//! is opened here), so the saved originals of sysctls that only a plugin manages are
//! kept in the state file, not written: a daemon run that loads the plugin, with `-R`,
//! restores them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};

use super::instance::{InstanceError, State};

use crate::engine::Engine;
use crate::kernel::netns::{NetnsRegistry, DEFAULT_PROC_ROOT, DEFAULT_RUN_NETNS};
use crate::kernel::sysctl::ProcSysctl;
use crate::model::tunable::Rate;
use crate::record::ledger::{Ledger, TunerMeta};
use crate::record::originals::{boot_id, StateStore};
use crate::tuner::{MemoryFacts, TunerState};

/// What a one-shot rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackReport {
    /// Entries found in the state file (this boot's).
    pub found: usize,
    /// Entries still in the state file afterwards because their restore failed.
    pub left: usize,
    /// Entries kept, unrestored, for a run that loads their tuner: sysctls only a
    /// plugin manages (this command registers built-in tuners only, and never opens a
    /// plugin).
    pub kept: usize,
}

/// Restores the persisted originals in `state_dir`. Refuses while a daemon answers on
/// the query socket in `run_dir`: that daemon owns the state file and would write over
/// the restored values (stop it first, or let its own `-R` do the work). A daemon that
/// is stopping is waited for (its own `-R` rollback and last state write come first),
/// and the run directory's lock is held meanwhile, so no daemon starts in the middle.
pub fn run(state_dir: &Path, run_dir: &Path) -> anyhow::Result<RollbackReport> {
    let running = || {
        anyhow!(
            "a bpftune daemon is running (it answers on {}); stop it before --rollback-now",
            run_dir.display()
        )
    };
    // The lock first: a daemon that is stopping still answers on its socket until it
    // has exited. No usable run directory: no daemon can run on it (it refuses it too).
    // SAFETY: geteuid has no preconditions.
    let _lock = if super::run_dir::check(run_dir, unsafe { libc::geteuid() }).is_ok() {
        match super::instance::acquire(run_dir, State::Rollback, super::instance::TAKEOVER_WAIT) {
            Ok((lock, _)) => Some(lock),
            Err(InstanceError::Running { .. }) => return Err(running()),
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    // Lock or not, a daemon that answers owns the state file (one that takes no lock:
    // C bpftune, or an older bpftune-rs).
    if crate::report::query::client(run_dir, None, "tuners").is_ok() {
        return Err(running());
    }
    let (store, inherited) = StateStore::open(state_dir, &boot_id());
    let found = inherited.map(|(n, _)| n).unwrap_or(0);
    if found == 0 {
        return Ok(RollbackReport {
            found: 0,
            left: 0,
            kept: 0,
        });
    }
    let registry = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into())
        .context("cannot identify our network namespace")?;
    let mut engine = Engine::new(
        Rate::default(),
        Box::new(crate::kernel::netlink::NeighTableStore::new(ProcSysctl::default())),
        Box::new(registry),
        Arc::new(Mutex::new(Ledger::default())),
        store,
        // Rollback writes originals only; no tuner decides anything here.
        MemoryFacts {
            free_buffer_pages: 0,
            page_size: 4096,
        },
    );
    // Rollback restores only sysctls a known tuner manages (the state file must not be a
    // way to write arbitrary sysctls as root): register every built-in tuner's tunables,
    // without loading any of them.
    for t in crate::tuners::all() {
        engine.add_tuner(TunerMeta {
            name: t.name(),
            state: TunerState::Inactive,
            tunables: t.tunables(),
            scenarios: t.scenarios(),
        });
    }
    let kept = engine.rollback();
    let left = engine.store().entries().len().saturating_sub(kept);
    Ok(RollbackReport { found, left, kept })
}

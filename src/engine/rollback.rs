//! `-R`: restoring the persisted originals.

use super::apply::{validate, Invalid};
use super::Engine;
use crate::kernel::netns::Target;
use crate::model::tunable::SysctlValue;

impl Engine {
    /// `-R`: restore every sysctl bpftune changed (this run and, from the persisted
    /// originals, earlier runs of this boot) unless someone else changed it since.
    /// Returns how many saved originals were kept, unrestored, because no registered
    /// tuner manages their sysctl (a plugin that is not loaded in this run).
    pub fn rollback(&mut self) -> usize {
        let entries = self.store.entries().to_vec();
        let mut kept = 0;
        let mut kept_names = std::collections::BTreeSet::new();
        if self.observe {
            // Observe mode writes nothing, not even a rollback: values an earlier,
            // enforcing run left stay recorded for a later -R run without --observe.
            if !entries.is_empty() {
                tracing::info!(
                    "observe mode: not rolling back {} sysctl value(s) saved by an earlier bpftune; run with -R and without --observe to restore them",
                    entries.len()
                );
            }
            return 0;
        }
        for e in entries {
            // Only sysctls a loaded tuner manages, with values that pass its limits:
            // the state file must not be a way to write arbitrary sysctls as root.
            let desc = self
                .metas
                .iter()
                .find_map(|m| m.tunables.iter().find(|d| d.name == e.sysctl).cloned());
            let Some(desc) = desc else {
                // Most likely a plugin's sysctl, and this run (a restart without the
                // plugin, or --rollback-now, which knows built-in tuners only) does not
                // load it. Not written, but not forgotten either: a later run that
                // loads the plugin restores it with -R. One line per sysctl, however
                // many namespaces it was changed in.
                kept += 1;
                if !kept_names.insert(e.sysctl.clone()) {
                    continue;
                }
                tracing::warn!(
                    "not rolling back '{}': no loaded tuner manages it; keeping its saved original for a run that loads its tuner (start bpftune with that plugin and -R to restore it)",
                    e.sysctl
                );
                continue;
            };
            // Originals may be negative (written by the kernel or an administrator); the
            // shape must still be the tunable's.
            if let Some(why) = validate(&desc, &e.original)
                .err()
                .filter(|why| *why != Invalid::Negative)
            {
                tracing::warn!("not rolling back '{}' from the saved originals: {why}", e.sysctl);
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            let target = if e.global || self.ns.is_global(e.netns_cookie) {
                Some(Target::Global)
            } else {
                self.ns.locate(e.netns_cookie, e.netns_ino)
            };
            let Some(target) = target else {
                tracing::debug!(
                    "not rolling back '{}': netns (cookie {}) is gone",
                    e.sysctl,
                    e.netns_cookie
                );
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            };
            let (is_string, n) = match &e.original {
                SysctlValue::Str(_) => (true, 1),
                SysctlValue::Ints(v) => (false, v.len() as u8),
            };
            let live = match self.sysctl.read(&target, &e.sysctl, is_string, n) {
                Ok(v) => v,
                Err(err) => {
                    tracing::info!("cannot roll back '{}': {err}", e.sysctl);
                    continue;
                }
            };
            let where_ = if e.global {
                String::new()
            } else {
                format!(" in netns (cookie {})", e.netns_cookie)
            };
            if live == e.original {
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            if self.admin_owned.contains(&(e.netns_cookie, e.sysctl.clone())) || !e.is_ours(&live) {
                tracing::info!("Not rolling back '{}'{where_}: its value ({live}) was set by someone else after bpftune set ({}); leaving the administrator's value", e.sysctl, e.last_written);
                let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                continue;
            }
            tracing::info!(
                tunable = e.sysctl.as_str(),
                netns = %if e.global { "global".to_string() } else { e.netns_cookie.to_string() },
                netns_cookie = e.netns_cookie,
                old = %live,
                new = %e.original,
                "Rolling back sysctl values for '{}'{where_} from ({}) to original values ({})...",
                e.sysctl,
                live.c_style(),
                e.original.c_style()
            );
            match self.sysctl.write(&target, &e.sysctl, &e.original) {
                Ok(()) => {
                    self.stats.rollback_restored();
                    let _ = self.store.remove(e.netns_cookie, &e.sysctl);
                }
                Err(err) => tracing::error!("rollback of '{}' failed: {err}", e.sysctl),
            }
        }
        kept
    }
}

//! What belongs to the administrator and to each namespace: per-namespace tuner
//! states, sysctls someone else wrote, namespace churn, and the one-time messages.

use super::{lock, Engine};
use crate::kernel::netns::{NetnsDiff, Target};
use crate::kernel::sysctl::SysctlError;
use crate::model::tunable::{sysctl_name, TunableDesc, TunableKind};
use crate::record::stats::NsLabel;
use crate::tuner::{Ns, NsState, TunerState};

/// A one-time message already logged (the engine's `said` set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Said {
    /// "could not update" of a global sysctl (every later failure is only counted).
    Fail(&'static str),
    /// "Skipping update": the tuner is disabled for that sysctl in that namespace.
    Skip {
        tuner: usize,
        tunable: &'static str,
        cookie: u64,
    },
    /// The sysctl is not available on this kernel.
    Missing(&'static str),
    /// Observe mode: the proposal of `value` (as displayed) was logged.
    Would {
        tuner: usize,
        tunable: &'static str,
        value: String,
        cookie: u64,
    },
}

impl Said {
    /// The namespace the message is about, if it is about one: those go with it.
    fn cookie(&self) -> Option<u64> {
        match self {
            Said::Skip { cookie, .. } | Said::Would { cookie, .. } => Some(*cookie),
            Said::Fail(_) | Said::Missing(_) => None,
        }
    }
}

impl Engine {
    pub(super) fn cookie_state(&self, tuner: usize, cookie: u64) -> NsState {
        self.ns_state
            .get(&(tuner, cookie))
            .copied()
            .unwrap_or(NsState::Active)
    }

    pub fn ns_state(&self, tuner: usize, ns: Ns) -> NsState {
        self.cookie_state(tuner, self.cookie(ns))
    }

    /// Should an event from `ns` reach `tuner`? (active tuner, namespace not manual/gone)
    pub fn deliverable(&self, tuner: usize, ns: Ns) -> bool {
        matches!(
            self.tuner_state(tuner),
            Some(TunerState::Active | TunerState::Manual)
        ) && self.ns_state(tuner, ns) == NsState::Active
    }

    /// Drops bookkeeping for namespaces that are gone (keeps maps bounded under churn).
    pub fn forget_netns(&mut self, cookie: u64) {
        self.ns_state.retain(|(_, c), _| *c != cookie);
        self.stats.forget_netns(cookie);
        self.admin_owned.retain(|(c, _)| *c != cookie);
        self.overlay.retain(|(c, _), _| *c != cookie);
        if !self.ns.is_global(cookie) {
            lock(&self.ledger).forget_netns(cookie);
        }
        self.said.retain(|k| k.cookie() != Some(cookie));
        if let Err(e) = self.store.forget_netns(cookie) {
            tracing::debug!("could not update {}: {e}", self.store.path().display());
        }
    }

    /// Rescans namespaces: vanished ones become gone for every tuner and their
    /// bookkeeping is dropped (bounded memory under namespace churn).
    pub fn refresh_netns(&mut self) -> NetnsDiff {
        // The registry logs "netns created/vanished (cookie N, ...)" at debug.
        let diff = {
            let _caps = crate::kernel::privs::raise(crate::kernel::privs::SCAN_PROC);
            self.ns.refresh()
        };
        for info in &diff.vanished {
            self.forget_netns(info.cookie);
        }
        self.stats.set_namespaces(
            self.ns
                .list()
                .into_iter()
                .map(|i| {
                    let label = NsLabel {
                        name: i.name,
                        ino: i.ino,
                    };
                    (i.cookie, label)
                })
                .collect(),
        );
        // Growth under churn is the failure mode to watch (C bpftune #93/#188): the
        // sizes go to the debug log whenever they change, which the soak test samples.
        let sizes = self.sizes();
        if sizes != self.sizes_logged {
            tracing::debug!("bookkeeping sizes: {sizes}");
            self.sizes_logged = sizes;
        }
        diff
    }

    /// Sizes of every per-namespace map, as `key=N` pairs.
    pub fn sizes(&self) -> String {
        // One guard: two lock() calls in one format! would hold the first guard while
        // taking the second (a self-deadlock).
        // Originals and spans count per-namespace entries only: global ones are bounded by
        // the number of tunables and may appear at any time (the first change of a global
        // sysctl); per-namespace ones must go with their namespace.
        let (changes, spans) = {
            let l = lock(&self.ledger);
            (l.records().count(), l.spans().filter(|s| !s.global).count())
        };
        format!(
            "netns_known={} ns_states={} admin_owned={} said={} originals={} changes={} spans={}",
            self.ns.known_len(),
            self.ns_state.len(),
            self.admin_owned.len(),
            self.said.len(),
            self.store.entries().iter().filter(|e| !e.global).count(),
            changes,
            spans
        )
    }

    pub(super) fn say_once(&mut self, key: Said, msg: impl FnOnce() -> String, notice: bool) {
        if self.said.insert(key) {
            if notice {
                tracing::info!("{}", msg());
            } else {
                tracing::debug!("{}", msg());
            }
        }
    }

    /// Once, after start-up registered the tuners: which of their sysctls this kernel
    /// lacks (every `net.ipv6.*` one when booted with `ipv6.disable=1`, newer sysctls on
    /// older kernels), said in one line. Those names are marked as said, so a later
    /// proposal for one is dropped without a line of its own: no flood, and the tuners
    /// keep running without them. Returns the missing names.
    pub fn report_missing_tunables(&mut self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = Vec::new();
        let mut missing: Vec<&'static str> = Vec::new();
        let descs: Vec<TunableDesc> = self
            .metas
            .iter()
            .filter(|m| m.state == TunerState::Active)
            .flat_map(|m| m.tunables.iter().copied())
            .filter(|d| d.kind == TunableKind::Sysctl)
            .collect();
        for desc in descs {
            if all.contains(&desc.name) {
                continue;
            }
            all.push(desc.name);
            if let Err(SysctlError::NotFound(_)) = self.read_desc(&desc, &Target::Global) {
                missing.push(desc.name);
                self.said.insert(Said::Missing(desc.name));
            }
        }
        if let Some(line) = missing_tunables_line(&missing, &all) {
            tracing::info!("{line}");
        }
        missing
    }

    /// Another process wrote `path` in `ns`: every tuner managing that sysctl hands that
    /// namespace over to the administrator.
    pub fn admin_write(&mut self, ns: Ns, path: &str, pid: i32, comm: &str) {
        let name = sysctl_name(path);
        let cookie = self.cookie(ns);
        let cmd = cmdline(pid).unwrap_or_else(|| {
            if comm.is_empty() {
                "?".to_string()
            } else {
                comm.to_string()
            }
        });
        let mut any = false;
        for t in 0..self.metas.len() {
            let meta = &self.metas[t];
            if !meta
                .tunables
                .iter()
                .any(|d| d.kind == TunableKind::Sysctl && d.name == name)
            {
                continue;
            }
            any = true;
            let tname = meta.name;
            tracing::info!(
                tuner = tname,
                tunable = name.as_str(),
                netns = %if ns.is_global() { "global".to_string() } else { cookie.to_string() },
                netns_cookie = cookie,
                "pid {pid}, cmd '{cmd}' modified sysctl '{name}' that tuner '{tname}' uses; disabling '{tname}' for namespace cookie {cookie}"
            );
            self.ns_state.insert((t, cookie), NsState::Manual);
            self.stats.set_ns_state(t, cookie, NsState::Manual);
            tracing::debug!("setting state of netns (cookie {cookie}) to manual for '{tname}'");
            if ns.is_global() {
                self.set_tuner_state(t, TunerState::Manual);
            }
        }
        if any {
            self.overlay.remove(&(cookie, name.clone()));
            self.admin_owned.insert((cookie, name));
        }
    }
}

/// First element of /proc/<pid>/cmdline, if the process still exists.
fn cmdline(pid: i32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            b.split(|&c| c == 0)
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
        })
        .filter(|s| !s.is_empty())
}

/// The one start-up line about managed sysctls this kernel lacks (None if it has them
/// all). When every `net.ipv6.*` one is missing, IPv6 itself is off (`ipv6.disable=1`
/// or a kernel built without it), which is the likely question of whoever reads the log.
pub fn missing_tunables_line(missing: &[&str], all: &[&str]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let v6 = |n: &str| n.starts_with("net.ipv6.");
    let all_v6 = all.iter().filter(|n| v6(n)).count();
    let missing_v6 = missing.iter().filter(|n| v6(n)).count();
    if all_v6 > 0 && missing_v6 == all_v6 {
        let others: Vec<&str> = missing.iter().copied().filter(|n| !v6(n)).collect();
        let also = if others.is_empty() {
            String::new()
        } else {
            format!("; also not available: {}", others.join(", "))
        };
        return Some(format!(
            "IPv6 is not available on this kernel (no net.ipv6 sysctls: booted with ipv6.disable=1?): its {missing_v6} tunable(s) are not tuned{also}; the tuners run without them"
        ));
    }
    Some(format!(
        "sysctl(s) not available on this kernel, not tuned: {}; the tuners run without them",
        missing.join(", ")
    ))
}

//! Applying one proposal: every check before the write, the write, and its record.

use super::emit::{Change, Kind, Place};
use super::{Engine, Said};
use crate::kernel::netns::Target;
use crate::kernel::sysctl::SysctlError;
use crate::model::event::monotonic_ns;
use crate::model::tunable::{SysctlValue, TunableDesc};
use crate::tuner::{NsState, Outcome, Proposal};

impl Engine {
    pub(super) fn apply(&mut self, tuner: usize, p: Proposal) -> Outcome {
        let Some(desc) = self.desc(tuner, p.tunable) else {
            return Outcome::Failed(format!("no tunable {}", p.tunable));
        };
        let tname = self.metas[tuner].name;
        let Some((cookie, target)) = self.target_for(&desc, p.ns) else {
            // Not found *now* (e.g. a brand-new container, rate-limited rescans): drop
            // this event only; "gone" is decided by the registry's vanish reports.
            tracing::debug!(
                "netns (cookie {}) not found for '{}'; dropping the event for '{tname}'",
                self.cookie(p.ns),
                desc.name
            );
            return Outcome::NoNamespace;
        };
        if self.cookie_state(tuner, cookie) != NsState::Active
            || self.admin_owned.contains(&(cookie, desc.name.to_string()))
        {
            let key = Said::Skip {
                tuner,
                tunable: desc.name,
                cookie,
            };
            self.say_once(
                key,
                || {
                    format!(
                        "Skipping update of '{}' ; tuner '{tname}' is disabled in netns (cookie {cookie})",
                        desc.name
                    )
                },
                true,
            );
            return Outcome::Disabled;
        }
        if desc.read_only {
            tracing::error!(
                "refusing to write {} = {}: bpftune only reads it",
                desc.name,
                p.value
            );
            return Outcome::Failed(format!("'{}' is read-only for bpftune", desc.name));
        }
        if let Err(why) = validate(&desc, &p.value) {
            tracing::error!("refusing to write {} = {}: {why}", desc.name, p.value);
            return Outcome::Failed(why.to_string());
        }
        let live = match self.read_desc(&desc, &target) {
            Ok(v) => v,
            Err(SysctlError::NotFound(_)) => {
                let optional = desc.optional;
                self.say_once(
                    Said::Missing(desc.name),
                    || {
                        format!(
                            "sysctl '{}' is not available on this system{}; not tuning it",
                            desc.name,
                            if optional { " (optional)" } else { "" }
                        )
                    },
                    true,
                );
                return Outcome::Missing;
            }
            Err(e) => return self.failed(tuner, cookie, &target, &desc, e.to_string()),
        };
        let real = live.clone();
        let live = if self.observe {
            self.effective(cookie, desc.name, live)
        } else {
            live
        };
        if p.expect.as_ref().is_some_and(|e| *e != live) {
            tracing::debug!(
                "dropping stale proposal for '{}': live ({live}) != premise ({})",
                desc.name,
                p.expect.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            self.stats.event_stale(tuner);
            return Outcome::Stale;
        }
        if live == p.value {
            return Outcome::Unchanged;
        }
        if self.observe {
            return self.propose(tuner, cookie, &target, &desc, p, real, live);
        }
        let global = matches!(target, Target::Global);
        let ino = match &target {
            Target::Global => 0,
            Target::Netns(info) => info.ino,
        };
        let original = match self
            .store
            .before_write(desc.name, cookie, ino, global, &live, &p.value)
        {
            Ok(o) => o,
            Err(e) => {
                // No write without a rollback record: after a crash the original would
                // be lost. Said once; every later proposal retries (space may return).
                if !self.persist_warned {
                    self.persist_warned = true;
                    tracing::warn!("cannot persist original values to {}: {e}; not changing any sysctl until it can be saved (a change could not be rolled back after a crash)", self.store.path().display());
                }
                return Outcome::Failed(format!("cannot persist the original of '{}': {e}", desc.name));
            }
        };
        if let Err(e) = crate::kernel::sysctl::write_desc(self.sysctl.as_ref(), &target, &desc, &p.value) {
            self.stats.write_failed(tuner, desc.name, &e.errno_name());
            return self.failed(tuner, cookie, &target, &desc, e.to_string());
        }
        let write_ts = monotonic_ns();
        let event_ts = p.event_ts_ns;
        self.emit(Change {
            tuner,
            tunable: p.tunable,
            name: desc.name,
            scenario: p.scenario,
            place: Place::of(&target, cookie),
            values: Some((live, p.value)),
            message: &p.message,
            kind: Kind::Applied {
                original,
                event_ts_ns: event_ts,
                write_ts_ns: write_ts,
            },
        });
        if event_ts > 0 {
            tracing::debug!(
                "reaction: {} us from event to write of '{}'",
                write_ts.saturating_sub(event_ts) / 1000,
                desc.name
            );
        }
        Outcome::Applied
    }

    fn failed(
        &mut self,
        tuner: usize,
        cookie: u64,
        target: &Target,
        desc: &TunableDesc,
        why: String,
    ) -> Outcome {
        if matches!(target, Target::Netns(_)) {
            // C bpftune #103: stop retrying a namespace we cannot write.
            self.ns_state.insert((tuner, cookie), NsState::Gone);
            self.stats.set_ns_state(tuner, cookie, NsState::Gone);
            tracing::info!(
                "could not update '{}' in netns (cookie {cookie}): {why}; not tuning that namespace any more",
                desc.name
            );
        } else if self.said.insert(Said::Fail(desc.name)) {
            // Once per sysctl (every later proposal fails the same way and is counted
            // in bpftune_write_failures_total), as a warning: a tuner that cannot write
            // is not doing its job.
            tracing::warn!("could not update '{}': {why}", desc.name);
        }
        Outcome::Failed(why)
    }
}

/// Why a value fails [`validate`]; the text is what the logs and `Outcome::Failed` say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Invalid {
    #[error("string too long or multi-line")]
    String,
    #[error("{got} values for a {want}-value sysctl")]
    Count { got: usize, want: u8 },
    /// The one check a saved original may fail (see [`Engine::rollback`]).
    #[error("negative value")]
    Negative,
    #[error("value type does not match the tunable")]
    Type,
}

/// Generic sanity limits every write must pass (tuners clamp more tightly).
pub(super) fn validate(desc: &TunableDesc, value: &SysctlValue) -> Result<(), Invalid> {
    match value {
        SysctlValue::Str(s) if desc.string => {
            if s.contains('\n') || s.len() > 127 {
                return Err(Invalid::String);
            }
            Ok(())
        }
        SysctlValue::Ints(v) if !desc.string => {
            if v.len() != usize::from(desc.num_values) {
                return Err(Invalid::Count {
                    got: v.len(),
                    want: desc.num_values,
                });
            }
            if v.iter().any(|x| *x < 0) {
                return Err(Invalid::Negative);
            }
            Ok(())
        }
        _ => Err(Invalid::Type),
    }
}

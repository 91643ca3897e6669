//! Which attach flavour each hook slot uses.
//!
//! A candidate is supported only if it loads **and** attaches: loading a `raw_tp`
//! program does not check that the tracepoint exists, and a kprobe program loads on a
//! kernel without kprobes. Probing therefore loads and attaches a throw-away copy and
//! releases it at once ([`probe`], used by `-S` and by the daemon's fallback).
//!
//! The daemon does not probe first ([`start`]): it loads and attaches the first
//! allowed candidate of every slot for real, which is what works on a kernel the
//! candidate lists were written for. Only if that fails does it probe slot by slot and
//! start again with the first candidate of each slot that attaches. A tuner is lost
//! only when a required slot has no candidate that attaches.

use std::fmt;

use libbpf_rs::ErrorKind;

use crate::bpf::{Candidate, HookError, Slot, Stage};

/// Why a probe said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `None` when the probe is not about a program (a map, a socket option).
    pub stage: Option<Stage>,
    /// "EPERM", or the first line of the error.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Some(Stage::Load) => write!(f, "cannot load ({})", self.reason),
            Some(Stage::Attach) => write!(f, "loads but cannot attach ({})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Result of one feature probe (cilium/ebpf's tri-state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// The kernel said no (EPERM, EINVAL, ENOENT, ESRCH, EOPNOTSUPP, ...).
    Unsupported(Failure),
    /// Something else went wrong (e.g. ENOMEM): we cannot tell.
    Inconclusive(Failure),
}

impl Support {
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }

    /// The stage that failed, if any.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Support::Supported => None,
            Support::Unsupported(f) | Support::Inconclusive(f) => f.stage,
        }
    }

    /// Unsupported for a reason that is not a libbpf error (e.g. a socket option).
    pub fn unsupported(reason: impl Into<String>) -> Support {
        Support::Unsupported(Failure {
            stage: None,
            reason: reason.into(),
        })
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Supported => f.write_str("supported"),
            Support::Unsupported(why) => write!(f, "unsupported: {why}"),
            Support::Inconclusive(why) => write!(f, "inconclusive: {why}"),
        }
    }
}

/// Maps a libbpf error at `stage` to a tri-state answer.
pub fn classify(err: &libbpf_rs::Error, stage: Option<Stage>) -> Support {
    // Alternate form: libbpf-rs keeps the errno in the source chain.
    let text = format!("{err:#}");
    let failure = Failure {
        stage,
        reason: short_reason(&text),
    };
    match err.kind() {
        ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::InvalidInput
        | ErrorKind::InvalidData
        | ErrorKind::Unsupported => Support::Unsupported(failure),
        _ if text.contains("No such process") || text.contains("not supported") => {
            Support::Unsupported(failure)
        }
        _ => Support::Inconclusive(failure),
    }
}

/// Maps a trial's error to a tri-state answer.
pub fn classify_hook(err: &HookError) -> Support {
    classify(err.error(), Some(err.stage()))
}

/// "Operation not permitted (os error 1)" -> "EPERM"; other texts: first line.
fn short_reason(text: &str) -> String {
    let code = text
        .rsplit_once("(os error ")
        .and_then(|(_, rest)| rest.split(')').next())
        .and_then(|n| n.parse::<i32>().ok());
    match code {
        Some(c) => format!("{:?}", nix::errno::Errno::from_raw(c)),
        None => text.lines().next().unwrap_or(text).chars().take(80).collect(),
    }
}

/// What was chosen for one slot, and what was tried.
#[derive(Debug, Clone)]
pub struct SlotChoice {
    pub slot: &'static str,
    pub required: bool,
    pub chosen: Option<Candidate>,
    /// Candidates tried, in order, with their answer. Empty when the slot has no
    /// candidate allowed in this mode.
    pub attempts: Vec<(Candidate, Support)>,
}

impl SlotChoice {
    /// The first allowed candidate was not the one chosen (or none was).
    pub fn fell_back(&self) -> bool {
        matches!(self.attempts.first(), Some((c, _)) if Some(*c) != self.chosen)
    }
}

/// The flavours a tuner uses (or would use), one per slot.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub choices: Vec<SlotChoice>,
    /// The real start failed even with these choices.
    pub error: Option<String>,
}

impl Plan {
    pub fn programs(&self) -> Vec<&'static str> {
        self.choices
            .iter()
            .filter_map(|c| c.chosen.map(|c| c.prog))
            .collect()
    }

    /// Every required slot has a flavour that attaches.
    pub fn complete(&self) -> bool {
        self.choices.iter().all(|c| !c.required || c.chosen.is_some())
    }

    /// The tuner runs (or, for `-S`, would run).
    pub fn runs(&self) -> bool {
        self.complete() && self.error.is_none()
    }

    /// Runs, and every required slot uses a full-mode flavour (tp_btf, fentry, cgroup).
    pub fn full(&self) -> bool {
        self.runs()
            && self
                .choices
                .iter()
                .filter(|c| c.required)
                .all(|c| c.chosen.is_some_and(|x| x.flavour.full()))
    }

    /// Required slots without a flavour that attaches.
    pub fn missing(&self) -> Vec<&'static str> {
        self.choices
            .iter()
            .filter(|c| c.required && c.chosen.is_none())
            .map(|c| c.slot)
            .collect()
    }

    /// Required slots that only attach with a legacy-mode flavour.
    pub fn legacy_hooks(&self) -> Vec<(&'static str, Candidate)> {
        self.choices
            .iter()
            .filter(|c| c.required)
            .filter_map(|c| c.chosen.filter(|x| !x.flavour.full()).map(|x| (c.slot, x)))
            .collect()
    }

    /// Why the tuner does not run; `None` if it does.
    pub fn why_not(&self) -> Option<String> {
        let missing = self.missing();
        if !missing.is_empty() {
            return Some(format!(
                "no attachable flavour for required hook{} {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            ));
        }
        self.error.as_ref().map(|e| format!("start failed: {e}"))
    }
}

fn usable(s: &Slot, legacy: bool) -> impl Iterator<Item = Candidate> + '_ {
    s.candidates
        .iter()
        .copied()
        .filter(move |c| !legacy || c.flavour.conservative())
}

/// Chooses one flavour per slot by throw-away load+attach trials, slot by slot.
///
/// `trial(progs)` must load a fresh object with exactly `progs` enabled, attach it and
/// release it. The first candidate that attaches wins; with `thorough` (`-S`) every
/// candidate is tried so that the report shows them all.
pub fn probe(
    slots: &[Slot],
    legacy: bool,
    thorough: bool,
    trial: &mut dyn FnMut(&[&'static str]) -> Result<(), HookError>,
) -> Plan {
    let mut choices = Vec::with_capacity(slots.len());
    for s in slots {
        let mut choice = SlotChoice {
            slot: s.name,
            required: s.required,
            chosen: None,
            attempts: Vec::new(),
        };
        for c in usable(s, legacy) {
            let support = match trial(&[c.prog]) {
                Ok(()) => Support::Supported,
                Err(e) => classify_hook(&e),
            };
            let ok = support.is_supported();
            choice.attempts.push((c, support));
            if ok && choice.chosen.is_none() {
                choice.chosen = Some(c);
                if !thorough {
                    break;
                }
            }
        }
        choices.push(choice);
    }
    Plan { choices, error: None }
}

/// The first allowed candidate of every slot, untried.
fn first_choices(slots: &[Slot], legacy: bool) -> Plan {
    Plan {
        choices: slots
            .iter()
            .map(|s| {
                let first = usable(s, legacy).next();
                SlotChoice {
                    slot: s.name,
                    required: s.required,
                    chosen: first,
                    attempts: first.map(|c| vec![(c, Support::Supported)]).unwrap_or_default(),
                }
            })
            .collect(),
        error: None,
    }
}

/// How the daemon loads one tuner.
pub trait Hooks {
    type Error: fmt::Display;
    /// A throw-away load + attach of exactly `progs`, released before returning.
    fn trial(&mut self, progs: &[&'static str]) -> Result<(), HookError>;
    /// The real load and attach of exactly `progs`; on error nothing stays attached.
    fn start(&mut self, progs: &[&'static str]) -> Result<(), Self::Error>;
}

/// Starts a tuner: first with the first allowed candidate of every slot (one real
/// load, no probing), then, if that fails, with the first candidate of each slot that
/// attaches in a trial. The plan says what runs: [`Plan::runs`] is false when a
/// required slot has no working candidate or the second start failed too.
pub fn start<H: Hooks>(tuner: &str, slots: &[Slot], legacy: bool, hooks: &mut H) -> Plan {
    let first = first_choices(slots, legacy);
    if !first.complete() {
        // A required slot has no candidate allowed in this mode: nothing to try.
        return first;
    }
    match hooks.start(&first.programs()) {
        Ok(()) => return first,
        Err(e) => tracing::debug!("{tuner}: first-choice hooks did not start ({e}); probing each hook"),
    }
    let mut plan = probe(slots, legacy, false, &mut |progs| hooks.trial(progs));
    if plan.complete() {
        if let Err(e) = hooks.start(&plan.programs()) {
            plan.error = Some(e.to_string());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::Flavour;
    use std::collections::HashSet;

    /// Shaped like a real tuner's slots.
    const SLOTS: &[Slot] = &[
        Slot {
            name: "rmem",
            required: true,
            candidates: &[
                Candidate::new("rmem_btf", Flavour::TpBtf, "grow"),
                Candidate::new("rmem_raw", Flavour::RawTp, "grow"),
                Candidate::new("rmem_fentry", Flavour::Fentry, "f"),
                Candidate::new("rmem_kprobe", Flavour::Kprobe, "f"),
            ],
        },
        Slot {
            name: "wmem",
            required: true,
            candidates: &[
                Candidate::new("wmem_btf", Flavour::TpBtf, "sendmsg"),
                Candidate::new("wmem_raw", Flavour::RawTp, "sendmsg"),
                Candidate::new("wmem_fentry", Flavour::Fentry, "g"),
                Candidate::new("wmem_kprobe", Flavour::Kprobe, "g"),
            ],
        },
        Slot {
            name: "extra",
            required: false,
            candidates: &[
                Candidate::new("extra_btf", Flavour::TpBtf, "x"),
                Candidate::new("extra_fentry", Flavour::Fentry, "y"),
            ],
        },
    ];

    fn err(errno: i32) -> libbpf_rs::Error {
        libbpf_rs::Error::from(std::io::Error::from_raw_os_error(errno))
    }

    /// A kernel: programs that fail to load (EPERM, like fentry here) and programs
    /// that load but whose target is missing (ENOENT, like raw_tp on 6.1).
    #[derive(Default)]
    struct FakeKernel {
        load_fails: HashSet<&'static str>,
        attach_fails: HashSet<&'static str>,
        trials: Vec<Vec<&'static str>>,
        starts: Vec<Vec<&'static str>>,
        /// Programs attached for real by the last successful start.
        running: Vec<&'static str>,
    }

    impl FakeKernel {
        fn new(load_fails: &[&'static str], attach_fails: &[&'static str]) -> FakeKernel {
            FakeKernel {
                load_fails: load_fails.iter().copied().collect(),
                attach_fails: attach_fails.iter().copied().collect(),
                ..FakeKernel::default()
            }
        }

        fn load_attach(&self, progs: &[&'static str]) -> Result<(), HookError> {
            if progs.iter().any(|p| self.load_fails.contains(p)) {
                return Err(HookError::Load(err(libc::EPERM)));
            }
            if let Some(p) = progs.iter().find(|p| self.attach_fails.contains(*p)) {
                return Err(HookError::Attach {
                    prog: p.to_string(),
                    source: err(libc::ENOENT),
                });
            }
            Ok(())
        }
    }

    impl Hooks for FakeKernel {
        type Error = HookError;

        fn trial(&mut self, progs: &[&'static str]) -> Result<(), HookError> {
            self.trials.push(progs.to_vec());
            self.load_attach(progs)
        }

        fn start(&mut self, progs: &[&'static str]) -> Result<(), HookError> {
            self.starts.push(progs.to_vec());
            self.load_attach(progs)?;
            self.running = progs.to_vec();
            Ok(())
        }
    }

    fn support_of<'a>(p: &'a Plan, slot: &str, prog: &str) -> &'a Support {
        p.choices
            .iter()
            .find(|c| c.slot == slot)
            .and_then(|c| c.attempts.iter().find(|(x, _)| x.prog == prog))
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("{prog} was not tried for {slot}: {p:?}"))
    }

    #[test]
    fn healthy_kernel_starts_once_without_probing() {
        let mut k = FakeKernel::new(&["rmem_fentry", "wmem_fentry", "extra_fentry"], &[]);
        let plan = start("t", SLOTS, false, &mut k);
        assert!(plan.runs() && plan.full(), "{plan:?}");
        assert_eq!(k.starts, vec![vec!["rmem_btf", "wmem_btf", "extra_btf"]]);
        assert!(k.trials.is_empty(), "no probing on the fast path: {:?}", k.trials);
        assert!(plan.choices.iter().all(|c| !c.fell_back()));
    }

    /// Debian 6.1: no tracepoint for wmem (tp_btf cannot load, raw_tp loads but does not
    /// attach); fentry works.
    #[test]
    fn falls_back_to_the_next_candidate_at_run_time() {
        let mut k = FakeKernel::new(&["wmem_btf"], &["wmem_raw"]);
        let plan = start("t", SLOTS, false, &mut k);
        assert!(plan.runs(), "{plan:?}");
        assert_eq!(k.running, vec!["rmem_btf", "wmem_fentry", "extra_btf"]);
        assert_eq!(k.starts.len(), 2, "first choices, then the probed plan");
        assert_eq!(support_of(&plan, "wmem", "wmem_btf").stage(), Some(Stage::Load));
        let raw = support_of(&plan, "wmem", "wmem_raw");
        assert_eq!(raw.stage(), Some(Stage::Attach));
        assert_eq!(raw.to_string(), "unsupported: loads but cannot attach (ENOENT)");
        assert_eq!(
            support_of(&plan, "wmem", "wmem_btf").to_string(),
            "unsupported: cannot load (EPERM)"
        );
        assert!(plan.full(), "fentry is a full-mode flavour");
        let wmem = &plan.choices[1];
        assert!(wmem.fell_back() && !plan.choices[0].fell_back());
        // Probing stops at the first candidate that attaches.
        assert!(!k.trials.contains(&vec!["wmem_kprobe"]));
    }

    #[test]
    fn loads_but_cannot_attach_is_not_supported() {
        // The issue-6 bug: raw_tp loads everywhere; only the attach tells.
        let mut k = FakeKernel::new(&["wmem_btf", "wmem_fentry"], &["wmem_raw"]);
        let plan = start("t", SLOTS, false, &mut k);
        assert_eq!(plan.choices[1].chosen.map(|c| c.prog), Some("wmem_kprobe"));
        assert!(plan.runs());
        assert!(!plan.full(), "a kprobe-only required hook is legacy mode");
        assert_eq!(
            plan.legacy_hooks()
                .iter()
                .map(|(s, c)| (*s, c.prog))
                .collect::<Vec<_>>(),
            vec![("wmem", "wmem_kprobe")]
        );
    }

    #[test]
    fn tuner_is_lost_only_without_a_working_candidate() {
        let mut k = FakeKernel::new(&["wmem_btf", "wmem_fentry"], &["wmem_raw", "wmem_kprobe"]);
        let plan = start("t", SLOTS, false, &mut k);
        assert!(!plan.runs());
        assert_eq!(plan.missing(), vec!["wmem"]);
        assert_eq!(
            plan.why_not().as_deref(),
            Some("no attachable flavour for required hook wmem")
        );
        assert_eq!(k.starts.len(), 1, "no second start without a complete plan");
        assert!(k.running.is_empty());
        // Every wmem candidate was tried, with its own reason.
        assert_eq!(plan.choices[1].attempts.len(), 4);
    }

    #[test]
    fn a_missing_optional_hook_does_not_stop_the_tuner() {
        let mut k = FakeKernel::new(&["extra_fentry"], &["extra_btf"]);
        let plan = start("t", SLOTS, false, &mut k);
        assert!(plan.runs() && plan.full(), "{plan:?}");
        assert_eq!(k.running, vec!["rmem_btf", "wmem_btf"]);
        assert!(plan.choices[2].chosen.is_none());
    }

    #[test]
    fn second_start_failure_is_reported() {
        struct Flaky(u32);
        impl Hooks for Flaky {
            type Error = String;
            fn trial(&mut self, _: &[&'static str]) -> Result<(), HookError> {
                Ok(())
            }
            fn start(&mut self, _: &[&'static str]) -> Result<(), String> {
                self.0 += 1;
                Err(format!("ENOMEM #{}", self.0))
            }
        }
        let plan = start("t", SLOTS, false, &mut Flaky(0));
        assert!(plan.complete() && !plan.runs());
        assert_eq!(plan.why_not().as_deref(), Some("start failed: ENOMEM #2"));
    }

    #[test]
    fn legacy_mode_uses_conservative_flavours_only() {
        let mut k = FakeKernel::new(&[], &[]);
        let plan = start("t", SLOTS, true, &mut k);
        assert_eq!(k.running, vec!["rmem_raw", "wmem_raw"]);
        assert!(plan.runs() && !plan.full());
        // Fallback within legacy mode: raw_tp -> kprobe, never fentry/tp_btf.
        let mut k = FakeKernel::new(&[], &["wmem_raw"]);
        let plan = start("t", SLOTS, true, &mut k);
        assert_eq!(k.running, vec!["rmem_raw", "wmem_kprobe"]);
        let tried: Vec<&str> = k.trials.iter().flatten().copied().collect();
        assert!(
            tried
                .iter()
                .all(|p| p.ends_with("_raw") || p.ends_with("_kprobe")),
            "{tried:?}"
        );
        assert!(
            plan.choices[2].attempts.is_empty(),
            "no legacy candidate for extra"
        );
    }

    #[test]
    fn legacy_mode_without_candidates_for_a_required_slot() {
        const ONLY_BTF: &[Slot] = &[Slot {
            name: "a",
            required: true,
            candidates: &[Candidate::new("a_btf", Flavour::TpBtf, "t")],
        }];
        let mut k = FakeKernel::new(&[], &[]);
        let plan = start("t", ONLY_BTF, true, &mut k);
        assert!(!plan.runs());
        assert!(k.starts.is_empty() && k.trials.is_empty());
    }

    #[test]
    fn thorough_probe_reports_every_candidate() {
        let k = FakeKernel::new(&["rmem_fentry"], &["rmem_kprobe"]);
        let plan = probe(SLOTS, false, true, &mut |p| k.load_attach(p));
        let states: Vec<Option<Stage>> = plan.choices[0].attempts.iter().map(|(_, s)| s.stage()).collect();
        assert_eq!(states, vec![None, None, Some(Stage::Load), Some(Stage::Attach)]);
        assert_eq!(plan.programs(), vec!["rmem_btf", "wmem_btf", "extra_btf"]);
    }

    #[test]
    fn errors_are_tri_state() {
        let enomem = err(libc::ENOMEM);
        assert!(matches!(
            classify(&enomem, Some(Stage::Load)),
            Support::Inconclusive(_)
        ));
        assert!(matches!(
            classify(&err(libc::ESRCH), Some(Stage::Load)),
            Support::Unsupported(_)
        ));
        let p = probe(SLOTS, false, false, &mut |_| {
            Err(HookError::Attach {
                prog: "x".into(),
                source: err(libc::ENOMEM),
            })
        });
        assert!(matches!(
            p.choices[0].attempts[0].1,
            Support::Inconclusive(Failure {
                stage: Some(Stage::Attach),
                ..
            })
        ));
        assert!(!p.complete(), "inconclusive is not supported");
    }
}

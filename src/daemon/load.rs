//! Start-up helpers: loading and attaching the built-in tuners (with per-hook fallback),
//! memory facts. Plugin tuners are loaded by `plugins.rs`.

use std::os::fd::BorrowedFd;

use super::Options;
use crate::bpf::cgroup::CgroupDir;
use crate::bpf::plan::{self, Plan};
use crate::bpf::{self, LoadConfig, SharedMaps};
use crate::engine::{Engine, EngineCtx};
use crate::record::ledger::TunerMeta;
use crate::tuner::support::{self as probe, Level};
use crate::tuner::{allow_matches, StartCtx, Tuner, TunerState};
use crate::tuners;

pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
}

pub(super) fn raise_memlock() {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } != 0 {
        // Not fatal: kernels ≥ 5.11 account BPF memory to the memory cgroup.
        tracing::debug!(
            "cannot unlock memory limit: {}; continuing (BPF memory is cgroup-accounted)",
            std::io::Error::last_os_error()
        );
    }
}

pub(super) struct Loaded {
    pub(super) tuners: Vec<Option<Box<dyn Tuner>>>,
    pub(super) shared: SharedMaps,
}

/// Loads one tuner for the daemon: trials are throw-away copies (libbpf muted, their
/// expected failures are not news), starts are the real thing.
struct DaemonHooks<'a> {
    tuner: &'a mut dyn Tuner,
    shared: &'a mut SharedMaps,
    config: LoadConfig,
    tuner_id: u32,
    cgroup: Option<BorrowedFd<'a>>,
    env: EngineCtx<'a>,
}

impl plan::Hooks for DaemonHooks<'_> {
    type Error = crate::tuner::TunerError;

    fn trial(&mut self, progs: &[&'static str]) -> Result<(), bpf::HookError> {
        let _quiet = bpf::Quiet::new();
        self.tuner.try_attach(self.shared, &self.config, progs)
    }

    fn start(&mut self, progs: &[&'static str]) -> Result<(), Self::Error> {
        self.tuner.start(StartCtx {
            shared: self.shared,
            config: self.config,
            tuner_id: self.tuner_id,
            programs: progs,
            cgroup: self.cgroup,
            env: &mut self.env,
        })
    }
}

/// One line per hook: debug when the first choice attached, info when we fell back.
fn log_plan(name: &str, plan: &Plan) {
    for c in &plan.choices {
        let tried = || {
            c.attempts
                .iter()
                .filter(|(x, _)| Some(*x) != c.chosen)
                .map(|(x, s)| format!("{} {}: {s}", x.flavour.label(), x.target))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match c.chosen {
            Some(x) if !c.fell_back() => tracing::debug!(
                "{name}: hook '{}' uses {} {}",
                c.slot,
                x.flavour.label(),
                x.target
            ),
            Some(x) => tracing::info!(
                "{name}: hook '{}' uses {} {} ({})",
                c.slot,
                x.flavour.label(),
                x.target,
                tried()
            ),
            None if c.required && c.attempts.is_empty() => tracing::error!(
                "{name}: hook '{}' has no candidate allowed in legacy mode",
                c.slot
            ),
            None if c.required => tracing::error!(
                "{name}: hook '{}' has no flavour that attaches on this kernel ({})",
                c.slot,
                tried()
            ),
            None => tracing::info!(
                "{name}: optional hook '{}' is not available on this kernel; continuing without it",
                c.slot
            ),
        }
    }
}

/// Starts every allowed tuner with its first-choice hooks, falling back per hook slot
/// to the next candidate that attaches (see [`plan::start`]), then logs the support
/// level of what actually runs.
pub(super) fn load_tuners(
    opts: &Options,
    engine: &mut Engine,
    cgroup: Option<&CgroupDir>,
    plugin_names: &[String],
) -> Loaded {
    let config = LoadConfig::new(opts.rate.shift(), opts.debug, opts.observe);
    let builtin = tuners::names();
    for a in &opts.allow {
        let known = builtin
            .iter()
            .copied()
            .chain(plugin_names.iter().map(String::as_str));
        if !known.clone().any(|n| allow_matches(std::slice::from_ref(a), n)) {
            tracing::error!(
                "-a {a}: no such tuner (tuners: {})",
                known.collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut shared = SharedMaps::default();
    let mut loaded = Vec::new();
    let mut plans = Vec::new();
    for mut tuner in tuners::all() {
        let name = tuner.name();
        if !allow_matches(&opts.allow, name) {
            continue;
        }
        let id = engine.add_tuner(TunerMeta {
            name,
            state: TunerState::Inactive,
            tunables: tuner.tunables(),
            scenarios: tuner.scenarios(),
        });
        let slots = tuner.slots();
        let plan = plan::start(
            name,
            slots,
            opts.legacy,
            &mut DaemonHooks {
                tuner: tuner.as_mut(),
                shared: &mut shared,
                config,
                tuner_id: id as u32,
                cgroup: cgroup.map(|c| c.fd()),
                env: engine.ctx(id),
            },
        );
        log_plan(name, &plan);
        if plan.runs() {
            engine.set_tuner_state(id, TunerState::Active);
            tracing::debug!("tuner '{name}' (id {id}) loaded");
            loaded.push(Some(tuner));
        } else {
            loaded.push(None);
        }
        plans.push((name, plan));
    }
    let level = Level::assess(&plans, opts.legacy, shared.ring_buffer().is_some());
    // The same lines as `bpftune -S` (C bpftune logs them at every start), before
    // "bpftune started", through the daemon's log sink.
    for line in level.headline(&plans, opts.legacy) {
        match level {
            Level::Normal | Level::Legacy => tracing::info!("{line}"),
            Level::Partial => tracing::warn!("{line}"),
            Level::None => tracing::error!("{line}"),
        }
    }
    if level > Level::None {
        tracing::info!("{}", probe::netns_line(probe::netns_identity()));
    }
    Loaded {
        tuners: loaded,
        shared,
    }
}

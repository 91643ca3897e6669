//! BPF plumbing shared by all tuners: per-hook attach-flavour selection by real load
//! attempts (tri-state results), the maps every object shares (one ring buffer, one
//! suppression map) and routing of libbpf's own messages into our log.

use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use libbpf_rs::{ErrorKind, MapCore, MapHandle, Object, OpenObject, PrintLevel};

/// How a program attaches to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// BTF-typed tracepoint: stable ABI, typed arguments.
    TpBtf,
    /// Raw tracepoint: the most conservative tracing flavour (`-L`).
    RawTp,
    /// fentry on a kernel function: unstable target, optional extra only.
    Fentry,
    /// cgroup/sysctl program.
    CgroupSysctl,
    /// sockops program on the cgroup (per-socket TCP callbacks).
    Sockops,
}

impl Flavour {
    pub fn label(self) -> &'static str {
        match self {
            Flavour::TpBtf => "tp_btf",
            Flavour::RawTp => "raw_tp",
            Flavour::Fentry => "fentry",
            Flavour::CgroupSysctl => "cgroup/sysctl",
            Flavour::Sockops => "sockops",
        }
    }

    /// Allowed in legacy (`-L`) mode.
    pub fn conservative(self) -> bool {
        matches!(self, Flavour::RawTp | Flavour::CgroupSysctl | Flavour::Sockops)
    }
}

/// One way to implement a hook: a program of the tuner's BPF object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Program (function) name in the BPF object.
    pub prog: &'static str,
    pub flavour: Flavour,
    /// Kernel tracepoint or function it attaches to.
    pub target: &'static str,
}

/// A hook a tuner needs, with its candidates in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub name: &'static str,
    /// A tuner without all its required slots cannot run.
    pub required: bool,
    pub candidates: &'static [Candidate],
}

/// Result of one feature probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// The kernel said no (EPERM, EINVAL, ENOENT, ESRCH, EOPNOTSUPP).
    Unsupported(String),
    /// Something else went wrong (e.g. ENOMEM): we cannot tell.
    Inconclusive(String),
}

impl Support {
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Supported => f.write_str("supported"),
            Support::Unsupported(why) => write!(f, "unsupported ({why})"),
            Support::Inconclusive(why) => write!(f, "inconclusive ({why})"),
        }
    }
}

/// Maps a libbpf load error to a tri-state answer.
pub fn classify(err: &libbpf_rs::Error) -> Support {
    let text = err.to_string();
    match err.kind() {
        ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::InvalidInput
        | ErrorKind::InvalidData
        | ErrorKind::Unsupported => Support::Unsupported(short_reason(&text)),
        _ if text.contains("No such process") || text.contains("not supported") => {
            Support::Unsupported(short_reason(&text))
        }
        _ => Support::Inconclusive(short_reason(&text)),
    }
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
    pub attempts: Vec<(Candidate, Support)>,
}

/// The programs a tuner will load.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub choices: Vec<SlotChoice>,
}

impl Plan {
    pub fn programs(&self) -> Vec<&'static str> {
        self.choices
            .iter()
            .filter_map(|c| c.chosen.map(|c| c.prog))
            .collect()
    }

    /// Every required slot has a loadable flavour.
    pub fn complete(&self) -> bool {
        self.choices.iter().all(|c| !c.required || c.chosen.is_some())
    }
}

/// Chooses one flavour per slot by loading throw-away objects.
///
/// `try_load(progs)` must open a fresh object with exactly `progs` enabled and load it.
/// Fast path (daemon start): the first candidate of every slot in one load, which is
/// what succeeds on a healthy kernel. Otherwise, and always when `thorough` (`-S`, to
/// report every flavour), slots are probed one by one.
pub fn plan(
    slots: &[Slot],
    legacy: bool,
    thorough: bool,
    try_load: &mut dyn FnMut(&[&'static str]) -> Result<(), libbpf_rs::Error>,
) -> Plan {
    let usable = |s: &Slot| -> Vec<Candidate> {
        s.candidates
            .iter()
            .copied()
            .filter(|c| !legacy || c.flavour.conservative())
            .collect()
    };
    if !thorough {
        let firsts: Vec<Option<Candidate>> = slots.iter().map(|s| usable(s).first().copied()).collect();
        let progs: Vec<&'static str> = firsts.iter().flatten().map(|c| c.prog).collect();
        if !progs.is_empty() && try_load(&progs).is_ok() {
            return Plan {
                choices: slots
                    .iter()
                    .zip(firsts)
                    .map(|(s, c)| SlotChoice {
                        slot: s.name,
                        required: s.required,
                        chosen: c,
                        attempts: c.map(|c| vec![(c, Support::Supported)]).unwrap_or_default(),
                    })
                    .collect(),
            };
        }
    }
    let mut choices = Vec::with_capacity(slots.len());
    for s in slots {
        let mut choice = SlotChoice {
            slot: s.name,
            required: s.required,
            chosen: None,
            attempts: Vec::new(),
        };
        for c in usable(s) {
            let support = match try_load(&[c.prog]) {
                Ok(()) => Support::Supported,
                Err(e) => classify(&e),
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
    Plan { choices }
}

/// Maps shared by every tuner's object: the first object to load creates them, the
/// others reuse their fds, so one ring-buffer consumer serves all tuners.
#[derive(Default)]
pub struct SharedMaps {
    ring_buffer: Option<MapHandle>,
    last_event: Option<MapHandle>,
}

pub const RING_BUFFER_MAP: &str = "ring_buffer_map";
pub const LAST_EVENT_MAP: &str = "last_event_map";

impl SharedMaps {
    /// Enables exactly `progs` and points the shared maps at existing instances.
    pub fn prepare(&self, obj: &mut OpenObject, progs: &[&str]) -> Result<(), libbpf_rs::Error> {
        for mut p in obj.progs_mut() {
            let name = p.name().to_string_lossy().into_owned();
            p.set_autoload(progs.contains(&name.as_str()));
        }
        for mut m in obj.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            let shared = match name.as_str() {
                RING_BUFFER_MAP => self.ring_buffer.as_ref(),
                LAST_EVENT_MAP => self.last_event.as_ref(),
                _ => None,
            };
            if let Some(h) = shared {
                m.reuse_fd(h.as_fd())?;
            }
        }
        Ok(())
    }

    /// Keeps handles on the shared maps of the first loaded object.
    pub fn adopt(&mut self, obj: &Object) -> Result<(), libbpf_rs::Error> {
        for m in obj.maps() {
            let name = m.name().to_string_lossy().into_owned();
            match name.as_str() {
                RING_BUFFER_MAP if self.ring_buffer.is_none() => {
                    self.ring_buffer = Some(MapHandle::try_from(&m)?);
                }
                LAST_EVENT_MAP if self.last_event.is_none() => {
                    self.last_event = Some(MapHandle::try_from(&m)?);
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn ring_buffer(&self) -> Option<&MapHandle> {
        self.ring_buffer.as_ref()
    }
}

/// Attaches every loaded, auto-attachable program of `obj` (cgroup programs are attached
/// by their tuner with a cgroup fd), checking each attach.
pub fn attach_all(obj: &Object) -> Result<Vec<libbpf_rs::Link>, libbpf_rs::Error> {
    let mut links = Vec::new();
    for p in obj.progs_mut() {
        if !p.autoload()
            || matches!(
                p.prog_type(),
                libbpf_rs::ProgramType::CgroupSysctl | libbpf_rs::ProgramType::SockOps
            )
        {
            continue;
        }
        links.push(p.attach()?);
    }
    Ok(links)
}

/// Load-time settings every object gets in its rodata.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub shift: u32,
    pub debug: bool,
    pub pid: i32,
}

static LIBBPF_MUTED: AtomicBool = AtomicBool::new(false);

fn libbpf_print(level: PrintLevel, msg: String) {
    if LIBBPF_MUTED.load(Ordering::Relaxed) {
        return;
    }
    let msg = msg.trim_end();
    match level {
        PrintLevel::Warn => tracing::debug!("libbpf: {msg}"),
        _ => tracing::trace!("libbpf: {msg}"),
    }
}

/// Routes libbpf's messages into our log at debug level.
pub fn route_libbpf_log() {
    libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_print)));
}

/// Silences libbpf while probing: failed loads there are expected, not news.
pub struct Quiet;

impl Quiet {
    pub fn new() -> Quiet {
        LIBBPF_MUTED.store(true, Ordering::Relaxed);
        Quiet
    }
}

impl Default for Quiet {
    fn default() -> Self {
        Quiet::new()
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        LIBBPF_MUTED.store(false, Ordering::Relaxed);
    }
}

/// Opens a skeleton into `$storage`, writes the common rodata (tuner id, learning-rate
/// shift, our pid, debug) and enables exactly `$progs`, reusing the shared maps.
/// Every tuner's object includes `bpf/common.bpf.h`, so every rodata has these fields.
#[macro_export]
macro_rules! open_skel {
    ($builder:ty, $storage:expr, $shared:expr, $config:expr, $tuner_id:expr, $progs:expr) => {{
        use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
        let mut open = <$builder>::default().open($storage)?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.tuner_id = $tuner_id;
            ro.bpftune_shift = $config.shift;
            ro.bpftune_pid = $config.pid;
            ro.bpftune_debug = $config.debug;
        }
        $shared.prepare(open.open_object_mut(), $progs)?;
        open
    }};
}

/// Defines a tuner's two skeleton loaders: `try_load_skel` (a throw-away load with
/// exactly the given programs, for flavour probing) and `load_skel` (the real one).
#[macro_export]
macro_rules! skel_loaders {
    ($builder:ty, $skel:ident) => {
        fn try_load_skel(
            shared: &$crate::core::bpf::SharedMaps,
            config: &$crate::core::bpf::LoadConfig,
            programs: &[&'static str],
        ) -> Result<(), libbpf_rs::Error> {
            let mut storage = std::mem::MaybeUninit::<libbpf_rs::OpenObject>::uninit();
            let open = $crate::open_skel!($builder, &mut storage, shared, config, 0, programs);
            libbpf_rs::skel::OpenSkel::load(open).map(drop)
        }

        /// The skeleton lives as long as the daemon: its small open-object slot is
        /// leaked on purpose so that the skeleton can be 'static.
        fn load_skel(ctx: &$crate::core::tuner::StartCtx<'_>) -> Result<$skel<'static>, libbpf_rs::Error> {
            let storage: &'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject> =
                Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
            let open = $crate::open_skel!(
                $builder,
                storage,
                ctx.shared,
                ctx.config,
                ctx.tuner_id,
                ctx.programs
            );
            libbpf_rs::skel::OpenSkel::load(open)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &[Candidate] = &[
        Candidate {
            prog: "a_fentry",
            flavour: Flavour::Fentry,
            target: "f",
        },
        Candidate {
            prog: "a_btf",
            flavour: Flavour::TpBtf,
            target: "t",
        },
        Candidate {
            prog: "a_raw",
            flavour: Flavour::RawTp,
            target: "t",
        },
    ];
    const SLOTS: &[Slot] = &[Slot {
        name: "a",
        required: true,
        candidates: C,
    }];

    fn eperm() -> libbpf_rs::Error {
        libbpf_rs::Error::from(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn falls_back_to_the_next_flavour() {
        let mut tried = Vec::new();
        let p = plan(SLOTS, false, false, &mut |progs| {
            tried.push(progs.to_vec());
            if progs.contains(&"a_fentry") {
                Err(eperm())
            } else {
                Ok(())
            }
        });
        assert_eq!(p.programs(), vec!["a_btf"]);
        assert!(p.complete());
        assert_eq!(tried, vec![vec!["a_fentry"], vec!["a_fentry"], vec!["a_btf"]]);
    }

    #[test]
    fn legacy_uses_raw_tp_only() {
        let p = plan(SLOTS, true, false, &mut |_| Ok(()));
        assert_eq!(p.programs(), vec!["a_raw"]);
        assert!(p
            .choices
            .iter()
            .filter_map(|c| c.chosen)
            .all(|c| c.flavour.conservative()));
    }

    #[test]
    fn thorough_reports_every_flavour() {
        let p = plan(SLOTS, false, true, &mut |progs| {
            if progs.contains(&"a_fentry") {
                Err(eperm())
            } else {
                Ok(())
            }
        });
        let states: Vec<bool> = p.choices[0]
            .attempts
            .iter()
            .map(|(_, s)| s.is_supported())
            .collect();
        assert_eq!(states, vec![false, true, true]);
        assert!(matches!(p.choices[0].attempts[0].1, Support::Unsupported(_)));
        assert_eq!(p.programs(), vec!["a_btf"]);
    }

    #[test]
    fn incomplete_when_nothing_loads() {
        let p = plan(SLOTS, false, false, &mut |_| Err(eperm()));
        assert!(!p.complete());
        let enomem = libbpf_rs::Error::from(std::io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(matches!(classify(&enomem), Support::Inconclusive(_)));
    }
}

//! BPF plumbing shared by all tuners (imports `model` and `kernel` only): hook slots and their attach flavours, load/attach
//! errors, the maps every object shares (one ring buffer, one suppression map), and
//! routing of libbpf's own messages into our log. Which flavour a slot uses is decided
//! in [`crate::bpf::plan`].

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use libbpf_rs::{MapCore, MapHandle, Object, OpenObject, PrintLevel, ProgramType};

pub mod cgroup;
pub mod event;
pub mod plan;

/// How a program attaches to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// BTF-typed tracepoint: stable ABI, typed arguments.
    TpBtf,
    /// Raw tracepoint: the most conservative tracing flavour (`-L`).
    RawTp,
    /// fentry on a kernel function: for kernels that lack the tracepoint.
    Fentry,
    /// kprobe on a kernel function: like fentry, but also on kernels without BPF
    /// trampolines; a legacy-mode flavour.
    Kprobe,
    /// cgroup/sysctl program.
    CgroupSysctl,
    /// sockops program (cgroup).
    Sockops,
}

impl Flavour {
    pub fn label(self) -> &'static str {
        match self {
            Flavour::TpBtf => "tp_btf",
            Flavour::RawTp => "raw_tp",
            Flavour::Fentry => "fentry",
            Flavour::Kprobe => "kprobe",
            Flavour::CgroupSysctl => "cgroup/sysctl",
            Flavour::Sockops => "sockops",
        }
    }

    /// Allowed in legacy (`-L`) mode: C bpftune's legacy build uses raw tracepoints,
    /// kprobes and cgroup programs.
    pub fn conservative(self) -> bool {
        matches!(
            self,
            Flavour::RawTp | Flavour::Kprobe | Flavour::CgroupSysctl | Flavour::Sockops
        )
    }

    /// A flavour of C bpftune's full (non-legacy) build: "bpftune works fully" needs
    /// every required hook of every tuner to attach with one of these.
    pub fn full(self) -> bool {
        matches!(
            self,
            Flavour::TpBtf | Flavour::Fentry | Flavour::CgroupSysctl | Flavour::Sockops
        )
    }

    /// Attached to a cgroup (ours, `-c`), not to a kernel hook. Probing treats a load
    /// as sufficient for these: the kernel checks program type and expected attach
    /// type at load, and a throw-away copy attached to a live cgroup would act on real
    /// sysctl writes or connections while it lives. The real attach at start-up is
    /// checked like every other.
    pub fn is_cgroup(self) -> bool {
        matches!(self, Flavour::CgroupSysctl | Flavour::Sockops)
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

impl Candidate {
    /// For the tuners' `SLOTS` tables (a `const fn`, so they stay statics).
    pub const fn new(prog: &'static str, flavour: Flavour, target: &'static str) -> Candidate {
        Candidate {
            prog,
            flavour,
            target,
        }
    }
}

/// A hook a tuner needs, with its candidates in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub name: &'static str,
    /// A tuner without all its required slots cannot run.
    pub required: bool,
    pub candidates: &'static [Candidate],
}

/// Where a hook failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The kernel (or libbpf, e.g. no BTF for the target) refused the program.
    Load,
    /// The program loaded, but its target is not there (no such tracepoint or
    /// kprobe-able function) or attaching is not possible here.
    Attach,
}

/// A load or attach failure of a BPF object.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot load: {0:#}")]
    Load(#[from] libbpf_rs::Error),
    #[error("program '{prog}' loads but cannot attach: {source:#}")]
    Attach { prog: String, source: libbpf_rs::Error },
}

impl HookError {
    pub fn stage(&self) -> Stage {
        match self {
            HookError::Load(_) => Stage::Load,
            HookError::Attach { .. } => Stage::Attach,
        }
    }

    pub fn error(&self) -> &libbpf_rs::Error {
        match self {
            HookError::Load(e) | HookError::Attach { source: e, .. } => e,
        }
    }
}

/// Tuner id written into throw-away (probing) copies: their events, if any fire while
/// they are attached, belong to no tuner and are dropped by the dispatcher.
pub const TRIAL_TUNER_ID: u32 = u32::MAX;

/// Maps shared by every tuner's object: the first object to load creates them, the
/// others reuse their fds, so one ring-buffer consumer serves all tuners.
#[derive(Default)]
pub struct SharedMaps {
    ring_buffer: Option<MapHandle>,
    last_event: Option<MapHandle>,
    lost_events: Option<MapHandle>,
}

pub const RING_BUFFER_MAP: &str = "ring_buffer_map";
pub const LAST_EVENT_MAP: &str = "last_event_map";
/// Per-CPU count of events the BPF side could not post (ring buffer full).
pub const LOST_EVENTS_MAP: &str = "lost_events_map";

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
                LOST_EVENTS_MAP => self.lost_events.as_ref(),
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
                LOST_EVENTS_MAP if self.lost_events.is_none() => {
                    self.lost_events = Some(MapHandle::try_from(&m)?);
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn ring_buffer(&self) -> Option<&MapHandle> {
        self.ring_buffer.as_ref()
    }

    /// The shared lost-event counter map (see `count_lost_event` in common.bpf.h).
    pub fn lost_events(&self) -> Option<&MapHandle> {
        self.lost_events.as_ref()
    }
}

/// Sum over CPUs of the shared per-CPU lost-event counter (see `count_lost_event` in
/// bpf/common.bpf.h): events the BPF side could not post because the ring was full.
pub fn lost_events_total(map: &MapHandle) -> Option<u64> {
    use libbpf_rs::{MapCore, MapFlags};
    // Read after start-up from threads whose effective set is empty (kernel::privs): on
    // 5.14/5.15 every bpf() call needs CAP_BPF while unprivileged BPF is disabled (the
    // distributions' default), and the lookup would fail with EPERM (the module table
    // there); 6.1 and later do not check it here.
    let _caps = crate::kernel::privs::raise(crate::kernel::privs::BPF);
    let per_cpu = map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(
        per_cpu
            .iter()
            .filter_map(|b| b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes))
            .sum(),
    )
}

fn is_cgroup_prog(t: ProgramType) -> bool {
    matches!(
        t,
        ProgramType::CgroupSysctl
            | ProgramType::SockOps
            | ProgramType::CgroupSkb
            | ProgramType::CgroupSock
            | ProgramType::CgroupSockAddr
            | ProgramType::CgroupSockopt
            | ProgramType::CgroupDevice
    )
}

/// Attaches every loaded program of `obj` that attaches by itself (tracing programs,
/// iterators), checking each attach. cgroup programs are skipped: their tuner attaches
/// them to its cgroup fd (see [`Flavour::is_cgroup`]).
pub fn attach_all(obj: &Object) -> Result<Vec<libbpf_rs::Link>, HookError> {
    attach_all_except(obj, &[])
}

/// [`attach_all`] without the programs named in `skip`: a tuner that attaches those
/// itself (e.g. only part of the time).
pub fn attach_all_except(obj: &Object, skip: &[&str]) -> Result<Vec<libbpf_rs::Link>, HookError> {
    let mut links = Vec::new();
    for p in obj.progs_mut() {
        if !p.autoload() || is_cgroup_prog(p.prog_type()) {
            continue;
        }
        if skip.iter().any(|s| p.name() == std::ffi::OsStr::new(s)) {
            continue;
        }
        let link = p.attach().map_err(|source| HookError::Attach {
            prog: p.name().to_string_lossy().into_owned(),
            source,
        })?;
        links.push(link);
    }
    Ok(links)
}

/// Load-time settings every object gets in its rodata.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub shift: u32,
    pub debug: bool,
    pub pid: i32,
    /// `--observe` (`bpftune_observe`): programs that act on the kernel themselves, not
    /// through the engine (a per-connection `bpf_setsockopt`), decide but do not act.
    pub observe: bool,
    /// `bpftune_ns_by_ino`: the kernel has no netns cookies for user space
    /// ([`crate::kernel::netns::Identity::Inode`]), so events carry the namespace's inode
    /// where the cookie would be.
    pub ns_by_ino: bool,
}

impl LoadConfig {
    /// This process's configuration: our pid (whose own sysctl writes the programs
    /// ignore) and how this kernel identifies namespaces.
    pub fn new(shift: u32, debug: bool, observe: bool) -> Self {
        LoadConfig {
            shift,
            debug,
            pid: std::process::id() as i32,
            observe,
            ns_by_ino: crate::kernel::netns::identity() == crate::kernel::netns::Identity::Inode,
        }
    }
}

static LIBBPF_MUTED: AtomicBool = AtomicBool::new(false);

/// One log line for a libbpf message: exactly one "libbpf: " prefix. libbpf prefixes
/// most of its own messages already (its `pr_warn("libbpf: …")`), some not (e.g. the
/// verifier log lines), so ours is added only where it is missing.
pub fn libbpf_line(msg: &str) -> String {
    let msg = msg.trim_end();
    let body = msg.strip_prefix("libbpf: ").unwrap_or(msg);
    format!("libbpf: {body}")
}

fn libbpf_print(level: PrintLevel, msg: String) {
    if LIBBPF_MUTED.load(Ordering::Relaxed) {
        return;
    }
    let line = libbpf_line(&msg);
    match level {
        PrintLevel::Warn => tracing::debug!("{line}"),
        _ => tracing::trace!("{line}"),
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
/// shift, our pid, debug, observe mode) and enables exactly `$progs`, reusing the shared maps.
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
            ro.bpftune_observe = $config.observe;
            ro.bpftune_ns_by_ino = $config.ns_by_ino;
        }
        $shared.prepare(open.open_object_mut(), $progs)?;
        open
    }};
}

/// The kernel's info about a BPF program fd, and its (kernel-truncated, 15 characters)
/// name; `None` if the fd is not a program.
pub fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<(libbpf_rs::libbpf_sys::bpf_prog_info, String)> {
    use std::os::fd::AsRawFd;
    // All-zero (`Default`) is what the kernel requires: no arrays asked for, unused bytes 0.
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = u32::try_from(std::mem::size_of_val(&info)).ok()?;
    // The metrics thread asks after start-up with an empty effective set: see
    // lost_events_total (EPERM on 5.14/5.15 without CAP_BPF).
    let _caps = crate::kernel::privs::raise(crate::kernel::privs::BPF);
    // SAFETY: `info` is a valid, writable bpf_prog_info of `len` bytes; the kernel
    // writes at most `len` bytes and updates `len`.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return None;
    }
    let name: Vec<u8> = info
        .name
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    Some((info, String::from_utf8_lossy(&name).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::libbpf_line;

    #[test]
    fn libbpf_lines_carry_one_prefix() {
        assert_eq!(
            libbpf_line("libbpf: loading object 'x' from buffer\n"),
            "libbpf: loading object 'x' from buffer"
        );
        assert_eq!(libbpf_line("0: (b7) r0 = 1\n"), "libbpf: 0: (b7) r0 = 1");
    }
}

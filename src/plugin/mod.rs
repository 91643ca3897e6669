//! External tuners: shared objects implementing the C ABI of `include/bpftune/plugin.h`
//! ([`abi`]), checked ([`trust`]) and opened with `libloading` through the descriptor
//! that was checked ([`FdLibrary`]), then adapted to the
//! [`Tuner`] trait ([`PluginTuner`]) so that the engine, queries and summaries treat
//! them like built-in tuners. Their BPF object shares the daemon's ring buffer and gets
//! its tuner id in the `tuner_id` rodata, as built-in objects do.

pub mod abi;
pub mod crash;
pub mod trust;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::{AsRawFd as _, BorrowedFd, IntoRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::Btf;
use libbpf_rs::{Link, Object, ObjectBuilder};

use crate::bpf::{HookError, LoadConfig, SharedMaps, Slot};
use crate::model::event::Event;
use crate::model::tunable::{Scenario, SysctlValue, TunableDesc};
use crate::tuner::strategy::{Strategies, StrategyDesc};
use crate::tuner::{Ns, Outcome, Proposal, StartCtx, Tuner, TunerEnv, TunerError};

/// Why a plugin could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("refused: {0}")]
    Refused(#[from] trust::Refusal),
    #[error("cannot load: {0}")]
    Open(String),
    #[error("refused: ABI version {found}, this bpftune implements {expected}")]
    Abi { found: u32, expected: u32 },
    #[error("refused: invalid descriptor: {0}")]
    Invalid(String),
}

/// A program of the plugin's BPF object.
#[derive(Debug, Clone)]
pub struct ProgSpec {
    pub name: String,
    pub cgroup: bool,
    /// Strategy index, or `None` for "always attached".
    pub strategy: Option<usize>,
}

/// An opened, validated plugin: its copied descriptor and the library that implements
/// its callbacks.
pub struct PluginSpec {
    pub name: &'static str,
    pub path: PathBuf,
    tunables: &'static [TunableDesc],
    scenarios: &'static [Scenario],
    bpf: Vec<u8>,
    progs: Vec<ProgSpec>,
    strategies: Vec<(StrategyDesc, Option<abi::EvaluateFn>)>,
    init: Option<abi::InitFn>,
    event: Option<abi::EventFn>,
    tick: Option<abi::TickFn>,
    fini: Option<abi::FiniFn>,
    /// Last: every callback above points into it.
    _lib: FdLibrary,
}

/// A library `dlopen`ed as `/proc/self/fd/N` of a checked descriptor ([`trust::Checked`]),
/// so that what is mapped is the file that was checked, whatever its path names by now.
pub struct FdLibrary {
    /// Dropped first (`dlclose`), then `_fd` (held for its Drop).
    lib: libloading::Library,
    _fd: FdName,
}

/// The descriptor a library was opened through, and the name glibc knows it by.
///
/// glibc finds an already loaded library by name before anything else, and the name
/// here is `/proc/self/fd/N`: were N closed while the library stayed mapped, the next
/// plugin opened as N would be handed the old library. So N stays open while the
/// library is, and for good if `dlclose` could not unmap it (a library glibc keeps, e.g.
/// one with live thread-local destructors): one descriptor per such load.
struct FdName {
    fd: Option<OwnedFd>,
    name: String,
}

/// Whether a library glibc knows as `name` (or with the inode `name` opens) is mapped.
/// `RTLD_NOLOAD` maps and runs nothing.
fn resident(name: &str) -> bool {
    // SAFETY: RTLD_NOLOAD only looks up an already loaded object: no constructor runs.
    match unsafe { libloading::os::unix::Library::open(Some(name), libc::RTLD_NOW | libc::RTLD_NOLOAD) } {
        // Dropping it is the dlclose that undoes the reference the lookup took.
        Ok(lib) => {
            drop(lib);
            true
        }
        Err(_) => false,
    }
}

impl Drop for FdName {
    fn drop(&mut self) {
        if resident(&self.name) {
            if let Some(fd) = self.fd.take() {
                tracing::debug!(
                    "plugin library {} stays mapped after dlclose; keeping its descriptor",
                    self.name
                );
                // Deliberately never closed: see FdName.
                let _ = fd.into_raw_fd();
            }
        }
    }
}

impl FdLibrary {
    /// Opens (`RTLD_NOW | RTLD_LOCAL`) the library behind `fd`: this runs its
    /// constructors.
    ///
    /// # Safety
    /// The file behind `fd` is trusted to run as the daemon (checked by [`trust::open`]).
    pub unsafe fn open(fd: OwnedFd) -> Result<FdLibrary, PluginError> {
        let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // The same inode still mapped (an earlier version rewritten in place while glibc
        // kept it): dlopen would return that old mapping, not this file's content.
        if resident(&name) {
            return Err(PluginError::Open(
                "an earlier version of this file (same inode) is still mapped; install plugins by rename"
                    .into(),
            ));
        }
        // SAFETY: by the caller's contract; RTLD_NOW resolves every symbol before any
        // plugin callback can run, RTLD_LOCAL keeps its symbols out of other plugins'.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(&name),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|e| PluginError::Open(e.to_string()))?;
        Ok(FdLibrary {
            lib: lib.into(),
            _fd: FdName { fd: Some(fd), name },
        })
    }
}

/// Copies a C string; `what` names it in the error.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn c_string(p: *const c_char, what: &str) -> Result<String, PluginError> {
    if p.is_null() {
        return Err(PluginError::Invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    Ok(s.to_string_lossy().into_owned())
}

/// A `&[T]` over a descriptor array (empty for NULL/0).
///
/// # Safety
/// `p` is NULL or points to `n` valid `T`s.
unsafe fn c_slice<'a, T>(p: *const T, n: u32) -> &'a [T] {
    if p.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: p points to n initialised Ts by the caller's contract.
    unsafe { std::slice::from_raw_parts(p, n as usize) }
}

fn leak(s: String) -> &'static str {
    // The descriptors of a plugin are kept as 'static (like built-in tuners'): a few
    // hundred bytes per load, and a plugin is loaded at most once per file change.
    Box::leak(s.into_boxed_str())
}

impl PluginSpec {
    /// Trust-checks `path` (`owner`: the trusted uid), opens it and copies its
    /// descriptor. Nothing of the library is run before the checks pass.
    pub fn open(path: &Path, owner: u32) -> Result<PluginSpec, PluginError> {
        PluginSpec::load(trust::open(path, owner)?)
    }

    /// Loads the file `checked` holds open (not whatever its path names by now: a file
    /// renamed over it after the check is not the one loaded) and copies its descriptor.
    pub fn load(checked: trust::Checked) -> Result<PluginSpec, PluginError> {
        let file_name = checked.name.clone();
        let path = checked.path.clone();
        // SAFETY: opening a library runs its constructors; the file passed the trust
        // checks (root-owned, not writable by others, nor any directory on its way from
        // `/`), which is the same trust the daemon's own binary gets.
        let lib = unsafe { FdLibrary::open(checked.into_fd()) }?;
        let lib_ref = &lib.lib;
        // SAFETY: the symbol is declared by the ABI as `const struct bpftune_plugin *(void)`.
        let entry: libloading::Symbol<abi::EntryFn> = unsafe { lib_ref.get(abi::SYMBOL) }.map_err(|e| {
            PluginError::Open(format!("no {} symbol: {e}", String::from_utf8_lossy(abi::SYMBOL)))
        })?;
        // SAFETY: calling the plugin's entry point as its ABI declares it.
        let desc = unsafe { entry() };
        if desc.is_null() {
            return Err(PluginError::Invalid("descriptor is NULL".into()));
        }
        // SAFETY: non-NULL; the first two fields are the same in every ABI version, so
        // they are read before anything else is trusted.
        let (version, size) = unsafe { ((*desc).abi_version, (*desc).size) };
        if version != abi::ABI_VERSION {
            return Err(PluginError::Abi {
                found: version,
                expected: abi::ABI_VERSION,
            });
        }
        if (size as usize) < std::mem::size_of::<abi::Plugin>() {
            return Err(PluginError::Invalid(format!("descriptor size {size}")));
        }
        // SAFETY: same ABI version and at least our size: the descriptor is a full
        // `struct bpftune_plugin`, with static storage while the library is loaded.
        let d = unsafe { *desc };
        // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
        let name = unsafe { c_string(d.name, "name") }?;
        if name != file_name {
            return Err(PluginError::Invalid(format!(
                "tuner name '{name}' does not match the file name {file_name}_tuner.so"
            )));
        }
        let mut tunables = Vec::new();
        // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
        for (i, t) in unsafe { c_slice(d.tunables, d.num_tunables) }.iter().enumerate() {
            // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
            let tname = unsafe { c_string(t.name, &format!("tunable #{i} name")) }?;
            if t.num_values > abi::MAX_VALUES as u32 {
                return Err(PluginError::Invalid(format!(
                    "tunable {tname}: {} values",
                    t.num_values
                )));
            }
            let mut desc = TunableDesc::sysctl(
                leak(tname),
                t.num_values.max(1) as u8,
                t.flags & abi::TUNABLE_NAMESPACED != 0,
            )
            // The handler of a plugin's sysctl is unknown to bpftune: what built-in
            // network sysctls may need (module autoload, own checks).
            .write_caps(crate::kernel::privs::SYSCTL_WRITE);
            if t.num_values == 0 {
                desc = desc.string();
            }
            if t.flags & abi::TUNABLE_OPTIONAL != 0 {
                desc = desc.optional();
            }
            tunables.push(desc);
        }
        let mut scenarios = Vec::new();
        // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
        for (i, s) in unsafe { c_slice(d.scenarios, d.num_scenarios) }
            .iter()
            .enumerate()
        {
            scenarios.push(Scenario {
                // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
                name: leak(unsafe { c_string(s.name, &format!("scenario #{i} name")) }?),
                // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
                description: leak(unsafe { c_string(s.description, &format!("scenario #{i} description")) }?),
            });
        }
        let mut strategies = Vec::new();
        // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
        for (i, s) in unsafe { c_slice(d.strategies, d.num_strategies) }
            .iter()
            .enumerate()
        {
            let desc = StrategyDesc {
                // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
                name: unsafe { c_string(s.name, &format!("strategy #{i} name")) }?,
                // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
                description: unsafe { c_string(s.description, &format!("strategy #{i} description")) }?,
                timeout: Duration::from_secs(u64::from(s.timeout_secs.max(1))),
            };
            if s.evaluate.is_none() {
                return Err(PluginError::Invalid(format!(
                    "strategy {} has no evaluate",
                    desc.name
                )));
            }
            strategies.push((desc, s.evaluate));
        }
        let mut progs = Vec::new();
        // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
        for (i, p) in unsafe { c_slice(d.progs, d.num_progs) }.iter().enumerate() {
            // SAFETY: a pointer/count of the descriptor, valid while the library is loaded (ABI).
            let pname = unsafe { c_string(p.name, &format!("program #{i} name")) }?;
            let strategy = match p.strategy {
                abi::STRATEGY_ALL => None,
                s if (s as usize) < strategies.len() => Some(s as usize),
                s => return Err(PluginError::Invalid(format!("program {pname}: no strategy #{s}"))),
            };
            let cgroup = match p.kind {
                abi::PROG_AUTO => false,
                abi::PROG_CGROUP => true,
                k => return Err(PluginError::Invalid(format!("program {pname}: unknown kind {k}"))),
            };
            progs.push(ProgSpec {
                name: pname,
                cgroup,
                strategy,
            });
        }
        let bpf = if d.bpf_object.is_null() || d.bpf_object_len == 0 {
            Vec::new()
        } else {
            let len = usize::try_from(d.bpf_object_len)
                .map_err(|_| PluginError::Invalid("BPF object too large".into()))?;
            // SAFETY: the descriptor points at bpf_object_len bytes of static storage.
            unsafe { std::slice::from_raw_parts(d.bpf_object.cast::<u8>(), len) }.to_vec()
        };
        if bpf.is_empty() && !progs.is_empty() {
            return Err(PluginError::Invalid("programs listed but no BPF object".into()));
        }
        Ok(PluginSpec {
            name: leak(name),
            path,
            tunables: Box::leak(tunables.into_boxed_slice()),
            scenarios: Box::leak(scenarios.into_boxed_slice()),
            bpf,
            progs,
            strategies,
            init: d.init,
            event: d.event,
            tick: d.tick,
            fini: d.fini,
            _lib: lib,
        })
    }
}

/// What the host table's callbacks reach through `ctx`: valid for one callback.
struct HostCtx<'a> {
    name: &'static str,
    tunables: &'static [TunableDesc],
    scenarios: usize,
    env: Option<&'a mut dyn TunerEnv>,
}

fn ns_of(cookie: u64, ino: u64) -> Ns {
    if cookie == 0 {
        Ns::Global
    } else {
        Ns::Netns { cookie, ino }
    }
}

/// # Safety
/// `ctx` is the `HostCtx` of the callback in progress.
unsafe fn host_ctx<'a>(ctx: *mut c_void) -> &'a mut HostCtx<'a> {
    // SAFETY: by the caller's contract (the daemon passes a live &mut HostCtx).
    unsafe { &mut *ctx.cast::<HostCtx<'a>>() }
}

unsafe extern "C" fn host_read(
    ctx: *mut c_void,
    tunable: u32,
    cookie: u64,
    ino: u64,
    values: *mut i64,
    max: u32,
) -> c_int {
    // The daemon's own code from here: a crash in it is not the plugin's.
    let _ours = crash::Inside::suspend();
    // SAFETY: the plugin passes back the ctx we gave it, during the callback.
    let h = unsafe { host_ctx(ctx) };
    let Some(env) = h.env.as_deref_mut() else {
        return -libc::EAGAIN;
    };
    if values.is_null() || tunable as usize >= h.tunables.len() {
        return -libc::EINVAL;
    }
    match env.read(tunable as usize, ns_of(cookie, ino)) {
        Ok(SysctlValue::Ints(v)) => {
            let n = v.len().min(max as usize);
            // SAFETY: the plugin provides room for `max` values.
            let out = unsafe { std::slice::from_raw_parts_mut(values, n) };
            out.copy_from_slice(&v[..n]);
            n as c_int
        }
        Ok(SysctlValue::Str(_)) => -libc::EINVAL,
        Err(_) => -libc::ENOENT,
    }
}

unsafe extern "C" fn host_propose(ctx: *mut c_void, p: *const abi::Proposal) -> c_int {
    // The daemon's own code from here: a crash in it is not the plugin's.
    let _ours = crash::Inside::suspend();
    // SAFETY: the plugin passes back the ctx we gave it, during the callback.
    let h = unsafe { host_ctx(ctx) };
    if p.is_null() {
        return abi::FAILED;
    }
    // SAFETY: non-NULL, a `struct bpftune_proposal` by the ABI.
    let p = unsafe { *p };
    let n = p.nvalues as usize;
    let Some(env) = h.env.as_deref_mut() else {
        return abi::FAILED;
    };
    let Some(desc) = h.tunables.get(p.tunable as usize) else {
        return abi::FAILED;
    };
    if n == 0 || n != usize::from(desc.num_values) || desc.string || p.scenario as usize >= h.scenarios {
        return abi::FAILED;
    }
    let message = if p.message.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL and NUL-terminated by the ABI.
        unsafe { CStr::from_ptr(p.message) }
            .to_string_lossy()
            .into_owned()
    };
    let outcome = env.apply(Proposal {
        tunable: p.tunable as usize,
        scenario: p.scenario as usize,
        ns: ns_of(p.netns_cookie, p.netns_ino),
        expect: (p.has_expect != 0).then(|| SysctlValue::Ints(p.expect[..n].to_vec())),
        value: SysctlValue::Ints(p.value[..n].to_vec()),
        message,
        event_ts_ns: p.event_ts_ns,
    });
    match outcome {
        Outcome::Applied => abi::APPLIED,
        Outcome::Unchanged => abi::UNCHANGED,
        Outcome::Stale => abi::STALE,
        Outcome::Disabled => abi::DISABLED,
        Outcome::Missing => abi::MISSING,
        Outcome::NoNamespace => abi::NO_NAMESPACE,
        Outcome::Failed(_) => abi::FAILED,
    }
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: c_int, msg: *const c_char) {
    // The daemon's own code from here: a crash in it is not the plugin's.
    let _ours = crash::Inside::suspend();
    // SAFETY: the plugin passes back the ctx we gave it, during the callback.
    let h = unsafe { host_ctx(ctx) };
    if msg.is_null() {
        return;
    }
    // SAFETY: non-NULL and NUL-terminated by the ABI.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    let name = h.name;
    match level {
        l if l <= abi::LOG_ERR => tracing::error!("{name}: {msg}"),
        abi::LOG_WARN => tracing::warn!("{name}: {msg}"),
        l if l <= abi::LOG_INFO => tracing::info!("{name}: {msg}"),
        _ => tracing::debug!("{name}: {msg}"),
    }
}

unsafe extern "C" fn host_count(ctx: *mut c_void, tunable: u32, scenario: u32, cookie: u64, n: u64) {
    // The daemon's own code from here: a crash in it is not the plugin's.
    let _ours = crash::Inside::suspend();
    // SAFETY: the plugin passes back the ctx we gave it, during the callback.
    let h = unsafe { host_ctx(ctx) };
    if tunable as usize >= h.tunables.len() || scenario as usize >= h.scenarios {
        return;
    }
    if let Some(env) = h.env.as_deref_mut() {
        env.count(tunable as usize, scenario as usize, ns_of(cookie, 0), n);
    }
}

/// A plugin adapted to [`Tuner`].
pub struct PluginTuner {
    /// Dropped first: detaching comes before the object and the library go.
    links: Vec<(usize, Link)>,
    object: Option<Object>,
    cgroup: Option<OwnedFd>,
    state: *mut c_void,
    started: bool,
    strategies: Option<Strategies>,
    failed: Rc<Cell<bool>>,
    /// Which file version this is, for the crash marker set around every callback
    /// ([`crash::Inside`]).
    crash_record: Vec<u8>,
    /// Last: the library the callbacks live in.
    spec: PluginSpec,
}

impl PluginTuner {
    /// `crash_record` is [`crash::record_prefix`] of the file `spec` was opened from.
    pub fn new(spec: PluginSpec, crash_record: Vec<u8>) -> PluginTuner {
        let strategies = Strategies::new(
            spec.strategies.iter().map(|(d, _)| d.clone()).collect(),
            Instant::now(),
        );
        PluginTuner {
            links: Vec::new(),
            object: None,
            cgroup: None,
            state: std::ptr::null_mut(),
            started: false,
            strategies,
            failed: Rc::new(Cell::new(false)),
            crash_record,
            spec,
        }
    }

    /// Set when a callback failed and the plugin stopped itself: the daemon then
    /// unloads it.
    pub fn failed_flag(&self) -> Rc<Cell<bool>> {
        self.failed.clone()
    }

    /// Runs `f` with a host table whose ctx reaches `env`.
    fn with_host<R>(&self, env: Option<&mut dyn TunerEnv>, f: impl FnOnce(*const abi::Host) -> R) -> R {
        let mut ctx = HostCtx {
            name: self.spec.name,
            tunables: self.spec.tunables,
            scenarios: self.spec.scenarios.len(),
            env,
        };
        let host = abi::Host {
            abi_version: abi::ABI_VERSION,
            size: std::mem::size_of::<abi::Host>() as u32,
            ctx: (&mut ctx as *mut HostCtx<'_>).cast(),
            read: Some(host_read),
            propose: Some(host_propose),
            log: Some(host_log),
            count: Some(host_count),
        };
        f(&host)
    }

    /// Whether program `i` belongs to the current strategy (or to all).
    fn wanted(&self, i: usize) -> bool {
        match self.spec.progs[i].strategy {
            None => true,
            Some(s) => self.strategies.as_ref().is_some_and(|st| st.current() == s),
        }
    }

    fn attach_prog(&self, i: usize) -> Result<Link, HookError> {
        let object = self.object.as_ref().ok_or_else(|| HookError::Attach {
            prog: self.spec.progs[i].name.clone(),
            source: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(libc::ENOENT)),
        })?;
        let spec = &self.spec.progs[i];
        let err = |source| HookError::Attach {
            prog: spec.name.clone(),
            source,
        };
        let prog = object
            .progs_mut()
            .find(|p| p.name() == std::ffi::OsStr::new(&spec.name))
            .ok_or_else(|| {
                err(libbpf_rs::Error::from(std::io::Error::from_raw_os_error(
                    libc::ENOENT,
                )))
            })?;
        if spec.cgroup {
            let fd = self.cgroup.as_ref().ok_or_else(|| {
                err(libbpf_rs::Error::from(std::io::Error::from_raw_os_error(
                    libc::EBADF,
                )))
            })?;
            prog.attach_cgroup(fd.as_raw_fd()).map_err(err)
        } else {
            prog.attach().map_err(err)
        }
    }

    /// Attaches the programs of the current strategy that are not attached, detaches the others.
    fn sync_links(&mut self) -> Result<(), HookError> {
        self.links.retain(|(i, _)| {
            let keep = match self.spec.progs[*i].strategy {
                None => true,
                Some(s) => self.strategies.as_ref().is_some_and(|st| st.current() == s),
            };
            keep
        });
        for i in 0..self.spec.progs.len() {
            if self.wanted(i) && !self.links.iter().any(|(j, _)| *j == i) {
                let link = self.attach_prog(i)?;
                self.links.push((i, link));
            }
        }
        Ok(())
    }

    /// Loads the embedded object: shared maps reused, rodata set, listed programs only.
    fn load_object(
        &self,
        shared: &SharedMaps,
        config: &LoadConfig,
        tuner_id: u32,
    ) -> Result<Object, libbpf_rs::Error> {
        let mut open = ObjectBuilder::default()
            .name(self.spec.name)?
            .open_memory(&self.spec.bpf)?;
        let btf = Btf::from_raw(self.spec.name, &self.spec.bpf)?;
        let mut offsets: Vec<(String, usize, usize)> = Vec::new();
        if let Some(btf) = &btf {
            if let Some(sec) = btf.type_by_name::<DataSec<'_>>(".rodata") {
                for v in sec.iter() {
                    if let Some(ty) = btf.type_by_id::<libbpf_rs::btf::BtfType<'_>>(v.ty) {
                        if let Some(n) = ty.name() {
                            offsets.push((n.to_string_lossy().into_owned(), v.offset as usize, v.size));
                        }
                    }
                }
            }
        }
        if !offsets.iter().any(|(n, _, _)| n == "tuner_id") {
            return Err(libbpf_rs::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "BPF object has no 'tuner_id' in .rodata (include bpf/common.bpf.h)",
            )));
        }
        for mut m in open.maps_mut() {
            if !m.name().to_string_lossy().ends_with(".rodata") {
                continue;
            }
            let Some(data) = m.initial_value_mut() else {
                continue;
            };
            for (name, off, size) in &offsets {
                let bytes: Vec<u8> = match name.as_str() {
                    "tuner_id" => tuner_id.to_ne_bytes().to_vec(),
                    "bpftune_shift" => config.shift.to_ne_bytes().to_vec(),
                    "bpftune_pid" => config.pid.to_ne_bytes().to_vec(),
                    "bpftune_debug" => vec![u8::from(config.debug)],
                    // Objects built against an older common.bpf.h lack it: like any
                    // name not in their rodata, nothing is written.
                    "bpftune_observe" => vec![u8::from(config.observe)],
                    _ => continue,
                };
                if bytes.len() == *size && off + size <= data.len() {
                    data[*off..off + size].copy_from_slice(&bytes);
                }
            }
        }
        let names: Vec<&str> = self.spec.progs.iter().map(|p| p.name.as_str()).collect();
        shared.prepare(&mut open, &names)?;
        open.load()
    }

    /// Detaches everything, calls fini once.
    fn unload(&mut self) {
        self.links.clear();
        self.object = None;
        if self.started {
            self.started = false;
            if let Some(fini) = self.spec.fini {
                let state = self.state;
                let _inside = crash::Inside::enter(&self.crash_record, "fini");
                // SAFETY: fini is the plugin's, called once with the state its init set.
                self.with_host(None, |host| unsafe { fini(state, host) });
            }
        }
    }

    fn fail(&mut self, what: &str, rc: c_int) {
        tracing::error!(
            "plugin '{}' ({}): {what} callback returned {rc}; disabling it",
            self.spec.name,
            self.spec.path.display()
        );
        self.unload();
        self.failed.set(true);
    }
}

impl Tuner for PluginTuner {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    fn tunables(&self) -> &'static [TunableDesc] {
        self.spec.tunables
    }

    fn scenarios(&self) -> &'static [Scenario] {
        self.spec.scenarios
    }

    /// Plugin programs are not probed per flavour: the plugin names the programs it
    /// wants, and they attach or the plugin does not start.
    fn slots(&self) -> &'static [Slot] {
        &[]
    }

    fn try_attach(&self, _: &SharedMaps, _: &LoadConfig, _: &[&'static str]) -> Result<(), HookError> {
        Ok(())
    }

    fn start(&mut self, ctx: StartCtx<'_>) -> Result<(), TunerError> {
        let name = self.spec.name;
        self.cgroup = ctx
            .cgroup
            .map(|c: BorrowedFd<'_>| c.try_clone_to_owned())
            .transpose()
            .map_err(|e| TunerError::Unsupported(name, format!("cannot dup the cgroup fd: {e}")))?;
        if !self.spec.bpf.is_empty() {
            let object = self
                .load_object(ctx.shared, &ctx.config, ctx.tuner_id)
                .map_err(|e| TunerError::load(name, e))?;
            self.object = Some(object);
            if let Err(e) = self.sync_links() {
                self.links.clear();
                self.object = None;
                return Err(TunerError::hook(name, e));
            }
            if let Some(object) = &self.object {
                ctx.shared.adopt(object).map_err(|e| TunerError::load(name, e))?;
            }
        }
        if let Some(init) = self.spec.init {
            let mut state: *mut c_void = std::ptr::null_mut();
            let inside = crash::Inside::enter(&self.crash_record, "init");
            // SAFETY: the plugin's init with our host table and a slot for its state.
            let rc = self.with_host(None, |host| unsafe { init(host, &mut state) });
            drop(inside);
            if rc != 0 {
                self.links.clear();
                self.object = None;
                return Err(TunerError::Unsupported(
                    name,
                    format!("init callback returned {rc}"),
                ));
            }
            self.state = state;
        }
        self.started = true;
        Ok(())
    }

    fn handle(&mut self, event: &Event, env: &mut dyn TunerEnv) {
        if !self.started {
            return;
        }
        let Some(cb) = self.spec.event else { return };
        let (cookie, ino) = match event.ns {
            Ns::Global => (0, 0),
            Ns::Netns { cookie, ino } => (cookie, ino),
        };
        let mut s = [0 as c_char; abi::STR_MAX];
        for (d, b) in s.iter_mut().zip(event.text.bytes().take(abi::STR_MAX - 1)) {
            *d = b as c_char;
        }
        let ev = abi::Event {
            tuner_id: event.tuner_id,
            scenario_id: event.scenario_id,
            netns_cookie: cookie,
            netns_ino: ino as u32,
            pid: event.pid,
            ts_ns: event.ts_ns,
            tunable_id: event.tunable_id,
            flags: event.flags,
            old: event.old,
            new_: event.new,
            aux: event.aux,
            str_: s,
        };
        let state = self.state;
        let inside = crash::Inside::enter(&self.crash_record, "event");
        // SAFETY: the plugin's event callback with its state, our host and an event
        // that lives for the call.
        let rc = self.with_host(Some(env), |host| unsafe { cb(state, host, &ev) });
        drop(inside);
        if rc != 0 {
            self.fail("event", rc);
        }
    }

    fn tick(&mut self, env: &mut dyn TunerEnv) {
        if !self.started {
            return;
        }
        if let Some(tick) = self.spec.tick {
            let state = self.state;
            let inside = crash::Inside::enter(&self.crash_record, "tick");
            // SAFETY: the plugin's tick callback with its state and our host.
            let rc = self.with_host(Some(&mut *env), |host| unsafe { tick(state, host) });
            drop(inside);
            if rc != 0 {
                self.fail("tick", rc);
            }
        }
    }

    fn strategies(&mut self) -> Option<&mut Strategies> {
        // A stopped plugin has nothing to switch.
        self.strategies.as_mut().filter(|_| self.started)
    }

    fn evaluate_strategy(&mut self, strategy: usize, current: usize, env: &mut dyn TunerEnv) -> f64 {
        let Some(Some(eval)) = self.spec.strategies.get(strategy).map(|(_, e)| *e) else {
            return -1.0;
        };
        let state = self.state;
        let _inside = crash::Inside::enter(&self.crash_record, "evaluate");
        // SAFETY: the plugin's evaluate callback with its own state and our host table.
        self.with_host(Some(env), |host| unsafe {
            eval(state, host, strategy as u32, current as u32)
        })
    }

    fn switch_strategy(&mut self, _from: usize, _to: usize) -> Result<(), TunerError> {
        let name = self.spec.name;
        self.sync_links().map_err(|e| {
            self.unload();
            self.failed.set(true);
            TunerError::hook(name, e)
        })
    }

    fn stop(&mut self) {
        self.unload();
    }
}

impl Drop for PluginTuner {
    fn drop(&mut self) {
        // fini runs before the library is unloaded (spec, the last field, drops after).
        self.unload();
    }
}

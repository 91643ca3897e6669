//! External tuners: shared objects implementing the C ABI of `include/bpftune/plugin.h`
//! ([`abi`]), checked ([`trust`]) and opened with `libloading` through the descriptor
//! that was checked ([`FdLibrary`], in `load`), then adapted to the
//! [`Tuner`] trait ([`PluginTuner`]) so that the engine, queries and summaries treat
//! them like built-in tuners. Their BPF object shares the daemon's ring buffer and gets
//! its tuner id in the `tuner_id` rodata, as built-in objects do. The callbacks a
//! plugin makes into the daemon are in `host`.

pub mod abi;
pub mod crash;
mod host;
mod load;
pub mod trust;

pub use load::FdLibrary;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::Btf;
use libbpf_rs::{Link, Object, ObjectBuilder};

use crate::bpf::{HookError, LoadConfig, SharedMaps, Slot};
use crate::model::event::Event;
use crate::model::tunable::{Scenario, TunableDesc};
use crate::tuner::strategy::{Strategies, StrategyDesc};
use crate::tuner::{Ns, StartCtx, Tuner, TunerEnv, TunerError};

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
        host::with_host(&self.spec, env, f)
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
                    "bpftune_ns_by_ino" => vec![u8::from(config.ns_by_ino)],
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

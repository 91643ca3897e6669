//! Opening a checked plugin file: `dlopen` through the descriptor that was checked
//! ([`FdLibrary`]), then copying its C descriptor into a [`PluginSpec`].

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd as _, IntoRawFd as _, OwnedFd};
use std::path::Path;
use std::time::Duration;

use super::{abi, trust, PluginError, PluginSpec, ProgSpec};
use crate::model::tunable::{Scenario, TunableDesc};
use crate::tuner::strategy::StrategyDesc;

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

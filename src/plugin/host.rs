//! The host table a plugin calls back through (`struct bpftune_host`): each callback
//! reaches the tuner's environment through the [`HostCtx`] of the callback in progress.

use std::ffi::{c_char, c_int, c_void, CStr};

use super::{abi, crash, PluginSpec};
use crate::model::tunable::{SysctlValue, TunableDesc};
use crate::tuner::{Ns, Outcome, Proposal, TunerEnv};

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

/// Runs `f` with a host table whose ctx reaches `env` (and names `spec`'s tunables).
pub(super) fn with_host<R>(
    spec: &PluginSpec,
    env: Option<&mut dyn TunerEnv>,
    f: impl FnOnce(*const abi::Host) -> R,
) -> R {
    let mut ctx = HostCtx {
        name: spec.name,
        tunables: spec.tunables,
        scenarios: spec.scenarios.len(),
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

//! A bpftune plugin tuner in Rust: the same job as examples/plugins/sample_tuner (log
//! every read of kernel.core_pattern, reported by a cgroup/sysctl program), built as a
//! `cdylib` and installed as `rust_sample_tuner.so`. The `#[repr(C)]` types mirror
//! `include/bpftune/plugin.h` (ABI version 1); only what this tuner uses is spelled out.

use std::ffi::{c_char, c_int, c_void, CStr};

const ABI_VERSION: u32 = 1;
const PROG_CGROUP: u32 = 1;
const STRATEGY_ALL: u32 = u32::MAX;
const LOG_INFO: c_int = 6;
const TUNABLE_NAMESPACED: u32 = 0x1;
const APPLIED: c_int = 0;
/// Only this reader triggers the demo proposal (its comm, as the kernel reports it).
const DEMO_COMM: &str = "bpftune_demo";
const SOMAXCONN: u32 = 1;
const SCENARIO_BUMP: u32 = 1;

#[repr(C)]
pub struct Tunable {
    name: *const c_char,
    num_values: u32,
    flags: u32,
}

#[repr(C)]
pub struct Scenario {
    name: *const c_char,
    description: *const c_char,
}

#[repr(C)]
pub struct Prog {
    name: *const c_char,
    kind: u32,
    strategy: u32,
}

/// `struct bpftune_host`: the daemon's services (`read` and `propose` are not used here).
#[repr(C)]
pub struct Host {
    abi_version: u32,
    size: u32,
    ctx: *mut c_void,
    read: Option<unsafe extern "C" fn(*mut c_void, u32, u64, u64, *mut i64, u32) -> c_int>,
    propose: Option<unsafe extern "C" fn(*mut c_void, *const Proposal) -> c_int>,
    log: Option<unsafe extern "C" fn(*mut c_void, c_int, *const c_char)>,
    count: Option<unsafe extern "C" fn(*mut c_void, u32, u32, u64, u64)>,
}

/// `struct bpftune_proposal`.
#[repr(C)]
pub struct Proposal {
    tunable: u32,
    scenario: u32,
    netns_cookie: u64,
    netns_ino: u64,
    nvalues: u32,
    has_expect: u32,
    expect: [i64; 3],
    value: [i64; 3],
    message: *const c_char,
    event_ts_ns: u64,
}

#[repr(C)]
pub struct Event {
    tuner_id: u32,
    scenario_id: u32,
    netns_cookie: u64,
    netns_ino: u32,
    pid: i32,
    ts_ns: u64,
    tunable_id: u32,
    flags: u32,
    old: [i64; 3],
    new: [i64; 3],
    aux: [u64; 4],
    text: [c_char; 64],
}

type EventFn = unsafe extern "C" fn(*mut c_void, *const Host, *const Event) -> c_int;

#[repr(C)]
pub struct Plugin {
    abi_version: u32,
    size: u32,
    name: *const c_char,
    tunables: *const Tunable,
    num_tunables: u32,
    num_scenarios: u32,
    scenarios: *const Scenario,
    bpf_object: *const c_void,
    bpf_object_len: u64,
    progs: *const Prog,
    num_progs: u32,
    num_strategies: u32,
    strategies: *const c_void,
    init: Option<unsafe extern "C" fn(*const Host, *mut *mut c_void) -> c_int>,
    event: Option<EventFn>,
    tick: Option<unsafe extern "C" fn(*mut c_void, *const Host) -> c_int>,
    fini: Option<unsafe extern "C" fn(*mut c_void, *const Host)>,
}

// The mirrors above against include/bpftune/plugin.h, at compile time: sizes and the
// offsets of the last field of each structure, as clang lays the header out on a 64-bit
// target (the daemon's test in src/plugin/abi.rs compiles the header and checks its
// own mirrors field by field; these numbers are the same header's).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Tunable>() == 16);
    assert!(size_of::<Scenario>() == 16);
    assert!(size_of::<Prog>() == 16);
    assert!(size_of::<Host>() == 48 && offset_of!(Host, count) == 40);
    assert!(size_of::<Proposal>() == 96 && offset_of!(Proposal, message) == 80);
    assert!(size_of::<Event>() == 184 && offset_of!(Event, text) == 120);
    assert!(size_of::<Plugin>() == 112);
    assert!(offset_of!(Plugin, strategies) == 72 && offset_of!(Plugin, fini) == 104);
};

/// Descriptor tables are immutable statics holding pointers to other statics.
#[repr(transparent)]
pub struct Static<T>(T);
// SAFETY: the wrapped tables are never written; they only point at immutable statics.
unsafe impl<T> Sync for Static<T> {}

static BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rust_sample.bpf.o"));

static TUNABLES: Static<[Tunable; 2]> = Static([
    Tunable {
        name: c"kernel.core_pattern".as_ptr(),
        num_values: 0,
        flags: 0,
    },
    Tunable {
        name: c"net.core.somaxconn".as_ptr(),
        num_values: 1,
        flags: TUNABLE_NAMESPACED,
    },
]);

static SCENARIOS: Static<[Scenario; 2]> = Static([
    Scenario {
        name: c"core_pattern read".as_ptr(),
        description: c"a process read kernel.core_pattern".as_ptr(),
    },
    Scenario {
        name: c"demo bump".as_ptr(),
        description: c"demo reader in a namespace: raise somaxconn by one".as_ptr(),
    },
]);

static PROGS: Static<[Prog; 1]> = Static([Prog {
    name: c"sample_core_pattern_read".as_ptr(),
    kind: PROG_CGROUP,
    strategy: STRATEGY_ALL,
}]);

fn log(host: &Host, msg: &str) {
    let Ok(msg) = std::ffi::CString::new(msg) else {
        return;
    };
    if let Some(log) = host.log {
        // SAFETY: the daemon's log callback with its own ctx and a NUL-terminated string.
        unsafe { log(host.ctx, LOG_INFO, msg.as_ptr()) };
    }
}

unsafe extern "C" fn on_event(_state: *mut c_void, host: *const Host, ev: *const Event) -> c_int {
    // SAFETY: the daemon passes valid host and event pointers for the call.
    let (host, ev) = unsafe { (&*host, &*ev) };
    // SAFETY: the daemon NUL-terminates the event text (at most 63 bytes are used).
    let comm = unsafe { CStr::from_ptr(ev.text.as_ptr()) }.to_string_lossy();
    log(
        host,
        &format!(
            "kernel.core_pattern read by pid {} ({comm}), seen from Rust",
            ev.pid
        ),
    );
    if let Some(count) = host.count {
        // SAFETY: the daemon's count callback with its own ctx.
        unsafe { count(host.ctx, 0, 0, ev.netns_cookie, 1) };
    }
    if comm == DEMO_COMM && ev.netns_cookie != 0 {
        demo_bump(host, ev);
    }
    0
}

/// Reads somaxconn in the event's namespace and proposes one more.
fn demo_bump(host: &Host, ev: &Event) {
    let (Some(read), Some(propose)) = (host.read, host.propose) else {
        return;
    };
    let mut now = [0i64; 3];
    // SAFETY: the daemon's read callback with its ctx and room for 3 values.
    let n = unsafe {
        read(
            host.ctx,
            SOMAXCONN,
            ev.netns_cookie,
            u64::from(ev.netns_ino),
            now.as_mut_ptr(),
            3,
        )
    };
    if n != 1 {
        log(host, &format!("cannot read net.core.somaxconn: {n}"));
        return;
    }
    let p = Proposal {
        tunable: SOMAXCONN,
        scenario: SCENARIO_BUMP,
        netns_cookie: ev.netns_cookie,
        netns_ino: u64::from(ev.netns_ino),
        nvalues: 1,
        has_expect: 1,
        expect: [now[0], 0, 0],
        value: [now[0] + 1, 0, 0],
        message: c"raising somaxconn by one for the demo reader".as_ptr(),
        event_ts_ns: ev.ts_ns,
    };
    // SAFETY: the daemon's propose callback with its ctx and a proposal living for the call.
    let rc = unsafe { propose(host.ctx, &p) };
    let outcome = if rc == APPLIED {
        "applied".to_string()
    } else {
        format!("outcome {rc}")
    };
    log(
        host,
        &format!(
            "proposed net.core.somaxconn {} -> {}: {outcome}",
            now[0],
            now[0] + 1
        ),
    );
}

static PLUGIN: Static<Plugin> = Static(Plugin {
    abi_version: ABI_VERSION,
    size: std::mem::size_of::<Plugin>() as u32,
    name: c"rust_sample".as_ptr(),
    tunables: TUNABLES.0.as_ptr(),
    num_tunables: 2,
    num_scenarios: 2,
    scenarios: SCENARIOS.0.as_ptr(),
    bpf_object: BPF.as_ptr().cast(),
    bpf_object_len: BPF.len() as u64,
    progs: PROGS.0.as_ptr(),
    num_progs: 1,
    num_strategies: 0,
    strategies: std::ptr::null(),
    init: None,
    event: Some(on_event),
    tick: None,
    fini: None,
});

/// The one exported symbol (`BPFTUNE_PLUGIN_SYMBOL`).
#[no_mangle]
pub extern "C" fn bpftune_plugin_v1() -> *const Plugin {
    &PLUGIN.0
}

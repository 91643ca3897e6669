//! `#[repr(C)]` mirrors of `include/bpftune/plugin.h`. The layout test below compiles
//! the header with clang and compares every size and offset, so the two cannot drift.

use std::ffi::{c_char, c_double, c_int, c_void};

/// `BPFTUNE_PLUGIN_ABI_VERSION`: bumped on any change to a structure here.
pub const ABI_VERSION: u32 = 1;
/// The one symbol a plugin exports.
pub const SYMBOL: &[u8] = b"bpftune_plugin_v1";
pub const MAX_VALUES: usize = 3;
pub const STR_MAX: usize = 64;

pub const TUNABLE_NAMESPACED: u32 = 0x1;
pub const TUNABLE_OPTIONAL: u32 = 0x2;

pub const PROG_AUTO: u32 = 0;
pub const PROG_CGROUP: u32 = 1;
pub const STRATEGY_ALL: u32 = u32::MAX;

pub const LOG_ERR: c_int = 3;
pub const LOG_WARN: c_int = 4;
pub const LOG_INFO: c_int = 6;

pub const APPLIED: c_int = 0;
pub const UNCHANGED: c_int = 1;
pub const STALE: c_int = 2;
pub const DISABLED: c_int = 3;
pub const MISSING: c_int = 4;
pub const NO_NAMESPACE: c_int = 5;
pub const FAILED: c_int = 6;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Tunable {
    pub name: *const c_char,
    pub num_values: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: *const c_char,
    pub description: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Prog {
    pub name: *const c_char,
    pub kind: u32,
    pub strategy: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Proposal {
    pub tunable: u32,
    pub scenario: u32,
    pub netns_cookie: u64,
    pub netns_ino: u64,
    pub nvalues: u32,
    pub has_expect: u32,
    pub expect: [i64; MAX_VALUES],
    pub value: [i64; MAX_VALUES],
    pub message: *const c_char,
    pub event_ts_ns: u64,
}

pub type ReadFn = unsafe extern "C" fn(*mut c_void, u32, u64, u64, *mut i64, u32) -> c_int;
pub type ProposeFn = unsafe extern "C" fn(*mut c_void, *const Proposal) -> c_int;
pub type LogFn = unsafe extern "C" fn(*mut c_void, c_int, *const c_char);
pub type CountFn = unsafe extern "C" fn(*mut c_void, u32, u32, u64, u64);

#[repr(C)]
pub struct Host {
    pub abi_version: u32,
    pub size: u32,
    pub ctx: *mut c_void,
    pub read: Option<ReadFn>,
    pub propose: Option<ProposeFn>,
    pub log: Option<LogFn>,
    pub count: Option<CountFn>,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub tuner_id: u32,
    pub scenario_id: u32,
    pub netns_cookie: u64,
    pub netns_ino: u32,
    pub pid: i32,
    pub ts_ns: u64,
    pub tunable_id: u32,
    pub flags: u32,
    pub old: [i64; MAX_VALUES],
    pub new_: [i64; MAX_VALUES],
    pub aux: [u64; 4],
    pub str_: [c_char; STR_MAX],
}

pub type EvaluateFn = unsafe extern "C" fn(*mut c_void, *const Host, u32, u32) -> c_double;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Strategy {
    pub name: *const c_char,
    pub description: *const c_char,
    pub timeout_secs: u32,
    pub reserved: u32,
    pub evaluate: Option<EvaluateFn>,
}

pub type InitFn = unsafe extern "C" fn(*const Host, *mut *mut c_void) -> c_int;
pub type EventFn = unsafe extern "C" fn(*mut c_void, *const Host, *const Event) -> c_int;
pub type TickFn = unsafe extern "C" fn(*mut c_void, *const Host) -> c_int;
pub type FiniFn = unsafe extern "C" fn(*mut c_void, *const Host);

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    pub abi_version: u32,
    pub size: u32,
    pub name: *const c_char,
    pub tunables: *const Tunable,
    pub num_tunables: u32,
    pub num_scenarios: u32,
    pub scenarios: *const Scenario,
    pub bpf_object: *const c_void,
    pub bpf_object_len: u64,
    pub progs: *const Prog,
    pub num_progs: u32,
    pub num_strategies: u32,
    pub strategies: *const Strategy,
    pub init: Option<InitFn>,
    pub event: Option<EventFn>,
    pub tick: Option<TickFn>,
    pub fini: Option<FiniFn>,
}

/// `const struct bpftune_plugin *bpftune_plugin_v1(void)`.
pub type EntryFn = unsafe extern "C" fn() -> *const Plugin;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// Compiles a C program that prints sizeof/offsetof of every structure in the header
    /// and compares each figure with the Rust mirror.
    #[test]
    fn layout_matches_header() {
        macro_rules! fields {
            ($($cty:literal $rty:ty { $($cf:literal $rf:ident),* }),* $(,)?) => {{
                let mut c = String::new();
                let mut rust = Vec::new();
                $(
                    c.push_str(&format!("printf(\"%s %zu\\n\", \"{0}\", sizeof(struct {0}));\n", $cty));
                    rust.push(format!("{} {}", $cty, size_of::<$rty>()));
                    $(
                        c.push_str(&format!(
                            "printf(\"%s.%s %zu\\n\", \"{0}\", \"{1}\", offsetof(struct {0}, {1}));\n",
                            $cty, $cf
                        ));
                        rust.push(format!("{}.{} {}", $cty, $cf, offset_of!($rty, $rf)));
                    )*
                )*
                (c, rust)
            }};
        }
        let (body, rust) = fields!(
            "bpftune_plugin_tunable" Tunable { "name" name, "num_values" num_values, "flags" flags },
            "bpftune_plugin_scenario" Scenario { "name" name, "description" description },
            "bpftune_plugin_prog" Prog { "name" name, "kind" kind, "strategy" strategy },
            "bpftune_proposal" Proposal { "tunable" tunable, "scenario" scenario, "netns_cookie" netns_cookie,
                "netns_ino" netns_ino, "nvalues" nvalues, "has_expect" has_expect, "expect" expect,
                "value" value, "message" message, "event_ts_ns" event_ts_ns },
            "bpftune_host" Host { "abi_version" abi_version, "size" size, "ctx" ctx, "read" read,
                "propose" propose, "log" log, "count" count },
            "bpftune_plugin_event" Event { "tuner_id" tuner_id, "scenario_id" scenario_id,
                "netns_cookie" netns_cookie, "netns_ino" netns_ino, "pid" pid, "ts_ns" ts_ns,
                "tunable_id" tunable_id, "flags" flags, "old" old, "new_" new_, "aux" aux, "str" str_ },
            "bpftune_plugin_strategy" Strategy { "name" name, "description" description,
                "timeout_secs" timeout_secs, "reserved" reserved, "evaluate" evaluate },
            "bpftune_plugin" Plugin { "abi_version" abi_version, "size" size, "name" name,
                "tunables" tunables, "num_tunables" num_tunables, "num_scenarios" num_scenarios,
                "scenarios" scenarios, "bpf_object" bpf_object, "bpf_object_len" bpf_object_len,
                "progs" progs, "num_progs" num_progs, "num_strategies" num_strategies,
                "strategies" strategies, "init" init, "event" event, "tick" tick, "fini" fini },
        );
        let dir = std::env::temp_dir().join(format!("bpftune-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = dir.join("layout.c");
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/include/bpftune/plugin.h");
        std::fs::write(
            &src,
            format!(
                "#include <stdio.h>\n#include <stddef.h>\n#include \"{header}\"\n\
                 int main(void) {{\nprintf(\"abi %d\\n\", BPFTUNE_PLUGIN_ABI_VERSION);\n\
                 printf(\"symbol %s\\n\", BPFTUNE_PLUGIN_SYMBOL);\n{body}return 0;\n}}\n"
            ),
        )
        .expect("write layout.c");
        let exe = dir.join("layout");
        let st = Command::new("clang")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("clang");
        assert!(st.success(), "clang failed on the plugin header");
        let out = Command::new(&exe).output().expect("run layout");
        let _ = std::fs::remove_dir_all(&dir);
        let c: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let mut expected = vec![
            format!("abi {ABI_VERSION}"),
            format!("symbol {}", String::from_utf8_lossy(SYMBOL)),
        ];
        expected.extend(rust);
        assert_eq!(c, expected);
    }
}

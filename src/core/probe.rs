//! `bpftune -S`: what works on this kernel, per tuner and per hook, by real loads.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
use libbpf_rs::{MapCore as _, MapHandle, MapType, OpenObject};

use crate::core::bpf::{self, classify, LoadConfig, Plan, SharedMaps, Support};
use crate::core::netns;
use crate::core::tuner::Tuner;

pub(crate) mod skel {
    #![allow(clippy::all, clippy::pedantic, clippy::restriction, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

/// C bpftune's support levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Legacy,
    Normal,
}

pub struct Report {
    pub level: Level,
    pub netns_cookies: Support,
    pub ringbuf: Support,
    pub sockops: Support,
    pub iter_tcp: Support,
    pub tuners: Vec<(&'static str, Plan)>,
}

fn probe_ringbuf() -> Support {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    match MapHandle::create(MapType::RingBuf, Some("bpftune_probe"), 0, 0, 4096, &opts) {
        Ok(m) => {
            drop(m.info());
            Support::Supported
        }
        Err(e) => classify(&e),
    }
}

fn probe_prog(prog: &str) -> Support {
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let res = (|| -> Result<(), libbpf_rs::Error> {
        let mut open = skel::ProbeSkelBuilder::default().open(&mut storage)?;
        SharedMaps::default().prepare(open.open_object_mut(), &[prog])?;
        open.load().map(drop)
    })();
    match res {
        Ok(()) => Support::Supported,
        Err(e) => classify(&e),
    }
}

/// Probes everything; `legacy` restricts tuners to conservative flavours.
pub fn run(tuners: &[Box<dyn Tuner>], legacy: bool) -> Report {
    let _quiet = bpf::Quiet::new();
    let config = LoadConfig {
        shift: 2,
        debug: false,
        pid: std::process::id() as i32,
    };
    let shared = SharedMaps::default();
    let mut plans = Vec::new();
    for t in tuners {
        let plan = bpf::plan(t.slots(), legacy, true, &mut |progs| {
            t.try_load(&shared, &config, progs)
        });
        plans.push((t.name(), plan));
    }
    let ringbuf = probe_ringbuf();
    let all_complete = plans.iter().all(|(_, p)| p.complete());
    let level = if !ringbuf.is_supported() || !plans.iter().any(|(_, p)| p.complete()) {
        Level::None
    } else if legacy || !all_complete {
        Level::Legacy
    } else {
        Level::Normal
    };
    Report {
        level,
        netns_cookies: match netns::current_cookie() {
            Ok(_) => Support::Supported,
            Err(e) => Support::Unsupported(e.to_string()),
        },
        ringbuf,
        sockops: probe_prog("bpftune_probe_sockops"),
        iter_tcp: probe_prog("bpftune_probe_iter_tcp"),
        tuners: plans,
    }
}

impl Report {
    /// The reference's lines, then a per-tuner table.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(
            match self.level {
                Level::Normal => "bpftune works fully",
                Level::Legacy => "bpftune works in legacy mode",
                Level::None => "bpftune is not supported",
            }
            .to_string(),
        );
        if self.level > Level::None {
            out.push(if self.netns_cookies.is_supported() {
                "bpftune supports per-netns policy (via netns cookie)".to_string()
            } else {
                "bpftune does not support per-netns policy (via netns cookie)".to_string()
            });
        }
        out.push(format!(
            "{:<12} {:<14} {:<44} {}",
            "TUNER", "HOOK", "CHOSEN", "WHY"
        ));
        for (name, plan) in &self.tuners {
            for c in &plan.choices {
                let hook = format!("{}{}", c.slot, if c.required { "" } else { "(opt)" });
                let chosen = c
                    .chosen
                    .map(|x| format!("{} {}", x.flavour.label(), x.target))
                    .unwrap_or_else(|| {
                        if c.required {
                            "NONE: tuner cannot run".into()
                        } else {
                            "none: feature off".into()
                        }
                    });
                let why: Vec<String> = c
                    .attempts
                    .iter()
                    .map(|(cand, s)| format!("{} {}: {}", cand.flavour.label(), cand.target, s))
                    .collect();
                out.push(format!("{name:<12} {hook:<14} {chosen:<44} {}", why.join("; ")));
            }
        }
        for (what, s) in [
            ("ring buffer", &self.ringbuf),
            ("sockops", &self.sockops),
            ("iter/tcp", &self.iter_tcp),
            ("netns cookies", &self.netns_cookies),
        ] {
            out.push(format!("{:<12} {what:<14} {s}", "feature"));
        }
        out
    }

    /// Exit code: 0 if bpftune can run at all, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.level > Level::None {
            0
        } else {
            1
        }
    }
}

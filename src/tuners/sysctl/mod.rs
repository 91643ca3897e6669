//! sysctl tuner: notices when an administrator (any process but us) writes a sysctl
//! that a tuner manages, and hands that namespace over to the administrator. See
//! sysctl.bpf.c for the cgroup/sysctl program.

use libbpf_rs::skel::Skel as _;
use libbpf_rs::Link;

use crate::bpf::{Candidate, Flavour, Slot};
use crate::model::event::Event;
use crate::tuner::{StartCtx, Tuner, TunerEnv, TunerError};

mod skel {
    #![allow(clippy::all, clippy::pedantic, clippy::restriction, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/sysctl.skel.rs"));
}
use skel::{SysctlSkel, SysctlSkelBuilder};

pub static SLOTS: &[Slot] = &[Slot {
    name: "sysctl_write",
    required: true,
    candidates: &[Candidate {
        prog: "bpftune_sysctl_write",
        flavour: Flavour::CgroupSysctl,
        target: "cgroup-v2 root",
    }],
}];

#[derive(Default)]
pub struct SysctlTuner {
    skel: Option<SysctlSkel<'static>>,
    link: Option<Link>,
}

/// The registry's constructor (`tuners!` in src/tuners/mod.rs calls `<folder>::tuner()`).
pub fn tuner() -> Box<dyn Tuner> {
    Box::new(SysctlTuner::new())
}

impl SysctlTuner {
    pub fn new() -> SysctlTuner {
        SysctlTuner::default()
    }
}

crate::skel_loaders!(SysctlSkelBuilder, SysctlSkel);

impl Tuner for SysctlTuner {
    crate::tuner_descriptors!("sysctl", &[], &[], SLOTS);

    fn start(&mut self, ctx: StartCtx<'_>) -> Result<(), TunerError> {
        let load = |e| TunerError::load("sysctl", e);
        let Some(cgroup) = ctx.cgroup else {
            return Err(TunerError::Unsupported(
                "sysctl",
                "no cgroup-v2 directory to attach to".into(),
            ));
        };
        let skel = load_skel(&ctx).map_err(load)?;
        // A BPF link (not a legacy attachment): it goes away with our process, so a
        // crashed daemon leaves nothing attached to the cgroup.
        use std::os::fd::AsRawFd;
        let link = skel
            .progs
            .bpftune_sysctl_write
            .attach_cgroup(cgroup.as_raw_fd())
            .map_err(|e| TunerError::Attach {
                tuner: "sysctl",
                prog: "bpftune_sysctl_write".into(),
                source: e,
            })?;
        ctx.shared.adopt(skel.object()).map_err(load)?;
        self.link = Some(link);
        self.skel = Some(skel);
        Ok(())
    }

    fn handle(&mut self, ev: &Event, env: &mut dyn TunerEnv) {
        let comm: Vec<u8> = ev.aux[2..4]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .take_while(|&b| b != 0)
            .collect();
        env.admin_write(ev.ns, &ev.text, ev.pid, &String::from_utf8_lossy(&comm));
    }

    fn stop(&mut self) {
        self.link = None;
        self.skel = None;
    }
}

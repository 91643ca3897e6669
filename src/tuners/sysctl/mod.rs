//! sysctl tuner: notices when an administrator (any process but us) writes a sysctl
//! that a tuner manages, and hands that namespace over to the administrator. See
//! sysctl.bpf.c for the cgroup/sysctl program, and for the kprobe that stands in
//! for it on kernels whose cgroup programs cannot read the writer (5.10).

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

/// The cgroup program that reports writes itself.
const CGROUP_PROG: &str = "bpftune_sysctl_write";
/// The cgroup program attached beside the kprobe: it allows everything, and while
/// it is attached the kernel calls the traced function.
const ALLOW_PROG: &str = "bpftune_sysctl_allow";
/// What the kprobe hooks: the kernel's runner of cgroup/sysctl programs.
const TRACED: &str = "__cgroup_bpf_run_filter_sysctl";

pub static SLOTS: &[Slot] = &[Slot {
    name: "sysctl_write",
    required: true,
    candidates: &[
        Candidate {
            prog: CGROUP_PROG,
            flavour: Flavour::CgroupSysctl,
            target: "cgroup-v2 root",
        },
        // No fentry: the function has seven arguments, and 5.10's trampolines take six.
        Candidate::new("bpftune_sysctl_write_kprobe", Flavour::Kprobe, TRACED),
    ],
}];

#[derive(Default)]
pub struct SysctlTuner {
    skel: Option<SysctlSkel<'static>>,
    link: Option<Link>,
    /// The kprobe's link, when that flavour was chosen.
    traced: Vec<Link>,
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
        // The kprobe flavour needs the allow-all cgroup program loaded beside it.
        let kprobe = !ctx.programs.contains(&CGROUP_PROG);
        let mut programs = ctx.programs.to_vec();
        if kprobe {
            programs.push(ALLOW_PROG);
        }
        let skel = load_skel_with(&ctx, &programs).map_err(load)?;
        let traced = if kprobe {
            crate::bpf::attach_all(skel.object()).map_err(|e| TunerError::hook("sysctl", e))?
        } else {
            Vec::new()
        };
        // A BPF link (not a legacy attachment): it goes away with our process, so a
        // crashed daemon leaves nothing attached to the cgroup.
        use std::os::fd::AsRawFd;
        let (prog, name) = if kprobe {
            (&skel.progs.bpftune_sysctl_allow, ALLOW_PROG)
        } else {
            (&skel.progs.bpftune_sysctl_write, CGROUP_PROG)
        };
        let link = prog.attach_cgroup(cgroup.as_raw_fd()).map_err(|e| TunerError::Attach {
            tuner: "sysctl",
            prog: name.into(),
            source: e,
        })?;
        ctx.shared.adopt(skel.object()).map_err(load)?;
        self.link = Some(link);
        self.traced = traced;
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
        self.traced.clear();
        self.skel = None;
    }
}

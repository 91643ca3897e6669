//! `bpftune -S`: what works on this kernel, per tuner and per hook, by real loads and
//! attaches of throw-away copies; and the support level both `-S` and the daemon's
//! start-up log report.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel as _, Skel as _, SkelBuilder as _};
use libbpf_rs::{MapCore as _, MapHandle, MapType, OpenObject};

use crate::bpf::plan::{self, classify, classify_hook, Plan, Support};
use crate::bpf::{self, HookError, LoadConfig, SharedMaps};
use crate::kernel::netns;
use crate::tuner::Tuner;

use crate::bpf::event::skel;

/// Support levels: C bpftune's NONE < LEGACY < NORMAL, plus PARTIAL (some tuner cannot
/// run here at all), which C bpftune only noticed when a tuner failed to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Partial,
    Legacy,
    Normal,
}

impl Level {
    /// The level of a set of tuner plans. "Works fully" only when every tuner runs and
    /// every required hook of every tuner attaches with a full-mode flavour.
    pub fn assess(plans: &[(&'static str, Plan)], legacy: bool, ringbuf: bool) -> Level {
        if !ringbuf || !plans.iter().any(|(_, p)| p.runs()) {
            Level::None
        } else if plans.iter().any(|(_, p)| !p.runs()) {
            Level::Partial
        } else if legacy || plans.iter().any(|(_, p)| !p.full()) {
            Level::Legacy
        } else {
            Level::Normal
        }
    }

    /// The level line (C bpftune's words where it has them), then one line per tuner
    /// that cannot run and per required hook that only attaches in a legacy flavour.
    pub fn headline(self, plans: &[(&'static str, Plan)], legacy: bool) -> Vec<String> {
        let mut out = vec![match self {
            Level::Normal => "bpftune works fully".to_string(),
            Level::Legacy => "bpftune works in legacy mode".to_string(),
            Level::Partial => "bpftune works partially: not every tuner can run on this kernel".to_string(),
            Level::None => "bpftune is not supported".to_string(),
        }];
        for (name, p) in plans {
            if let Some(why) = p.why_not() {
                out.push(format!("tuner '{name}' cannot run on this kernel: {why}"));
            } else if !legacy {
                for (slot, c) in p.legacy_hooks() {
                    out.push(format!(
                        "tuner '{name}': hook '{slot}' attaches only as {} {} (a legacy-mode flavour)",
                        c.flavour.label(),
                        c.target
                    ));
                }
            }
        }
        out
    }
}

/// C bpftune's netns-cookie line, said after the level line by `-S` and at every start;
/// where the kernel has no cookies, per-netns policy goes by inode (C bpftune tunes only
/// the initial namespace there). `None`: the namespace could not be identified at all.
pub fn netns_line(identity: Option<netns::Identity>) -> &'static str {
    match identity {
        Some(netns::Identity::Cookie) => "bpftune supports per-netns policy (via netns cookie)",
        Some(netns::Identity::Inode) => {
            "bpftune supports per-netns policy (via netns inode: this kernel has no netns cookies)"
        }
        None => "bpftune does not support per-netns policy (via netns cookie)",
    }
}

/// How the calling thread's namespace is identified, if it can be.
pub fn netns_identity() -> Option<netns::Identity> {
    netns::current_cookie().ok().map(|_| netns::identity())
}

pub struct Report {
    pub level: Level,
    pub legacy: bool,
    pub netns_cookies: Support,
    pub netns_identity: Option<netns::Identity>,
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
        Err(e) => classify(&e, None),
    }
}

/// Loads one program of the probe object and attaches it unless it is a cgroup
/// program (see [`bpf::Flavour::is_cgroup`]).
fn probe_prog(prog: &str) -> Support {
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let res = (|| -> Result<(), HookError> {
        let mut open = skel::ProbeSkelBuilder::default().open(&mut storage)?;
        SharedMaps::default().prepare(open.open_object_mut(), &[prog])?;
        let skel = open.load()?;
        drop(bpf::attach_all(skel.object())?);
        Ok(())
    })();
    match res {
        Ok(()) => Support::Supported,
        Err(e) => classify_hook(&e),
    }
}

/// Probes everything; `legacy` restricts tuners to conservative flavours.
pub fn run(tuners: &[Box<dyn Tuner>], legacy: bool) -> Report {
    let _quiet = bpf::Quiet::new();
    // Probing copies are only loaded (cgroup programs) or attached for a moment: not
    // observe mode.
    let config = LoadConfig::new(2, false, false);
    let shared = SharedMaps::default();
    let mut plans = Vec::new();
    for t in tuners {
        let plan = plan::probe(t.slots(), legacy, true, &mut |progs| {
            t.try_attach(&shared, &config, progs)
        });
        plans.push((t.name(), plan));
    }
    let ringbuf = probe_ringbuf();
    Report {
        level: Level::assess(&plans, legacy, ringbuf.is_supported()),
        legacy,
        netns_cookies: match netns::identity() {
            netns::Identity::Cookie => Support::Supported,
            netns::Identity::Inode => Support::unsupported(netns::NetnsError::CookieUnsupported.to_string()),
        },
        netns_identity: netns_identity(),
        ringbuf,
        sockops: probe_prog("bpftune_probe_sockops"),
        iter_tcp: probe_prog("bpftune_probe_iter_tcp"),
        tuners: plans,
    }
}

/// "supported", with a note for cgroup programs (probed by load only).
fn shown(c: &bpf::Candidate, s: &Support) -> String {
    if s.is_supported() && c.flavour.is_cgroup() {
        "loads (cgroup program: attached to our cgroup at start-up)".to_string()
    } else {
        s.to_string()
    }
}

impl Report {
    /// The level lines, the netns line, then a per-tuner table.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.level.headline(&self.tuners, self.legacy);
        if self.level > Level::None {
            out.push(netns_line(self.netns_identity).to_string());
        }
        out.push(format!(
            "{:<12} {:<18} {:<36} {}",
            "TUNER", "HOOK", "CHOSEN", "TRIED"
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
                let mut why: Vec<String> = c
                    .attempts
                    .iter()
                    .map(|(cand, s)| format!("{} {}: {}", cand.flavour.label(), cand.target, shown(cand, s)))
                    .collect();
                if why.is_empty() {
                    why.push("no candidate allowed in legacy mode".into());
                }
                out.push(format!("{name:<12} {hook:<18} {chosen:<36} {}", why.join("; ")));
            }
        }
        let sockops = match &self.sockops {
            Support::Supported => "loads (cgroup program: attaches at start-up)".to_string(),
            s => s.to_string(),
        };
        for (what, s) in [
            ("ring buffer", self.ringbuf.to_string()),
            ("sockops", sockops),
            ("iter/tcp", self.iter_tcp.to_string()),
            ("netns cookies", self.netns_cookies.to_string()),
            (
                "netns identity",
                match self.netns_identity {
                    Some(netns::Identity::Cookie) => "cookie".to_string(),
                    Some(netns::Identity::Inode) => {
                        "inode (no netns cookies: per-netns policy by nsfs inode)".to_string()
                    }
                    None => "none: per-netns policy off".to_string(),
                },
            ),
        ] {
            out.push(format!("{:<12} {what:<18} {s}", "feature"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::plan::SlotChoice;
    use crate::bpf::{Candidate, Flavour};

    fn plan(slots: &[(&'static str, bool, Option<Flavour>)]) -> Plan {
        Plan {
            choices: slots
                .iter()
                .map(|&(slot, required, flavour)| {
                    let chosen = flavour.map(|flavour| Candidate {
                        prog: "p",
                        flavour,
                        target: "t",
                    });
                    SlotChoice {
                        slot,
                        required,
                        chosen,
                        attempts: chosen.map(|c| vec![(c, Support::Supported)]).unwrap_or_default(),
                    }
                })
                .collect(),
            error: None,
        }
    }

    fn sysctl() -> (&'static str, Plan) {
        (
            "sysctl",
            plan(&[("sysctl_write", true, Some(Flavour::CgroupSysctl))]),
        )
    }

    #[test]
    fn the_netns_line_says_how_namespaces_are_told_apart() {
        // C bpftune's words where cookies exist; per-netns policy by inode without them
        // (C bpftune tunes only the initial namespace there).
        assert_eq!(
            netns_line(Some(netns::Identity::Cookie)),
            "bpftune supports per-netns policy (via netns cookie)"
        );
        assert!(netns_line(Some(netns::Identity::Inode))
            .starts_with("bpftune supports per-netns policy (via netns inode"));
        assert_eq!(
            netns_line(None),
            "bpftune does not support per-netns policy (via netns cookie)"
        );
    }

    #[test]
    fn works_fully_only_when_every_required_hook_is_full_mode() {
        let full = vec![
            sysctl(),
            (
                "demo",
                plan(&[
                    ("rmem", true, Some(Flavour::TpBtf)),
                    ("wmem", true, Some(Flavour::Fentry)),
                    // Optional hooks do not decide the level.
                    ("tcp_mem", false, Some(Flavour::Kprobe)),
                    ("syn_backlog", false, None),
                ]),
            ),
        ];
        let level = Level::assess(&full, false, true);
        assert_eq!(level, Level::Normal);
        assert_eq!(level.headline(&full, false), vec!["bpftune works fully"]);
        // -L forces legacy mode whatever attaches.
        assert_eq!(Level::assess(&full, true, true), Level::Legacy);
        // No ring buffer: nothing works.
        assert_eq!(Level::assess(&full, false, false), Level::None);
    }

    #[test]
    fn a_legacy_flavour_for_a_required_hook_is_legacy_mode() {
        let plans = vec![
            sysctl(),
            (
                "demo",
                plan(&[
                    ("rmem", true, Some(Flavour::TpBtf)),
                    ("wmem", true, Some(Flavour::RawTp)),
                ]),
            ),
        ];
        let level = Level::assess(&plans, false, true);
        assert_eq!(level, Level::Legacy);
        let lines = level.headline(&plans, false);
        assert_eq!(lines[0], "bpftune works in legacy mode");
        assert_eq!(
            lines[1],
            "tuner 'demo': hook 'wmem' attaches only as raw_tp t (a legacy-mode flavour)"
        );
        assert!(!lines.iter().any(|l| l.contains("works fully")));
    }

    #[test]
    fn a_lost_tuner_is_said_plainly() {
        let plans = vec![
            sysctl(),
            (
                "demo",
                plan(&[("rmem", true, Some(Flavour::TpBtf)), ("wmem", true, None)]),
            ),
        ];
        let level = Level::assess(&plans, false, true);
        assert_eq!(level, Level::Partial);
        let lines = level.headline(&plans, false);
        assert!(lines[0].starts_with("bpftune works partially"), "{lines:?}");
        assert_eq!(
            lines[1],
            "tuner 'demo' cannot run on this kernel: no attachable flavour for required hook wmem"
        );
        let mut failed = plans;
        failed[1].1 = plan(&[("rmem", true, Some(Flavour::TpBtf))]);
        failed[1].1.error = Some("could not attach".into());
        assert_eq!(Level::assess(&failed, false, true), Level::Partial);
        let only_lost = vec![failed.remove(1)];
        assert_eq!(Level::assess(&only_lost, false, true), Level::None);
    }
}

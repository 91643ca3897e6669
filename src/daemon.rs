//! Daemon lifecycle: start-up (tuners, cgroup, query server), the event loop, and the
//! orderly shutdown (summaries, rollback, detach, unmount).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::core::bpf::{self, LoadConfig, SharedMaps};
use crate::core::cgroup::CgroupDir;
use crate::core::change::{Ledger, TunerMeta};
use crate::core::engine::{lock, Engine};
use crate::core::events::Event;
use crate::core::netns::{NetnsRegistry, RunNetnsWatcher, Target};
use crate::core::procfs;
use crate::core::query::{QueryBackend, QueryServer, StatusRow, TunableRow, TunerRow};
use crate::core::state::{boot_id, StateStore};
use crate::core::sysctl::{ProcSysctl, SysctlStore};
use crate::core::tunable::{Rate, TunableKind};
use crate::core::tuner::{allow_matches, MemoryFacts, Ns, StartCtx, Tuner, TunerState};
use crate::tuners;

/// Daemon settings (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub allow: Vec<String>,
    pub cgroup: PathBuf,
    pub debug: bool,
    pub legacy: bool,
    pub rate: Rate,
    pub port: Option<u16>,
    pub rollback: bool,
    pub libdir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// How often the namespace list is rescanned without an inotify hint (containers made
/// by unshare/clone have no /run/netns entry).
const NETNS_RESCAN: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_secs(1);
const WAKE_RINGBUF: u64 = 0;
const WAKE_SIGNAL: u64 = 1;
const WAKE_NETNS: u64 = 2;

/// The query server's view: the ledger plus live reads.
struct Backend {
    ledger: Arc<Mutex<Ledger>>,
    sysctl: ProcSysctl,
}

impl QueryBackend for Backend {
    fn tuners(&self) -> Vec<TunerRow> {
        lock(&self.ledger)
            .tuners
            .iter()
            .map(|t| TunerRow {
                name: t.name.to_string(),
                state: t.state.as_str().to_string(),
            })
            .collect()
    }

    fn tunables(&self) -> Vec<TunableRow> {
        let l = lock(&self.ledger);
        l.tuners
            .iter()
            .flat_map(|t| {
                t.tunables.iter().map(|d| TunableRow {
                    tuner: t.name.to_string(),
                    name: d.name.to_string(),
                    is_string: d.string,
                    num_values: d.num_values,
                    is_sysctl: d.kind == TunableKind::Sysctl,
                })
            })
            .collect()
    }

    fn status(&self) -> Vec<StatusRow> {
        let metas: Vec<TunerMeta> = lock(&self.ledger).tuners.clone();
        metas
            .iter()
            .flat_map(|t| {
                t.tunables
                    .iter()
                    .filter(|d| d.kind == TunableKind::Sysctl)
                    .map(|d| StatusRow {
                        tuner: t.name.to_string(),
                        name: d.name.to_string(),
                        value: self
                            .sysctl
                            .read(&Target::Global, d.name, d.string, d.num_values)
                            .ok(),
                    })
            })
            .collect()
    }

    fn summary(&self) -> String {
        lock(&self.ledger).summary_text()
    }

    fn rollback(&self) -> String {
        lock(&self.ledger).rollback_text()
    }

    fn paths_json(&self) -> String {
        lock(&self.ledger).extras_json()
    }

    fn changes_json(&self) -> String {
        let l = lock(&self.ledger);
        let records: Vec<_> = l.records().collect();
        serde_json::to_string_pretty(&records).unwrap_or_else(|_| "[]".to_string())
    }
}

/// C bpftune loads `<name>_tuner.so` plugins from its lib dirs; ours are built in. Tell
/// the operator what we found there, so a stray plugin is not silently ignored.
fn scan_libdir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        tracing::debug!("could not open dir '{}'", dir.display());
        return;
    };
    let builtin = tuners::names();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix("_tuner.so") else {
            continue;
        };
        if builtin.contains(&stem) {
            tracing::debug!("'{}' is built into this bpftune", entry.path().display());
        } else {
            tracing::info!(
                "ignoring plugin '{}': this bpftune only runs its built-in tuners ({})",
                entry.path().display(),
                builtin.join(", ")
            );
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
}

fn raise_memlock() {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } != 0 {
        // Not fatal: kernels ≥ 5.11 account BPF memory to the memory cgroup.
        tracing::debug!(
            "cannot unlock memory limit: {}; continuing (BPF memory is cgroup-accounted)",
            std::io::Error::last_os_error()
        );
    }
}

struct Loaded {
    tuners: Vec<Option<Box<dyn Tuner>>>,
    shared: SharedMaps,
}

fn load_tuners(opts: &Options, engine: &mut Engine, cgroup: Option<&CgroupDir>) -> Loaded {
    let config = LoadConfig {
        shift: opts.rate.shift(),
        debug: opts.debug,
        pid: std::process::id() as i32,
    };
    let mut shared = SharedMaps::default();
    let mut loaded = Vec::new();
    for mut tuner in tuners::all() {
        let name = tuner.name();
        if !allow_matches(&opts.allow, name) {
            continue;
        }
        let id = engine.add_tuner(TunerMeta {
            name,
            state: TunerState::Inactive,
            tunables: tuner.tunables(),
            scenarios: tuner.scenarios(),
        });
        let plan = {
            let _quiet = bpf::Quiet::new();
            let t = &tuner;
            let shared_ref = &shared;
            bpf::plan(tuner.slots(), opts.legacy, false, &mut |progs| {
                t.try_load(shared_ref, &config, progs)
            })
        };
        if !plan.complete() {
            let missing: Vec<&str> = plan
                .choices
                .iter()
                .filter(|c| c.required && c.chosen.is_none())
                .map(|c| c.slot)
                .collect();
            tracing::error!(
                "tuner '{name}' cannot run on this kernel: no attach flavour loads for {}",
                missing.join(", ")
            );
            loaded.push(None);
            continue;
        }
        for c in &plan.choices {
            match c.chosen {
                Some(x) => tracing::debug!(
                    "{name}: hook '{}' uses {} {}",
                    c.slot,
                    x.flavour.label(),
                    x.target
                ),
                None => tracing::info!(
                    "{name}: optional hook '{}' is not available on this kernel; continuing without it",
                    c.slot
                ),
            }
        }
        let progs = plan.programs();
        let ctx = StartCtx {
            shared: &mut shared,
            config,
            tuner_id: id as u32,
            programs: &progs,
            cgroup: cgroup.map(|c| c.fd()),
        };
        match tuner.start(ctx) {
            Ok(()) => {
                engine.set_tuner_state(id, TunerState::Active);
                tracing::debug!("tuner '{name}' (id {id}) loaded");
                loaded.push(Some(tuner));
            }
            Err(e) => {
                tracing::error!("{e}");
                loaded.push(None);
            }
        }
    }
    Loaded {
        tuners: loaded,
        shared,
    }
}

fn dispatch(ev: &Event, tuners: &mut [Option<Box<dyn Tuner>>], engine: &mut Engine) {
    let id = ev.tuner_id as usize;
    let Some(Some(tuner)) = tuners.get_mut(id) else {
        tracing::debug!("no tuner for id {id}");
        return;
    };
    let deliver = engine.deliverable(id, ev.ns);
    let (cookie, kind) = match ev.ns {
        Ns::Global => (engine.global_cookie(), "global netns"),
        Ns::Netns { cookie, .. } => (cookie, "non-global netns"),
    };
    tracing::debug!(
        "event scenario [{}] for tuner {}[{id}] netns {cookie} ({kind}) {}",
        ev.scenario_id,
        tuner.name(),
        if deliver {
            "sent"
        } else {
            "skipped due to inactive tuner/netns"
        }
    );
    if deliver {
        tuner.handle(ev, &mut engine.ctx(id));
    }
}

/// Runs the daemon until SIGINT/SIGTERM. Returns the exit code.
pub fn run(opts: Options) -> anyhow::Result<i32> {
    let started = Instant::now();
    raise_memlock();
    bpf::route_libbpf_log();
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("cannot create {}", opts.run_dir.display()))?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // The query server comes up first: failing to start it (typically: another bpftune
    // is running) is fatal, and must happen before we touch the cgroup mount that the
    // running daemon uses.
    let backend: Arc<dyn QueryBackend> = Arc::new(Backend {
        ledger: ledger.clone(),
        sysctl: ProcSysctl::default(),
    });
    let server = match QueryServer::start(&opts.run_dir, opts.port, backend) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("could not start query server: {e:#}");
            return Ok(1);
        }
    };
    let cgroup = match CgroupDir::setup(&opts.cgroup, &opts.run_dir) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("{e}");
            server.stop();
            return Ok(1);
        }
    };
    let registry = NetnsRegistry::new(PathBuf::from("/proc"), PathBuf::from("/run/netns"))
        .context("cannot identify our network namespace")?;
    let global_cookie = registry.global_cookie();
    let (store, inherited) = StateStore::open(&opts.state_dir, &boot_id());
    if let Some((n, pid)) = inherited {
        if opts.rollback {
            tracing::info!("found {n} original sysctl value(s) saved by an earlier bpftune (pid {pid}); they will be restored on exit");
        } else {
            tracing::info!("found {n} original sysctl value(s) saved by an earlier bpftune (pid {pid}); kept for a later rollback (-R)");
        }
    }
    let memory = MemoryFacts {
        free_buffer_pages: std::fs::read_to_string("/proc/zoneinfo")
            .map(|t| procfs::free_buffer_pages(&t))
            .unwrap_or(0),
        page_size: page_size(),
    };
    let mut engine = Engine::new(
        opts.rate,
        Box::new(ProcSysctl::default()),
        Box::new(registry),
        ledger.clone(),
        store,
        memory,
    );

    scan_libdir(Path::new(crate::cli::SYSTEM_LIBDIR));
    scan_libdir(&opts.libdir);
    let Loaded { mut tuners, shared } = load_tuners(&opts, &mut engine, cgroup.as_ref());
    let active: Vec<&'static str> = tuners.iter().flatten().map(|t| t.name()).collect();
    let Some(ringbuf) = shared.ring_buffer().filter(|_| !active.is_empty()) else {
        tracing::error!("no ringbuf events to watch, exiting.");
        server.stop();
        if let Some(c) = cgroup {
            c.teardown();
        }
        return Ok(1);
    };

    let queue: Rc<RefCell<VecDeque<Event>>> = Rc::new(RefCell::new(VecDeque::new()));
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    {
        let q = queue.clone();
        builder.add(ringbuf, move |data: &[u8]| {
            match Event::parse(data, global_cookie) {
                Ok(ev) => q.borrow_mut().push_back(ev),
                Err(e) => tracing::error!("{e}"),
            }
            0
        })?;
    }
    let rb = builder.build()?;

    // One epoll set: the ring buffer's own epoll fd, a self-pipe written by the signal
    // handler, and the /run/netns watcher. The loop sleeps until one of them fires or a
    // timer (tick, netns rescan) is due: about one wake-up a second when idle, and
    // SIGTERM is handled at once whichever thread the kernel delivered it to.
    let (sig_rx, sig_tx) = UnixStream::pair().context("creating signal pipe")?;
    sig_rx.set_nonblocking(true)?;
    sig_tx.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = sig_tx.try_clone().context("cloning signal pipe")?;
        signal_hook::low_level::pipe::register(sig, tx).context("installing signal handler")?;
    }
    let watcher = RunNetnsWatcher::new(Path::new("/run/netns")).ok();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    // SAFETY: the ring buffer (and so its epoll fd) outlives `epoll`, which is dropped
    // before `rb` below.
    let rb_fd = unsafe { BorrowedFd::borrow_raw(rb.epoll_fd()) };
    epoll.add(rb_fd, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_RINGBUF))?;
    epoll.add(&sig_rx, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_SIGNAL))?;
    if let Some(w) = &watcher {
        epoll.add(w.fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_NETNS))?;
    }
    let known = engine.refresh_netns().created.len();
    tracing::info!(
        "bpftune started: tuners {} attached in {} ms; watching {} network namespace(s) besides the initial one (cookie {global_cookie})",
        active.join(", "),
        started.elapsed().as_millis(),
        known
    );

    let mut next_scan = Instant::now() + NETNS_RESCAN;
    let mut next_tick = Instant::now() + TICK;
    let mut ready = [EpollEvent::empty(); 4];
    'main: loop {
        let now = Instant::now();
        let wait = next_tick.min(next_scan).saturating_duration_since(now);
        let timeout = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let n = match epoll.wait(&mut ready, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        let mut rescan = false;
        for ev in &ready[..n] {
            match ev.data() {
                WAKE_SIGNAL => break 'main,
                WAKE_RINGBUF => {
                    if let Err(e) = rb.consume() {
                        tracing::debug!("ring buffer consume: {e}");
                    }
                }
                WAKE_NETNS => rescan |= watcher.as_ref().is_some_and(|w| w.drain()),
                _ => {}
            }
        }
        loop {
            let next = queue.borrow_mut().pop_front();
            let Some(ev) = next else { break };
            dispatch(&ev, &mut tuners, &mut engine);
        }
        let now = Instant::now();
        if rescan || now >= next_scan {
            engine.refresh_netns();
            next_scan = now + NETNS_RESCAN;
        }
        if now >= next_tick {
            for (id, t) in tuners.iter_mut().enumerate() {
                if let Some(t) = t {
                    t.tick(&mut engine.ctx(id));
                    if let Some(s) = t.summary() {
                        lock(&ledger).set_extra(id, s);
                    }
                }
            }
            next_tick = now + TICK;
        }
    }
    drop(epoll);

    // Orderly shutdown: summaries, rollback, detach everything, unmount.
    drop(rb);
    for (id, t) in tuners.iter_mut().enumerate() {
        let Some(t) = t else { continue };
        if let Some(s) = t.summary() {
            lock(&ledger).set_extra(id, s);
        }
        for s in t.samples() {
            tracing::info!(
                "Sample '{}': associated program was called {} times, collected data every {} of these.",
                s.name,
                s.calls,
                s.every
            );
        }
        for line in lock(&ledger).tuner_summary(id) {
            tracing::info!("{line}");
        }
    }
    if opts.rollback {
        engine.rollback();
    }
    for t in tuners.iter_mut().flatten() {
        t.stop();
    }
    drop(shared);
    server.stop();
    if let Some(c) = cgroup {
        c.teardown();
    }
    Ok(0)
}

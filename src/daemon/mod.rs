//! Daemon lifecycle in three pieces: [`Daemon::start`] acquires everything (query server,
//! cgroup mount, namespace registry, state file, tuners and their BPF links, ring buffer,
//! signal pipe, watcher), [`Daemon::run_until_signal`] is the event loop
//! (`event_loop.rs`), and [`Daemon::shutdown`] prints the summaries, rolls back (`-R`)
//! and releases it all.
//!
//! Every resource is owned by a value whose `Drop` releases it, and the fields of
//! [`Daemon`] are declared in release order (ring buffer and tuners — i.e. BPF links —
//! before the cgroup mount they are attached to, the query socket last). A start-up that
//! fails half way therefore leaves nothing behind: whatever was acquired is dropped on
//! the error path, in reverse order of acquisition. The run directory's lock
//! (`instance.rs`) is taken before anything else and released after everything else, so
//! a successor started while this daemon stops waits until all of it is released.

mod backend;
mod event_loop;
pub mod instance;
mod load;
mod lost_events;
pub mod notify;
mod plugins;
pub mod rollback_now;
mod run_dir;
mod start;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context as _};

use crate::bpf::cgroup::CgroupDir;
use crate::bpf::{self, SharedMaps};
use crate::engine::{lock, Engine};
use crate::kernel::netns::RunNetnsWatcher;
use crate::kernel::sysctl::ProcSysctl;
use crate::kernel::wait::Waiter;
use crate::model::event::Event;
use crate::model::tunable::Rate;
use crate::record::ledger::Ledger;
use crate::report::query::{format, QueryBackend, QueryServer};
use crate::tuner::Tuner;

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
    /// `--observe`: propose, never write.
    pub observe: bool,
    /// `--metrics-listen`: serve Prometheus metrics there.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--metrics-textfile`: rewrite this file with the metrics periodically.
    pub metrics_textfile: Option<PathBuf>,
}

/// What the event loop waits on.
struct Events {
    waiter: Waiter,
    ring: libbpf_rs::RingBuffer<'static>,
    /// Events decoded by the ring-buffer callback, dispatched after `consume` returns.
    queue: Rc<RefCell<VecDeque<Event>>>,
    /// Read end of the self-pipe the signal handler writes to.
    _signals: UnixStream,
    watcher: Option<RunNetnsWatcher>,
}

/// A started daemon. Fields are dropped in declaration order: see the module docs.
pub struct Daemon {
    /// Dropped first: stops the exporter threads before what they read is released.
    metrics: Option<crate::report::metrics::Exporter>,
    events: Events,
    tuners: Vec<Option<Box<dyn Tuner>>>,
    /// Plugin directories and the plugins loaded from them (their tuners are in `tuners`).
    plugins: plugins::Plugins,
    /// Held for its `Drop`: the maps every tuner's object shares (plugins loaded while
    /// running reuse them too).
    _shared: SharedMaps,
    engine: Engine,
    ledger: Arc<Mutex<Ledger>>,
    cgroup: Option<CgroupDir>,
    /// Held for its `Drop`: stops the query thread and removes the socket.
    _server: QueryServer,
    rollback: bool,
    /// systemd notification (READY/STATUS/WATCHDOG/STOPPING); a no-op outside systemd.
    notify: notify::Notifier,
    /// Names of the attached tuners (for STATUS=).
    active: Vec<&'static str>,
    /// The shared lost-event counter and what has been said about it.
    lost: Option<libbpf_rs::MapHandle>,
    lost_report: lost_events::LossReport,
    /// The run directory's lock, declared last so that it is released last: a successor
    /// waiting for it finds the socket, the cgroup mount and the state file released.
    instance: instance::Instance,
}

/// Runs the daemon until SIGINT/SIGTERM. Returns the exit code; start-up failures are
/// errors (exit 1) after everything acquired so far has been released.
pub fn run(opts: Options) -> anyhow::Result<i32> {
    let mut daemon = Daemon::start(&opts)?;
    let result = daemon.run_until_signal();
    daemon.shutdown();
    result.map(|()| 0)
}

impl Daemon {
    /// Acquires everything, in this order: run directory, its lock (first, so that a
    /// second daemon is refused — or, next to one that is stopping, waits — before it
    /// touches the other one's socket, cgroup mount or state file), query server, cgroup
    /// mount, namespace registry and state file, tuners, ring buffer, signal pipe,
    /// `/run/netns` watcher.
    pub fn start(opts: &Options) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        load::raise_memlock();
        bpf::route_libbpf_log();
        let mut instance = start::acquire_instance(opts)?;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let backend: Arc<dyn QueryBackend> = Arc::new(backend::Backend {
            ledger: ledger.clone(),
            sysctl: ProcSysctl::default(),
        });
        let server =
            QueryServer::start(&opts.run_dir, opts.port, backend).context("could not start query server")?;
        let cgroup = CgroupDir::setup(&opts.cgroup, &opts.run_dir)?;
        // Before our own programs are attached: a second daemon was refused above, so
        // only programs of a dead bpftune can be left here.
        cgroup.detach_stale_programs();
        let (mut engine, global_cookie) = start::new_engine(opts, &ledger)?;

        let plugin_dirs = [Path::new(crate::cli::SYSTEM_LIBDIR), opts.libdir.as_path()];
        let load::Loaded {
            mut tuners,
            mut shared,
        } = load::load_tuners(
            opts,
            &mut engine,
            Some(&cgroup),
            &plugins::Plugins::names_present(&plugin_dirs),
        );
        // Plugins after the built-in tuners: their ids follow, and their objects reuse
        // the shared maps the built-in objects created (or create them, if none runs).
        // Before any plugin code runs: a file version that crashed the last run is
        // refused, and this run's crashes are recorded.
        let quarantine = crate::plugin::crash::start_up(&opts.state_dir);
        let mut plugins = plugins::Plugins::new(
            &plugin_dirs,
            &opts.allow,
            crate::tuners::names(),
            bpf::LoadConfig::new(opts.rate.shift(), opts.debug, opts.observe),
            Some(cgroup.fd()),
            quarantine,
        );
        plugins.scan(&mut tuners, &mut engine, &mut shared);
        // One line for what this kernel lacks (e.g. IPv6 off), instead of one per sysctl
        // the first time a tuner proposes it.
        engine.report_missing_tunables();
        let active: Vec<&'static str> = tuners.iter().flatten().map(|t| t.name()).collect();
        let ringbuf = shared
            .ring_buffer()
            .filter(|_| !active.is_empty())
            .ok_or_else(|| anyhow!("no ringbuf events to watch, exiting."))?;

        let events = start::events(ringbuf, global_cookie, &mut instance, &plugins)?;
        // Start-up is over: from here on this thread keeps only what later operations
        // raise (kernel::privs); the log line and READY=1 below come after the drop.
        match crate::kernel::privs::drop_to_idle() {
            Ok(kept) => tracing::debug!(
                "capabilities while idle: effective none, permitted {}",
                crate::kernel::privs::names(&kept).join(" ")
            ),
            Err(e) => tracing::warn!("cannot drop capabilities: {e}"),
        }
        let known = engine.refresh_netns().created.len();
        let metrics = start_metrics(opts, &ledger, &engine, &shared, &tuners)?;
        tracing::info!(
            "bpftune started: tuners {} attached in {} ms; watching {} network namespace(s) besides the initial one (cookie {global_cookie})",
            active.join(", "),
            started.elapsed().as_millis(),
            known
        );
        // A handle of our own (a dup): `shared` moves into the daemon below.
        let lost = shared
            .lost_events()
            .and_then(|m| libbpf_rs::MapHandle::try_from(m).ok());
        // Every tuner is attached and the loop is about to run: now systemd may start
        // what is ordered after us.
        let mut notify = notify::Notifier::from_env();
        let nothing_yet = if engine.observe() {
            notify::Progress::Proposals(0)
        } else {
            notify::Progress::Changes(0)
        };
        notify.ready(notify::status_line(&active, nothing_yet), Instant::now());
        Ok(Daemon {
            metrics,
            events,
            tuners,
            plugins,
            _shared: shared,
            engine,
            ledger,
            cgroup: Some(cgroup),
            _server: server,
            rollback: opts.rollback,
            notify,
            active,
            lost,
            lost_report: lost_events::LossReport::default(),
            instance,
        })
    }

    /// Orderly shutdown: sample reports and summaries, rollback (`-R`), then every BPF
    /// link is detached, the cgroup unmounted and the query socket removed (by `Drop`).
    pub fn shutdown(mut self) {
        // Also when the loop ended by an error, not a signal: a successor waits for us.
        self.instance.mark_stopping();
        self.notify.stopping();
        // Rollback, detaching and unmounting: everything still permitted, for the rest
        // of the process's life.
        let _caps = crate::kernel::privs::raise(crate::kernel::privs::KEEP);
        for (id, t) in self.tuners.iter_mut().enumerate() {
            let Some(t) = t else { continue };
            if let Some(s) = t.summary() {
                lock(&self.ledger).set_extra(id, s);
            }
            for s in t.samples() {
                tracing::info!(
                    "Sample '{}': associated program was called {} times, collected data every {} of these.",
                    s.name,
                    s.calls,
                    s.every
                );
            }
            for line in format::tuner_summary(&lock(&self.ledger), id) {
                tracing::info!("{line}");
            }
        }
        if let Some(line) = self
            .lost
            .as_ref()
            .and_then(crate::bpf::lost_events_total)
            .and_then(lost_events::LossReport::summary)
        {
            tracing::info!("{line}");
        }
        if self.engine.observe() {
            tracing::info!(
                "# Observe mode: {} proposed change(s), none applied",
                lock(&self.ledger).proposed_count()
            );
        }
        if self.rollback {
            self.engine.rollback();
        }
        // Last textfile write, after the rollback so its counters are final.
        if let Some(m) = self.metrics.take() {
            m.finish();
        }
        for t in self.tuners.iter_mut().flatten() {
            t.stop();
        }
        if let Some(c) = self.cgroup.take() {
            c.teardown();
        }
    }
}

/// How often `--metrics-textfile` is rewritten (a typical scrape interval).
const METRICS_TEXTFILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Starts the Prometheus exporter if asked for (`--metrics-listen`, `--metrics-textfile`).
fn start_metrics(
    opts: &Options,
    ledger: &Arc<Mutex<Ledger>>,
    engine: &Engine,
    shared: &SharedMaps,
    tuners: &[Option<Box<dyn Tuner>>],
) -> anyhow::Result<Option<crate::report::metrics::Exporter>> {
    if opts.metrics_listen.is_none() && opts.metrics_textfile.is_none() {
        return Ok(None);
    }
    let programs = tuners
        .iter()
        .flatten()
        .flat_map(|t| {
            let name = t.name();
            t.slots()
                .iter()
                .flat_map(|s| s.candidates.iter())
                .map(move |c| (name, c.prog))
        })
        .collect();
    let source = Arc::new(crate::report::metrics::Source {
        ledger: ledger.clone(),
        stats: engine.stats().clone(),
        lost_events: shared
            .lost_events()
            .and_then(|m| libbpf_rs::MapHandle::try_from(m).ok()),
        programs,
        sysctl: ProcSysctl::default(),
    });
    let config = crate::report::metrics::ExporterConfig {
        listen: opts.metrics_listen,
        textfile: opts.metrics_textfile.clone(),
        interval: METRICS_TEXTFILE_INTERVAL,
    };
    Ok(Some(crate::report::metrics::Exporter::start(&config, source)?))
}

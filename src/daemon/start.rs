//! The pieces of [`Daemon::start`](super::Daemon::start) that acquire one resource
//! each, in the order the start-up takes them. Whatever one returns is dropped by the
//! caller if a later piece fails, so a failed start leaves nothing behind.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use libbpf_rs::MapHandle;

use super::event_loop::{self, WAKE_NETNS, WAKE_RINGBUF, WAKE_SIGNAL};
use super::{instance, load, plugins, run_dir, Events, Options};
use crate::engine::Engine;
use crate::kernel::netns::{NetnsRegistry, RunNetnsWatcher, DEFAULT_PROC_ROOT, DEFAULT_RUN_NETNS};
use crate::kernel::procfs;
use crate::kernel::sysctl::ProcSysctl;
use crate::kernel::wait::Waiter;
use crate::model::event::Event;
use crate::record::ledger::Ledger;
use crate::record::originals::{boot_id, StateStore};
use crate::tuner::MemoryFacts;

/// The run directory and its lock, first of all: a second daemon is refused (or, next to
/// one that is stopping, waits) before it touches the other one's socket, cgroup mount
/// or state file.
pub(super) fn acquire_instance(opts: &Options) -> anyhow::Result<instance::Instance> {
    run_dir::prepare(&opts.run_dir)?;
    let (instance, predecessor) =
        match instance::acquire(&opts.run_dir, instance::State::Running, instance::TAKEOVER_WAIT) {
            Ok(got) => got,
            // Word for word what a second daemon has always been told.
            Err(e @ instance::InstanceError::Running { .. }) => {
                return Err(anyhow::Error::new(e).context("could not start query server"))
            }
            Err(e) => return Err(e.into()),
        };
    if let Some(p) = predecessor {
        let who = p.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
        tracing::info!(
            "the previous bpftune{who} has exited after {} ms; taking over its state",
            p.waited.as_millis()
        );
    }
    Ok(instance)
}

/// The engine over the namespace registry, the state file of originals and the memory
/// facts; returns it with the initial namespace's cookie.
pub(super) fn new_engine(opts: &Options, ledger: &Arc<Mutex<Ledger>>) -> anyhow::Result<(Engine, u64)> {
    let registry = NetnsRegistry::new(PathBuf::from(DEFAULT_PROC_ROOT), PathBuf::from(DEFAULT_RUN_NETNS))
        .context("cannot identify our network namespace")?;
    let global_cookie = registry.global_cookie();
    let (store, inherited) = StateStore::open(&opts.state_dir, &boot_id());
    if let Some((n, pid)) = inherited {
        let then = if opts.rollback {
            "they will be restored on exit"
        } else {
            "kept for a later rollback (-R)"
        };
        tracing::info!("found {n} original sysctl value(s) saved by an earlier bpftune (pid {pid}); {then}");
    }
    let memory = MemoryFacts {
        free_buffer_pages: std::fs::read_to_string("/proc/zoneinfo")
            .map(|t| procfs::free_buffer_pages(&t))
            .unwrap_or(0),
        page_size: load::page_size(),
    };
    let mut engine = Engine::new(
        opts.rate,
        // Neighbour-table thresholds go through rtnetlink (RTM_SETNEIGHTBL), the rest
        // through /proc/sys.
        Box::new(crate::kernel::netlink::NeighTableStore::new(ProcSysctl::default())),
        Box::new(registry),
        ledger.clone(),
        store,
        memory,
    );
    if opts.observe {
        engine.set_observe(true);
        tracing::info!("observe mode: proposed changes are logged as 'would change', nothing is written; see 'bpftune -q advice'");
    }
    Ok((engine, global_cookie))
}

/// One wait set: the ring buffer's own epoll fd (its records decoded into the event
/// queue), a self-pipe written by the signal handler, the /run/netns watcher and the
/// plugin directory. The loop sleeps until one of them fires or a timer (tick, netns
/// rescan) is due: about one wake-up a second when idle, and SIGTERM is handled at once
/// whichever thread the kernel delivered it to.
pub(super) fn events(
    ringbuf: &MapHandle,
    global_cookie: u64,
    instance: &mut instance::Instance,
    plugins: &plugins::Plugins,
) -> anyhow::Result<Events> {
    let queue: Rc<RefCell<VecDeque<Event>>> = Rc::new(RefCell::new(VecDeque::new()));
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    let q = queue.clone();
    builder.add(ringbuf, move |data: &[u8]| {
        match crate::bpf::event::parse(data, global_cookie) {
            Ok(ev) => q.borrow_mut().push_back(ev),
            Err(e) => tracing::error!("{e}"),
        }
        0
    })?;
    let ring = builder.build()?;

    let (sig_rx, sig_tx) = UnixStream::pair().context("creating signal pipe")?;
    sig_rx.set_nonblocking(true)?;
    sig_tx.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = sig_tx.try_clone().context("cloning signal pipe")?;
        signal_hook::low_level::pipe::register(sig, tx).context("installing signal handler")?;
        // A successor started right after the signal must see at once that we are
        // stopping, however busy the event loop is.
        if let Err(e) = instance.mark_stopping_on(sig) {
            tracing::debug!("cannot mark the lock file on signal {sig}: {e}");
        }
    }
    let watcher = match RunNetnsWatcher::new(Path::new(DEFAULT_RUN_NETNS)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::info!("not watching {DEFAULT_RUN_NETNS} ({e}); new namespaces are found by rescans");
            None
        }
    };
    let waiter = Waiter::new().context("epoll_create")?;
    // SAFETY: the ring buffer owns this epoll fd and lives in the same `Events` as
    // `waiter`, which is declared (and so dropped) first.
    let ring_fd = unsafe { BorrowedFd::borrow_raw(ring.epoll_fd()) };
    waiter.add(&ring_fd, WAKE_RINGBUF)?;
    waiter.add(&sig_rx, WAKE_SIGNAL)?;
    if let Some(w) = &watcher {
        waiter.add(&w.fd(), WAKE_NETNS)?;
    }
    if let Some(fd) = plugins.fd() {
        waiter.add(&fd, event_loop::WAKE_PLUGINS)?;
    }
    Ok(Events {
        waiter,
        ring,
        queue,
        _signals: sig_rx,
        watcher,
    })
}

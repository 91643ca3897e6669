//! bpftune binary: parses flags and picks the mode (daemon, query client, support probe).

use std::process::ExitCode;

use clap::Parser;

use bpftune::cli::{self, Cli};
use bpftune::daemon;
use bpftune::model::tunable::Rate;
use bpftune::report::log::{self, Destination, LogOptions};
use bpftune::report::query;
use bpftune::tuner::support as probe;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// What this invocation does: one of these, by the flags' precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode<'a> {
    Version,
    PrintLibdir,
    /// `-q`: a query client.
    Query(&'a str),
    /// `--rollback-now`: restore persisted originals without starting.
    RollbackNow,
    /// `-S`: the support probe.
    Support,
    /// The daemon (foreground, or `-d` detached).
    Daemon,
}

impl<'a> Mode<'a> {
    fn of(cli: &'a Cli) -> Mode<'a> {
        if cli.version {
            Mode::Version
        } else if cli.print_libdir {
            Mode::PrintLibdir
        } else if let Some(q) = &cli.query {
            Mode::Query(q)
        } else if cli.rollback_now {
            Mode::RollbackNow
        } else if cli.support {
            Mode::Support
        } else {
            Mode::Daemon
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return exit(code);
        }
    };
    let mode = Mode::of(&cli);
    match mode {
        Mode::Version => {
            let argv0 = std::env::args().next().unwrap_or_else(|| "bpftune".into());
            println!("{argv0} v{}", env!("CARGO_PKG_VERSION"));
            return exit(0);
        }
        Mode::PrintLibdir => {
            println!("{}", cli::SYSTEM_LIBDIR);
            return exit(0);
        }
        _ => {}
    }
    let rate = match cli.rate() {
        Ok(r) => Rate::from_learning_rate(r).unwrap_or_default(),
        Err(msg) => {
            eprintln!("{msg}");
            return exit(1);
        }
    };
    // Only the daemon logs to syslog by default; the one-shot modes answer on stderr.
    let destination = if cli.stderr || mode != Mode::Daemon {
        Destination::Stderr
    } else {
        Destination::Syslog
    };
    if let Err(e) = log::init(&LogOptions {
        destination,
        debug: cli.debug,
    }) {
        eprintln!("bpftune: cannot set up logging: {e:#}");
        return exit(1);
    }

    bpftune::bpf::route_libbpf_log();

    match mode {
        Mode::Query(q) => run_query(&cli, q),
        Mode::RollbackNow => rollback_now(),
        Mode::Support => support(&cli),
        Mode::Daemon => run_daemon(&cli, rate),
        // Answered above, before logging was set up.
        Mode::Version | Mode::PrintLibdir => exit(0),
    }
}

fn run_query(cli: &Cli, q: &str) -> ExitCode {
    match query::client(&cli::run_dir(), cli.port, q) {
        Ok(reply) => {
            println!("{reply}");
            exit(0)
        }
        Err(e) => {
            eprintln!("bpftune: {e:#}");
            let errno = e
                .downcast_ref::<query::ClientError>()
                .and_then(|c| c.raw_os_error())
                .unwrap_or(libc::EIO);
            exit(-errno)
        }
    }
}

fn rollback_now() -> ExitCode {
    match daemon::rollback_now::run(&cli::state_dir(), &cli::run_dir()) {
        Ok(r) if r.left == 0 => {
            tracing::info!("rollback: {} persisted original value(s) handled", r.found);
            if r.kept > 0 {
                // Not a failure (the package's prerm must not fail on it), but say
                // how to finish the job.
                tracing::warn!(
                    "rollback: {} original value(s) of plugin-managed sysctls kept in the state file; run bpftune -R with those plugins to restore them",
                    r.kept
                );
            }
            exit(0)
        }
        Ok(r) => {
            tracing::error!(
                "rollback: {} of {} original value(s) could not be restored",
                r.left,
                r.found
            );
            exit(1)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            exit(1)
        }
    }
}

fn support(cli: &Cli) -> ExitCode {
    let report = probe::run(&bpftune::tuners::all(), cli.legacy);
    for line in report.lines() {
        tracing::info!("{line}");
    }
    exit(report.exit_code())
}

fn run_daemon(cli: &Cli, rate: Rate) -> ExitCode {
    if cli.daemon {
        // SAFETY: daemon(3) forks; we call it before any thread is started.
        if unsafe { libc::daemon(1, 1) } != 0 {
            eprintln!("cannot daemonize: {}", std::io::Error::last_os_error());
            return exit(1);
        }
    }
    let opts = daemon::Options {
        allow: cli.allow.clone(),
        cgroup: cli.cgroup.clone(),
        debug: cli.debug,
        legacy: cli.legacy,
        rate,
        port: cli.port,
        rollback: cli.rollback || cli::rollback_from_env(),
        libdir: cli.libdir.clone(),
        run_dir: cli::run_dir(),
        state_dir: cli::state_dir(),
        observe: cli.observe,
        metrics_listen: cli.metrics_listen,
        metrics_textfile: cli.metrics_textfile.clone(),
    };
    match daemon::run(opts) {
        Ok(code) => exit(code),
        Err(e) => {
            tracing::error!("{e:#}");
            exit(1)
        }
    }
}

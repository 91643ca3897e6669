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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return exit(code);
        }
    };
    if cli.version {
        let argv0 = std::env::args().next().unwrap_or_else(|| "bpftune".into());
        println!("{argv0} v{}", env!("CARGO_PKG_VERSION"));
        return exit(0);
    }
    if cli.print_libdir {
        println!("{}", cli::SYSTEM_LIBDIR);
        return exit(0);
    }
    let rate = match cli.rate() {
        Ok(r) => Rate::from_learning_rate(r).unwrap_or_default(),
        Err(msg) => {
            eprintln!("{msg}");
            return exit(1);
        }
    };
    let to_stderr = cli.stderr || cli.support || cli.query.is_some() || cli.rollback_now;
    let destination = if to_stderr {
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

    if let Some(q) = &cli.query {
        return match query::client(&cli::run_dir(), cli.port, q) {
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
        };
    }

    if cli.rollback_now {
        return match daemon::rollback_now::run(&cli::state_dir(), &cli::run_dir()) {
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
        };
    }

    if cli.support {
        let report = probe::run(&bpftune::tuners::all(), cli.legacy);
        for line in report.lines() {
            tracing::info!("{line}");
        }
        return exit(report.exit_code());
    }

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

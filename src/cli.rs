//! Command-line flags: exactly C bpftune's (`a:c:dDhl:Lr:p:Pq:RsSV`), defined once here;
//! `--help` and the man page come from this definition.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// Compiled-in system plugin directory (`-P`); C bpftune's `BPFTUNER_LIB_DIR`, which is
/// `<prefix>/<libdir>/bpftune/` there (`/usr/lib64/bpftune/` on RPM systems, `lib/` on
/// Debian). Ours defaults to Debian's `/usr/lib/bpftune/`, the directory the Debian
/// package creates; set `BPFTUNE_SYSTEM_LIBDIR` at build time for another layout.
pub const SYSTEM_LIBDIR: &str = match option_env!("BPFTUNE_SYSTEM_LIBDIR") {
    Some(dir) => dir,
    None => "/usr/lib/bpftune/",
};
/// Default local plugin directory (`-l`).
pub const LOCAL_LIBDIR: &str = "/usr/local/lib64/bpftune/";
/// Run directory: query socket, port file, cgroup mount.
pub const RUN_DIR: &str = "/var/run/bpftune";
/// Persisted original sysctl values for rollback.
pub const STATE_DIR: &str = "/var/lib/bpftune";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bpftune",
    about = "BPF-driven auto-tuning of network and memory sysctls",
    long_about = "bpftune watches the kernel with BPF and auto-tunes network and memory-reclaim sysctls, per network namespace where the sysctl is per namespace (the vm sysctls are global). Built-in tuners: TCP buffer limits, TCP memory and the SYN backlog (tcp_buffer); the congestion control algorithm of each TCP connection, chosen per path (tcp_conn); UDP receive buffers and UDP memory (udp_buffer); IP fragment reassembly memory (ip_frag); the per-CPU input backlog and the NAPI budget (net_buffer); the ARP and NDISC neighbour tables (neigh_table); memory reclaim: the watermark gap kswapd keeps, the atomic allocation reserve and dentry/inode cache pressure (vm); and the sysctl tuner, which notices when another process writes a sysctl a tuner manages. Every change is logged with what changed and why; a sysctl an administrator sets is left alone from then on.",
    disable_version_flag = true,
    disable_help_flag = true
)]
pub struct Cli {
    /// Only load these tuners (name, e.g. tcp_buffer, or file name tcp_buffer_tuner.so); repeatable
    #[arg(short = 'a', long = "allow", value_name = "TUNER", action = ArgAction::Append)]
    pub allow: Vec<String>,

    /// cgroup-v2 directory for cgroup programs (mounted there if it is not one)
    #[arg(
        short = 'c',
        long = "cgroup",
        value_name = "DIR",
        default_value = "/var/run/bpftune/cgroupv2"
    )]
    pub cgroup: PathBuf,

    /// Debug logging (also libbpf's messages and BPF trace_pipe output)
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Run in the background (daemon(3), keeping cwd and stdio)
    #[arg(short = 'D', long = "daemon")]
    pub daemon: bool,

    /// Print help
    #[arg(short = 'h', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Local plugin directory, scanned for tuner files
    #[arg(short = 'l', long = "libdir", value_name = "DIR", default_value = LOCAL_LIBDIR)]
    pub libdir: PathBuf,

    /// Legacy mode: conservative attach flavours only (raw_tp, kprobe, cgroup programs)
    #[arg(short = 'L', long = "legacy")]
    pub legacy: bool,

    /// Learning rate 0..4: step and proximity = 1/2^(6-rate) (4: 25%, 0: 1.5625%)
    #[arg(short = 'r', long = "learning_rate", value_name = "RATE", default_value = "4")]
    pub learning_rate: String,

    /// Query server: also listen on 127.0.0.1:PORT (daemon); query that port (client)
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// Print the system plugin directory and exit
    #[arg(short = 'P', long = "print-libdir")]
    pub print_libdir: bool,

    /// Query a running daemon (`-q help` lists the queries; a prefix is enough)
    #[arg(short = 'q', long = "query", value_name = "QUERY")]
    pub query: Option<String>,

    /// Roll back every sysctl bpftune changed when it exits (also after a crash, on the next -R run)
    #[arg(short = 'R', long = "rollback")]
    pub rollback: bool,

    /// Log to stderr instead of syslog
    #[arg(short = 's', long = "stderr")]
    pub stderr: bool,

    /// Print what BPF support this kernel has, per tuner, and exit
    #[arg(short = 'S', long = "support", alias = "suppport")]
    pub support: bool,

    /// Print version and exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    /// Observe only: log, count and record what would be changed ("would change ..."),
    /// never write a sysctl; see the advice query
    #[arg(long = "observe")]
    pub observe: bool,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (`:PORT` or `PORT`: 127.0.0.1)
    #[arg(long = "metrics-listen", value_name = "ADDR:PORT", value_parser = crate::report::metrics::parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Write Prometheus metrics to FILE (atomically, every 15 s and at exit) for node_exporter's textfile collector
    #[arg(long = "metrics-textfile", value_name = "FILE")]
    pub metrics_textfile: Option<PathBuf>,

    /// Restore the original sysctl values a stopped bpftune persisted (-R's rule: only values still as bpftune left them) and exit
    #[arg(long = "rollback-now")]
    pub rollback_now: bool,
}

impl Cli {
    /// The learning rate, validated as C bpftune does ("values 0-4 are supported").
    pub fn rate(&self) -> Result<u32, String> {
        match self.learning_rate.trim().parse::<u32>() {
            Ok(r) if r <= 4 => Ok(r),
            _ => Err("values 0-4 are supported".to_string()),
        }
    }
}

/// Run and state directories; overridable by environment for tests and packaging.
pub fn run_dir() -> PathBuf {
    std::env::var_os("BPFTUNE_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RUN_DIR))
}

/// `BPFTUNE_ROLLBACK=1` is `-R` for environments that set options through the
/// environment rather than the command line (the Kubernetes DaemonSet's ConfigMap; its
/// FROM-scratch image has no shell to expand a variable into flags).
pub fn rollback_from_env() -> bool {
    std::env::var_os("BPFTUNE_ROLLBACK").is_some_and(|v| v == "1")
}

pub fn state_dir() -> PathBuf {
    std::env::var_os("BPFTUNE_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(STATE_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_c_flags() {
        let c = Cli::try_parse_from([
            "bpftune",
            "-s",
            "-d",
            "-R",
            "-a",
            "tcp_buffer_tuner.so",
            "-a",
            "sysctl",
            "-r",
            "2",
            "-p",
            "1234",
            "-c",
            "/tmp/cg",
        ])
        .expect("valid flags");
        assert!(c.stderr && c.debug && c.rollback);
        assert_eq!(c.allow, vec!["tcp_buffer_tuner.so", "sysctl"]);
        assert_eq!(c.rate(), Ok(2));
        assert_eq!(c.port, Some(1234));
        let c = Cli::try_parse_from(["bpftune", "--learning_rate", "7"]).expect("parses");
        assert_eq!(c.rate(), Err("values 0-4 are supported".into()));
        assert!(Cli::try_parse_from(["bpftune", "-x"]).is_err());
        assert!(
            Cli::try_parse_from(["bpftune", "--suppport"])
                .expect("C's typo")
                .support
        );
        let c = Cli::try_parse_from(["bpftune", "--query", "status"]).expect("query");
        assert_eq!(c.query.as_deref(), Some("status"));
    }
}

#[cfg(test)]
mod doc_tests {
    use clap::CommandFactory;

    /// README and --help come from one flag set: every long flag and query must be in the
    /// README. The man pages are generated from this definition (`make man`); their
    /// test is in xtask/tests/docs.rs.
    #[test]
    fn every_flag_is_documented() {
        let readme = include_str!("../README.md");
        for arg in super::Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(readme.contains(&format!("--{long}")), "README lacks --{long}");
        }
        for (q, _) in crate::report::query::QUERIES {
            assert!(readme.contains(q), "query {q} not in README");
        }
    }

    /// `--help` and the man page's DESCRIPTION say what bpftune tunes: every built-in
    /// tuner is named there, so a new one cannot leave the description behind.
    #[test]
    fn description_names_every_tuner() {
        let cmd = super::Cli::command();
        let about = cmd.get_long_about().expect("long_about").to_string();
        for name in crate::tuners::names() {
            assert!(
                about.contains(&format!("({name})")) || about.contains(&format!("the {name} tuner")),
                "long_about does not name tuner {name}: {about}"
            );
        }
    }
}

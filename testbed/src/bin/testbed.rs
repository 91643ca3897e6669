//! `bpftune-testbed`: set up testbed topologies and run a bpftune daemon from scripts.
//!
//! ```text
//! bpftune-testbed delayline [--delay-ms N | --delay-us N] [--loss PCT] [--mtu N]
//!                           [--max-lifetime-s N] [--prefix P] [--hold]
//! bpftune-testbed veth [--addr-a CIDR] [--addr-b CIDR] [--prefix P] [--hold]
//! bpftune-testbed netns [--prefix P] [--hold]
//! bpftune-testbed throughput [--delay-ms N] [--loss PCT] [--mtu N] [--seconds N]
//!                            [--runs N] [--rmem-max BYTES] [--wmem-max BYTES]
//!                            [--cc NAME] [--port N] [--prefix P]
//! bpftune-testbed daemon [--bpftune PATH] [--no-debug] [--restore-globals]
//!                        [--wait-others-s N] [--state-dir DIR] [--packaged-layout]
//!                        [--tag T] [--bpf-stats] [-- BPFTUNE_ARGS...]
//! bpftune-testbed daemons [--not-under PID]
//! bpftune-testbed cleanup [--prefix P]
//! ```
//!
//! `delayline` and `veth` print one line
//! `left=NS right=NS left_addr=IP right_addr=IP left_dev=DEV right_dev=DEV`
//! (shell-`eval`-able), `netns` prints `ns=NS`; they hold the topology until stdin
//! reaches EOF (only when stdin is a pipe, socket or terminal; `/dev/null` or a file
//! is not watched) or SIGTERM/SIGINT/SIGHUP arrives, then tear it down.
//! `daemon` runs one bpftune daemon through the same harness as the integration tests
//! and speaks JSON lines (see `bpftune_testbed::supervise`); `daemons` lists other
//! running bpftune daemons as JSON lines.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bpftune_testbed::supervise::stdin_watchable;
use bpftune_testbed::{
    bpfstats, cleanup_stale, dirs, host, iperf3_run, supervise, DaemonConfig, DelayConfig, DelayLine,
    IperfServer, Netns, VethPair,
};

const USAGE: &str = "usage:
  bpftune-testbed delayline [--delay-ms N | --delay-us N] [--loss PCT] [--mtu N]
                            [--max-lifetime-s N] [--prefix P] [--hold]
  bpftune-testbed veth [--addr-a CIDR] [--addr-b CIDR] [--prefix P] [--hold]
  bpftune-testbed netns [--prefix P] [--hold]
  bpftune-testbed throughput [--delay-ms N] [--loss PCT] [--mtu N] [--seconds N] [--runs N]
                             [--rmem-max BYTES] [--wmem-max BYTES] [--cc NAME] [--port N]
                             [--prefix P]
  bpftune-testbed daemon [--bpftune PATH] [--no-debug] [--restore-globals] [--wait-others-s N]
                         [--state-dir DIR] [--packaged-layout] [--tag T] [--bpf-stats]
                         [-- BPFTUNE_ARGS...]
  bpftune-testbed daemons [--not-under PID]
  bpftune-testbed cleanup [--prefix P]

delayline/veth print `left=NS right=NS left_addr=IP right_addr=IP left_dev=D right_dev=D`,
netns prints `ns=NS`; they hold until stdin closes (if it is a pipe/socket/tty) or
SIGTERM/SIGINT/SIGHUP.
daemon: `bpftune -s -d -c <tmp>/cgroupv2 BPFTUNE_ARGS` with private run/state dirs (the
integration tests' harness); JSON lines on stdout (spawned, log, reply, exited), commands
on stdin (`query WHAT`, `bpfstats`, `stop`, `kill9`; EOF or SIGTERM = stop). --bpftune
defaults to `bpftune` next to this binary. --bpf-stats: BPF run-time accounting on
(BPF_ENABLE_STATS, while this process runs), the daemon gets `--metrics-listen
127.0.0.1:<free port>`, and `bpfstats` answers its per-program run time and run count. daemons: other running bpftune daemons (not clients, not
descendants of --not-under, default this process), one JSON object per line.
cleanup: namespaces/links with the prefix and temp dirs whose creating process is gone.
throughput: sender = left (tcp_wmem max), receiver = right (tcp_rmem max), iperf3 over a
delay line; prints `run=I bps=B retransmits=R` per run and `median_bps=B`.";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals is relied on.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("sigaction {sig}"))?;
    }
    Ok(())
}

/// Parsed `--key value` options and `--flag`s.
struct Opts {
    vals: HashMap<String, String>,
    flags: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], flag_names: &[&str], value_names: &[&str]) -> Result<Opts> {
        let mut vals = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a.trim_start_matches("--");
            if !a.starts_with("--") {
                bail!("unexpected argument {a:?}\n{USAGE}");
            }
            if flag_names.contains(&key) {
                flags.push(key.to_string());
            } else if value_names.contains(&key) {
                let v = it.next().ok_or_else(|| anyhow!("{a} needs a value\n{USAGE}"))?;
                vals.insert(key.to_string(), v.clone());
            } else {
                bail!("unknown option {a:?}\n{USAGE}");
            }
        }
        Ok(Opts { vals, flags })
    }

    fn get<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.vals
            .get(key)
            .map(|v| v.parse::<T>().map_err(|e| anyhow!("--{key} {v:?}: {e}")))
            .transpose()
    }

    fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.vals.get(key).map(String::as_str).unwrap_or(default)
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

fn delay_config(o: &Opts) -> Result<DelayConfig> {
    let mut cfg = DelayConfig::default();
    if let Some(ms) = o.get::<u64>("delay-ms")? {
        cfg.one_way_delay = Duration::from_millis(ms);
    }
    if let Some(us) = o.get::<u64>("delay-us")? {
        cfg.one_way_delay = Duration::from_micros(us);
    }
    if let Some(l) = o.get::<f64>("loss")? {
        cfg.loss_percent = l;
    }
    if let Some(m) = o.get::<u32>("mtu")? {
        cfg.mtu = m;
    }
    if let Some(s) = o.get::<u64>("max-lifetime-s")? {
        cfg.max_lifetime = Duration::from_secs(s);
    }
    Ok(cfg)
}

/// Block until a stop signal, stdin EOF (if watchable) or `alive()` false.
fn hold(mut alive: impl FnMut() -> bool) -> Result<&'static str> {
    let stdin = std::io::stdin();
    let mut watch = stdin_watchable();
    let mut scratch = [0u8; 512];
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok("signal");
        }
        if !alive() {
            return Ok("forwarder exited");
        }
        if watch {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) => {
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if revents.contains(PollFlags::POLLNVAL) {
                        watch = false;
                        continue;
                    }
                    match nix::unistd::read(libc::STDIN_FILENO, &mut scratch) {
                        Ok(0) => return Ok("stdin closed"),
                        Ok(_) | Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                        Err(_) => return Ok("stdin error"),
                    }
                }
                Err(_) => watch = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The topology lives only as long as this process, so it always holds;
/// `--hold` just makes that explicit.
fn note_hold(o: &Opts) {
    if !o.has("hold") {
        eprintln!("bpftune-testbed: holding until stdin closes or SIGTERM/SIGINT (implied --hold)");
    }
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn cmd_delayline(args: &[String]) -> Result<()> {
    let o = Opts::parse(
        args,
        &["hold"],
        &["delay-ms", "delay-us", "loss", "mtu", "max-lifetime-s", "prefix"],
    )?;
    let cfg = delay_config(&o)?;
    note_hold(&o);
    install_signal_handlers()?;
    let mut dl = DelayLine::with_prefix(cfg, o.str_or("prefix", "bt"))?;
    print_line(&format!(
        "left={} right={} left_addr={} right_addr={} left_dev={} right_dev={}",
        dl.left().name(),
        dl.right().name(),
        dl.left_addr(),
        dl.right_addr(),
        dl.left_dev(),
        dl.right_dev()
    ))?;
    let why = hold(|| dl.is_alive())?;
    eprintln!("bpftune-testbed: tearing down delay line ({why})");
    match dl.stop() {
        Ok(stats) => eprintln!("bpftune-testbed: {stats}"),
        Err(e) => eprintln!("bpftune-testbed: {e:#}"),
    }
    Ok(())
}

fn cmd_veth(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &["hold"], &["addr-a", "addr-b", "prefix"])?;
    note_hold(&o);
    install_signal_handlers()?;
    let prefix = o.str_or("prefix", "bt");
    let a = Netns::create(prefix)?;
    let b = Netns::create(prefix)?;
    let pair = VethPair::with_prefix(
        &a,
        &b,
        o.str_or("addr-a", "10.202.0.1/24"),
        o.str_or("addr-b", "10.202.0.2/24"),
        prefix,
    )?;
    print_line(&format!(
        "left={} right={} left_addr={} right_addr={} left_dev={} right_dev={}",
        a.name(),
        b.name(),
        pair.addr_a(),
        pair.addr_b(),
        pair.dev_a(),
        pair.dev_b()
    ))?;
    let why = hold(|| true)?;
    eprintln!("bpftune-testbed: tearing down veth pair ({why})");
    drop(pair);
    drop(b);
    drop(a);
    Ok(())
}

/// Replace the max (third) field of a tcp_rmem/tcp_wmem triple.
fn with_max(current: &str, max: u64) -> Result<String> {
    let f: Vec<&str> = current.split_whitespace().collect();
    match f.as_slice() {
        [min, def, _] => Ok(format!("{min} {def} {max}")),
        _ => bail!("unexpected sysctl value {current:?}"),
    }
}

fn cmd_throughput(args: &[String]) -> Result<()> {
    let o = Opts::parse(
        args,
        &[],
        &[
            "delay-ms",
            "delay-us",
            "loss",
            "mtu",
            "max-lifetime-s",
            "prefix",
            "seconds",
            "runs",
            "rmem-max",
            "wmem-max",
            "cc",
            "port",
        ],
    )?;
    let cfg = delay_config(&o)?;
    let seconds = o.get::<u32>("seconds")?.unwrap_or(5);
    let runs = o.get::<u32>("runs")?.unwrap_or(1).max(1);
    let port = o.get::<u16>("port")?.unwrap_or(5201);
    install_signal_handlers()?;
    let dl = DelayLine::with_prefix(cfg, o.str_or("prefix", "bt"))?;
    let (sender, receiver) = (dl.left(), dl.right());
    if let Some(r) = o.get::<u64>("rmem-max")? {
        let cur = receiver.sysctl_read("net.ipv4.tcp_rmem")?;
        receiver.sysctl_write("net.ipv4.tcp_rmem", &with_max(&cur, r)?)?;
    }
    if let Some(w) = o.get::<u64>("wmem-max")? {
        let cur = sender.sysctl_read("net.ipv4.tcp_wmem")?;
        sender.sysctl_write("net.ipv4.tcp_wmem", &with_max(&cur, w)?)?;
    }
    // Per socket (iperf3 -C): a non-init netns may only select algorithms
    // in the global tcp_allowed_congestion_control, setsockopt as root any.
    let cc = match o.vals.get("cc") {
        Some(cc) => cc.clone(),
        None => sender.sysctl_read("net.ipv4.tcp_congestion_control")?,
    };
    let extra = ["-C", cc.as_str()];
    print_line(&format!(
        "# delay={:?} mtu={} loss={} receiver tcp_rmem=\"{}\" sender tcp_wmem=\"{}\" cc={}",
        dl.config().one_way_delay,
        dl.config().mtu,
        dl.config().loss_percent,
        receiver.sysctl_read("net.ipv4.tcp_rmem")?,
        sender.sysctl_read("net.ipv4.tcp_wmem")?,
        cc,
    ))?;
    let server = IperfServer::start(receiver, port)?;
    let mut results = Vec::new();
    for run in 0..runs {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        let r = iperf3_run(sender, dl.right_addr(), port, seconds, false, &extra)?;
        print_line(&format!(
            "run={run} bps={:.0} retransmits={}",
            r.received_bps, r.retransmits
        ))?;
        results.push(r.received_bps);
    }
    drop(server);
    results.sort_by(f64::total_cmp);
    if let Some(m) = results.get(results.len() / 2) {
        print_line(&format!("median_bps={m:.0}"))?;
    }
    let stats = dl.stop()?;
    print_line(&format!("# forwarder {stats}"))?;
    Ok(())
}

fn cmd_netns(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &["hold"], &["prefix"])?;
    note_hold(&o);
    install_signal_handlers()?;
    let ns = Netns::create(o.str_or("prefix", "bt"))?;
    print_line(&format!("ns={}", ns.name()))?;
    let why = hold(|| true)?;
    eprintln!("bpftune-testbed: deleting namespace {} ({why})", ns.name());
    drop(ns);
    Ok(())
}

/// `bpftune` next to this executable, else from $PATH.
fn default_bpftune() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("bpftune")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bpftune"))
}

fn cmd_daemon(args: &[String]) -> Result<()> {
    let (ours, theirs) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let o = Opts::parse(
        ours,
        &["no-debug", "restore-globals", "packaged-layout", "bpf-stats"],
        &["bpftune", "wait-others-s", "state-dir", "tag"],
    )?;
    let mut cfg = DaemonConfig::new(
        o.vals
            .get("bpftune")
            .map(PathBuf::from)
            .unwrap_or_else(default_bpftune),
    )
    .args(theirs);
    cfg.debug = !o.has("no-debug");
    cfg.restore_globals = o.has("restore-globals");
    cfg.cgroup_in_run = o.has("packaged-layout");
    cfg.state_dir = o.vals.get("state-dir").map(PathBuf::from);
    cfg.wait_for_others = Duration::from_secs_f64(o.get::<f64>("wait-others-s")?.unwrap_or(180.0).max(0.0));
    cfg.tag = o.str_or("tag", "daemon").to_string();
    // Held until the daemon is stopped: the kernel counts run time while it is open.
    let mut _stats_fd = None;
    let mut metrics = None;
    if o.has("bpf-stats") {
        let on = bpfstats::enable_run_time_stats().and_then(|fd| Ok((fd, bpfstats::free_port()?)));
        let (fd, port) = match on {
            Ok(v) => v,
            Err(e) => {
                supervise::emit(
                    &serde_json::json!({"event": "error", "message": format!("--bpf-stats: {e:#}")}),
                );
                return Err(e);
            }
        };
        _stats_fd = Some(fd);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        cfg.args
            .extend(["--metrics-listen".to_string(), addr.to_string()]);
        metrics = Some(addr);
    }
    install_signal_handlers()?;
    supervise::run(cfg, &STOP, metrics)
}

fn cmd_daemons(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[], &["not-under"])?;
    let not_under = o.get::<u32>("not-under")?.unwrap_or_else(std::process::id);
    for d in host::bpftune_daemons(not_under) {
        print_line(&serde_json::json!({"pid": d.pid, "ppid": d.ppid, "cmdline": d.cmdline}).to_string())?;
    }
    Ok(())
}

fn cmd_cleanup(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[], &["prefix"])?;
    for name in cleanup_stale(o.str_or("prefix", "bt"))? {
        print_line(&format!("removed {name}"))?;
    }
    for dir in dirs::cleanup_stale_dirs() {
        print_line(&format!("removed {}", dir.display()))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("delayline") => cmd_delayline(&args[1..]),
        Some("veth") => cmd_veth(&args[1..]),
        Some("netns") => cmd_netns(&args[1..]),
        Some("daemon") => cmd_daemon(&args[1..]),
        Some("daemons") => cmd_daemons(&args[1..]),
        Some("throughput") => cmd_throughput(&args[1..]),
        Some("cleanup") => cmd_cleanup(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(anyhow!("{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("bpftune-testbed: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_max() -> Result<()> {
        assert_eq!(
            with_max("4096\t131072\t6291456", 16 << 20)?,
            "4096 131072 16777216"
        );
        assert!(with_max("1 2", 3).is_err());
        Ok(())
    }

    #[test]
    fn parses_options() -> Result<()> {
        let args: Vec<String> = ["--delay-ms", "20", "--hold", "--loss", "1.5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Opts::parse(&args, &["hold"], &["delay-ms", "loss"])?;
        assert!(o.has("hold"));
        let cfg = delay_config(&o)?;
        assert_eq!(cfg.one_way_delay, Duration::from_millis(20));
        assert_eq!(cfg.loss_percent, 1.5);
        assert!(Opts::parse(&args, &[], &["delay-ms", "loss"]).is_err());
        assert!(Opts::parse(&["--mtu".to_string()], &[], &["mtu"]).is_err());
        Ok(())
    }
}

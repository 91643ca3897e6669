//! The container image (Containerfile, FROM scratch + scripts/image-rootfs.sh): built
//! offline with podman, run privileged in the host's network/PID/cgroup namespaces with
//! /sys mounted, it passes `bpftune -S` and, as a daemon, tunes a test namespace and
//! rolls back (`-R`) when `podman stop` sends SIGTERM. Container and image are removed
//! even when an assertion fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ns_ints, ns_set, setup, temp_dir, unique_name, Pair, BPFTUNE};

const SMALL_RMEM: &str = "4096 131072 262144";
const RAISE_1: &str =
    "change net.ipv4.tcp_rmem(min default max) from (4096 131072 262144) -> (4096 131072 327680)";

fn podman(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman (scripts/install-deps.sh installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `podman run` options for bpftune: what the README documents, plus this host's needs.
fn run_opts(mounts_netns: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--privileged",
        "--net=host",
        "--pid=host",
        "--cgroupns=host",
        "-v",
        "/sys:/sys",
        // runc: crun refuses hosts whose cgroup2 hierarchy has controllers while v1 is
        // mounted (hybrid mode, as on the VM this was written on); runc runs on both.
        "--runtime",
        "runc",
        // Lower limits than podman's defaults: raising them needs CAP_SYS_RESOURCE,
        // which a sandboxed root may lack. bpftune needs a few hundred fds.
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if mounts_netns {
        v.push("--mount".into());
        v.push("type=bind,src=/run/netns,dst=/run/netns,bind-propagation=rslave".into());
    }
    v
}

/// Removes the container and the image on drop.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "5", &self.container]);
        let (ok, text) = podman(&["rmi", "-f", &self.image]);
        if !ok {
            eprintln!("cleanup: podman rmi {} failed: {text}", self.image);
        }
    }
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn image_builds_offline_probes_tunes_a_namespace_and_rolls_back() {
    let _g = setup("image_builds_offline_probes_tunes_a_namespace_and_rolls_back");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ctx = temp_dir("image");
    let ctx_dir = ctx.path().join("ctx");
    let out = Command::new(repo.join("scripts/image-rootfs.sh"))
        .arg(BPFTUNE)
        .arg(&ctx_dir)
        .output()
        .expect("run scripts/image-rootfs.sh");
    let staged = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "image-rootfs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        staged.contains("libc.so.6") && staged.contains("ld-linux"),
        "staged:\n{staged}"
    );

    let name = unique_name("bpftune-img");
    let image = format!("localhost/{name}:test");
    let _cleanup = Cleanup {
        container: name.clone(),
        image: image.clone(),
    };
    let ctx_s = ctx_dir.to_str().expect("utf-8 path");
    let (ok, text) = podman(&[
        "build",
        "--network=none",
        "-f",
        &format!("{ctx_s}/Containerfile"),
        "-t",
        &image,
        ctx_s,
    ]);
    assert!(ok, "podman build (offline):\n{text}");

    // -S inside the container.
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(run_opts(false));
    args.extend([image.clone(), "-S".into()]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, support) = podman(&args_ref);
    assert!(ok, "bpftune -S in the container:\n{support}");
    let words = support.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("netns cookies supported"), "-S output:\n{support}");

    // The daemon, tuning a namespace created before it starts.
    let p = Pair::new();
    ns_set(&p.rx, "net.ipv4.tcp_rmem", SMALL_RMEM);
    ns_set(&p.tx, "net.ipv4.tcp_wmem", "4096 16384 33554432");
    let state = temp_dir("state");
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
    args.extend(run_opts(true));
    args.extend([
        "-v".into(),
        format!("{}:/var/lib/bpftune", state.path().display()),
        image.clone(),
        "-s".into(),
        "-R".into(),
    ]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = podman(&args_ref);
    assert!(ok, "podman run -d:\n{text}");

    let logs = || podman(&["logs", &name]).1;
    let wait_log = |pattern: &str, timeout: Duration| -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if logs().contains(pattern) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(
        wait_log("bpftune started", Duration::from_secs(15)),
        "daemon did not start:\n{}",
        logs()
    );
    p.iperf(3);
    assert!(
        wait_log(RAISE_1, Duration::from_secs(5)),
        "no tcp_rmem raise in the test namespace:\n{}",
        logs()
    );
    assert!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem")[2] > 262144,
        "raise not visible in the namespace"
    );

    let (ok, text) = podman(&["stop", "-t", "15", &name]);
    assert!(ok, "podman stop: {text}");
    let log = logs();
    eprintln!("container log tail:\n{}", common::tail(&log, 12));
    assert!(
        log.contains("Rolling back sysctl values for 'net.ipv4.tcp_rmem'"),
        "no rollback on stop:\n{log}"
    );
    assert_eq!(
        ns_ints(&p.rx, "net.ipv4.tcp_rmem"),
        common::ints(SMALL_RMEM),
        "tcp_rmem after the container stopped"
    );
    let (_, status) = podman(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(status.trim(), "0", "daemon exit code in the container");
}

//! One-shot `bpftune` runs (queries, `-S`, `--rollback-now`) and waiting for a child.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// Output of a `bpftune` client run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Runs `bin <args>` to completion (stdin closed), with `BPFTUNE_RUN_DIR=run_dir` if
/// given.
pub fn client<S: AsRef<str>>(bin: &Path, run_dir: Option<&Path>, args: &[S]) -> Result<ClientOutput> {
    let mut cmd = Command::new(bin);
    cmd.args(args.iter().map(AsRef::as_ref));
    if let Some(dir) = run_dir {
        cmd.env("BPFTUNE_RUN_DIR", dir);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Ok(ClientOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

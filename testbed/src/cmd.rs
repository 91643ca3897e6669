//! Running external commands (`ip`, `iperf3`) with useful errors.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Run `cmd` to completion (stdin closed). A non-zero exit becomes an error
/// that includes the command line and its stderr.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{desc}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut msg = stderr.trim().to_string();
        if msg.is_empty() {
            msg = stdout.trim().chars().take(2000).collect();
        }
        bail!("`{desc}` failed ({}): {msg}", out.status);
    }
    Ok(out)
}

/// Run `prog args…` to completion; see [`output`].
pub fn run(prog: &str, args: &[&str]) -> Result<Output> {
    output(Command::new(prog).args(args))
}

/// Run `prog args…` ignoring its output and result (for `Drop` paths).
/// Returns whether it exited successfully.
pub fn run_quiet(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Human-readable command line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

//! Command-line behaviour that needs no running daemon (C bpftune's flags and exit codes).

mod common;

use common::{run_bpftune, setup, temp_dir, Daemon};

/// The words of the `-S` table row for `tuner`/`hook` (after the "bpftune: " prefix).
fn support_row<'a>(stderr: &'a str, tuner: &str, hook: &str) -> Option<Vec<&'a str>> {
    stderr.lines().find_map(|l| {
        let w: Vec<&str> = l.trim_start_matches("bpftune:").split_whitespace().collect();
        (w.len() >= 3 && w[0] == tuner && w[1] == hook).then_some(w)
    })
}

#[test]
fn version_prints_name_and_version() {
    let (code, out, err) = run_bpftune(&["-V"]);
    assert_eq!(code, 0, "bpftune -V exit code; stderr: {err}");
    let line = out.lines().next().unwrap_or("");
    let mut w = line.split_whitespace();
    let argv0 = w.next().unwrap_or("");
    let ver = w.next().unwrap_or("");
    assert!(
        argv0.ends_with("bpftune"),
        "-V should start with argv[0]: {out:?}"
    );
    assert!(
        ver.starts_with('v') && ver.len() > 1,
        "-V should print \"bpftune v<version>\": {out:?}"
    );
}

#[test]
fn print_libdir() {
    let (code, out, err) = run_bpftune(&["-P"]);
    assert_eq!(code, 0, "bpftune -P exit code; stderr: {err}");
    assert_eq!(out.trim_end(), "/usr/lib/bpftune/", "-P output");
}

#[test]
fn help_exits_zero() {
    let (code, out, err) = run_bpftune(&["-h"]);
    assert_eq!(code, 0, "bpftune -h exit code");
    let text = format!("{out}{err}");
    for flag in ["-q", "-R", "-S", "-c"] {
        assert!(text.contains(flag), "help text should mention {flag}:\n{text}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, out, err) = run_bpftune(&["-x"]);
    assert_eq!(code, 1, "bad flag exit code; stdout {out:?} stderr {err:?}");
    assert!(
        err.contains("-x"),
        "the message should name the bad flag: {err:?}"
    );
    let (code, _, err) = run_bpftune(&["--no-such-option"]);
    assert_eq!(code, 1, "bad long flag exit code; stderr {err:?}");
    assert!(!err.trim().is_empty(), "a bad flag needs a message");
}

#[test]
fn learning_rate_out_of_range() {
    for bad in ["5", "42", "x"] {
        let (code, _, err) = run_bpftune(&["-r", bad]);
        assert_eq!(code, 1, "-r {bad} exit code; stderr {err:?}");
        assert!(
            err.contains("values 0-4 are supported"),
            "-r {bad}: stderr {err:?}"
        );
    }
}

/// Every `-S` row: (tuner, hook, chosen flavour, TRIED text).
fn support_rows(stderr: &str) -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for l in stderr.lines() {
        let l = l.trim_start_matches("bpftune:").trim_start();
        if l.starts_with("TUNER") {
            in_table = true;
            continue;
        }
        if !in_table || l.starts_with("feature") {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 4 {
            continue;
        }
        // TRIED starts after the chosen "<flavour> <target>", "NONE: tuner cannot run"
        // or "none: feature off".
        let tried_from = match w[2] {
            "NONE:" => 6,
            "none:" => 5,
            _ => 4,
        };
        rows.push((
            w[0].to_string(),
            w[1].to_string(),
            w[2].to_string(),
            w.get(tried_from..).unwrap_or_default().join(" "),
        ));
    }
    rows
}

/// Kernel built without kprobes (this project's 6.18 VM).
fn kprobes_unavailable() -> bool {
    !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && !std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
        && !std::path::Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn support_levels() {
    let _g = setup("support_levels");
    let (code, _, err) = run_bpftune(&["-S"]);
    assert_eq!(code, 0, "bpftune -S exit code; stderr:\n{err}");
    assert!(err.contains("bpftune works fully"), "-S on this kernel:\n{err}");
    assert!(
        !err.contains("cannot run on this kernel") && !err.contains("legacy-mode flavour"),
        "-S:\n{err}"
    );
    assert!(
        err.contains("bpftune supports per-netns policy (via netns cookie)"),
        "-S:\n{err}"
    );
    let row = support_row(&err, "tcp_buffer", "rmem")
        .unwrap_or_else(|| panic!("no tcp_buffer rmem row in -S:\n{err}"));
    assert_eq!(row[2], "tp_btf", "tcp_buffer rmem should use tp_btf: {row:?}");
    let row = support_row(&err, "tcp_buffer", "wmem")
        .unwrap_or_else(|| panic!("no tcp_buffer wmem row in -S:\n{err}"));
    assert_eq!(row[2], "tp_btf", "tcp_buffer wmem should use tp_btf: {row:?}");
    // Every hook of every tuner is reported with the flavour it chose: the tracepoint
    // flavours here (no fentry/kprobes on this kernel), cgroup programs for the rest; so
    // the first candidate of one of these flavours. The hooks come from the tuners'
    // own slot tables, not a list kept here.
    for t in bpftune::tuners::all() {
        let tuner = t.name();
        for slot in t.slots() {
            let hook = format!("{}{}", slot.name, if slot.required { "" } else { "(opt)" });
            let row = support_row(&err, tuner, &hook)
                .unwrap_or_else(|| panic!("no {tuner} {hook} row in -S:\n{err}"));
            let Some(flavour) = slot
                .candidates
                .iter()
                .map(|c| c.flavour.label())
                .find(|f| ["tp_btf", "cgroup/sysctl", "sockops"].contains(f))
            else {
                continue; // fentry/kprobe only: checked below (a full-mode flavour)
            };
            assert_eq!(row[2], flavour, "{tuner} {hook}: {row:?}");
        }
    }
    let rows = support_rows(&err);
    let tuners: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let expected: std::collections::BTreeSet<&str> = bpftune::tuners::names().into_iter().collect();
    assert_eq!(tuners, expected, "-S must report every built-in tuner:\n{err}");
    for (tuner, hook, chosen, tried) in &rows {
        // Every required hook has a full-mode flavour, and the chosen one was tried.
        if !hook.ends_with("(opt)") {
            assert!(
                ["tp_btf", "fentry", "cgroup/sysctl", "sockops"].contains(&chosen.as_str()),
                "{tuner} {hook}: {chosen} is not a full-mode flavour"
            );
        }
        // Every candidate was tried, and tcp_buffer offers kprobes for older kernels.
        if tuner == "tcp_buffer" {
            assert!(tried.contains("kprobe "), "{tuner} {hook}: {tried}");
            if kprobes_unavailable() {
                // A kprobe program loads without kprobes; only the attach tells.
                assert!(
                    tried.contains("loads but cannot attach"),
                    "{tuner} {hook} without kprobes: {tried}"
                );
            }
        }
    }

    let (code, _, err) = run_bpftune(&["-S", "-L"]);
    assert_eq!(code, 0, "bpftune -S -L exit code; stderr:\n{err}");
    assert!(err.contains("bpftune works in legacy mode"), "-S -L:\n{err}");
    assert!(!err.contains("bpftune works fully"), "-S -L:\n{err}");
    let row = support_row(&err, "tcp_buffer", "rmem")
        .unwrap_or_else(|| panic!("no tcp_buffer rmem row in -S -L:\n{err}"));
    assert_eq!(row[2], "raw_tp", "legacy mode should choose raw_tp: {row:?}");
    for (tuner, hook, chosen, tried) in support_rows(&err) {
        assert!(
            ["raw_tp", "kprobe", "cgroup/sysctl", "sockops"].contains(&chosen.as_str()),
            "-S -L: {tuner} {hook} chose {chosen}"
        );
        assert!(
            !tried.contains("tp_btf ") && !tried.contains("fentry "),
            "-S -L tries conservative flavours only: {tuner} {hook}: {tried}"
        );
    }
}

/// The daemon starts with its first choices and says how well it works.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn startup_reports_support_level() {
    let _g = setup("startup_reports_support_level");
    let d = Daemon::start(&[]);
    let log = d.log();
    assert!(
        log.contains("bpftune works fully"),
        "start-up log:\n{}",
        d.tail(30)
    );
    assert!(
        !log.contains("probing each hook") && !log.contains("cannot run on this kernel"),
        "first choices should attach here:\n{}",
        d.tail(30)
    );
    let (status, _) = d.stop();
    assert!(status.success(), "daemon exit status {status:?}");
}

/// Runs as any user: the client fails the same way (no socket) with or without root.
#[test]
fn query_without_daemon_fails() {
    let dir = temp_dir("nodaemon");
    let (code, out, err) = common::client(&dir.path().join("run"), &["-q", "status"]);
    assert_ne!(
        code, 0,
        "-q status without a daemon must fail; stdout {out:?} stderr {err:?}"
    );
    assert!(out.trim().is_empty(), "no reply expected: {out:?}");
    assert!(!err.trim().is_empty(), "an error message is expected");
}

//! Honest skips: a test that lacks an environment feature it declares calls `skip!`
//! (tests/common/mod.rs), which libtest still counts as passed. These tests pin the two
//! halves that undo that: the line `skip!` appends to the file BPFTUNE_TEST_SKIPS names
//! (`make test` sets it), and scripts/test-skips.sh, which lists those lines and prints
//! `.ci/run`'s closing total with them counted as skipped, not passed.

mod common;

use std::path::Path;
use std::process::Command;

/// `skip!` names the test by its thread: libtest's name for the test (also with
/// `--test-threads=1`, as `make test` runs).
#[test]
fn libtest_names_the_test_thread_after_the_test() {
    assert_eq!(
        std::thread::current().name(),
        Some("libtest_names_the_test_thread_after_the_test")
    );
}

#[test]
fn a_skip_is_one_line_appended_to_the_skips_file() {
    let dir = common::temp_dir("skips");
    let f = dir.path().join("skips.txt");
    common::record_skip_to(Some(&f), "net_buffer", Some("time_squeezes"), "needs\n  2 CPUs");
    common::record_skip_to(Some(&f), "startup", None, "needs a cgroup");
    assert_eq!(
        std::fs::read_to_string(&f).expect("skips file"),
        "net_buffer::time_squeezes: needs 2 CPUs\nstartup::?: needs a cgroup\n"
    );
}

fn script(args: &[&str]) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-skips.sh"))
        .args(args)
        .output()
        .expect("run scripts/test-skips.sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_closing_total_counts_skips_as_skipped_not_passed() {
    let dir = common::temp_dir("skips-total");
    let log = dir.path().join("log");
    let skips = dir.path().join("skips.txt");
    let p = |x: &Path| x.to_str().expect("utf-8 path").to_string();
    std::fs::write(
        &log,
        "running 3 tests\n\
         test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n\
         \x20   test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
         test result: FAILED. 4 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 2.00s\n",
    )
    .expect("write log");
    // No skips file (nothing skipped, or make test stopped before the tests).
    assert_eq!(
        script(&["total", &p(&log), &p(&skips)]),
        "tests: 7 passed, 1 failed, 2 skipped\n"
    );
    assert_eq!(script(&["list", &p(&skips)]), "skipped tests: none\n");
    std::fs::write(
        &skips,
        "net_buffer::a: needs 2 CPUs\nneigh_table::b: needs IPv6\n",
    )
    .expect("write skips");
    // The plain closing line `.ci/run` ends with: passed minus the skips.
    assert_eq!(
        script(&["total", &p(&log), &p(&skips)]),
        "tests: 5 passed, 1 failed, 4 skipped\n"
    );
    assert_eq!(
        script(&["list", &p(&skips)]),
        "skipped tests (2; counted as skipped, not passed):\n  net_buffer::a: needs 2 CPUs\n  neigh_table::b: needs IPv6\n"
    );
}

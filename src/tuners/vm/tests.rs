//! The vm tuner's glue on recorded /proc sequences, without BPF (the untraced path:
//! allocstall counts, PSI stall time, kswapd scans), through the fake environment.

use super::*;
use crate::tuner::testing::FakeEnv;

const ZONES: &str = "Node 0, zone   Normal
  pages free     9000
        min      5000
        low      7500
        high     10000
        managed  1048576
";
const MEMINFO: &str = "Cached:          400000 kB\nSReclaimable:     40000 kB\n";

fn env() -> FakeEnv {
    let mut e = FakeEnv::new(&[false; TUNABLE_COUNT]);
    e.set(WATERMARK_SCALE_FACTOR, Ns::Global, &[10]);
    e.set(MIN_FREE_KBYTES, Ns::Global, &[67584]);
    e.set(VFS_CACHE_PRESSURE, Ns::Global, &[100]);
    e.files.insert("zoneinfo".into(), ZONES.into());
    e.files.insert("meminfo".into(), MEMINFO.into());
    // 8 CPUs: the stalls below are under 1 % of their time (one step at a time).
    let stat: String = std::iter::once("cpu  1 2 3\n".to_string())
        .chain((0..8).map(|i| format!("cpu{i} 1 2 3\n")))
        .collect();
    e.files.insert("stat".into(), stat);
    e
}

/// One tick's /proc state: cumulative direct-reclaim entries, kswapd scans, PSI µs.
fn tick(vm: &mut Vm, e: &mut FakeEnv, stalls: u64, kswapd_scans: u64, psi_us: u64) {
    e.files.insert(
        "vmstat".into(),
        format!("allocstall_normal {stalls}\npgscan_kswapd {kswapd_scans}\ncompact_stall 0\nworkingset_activate_file 0\n"),
    );
    e.files.insert(
        "pressure/memory".into(),
        format!("some avg10=0.00 avg60=0.00 avg300=0.00 total={psi_us}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
    );
    vm.tick(e);
}

#[test]
fn repeated_stalls_while_kswapd_scans_raise_the_watermark_scale_factor_once_per_window() {
    let mut vm = Vm::default();
    let mut e = env();
    tick(&mut vm, &mut e, 0, 0, 0); // baseline
    for i in 1..=3 {
        tick(&mut vm, &mut e, 5 * i, 1000 * i, 20_000 * i);
    }
    assert_eq!(e.applied.len(), 1, "{:?}", e.applied);
    let p = &e.applied[0];
    assert_eq!((p.tunable, p.scenario), (WATERMARK_SCALE_FACTOR, VM_KSWAPD_BEHIND));
    assert_eq!(p.value, SysctlValue::Ints(vec![12]));
    assert!(
        p.message.starts_with("Because direct reclaim stalled allocations for 60 ms in 3 of the last 3 s although kswapd had been woken"),
        "{}",
        p.message
    );
    assert!(p.message.ends_with("change vm.watermark_scale_factor from (10) -> (12)"), "{}", p.message);
    // Not raised again while the raise is watched; then the stalls, still there, do.
    let watch = policy::WATCH as u64;
    for i in 4..(4 + watch) {
        tick(&mut vm, &mut e, 5 * i, 1000 * i, 20_000 * i);
    }
    assert_eq!(e.applied.len(), 1, "{:?}", e.applied);
    tick(&mut vm, &mut e, 5 * (4 + watch), 1000 * (4 + watch), 20_000 * (4 + watch));
    assert_eq!(e.get(WATERMARK_SCALE_FACTOR, Ns::Global), Some(15), "{:?}", e.applied);
}

#[test]
fn stalls_without_kswapd_scanning_change_nothing() {
    let mut vm = Vm::default();
    let mut e = env();
    for i in 0..=8 {
        tick(&mut vm, &mut e, 5 * i, 0, 20_000 * i);
    }
    assert!(e.applied.is_empty(), "{:?}", e.applied);
}

#[test]
fn a_raise_followed_by_more_stall_time_is_undone() {
    let mut vm = Vm::default();
    let mut e = env();
    tick(&mut vm, &mut e, 0, 0, 0);
    for i in 1..=3 {
        tick(&mut vm, &mut e, 5 * i, 1000 * i, 10_000 * i);
    }
    assert_eq!(e.get(WATERMARK_SCALE_FACTOR, Ns::Global), Some(12));
    // WATCH intervals of 50 ms stall each (before: 10 ms each): worse, undone.
    let watch = policy::WATCH as u64;
    for i in 4..(4 + watch) {
        tick(&mut vm, &mut e, 5 * i, 1000 * i, 30_000 + 50_000 * (i - 3));
    }
    let last = e.applied.last().expect("an undo");
    assert_eq!((last.tunable, last.scenario), (WATERMARK_SCALE_FACTOR, VM_CHANGE_MADE_WORSE));
    assert_eq!(e.get(WATERMARK_SCALE_FACTOR, Ns::Global), Some(10));
    // The same stalls go on: the step that went wrong is not retried for a calm stretch.
    let undone = e.applied.len();
    let mut psi = 30_000 + 50_000 * watch;
    let first = 4 + watch;
    for i in first..(first + policy::CALM_INTERVALS as u64 - 2) {
        psi += 50_000;
        tick(&mut vm, &mut e, 5 * i, 1000 * i, psi);
    }
    assert_eq!(e.applied.len(), undone, "retried: {:?}", &e.applied[undone..]);
    for i in 0..(2 * policy::WINDOW as u64) {
        psi += 50_000;
        let n = first + policy::CALM_INTERVALS as u64 + i;
        tick(&mut vm, &mut e, 5 * n, 1000 * n, psi);
    }
    let retry = e.applied.get(undone).expect("tried again after the stretch");
    assert_eq!((retry.scenario, &retry.value), (VM_KSWAPD_BEHIND, &SysctlValue::Ints(vec![12])));
}

#[test]
fn nothing_without_proc() {
    let mut vm = Vm::default();
    let mut e = FakeEnv::new(&[false; TUNABLE_COUNT]);
    for _ in 0..10 {
        vm.tick(&mut e);
    }
    assert!(e.applied.is_empty());
}

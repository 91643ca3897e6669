//! tcp_buffer glue tests over a fake TunerEnv (policy has its own tests in policy.rs).

use super::*;
use crate::tuner::testing::FakeEnv;

/// Every tunable is read and written in one place here (the namespace routing is the
/// engine's, tested there).
fn fake() -> FakeEnv {
    FakeEnv::new(&[false; TUNABLES.len()])
}

fn rmem_event(max: i64, sockbuf: u64, srtt: u64) -> Event {
    Event {
        tuner_id: 1,
        scenario_id: INCREASE as u32,
        ns: Ns::Netns { cookie: 9, ino: 1 },
        pid: 0,
        ts_ns: 1,
        tunable_id: TCP_RMEM as u32,
        flags: 0,
        old: [4096, 131072, max],
        new: [4096, 131072, max + max / 4],
        aux: [srtt, sockbuf, 0, 0],
        text: String::new(),
    }
}

fn env(max: i64) -> FakeEnv {
    let mut e = fake();
    e.set_value(TCP_RMEM, Ns::Global, SysctlValue::Ints(vec![4096, 131072, max]));
    e.set_value(TCP_MODERATE_RCVBUF, Ns::Global, SysctlValue::Ints(vec![0]));
    e.set_value(
        TCP_MEM,
        Ns::Global,
        SysctlValue::Ints(vec![287898, 383867, 575796]),
    );
    e
}

fn rmem_max(e: &FakeEnv) -> i64 {
    e.value(TCP_RMEM, Ns::Global).ints().map_or(0, |v| v[2])
}

#[test]
fn raise_rmem_and_enable_moderate_rcvbuf() {
    let mut e = env(1310720);
    let mut t = TcpBuffer::new();
    t.handle(&rmem_event(1310720, 1310720, 40_000), &mut e);
    assert_eq!(rmem_max(&e), 1638400);
    assert_eq!(
        e.value(TCP_MODERATE_RCVBUF, Ns::Global),
        SysctlValue::Ints(vec![1])
    );
    assert_eq!(e.applied.len(), 2);
    assert!(e.applied[0]
        .message
        .contains("from (4096 131072 1310720) -> (4096 131072 1638400)"));
    // The same (now stale) event again changes nothing (C bpftune #155).
    t.handle(&rmem_event(1310720, 1310720, 40_000), &mut e);
    assert_eq!(e.applied.len(), 2);
}

#[test]
fn latency_shrink_needs_fresh_evidence_each_time() {
    let mut e = env(1_000_000);
    let mut t = TcpBuffer::new();
    let mut shrinks_in_a_row = 0;
    let mut max_run = 0;
    // RTT grows with the buffer (bufferbloat): growth, then a shrink, then growth
    // again — never a collapse towards the default.
    for _ in 0..200 {
        let max = rmem_max(&e);
        let srtt = 40_000 + (max / 100) as u64;
        let before = max;
        t.handle(&rmem_event(max, max as u64, srtt), &mut e);
        if rmem_max(&e) < before {
            shrinks_in_a_row += 1;
            max_run = max_run.max(shrinks_in_a_row);
        } else {
            shrinks_in_a_row = 0;
        }
    }
    assert!(
        e.applied.iter().any(|p| p.scenario == DECREASE_LATENCY),
        "bloat detected"
    );
    assert_eq!(max_run, 1, "no consecutive latency shrinks");
    assert!(rmem_max(&e) > 131072 * 4, "no collapse: {}", rmem_max(&e));
}

#[test]
fn descriptors_follow_the_c_enum() {
    // `TCP_BUFFER_TCP_RMEM` ↔ `net.ipv4.tcp_rmem`, `..._NET_CORE_HIGH_ORDER_ALLOC_DISABLE`
    // ↔ `net.core.high_order_alloc_disable`: the C entry names the sysctl's tail.
    for (i, entry) in ids::tcp_buffer_tunable::NAMES.iter().enumerate() {
        let tail = entry.to_lowercase();
        let tail = tail.strip_prefix("tcp_buffer_").unwrap_or(&tail);
        let name = TUNABLES[i].name.replace('.', "_");
        assert!(
            name.ends_with(tail),
            "C entry {entry} is at the index of {}",
            TUNABLES[i].name
        );
    }
    assert_eq!(TUNABLES[TCP_RMEM].name, "net.ipv4.tcp_rmem");
    assert_eq!(
        SCENARIOS[SYN_INCREASE].name,
        "increase maximum syn backlog under load since syncookies are disabled"
    );
    assert_eq!(SAMPLE_NAMES.len(), ids::tcp_buffer_sample::COUNT);
}

#[test]
fn forgetting_a_namespace_drops_its_correlations_only() {
    let gone = Ns::Netns { cookie: 9, ino: 1 };
    let kept = Ns::Netns { cookie: 10, ino: 2 };
    let mut t = TcpBuffer::new();
    for ns in [gone, kept, Ns::Global] {
        t.corr.insert((TCP_RMEM, ns), Corr::default());
        t.syn_events.insert(ns, 1);
    }
    t.forget_netns(9);
    let mut left: Vec<Ns> = t.corr.keys().map(|(_, ns)| *ns).collect();
    left.sort();
    assert_eq!(left, vec![Ns::Global, kept]);
    assert!(!t.syn_events.contains_key(&gone));
    assert_eq!(t.syn_events.len(), 2);
}

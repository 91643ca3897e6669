//! Observe mode: proposals, the simulation, and what it never writes.

use super::*;

fn observe_fixture(tag: &str) -> Fixture {
    let mut f = fixture(tag);
    f.engine.set_observe(true);
    f
}

fn rmem_event(ns: Ns, max: i64) -> Event {
    Event {
        tuner_id: 0,
        scenario_id: 0,
        ns,
        pid: 0,
        ts_ns: 0,
        tunable_id: 0,
        flags: 0,
        old: [4096, 131072, max],
        new: [4096, 131072, max + max / 4],
        aux: [0; 4],
        text: String::new(),
    }
}

#[test]
fn observe_mode_proposes_simulates_and_writes_nothing() {
    let mut f = observe_fixture("observe");
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(0, NS, Some(v(1310720)), v(1638400))),
        Outcome::Applied,
        "the tuner sees its proposal as done"
    );
    assert!(f.mem.writes().is_empty(), "nothing written");
    assert!(f.engine.store().entries().is_empty(), "nothing persisted");
    assert_eq!(f.mem.get(Some(NS_COOKIE), "net.ipv4.tcp_rmem"), Some(v(1310720)));
    // The tuner reads the simulated value; other namespaces are untouched.
    assert_eq!(f.engine.ctx(0).read(0, NS).ok(), Some(v(1638400)));
    assert_eq!(f.engine.ctx(0).read(0, GLOBAL).ok(), Some(v(6291456)));
    // The first step again is stale (its premise is the live value, not the simulated).
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(0, NS, Some(v(1310720)), v(1638400))),
        Outcome::Stale
    );
    // The next step builds on the simulated value.
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(0, NS, Some(v(1638400)), v(2048000))),
        Outcome::Applied
    );
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(2048000))),
        Outcome::Unchanged
    );
    assert!(f.mem.writes().is_empty());
    let l = lock(f.engine.ledger());
    assert_eq!((l.applied_count(), l.proposed_count()), (0, 2));
    let recs: Vec<_> = l.records().collect();
    assert!(recs.iter().all(|r| r.proposed && !r.applied));
    assert_eq!(recs[1].old, Some(v(1638400)), "old is the simulated value");
    let advice: Vec<_> = l.advice().collect();
    assert_eq!(advice.len(), 1);
    assert_eq!(
        (
            advice[0].original,
            advice[0].latest,
            advice[0].proposed,
            advice[0].count
        ),
        (&v(1310720), &v(2048000), true, 2)
    );
}

#[test]
fn observe_mode_records_per_socket_proposals_without_advice() {
    let mut f = observe_fixture("observe-other");
    f.engine.ctx(0).would_change(WouldChange {
        tunable: 3,
        scenario: 0,
        ns: NS,
        from: "cubic",
        to: "bbr",
        message: "lossy path",
    });
    assert!(f.mem.writes().is_empty());
    let l = lock(f.engine.ledger());
    assert_eq!((l.applied_count(), l.proposed_count()), (0, 1));
    let recs: Vec<_> = l.records().collect();
    assert_eq!(recs.len(), 1);
    let r = recs[0];
    assert!(r.proposed && !r.applied && !r.global);
    assert_eq!(r.tunable, "net.persock.tcp.congestion_control");
    assert_eq!(r.netns.as_deref(), Some("x"));
    assert_eq!(r.netns_cookie, NS_COOKIE);
    assert_eq!(
        (r.old.clone(), r.new.clone()),
        (
            Some(SysctlValue::Str("cubic".into())),
            Some(SysctlValue::Str("bbr".into()))
        )
    );
    assert_eq!(l.advice().count(), 0, "not a sysctl: no sysctl.d advice");
    assert_eq!(
        l.proposals().map(|(_, n)| n).sum::<u64>(),
        1,
        "counted for the metrics"
    );
}

#[test]
fn simulation_ends_when_someone_else_changes_the_live_value() {
    let mut f = observe_fixture("observe-void");
    f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400)));
    let ev = rmem_event(NS, 1310720);
    assert_eq!(
        f.engine.simulated_event(&ev).old,
        [4096, 131072, 1638400],
        "events are judged against the simulated value"
    );
    assert_eq!(
        f.engine.simulated_event(&rmem_event(GLOBAL, 6291456)).old,
        [4096, 131072, 6291456],
        "other namespaces keep theirs"
    );
    f.mem.set(Some(NS_COOKIE), "net.ipv4.tcp_rmem", v(3000000));
    assert_eq!(f.engine.ctx(0).read(0, NS).ok(), Some(v(3000000)), "live again");
    assert_eq!(
        f.engine.simulated_event(&rmem_event(NS, 3000000)).old,
        [4096, 131072, 3000000]
    );
    // A proposal back to the live value ends the simulation too.
    f.engine.ctx(0).apply(proposal(0, NS, None, v(3500000)));
    assert_eq!(f.engine.ctx(0).read(0, NS).ok(), Some(v(3500000)));
    f.engine.ctx(0).apply(proposal(0, NS, None, v(3000000)));
    assert_eq!(f.engine.ctx(0).read(0, NS).ok(), Some(v(3000000)));
    assert!(f.engine.overlay.is_empty());
    assert!(f.mem.writes().is_empty());
}

#[test]
fn observe_mode_hands_over_to_the_admin_and_forgets_vanished_namespaces() {
    let mut f = observe_fixture("observe-admin");
    f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400)));
    f.engine.ctx(0).apply(proposal(0, GLOBAL, None, v(7864320)));
    f.engine.admin_write(NS, "net/ipv4/tcp_rmem", 1, "sysctl");
    assert!(!f.engine.deliverable(0, NS));
    assert_eq!(
        f.engine.ctx(0).read(0, NS).ok(),
        Some(v(1310720)),
        "no simulation for the admin's sysctl"
    );
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(2048000))),
        Outcome::Disabled
    );
    f.engine.forget_netns(NS_COOKIE);
    assert!(
        f.engine.overlay.keys().all(|(c, _)| *c == GLOBAL_COOKIE),
        "only the initial namespace's simulation is left"
    );
    let l = lock(f.engine.ledger());
    let advice: Vec<_> = l.advice().collect();
    assert_eq!(advice.len(), 1, "advice for the vanished namespace dropped");
    assert!(advice[0].global);
}

#[test]
fn observe_mode_does_not_roll_back() {
    let mut f = fixture("observe-rollback");
    f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400)));
    assert_eq!(f.engine.store().entries().len(), 1);
    f.engine.set_observe(true);
    f.engine.rollback();
    assert_eq!(
        f.mem.get(Some(NS_COOKIE), "net.ipv4.tcp_rmem"),
        Some(v(1638400)),
        "observe mode writes nothing, not even a rollback"
    );
    assert_eq!(f.engine.store().entries().len(), 1, "kept for a later -R run");
}

//! Applying proposals: where they are written, what is dropped or refused, notes,
//! the stats, the start-up report of missing sysctls and rollback of ours only.

use super::*;

#[test]
fn namespaced_write_goes_to_the_event_namespace_only() {
    let mut f = fixture("ns");
    let out = f
        .engine
        .ctx(0)
        .apply(proposal(0, NS, Some(v(1310720)), v(1638400)));
    assert_eq!(out, Outcome::Applied);
    assert_eq!(f.mem.get(Some(NS_COOKIE), "net.ipv4.tcp_rmem"), Some(v(1638400)));
    assert_eq!(f.mem.get(None, "net.ipv4.tcp_rmem"), Some(v(6291456)));
    assert_eq!(lock(f.engine.ledger()).applied_count(), 1);
}

#[test]
fn global_tunable_from_a_namespace_event_is_written_globally() {
    let mut f = fixture("glob");
    let new = SysctlValue::Ints(vec![768, 1024, 1920]);
    assert_eq!(
        f.engine.ctx(0).apply(proposal(1, NS, None, new.clone())),
        Outcome::Applied
    );
    assert_eq!(f.mem.get(None, "net.ipv4.tcp_mem"), Some(new));
}

#[test]
fn stale_and_unchanged_are_dropped_silently() {
    let mut f = fixture("stale");
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, Some(v(999)), v(1638400))),
        Outcome::Stale
    );
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(1310720))),
        Outcome::Unchanged
    );
    assert!(f.mem.writes().is_empty());
    assert_eq!(lock(f.engine.ledger()).applied_count(), 0);
}

#[test]
fn admin_write_disables_that_namespace_only() {
    let mut f = fixture("admin");
    f.engine.admin_write(NS, "net/ipv4/tcp_rmem", 1, "sysctl");
    assert!(!f.engine.deliverable(0, NS));
    assert!(f.engine.deliverable(0, GLOBAL));
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400))),
        Outcome::Disabled
    );
    assert_eq!(f.engine.tuner_state(0), Some(TunerState::Active));
    f.engine.admin_write(GLOBAL, "net/ipv4/tcp_mem", 1, "sysctl");
    assert_eq!(f.engine.tuner_state(0), Some(TunerState::Manual));
    assert!(!f.engine.deliverable(0, GLOBAL));
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(1, GLOBAL, None, SysctlValue::Ints(vec![1, 2, 3]))),
        Outcome::Disabled
    );
    // A sysctl no tuner manages changes nothing.
    f.engine.admin_write(NS, "net/core/somaxconn", 1, "sysctl");
    assert!(f.mem.writes().is_empty());
}

#[test]
fn missing_optional_and_unknown_namespace() {
    let mut f = fixture("missing");
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(2, GLOBAL, None, SysctlValue::Ints(vec![1]))),
        Outcome::Missing
    );
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, UNKNOWN, None, v(1))),
        Outcome::NoNamespace
    );
    assert!(f.engine.deliverable(0, UNKNOWN), "not found now is not gone");
}

#[test]
fn invalid_values_are_refused() {
    let mut f = fixture("invalid");
    assert!(matches!(
        f.engine
            .ctx(0)
            .apply(proposal(0, NS, None, SysctlValue::Ints(vec![1, 2]))),
        Outcome::Failed(_)
    ));
    assert!(matches!(
        f.engine
            .ctx(0)
            .apply(proposal(0, NS, None, SysctlValue::Ints(vec![1, 2, -3]))),
        Outcome::Failed(_)
    ));
    assert!(f.mem.writes().is_empty());
}

#[test]
fn read_only_tunables_are_never_written() {
    let mut f = fixture("read-only");
    assert!(matches!(
        f.engine
            .ctx(0)
            .apply(proposal(4, GLOBAL, None, SysctlValue::Str("reno".into()))),
        Outcome::Failed(ref why) if why.contains("read-only")
    ));
    assert!(f.mem.writes().is_empty());
}

#[test]
fn failed_namespace_write_marks_it_gone() {
    let mut f = fixture("fail");
    f.mem.fail_writes("net.ipv4.tcp_rmem", libc::EINVAL);
    assert!(matches!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400))),
        Outcome::Failed(_)
    ));
    assert_eq!(f.engine.ns_state(0, NS), NsState::Gone);
}

#[test]
fn rollback_restores_ours_and_keeps_the_admins() {
    let mut f = fixture("rollback");
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, None, v(1638400))),
        Outcome::Applied
    );
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, GLOBAL, None, v(7864320))),
        Outcome::Applied
    );
    // The administrator changes the global value afterwards.
    f.mem.set(None, "net.ipv4.tcp_rmem", v(4194304));
    f.engine.rollback();
    assert_eq!(
        f.mem.get(Some(NS_COOKIE), "net.ipv4.tcp_rmem"),
        Some(v(1310720)),
        "ours restored"
    );
    assert_eq!(
        f.mem.get(None, "net.ipv4.tcp_rmem"),
        Some(v(4194304)),
        "admin's value kept"
    );
    assert!(f.engine.store().entries().is_empty());
}

#[test]
fn note_records_without_writing() {
    let mut f = fixture("note");
    f.engine.ctx(0).note(0, 0, NS, "can no longer update");
    f.engine.ctx(0).note(1, 0, NS, "tcp_mem is global");
    assert!(f.mem.writes().is_empty());
    let l = lock(f.engine.ledger());
    let recs: Vec<_> = l.records().collect();
    assert_eq!(recs.len(), 2);
    assert!(!recs[0].applied && !recs[0].global && recs[0].netns_cookie == NS_COOKIE);
    assert!(
        recs[1].global,
        "a global tunable is noted against the initial namespace"
    );
    assert_eq!(l.applied_count(), 0);
}

/// The counters the metrics exporter reads: stale drops (engine's and the tuner's own
/// check), per-namespace states, rollback restores.
#[test]
fn stats_follow_the_engine() {
    let mut f = fixture("stats");
    let stats = f.engine.stats().clone();
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, NS, Some(v(999)), v(1638400))),
        Outcome::Stale
    );
    f.engine.ctx(0).stale();
    assert_eq!(stats.stale(0), 2);
    f.engine.admin_write(NS, "net/ipv4/tcp_rmem", 1, "sysctl");
    assert_eq!(
        stats.netns_view().states.get(&(0, NS_COOKIE)),
        Some(&NsState::Manual)
    );
    f.engine.forget_netns(NS_COOKIE);
    assert!(stats.netns_view().states.is_empty());
    assert_eq!(
        f.engine.ctx(0).apply(proposal(0, GLOBAL, None, v(7864320))),
        Outcome::Applied
    );
    f.engine.rollback();
    assert_eq!(stats.rollback_restores(), 1);
}

#[test]
fn missing_tunables_are_reported_once_at_start() {
    let mut f = fixture("missing-start");
    assert_eq!(f.engine.report_missing_tunables(), vec!["net.ipv6.missing"]);
    assert!(f.engine.said.contains(&Said::Missing("net.ipv6.missing")));
    // A later proposal for it is still refused, without a line of its own (already said).
    let said = f.engine.said.len();
    assert_eq!(
        f.engine
            .ctx(0)
            .apply(proposal(2, GLOBAL, None, SysctlValue::Ints(vec![1]))),
        Outcome::Missing
    );
    assert_eq!(f.engine.said.len(), said);
    assert!(f.mem.writes().is_empty());
}

#[test]
fn missing_tunables_line_names_ipv6_when_all_of_it_is_gone() {
    let all = [
        "net.ipv4.ipfrag_high_thresh",
        "net.ipv6.ip6frag_high_thresh",
        "net.ipv6.neigh.default.gc_thresh3",
        "net.core.high_order_alloc_disable",
    ];
    assert_eq!(missing_tunables_line(&[], &all), None);
    let v6 = missing_tunables_line(&all[1..3], &all).expect("a line");
    assert!(v6.starts_with("IPv6 is not available on this kernel"), "{v6}");
    assert!(v6.contains("its 2 tunable(s)"), "{v6}");
    assert!(!v6.contains("also"), "{v6}");
    let both = missing_tunables_line(&all[1..], &all).expect("a line");
    assert!(
        both.contains("also not available: net.core.high_order_alloc_disable"),
        "{both}"
    );
    // Part of IPv6 missing (an older kernel lacking one sysctl) is not "IPv6 is off".
    let one = missing_tunables_line(&all[2..3], &all).expect("a line");
    assert_eq!(
        one,
        "sysctl(s) not available on this kernel, not tuned: net.ipv6.neigh.default.gc_thresh3; the tuners run without them"
    );
    // One line whatever the count.
    assert_eq!(both.lines().count(), 1);
}

/// The typed validation errors say what the string ones said (logs and
/// `Outcome::Failed` carry the text).
#[test]
fn validation_errors_keep_their_text() {
    let ints = TUNABLES[0];
    let string = TUNABLES[4];
    let text = |d: &TunableDesc, v: SysctlValue| validate(d, &v).map_err(|e| e.to_string());
    assert_eq!(text(&ints, v(1)), Ok(()));
    assert_eq!(
        text(&ints, SysctlValue::Ints(vec![1])),
        Err("1 values for a 3-value sysctl".to_string())
    );
    assert_eq!(text(&ints, v(-1)), Err("negative value".to_string()));
    assert_eq!(
        text(&ints, SysctlValue::Str("x".into())),
        Err("value type does not match the tunable".to_string())
    );
    assert_eq!(
        text(&string, SysctlValue::Str("a\nb".into())),
        Err("string too long or multi-line".to_string())
    );
}

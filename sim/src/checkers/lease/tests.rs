//! The lease check both ways: hand-made histories of correct leases pass, and each broken rule
//! (premature expiry, a revoke that left a key, keys going apart, a lease that never expired,
//! an ID handed out twice) fires with a message naming the op.

use super::*;
use crate::checkers::testutil::{assert_fires, history};
use crate::checkers::Verdict;
use crate::history::{LeasedKv, Operation, WatchEventRecord, WatchSession};

const K0: &str = "/registry/events/faultline-lease/lease-client-1-1/k0";
const K1: &str = "/registry/events/faultline-lease/lease-client-1-1/k1";

fn ns(s: f64) -> SimNanos {
    (s * 1e9) as SimNanos
}

fn push(
    h: &mut History,
    client: &str,
    at: (f64, f64),
    request: LeaseRequest,
    outcome: LeaseOutcome,
) {
    push_life(h, client, 1, at, request, outcome)
}

fn push_life(
    h: &mut History,
    client: &str,
    life: u64,
    at: (f64, f64),
    request: LeaseRequest,
    outcome: LeaseOutcome,
) {
    let id = 1000 + h.leases.len() as u64;
    h.leases.push(LeaseOperation {
        id,
        client: client.into(),
        life,
        server: "kine-1".into(),
        invoke_ns: ns(at.0),
        complete_ns: ns(at.1),
        request,
        outcome,
    });
}

fn ok(rev: i64, result: LeaseResult) -> LeaseOutcome {
    LeaseOutcome::Ok {
        header_revision: rev,
        result,
    }
}

fn grant(h: &mut History, client: &str, at: f64, lease: i64, ttl_s: i64) {
    let result = LeaseResult::Granted { lease, ttl_s };
    push(
        h,
        client,
        (at, at + 0.01),
        LeaseRequest::Grant { ttl_s },
        ok(5, result),
    );
}

fn attach(h: &mut History, at: f64, lease: i64, key: &str, rev: i64) {
    let request = LeaseRequest::Attach {
        lease,
        key: key.into(),
    };
    push(
        h,
        "lease-client-1",
        (at, at + 0.01),
        request,
        ok(rev, LeaseResult::Attached),
    );
}

fn keep(h: &mut History, at: f64, lease: i64, ttl_s: i64) {
    let request = LeaseRequest::KeepAlive { lease, stream: 1 };
    let result = LeaseResult::KeptAlive { ttl_s };
    push(h, "lease-client-1", (at, at + 0.01), request, ok(0, result));
}

fn revoke(h: &mut History, at: f64, lease: i64, rev: i64) {
    let request = LeaseRequest::Revoke { lease };
    push(
        h,
        "lease-client-1",
        (at, at + 0.01),
        request,
        ok(rev, LeaseResult::Revoked),
    );
}

fn read(h: &mut History, at: f64, lease: i64, present: &[(&str, i64)], rev: i64) {
    let request = LeaseRequest::Read {
        lease,
        start: "/registry/events/faultline-lease/lease-client-1-1/".into(),
        end: "/registry/events/faultline-lease/lease-client-1-10".into(),
    };
    let kvs = present
        .iter()
        .map(|(k, m)| LeasedKv {
            key: k.to_string(),
            mod_revision: *m,
            lease,
        })
        .collect();
    push(
        h,
        "lease-client-1",
        (at, at + 0.01),
        request,
        ok(rev, LeaseResult::Read { kvs }),
    );
}

fn time_to_live(h: &mut History, at: f64, lease: i64, ttl_s: i64) {
    let result = LeaseResult::TimeToLive {
        ttl_s,
        granted_ttl_s: 5,
        keys: vec![],
    };
    let request = LeaseRequest::TimeToLive { lease };
    push(
        h,
        "lease-client-1",
        (at, at + 0.01),
        request,
        ok(30, result),
    );
}

/// A watcher's delete event of `key` at `rev`, received at `at`.
fn watch_delete(h: &mut History, at: f64, key: &str, rev: i64) {
    let id = h.watches.len() as u64;
    h.watches.push(WatchSession {
        id,
        client: "watcher-1".into(),
        server: "kine-1".into(),
        start_key: "/registry/".into(),
        end_key: "/registry0".into(),
        events: vec![WatchEventRecord {
            at_ns: ns(at),
            response: id,
            key: key.into(),
            deleted: true,
            mod_revision: rev,
            create_revision: 10,
            version: 0,
            value: String::new(),
            prev_kv: None,
        }],
        ..Default::default()
    });
}

/// Lease 7 (TTL 5 s) granted at 1 s with two keys, kept alive at 3 s and 5 s: it may not expire
/// before 10 s. Faults stopped at 1 s.
fn kept_until_ten() -> History {
    let mut h = history();
    h.params.faults_stop_ns = ns(1.0);
    h.params.end_ns = ns(100.0);
    grant(&mut h, "lease-client-1", 1.0, 7, 5);
    attach(&mut h, 1.1, 7, K0, 10);
    attach(&mut h, 1.2, 7, K1, 11);
    keep(&mut h, 3.0, 7, 5);
    keep(&mut h, 5.0, 7, 5);
    h
}

fn check(h: &History) -> CheckReport {
    LeaseCheck.check(h)
}

#[test]
fn a_lease_that_expires_after_its_ttl_with_all_its_keys_passes() {
    let mut h = kept_until_ten();
    read(&mut h, 9.0, 7, &[(K0, 10), (K1, 11)], 12);
    watch_delete(&mut h, 11.0, K0, 20);
    watch_delete(&mut h, 11.0, K1, 20);
    read(&mut h, 12.0, 7, &[], 20);
    time_to_live(&mut h, 12.1, 7, -1);
    read(&mut h, 40.0, 7, &[], 20);
    time_to_live(&mut h, 40.1, 7, -1);
    let r = check(&h);
    assert_eq!(r.verdict(), Verdict::Pass, "{:?}", r.violations);
    let judged: BTreeMap<_, _> = r.judged.iter().copied().collect();
    assert_eq!(judged["leases"], 1);
    assert_eq!(judged["key deletions seen"], 2);
    assert_eq!(judged["leases judged gone after faults"], 1);
    // On the etcd topology the two keys' shared revision passes too.
    h.params.topology = "etcd".into();
    assert!(check(&h).passed());
}

#[test]
fn a_revoked_lease_whose_keys_went_with_it_passes() {
    let mut h = kept_until_ten();
    revoke(&mut h, 6.0, 7, 15);
    watch_delete(&mut h, 6.005, K0, 15);
    watch_delete(&mut h, 6.005, K1, 15);
    read(&mut h, 6.1, 7, &[], 15);
    assert_eq!(check(&h).verdict(), Verdict::Pass);
}

#[test]
fn a_key_deleted_before_the_ttl_since_the_last_keep_alive_fires() {
    let mut h = kept_until_ten();
    watch_delete(&mut h, 8.0, K0, 20);
    let r = check(&h);
    assert_fires(&r, "key /registry/events/faultline-lease/lease-client-1-1/k0 (attached at revision 10) of lease 7");
    let first = &r.first().unwrap().message;
    assert!(
        first.contains("deleted by expiry before its TTL")
            && first.contains("watch#0 of watcher-1")
            && first.contains("revision 20")
            && first.contains("op#1004 (keep-alive by lease-client-1, sent at 5.000s, answered TTL 5s) kept the lease until 10.000s"),
        "{first}"
    );
    // A revoke sent before the deletion explains it.
    revoke(&mut h, 7.5, 7, 20);
    assert!(check(&h).passed());
}

#[test]
fn a_read_finding_the_keys_gone_early_and_a_keep_alive_answered_ttl_0_early_fire() {
    let mut h = kept_until_ten();
    read(&mut h, 7.0, 7, &[], 20);
    assert_fires(
        &check(&h),
        "op#1005 (read by lease-client-1) saw it gone at 7.010s",
    );
    let mut h = kept_until_ten();
    keep(&mut h, 7.0, 7, 0);
    assert_fires(
        &check(&h),
        "lease 7 (granted to lease-client-1 by op#1000 at 1.000s, TTL 5s) expired before its TTL",
    );
}

#[test]
fn a_revoke_that_left_a_key_fires() {
    let mut h = kept_until_ten();
    revoke(&mut h, 6.0, 7, 15);
    read(&mut h, 6.1, 7, &[(K1, 11)], 15);
    let r = check(&h);
    assert_fires(
        &r,
        "op#1005 revoke by lease-client-1 answered ok at 6.010s, revision 15",
    );
    assert!(
        r.first().unwrap().message.contains("op#1006 (read by lease-client-1) sent at 6.100s still read its key /registry/events/faultline-lease/lease-client-1-1/k1"),
        "{:?}",
        r.first()
    );
}

#[test]
fn keys_that_disappear_apart_fire() {
    // A read sees one key gone and the other still there.
    let mut h = kept_until_ten();
    read(&mut h, 12.0, 7, &[(K1, 11)], 20);
    assert_fires(&check(&h), "saw part of lease 7");
    // On the etcd topology, the watchers saw the two keys go at different revisions.
    let mut h = kept_until_ten();
    watch_delete(&mut h, 11.0, K0, 20);
    watch_delete(&mut h, 11.5, K1, 21);
    assert!(
        check(&h).passed(),
        "kine gives each deleted row its own revision"
    );
    h.params.topology = "etcd".into();
    assert_fires(&check(&h), "were deleted at different revisions");
}

#[test]
fn a_lease_that_never_expired_fires() {
    // Nobody renews lease 7 after 5 s; faults stopped at 1 s: bound 5.01 + 5 + 15 = 25.01 s.
    let mut h = kept_until_ten();
    read(&mut h, 24.0, 7, &[(K0, 10), (K1, 11)], 12);
    assert!(check(&h).passed(), "before the bound, a lease may linger");
    read(&mut h, 30.0, 7, &[(K0, 10), (K1, 11)], 12);
    let r = check(&h);
    assert_fires(&r, "lease 7 (granted to lease-client-1 by op#1000 at 1.000s, TTL 5s) outlived its bound 25.010s");
    assert!(r
        .first()
        .unwrap()
        .message
        .contains("op#1006 (read by lease-client-1) sent at 30.000s still read its key"));
    // A TimeToLive still answering a TTL past the bound fires too.
    let mut h = kept_until_ten();
    time_to_live(&mut h, 30.0, 7, 3);
    assert_fires(
        &check(&h),
        "op#1005 (time-to-live by lease-client-1, sent at 30.000s) answered TTL 3s",
    );
    // And the final audit read still holding a key.
    let mut h = kept_until_ten();
    h.ops.push(Operation {
        id: 1,
        client: "audit".into(),
        server: "kine-1".into(),
        invoke_ns: ns(90.0),
        complete_ns: ns(90.1),
        request: crate::history::Request::list_all("/registry/", "/registry0"),
        outcome: crate::checkers::testutil::read_ok(40, vec![(K0, 10), (K1, 11)]),
    });
    h.params.final_read = Some(1);
    assert_fires(
        &check(&h),
        "op#1 (the final audit read) sent at 90.000s still read its key",
    );
}

#[test]
fn faults_push_the_bound_later() {
    // The same late read, but faults stopped at 20 s: bound 20 + 5 + 15 = 40 s.
    let mut h = kept_until_ten();
    h.params.faults_stop_ns = ns(20.0);
    read(&mut h, 30.0, 7, &[(K0, 10), (K1, 11)], 12);
    assert!(check(&h).passed());
}

#[test]
fn an_id_granted_twice_while_the_first_lease_lives_fires() {
    let mut h = kept_until_ten();
    grant(&mut h, "lease-client-2", 6.0, 7, 5);
    assert_fires(
        &check(&h),
        "op#1005 (grant by lease-client-2, sent at 6.000s) was given lease ID 7",
    );
    // After the first one was revoked, the ID may come back.
    let mut h = kept_until_ten();
    revoke(&mut h, 5.5, 7, 15);
    grant(&mut h, "lease-client-2", 6.0, 7, 5);
    assert!(check(&h).passed());
}

#[test]
fn a_run_without_leases_is_not_applicable() {
    let h = history();
    assert_eq!(
        check(&h).verdict(),
        Verdict::NotApplicable("the run had no lease clients".into())
    );
    let mut h = history();
    let failed = LeaseOutcome::Unknown {
        error: "deadline exceeded".into(),
    };
    push(
        &mut h,
        "lease-client-1",
        (1.0, 4.0),
        LeaseRequest::Grant { ttl_s: 5 },
        failed,
    );
    assert_eq!(
        check(&h).verdict(),
        Verdict::NotApplicable("no lease was granted".into())
    );
}

#[test]
fn requests_belong_to_their_own_lease_even_when_a_store_repeats_an_id() {
    // lease-client-1's second lease gets ID 7 again (a stub answering ID = TTL does that):
    // only the repeated ID fires, not the first lease's read of its own keys judged against
    // the second lease's.
    let mut h = kept_until_ten();
    let k2 = "/registry/events/faultline-lease/lease-client-1-2/k0";
    let granted = ok(5, LeaseResult::Granted { lease: 7, ttl_s: 5 });
    push_life(
        &mut h,
        "lease-client-1",
        2,
        (6.0, 6.01),
        LeaseRequest::Grant { ttl_s: 5 },
        granted,
    );
    let attach = LeaseRequest::Attach {
        lease: 7,
        key: k2.into(),
    };
    push_life(
        &mut h,
        "lease-client-1",
        2,
        (6.1, 6.11),
        attach,
        ok(30, LeaseResult::Attached),
    );
    read(&mut h, 7.0, 7, &[(K0, 10), (K1, 11)], 31);
    let r = check(&h);
    assert_eq!(r.total, 1, "{:?}", r.violations);
    assert_fires(&r, "was given lease ID 7");
}

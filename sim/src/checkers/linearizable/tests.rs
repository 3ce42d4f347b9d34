//! Hand-built histories, each both ways where it means something: a violation fires and the
//! corrected history passes.

use super::Linearizable;
use crate::checkers::testutil::{history, S};
use crate::checkers::{CheckReport, Checker};
use crate::history::{History, Kv, OpResult, Operation, Outcome, Request};

const PODS: &str = "/registry/pods/";

fn key(n: u32) -> String {
    format!("/registry/pods/ns-0/obj-{n:04}")
}

/// A history on the etcd topology (versions are judged) with the pods prefix as the workload's.
fn base() -> History {
    let mut h = history();
    h.params.topology = "etcd".into();
    h.params.workload_prefixes = vec![PODS.into()];
    h
}

fn check(h: &History) -> CheckReport {
    Linearizable.check(h)
}

/// Asserts that `r` fired and that one of the violations it kept in full mentions `needle`.
fn fires(r: &CheckReport, needle: &str) {
    assert!(
        r.violations.iter().any(|v| v.message.contains(needle)),
        "no violation mentions {needle:?}: {:#?}",
        r.violations
    );
}

fn passes(h: &History) {
    let r = check(h);
    assert!(r.passed(), "{:?}", r.violations);
}

/// Asserts that `h` passes and that the one write of unknown outcome in it was decided.
fn passes_resolving_one(h: &History) {
    let r = check(h);
    assert!(r.passed(), "{:?}", r.violations);
    assert!(
        r.judged.contains(&("unknown writes resolved", 1)),
        "{:?}",
        r.judged
    );
}

fn push(h: &mut History, client: &str, at: (f64, f64), request: Request, outcome: Outcome) -> u64 {
    let id = h.ops.len() as u64;
    h.ops.push(Operation {
        id,
        client: client.into(),
        server: "server-1".into(),
        invoke_ns: (at.0 * S as f64) as u64,
        complete_ns: (at.1 * S as f64) as u64,
        request,
        outcome,
    });
    id
}

fn kv(k: u32, create: i64, modified: i64, version: i64, value: &str) -> Kv {
    Kv {
        key: key(k),
        create_revision: create,
        mod_revision: modified,
        version,
        value: value.into(),
    }
}

fn wrote(rev: i64) -> Outcome {
    Outcome::Ok {
        header_revision: rev,
        result: OpResult::Write {
            succeeded: true,
            current: None,
            responses: vec![],
        },
    }
}

fn refused(rev: i64, current: Option<Kv>) -> Outcome {
    Outcome::Ok {
        header_revision: rev,
        result: OpResult::Write {
            succeeded: false,
            current,
            responses: vec![],
        },
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        error: "DeadlineExceeded".into(),
    }
}

fn read(rev: i64, kvs: Vec<Kv>) -> Outcome {
    let count = kvs.len() as i64;
    Outcome::Ok {
        header_revision: rev,
        result: OpResult::Read {
            kvs,
            more: false,
            count,
        },
    }
}

fn create(k: u32, value: &str) -> Request {
    Request::Create {
        key: key(k),
        value: value.into(),
    }
}

fn update(k: u32, value: &str, expected: i64) -> Request {
    Request::Update {
        key: key(k),
        value: value.into(),
        expected_mod_revision: expected,
    }
}

fn delete(k: u32, expected: i64) -> Request {
    Request::Delete {
        key: key(k),
        expected_mod_revision: expected,
    }
}

fn get(k: u32) -> Request {
    Request::Get {
        key: key(k),
        revision: 0,
        serializable: false,
    }
}

fn list(limit: i64, revision: i64) -> Request {
    Request::List {
        start: PODS.into(),
        end: "/registry/pods0".into(),
        limit,
        revision,
        serializable: false,
        count_only: false,
        keys_only: false,
    }
}

/// obj-1 created at 5 by c1 (value a), updated at 7 by c2 (value b).
fn two_writes() -> History {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c2", (2.0, 2.1), update(1, "b", 5), wrote(7));
    h
}

#[test]
fn a_read_that_misses_another_clients_completed_write_fires_and_a_fresh_one_passes() {
    let mut h = two_writes();
    push(
        &mut h,
        "c3",
        (3.0, 3.1),
        get(1),
        read(7, vec![kv(1, 5, 7, 2, "b")]),
    );
    passes(&h);

    // Served at its header 7 but showing the version 7 replaced.
    let mut stale = two_writes();
    push(
        &mut stale,
        "c3",
        (3.0, 3.1),
        get(1),
        read(7, vec![kv(1, 5, 5, 1, "a")]),
    );
    fires(&check(&stale), "at revision 7 it was at mod revision 7");
    fires(&check(&stale), "missed op#1 by c2");

    // Served from a state before the write c2 completed before the read began.
    let mut behind = two_writes();
    push(
        &mut behind,
        "c3",
        (3.0, 3.1),
        get(1),
        read(6, vec![kv(1, 5, 5, 1, "a")]),
    );
    let r = check(&behind);
    fires(&r, "was served with header revision 6, although op#1 by c2");
    assert_eq!(
        r.total, 1,
        "the answer is right for revision 6: {:?}",
        r.violations
    );
}

#[test]
fn a_write_invoked_after_a_read_completed_must_get_a_higher_revision() {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c2", (2.0, 2.1), get(2), read(9, vec![]));
    push(&mut h, "c1", (3.0, 3.1), create(2, "b"), wrote(10));
    passes(&h);
    h.ops[2].outcome = wrote(8);
    fires(&check(&h), "took effect at revision 8, although op#1 by c2");
}

#[test]
fn a_lost_acknowledged_write_fires_in_the_final_audit() {
    let mut h = two_writes();
    let audit = Request::list_all("/registry/", "/registry0");
    let other = Kv {
        key: "/registry/leases/kube-node-lease/node-1".into(),
        ..kv(0, 3, 3, 1, "lease")
    };
    let fr = push(
        &mut h,
        "audit",
        (9.0, 9.1),
        audit.clone(),
        read(12, vec![other.clone(), kv(1, 5, 7, 2, "b")]),
    );
    h.params.final_read = Some(fr);
    passes(&h);

    let mut lost = two_writes();
    let fr = push(&mut lost, "audit", (9.0, 9.1), audit, read(12, vec![other]));
    lost.params.final_read = Some(fr);
    fires(&check(&lost), "did not return /registry/pods/ns-0/obj-0001");
    fires(&check(&lost), "no later write changed it");
}

#[test]
fn a_value_never_written_fires() {
    let mut right = two_writes();
    push(
        &mut right,
        "c3",
        (3.0, 3.1),
        get(1),
        read(8, vec![kv(1, 5, 7, 2, "b")]),
    );
    passes(&right);

    let mut h = two_writes();
    push(
        &mut h,
        "c3",
        (3.0, 3.1),
        get(1),
        read(8, vec![kv(1, 5, 8, 3, "zz")]),
    );
    fires(&check(&h), "no write ever produced value zz");

    // The right revision with another write's value.
    let mut swapped = two_writes();
    push(
        &mut swapped,
        "c3",
        (3.0, 3.1),
        get(1),
        read(7, vec![kv(1, 5, 7, 2, "a")]),
    );
    fires(&check(&swapped), "value a instead of b");

    // The value of a write that failed outright.
    let mut failed = two_writes();
    push(
        &mut failed,
        "c4",
        (2.5, 2.6),
        update(1, "c", 7),
        Outcome::Failed {
            error: "required revision has been compacted".into(),
        },
    );
    push(
        &mut failed,
        "c3",
        (3.0, 3.1),
        get(1),
        read(9, vec![kv(1, 5, 9, 3, "c")]),
    );
    fires(&check(&failed), "whose request failed");
}

/// Three pods live at revision 9 (created at 5, 6, 7) and nothing else.
fn three_pods() -> History {
    let mut h = base();
    for (n, rev) in [(1, 5), (2, 6), (3, 7)] {
        push(
            &mut h,
            "c1",
            (n as f64, n as f64 + 0.1),
            create(n, &format!("v{n}")),
            wrote(rev),
        );
    }
    h
}

fn page(kvs: Vec<Kv>, more: bool, count: i64) -> Outcome {
    Outcome::Ok {
        header_revision: 9,
        result: OpResult::Read { kvs, more, count },
    }
}

#[test]
fn count_must_agree_with_the_kvs_and_with_the_writes() {
    let all = || {
        vec![
            kv(1, 5, 5, 1, "v1"),
            kv(2, 6, 6, 1, "v2"),
            kv(3, 7, 7, 1, "v3"),
        ]
    };
    let mut h = three_pods();
    push(&mut h, "c2", (5.0, 5.1), list(0, 0), page(all(), false, 3));
    push(
        &mut h,
        "c2",
        (5.2, 5.3),
        list(2, 0),
        page(all()[..2].to_vec(), true, 3),
    );
    passes(&h);

    let mut own = three_pods();
    push(
        &mut own,
        "c2",
        (5.0, 5.1),
        list(0, 0),
        page(all(), false, 4),
    );
    fires(&check(&own), "returned count 4 with 3 key-values");

    // A page cut by its limit counts what follows it: the writes say 3.
    let mut model = three_pods();
    push(
        &mut model,
        "c2",
        (5.2, 5.3),
        list(2, 0),
        page(all()[..2].to_vec(), true, 5),
    );
    fires(
        &check(&model),
        "returned count 5; at revision 9 the writes leave 3 live keys",
    );

    let mut only = three_pods();
    let count_only = Request::List {
        start: PODS.into(),
        end: "/registry/pods0".into(),
        limit: 0,
        revision: 0,
        serializable: false,
        count_only: true,
        keys_only: false,
    };
    push(
        &mut only,
        "c2",
        (5.0, 5.1),
        count_only.clone(),
        page(vec![], false, 3),
    );
    passes(&only);
    push(
        &mut only,
        "c2",
        (5.2, 5.3),
        count_only,
        page(vec![], false, 2),
    );
    fires(&check(&only), "returned count 2");
}

#[test]
fn more_must_say_exactly_whether_the_limit_cut_the_range() {
    let all = || {
        vec![
            kv(1, 5, 5, 1, "v1"),
            kv(2, 6, 6, 1, "v2"),
            kv(3, 7, 7, 1, "v3"),
        ]
    };
    let mut h = three_pods();
    push(&mut h, "c2", (5.0, 5.1), list(3, 0), page(all(), false, 3));
    passes(&h);

    let mut wrong = three_pods();
    push(
        &mut wrong,
        "c2",
        (5.0, 5.1),
        list(3, 0),
        page(all(), true, 3),
    );
    fires(
        &check(&wrong),
        "more=true with 3 key-values, count 3 and limit 3",
    );

    // Cut short without saying so: the missing key is named.
    let mut cut = three_pods();
    push(
        &mut cut,
        "c2",
        (5.0, 5.1),
        list(3, 0),
        page(all()[..2].to_vec(), false, 2),
    );
    fires(&check(&cut), "did not return /registry/pods/ns-0/obj-0003");
}

#[test]
fn a_read_at_an_old_revision_is_judged_against_that_revision() {
    let old = |kvs: Vec<Kv>| Outcome::Ok {
        header_revision: 20,
        result: OpResult::Read {
            count: kvs.len() as i64,
            kvs,
            more: false,
        },
    };
    let mut h = two_writes();
    push(
        &mut h,
        "c3",
        (3.0, 3.1),
        list(0, 6),
        old(vec![kv(1, 5, 5, 1, "a")]),
    );
    push(&mut h, "c3", (3.2, 3.3), list(0, 4), old(vec![]));
    passes(&h);

    let mut newer = two_writes();
    push(
        &mut newer,
        "c3",
        (3.0, 3.1),
        list(0, 6),
        old(vec![kv(1, 5, 7, 2, "b")]),
    );
    fires(&check(&newer), "newer than the revision served");

    let mut future = two_writes();
    push(
        &mut future,
        "c3",
        (3.0, 3.1),
        list(0, 30),
        old(vec![kv(1, 5, 7, 2, "b")]),
    );
    fires(
        &check(&future),
        "asked for revision 30 but the store's revision was 20",
    );
}

#[test]
fn an_unknown_write_seen_later_happened() {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c1", (2.0, 5.0), update(1, "b", 5), unknown());
    push(
        &mut h,
        "c2",
        (6.0, 6.1),
        get(1),
        read(9, vec![kv(1, 5, 8, 2, "b")]),
    );
    // Another client that still expected 5 is refused, and told about 8.
    push(
        &mut h,
        "c3",
        (7.0, 7.1),
        update(1, "c", 5),
        refused(9, Some(kv(1, 5, 8, 2, "b"))),
    );
    passes_resolving_one(&h);

    // Seen, but then a read shows the state before it again.
    let mut back = h.clone();
    push(
        &mut back,
        "c2",
        (8.0, 8.1),
        get(1),
        read(10, vec![kv(1, 5, 5, 1, "a")]),
    );
    fires(&check(&back), "missed op#1 by c1 (update");
}

/// Empty values name no write: two writes of "" with unknown outcomes, on two keys, and a read
/// showing one of them is resolved by which compare fits, not taken for the other key's write;
/// a version shown empty that only a write of another value could have made fires.
#[test]
fn an_unknown_write_of_an_empty_value_is_resolved_by_reference() {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c1", (2.0, 5.0), update(1, "", 5), unknown());
    push(&mut h, "c2", (2.0, 5.0), create(2, ""), unknown());
    push(
        &mut h,
        "c3",
        (6.0, 6.1),
        get(1),
        read(9, vec![kv(1, 5, 8, 2, "")]),
    );
    passes_resolving_one(&h);

    let mut other = base();
    push(&mut other, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut other, "c1", (2.0, 5.0), update(1, "b", 5), unknown());
    push(
        &mut other,
        "c3",
        (6.0, 6.1),
        get(1),
        read(9, vec![kv(1, 5, 8, 2, "")]),
    );
    assert!(!check(&other).passed());
}

fn keys_only() -> Request {
    Request::List {
        start: PODS.into(),
        end: "/registry/pods0".into(),
        limit: 0,
        revision: 0,
        serializable: false,
        count_only: false,
        keys_only: true,
    }
}

/// c1's update, outcome unknown, took revision 8; a keys-only list showed that revision
/// without its value, and c2, having learned it there, replaced version 8.
fn known_by_revision(with_unknown_update: bool) -> History {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    if with_unknown_update {
        push(&mut h, "c1", (2.0, 5.0), update(1, "b", 5), unknown());
    }
    push(
        &mut h,
        "c2",
        (6.0, 6.1),
        keys_only(),
        read(9, vec![kv(1, 5, 8, 2, "")]),
    );
    push(&mut h, "c2", (7.0, 7.1), update(1, "c", 8), wrote(10));
    push(
        &mut h,
        "c3",
        (8.0, 8.1),
        get(1),
        read(10, vec![kv(1, 5, 10, 3, "c")]),
    );
    h
}

#[test]
fn an_unknown_write_known_only_by_its_revision_took_effect() {
    passes_resolving_one(&known_by_revision(true));
    // Without a write that could have produced revision 8, neither the list nor the update holds.
    let r = check(&known_by_revision(false));
    fires(
        &r,
        "no write of /registry/pods/ns-0/obj-0001 has revision 8",
    );
    fires(
        &r,
        "its compare needed /registry/pods/ns-0/obj-0001 at mod revision 8 at revision 9",
    );
}

#[test]
fn an_unknown_write_the_chain_rules_out_fires_when_seen() {
    // c2's update of version 5 was acknowledged at 7, so c1's update of version 5, outcome
    // unknown, cannot also have happened: a version has one successor.
    let mut h = two_writes();
    push(&mut h, "c1", (1.5, 4.0), update(1, "x", 5), unknown());
    push(
        &mut h,
        "c3",
        (5.0, 5.1),
        get(1),
        read(7, vec![kv(1, 5, 7, 2, "b")]),
    );
    passes_resolving_one(&h);

    let mut seen = two_writes();
    push(&mut seen, "c1", (1.5, 4.0), update(1, "x", 5), unknown());
    push(
        &mut seen,
        "c3",
        (5.0, 5.1),
        get(1),
        read(9, vec![kv(1, 5, 9, 2, "x")]),
    );
    fires(&check(&seen), "its compare needed /registry/pods/ns-0/obj-0001 at mod revision 5 at revision 8, but it was at mod revision 7");
}

#[test]
fn an_unknown_delete_is_dated_by_the_reads_that_find_its_key_gone() {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(
        &mut h,
        "c2",
        (1.5, 1.6),
        get(1),
        read(6, vec![kv(1, 5, 5, 1, "a")]),
    );
    push(&mut h, "c1", (2.0, 5.0), delete(1, 5), unknown());
    push(&mut h, "c2", (6.0, 6.1), get(1), read(9, vec![]));
    push(&mut h, "c3", (7.0, 7.1), create(1, "b"), wrote(11));
    passes_resolving_one(&h);

    // Absent at 9, then live again at 10 with the old version: it came back.
    let mut back = h.clone();
    push(
        &mut back,
        "c4",
        (6.5, 6.6),
        get(1),
        read(10, vec![kv(1, 5, 5, 1, "a")]),
    );
    fires(&check(&back), "op#3 saw it absent at revision 9");

    // With no delete that could explain it, a missing key fires at once.
    let mut gone = base();
    push(&mut gone, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut gone, "c2", (6.0, 6.1), get(1), read(9, vec![]));
    fires(
        &check(&gone),
        "did not return /registry/pods/ns-0/obj-0001; at revision 9 it was at mod revision 5",
    );
}

#[test]
fn a_guarded_write_must_agree_with_the_state_it_compared() {
    // Both updates expected version 5 and both say they succeeded: a lost update.
    let mut h = two_writes();
    push(&mut h, "c3", (3.0, 3.1), update(1, "c", 5), wrote(9));
    fires(&check(&h), "op#2 by c3 on server-1 (update /registry/pods/ns-0/obj-0001 = c if mod revision 5, invoked 3.000s, completed 3.100s) took effect at revision 9; its compare needed /registry/pods/ns-0/obj-0001 at mod revision 5 at revision 8, but it was at mod revision 7");

    // A create that succeeded on a live key.
    let mut live = two_writes();
    push(&mut live, "c3", (3.0, 3.1), create(1, "c"), wrote(9));
    fires(
        &check(&live),
        "its compare needed /registry/pods/ns-0/obj-0001 absent at revision 8",
    );

    // Refused, reporting the key as it stands: right, then wrong.
    let mut ok = two_writes();
    push(
        &mut ok,
        "c3",
        (3.0, 3.1),
        update(1, "c", 5),
        refused(7, Some(kv(1, 5, 7, 2, "b"))),
    );
    passes(&ok);
    let mut stale = two_writes();
    push(
        &mut stale,
        "c3",
        (3.0, 3.1),
        update(1, "c", 5),
        refused(7, Some(kv(1, 5, 5, 1, "a"))),
    );
    fires(
        &check(&stale),
        "failed its compare at revision 7, yet reported",
    );

    // Refused although the key was absent, as a create asks (etcd compares atomically).
    let mut absent = base();
    push(
        &mut absent,
        "c3",
        (3.0, 3.1),
        create(1, "c"),
        refused(4, None),
    );
    fires(&check(&absent), "exactly what it asked for");
}

fn serializable_get(k: u32) -> Request {
    Request::Get {
        key: key(k),
        revision: 0,
        serializable: true,
    }
}

#[test]
fn a_serializable_read_may_be_stale_but_never_goes_back_on_one_server() {
    let mut h = two_writes();
    // server-2 lags: it serves revision 5, before c2's write, after that write completed.
    let i = push(
        &mut h,
        "c3",
        (3.0, 3.1),
        serializable_get(1),
        read(5, vec![kv(1, 5, 5, 1, "a")]),
    );
    h.ops[i as usize].server = "server-2".into();
    passes(&h);
    // The same client on server-1 sees 7; failing over back to lagging server-2 may see 5 again.
    push(
        &mut h,
        "c3",
        (3.2, 3.3),
        get(1),
        read(7, vec![kv(1, 5, 7, 2, "b")]),
    );
    let i = push(
        &mut h,
        "c3",
        (3.4, 3.5),
        serializable_get(1),
        read(5, vec![kv(1, 5, 5, 1, "a")]),
    );
    h.ops[i as usize].server = "server-2".into();
    passes(&h);

    // On one server the client saw 7, then 5.
    let mut back = two_writes();
    push(
        &mut back,
        "c3",
        (3.0, 3.1),
        serializable_get(1),
        read(7, vec![kv(1, 5, 7, 2, "b")]),
    );
    push(
        &mut back,
        "c3",
        (3.2, 3.3),
        serializable_get(1),
        read(5, vec![kv(1, 5, 5, 1, "a")]),
    );
    fires(
        &check(&back),
        "although the same client had seen 7 from the same server",
    );

    // Stale, and not even the state at its own revision.
    let mut wrong = two_writes();
    let i = push(
        &mut wrong,
        "c3",
        (3.0, 3.1),
        serializable_get(1),
        read(6, vec![]),
    );
    wrong.ops[i as usize].server = "server-2".into();
    fires(&check(&wrong), "did not return");
}

/// kine over a mysql-like database: c1's create reserved revision 5 and commits late; c2's
/// create got 6 and committed first; c3's read at 6 runs in between.
fn late_commit(read_at: (f64, f64)) -> History {
    let mut h = base();
    h.params.topology = "ha".into();
    h.params.database_dialect = "mysql-like".into();
    push(&mut h, "c1", (1.0, 2.0), create(1, "a"), wrote(5));
    push(&mut h, "c2", (1.1, 1.2), create(2, "b"), wrote(6));
    push(
        &mut h,
        "c3",
        read_at,
        list(0, 0),
        read(6, vec![kv(2, 6, 6, 1, "b")]),
    );
    h.ops.sort_by_key(|o| o.invoke_ns);
    for (i, o) in h.ops.iter_mut().enumerate() {
        o.id = i as u64;
    }
    h
}

#[test]
fn mysql_like_allows_a_read_to_miss_a_lower_revision_still_committing_and_nothing_else() {
    // The read ran while revision 5 was still in flight.
    passes(&late_commit((1.5, 1.6)));
    // Revision 5 was acknowledged before the read began: it must be there.
    fires(
        &check(&late_commit((2.5, 2.6))),
        "did not return /registry/pods/ns-0/obj-0001",
    );
    // SQLite commits in id order: no allowance.
    let mut sqlite = late_commit((1.5, 1.6));
    sqlite.params.database_dialect = "sqlite".into();
    fires(
        &check(&sqlite),
        "did not return /registry/pods/ns-0/obj-0001",
    );
}

/// kine over a mysql-like database counts in a query of its own after the page: c1's create
/// reserved revision 5 and commits between c3's page (limit 1, without it) and its count.
fn late_count(count: i64) -> History {
    let mut h = base();
    h.params.topology = "ha".into();
    h.params.database_dialect = "mysql-like".into();
    push(&mut h, "c2", (0.5, 0.6), create(3, "c"), wrote(4));
    push(&mut h, "c1", (1.0, 2.0), create(1, "a"), wrote(5));
    push(&mut h, "c2", (1.1, 1.2), create(2, "b"), wrote(6));
    let page = Outcome::Ok {
        header_revision: 6,
        result: OpResult::Read {
            kvs: vec![kv(2, 6, 6, 1, "b")],
            more: true,
            count,
        },
    };
    push(&mut h, "c3", (1.5, 1.6), list(1, 0), page);
    h
}

#[test]
fn mysql_like_judges_a_pages_count_against_every_state_the_allowance_admits() {
    // Counted before or after revision 5 committed.
    passes(&late_count(2));
    passes(&late_count(3));
    fires(
        &check(&late_count(4)),
        "returned count 4; at revision 6 the writes leave 2 to 3 live keys",
    );
    // SQLite commits in id order, and the page and its count see the same state.
    let mut sqlite = late_count(3);
    sqlite.params.database_dialect = "sqlite".into();
    fires(
        &check(&sqlite),
        "did not return /registry/pods/ns-0/obj-0001",
    );
}

/// Operations in invoke order with ids to match, on kine over `dialect`.
fn on_kine(mut h: History, dialect: &str) -> History {
    h.params.topology = "ha".into();
    h.params.database_dialect = dialect.into();
    h.ops.sort_by_key(|o| o.invoke_ns);
    for (i, o) in h.ops.iter_mut().enumerate() {
        o.id = i as u64;
    }
    h
}

/// c1's delete of obj-0001, outcome unknown, committed while c3's read at `late` ran; c2 found
/// the key gone at revision 8, completing at 3.3 s.
fn unknown_delete_committing(late: (f64, f64), dialect: &str) -> History {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c1", (2.0, 5.0), delete(1, 5), unknown());
    push(&mut h, "c2", (3.2, 3.3), get(1), read(8, vec![]));
    push(
        &mut h,
        "c3",
        late,
        get(1),
        read(9, vec![kv(1, 5, 5, 1, "a")]),
    );
    on_kine(h, dialect)
}

#[test]
fn mysql_like_lets_a_read_begun_before_an_unknown_delete_was_seen_still_see_the_key() {
    passes(&unknown_delete_committing((3.1, 3.4), "mysql-like"));
    // Begun after c2 had found the key gone.
    fires(
        &check(&unknown_delete_committing((3.5, 3.6), "mysql-like")),
        "an answer had already seen it deleted",
    );
    fires(
        &check(&unknown_delete_committing((3.1, 3.4), "sqlite")),
        "an answer had already seen it deleted",
    );
}

/// c1's delete of obj-0001 took revision 7 and is acknowledged at `acked`; c2, having seen
/// revision 8 before, tries to create obj-0001 at 2.5 s and is refused, the key reported absent
/// (kine reads `current` in a step of its own after the compare).
fn refused_create_while_a_delete_commits(acked: f64, dialect: &str) -> History {
    let mut h = base();
    push(&mut h, "c1", (1.0, 1.1), create(1, "a"), wrote(5));
    push(&mut h, "c3", (1.9, 2.05), create(2, "b"), wrote(8));
    push(&mut h, "c1", (2.0, acked), delete(1, 5), wrote(7));
    push(
        &mut h,
        "c2",
        (2.1, 2.2),
        get(2),
        read(8, vec![kv(2, 8, 8, 1, "b")]),
    );
    push(&mut h, "c2", (2.5, 2.6), create(1, "c"), refused(8, None));
    on_kine(h, dialect)
}

#[test]
fn mysql_like_lets_a_refused_create_find_its_key_deleted_by_a_write_still_committing() {
    passes(&refused_create_while_a_delete_commits(3.0, "mysql-like"));
    // The delete was acknowledged before the create began: its compare saw the key absent.
    fires(
        &check(&refused_create_while_a_delete_commits(2.4, "mysql-like")),
        "exactly what it asked for",
    );
    fires(
        &check(&refused_create_while_a_delete_commits(3.0, "sqlite")),
        "exactly what it asked for",
    );
}

/// c1's delete of obj-0003, outcome unknown, committed at some revision while c3's read at
/// revision 8, begun at `live_from`, still found the key; c2 found it gone at revision 9 (done
/// at 4.1 s); c4's page at revision 8 (limit 1, obj-0001 on it) then counts obj-0003 as gone too.
fn unknown_delete_counted_gone(live_from: f64, dialect: &str) -> History {
    let mut h = base();
    push(&mut h, "c2", (0.5, 0.6), create(1, "b"), wrote(3));
    push(&mut h, "c2", (0.7, 0.8), create(2, "c"), wrote(4));
    push(&mut h, "c1", (1.0, 1.1), create(3, "a"), wrote(5));
    push(&mut h, "c1", (2.0, 9.0), delete(3, 5), unknown());
    let at_8 = Request::Get {
        key: key(3),
        revision: 8,
        serializable: false,
    };
    let live = read(9, vec![kv(3, 5, 5, 1, "a")]);
    push(&mut h, "c3", (live_from, live_from + 0.1), at_8, live);
    push(&mut h, "c2", (4.0, 4.1), get(3), read(9, vec![]));
    let page = Outcome::Ok {
        header_revision: 9,
        result: OpResult::Read {
            kvs: vec![kv(1, 3, 3, 1, "b")],
            more: true,
            count: 2,
        },
    };
    push(&mut h, "c4", (5.0, 5.1), list(1, 8), page);
    on_kine(h, dialect)
}

#[test]
fn mysql_like_does_not_date_an_unknown_delete_by_a_read_begun_while_it_may_have_been_committing() {
    // c3 began before any answer had found the key gone: the delete may have held a revision
    // at or below 8 and committed after c3 read, so c4 may count the key gone at 8.
    passes(&unknown_delete_counted_gone(3.0, "mysql-like"));
    // c3 began once c2 had found the key gone: the delete had committed, above revision 8.
    fires(
        &check(&unknown_delete_counted_gone(4.2, "mysql-like")),
        "returned count 2",
    );
    // SQLite commits in id order: what c3 saw at 8 holds for every later read at 8.
    fires(
        &check(&unknown_delete_counted_gone(3.0, "sqlite")),
        "returned count 2",
    );
}

#[test]
fn a_read_beyond_the_workload_prefixes_is_judged_on_the_workloads_keys_only() {
    let mut h = two_writes();
    let audit = Request::list_all("/registry/", "/registry0");
    let foreign = Kv {
        key: "/registry/leases/kube-node-lease/node-1".into(),
        ..kv(0, 3, 3, 1, "lease")
    };
    // Others' keys are not modelled, but an uncut answer still counts exactly what it holds.
    let answer = |count| Outcome::Ok {
        header_revision: 9,
        result: OpResult::Read {
            kvs: vec![foreign.clone(), kv(1, 5, 7, 2, "b")],
            more: false,
            count,
        },
    };
    push(&mut h, "audit", (9.0, 9.1), audit, answer(2));
    passes(&h);
    h.ops[2].outcome = answer(17);
    fires(
        &check(&h),
        "returned count 17 with 2 key-values and more=false",
    );
}

/// An answer with one thing wrong in its shape, whatever the writes were.
fn misshapen(request: Request, kvs: Vec<Kv>, more: bool, count: i64) -> CheckReport {
    let mut h = two_writes();
    let answer = Outcome::Ok {
        header_revision: 7,
        result: OpResult::Read { kvs, more, count },
    };
    push(&mut h, "c3", (3.0, 3.1), request, answer);
    check(&h)
}

#[test]
fn a_keys_only_answer_carries_no_values() {
    let right = misshapen(keys_only(), vec![kv(1, 5, 7, 2, "")], false, 1);
    assert!(right.passed(), "{:?}", right.violations);
    fires(
        &misshapen(keys_only(), vec![kv(1, 5, 7, 2, "b")], false, 1),
        "asked for keys only but returned /registry/pods/ns-0/obj-0001 with value b",
    );
}

#[test]
fn a_count_only_answer_carries_no_key_values_and_cuts_nothing() {
    let count_only = || Request::List {
        start: PODS.into(),
        end: "/registry/pods0".into(),
        limit: 0,
        revision: 0,
        serializable: false,
        count_only: true,
        keys_only: false,
    };
    let right = misshapen(count_only(), vec![], false, 1);
    assert!(right.passed(), "{:?}", right.violations);
    fires(
        &misshapen(count_only(), vec![], true, 1),
        "asked for a count only but returned more=true",
    );
    fires(
        &misshapen(count_only(), vec![kv(1, 5, 7, 2, "b")], false, 1),
        "asked for a count only but returned 1 key-values",
    );
}

#[test]
fn a_key_values_revisions_and_version_agree_with_each_other_and_the_revision_served() {
    // A version from the future of the header: mod revision 8 served at 7 (the model names
    // the writes for the workload's keys; the shape rule says it for others' keys).
    fires(
        &misshapen(get(1), vec![kv(1, 5, 8, 2, "b")], false, 1),
        "returned /registry/pods/ns-0/obj-0001 at mod revision 8",
    );
    let lease = Kv {
        key: "/registry/leases/a".into(),
        ..kv(0, 5, 8, 1, "")
    };
    let leases = Request::list_all("/registry/leases/", "/registry/leases0");
    fires(
        &misshapen(leases, vec![lease], false, 1),
        "with create revision 5 and mod revision 8, served at revision 7",
    );
    fires(
        &misshapen(get(1), vec![kv(1, 0, 7, 2, "b")], false, 1),
        "every key-value needs 0 < create revision <= mod revision",
    );
    // etcd: two writes since creation at 5 cannot make version 4 by revision 7.
    fires(
        &misshapen(get(1), vec![kv(1, 5, 7, 4, "b")], false, 1),
        "with version 4 (create revision 5, mod revision 7): a live key's version counts",
    );
    // kine reports 1 for every live key, and judges nothing else of it.
    let on_kine = |version| {
        let mut h = two_writes();
        h.params.topology = "ha".into();
        let answer = read(7, vec![kv(1, 5, 7, version, "b")]);
        push(&mut h, "c3", (3.0, 3.1), get(1), answer);
        check(&h)
    };
    assert!(on_kine(1).passed(), "{:?}", on_kine(1).violations);
    fires(&on_kine(2), "kine reports version 1 for every live key");
}

#[test]
fn a_read_outside_the_workload_is_judged_for_its_shape() {
    let foreign = |k: &str, m: i64| Kv {
        key: k.into(),
        ..kv(0, m, m, 1, "lease")
    };
    let outside = || Request::list_all("/registry/leases/", "/registry/leases0");
    let (a, b) = ("/registry/leases/a", "/registry/leases/b");
    let right = misshapen(outside(), vec![foreign(a, 3), foreign(b, 4)], false, 2);
    assert!(right.passed(), "{:?}", right.violations);
    fires(
        &misshapen(outside(), vec![foreign(b, 4), foreign(a, 3)], false, 2),
        "returned /registry/leases/a after /registry/leases/b",
    );
}

#[test]
fn a_txn_answers_with_exactly_the_branch_it_took() {
    use crate::history::TxnAnswer;
    let answered = |rev, succeeded, current: Option<Kv>, responses| Outcome::Ok {
        header_revision: rev,
        result: OpResult::Write {
            succeeded,
            current,
            responses,
        },
    };
    let put = || vec![TxnAnswer::Put { prev_kv: false }];
    let range = |n: usize| {
        vec![TxnAnswer::Range {
            kvs: n,
            more: false,
            count: n as i64,
        }]
    };
    let mut h = base();
    push(
        &mut h,
        "c1",
        (1.0, 1.1),
        create(1, "a"),
        answered(5, true, None, put()),
    );
    push(
        &mut h,
        "c2",
        (2.0, 2.1),
        create(1, "b"),
        answered(5, false, Some(kv(1, 5, 5, 1, "a")), range(1)),
    );
    let deleted = |n| {
        vec![TxnAnswer::Delete {
            deleted: n,
            prev_kvs: 0,
        }]
    };
    push(
        &mut h,
        "c1",
        (3.0, 3.1),
        delete(1, 5),
        answered(6, true, None, deleted(1)),
    );
    passes(&h);

    let mut wrong_branch = h.clone();
    wrong_branch.ops[0].outcome = answered(5, true, None, range(0));
    fires(&check(&wrong_branch), "took effect and answered [Range");
    let mut nothing_deleted = h.clone();
    nothing_deleted.ops[2].outcome = answered(6, true, None, deleted(0));
    fires(
        &check(&nothing_deleted),
        "answers exactly [Delete { deleted: 1",
    );
    let mut uncounted = h.clone();
    uncounted.ops[1].outcome = answered(5, false, Some(kv(1, 5, 5, 1, "a")), range(0));
    fires(
        &check(&uncounted),
        "failed its compare and answered [Range { kvs: 0",
    );
    let mut future = h;
    future.ops[1].outcome = answered(5, false, Some(kv(1, 5, 6, 1, "a")), range(1));
    fires(&check(&future), "failed its compare and returned /registry/pods/ns-0/obj-0001 with create revision 5 and mod revision 6, served at revision 5");
}

#[test]
fn nothing_to_judge_is_not_applicable() {
    let r = check(&base());
    assert_eq!(
        r.verdict(),
        crate::checkers::Verdict::NotApplicable(
            "no client read or write completed on the workload's keys".into()
        )
    );
}

#[test]
fn a_generated_history_passes_and_a_corrupted_one_fires() {
    let h = super::generate::history(20_000, 7);
    let r = check(&h);
    assert!(r.passed(), "{:?}", r.violations);
    let reads = r
        .judged
        .iter()
        .find(|(w, _)| *w == "reads")
        .map(|(_, n)| *n);
    assert!(reads > Some(3_000), "{:?}", r.judged);

    // Drop one key-value from the first list page that has any.
    let mut broken = h.clone();
    let victim = broken
        .ops
        .iter_mut()
        .find_map(|o| match (&o.request, &mut o.outcome) {
            (
                Request::List { limit: 50, .. },
                Outcome::Ok {
                    result:
                        OpResult::Read {
                            kvs,
                            more: false,
                            count,
                        },
                    ..
                },
            ) if kvs.len() > 3 => {
                *count -= 1;
                Some(kvs.remove(1).key)
            }
            _ => None,
        })
        .expect("a list page with a few keys");
    fires(&check(&broken), &format!("did not return {victim}"));
}

/// A real run: the flagship scenario, shortened, judged from its clients' side.
#[test]
fn a_simulated_kine_run_passes_with_thousands_of_reads_judged() {
    let mut scenario = crate::scenario::load("../scenarios/kine-compaction-failure.toml")
        .expect("the shipped scenario loads");
    scenario.duration_s = 400;
    scenario.quiet_s = 60;
    let out = crate::world::run_seed(&scenario, 1, &Default::default());
    let r = check(&out.history);
    assert!(r.passed(), "{:?}", r.violations);
    let reads = r
        .judged
        .iter()
        .find(|(w, _)| *w == "reads")
        .map(|(_, n)| *n);
    assert!(reads > Some(2_000), "{:?}", r.judged);
}

/// A lease key: outside the workload's prefix, put by a lease client and deleted by expiry,
/// neither of which any recorded operation reports.
fn leased(rev: i64) -> Kv {
    Kv {
        key: "/registry/pods0/leased".into(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        value: "lease".into(),
    }
}

fn everything() -> Request {
    Request::List {
        start: "/".into(),
        end: "0".into(),
        limit: 0,
        revision: 0,
        serializable: false,
        count_only: false,
        keys_only: false,
    }
}

#[test]
fn a_live_run_is_judged_from_its_operations_and_leased_keys_outside_the_workload_are_ignored() {
    let mut h = two_writes();
    h.params.live = true;
    // A leased key put at 6 shows up, then its lease expires and deletes it at 8.
    push(
        &mut h,
        "c3",
        (3.0, 3.1),
        everything(),
        read(7, vec![kv(1, 5, 7, 2, "b"), leased(6)]),
    );
    push(
        &mut h,
        "c3",
        (4.0, 4.1),
        everything(),
        read(8, vec![kv(1, 5, 7, 2, "b")]),
    );
    push(&mut h, "c1", (5.0, 5.1), update(1, "c", 7), wrote(9));
    push(
        &mut h,
        "c3",
        (6.0, 6.1),
        get(1),
        read(9, vec![kv(1, 5, 9, 3, "c")]),
    );
    passes(&h);
    // A read that misses a workload key's acknowledged write still fires.
    h.ops[3].outcome = read(8, vec![]);
    fires(&check(&h), "obj-0001");
}

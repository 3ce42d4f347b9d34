//! revision-monotonic: revisions only move forward and acknowledged writes stay written.
//!
//! From client operations: committed write revisions are unique and follow real time; no client
//! sees a header revision lower than one it saw before; the final audit read still holds every
//! acknowledged write. From the database's commits: the stored compact revision never decreases
//! and never passes `current - min_retain`, and at every reopening of the database and start of
//! a kine server, none of what was committed is missing. From etcd members' own reports: a restarted member
//! holds all the raft state it had fsynced, and raft-rs never halts one (`member_durability`),
//! the cause a reader of a lost write or a revision handed out twice needs next to it.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::history::{History, OpResult, Outcome, Request};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub struct RevisionMonotonic;

/// The rules that read the store's own events, which a live run does not have: they find nothing
/// to judge there (and so never fire), and the report names them.
const LIVE_UNJUDGED: &[&str] = &[
    "every revision committed once: the store's commits are unknown (acknowledged writes' revisions are still judged unique)",
    "a database or store restart keeps what was committed: restarts are not observed from inside",
    "etcd members restart with all the raft state they fsynced and never halt (member durability): members' raft state is not observed",
    "the stored compact revision only rises and keeps min-retain: the store's compactions are not observable from outside",
];

/// An acknowledged, successful write: (op id, revision).
fn acked_writes(h: &History) -> Vec<(usize, i64)> {
    h.ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.request.is_write())
        .filter_map(|(i, o)| match &o.outcome {
            Outcome::Ok {
                header_revision,
                result: OpResult::Write {
                    succeeded: true, ..
                },
            } => Some((i, *header_revision)),
            _ => None,
        })
        .collect()
}

fn unique_and_real_time_ordered(h: &History, out: &mut Violations) {
    let writes = acked_writes(h);
    let mut by_rev: BTreeMap<i64, usize> = BTreeMap::new();
    for &(i, rev) in &writes {
        if let Some(&j) = by_rev.get(&rev) {
            let (a, b) = (&h.ops[j], &h.ops[i]);
            out.fire(a.complete_ns.max(b.complete_ns), || format!(
                    "two acknowledged writes share revision {rev}: op#{} by {} ({:?}) and op#{} by {} ({:?})",
                    a.id, a.client, a.request.write_key(), b.id, b.client, b.request.write_key()
                ));
        }
        by_rev.insert(rev, i);
    }
    // Real-time order: a write invoked after another completed must get a higher revision. Scan
    // by invoke time, keeping the highest revision among writes completed before each invoke.
    let mut by_complete: Vec<(u64, i64, usize)> = writes
        .iter()
        .map(|&(i, r)| (h.ops[i].complete_ns, r, i))
        .collect();
    by_complete.sort();
    let mut by_invoke: Vec<(u64, i64, usize)> = writes
        .iter()
        .map(|&(i, r)| (h.ops[i].invoke_ns, r, i))
        .collect();
    by_invoke.sort();
    let mut k = 0;
    let mut best: Option<(i64, usize)> = None;
    for (invoke, rev, i) in by_invoke {
        while k < by_complete.len() && by_complete[k].0 < invoke {
            let (_, r, j) = by_complete[k];
            if best.is_none_or(|(b, _)| r > b) {
                best = Some((r, j));
            }
            k += 1;
        }
        if let Some((prior, j)) = best {
            if rev <= prior {
                let (a, b) = (&h.ops[j], &h.ops[i]);
                out.fire(b.complete_ns, || format!(
                        "op#{} by {} got revision {rev} although op#{} by {} had completed with revision {prior} before it was invoked",
                        b.id, b.client, a.id, a.client
                    ));
            }
        }
    }
}

/// No client sees the revision go back. A serializable read is served from its server's own
/// state, which may lag: it is held only to what the client saw from that same server, so a
/// client that fails over to a lagging server may see an older revision there.
fn per_client_headers(h: &History, out: &mut Violations) {
    let mut seen: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    let mut seen_on: BTreeMap<(&str, &str), (i64, u64)> = BTreeMap::new();
    let mut ops: Vec<&crate::history::Operation> = h.ops.iter().collect();
    ops.sort_by_key(|o| (o.invoke_ns, o.id));
    for o in ops {
        let Some(rev) = o.outcome.header_revision() else {
            continue;
        };
        let serializable = matches!(
            o.request,
            Request::Get {
                serializable: true,
                ..
            } | Request::List {
                serializable: true,
                ..
            }
        );
        let prior = if serializable {
            seen_on.get(&(o.client.as_str(), o.server.as_str()))
        } else {
            seen.get(o.client.as_str())
        };
        if let Some(&(max, op)) = prior.filter(|(max, _)| rev < *max) {
            out.fire(o.complete_ns, || format!(
                    "client {} saw header revision {rev} from {} (op#{}) after it had seen {max} (op#{op}){}",
                    o.client, o.server, o.id,
                    if serializable { " from the same server" } else { "" }
                ));
            continue;
        }
        if seen.get(o.client.as_str()).is_none_or(|(m, _)| rev > *m) {
            seen.insert(&o.client, (rev, o.id));
        }
        let place = (o.client.as_str(), o.server.as_str());
        if seen_on.get(&place).is_none_or(|(m, _)| rev > *m) {
            seen_on.insert(place, (rev, o.id));
        }
    }
}

fn durability(h: &History, out: &mut Violations) {
    if h.params.final_read.is_none() {
        return;
    }
    let Some(read) = h.final_read() else {
        out.fire(h.params.end_ns, || {
            "the final audit read is missing: durability cannot be judged".into()
        });
        return;
    };
    let Outcome::Ok {
        header_revision,
        result: OpResult::Read { kvs, .. },
    } = &read.outcome
    else {
        out.fire(read.complete_ns, || {
            format!(
                "the final audit read failed ({:?}): no server answered after the quiet period",
                read.outcome
            )
        });
        return;
    };
    let final_state: BTreeMap<&str, i64> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.mod_revision))
        .collect();
    // Per key: the last acknowledged write, and any later write whose outcome is unknown.
    let mut last: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
    for (i, rev) in acked_writes(h) {
        let key = h.ops[i].request.write_key().expect("a write");
        if last.get(key).is_none_or(|(r, _)| rev > *r) {
            last.insert(key, (rev, i));
        }
        if rev > *header_revision {
            out.fire(read.complete_ns, || format!(
                    "the final read's revision {header_revision} is below acknowledged write revision {rev} (op#{})",
                    h.ops[i].id
                ));
        }
    }
    let unknown_after = |key: &str, invoked_after: u64| {
        h.ops.iter().any(|o| {
            o.request.write_key() == Some(key)
                && matches!(o.outcome, Outcome::Unknown { .. })
                && o.complete_ns >= invoked_after
        })
    };
    // Keys outside the audit's range (a workload's edge key at its exclusive end) say nothing.
    let audited = |key: &str| match &read.request {
        Request::List { start, end, .. } => key >= start.as_str() && key < end.as_str(),
        _ => true,
    };
    for (key, (rev, i)) in last {
        if !audited(key) {
            continue;
        }
        let op = &h.ops[i];
        // A later write with an unknown outcome may legitimately have changed the key.
        if unknown_after(key, op.invoke_ns) {
            continue;
        }
        let now = final_state.get(key).copied();
        let lost = match op.request {
            Request::Delete { .. } => now.is_some_and(|m| m <= rev),
            _ => now.is_none_or(|m| m < rev),
        };
        if lost {
            out.fire(read.complete_ns, || format!(
                    "acknowledged write lost: op#{} by {} wrote {key} at revision {rev}, but the final read shows {}",
                    op.id,
                    op.client,
                    match now {
                        Some(m) => format!("mod revision {m}"),
                        None => "no such key".into(),
                    }
                ));
        }
    }
}

/// Every revision is committed once: a store that restarts below a revision it had reached
/// hands that revision out again, for a different change.
fn revisions_committed_once(h: &History, out: &mut Violations) {
    let mut seen: BTreeMap<i64, (&str, bool, &str)> = BTreeMap::new();
    for (at, node, e) in h.store_events() {
        let StoreEvent::DbInsert {
            id, key, deleted, ..
        } = e
        else {
            continue;
        };
        match seen.get(id) {
            Some((k, d, first_node)) if (*k, *d) != (key.as_str(), *deleted) => {
                out.fire(at, || format!(
                        "revision {id} was committed twice: {} {k} on {first_node}, then {} {key} on {node}",
                        if *d { "delete of" } else { "write of" },
                        if *deleted { "delete of" } else { "write of" },
                    ));
            }
            Some(_) => {}
            None => {
                seen.insert(*id, (key, *deleted, node));
            }
        }
    }
}

/// Every restart keeps what was committed, judged at each one rather than by the final read: a
/// database reopens at or above the highest revision and the compact revision it had committed,
/// and a kine server starts from nothing the database had not committed.
fn restarts_keep_commits(h: &History, out: &mut Violations) {
    let (mut highest, mut stored) = (0, 0);
    for (at, node, e) in h.store_events() {
        match e {
            StoreEvent::DbInsert { id, .. } => highest = highest.max(*id),
            StoreEvent::DbCompact {
                committed: true,
                stored_after,
                ..
            } => stored = stored.max(*stored_after),
            StoreEvent::DbStarted {
                current_revision: current,
                compact_revision: compact,
                ..
            } if *current < highest || *compact < stored => {
                out.fire(at, || format!(
                    "the database on {node} reopened at revision {current} with compact revision {compact}, but had committed revision {highest} and compact revision {stored}: committed data was lost"
                ));
            }
            StoreEvent::ServerStarted {
                current_revision: current,
                compact_revision: compact,
            } if *current > highest || *compact > stored => {
                out.fire(at, || format!(
                    "{node} started at revision {current} with compact revision {compact}, but the database had committed only revision {highest} and compact revision {stored}"
                ));
            }
            _ => {}
        }
    }
}

fn compact_revision_bounds(h: &History, out: &mut Violations) {
    let db = DbTimeline::of(h);
    let mut prev: Option<i64> = None;
    for (at, node, e) in h.store_events() {
        let StoreEvent::DbCompact {
            committed: true,
            stored_before,
            stored_after,
            ..
        } = e
        else {
            continue;
        };
        if stored_after < stored_before || prev.is_some_and(|p| *stored_before != p) {
            out.fire(at, || format!(
                    "the stored compact revision moved from {} to {stored_after} on {node} (it had been {}): it must never go back",
                    stored_before,
                    prev.unwrap_or(0)
                ));
        }
        let current = db.current_at(at);
        let limit = current - h.params.compact_min_retain;
        if *stored_after > limit {
            out.fire(at, || format!(
                    "compacted to {stored_after} at {} while the current revision was {current}: more than current - min_retain ({limit})",
                    secs(at)
                ));
        }
        prev = Some(*stored_after);
    }
}

impl Checker for RevisionMonotonic {
    fn name(&self) -> &'static str {
        "revision-monotonic"
    }

    fn meaning(&self) -> &'static str {
        "write revisions unique and in real-time order, no client sees the revision go back, acknowledged writes survive, etcd members restart with all they fsynced and never halt, a kine database reopens with all it committed, compact revision only rises and keeps min-retain"
    }

    fn check(&self, h: &History) -> CheckReport {
        let mut out = Violations::new();
        unique_and_real_time_ordered(h, &mut out);
        revisions_committed_once(h, &mut out);
        per_client_headers(h, &mut out);
        durability(h, &mut out);
        let member_restarts = super::member_durability::check(h, &mut out);
        compact_revision_bounds(h, &mut out);
        restarts_keep_commits(h, &mut out);
        let writes = acked_writes(h).len() as u64;
        let reads = h
            .ops
            .iter()
            .filter(|o| !o.request.is_write() && o.outcome.header_revision().is_some())
            .count() as u64;
        let commits = h
            .store_events()
            .filter(|(_, _, e)| matches!(e, StoreEvent::DbInsert { .. }))
            .count() as u64;
        let mut judged = vec![
            ("acknowledged writes", writes),
            ("reads", reads),
            ("commits", commits),
        ];
        if member_restarts > 0 {
            judged.push(("member restarts", member_restarts));
        }
        CheckReport::judged(
            self.name(),
            out,
            judged,
            "no client operation completed and nothing was committed",
        )
        .with_unjudged(
            if h.params.live { LIVE_UNJUDGED } else { &[] }
                .iter()
                .copied(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;

    fn check(h: &History) -> CheckReport {
        RevisionMonotonic.check(h)
    }

    fn commit(h: &mut History, at_s: f64, node: &str, id: i64, key: &str, deleted: bool) {
        store(
            h,
            at_s,
            node,
            StoreEvent::DbInsert {
                id,
                key: key.into(),
                created: !deleted,
                deleted,
                create_revision: id,
                prev_revision: 0,
            },
        );
    }

    #[test]
    fn a_revision_handed_out_twice_fires_and_echoes_do_not() {
        let mut h = history();
        commit(&mut h, 1.0, "server-1", 4, "/a", true);
        commit(&mut h, 1.1, "server-2", 4, "/a", true);
        assert!(check(&h).passed(), "{:?}", check(&h).first());
        // The member restarted below revision 4 and gave it to another change.
        commit(&mut h, 9.0, "server-1", 4, "/b", false);
        let r = check(&h);
        assert_eq!(r.total, 1);
        let m = &r.first().unwrap().message;
        assert!(m.contains("revision 4 was committed twice: delete of /a on server-1, then write of /b on server-1"), "{m}");
    }

    #[test]
    fn a_live_history_without_store_events_is_judged_from_clients_and_names_the_rest() {
        // Acknowledged writes and an audit, and no commit known: nothing is owed to the log.
        let mut h = history();
        h.params.live = true;
        h.params.topology = "etcd".into();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        op(&mut h, "c2", 1.2, 1.3, update("/a", 2), write_ok(3));
        op(&mut h, "c1", 1.4, 1.5, delete("/a", 3), write_ok(4));
        op(&mut h, "c2", 1.6, 1.7, create("/b"), write_ok(5));
        let fr = op(
            &mut h,
            "audit",
            9.0,
            9.1,
            list_all(),
            read_ok(5, vec![("/b", 5)]),
        );
        h.params.final_read = Some(fr);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        assert!(r.judged.contains(&("commits", 0)), "{:?}", r.judged);
        assert_eq!(r.unjudged.len(), LIVE_UNJUDGED.len());
        assert!(r.unjudged[0].starts_with("every revision committed once"));
        // What clients saw is still judged: a lost acknowledged write fires.
        h.ops[fr as usize].outcome = read_ok(5, vec![]);
        assert_fires(&check(&h), "acknowledged write lost: op#3");
        // The simulator's report names nothing unjudged.
        h.params.live = false;
        assert!(check(&h).unjudged.is_empty());
    }

    #[test]
    fn an_ordered_history_passes() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        op(&mut h, "c2", 1.2, 1.3, update("/a", 2), write_ok(3));
        op(
            &mut h,
            "c1",
            1.4,
            1.5,
            list_all(),
            read_ok(3, vec![("/a", 3)]),
        );
        let fr = op(
            &mut h,
            "audit",
            9.0,
            9.1,
            list_all(),
            read_ok(3, vec![("/a", 3)]),
        );
        h.params.final_read = Some(fr);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_shared_revision_fires() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        op(&mut h, "c2", 1.0, 1.2, create("/b"), write_ok(2));
        let r = check(&h);
        assert_fires(&r, "share revision 2");
    }

    #[test]
    fn a_revision_older_than_a_completed_write_fires() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(5));
        op(&mut h, "c2", 2.0, 2.1, create("/b"), write_ok(4));
        let r = check(&h);
        let m = &r.first().unwrap().message;
        assert!(m.contains("revision 4") && m.contains("revision 5"), "{m}");
    }

    #[test]
    fn a_client_seeing_the_revision_go_back_fires() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, list_all(), read_ok(9, vec![]));
        op(&mut h, "c1", 2.0, 2.1, list_all(), read_ok(7, vec![]));
        let r = check(&h);
        assert_fires(&r, "saw header revision 7");
    }

    #[test]
    fn a_serializable_read_after_failing_over_may_be_older_but_not_on_one_server() {
        let serializable = || Request::Get {
            key: "/a".into(),
            revision: 0,
            serializable: true,
        };
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, list_all(), read_ok(9, vec![]));
        // Failed over to a lagging server: older there, which a serializable read may be.
        let i = op(&mut h, "c1", 2.0, 2.1, serializable(), read_ok(7, vec![]));
        h.ops[i as usize].server = "kine-2".into();
        assert!(check(&h).passed(), "{:?}", check(&h).first());
        // The same server going back is still a violation, serializable or not.
        let i = op(&mut h, "c1", 3.0, 3.1, serializable(), read_ok(6, vec![]));
        h.ops[i as usize].server = "kine-2".into();
        assert_fires(&check(&h), "saw header revision 6 from kine-2");
        // And a linearizable read may never go back.
        let mut lin = history();
        op(&mut lin, "c1", 1.0, 1.1, list_all(), read_ok(9, vec![]));
        let i = op(&mut lin, "c1", 2.0, 2.1, list_all(), read_ok(7, vec![]));
        lin.ops[i as usize].server = "kine-2".into();
        assert_fires(&check(&lin), "saw header revision 7");
    }

    #[test]
    fn a_lost_acknowledged_write_fires_unless_a_later_write_is_unknown() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        let fr = op(&mut h, "audit", 9.0, 9.1, list_all(), read_ok(3, vec![]));
        h.params.final_read = Some(fr);
        let r = check(&h);
        assert_fires(&r, "acknowledged write lost");

        let mut h2 = h.clone();
        op(
            &mut h2,
            "c2",
            2.0,
            4.0,
            delete("/a", 2),
            Outcome::Unknown {
                error: "deadline".into(),
            },
        );
        assert!(check(&h2).passed());
    }

    /// A key at the audit's exclusive end is not in its answer: its absence loses nothing, while
    /// a key just inside the range is still judged.
    #[test]
    fn a_write_outside_the_audits_range_is_not_judged_by_it() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("0"), write_ok(2));
        let fr = op(&mut h, "audit", 9.0, 9.1, list_all(), read_ok(3, vec![]));
        h.params.final_read = Some(fr);
        assert!(check(&h).passed());
        op(&mut h, "c1", 2.0, 2.1, create("/\0"), write_ok(3));
        assert_fires(&check(&h), "acknowledged write lost: op#2 by c1 wrote /\0");
    }

    #[test]
    fn a_resurrected_delete_fires() {
        let mut h = history();
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        op(&mut h, "c1", 2.0, 2.1, delete("/a", 2), write_ok(3));
        let fr = op(
            &mut h,
            "audit",
            9.0,
            9.1,
            list_all(),
            read_ok(3, vec![("/a", 2)]),
        );
        h.params.final_read = Some(fr);
        assert!(!check(&h).passed());
    }

    fn compact(h: &mut History, at: f64, before: i64, after: i64) {
        db_compact(h, at, (before, after), true, (0, 0));
    }

    #[test]
    fn compaction_within_min_retain_passes_and_beyond_it_fires() {
        let mut h = history();
        inserts(&mut h, 1.0, 1, 50);
        compact(&mut h, 2.0, 0, 40);
        assert!(check(&h).passed());
        compact(&mut h, 3.0, 40, 45);
        let r = check(&h);
        assert_fires(&r, "min_retain");
    }

    #[test]
    fn a_compact_revision_going_back_fires() {
        let mut h = history();
        inserts(&mut h, 1.0, 1, 100);
        compact(&mut h, 2.0, 0, 40);
        compact(&mut h, 3.0, 30, 35);
        let r = check(&h);
        assert_fires(&r, "never go back");
    }

    #[test]
    fn a_database_that_reopens_below_its_commits_fires() {
        let opened = |current, compact| StoreEvent::DbStarted {
            current_revision: current,
            compact_revision: compact,
            rows: 0,
        };
        let mut h = history();
        store(&mut h, 0.0, "db", opened(0, 0));
        inserts(&mut h, 1.0, 1, 50);
        db_compact(&mut h, 2.0, (0, 30), true, (50, 20));
        store(&mut h, 3.0, "db", opened(50, 30));
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        store(&mut h, 4.0, "db", opened(48, 30));
        assert_fires(
            &check(&h),
            "had committed revision 50 and compact revision 30",
        );
        let mut h2 = history();
        inserts(&mut h2, 1.0, 1, 50);
        db_compact(&mut h2, 2.0, (0, 30), true, (50, 20));
        store(&mut h2, 4.0, "db", opened(50, 20));
        assert_fires(&check(&h2), "committed data was lost");
    }

    #[test]
    fn a_server_that_starts_ahead_of_its_database_fires() {
        let started = |current, compact| StoreEvent::ServerStarted {
            current_revision: current,
            compact_revision: compact,
        };
        let mut h = history();
        inserts(&mut h, 1.0, 1, 50);
        store(&mut h, 2.0, "kine-1", started(50, 0));
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        store(&mut h, 3.0, "kine-1", started(60, 0));
        assert_fires(&check(&h), "kine-1 started at revision 60");
    }
}

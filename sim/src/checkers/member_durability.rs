//! The member half of revision-monotonic's durability: every etcd member restarts with all the
//! raft state it had fsynced, and raft-rs never halts one.
//!
//! A member reports what it counts on after every fsync (the history keeps the report in force
//! when its node was killed) and what its disk held at each start. Less at a start than before
//! the kill is lost state, whatever raft-rs does with it next; a raft-rs halt is reported with
//! what the member had lost, or as unexplained when it had lost nothing. Reads only the history.

use super::{secs, Violations};
use crate::history::{History, SimNanos};
use std::collections::BTreeMap;
use store::observe::{RaftDurable, StoreEvent};

/// One start of a member held against what it had fsynced before.
struct Start {
    at: SimNanos,
    member_id: u64,
    recovered: RaftDurable,
    /// What the member had fsynced before its node was killed, and when it was killed.
    before: Option<(SimNanos, RaftDurable)>,
    /// The first raft-rs halt after this start (before the next): (time, last index, reason).
    halt: Option<(SimNanos, u64, String)>,
}

/// What `now` lacks of `before`, in words; empty when nothing was lost.
fn losses(before: &RaftDurable, now: &RaftDurable) -> Vec<String> {
    let mut out = Vec::new();
    if now.last_index < before.last_index {
        out.push(format!(
            "WAL entries {}..{} were lost",
            now.last_index + 1,
            before.last_index
        ));
    } else if now.last_index == before.last_index && now.last_term != before.last_term {
        out.push(format!(
            "the entry at index {} changed term from {} to {}",
            now.last_index, before.last_term, now.last_term
        ));
    }
    if now.term < before.term {
        out.push(format!(
            "its hard state's term went back from {} to {}",
            before.term, now.term
        ));
    } else if now.term == before.term && before.vote != 0 && now.vote != before.vote {
        out.push(format!(
            "it forgot its vote for member {} in term {}",
            before.vote, before.term
        ));
    }
    if now.commit < before.commit {
        out.push(format!(
            "its commit index went back from {} to {}",
            before.commit, now.commit
        ));
    }
    if now.snapshot_index < before.snapshot_index {
        out.push(format!(
            "its snapshot went back from index {} to {}",
            before.snapshot_index, now.snapshot_index
        ));
    }
    out
}

fn starts(h: &History) -> BTreeMap<&str, Vec<Start>> {
    let mut by_node: BTreeMap<&str, Vec<Start>> = BTreeMap::new();
    // The state each node's member counted on last: at its last start or its last kill.
    let mut baseline: BTreeMap<&str, (SimNanos, RaftDurable)> = BTreeMap::new();
    for (at, node, e) in h.store_events() {
        match e {
            StoreEvent::MemberPersisted { durable } => {
                baseline.insert(node, (at, *durable));
            }
            StoreEvent::MemberStarted {
                member_id,
                recovered,
                ..
            } => {
                let before = baseline.insert(node, (at, *recovered));
                by_node.entry(node).or_default().push(Start {
                    at,
                    member_id: *member_id,
                    recovered: *recovered,
                    before,
                    halt: None,
                });
            }
            StoreEvent::MemberHalted {
                last_index, reason, ..
            } => {
                if let Some(start) = by_node.get_mut(node).and_then(|s| s.last_mut()) {
                    start
                        .halt
                        .get_or_insert_with(|| (at, *last_index, reason.clone()));
                }
            }
            _ => {}
        }
    }
    by_node
}

/// Fires for every start that found less than the member had fsynced and for every halt;
/// returns how many restarts it judged.
pub fn check(h: &History, out: &mut Violations) -> u64 {
    let mut judged = 0;
    for (node, starts) in starts(h) {
        for s in starts {
            let id = s.member_id;
            let lost = s
                .before
                .map(|(_, before)| losses(&before, &s.recovered))
                .unwrap_or_default();
            judged += s.before.is_some() as u64;
            let halted = |halt: &(SimNanos, u64, String)| {
                format!(
                    "raft-rs halted it at {} (last index {}): {}; it serves nothing until restarted, and a restart from the same disk fails again",
                    secs(halt.0),
                    halt.1,
                    halt.2
                )
            };
            if let (false, Some((killed, before))) = (lost.is_empty(), s.before) {
                let r = s.recovered;
                out.fire(s.at, || {
                    let mut m = format!(
                        "member {node} (id {id}) restarted at {} with last index {} (term {}), but had fsynced entries through {} (term {}) before it was killed at {}: {}",
                        secs(s.at),
                        r.last_index,
                        r.last_term,
                        before.last_index,
                        before.last_term,
                        secs(killed),
                        lost.join("; ")
                    );
                    if let Some(halt) = &s.halt {
                        m += &format!("; {}", halted(halt));
                    }
                    m
                });
            } else if let Some(halt) = &s.halt {
                out.fire(halt.0, || {
                    format!(
                        "member {node} (id {id}) restarted at {} with everything it had fsynced (last index {}), yet {}: not explained by lost state",
                        secs(s.at),
                        s.recovered.last_index,
                        halted(halt)
                    )
                });
            }
        }
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::{history, store};

    fn durable(last_index: u64, term: u64, commit: u64) -> RaftDurable {
        RaftDurable {
            last_index,
            last_term: term,
            term,
            vote: 1,
            commit,
            snapshot_index: 1,
        }
    }

    fn started(h: &mut History, at_s: f64, recovered: RaftDurable) {
        let event = StoreEvent::MemberStarted {
            member_id: 2,
            applied_index: recovered.commit,
            current_revision: 10,
            compact_revision: 0,
            scheduled_compact_revision: 0,
            recovered,
        };
        store(h, at_s, "server-2", event);
    }

    fn killed_with(h: &mut History, at_s: f64, durable: RaftDurable) {
        store(h, at_s, "server-2", StoreEvent::MemberPersisted { durable });
    }

    fn run(h: &History) -> Vec<String> {
        let mut out = Violations::new();
        check(h, &mut out);
        out.kept().iter().map(|v| v.message.clone()).collect()
    }

    #[test]
    fn a_restart_with_everything_it_fsynced_passes() {
        let mut h = history();
        started(&mut h, 1.0, durable(1, 1, 0));
        killed_with(&mut h, 50.0, durable(60, 3, 58));
        started(&mut h, 55.0, durable(60, 3, 58));
        killed_with(&mut h, 90.0, durable(80, 4, 80));
        started(&mut h, 95.0, durable(80, 4, 80));
        let mut out = Violations::new();
        assert_eq!(check(&h, &mut out), 2);
        assert!(out.is_empty(), "{:?}", out.kept());
    }

    #[test]
    fn lost_wal_entries_and_the_halt_they_cause_fire_as_one_explanation() {
        let mut h = history();
        started(&mut h, 1.0, durable(1, 1, 0));
        killed_with(&mut h, 50.0, durable(60, 3, 58));
        started(&mut h, 55.0, durable(52, 3, 50));
        store(
            &mut h,
            55.4,
            "server-2",
            StoreEvent::MemberHalted {
                member_id: 2,
                last_index: 52,
                reason: "to_commit 58 is out of range [last_index 52], raft_id: 2".into(),
            },
        );
        let found = run(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0],
            "member server-2 (id 2) restarted at 55.000s with last index 52 (term 3), but had fsynced entries through 60 (term 3) before it was killed at 50.000s: WAL entries 53..60 were lost; its commit index went back from 58 to 50; raft-rs halted it at 55.400s (last index 52): to_commit 58 is out of range [last_index 52], raft_id: 2; it serves nothing until restarted, and a restart from the same disk fails again"
        );
    }

    #[test]
    fn a_forgotten_vote_or_term_fires_without_any_halt() {
        let mut h = history();
        started(&mut h, 1.0, durable(1, 1, 0));
        killed_with(&mut h, 50.0, durable(60, 3, 58));
        let mut forgot = durable(60, 3, 58);
        forgot.vote = 0;
        started(&mut h, 55.0, forgot);
        let found = run(&h);
        assert!(
            found[0].ends_with("it forgot its vote for member 1 in term 3"),
            "{found:?}"
        );
        killed_with(&mut h, 70.0, durable(70, 5, 60));
        started(&mut h, 75.0, durable(70, 5, 60));
        let mut h2 = h.clone();
        started(&mut h2, 80.0, durable(70, 4, 60));
        assert!(
            run(&h2).iter().any(
                |m| m.contains("its hard state's term went back from 5 to 4")
                    && m.contains("the entry at index 70 changed term from 5 to 4")
            ),
            "{:?}",
            run(&h2)
        );
    }

    #[test]
    fn a_halt_without_lost_state_is_reported_as_unexplained() {
        let mut h = history();
        started(&mut h, 1.0, durable(1, 1, 0));
        store(
            &mut h,
            9.0,
            "server-2",
            StoreEvent::MemberHalted {
                member_id: 2,
                last_index: 40,
                reason: "entry 35 conflict with committed entry 38".into(),
            },
        );
        let found = run(&h);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("member server-2 (id 2) restarted at 1.000s with everything it had fsynced (last index 1), yet raft-rs halted it at 9.000s")
                && found[0].ends_with("not explained by lost state"),
            "{found:?}"
        );
    }
}

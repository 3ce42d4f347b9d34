//! Checkers: each reads a recorded `History` and reports the properties it found broken.
//!
//! A checker never reaches into the cluster and never trusts the store's own opinion of what is
//! correct: it recomputes what must hold from what clients saw and what the database committed.
//! Violations carry the simulated time of the bad event and an explanation in domain terms.

mod compactor_continuity;
mod etcd_only_rejoin;
mod list_continuation;
mod rejoin_liveness;
mod revision_monotonic;
mod watch;
mod watchlist;

use crate::history::{History, SimNanos};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub use compactor_continuity::CompactorContinuity;
pub use etcd_only_rejoin::EtcdOnlyRejoin;
pub use list_continuation::ListContinuation;
pub use revision_monotonic::RevisionMonotonic;
pub use watch::WatchChecker;
pub use watchlist::WatchList;

/// Reports keep the earliest violations only, so a broken run stays readable.
const MAX_VIOLATIONS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub at_ns: SimNanos,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub check: &'static str,
    /// Sorted by time; empty when the property held.
    pub violations: Vec<Violation>,
    /// How many violations were found in all, before truncation.
    pub total: usize,
}

impl CheckReport {
    fn new(check: &'static str, mut violations: Vec<Violation>) -> Self {
        violations.sort_by_key(|v| v.at_ns);
        let total = violations.len();
        violations.truncate(MAX_VIOLATIONS);
        CheckReport {
            check,
            violations,
            total,
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn first(&self) -> Option<&Violation> {
        self.violations.first()
    }
}

pub trait Checker {
    fn name(&self) -> &'static str;
    fn meaning(&self) -> &'static str;
    fn check(&self, history: &History) -> CheckReport;
}

pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(RevisionMonotonic),
        Box::new(CompactorContinuity),
        Box::new(ListContinuation),
        Box::new(WatchChecker),
        Box::new(WatchList),
        Box::new(EtcdOnlyRejoin),
    ]
}

/// Seconds with millisecond precision, for messages.
pub fn secs(ns: SimNanos) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// The database's commits in time order: the highest revision assigned so far and the stored
/// compact revision after each committed compaction. Shared by checkers that need "what was
/// current at time t".
pub struct DbTimeline {
    /// (time, highest id so far), one entry per insert.
    inserts: Vec<(SimNanos, i64)>,
    /// (time, stored compact revision after a committed compaction).
    compactions: Vec<(SimNanos, i64)>,
    /// etcd members: each member's own compact revision over time (a member applies a
    /// compaction when it applies that log entry, so lagging members compact later).
    member_compactions: BTreeMap<String, Vec<(SimNanos, i64)>>,
}

impl DbTimeline {
    pub fn of(history: &History) -> Self {
        let mut inserts = Vec::new();
        let mut compactions = Vec::new();
        let mut member_compactions: BTreeMap<String, Vec<(SimNanos, i64)>> = BTreeMap::new();
        let mut highest = 0;
        for (at, node, e) in history.store_events() {
            match e {
                StoreEvent::DbInsert { id, .. } => {
                    highest = highest.max(*id);
                    inserts.push((at, highest));
                }
                StoreEvent::DbCompact {
                    committed: true,
                    stored_after,
                    ..
                } => compactions.push((at, *stored_after)),
                StoreEvent::MemberCompaction { revision, phase } if phase == "scheduled" => {
                    let line = member_compactions.entry(node.to_string()).or_default();
                    // A member replaying its log re-applies old compactions: keep the maximum.
                    let top = line.last().map(|(_, r)| *r).unwrap_or(0).max(*revision);
                    line.push((at, top));
                }
                _ => {}
            }
        }
        DbTimeline {
            inserts,
            compactions,
            member_compactions,
        }
    }

    /// The compact revision `server` answered by at `at`: its own, for an etcd member, else the
    /// database's.
    pub fn compact_at_on(&self, at: SimNanos, server: &str) -> i64 {
        match self.member_compactions.get(server) {
            Some(line) => {
                let i = line.partition_point(|(t, _)| *t <= at);
                i.checked_sub(1).map(|i| line[i].1).unwrap_or(0)
            }
            None => self.compact_at(at),
        }
    }

    /// The highest revision committed at or before `at`.
    pub fn current_at(&self, at: SimNanos) -> i64 {
        let i = self.inserts.partition_point(|(t, _)| *t <= at);
        if i == 0 {
            0
        } else {
            self.inserts[i - 1].1
        }
    }

    /// The stored compact revision at or before `at`.
    pub fn compact_at(&self, at: SimNanos) -> i64 {
        let i = self.compactions.partition_point(|(t, _)| *t <= at);
        if i == 0 {
            0
        } else {
            self.compactions[i - 1].1
        }
    }

    /// Every value the stored compact revision took at or before `at` (0 included).
    pub fn compact_values_until(&self, at: SimNanos) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(0).chain(
            self.compactions
                .iter()
                .take_while(move |(t, _)| *t <= at)
                .map(|(_, r)| *r),
        )
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small builders for hand-made histories.
    use crate::history::*;
    use store::observe::StoreEvent;

    pub const S: u64 = 1_000_000_000;

    /// Asserts that `r` fired and that its first violation mentions `needle`.
    pub fn assert_fires(r: &crate::checkers::CheckReport, needle: &str) {
        let first = r
            .first()
            .unwrap_or_else(|| panic!("{} did not fire", r.check));
        assert!(
            first.message.contains(needle),
            "{} fired with: {}",
            r.check,
            first.message
        );
    }

    /// The database's record of one compaction transaction.
    pub fn db_compact(
        h: &mut History,
        at_s: f64,
        stored: (i64, i64),
        committed: bool,
        rows: (i64, i64),
    ) {
        store(
            h,
            at_s,
            "db",
            StoreEvent::DbCompact {
                from: stored.0,
                to: stored.1,
                committed,
                deleted_rows: rows.0 - rows.1,
                rows_before: rows.0,
                rows_after: rows.1,
                stored_before: stored.0,
                stored_after: if committed { stored.1 } else { stored.0 },
            },
        );
    }

    pub fn history() -> History {
        History {
            params: HistoryParams {
                servers: vec!["kine-1".into()],
                compact_interval_ms: 30_000,
                compact_interval_jitter_pct: 0,
                compact_min_retain: 10,
                compact_batch_revisions: 100,
                compact_timeout_ms: 5_000,
                faults_stop_ns: 1_000 * S,
                end_ns: 1_000 * S,
                final_read: None,
                ..Default::default()
            },
            ops: vec![],
            events: vec![],
            watches: vec![],
            lists: vec![],
            api_watches: vec![],
        }
    }

    pub fn store(h: &mut History, at_s: f64, node: &str, event: StoreEvent) {
        h.events.push(WorldEvent {
            at_ns: (at_s * 1e9) as u64,
            node: node.into(),
            kind: EventKind::Store { event },
        });
    }

    /// Inserts rows `from..=to` at `at_s`, one key each.
    pub fn inserts(h: &mut History, at_s: f64, from: i64, to: i64) {
        for id in from..=to {
            store(
                h,
                at_s,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: format!("/k{id}"),
                    created: true,
                    deleted: false,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
    }

    pub fn op(
        h: &mut History,
        client: &str,
        invoke_s: f64,
        complete_s: f64,
        request: Request,
        outcome: Outcome,
    ) -> u64 {
        let id = h.ops.len() as u64;
        h.ops.push(Operation {
            id,
            client: client.into(),
            server: "kine-1".into(),
            invoke_ns: (invoke_s * 1e9) as u64,
            complete_ns: (complete_s * 1e9) as u64,
            request,
            outcome,
        });
        id
    }

    pub fn write_ok(rev: i64) -> Outcome {
        Outcome::Ok {
            header_revision: rev,
            result: OpResult::Write {
                succeeded: true,
                current: None,
            },
        }
    }

    pub fn read_ok(rev: i64, kvs: Vec<(&str, i64)>) -> Outcome {
        Outcome::Ok {
            header_revision: rev,
            result: OpResult::Read {
                count: kvs.len() as i64,
                more: false,
                kvs: kvs
                    .into_iter()
                    .map(|(k, m)| Kv {
                        key: k.into(),
                        create_revision: m,
                        mod_revision: m,
                        version: 1,
                        value: String::new(),
                    })
                    .collect(),
            },
        }
    }

    pub fn create(key: &str) -> Request {
        Request::Create {
            key: key.into(),
            value: "v".into(),
        }
    }

    pub fn update(key: &str, expected: i64) -> Request {
        Request::Update {
            key: key.into(),
            value: "v".into(),
            expected_mod_revision: expected,
        }
    }

    pub fn delete(key: &str, expected: i64) -> Request {
        Request::Delete {
            key: key.into(),
            expected_mod_revision: expected,
        }
    }

    pub fn list_all() -> Request {
        Request::List {
            start: "/".into(),
            end: "0".into(),
            limit: 0,
            revision: 0,
        }
    }
}

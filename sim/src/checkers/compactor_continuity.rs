//! compactor-continuity: compaction keeps happening, from where it got to, after any failure.
//!
//! Per server incarnation it follows the compactor's ticks and batches and compares them with
//! what the database committed: committed progress is never forgotten, no tick sits idle while
//! there is work, a resync adopts a value the database really stored, a failed batch leaves no
//! partial delete, and after the faults stop compaction reaches its target within two intervals.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::history::History;
use std::collections::BTreeMap;
use store::observe::{BatchOutcome, StoreEvent};

pub struct CompactorContinuity;

/// What the checker remembers about one server's current incarnation.
#[derive(Default)]
struct ServerState {
    /// Highest revision this incarnation's own committed batches reached.
    committed: i64,
    /// Highest stored revision this incarnation adopted through a resync.
    adopted: i64,
    /// When the previous tick (or the compactor's start) happened.
    previous_at: Option<u64>,
    /// The open tick: (tick number, start time, in-memory compact revision, batches seen).
    open: Option<(u64, u64, i64, u32)>,
    /// Time of the most recent failed batch, to say so in messages.
    last_failure: Option<u64>,
}

fn tick_checks(h: &History, db: &DbTimeline, out: &mut Violations) {
    let min_retain = h.params.compact_min_retain;
    let mut servers: BTreeMap<&str, ServerState> = BTreeMap::new();
    for (at, node, e) in h.store_events() {
        match e {
            StoreEvent::CompactorStarted { .. } => {
                servers.insert(
                    node,
                    ServerState {
                        previous_at: Some(at),
                        ..Default::default()
                    },
                );
            }
            StoreEvent::CompactTickStart {
                tick,
                compact_revision,
                ..
            } => {
                let s = servers.entry(node).or_default();
                let known = s.committed.max(s.adopted);
                if *compact_revision < known {
                    out.fire(at, || format!(
                            "{node} started tick {tick} with compact revision {compact_revision} although {} had reached {known}: committed progress was forgotten and the interval will be spent resyncing",
                            if s.committed >= s.adopted { "its own committed batches" } else { "a resync" }
                        ));
                }
                s.open = Some((*tick, at, *compact_revision, 0));
            }
            StoreEvent::CompactBatch { to, outcome, .. } => {
                let s = servers.entry(node).or_default();
                if let Some(open) = &mut s.open {
                    open.3 += 1;
                }
                match outcome {
                    BatchOutcome::Committed { .. } => s.committed = s.committed.max(*to),
                    BatchOutcome::Resync {
                        stored_compact_revision,
                        ..
                    } => {
                        if !db
                            .compact_values_until(at)
                            .any(|v| v == *stored_compact_revision)
                        {
                            out.fire(at, || format!(
                                    "{node} resynced to compact revision {stored_compact_revision}, a value the database never stored (stored now: {})",
                                    db.compact_at(at)
                                ));
                        }
                        s.adopted = s.adopted.max(*stored_compact_revision);
                    }
                    BatchOutcome::AlreadyCompacted {
                        stored_compact_revision,
                        ..
                    } => s.adopted = s.adopted.max(*stored_compact_revision),
                    BatchOutcome::Failed { .. } => s.last_failure = Some(at),
                }
            }
            StoreEvent::CompactTickEnd { .. } => {
                let s = servers.entry(node).or_default();
                let Some((tick, started, compact, batches)) = s.open.take() else {
                    continue;
                };
                let seen_at = s.previous_at.unwrap_or(started);
                s.previous_at = Some(started);
                if batches > 0 {
                    continue;
                }
                // The target should be what was current at the previous tick, clamped by
                // min-retain against what is current now.
                let expected = db
                    .current_at(seen_at)
                    .min(db.current_at(started) - min_retain);
                if compact < expected {
                    let after = match s.last_failure {
                        Some(f) => format!(" (last failed batch at {})", secs(f)),
                        None => String::new(),
                    };
                    out.fire(started, || format!(
                            "{node} tick {tick} attempted no batch with compact revision {compact} although revisions up to {expected} were due{after}: compaction has stalled"
                        ));
                }
            }
            _ => {}
        }
    }
}

fn liveness(h: &History, db: &DbTimeline, out: &mut Violations) {
    let p = &h.params;
    let q = p.faults_stop_ns;
    let period_ns =
        p.compact_interval_ms as f64 * 1e6 * (1.0 + p.compact_interval_jitter_pct as f64 / 100.0);
    let deadline = q + (2.0 * period_ns) as u64 + p.compact_timeout_ms * 1_000_000 + 5_000_000_000;
    if p.compact_interval_ms == 0 || p.end_ns < deadline {
        return;
    }
    let current = db.current_at(q);
    let bound = current - p.compact_min_retain;
    let reached = db.compact_at(deadline);
    if bound > 0 && reached < bound {
        out.fire(deadline, || format!(
                "faults stopped at {} with current revision {current}; by {} (two compaction intervals later) the stored compact revision was {reached}, below the {bound} it should have reached",
                secs(q),
                secs(deadline)
            ));
    }
}

fn transactions(h: &History, out: &mut Violations) {
    for (at, node, e) in h.store_events() {
        let StoreEvent::DbCompact {
            to,
            committed,
            deleted_rows,
            rows_before,
            rows_after,
            stored_before,
            stored_after,
            ..
        } = e
        else {
            continue;
        };
        let bad = if *committed {
            (rows_before - rows_after != *deleted_rows || stored_after != to).then(|| {
                format!(
                    "a committed compaction to {to} on {node} removed {} rows but reported {deleted_rows} deleted, and stored {stored_after}",
                    rows_before - rows_after
                )
            })
        } else {
            (rows_after != rows_before || stored_after != stored_before).then(|| {
                format!(
                    "a failed compaction to {to} on {node} left {} rows deleted and the stored compact revision at {stored_after} (was {stored_before}): partial work survived the rollback",
                    rows_before - rows_after
                )
            })
        };
        if let Some(message) = bad {
            out.fire(at, || message);
        }
    }
}

impl Checker for CompactorContinuity {
    fn name(&self) -> &'static str {
        "compactor-continuity"
    }

    fn meaning(&self) -> &'static str {
        "after any failed batch the compactor keeps compacting from where it got to, resyncs to real stored values, rolls back whole, and catches up within two intervals once faults stop"
    }

    fn check(&self, h: &History) -> CheckReport {
        let db = DbTimeline::of(h);
        let mut out = Violations::new();
        tick_checks(h, &db, &mut out);
        liveness(h, &db, &mut out);
        transactions(h, &mut out);
        let (mut ticks, mut batches) = (0, 0);
        for (_, _, e) in h.store_events() {
            match e {
                StoreEvent::CompactTickStart { .. } => ticks += 1,
                StoreEvent::DbCompact { .. } => batches += 1,
                _ => {}
            }
        }
        CheckReport::judged(
            self.name(),
            out,
            vec![("ticks", ticks), ("batches", batches)],
            "no kine compactor tick ran (etcd topology, or the compactor is disabled)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;

    fn tick(h: &mut History, at: f64, n: u64, compact: i64, target: i64) {
        store(
            h,
            at,
            "kine-1",
            StoreEvent::CompactTickStart {
                tick: n,
                compact_revision: compact,
                target_revision: target,
            },
        );
    }
    fn end(h: &mut History, at: f64, n: u64, compact: i64, target: i64) {
        store(
            h,
            at,
            "kine-1",
            StoreEvent::CompactTickEnd {
                tick: n,
                compact_revision: compact,
                next_target_revision: target,
                batches_committed: 0,
            },
        );
    }
    fn batch(h: &mut History, at: f64, from: i64, to: i64, outcome: BatchOutcome) {
        store(
            h,
            at,
            "kine-1",
            StoreEvent::CompactBatch { from, to, outcome },
        );
    }
    fn committed(h: &mut History, at: f64, from: i64, to: i64) {
        batch(
            h,
            at,
            from,
            to,
            BatchOutcome::Committed {
                current_revision: 1000,
            },
        );
        db_compact(h, at, (from, to), true, (10, 10));
    }
    fn failed(h: &mut History, at: f64, from: i64, to: i64) {
        batch(
            h,
            at,
            from,
            to,
            BatchOutcome::Failed {
                error: "database is locked".into(),
            },
        );
    }
    fn started(h: &mut History, at: f64) {
        store(
            h,
            at,
            "kine-1",
            StoreEvent::CompactorStarted {
                compact_revision: 0,
                target_revision: 300,
            },
        );
    }
    fn check(h: &History) -> CheckReport {
        CompactorContinuity.check(h)
    }

    /// Tick 1 commits 0..=100 and 100..=200, then fails; tick 2 starts from `tick2_compact`.
    fn after_a_mid_walk_failure(tick2_compact: i64) -> History {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        committed(&mut h, 30.0, 0, 100);
        committed(&mut h, 30.0, 100, 200);
        failed(&mut h, 30.0, 200, 300);
        end(&mut h, 30.0, 1, tick2_compact, 300);
        tick(&mut h, 60.0, 2, tick2_compact, 300);
        committed(&mut h, 60.0, 200, 290);
        end(&mut h, 60.0, 2, 290, 300);
        h
    }

    #[test]
    fn keeping_committed_progress_passes() {
        let r = check(&after_a_mid_walk_failure(200));
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn forgetting_committed_progress_fires_as_kine_357_does() {
        let r = check(&after_a_mid_walk_failure(0));
        let m = &r.first().unwrap().message;
        assert!(
            m.contains("tick 2") && m.contains("reached 200") && m.contains("forgotten"),
            "{m}"
        );
    }

    #[test]
    fn idle_ticks_while_revisions_grow_fire_as_kine_414_does() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        failed(&mut h, 30.0, 0, 100);
        end(&mut h, 30.0, 1, 0, 0);
        inserts(&mut h, 45.0, 301, 600);
        tick(&mut h, 60.0, 2, 0, 0);
        end(&mut h, 60.0, 2, 0, 0);
        let r = check(&h);
        let m = &r.first().unwrap().message;
        assert!(
            m.contains("tick 2 attempted no batch") && m.contains("stalled"),
            "{m}"
        );
    }

    #[test]
    fn an_idle_tick_with_nothing_due_passes() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 5);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 0);
        end(&mut h, 30.0, 1, 0, 0);
        assert!(check(&h).passed());
    }

    #[test]
    fn a_lost_reply_followed_by_a_resync_passes() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        // The batch committed in the database, but the server saw it fail.
        db_compact(&mut h, 30.0, (0, 100), true, (5, 5));
        failed(&mut h, 30.0, 0, 100);
        end(&mut h, 30.0, 1, 0, 300);
        tick(&mut h, 60.0, 2, 0, 300);
        batch(
            &mut h,
            60.0,
            0,
            100,
            BatchOutcome::Resync {
                stored_compact_revision: 100,
                current_revision: 300,
            },
        );
        end(&mut h, 60.0, 2, 100, 300);
        tick(&mut h, 90.0, 3, 100, 300);
        committed(&mut h, 90.0, 100, 290);
        end(&mut h, 90.0, 3, 290, 300);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_resync_to_an_invented_value_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        batch(
            &mut h,
            30.0,
            0,
            100,
            BatchOutcome::Resync {
                stored_compact_revision: 77,
                current_revision: 300,
            },
        );
        end(&mut h, 30.0, 1, 77, 300);
        assert_fires(&check(&h), "never stored");
    }

    #[test]
    fn not_catching_up_after_faults_stop_fires() {
        let mut h = history();
        h.params.faults_stop_ns = 100 * S;
        h.params.end_ns = 300 * S;
        inserts(&mut h, 50.0, 1, 500);
        committed(&mut h, 60.0, 0, 100);
        let r = check(&h);
        let m = &r.first().unwrap().message;
        assert!(m.contains("below the 490"), "{m}");
        committed(&mut h, 150.0, 100, 495);
        assert!(check(&h).passed());
    }

    #[test]
    fn a_partial_delete_that_survived_a_failed_batch_fires() {
        let mut h = history();
        db_compact(&mut h, 5.0, (0, 100), false, (200, 200));
        assert!(check(&h).passed(), "a rolled-back delete leaves every row");
        db_compact(&mut h, 6.0, (0, 100), false, (200, 160));
        assert_fires(&check(&h), "partial work");
    }
}

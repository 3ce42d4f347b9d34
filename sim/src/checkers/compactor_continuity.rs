//! compactor-continuity: compaction keeps happening, from where it got to, after any failure.
//!
//! Per server incarnation it follows the compactor's ticks and batches and compares them with
//! what the database committed: committed progress is never forgotten, no tick sits idle while
//! there is work, a resync adopts a value the database really stored, a failed batch leaves no
//! partial delete, and after the faults stop compaction reaches its target within two intervals.
//!
//! kine's rule is also judged at every step (`step_rules`), not only by where compaction ends
//! up: every batch, the first after a start, a resync or a failure included, compacts no higher
//! than the current revision the database answered it with minus min-retain, and no higher than
//! its tick's target; the revisions a batch reports lie between what the database held when its
//! tick began and when its answer arrived; an "already compacted" answer comes only when nothing
//! was due; a tick that no batch stopped reaches its clamped target; and between ticks the
//! compactor carries exactly what its last answered batch told it: a compact revision no higher
//! than the database stored, and a target that never goes back.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::history::{History, SimNanos};
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

/// What one incarnation's compactor carries between ticks, for the per-step rules.
struct Carried {
    compact: i64,
    target: i64,
    /// What came just before the next batch (to say so in messages): a restart, a resync, ...
    after: &'static str,
    tick: Option<OpenTick>,
}

/// A tick between its start and its end.
struct OpenTick {
    n: u64,
    started: SimNanos,
    compact: i64,
    target: i64,
    /// The compact revision the next batch must expect.
    expect: i64,
    /// What the last answered batch left: (compact revision, current revision it reported).
    answered: Option<(i64, i64)>,
    /// The last committed batch's revision.
    last_to: Option<i64>,
    /// A batch failed, resynced or was answered "already compacted": the walk stopped early.
    stopped: bool,
}

/// kine's compaction rule at every tick and batch (see the module documentation).
fn step_rules(h: &History, db: &DbTimeline, out: &mut Violations) {
    let min_retain = h.params.compact_min_retain;
    let mut servers: BTreeMap<&str, Carried> = BTreeMap::new();
    for (at, node, e) in h.store_events() {
        match e {
            StoreEvent::CompactorStarted {
                compact_revision: compact,
                target_revision: target,
            } => {
                beliefs(
                    node,
                    "its compactor started",
                    (*compact, *target),
                    at,
                    db,
                    out,
                );
                let when = "its compactor started";
                retained(node, when, *compact, *target, min_retain, at, out);
                servers.insert(
                    node,
                    Carried {
                        compact: *compact,
                        target: *target,
                        after: "a restart",
                        tick: None,
                    },
                );
            }
            StoreEvent::CompactTickStart {
                tick,
                compact_revision: compact,
                target_revision: target,
            } => {
                let Some(c) = servers.get_mut(node) else {
                    continue;
                };
                if (*compact, *target) != (c.compact, c.target) {
                    out.fire(at, || format!(
                        "{node} tick {tick} started with compact revision {compact} and target {target}, although the previous tick left {} and {}",
                        c.compact, c.target
                    ));
                }
                let what = format!("tick {tick} started");
                beliefs(node, &what, (*compact, *target), at, db, out);
                c.tick = Some(OpenTick {
                    n: *tick,
                    started: at,
                    compact: *compact,
                    target: *target,
                    expect: *compact,
                    answered: None,
                    last_to: None,
                    stopped: false,
                });
            }
            StoreEvent::CompactBatch { from, to, outcome } => {
                let Some(c) = servers.get_mut(node) else {
                    continue;
                };
                let Some(t) = c.tick.as_mut() else {
                    continue;
                };
                let (n, from, to) = (t.n, *from, *to);
                if from != t.expect {
                    out.fire(at, || format!(
                        "{node} tick {n} sent a batch expecting compact revision {from}, although what it had reached was {}",
                        t.expect
                    ));
                }
                let after = c.after;
                if let Some(current) = outcome_current(outcome) {
                    let (low, high) = (db.current_at(t.started), db.current_at(at));
                    if current < low || current > high {
                        out.fire(at, || format!(
                            "{node} tick {n}'s batch {from}..={to} was answered with current revision {current}, but the database's was between {low} and {high} meanwhile"
                        ));
                    }
                }
                match outcome {
                    BatchOutcome::Committed { current_revision } => {
                        let limit = current_revision - min_retain;
                        if to > limit {
                            out.fire(at, || format!(
                                "{node} tick {n} compacted to {to} right after {after}, while the database's current revision was {current_revision}: above current - min_retain ({limit}), the newest {min_retain} revisions must stay"
                            ));
                        }
                        if to > t.target {
                            out.fire(at, || {
                                format!(
                                    "{node} tick {n} compacted to {to}, past its target {}",
                                    t.target
                                )
                            });
                        }
                        if to <= from {
                            out.fire(at, || format!(
                                "{node} tick {n} committed a batch from {from} to {to}: a compaction must move forward"
                            ));
                        }
                        t.expect = to;
                        t.answered = Some((to, *current_revision));
                        t.last_to = Some(to);
                        c.after = "a committed batch";
                    }
                    BatchOutcome::Resync {
                        stored_compact_revision: stored,
                        current_revision,
                    } => {
                        let (low, high) = (db.compact_at(t.started), db.compact_at(at));
                        if *stored == from || *stored < low || *stored > high {
                            out.fire(at, || format!(
                                "{node} tick {n} resynced from {from} to {stored}, but the database's compact revision was between {low} and {high} meanwhile{}",
                                if *stored == from { " (and a resync must change it)" } else { "" }
                            ));
                        }
                        let what = format!("tick {n} resynced");
                        retained(node, &what, *stored, *current_revision, min_retain, at, out);
                        t.answered = Some((*stored, *current_revision));
                        t.stopped = true;
                        c.after = "a resync";
                    }
                    BatchOutcome::AlreadyCompacted {
                        stored_compact_revision: stored,
                        current_revision,
                    } => {
                        let what = format!("tick {n} was answered \"already compacted\"");
                        retained(node, &what, *stored, *current_revision, min_retain, at, out);
                        // `to` is the batch's target before the database clamped it.
                        let due = to.min(current_revision - min_retain);
                        if *stored != from || due > from {
                            out.fire(at, || format!(
                                "{node} tick {n}'s batch expecting {from} was answered \"already compacted\" at {stored} although revisions up to {due} were due (target {to}, current {current_revision}, min_retain {min_retain})"
                            ));
                        }
                        t.answered = Some((*stored, *current_revision));
                        t.stopped = true;
                        c.after = "an \"already compacted\" answer";
                    }
                    BatchOutcome::Failed { .. } => {
                        t.stopped = true;
                        c.after = "a failed batch";
                    }
                }
            }
            StoreEvent::CompactTickEnd {
                tick,
                compact_revision: compact,
                next_target_revision: target,
                ..
            } => {
                let Some(c) = servers.get_mut(node) else {
                    continue;
                };
                let Some(t) = c.tick.take() else {
                    continue;
                };
                let (left, told) = t.answered.unwrap_or((t.compact, t.target));
                // Carrying less than the batches reached is judged at the next tick's start.
                if *compact > left {
                    out.fire(at, || format!(
                        "{node} tick {tick} carries compact revision {compact} into the next tick, above the {left} its batches left"
                    ));
                }
                if *target != told {
                    out.fire(at, || format!(
                        "{node} tick {tick} carries target {target} into the next tick, although {}: {}",
                        match t.answered {
                            Some(_) => format!("the database last answered it with current revision {told}"),
                            None => format!("no batch answered and its target was {told}"),
                        },
                        if *target < told { "the target went back, so compaction falls behind" } else { "a target no answer gave" }
                    ));
                }
                if !t.stopped {
                    match (t.last_to, t.answered) {
                        (Some(to), Some((_, current))) => {
                            let due = t.target.min(current - min_retain);
                            if to < due {
                                out.fire(at, || format!(
                                    "{node} tick {tick} stopped at {to} with no batch failing, although {due} was due (target {}, current {current} - min_retain {min_retain})",
                                    t.target
                                ));
                            }
                        }
                        _ if t.compact < t.target => {
                            out.fire(at, || format!(
                                "{node} tick {tick} sent no batch although its target {} was above its compact revision {}",
                                t.target, t.compact
                            ));
                        }
                        _ => {}
                    }
                }
                c.compact = *compact;
                c.target = *target;
            }
            _ => {}
        }
    }
}

/// The revisions a batch's answer reported as current, if it answered.
fn outcome_current(outcome: &BatchOutcome) -> Option<i64> {
    match outcome {
        BatchOutcome::Committed { current_revision }
        | BatchOutcome::Resync {
            current_revision, ..
        }
        | BatchOutcome::AlreadyCompacted {
            current_revision, ..
        } => Some(*current_revision),
        BatchOutcome::Failed { .. } => None,
    }
}

/// Whenever the compactor reads the stored compact revision with the current one (at start, in a
/// resync, in an "already compacted" answer), the newest min_retain revisions are still there:
/// whatever any server stored was clamped against a current revision no newer than this one.
fn retained(
    node: &str,
    when: &str,
    stored: i64,
    current: i64,
    min_retain: i64,
    at: SimNanos,
    out: &mut Violations,
) {
    // kine never compacts below zero, so a young log may hold 0 above a negative bound.
    let limit = (current - min_retain).max(0);
    if stored > limit {
        out.fire(at, || format!(
            "{node}: {when} with compact revision {stored} stored and current revision {current}: above current - min_retain ({limit}), so a batch compacted the newest {min_retain} revisions"
        ));
    }
}

/// What a compactor holds at any moment came from the database: its compact revision is no
/// higher than what is stored, its target no higher than the current revision.
fn beliefs(
    node: &str,
    when: &str,
    (compact, target): (i64, i64),
    at: SimNanos,
    db: &DbTimeline,
    out: &mut Violations,
) {
    let (stored, current) = (db.compact_at(at), db.current_at(at));
    if compact > stored {
        out.fire(at, || format!(
            "{node}: {when} with compact revision {compact}, above the {stored} the database had stored"
        ));
    }
    if target > current {
        out.fire(at, || {
            format!(
            "{node}: {when} with target {target}, above the database's current revision {current}"
        )
        });
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
        "after any failed batch the compactor keeps compacting from where it got to, resyncs to real stored values, rolls back whole, and catches up within two intervals once faults stop; at every tick and batch it keeps the newest min_retain revisions, reaches its clamped target unless a batch stopped it, and carries what the database last answered"
    }

    fn check(&self, h: &History) -> CheckReport {
        if h.params.live {
            return CheckReport::not_applicable(
                self.name(),
                "live run: the store's compactor is not observable from outside; every rule reads its ticks, batches and database transactions",
            );
        }
        let db = DbTimeline::of(h);
        let mut out = Violations::new();
        tick_checks(h, &db, &mut out);
        step_rules(h, &db, &mut out);
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
        committed_at(h, at, from, to, 300);
    }
    /// A committed batch the database answered with current revision `current`.
    fn committed_at(h: &mut History, at: f64, from: i64, to: i64, current: i64) {
        batch(
            h,
            at,
            from,
            to,
            BatchOutcome::Committed {
                current_revision: current,
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
        started_with(h, at, 300);
    }
    fn started_with(h: &mut History, at: f64, target: i64) {
        store(
            h,
            at,
            "kine-1",
            StoreEvent::CompactorStarted {
                compact_revision: 0,
                target_revision: target,
            },
        );
    }
    fn check(h: &History) -> CheckReport {
        CompactorContinuity.check(h)
    }
    fn already(stored: i64, current: i64) -> BatchOutcome {
        BatchOutcome::AlreadyCompacted {
            stored_compact_revision: stored,
            current_revision: current,
        }
    }
    fn resync(stored: i64, current: i64) -> BatchOutcome {
        BatchOutcome::Resync {
            stored_compact_revision: stored,
            current_revision: current,
        }
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
        // Judged at tick 1's end already: the target went back to 0 with no answer saying so.
        let m = &r.first().unwrap().message;
        assert!(
            m.contains("tick 1 carries target 0") && m.contains("went back"),
            "{m}"
        );
        assert!(
            r.violations
                .iter()
                .any(|v| v.message.contains("tick 2 attempted no batch")
                    && v.message.contains("stalled")),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn an_idle_tick_with_nothing_due_passes() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 5);
        started_with(&mut h, 0.0, 5);
        tick(&mut h, 30.0, 1, 0, 5);
        // 5 - min_retain is below 0: the database answers that nothing is due.
        batch(&mut h, 30.0, 0, 5, already(0, 5));
        end(&mut h, 30.0, 1, 0, 5);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
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

    /// Tick 1 commits to 200 and its third batch commits 290 with the reply lost; tick 2
    /// resyncs to 290; five more revisions arrive; tick 3's first batch compacts to `to`.
    fn after_a_resync(to: i64) -> History {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        committed(&mut h, 30.0, 0, 100);
        committed(&mut h, 30.0, 100, 200);
        db_compact(&mut h, 30.0, (200, 290), true, (10, 10));
        failed(&mut h, 30.0, 200, 300);
        end(&mut h, 30.0, 1, 200, 300);
        tick(&mut h, 60.0, 2, 200, 300);
        batch(&mut h, 60.0, 200, 300, resync(290, 300));
        end(&mut h, 60.0, 2, 290, 300);
        inserts(&mut h, 70.0, 301, 305);
        tick(&mut h, 90.0, 3, 290, 300);
        committed_at(&mut h, 90.0, 290, to, 305);
        end(&mut h, 90.0, 3, to, 305);
        h
    }

    #[test]
    fn the_first_batch_after_a_resync_is_held_to_min_retain() {
        let r = check(&after_a_resync(295));
        assert!(r.passed(), "{:?}", r.violations);
        let r = check(&after_a_resync(300));
        let m = &r.first().unwrap().message;
        assert!(
            m.contains("tick 3 compacted to 300 right after a resync")
                && m.contains("current - min_retain (295)"),
            "{m}"
        );
    }

    #[test]
    fn the_first_batch_after_a_restart_is_held_to_min_retain() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        committed(&mut h, 30.0, 0, 295);
        end(&mut h, 30.0, 1, 295, 300);
        assert_fires(&check(&h), "right after a restart");
    }

    #[test]
    fn a_tick_that_stops_early_with_nothing_failing_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        committed(&mut h, 30.0, 0, 100);
        end(&mut h, 30.0, 1, 100, 300);
        assert_fires(
            &check(&h),
            "stopped at 100 with no batch failing, although 290 was due",
        );
    }

    #[test]
    fn already_compacted_while_revisions_are_due_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        batch(&mut h, 30.0, 0, 100, already(0, 300));
        end(&mut h, 30.0, 1, 0, 300);
        assert_fires(&check(&h), "although revisions up to 100 were due");
    }

    #[test]
    fn a_reported_current_revision_the_database_never_had_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        committed_at(&mut h, 30.0, 0, 100, 900);
        end(&mut h, 30.0, 1, 100, 900);
        assert_fires(&check(&h), "between 300 and 300");
    }

    #[test]
    fn a_compact_revision_above_what_is_stored_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        // The batch failed (rolled back), but the compactor carries its target as reached.
        failed(&mut h, 30.0, 0, 100);
        end(&mut h, 30.0, 1, 100, 300);
        assert_fires(
            &check(&h),
            "carries compact revision 100 into the next tick, above the 0",
        );
        tick(&mut h, 60.0, 2, 100, 300);
        let r = check(&h);
        assert!(
            r.violations
                .iter()
                .any(|v| v.message.contains("above the 0 the database had stored")),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn a_resync_to_a_value_the_database_had_left_behind_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        db_compact(&mut h, 10.0, (0, 100), true, (10, 10));
        db_compact(&mut h, 20.0, (100, 200), true, (10, 10));
        tick(&mut h, 30.0, 1, 0, 300);
        batch(&mut h, 30.0, 0, 100, resync(100, 300));
        end(&mut h, 30.0, 1, 100, 300);
        assert_fires(&check(&h), "between 200 and 200");
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        db_compact(&mut h, 10.0, (0, 100), true, (10, 10));
        db_compact(&mut h, 20.0, (100, 200), true, (10, 10));
        tick(&mut h, 30.0, 1, 0, 300);
        batch(&mut h, 30.0, 0, 100, resync(200, 300));
        end(&mut h, 30.0, 1, 200, 300);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_resync_that_finds_the_newest_revisions_compacted_fires() {
        let mut h = history();
        inserts(&mut h, 0.0, 1, 300);
        started(&mut h, 0.0);
        tick(&mut h, 30.0, 1, 0, 300);
        // Another writer's batch went past current - min_retain; its reply was lost.
        db_compact(&mut h, 30.0, (0, 295), true, (10, 10));
        batch(&mut h, 30.0, 0, 300, resync(295, 300));
        end(&mut h, 30.0, 1, 295, 300);
        assert_fires(&check(&h), "so a batch compacted the newest 10 revisions");
        let r = check(&after_a_resync(295));
        assert!(r.passed(), "{:?}", r.violations);
    }
}

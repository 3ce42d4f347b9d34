//! kine's compactor loop: every interval, walk the compact revision towards the target in
//! batches of one transaction each.
//!
//! The target of a tick is the current revision seen at the previous tick, clamped by the
//! database to `current - min_retain`. The fixed design keeps what committed batches reached and
//! refreshes the target only when a batch reported a current revision; the variants of
//! `CompactorVariant` differ from it in `finish_tick`, except `ResyncUnclamped`, which differs
//! only in the `min_retain` the first batch after a resync asks for. It reports every tick and
//! batch.

use super::database::{CompactReply, DbRequest, DbResponse};
use super::store::KineStore;
use crate::design::CompactorVariant;
use crate::faults::SharedFaults;
use crate::observe::{BatchOutcome, SharedObserver, StoreEvent};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CompactorConfig {
    pub interval: Duration,
    /// The period is `interval ± jitter_pct%`, drawn once when the loop starts (as kine does).
    pub jitter_pct: u64,
    pub min_retain: i64,
    pub batch_revisions: i64,
    pub timeout: Duration,
    pub variant: CompactorVariant,
}

/// kine's minimum batch size; smaller settings are refused at start.
pub const MIN_BATCH_REVISIONS: i64 = 100;

pub struct Compactor {
    pub store: Arc<KineStore>,
    pub config: CompactorConfig,
    pub server: String,
    pub observer: SharedObserver,
    pub faults: SharedFaults,
}

/// What one tick's walk produced.
struct Walk {
    compacted: i64,
    /// The current revision the last answering batch reported; 0 when none answered.
    current: i64,
    failed: bool,
    committed: u64,
    /// The walk ended on a resync (the stored compact revision was not the expected one).
    resynced: bool,
}

impl Compactor {
    /// Runs until the node is killed.
    pub async fn run(self) {
        assert!(
            self.config.batch_revisions >= MIN_BATCH_REVISIONS,
            "compact batch size {} is below kine's minimum {MIN_BATCH_REVISIONS}",
            self.config.batch_revisions
        );
        // kine reads both before its first tick; its current revision comes from the already
        // running poll loop, so it is never a failed read's zero. Here both are read from the
        // database, retried each second until they answer (a zero target would stall the loop).
        let (mut compact, mut target) = loop {
            let compact = self.store.call(DbRequest::CompactRevision).await;
            let current = self.store.call(DbRequest::CurrentRevision).await;
            if let (Ok(DbResponse::Revision(c)), Ok(DbResponse::Revision(t))) = (compact, current) {
                break (c, t);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        self.observer.record(StoreEvent::CompactorStarted {
            compact_revision: compact,
            target_revision: target,
        });
        let period = self.period();
        let mut tick = 0u64;
        let mut unclamped = false;
        loop {
            tokio::time::sleep(period).await;
            tick += 1;
            self.observer.record(StoreEvent::CompactTickStart {
                tick,
                compact_revision: compact,
                target_revision: target,
            });
            let walk = self.walk(tick, compact, target, unclamped).await;
            unclamped = walk.resynced && self.config.variant == CompactorVariant::ResyncUnclamped;
            let (next_compact, next_target) = self.finish_tick(compact, target, &walk);
            compact = next_compact;
            target = next_target;
            self.observer.record(StoreEvent::CompactTickEnd {
                tick,
                compact_revision: compact,
                next_target_revision: target,
                batches_committed: walk.committed,
            });
        }
    }

    fn period(&self) -> Duration {
        use rand::Rng;
        let pct = self.config.jitter_pct.min(100) as f64 / 100.0;
        let base = self.config.interval.as_secs_f64();
        let jitter = if pct > 0.0 {
            madsim::rand::thread_rng().gen_range(-pct..=pct) * base
        } else {
            0.0
        };
        Duration::from_secs_f64((base + jitter).max(0.001))
    }

    /// Walks from `compact` to `target` in batches; any error ends the walk. `unclamped` (only
    /// ever set by the `ResyncUnclamped` variant) sends the first batch without min-retain.
    async fn walk(&self, tick: u64, compact: i64, target: i64, unclamped: bool) -> Walk {
        let mut walk = Walk {
            compacted: compact,
            current: 0,
            failed: false,
            committed: 0,
            resynced: false,
        };
        let mut iter = compact;
        let mut batch = 0;
        while iter < target {
            iter = (iter + self.config.batch_revisions).min(target);
            batch += 1;
            let fault = self.faults.compact_batch(&self.server, tick, batch);
            if let Some(f) = fault {
                self.observer.record(StoreEvent::FaultInjected {
                    fault: f.name().into(),
                    detail: format!("batch {}..={iter}", walk.compacted),
                });
            }
            let req = DbRequest::CompactBatch {
                expected: walk.compacted,
                target: iter,
                min_retain: if unclamped && batch == 1 {
                    0
                } else {
                    self.config.min_retain
                },
                fault,
            };
            let from = walk.compacted;
            let (outcome, stop) = match self.store.driver().call(req, self.config.timeout).await {
                Ok(DbResponse::Compact(CompactReply::Committed { compacted, current })) => {
                    walk.compacted = compacted;
                    walk.current = current;
                    walk.committed += 1;
                    (
                        BatchOutcome::Committed {
                            current_revision: current,
                        },
                        false,
                    )
                }
                Ok(DbResponse::Compact(CompactReply::Mismatch { stored, current })) => {
                    crate::probe!("kine.compact.resync_adopted_stored_revision");
                    walk.compacted = stored;
                    walk.current = current;
                    walk.resynced = true;
                    (
                        BatchOutcome::Resync {
                            stored_compact_revision: stored,
                            current_revision: current,
                        },
                        true,
                    )
                }
                Ok(DbResponse::Compact(CompactReply::AlreadyCompacted { stored, current })) => {
                    crate::probe!("kine.compact.batch_already_compacted");
                    walk.compacted = stored;
                    walk.current = current;
                    (
                        BatchOutcome::AlreadyCompacted {
                            stored_compact_revision: stored,
                            current_revision: current,
                        },
                        true,
                    )
                }
                Ok(other) => unreachable!("CompactBatch answered {other:?}"),
                Err(e) => {
                    probe_failed_batch(fault);
                    walk.failed = true;
                    (
                        BatchOutcome::Failed {
                            error: e.to_string(),
                        },
                        true,
                    )
                }
            };
            let to = match &outcome {
                BatchOutcome::Committed { .. } => walk.compacted,
                _ => iter,
            };
            self.observer
                .record(StoreEvent::CompactBatch { from, to, outcome });
            if stop {
                break;
            }
        }
        walk
    }

    /// What the loop carries into the next tick: the one place the variants differ.
    fn finish_tick(&self, compact: i64, target: i64, walk: &Walk) -> (i64, i64) {
        match self.config.variant {
            // kine v0.13.10+: keep committed progress; refresh the target only when known.
            // `ResyncUnclamped` differs in `walk` only.
            CompactorVariant::Fixed | CompactorVariant::ResyncUnclamped => {
                if walk.current > 0 {
                    (walk.compacted, walk.current)
                } else {
                    (compact, target)
                }
            }
            // kine #357: a failed batch restarted the outer loop, dropping committed progress
            // and the refreshed target.
            CompactorVariant::Kine357 => {
                if walk.failed {
                    (compact, target)
                } else {
                    (walk.compacted, walk.current)
                }
            }
            // kine #414: the per-tick current revision starts at 0 and is stored unconditionally.
            CompactorVariant::Kine414 => (walk.compacted, walk.current),
        }
    }
}

/// Names the kind of a compaction batch that failed (for code probes only).
fn probe_failed_batch(fault: Option<crate::faults::CompactFault>) {
    use crate::faults::CompactFault;
    match fault {
        Some(CompactFault::DatabaseLocked) => crate::probe!("kine.compact.batch_failed_locked"),
        Some(CompactFault::Timeout) => crate::probe!("kine.compact.batch_failed_timeout"),
        Some(CompactFault::ReplyLost) => crate::probe!("kine.compact.batch_failed_reply_lost"),
        None => crate::probe!("kine.compact.batch_failed_unforced"),
    }
}

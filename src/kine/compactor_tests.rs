//! The compactor loop and its variants, driven tick by tick on an in-process database with a
//! scripted fault, inside a madsim runtime.

use super::compactor::{Compactor, CompactorConfig};
use super::database::{Database, DbRequest};
use super::driver::{Driver, Latency};
use super::store::KineStore;
use crate::design::CompactorVariant;
use crate::faults::{CompactFault, FaultPoints};
use crate::observe::{BatchOutcome, Observer, StoreEvent};
use crate::proto::etcdserverpb::PutRequest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Collect(Mutex<Vec<StoreEvent>>);

impl Observer for Collect {
    fn record(&self, e: StoreEvent) {
        self.0.lock().unwrap().push(e);
    }
}

/// Fails exactly the `nth` batch (counting from 1) with `kind`.
struct FailNth {
    nth: u64,
    kind: CompactFault,
    seen: AtomicU64,
}

impl FaultPoints for FailNth {
    fn compact_batch(&self, _server: &str, _tick: u64, _batch: u64) -> Option<CompactFault> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        (n == self.nth).then_some(self.kind)
    }
}

/// Writes 500 revisions, starts the compactor (interval 10 s, batches of 100, min retain 0),
/// writes 500 more during the first interval, and returns every tick start after ~35 s.
async fn ticks(variant: CompactorVariant, fail_batch: u64) -> Vec<(u64, i64, i64)> {
    let fault = (fail_batch, CompactFault::DatabaseLocked);
    run(variant, fault, 0, 500)
        .await
        .iter()
        .filter_map(|e| match e {
            StoreEvent::CompactTickStart {
                tick,
                compact_revision,
                target_revision,
            } => Some((*tick, *compact_revision, *target_revision)),
            _ => None,
        })
        .collect()
}

/// Writes 500 revisions, starts the compactor (interval 10 s, batches of 100, `min_retain`),
/// writes `more` revisions during the first interval, and returns every event after ~35 s.
async fn run(
    variant: CompactorVariant,
    (fail_batch, kind): (u64, CompactFault),
    min_retain: i64,
    more: usize,
) -> Vec<StoreEvent> {
    let events = Arc::new(Collect::default());
    let db = Database::open(events.clone()).unwrap();
    let driver = Driver::Local {
        db: Arc::new(Mutex::new(db)),
        latency: Latency {
            min_ms: 1,
            max_ms: 1,
        },
    };
    let store = Arc::new(KineStore::new(driver, Duration::from_secs(1), 1));
    store.call(DbRequest::Startup).await.unwrap();
    let write = |s: Arc<KineStore>, n: usize| async move {
        for i in 0..n {
            let key = format!("/k{}", i % 7);
            s.put(&PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    };
    write(store.clone(), 500).await;
    let compactor = Compactor {
        store: store.clone(),
        config: CompactorConfig {
            interval: Duration::from_secs(10),
            jitter_pct: 0,
            min_retain,
            batch_revisions: 100,
            timeout: Duration::from_secs(5),
            variant,
        },
        server: "kine-1".into(),
        observer: events.clone(),
        faults: Arc::new(FailNth {
            nth: fail_batch,
            kind,
            seen: AtomicU64::new(0),
        }),
    };
    let task = tokio::spawn(compactor.run());
    write(store.clone(), more).await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    task.abort();
    let events = events.0.lock().unwrap();
    let failed = events.iter().any(|e| {
        matches!(
            e,
            StoreEvent::CompactBatch {
                outcome: BatchOutcome::Failed { .. },
                ..
            }
        )
    });
    assert!(failed, "the scripted batch failure happened");
    events.clone()
}

#[madsim::test]
async fn fixed_keeps_committed_batches_after_a_failure() {
    // Tick 1 walks 0..=501 in batches; the third fails after two committed (to 200).
    let t = ticks(CompactorVariant::Fixed, 3).await;
    assert_eq!(
        t[1].1, 200,
        "tick 2 starts where the committed batches reached: {t:?}"
    );
    assert!(t[1].2 > 501, "and with a refreshed target: {t:?}");
}

#[madsim::test]
async fn kine_357_forgets_committed_batches() {
    let t = ticks(CompactorVariant::Kine357, 3).await;
    assert_eq!(
        t[1].1, 0,
        "tick 2 restarts from the old compact revision: {t:?}"
    );
    assert_eq!(t[1].2, t[0].2, "and the old target: {t:?}");
}

#[madsim::test]
async fn kine_414_stops_after_a_failed_first_batch() {
    let t = ticks(CompactorVariant::Kine414, 1).await;
    assert_eq!((t[1].1, t[1].2), (0, 0), "the next target is zero: {t:?}");
    assert_eq!((t[2].1, t[2].2), (0, 0), "and stays zero: {t:?}");
}

#[madsim::test]
async fn fixed_recovers_from_a_failed_first_batch() {
    let t = ticks(CompactorVariant::Fixed, 1).await;
    assert_eq!(t[1].1, 0);
    assert!(
        t[1].2 > 0,
        "the old target is kept when no batch answered: {t:?}"
    );
    assert!(t[2].1 > 0, "and tick 2 compacts: {t:?}");
}

/// The highest revision a committed batch compacted to, after 500 writes and none since: tick 1
/// commits to 100, 200 and then (clamped to 501 - 300) 201 with its reply lost; tick 2 resyncs
/// to 201; tick 3's first batch asks for 301.
async fn highest_after_a_resync(variant: CompactorVariant) -> i64 {
    let events = run(variant, (3, CompactFault::ReplyLost), 300, 0).await;
    let resynced = events.iter().any(|e| {
        matches!(
            e,
            StoreEvent::CompactBatch {
                outcome: BatchOutcome::Resync { .. },
                ..
            }
        )
    });
    assert!(resynced, "tick 2 resynced: {events:?}");
    events
        .iter()
        .filter_map(|e| match e {
            StoreEvent::DbCompact {
                committed: true,
                to,
                ..
            } => Some(*to),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[madsim::test]
async fn fixed_clamps_the_first_batch_after_a_resync() {
    assert_eq!(highest_after_a_resync(CompactorVariant::Fixed).await, 201);
}

#[madsim::test]
async fn resync_unclamped_compacts_into_the_retained_revisions() {
    assert_eq!(
        highest_after_a_resync(CompactorVariant::ResyncUnclamped).await,
        301,
        "the first batch after the resync is not clamped to 501 - 300"
    );
}

//! kine's watch inside a madsim runtime: history then live rows without repeats, compacted
//! starts refused, progress only after delivery, and gaps in the id sequence filled.

use super::database::{Database, DbRequest, Dialect};
use super::driver::{Driver, Latency, SharedDatabase};
use super::sql::{End, NewRow, Row};
use super::store::KineStore;
use super::watch::{poll, run_watcher, WatchEnd, WatchHub, WatchItem, WATCHER_BACKLOG};
use crate::design::WatchVariant;
use crate::observe::Discard;
use crate::proto::etcdserverpb::{CompactionRequest, PutRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

async fn setup() -> (Arc<KineStore>, Arc<WatchHub>) {
    let (store, hub, _) = setup_with(Dialect::Sqlite, WatchVariant::Fixed).await;
    (store, hub)
}

/// A store over a database of `dialect` (commits never slow unless a test holds one), its
/// poller of `variant`, and the database itself so a test can hold an insert open.
async fn setup_with(
    dialect: Dialect,
    variant: WatchVariant,
) -> (Arc<KineStore>, Arc<WatchHub>, SharedDatabase) {
    let db = Arc::new(Mutex::new(
        Database::open_with(Arc::new(Discard), dialect).unwrap(),
    ));
    let driver = Driver::Local {
        db: db.clone(),
        latency: Latency {
            min_ms: 1,
            max_ms: 2,
        },
    };
    let store = Arc::new(KineStore::new(driver, Duration::from_secs(1), 1));
    store.call(DbRequest::Startup).await.unwrap();
    let hub = Arc::new(WatchHub::default());
    tokio::spawn(poll(store.clone(), hub.clone(), variant));
    (store, hub, db)
}

const MYSQL_FAST: Dialect = Dialect::MysqlLike {
    slow_commit_pct: 0,
    slow_commit_ms: (0, 0),
};

fn late_row(name: &str) -> NewRow {
    NewRow {
        name: name.into(),
        created: true,
        value: b"late".to_vec(),
        ..Default::default()
    }
}

async fn put(store: &KineStore, key: &str) -> i64 {
    let r = store
        .put(&PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    r.header.unwrap().revision
}

type Watcher = (
    mpsc::Receiver<WatchItem>,
    mpsc::Sender<()>,
    tokio::task::JoinHandle<WatchEnd>,
);

fn watch(store: &Arc<KineStore>, hub: &Arc<WatchHub>, prefix: &str, start: i64) -> Watcher {
    let (tx, rx) = mpsc::channel(64);
    let (ptx, prx) = mpsc::channel(4);
    let end = Some(End::Exclusive(format!("{prefix}\u{7f}")));
    let task = tokio::spawn(run_watcher(
        store.clone(),
        hub.clone(),
        prefix.into(),
        end,
        start,
        prx,
        tx,
    ));
    (rx, ptx, task)
}

/// Collects rows until `n` have arrived (bounded at 10 simulated seconds).
async fn rows(rx: &mut mpsc::Receiver<WatchItem>, n: usize) -> Vec<Row> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(WatchItem::Rows(r))) => out.extend(r),
            Ok(Some(WatchItem::Progress(_))) => {}
            _ => break,
        }
    }
    out
}

#[madsim::test]
async fn a_watch_replays_history_then_follows_without_repeats() {
    let (store, hub) = setup().await;
    let first = put(&store, "/r/a").await;
    put(&store, "/other").await;
    put(&store, "/r/b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut rx, _p, _t) = watch(&store, &hub, "/r/", first);
    put(&store, "/r/c").await;
    put(&store, "/r/a").await;
    let got = rows(&mut rx, 4).await;
    let ids: Vec<i64> = got.iter().map(|r| r.id).collect();
    let names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["/r/a", "/r/b", "/r/c", "/r/a"], "in range only");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered and unique: {ids:?}"
    );
    assert_eq!(ids[0], first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rx.try_recv().is_err(), "nothing delivered twice");
}

#[madsim::test]
async fn a_watch_from_a_compacted_revision_is_refused_with_the_compact_revision() {
    let (store, hub) = setup().await;
    for _ in 0..10 {
        put(&store, "/r/a").await;
    }
    store
        .compact(&CompactionRequest {
            revision: 8,
            physical: false,
        })
        .await
        .unwrap();
    let (_rx, _p, task) = watch(&store, &hub, "/r/", 5);
    assert_eq!(
        task.await.unwrap(),
        WatchEnd::Compacted {
            compact_revision: 8
        }
    );
    let (mut rx, _p, _t) = watch(&store, &hub, "/r/", 8);
    assert_eq!(
        rows(&mut rx, 1).await[0].id,
        8,
        "the compact revision itself is still watchable"
    );
}

#[madsim::test]
async fn progress_comes_only_after_the_rows_it_covers() {
    let (store, hub) = setup().await;
    let (mut rx, progress, _t) = watch(&store, &hub, "/r/", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rev = put(&store, "/r/a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress.send(()).await.unwrap();
    let mut seen_row = false;
    loop {
        match rx.recv().await.unwrap() {
            WatchItem::Rows(r) => seen_row |= r.iter().any(|r| r.id == rev),
            WatchItem::Progress(p) => {
                assert!(p >= rev, "progress {p} covers the write at {rev}");
                assert!(seen_row, "the row came before the progress that covers it");
                break;
            }
        }
    }
}

#[madsim::test]
async fn a_gap_is_filled_after_a_second_and_fills_are_never_delivered() {
    let (store, hub) = setup().await;
    let (mut rx, _p, _t) = watch(&store, &hub, "", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (current, _) = store.revisions().await.unwrap();
    // An id two ahead commits while the one before it never does: a gap.
    store
        .call(DbRequest::Fill { id: current + 2 })
        .await
        .unwrap();
    let rev = put(&store, "/r/after-the-gap").await;
    let started = tokio::time::Instant::now();
    let got = rows(&mut rx, 1).await;
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rev]);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the poller waited for the missing id first"
    );
    let filled = store
        .call(DbRequest::Get {
            name: format!("gap-{}", current + 1),
            revision: 0,
        })
        .await;
    assert!(
        matches!(
            filled,
            Ok(super::database::DbResponse::Row { row: Some(_), .. })
        ),
        "the missing id was filled: {filled:?}"
    );
}

/// Ids of the rows a watcher of everything gets within `wait`.
async fn delivered(rx: &mut mpsc::Receiver<WatchItem>, wait: Duration) -> Vec<i64> {
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(WatchItem::Rows(r))) => ids.extend(r.iter().map(|r| r.id)),
            Ok(Some(WatchItem::Progress(_))) => {}
            _ => return ids,
        }
    }
}

/// An insert reserves id `late`, a later insert commits first, and the held one commits 300 ms
/// later: the fixed poller waits and delivers both in id order; gap-skip never delivers it.
async fn late_commit(variant: WatchVariant) -> (i64, i64, Vec<i64>) {
    let (store, hub, db) = setup_with(MYSQL_FAST, variant).await;
    let (mut rx, _p, _t) = watch(&store, &hub, "", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = db.lock().unwrap().reserve(&late_row("/r/late")).unwrap();
    let next = put(&store, "/r/next").await;
    assert_eq!(next, late + 1, "ids are reserved in start order");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed = db
        .lock()
        .unwrap()
        .commit_reserved(late, &late_row("/r/late"))
        .unwrap();
    assert_eq!(
        committed, late,
        "committed before any fill, under its own id"
    );
    (late, next, delivered(&mut rx, Duration::from_secs(3)).await)
}

#[madsim::test]
async fn a_row_committing_out_of_order_is_waited_for() {
    let (late, next, ids) = late_commit(WatchVariant::Fixed).await;
    assert_eq!(ids, vec![late, next]);
}

#[madsim::test]
async fn gap_skip_loses_a_row_committing_out_of_order() {
    let (_, next, ids) = late_commit(WatchVariant::GapSkip).await;
    assert_eq!(ids, vec![next], "the late row is never delivered");
}

#[madsim::test]
async fn an_insert_racing_a_premature_fill_retries_under_a_new_id() {
    let (store, hub, db) = setup_with(MYSQL_FAST, WatchVariant::Fixed).await;
    let (mut rx, _p, _t) = watch(&store, &hub, "", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = db.lock().unwrap().reserve(&late_row("/r/late")).unwrap();
    let next = put(&store, "/r/next").await;
    // Held past the poller's patience: its id is filled meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let committed = db
        .lock()
        .unwrap()
        .commit_reserved(late, &late_row("/r/late"))
        .unwrap();
    assert!(committed > next, "retried under a fresh id: {committed}");
    let ids = delivered(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(
        ids,
        vec![next, committed],
        "not lost, and the fill never shows"
    );
}

#[madsim::test]
async fn an_insert_cut_by_its_deadline_leaves_a_gap_that_is_filled() {
    let dialect = Dialect::MysqlLike {
        slow_commit_pct: 100,
        slow_commit_ms: (5_000, 5_000),
    };
    let (store, hub, db) = setup_with(dialect, WatchVariant::Fixed).await;
    let (mut rx, _p, _t) = watch(&store, &hub, "", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = store.revisions().await.unwrap().0;
    // The store's 1 s deadline passes during the 5 s commit: the insert is rolled back.
    let err = store
        .put(&PutRequest {
            key: b"/r/never".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(err.is_err(), "timed out: {err:?}");
    let aborted = before + 1;
    let next = db.lock().unwrap().reserve(&late_row("/r/after")).unwrap();
    assert_eq!(
        next,
        aborted + 1,
        "the aborted id is never handed out again"
    );
    db.lock()
        .unwrap()
        .commit_reserved(next, &late_row("/r/after"))
        .unwrap();
    assert_eq!(delivered(&mut rx, Duration::from_secs(3)).await, vec![next]);
    let filled = store
        .call(DbRequest::Get {
            name: format!("gap-{aborted}"),
            revision: 0,
        })
        .await;
    assert!(
        matches!(
            filled,
            Ok(super::database::DbResponse::Row { row: Some(_), .. })
        ),
        "the aborted id was filled: {filled:?}"
    );
}

/// Writes straight to the database, so the poller hears of it only on its one-second tick.
fn write_unheard(db: &SharedDatabase, name: &str, deleted: bool, prev_revision: i64) -> i64 {
    let row = NewRow {
        name: name.into(),
        created: !deleted && prev_revision == 0,
        deleted,
        prev_revision,
        value: b"v".to_vec(),
        ..Default::default()
    };
    match db.lock().unwrap().execute(&DbRequest::Insert(row)).unwrap() {
        super::database::DbResponse::Inserted(id) => id,
        other => panic!("an insert answers its id: {other:?}"),
    }
}

/// Compacts straight in the database, before the poller has read what it removes.
fn compact_unheard(db: &SharedDatabase, expected: i64, target: i64) {
    db.lock()
        .unwrap()
        .execute(&DbRequest::CompactBatch {
            expected,
            target,
            min_retain: 0,
            fault: None,
        })
        .unwrap();
}

#[madsim::test]
async fn a_watcher_compaction_overtook_before_the_poller_read_is_cancelled() {
    let (store, hub, db) = setup_with(Dialect::Sqlite, WatchVariant::Fixed).await;
    let (mut rx, _p, task) = watch(&store, &hub, "/r/", 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = write_unheard(&db, "/r/a", false, 0);
    let second = write_unheard(&db, "/r/a", false, first);
    write_unheard(&db, "/r/b", false, 0);
    compact_unheard(&db, 0, second); // removes `first`, which the watcher never got
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the watcher ends once the poller finds the loss");
    assert_eq!(
        end.unwrap(),
        WatchEnd::Compacted {
            compact_revision: second
        }
    );
    assert!(rows(&mut rx, 1).await.is_empty(), "nothing after the loss");
}

#[madsim::test]
async fn a_watch_from_exactly_the_compact_revision_gets_the_delete_there() {
    let (store, hub, db) = setup_with(Dialect::Sqlite, WatchVariant::Fixed).await;
    let created = put(&store, "/r/a").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.polled(), created, "the poller has read the create");
    let deleted = write_unheard(&db, "/r/a", true, created);
    let after = write_unheard(&db, "/r/b", false, 0);
    // Compaction to the tombstone's revision, before the poller read it: a watcher told it was
    // compacted at that revision resumes there, and must get the DELETE whole (etcd #18089).
    compact_unheard(&db, 0, deleted);
    let (mut rx, _p, task) = watch(&store, &hub, "/r/", deleted);
    let got = rows(&mut rx, 2).await;
    assert_eq!(
        got.iter().map(|r| (r.id, r.deleted)).collect::<Vec<_>>(),
        vec![(deleted, true), (after, false)],
        "the tombstone at the compact revision is kept and delivered"
    );
    assert!(!task.is_finished(), "not cancelled");
}

/// A watcher whose consumer stops reading (a slow gRPC client) blocks once its stream is full;
/// after the poller publishes more batches than its backlog holds it is cancelled as lagging,
/// while one that keeps reading follows every row.
#[madsim::test]
async fn a_watcher_whose_consumer_stops_reading_is_cancelled_as_lagging() {
    // The one place watch.kine.lagged is reached (probe::SCENARIO_UNREACHABLE): tests share
    // the process's counters, so compare before and after.
    let lagged_before = crate::probe::hits_of("watch.kine.lagged");
    let (store, hub) = setup().await;
    let (stalled, _p1, stalled_task) = watch(&store, &hub, "/r/", 0);
    let (mut reading, _p2, reading_task) = watch(&store, &hub, "/r/", 0);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(item) = reading.recv().await {
            if let WatchItem::Rows(r) = item {
                n += r.len();
            }
        }
        n
    });
    // Each write is polled on its own: one published batch per write.
    let writes = WATCHER_BACKLOG + 64 + 40;
    for i in 0..writes {
        put(&store, &format!("/r/{i}")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !stalled_task.is_finished(),
        "blocked on its full stream, it has not noticed yet"
    );
    // The consumer reads again: what its stream held, then the cancellation.
    let mut stalled = stalled;
    let mut held = 0;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), stalled.recv()).await {
        if let WatchItem::Rows(r) = item {
            held += r.len();
        }
    }
    assert!(held < writes, "it got {held} rows of {writes}");
    assert_eq!(stalled_task.await.unwrap(), WatchEnd::Lagged);
    assert!(
        cfg!(faultline_no_probes) || crate::probe::hits_of("watch.kine.lagged") > lagged_before,
        "the lag is counted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!reading_task.is_finished(), "a reading watcher goes on");
    reading_task.abort();
    let read = reader.await.unwrap();
    assert_eq!(read, writes, "the reading watcher saw every row");
}

//! kine's watch: one poll loop per server reading the log in id order, and watchers fed from it.
//!
//! The poller reads rows after the last revision it delivered, in batches, woken by local
//! inserts or a one-second tick. Rows must arrive strictly in sequence: a missing id is retried,
//! and after about a second filled with a deleted `gap-<id>` row that watchers never see; ids
//! compaction removed before the poller read them are skipped, and a watcher that needed them
//! is cancelled as compacted. A watcher replays history from its start revision, then follows
//! the poller without repeats.

use super::database::{DbRequest, DbResponse};
use super::sql::{End, Row};
use super::store::KineStore;
use crate::design::WatchVariant;
use crate::error::StoreError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Rows fetched per poll (kine's default poll batch size).
pub const POLL_BATCH: i64 = 500;
/// How many polled items a watcher may fall behind before it is cancelled as lagging: kine's
/// broadcaster gives each subscriber a channel of 100 batches and drops a subscriber whose channel
/// is full (a slow consumer), closing its watch. A broadcast channel holds a power of two, so
/// 128 here.
pub const WATCHER_BACKLOG: usize = 128;
/// How long a missing id is waited for before it is filled.
pub const GAP_FILL_AFTER: Duration = Duration::from_secs(1);

/// A name kine gives the rows it writes to fill a gap in the id sequence.
pub fn is_fill(name: &str) -> bool {
    name.starts_with("gap-")
}

/// What a poller hands its watchers, in order.
#[derive(Clone, Debug)]
enum Polled {
    /// Rows of one or more revisions, in revision order.
    Rows(Arc<Vec<Row>>),
    /// Compaction (to `compact`) removed ids up to `last` that this poller had not read yet.
    Lost { last: i64, compact: i64 },
}

/// What one server's poller shares with its watchers.
pub struct WatchHub {
    batches: broadcast::Sender<Polled>,
    /// The highest revision the poller has delivered. Locked while an item is published and
    /// while a watcher subscribes, so a watcher either receives an item or starts past it.
    polled: Mutex<i64>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            batches: broadcast::channel(WATCHER_BACKLOG).0,
            polled: Mutex::new(0),
        }
    }
}

impl WatchHub {
    fn lock(&self) -> MutexGuard<'_, i64> {
        self.polled
            .lock()
            .expect("no one panics holding the hub's lock")
    }

    /// The highest revision the poller has delivered.
    pub fn polled(&self) -> i64 {
        *self.lock()
    }

    /// Hands `item` to every watcher (none is fine: nobody is watching yet); the poller has
    /// now delivered everything up to `polled`.
    fn publish(&self, item: Option<Polled>, polled: i64) {
        let mut at = self.lock();
        if let Some(item) = item {
            let _ = self.batches.send(item);
        }
        *at = polled;
    }

    /// A receiver of what is published from now on, and the revision up to which everything
    /// was published before it.
    fn subscribe(&self) -> (broadcast::Receiver<Polled>, i64) {
        let at = self.lock();
        (self.batches.subscribe(), *at)
    }

    /// Up to which revision a watcher that has handed over everything up to `sent` is caught
    /// up: with nothing left in `live`, everything published so far.
    fn caught_up(&self, live: &broadcast::Receiver<Polled>, sent: i64) -> i64 {
        let at = self.lock();
        if live.is_empty() {
            (*at).max(sent)
        } else {
            sent
        }
    }
}

/// Runs the poll loop until the node is killed.
pub async fn poll(store: Arc<KineStore>, hub: Arc<WatchHub>, variant: WatchVariant) {
    let mut last = loop {
        match store.call(DbRequest::CurrentRevision).await {
            Ok(DbResponse::Revision(r)) => break r,
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    hub.publish(None, last);
    // The missing id being waited for, and since when.
    let mut gap: Option<(i64, tokio::time::Instant)> = None;
    let mut more = false;
    loop {
        if !more {
            // Woken by a local insert, or by the tick that catches other servers' inserts.
            let _ = tokio::time::timeout(Duration::from_secs(1), store.inserted().notified()).await;
        }
        let (rows, compact) = match store
            .call(DbRequest::After {
                start: String::new(),
                end: End::Unbounded,
                after: last,
                limit: POLL_BATCH,
            })
            .await
        {
            Ok(DbResponse::Rows { rows, compact, .. }) => (rows, compact),
            _ => {
                crate::probe!("kine.poll.failed");
                continue;
            }
        };
        more = rows.len() as i64 == POLL_BATCH;
        if rows.iter().any(|r| r.lease != 0) {
            // A key attached to a lease, perhaps granted through another server.
            store.leases_in_use();
        }
        let mut batch = Vec::new();
        for row in rows {
            // Ids up to the compact revision that never came were compacted away before this
            // poller read them (an insert still pending there commits above it): nothing to
            // wait for or fill, but watchers still behind them are told.
            if row.id > last + 1 && last < compact {
                if !batch.is_empty() {
                    hub.publish(
                        Some(Polled::Rows(Arc::new(std::mem::take(&mut batch)))),
                        last,
                    );
                }
                last = (row.id - 1).min(compact);
                crate::probe!("kine.poll.ids_compacted_unread");
                hub.publish(Some(Polled::Lost { last, compact }), last);
            }
            let next = last + 1;
            // The re-created bug (gap-skip) gives up on a missing id at once.
            if row.id != next && variant != WatchVariant::GapSkip {
                match gap {
                    Some((id, since)) if id == next && since.elapsed() >= GAP_FILL_AFTER => {
                        // A failed fill means the row arrived after all; either way, poll again.
                        crate::probe!("kine.poll.gap_filled");
                        let _ = store.call(DbRequest::Fill { id: next }).await;
                    }
                    Some((id, _)) if id == next => crate::probe!("kine.poll.gap_waited"),
                    _ => gap = Some((next, tokio::time::Instant::now())),
                }
                more = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
                break;
            }
            gap = None;
            last = row.id;
            if !is_fill(&row.name) {
                batch.push(row);
            }
        }
        let rows = (!batch.is_empty()).then(|| Polled::Rows(Arc::new(batch)));
        hub.publish(rows, last);
    }
}

/// What a watcher hands its stream.
#[derive(Debug)]
pub enum WatchItem {
    /// Rows of one or more revisions, in revision order.
    Rows(Vec<Row>),
    /// Every row up to this revision has been handed over.
    Progress(i64),
}

/// Why a watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The start revision is compacted; `compact_revision` is the oldest still available.
    Compacted {
        compact_revision: i64,
    },
    /// The watcher fell too far behind the poller and must resume from its last revision.
    Lagged,
    Failed(StoreError),
}

fn in_range(name: &str, key: &str, end: &Option<End>) -> bool {
    match end {
        None => name == key,
        Some(End::Unbounded) => name >= key,
        Some(End::Exclusive(e)) => {
            if name < e.as_str() {
                return name >= key;
            }
            // Only a row already outside the range pays for the probe's comparison.
            if name == e.as_str() {
                crate::probe!("watch.kine.event_at_range_end");
            }
            false
        }
    }
}

/// One watcher: history from `start_revision` (0 = from now), then live rows, for `key` (and
/// `end`). `progress` asks for a progress item; items go to `out` until it closes.
pub async fn run_watcher(
    store: Arc<KineStore>,
    hub: Arc<WatchHub>,
    key: String,
    end: Option<End>,
    start_revision: i64,
    mut progress: tokio::sync::mpsc::Receiver<()>,
    out: tokio::sync::mpsc::Sender<WatchItem>,
) -> WatchEnd {
    // Subscribe before reading history, so nothing polled in between is missed.
    let (mut live, mut sent) = hub.subscribe();
    if start_revision > 0 {
        let (start, stop) = match &end {
            None => (key.clone(), End::Exclusive(format!("{key}\0"))),
            Some(e) => (key.clone(), e.clone()),
        };
        let history = store
            .call(DbRequest::After {
                start,
                end: stop,
                after: start_revision - 1,
                limit: 0,
            })
            .await;
        let (compact, rows) = match history {
            Ok(DbResponse::Rows { compact, rows, .. }) => (compact, rows),
            Ok(other) => unreachable!("After answered {other:?}"),
            Err(e) => return WatchEnd::Failed(e),
        };
        if start_revision == compact {
            crate::probe!("watch.kine.opened_at_compact_revision");
        }
        if start_revision < compact {
            crate::probe!("watch.kine.start_compacted");
            return WatchEnd::Compacted {
                compact_revision: compact,
            };
        }
        let rows: Vec<Row> = rows
            .into_iter()
            .filter(|r| !is_fill(&r.name) && r.id <= sent && in_range(&r.name, &key, &end))
            .collect();
        if !rows.is_empty() && out.send(WatchItem::Rows(rows)).await.is_err() {
            return WatchEnd::Failed(StoreError::Database("watch stream closed".into()));
        }
        // Live rows continue strictly after what history could have covered.
        sent = sent.max(start_revision - 1);
    }
    loop {
        tokio::select! {
            biased;
            batch = live.recv() => match batch {
                // Compaction took ids this watcher still needed: from below the compact
                // revision, it is cancelled as etcd cancels a watcher compaction overtook.
                // One from exactly the compact revision goes on: compaction keeps the row at
                // the compact revision (see `Log::delete_compacted`), so it lost nothing.
                Ok(Polled::Lost { last, compact }) => {
                    if sent < last && sent + 1 < compact {
                        crate::probe!("watch.kine.cancelled_as_compacted");
                        return WatchEnd::Compacted { compact_revision: compact };
                    }
                    sent = sent.max(last);
                }
                Ok(Polled::Rows(batch)) => {
                    let rows: Vec<Row> = batch
                        .iter()
                        .filter(|r| r.id > sent && in_range(&r.name, &key, &end))
                        .cloned()
                        .collect();
                    if let Some(last) = batch.last() {
                        sent = sent.max(last.id);
                    }
                    if !rows.is_empty() && out.send(WatchItem::Rows(rows)).await.is_err() {
                        return WatchEnd::Failed(StoreError::Database("watch stream closed".into()));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    crate::probe!("watch.kine.lagged");
                    return WatchEnd::Lagged;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return WatchEnd::Failed(StoreError::Database("poller stopped".into()))
                }
            },
            asked = progress.recv() => {
                if asked.is_none() {
                    return WatchEnd::Failed(StoreError::Database("watch stream closed".into()));
                }
                // The biased select drains batches first, so with none pending every row the
                // poller has delivered is handed over; otherwise only what was sent counts.
                let upto = hub.caught_up(&live, sent);
                if out.send(WatchItem::Progress(upto)).await.is_err() {
                    return WatchEnd::Failed(StoreError::Database("watch stream closed".into()));
                }
            }
        }
    }
}

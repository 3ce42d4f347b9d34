//! The database: kine's log table behind one request type, each request one transaction.
//!
//! This is what a kine server's driver talks to, in-process (single topology) or over the
//! simulated network (the HA topology's database node). It owns the SQLite connection, which is the
//! node's durable disk: the world keeps it across restarts, and a request that never reaches
//! `execute` (killed first) leaves no trace. It reports every committed row and every compaction.

use super::sql::{self, End, Log, NewRow, Row, SqlError, COMPACT_REV_KEY};
use crate::faults::CompactFault;
use crate::observe::{SharedObserver, StoreEvent};
use serde::{Deserialize, Serialize};

/// One driver call. Each is executed as one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbRequest {
    /// Creates the schema's `compact_rev_key` row if missing and merges duplicates.
    Startup,
    CurrentRevision,
    CompactRevision,
    Get {
        name: String,
        revision: i64,
    },
    List {
        start: String,
        end: End,
        revision: i64,
        limit: i64,
        include_deleted: bool,
        /// Order (and so limit) by id instead of by key: only the kine-298 variant asks this.
        #[serde(default)]
        by_id: bool,
    },
    Count {
        start: String,
        end: End,
        revision: i64,
    },
    After {
        start: String,
        end: End,
        after: i64,
        limit: i64,
    },
    Insert(NewRow),
    /// Fills a gap in the id sequence with a deleted `gap-<id>` row, as kine's poller does.
    Fill {
        id: i64,
    },
    /// One compaction batch (kine's `compact`): check the stored compact revision is `expected`,
    /// clamp `target` to `current - min_retain`, delete, record, commit.
    CompactBatch {
        expected: i64,
        target: i64,
        min_retain: i64,
        fault: Option<CompactFault>,
    },
}

/// Every answer carries the revisions a kine caller needs alongside its rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbResponse {
    Revisions {
        current: i64,
        compact: i64,
    },
    Revision(i64),
    Rows {
        current: i64,
        compact: i64,
        rows: Vec<Row>,
    },
    Row {
        current: i64,
        compact: i64,
        row: Option<Row>,
    },
    Count {
        current: i64,
        compact: i64,
        count: i64,
    },
    Inserted(i64),
    Compact(CompactReply),
}

/// How a compaction batch ended inside the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactReply {
    Committed {
        compacted: i64,
        current: i64,
    },
    /// The stored compact revision was not the expected one.
    Mismatch {
        stored: i64,
        current: i64,
    },
    /// The clamped target is at or below the stored compact revision.
    AlreadyCompacted {
        stored: i64,
        current: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DbError {
    #[error("UNIQUE constraint failed: kine.name, kine.prev_revision")]
    UniqueViolation,
    #[error("database is locked")]
    Locked,
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    #[error("{0}")]
    Other(String),
}

impl From<SqlError> for DbError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::UniqueViolation => DbError::UniqueViolation,
            SqlError::Sqlite(e) => DbError::Other(e.to_string()),
        }
    }
}

/// The database's committed state and its observer.
pub struct Database {
    conn: rusqlite::Connection,
    observer: SharedObserver,
}

impl Database {
    pub fn open(observer: SharedObserver) -> Result<Self, DbError> {
        let conn = sql::open()?;
        Ok(Database { conn, observer })
    }

    /// Swaps the observer, so events after a restart are attributed to the new incarnation.
    pub fn set_observer(&mut self, observer: SharedObserver) {
        self.observer = observer;
    }

    /// Reports the committed state, as a database does when it (re)opens its files.
    pub fn announce(&self) -> Result<(), DbError> {
        let log = Log::new(&self.conn);
        self.observer.record(StoreEvent::DbStarted {
            current_revision: log.current_revision()?,
            compact_revision: log.compact_revision()?,
            rows: log.row_count()?,
        });
        Ok(())
    }

    /// Executes one request as one transaction. A `ReplyLost` fault commits as usual: losing the
    /// reply is the caller's transport's business.
    pub fn execute(&mut self, req: &DbRequest) -> Result<DbResponse, DbError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| DbError::Other(e.to_string()))?;
        let log = Log::of_tx(&tx);
        let revisions = |log: &Log<'_>| -> Result<(i64, i64), DbError> {
            Ok((log.current_revision()?, log.compact_revision()?))
        };
        let mut inserted: Option<(i64, NewRow)> = None;
        let mut compacted: Option<StoreEvent> = None;
        let resp = match req {
            DbRequest::Startup => {
                startup(&log, &mut inserted)?;
                let (current, compact) = revisions(&log)?;
                DbResponse::Revisions { current, compact }
            }
            DbRequest::CurrentRevision => DbResponse::Revision(log.current_revision()?),
            DbRequest::CompactRevision => DbResponse::Revision(log.compact_revision()?),
            DbRequest::Get { name, revision } => {
                let (current, compact) = revisions(&log)?;
                let row = log.get(name, *revision)?;
                DbResponse::Row {
                    current,
                    compact,
                    row,
                }
            }
            DbRequest::List {
                start,
                end,
                revision,
                limit,
                include_deleted,
                by_id,
            } => {
                let (current, compact) = revisions(&log)?;
                let rows = log.list(start, end, *revision, *limit, *include_deleted, *by_id)?;
                DbResponse::Rows {
                    current,
                    compact,
                    rows,
                }
            }
            DbRequest::Count {
                start,
                end,
                revision,
            } => {
                let (current, compact) = revisions(&log)?;
                let count = log.count(start, end, *revision)?;
                DbResponse::Count {
                    current,
                    compact,
                    count,
                }
            }
            DbRequest::After {
                start,
                end,
                after,
                limit,
            } => {
                let (current, compact) = revisions(&log)?;
                let rows = log.after(start, end, *after, *limit)?;
                DbResponse::Rows {
                    current,
                    compact,
                    rows,
                }
            }
            DbRequest::Insert(row) => {
                let id = log.insert(row)?;
                inserted = Some((id, row.clone()));
                DbResponse::Inserted(id)
            }
            DbRequest::Fill { id } => {
                let row = NewRow {
                    name: format!("gap-{id}"),
                    deleted: true,
                    ..Default::default()
                };
                log.insert_at(*id, &row)?;
                inserted = Some((*id, row));
                DbResponse::Inserted(*id)
            }
            DbRequest::CompactBatch {
                expected,
                target,
                min_retain,
                fault,
            } => {
                let (reply, event) = compact_batch(&log, *expected, *target, *min_retain, *fault)?;
                compacted = event;
                DbResponse::Compact(reply)
            }
        };
        let rolled_back = match &compacted {
            Some(StoreEvent::DbCompact { committed, .. }) => !committed,
            _ => false,
        };
        if rolled_back {
            tx.rollback().map_err(|e| DbError::Other(e.to_string()))?;
        } else {
            tx.commit().map_err(|e| DbError::Other(e.to_string()))?;
        }
        if let Some((id, row)) = inserted {
            self.observer.record(StoreEvent::DbInsert {
                id,
                key: row.name,
                created: row.created,
                deleted: row.deleted,
                create_revision: if row.created { id } else { row.create_revision },
                prev_revision: row.prev_revision,
            });
        }
        if let Some(mut event) = compacted {
            if let StoreEvent::DbCompact { rows_after, .. } = &mut event {
                // Counted after commit or rollback, so a partial delete that survived the
                // rollback would show here.
                *rows_after = Log::new(&self.conn).row_count()?;
            }
            self.observer.record(event);
        }
        if rolled_back {
            return Err(DbError::Locked);
        }
        Ok(resp)
    }
}

/// Ensures exactly one `compact_rev_key` row, keeping the highest stored compact revision.
fn startup(log: &Log<'_>, inserted: &mut Option<(i64, NewRow)>) -> Result<(), DbError> {
    let rows = log.compact_rows()?;
    if rows.is_empty() {
        // Creating the marker is an ordinary append, so it consumes revision 1.
        let row = NewRow {
            name: COMPACT_REV_KEY.into(),
            created: true,
            ..Default::default()
        };
        let id = log.insert(&row)?;
        *inserted = Some((id, row));
        return Ok(());
    }
    let keep = rows
        .iter()
        .max_by_key(|(id, rev)| (*rev, *id))
        .map(|(id, _)| *id)
        .expect("rows is not empty");
    for (id, _) in rows {
        if id != keep {
            log.delete_row(id)?;
        }
    }
    Ok(())
}

/// kine's `safeCompactRev`: never compact the newest `min_retain` revisions, never below zero.
pub fn safe_compact_revision(target: i64, current: i64, min_retain: i64) -> i64 {
    target.min(current - min_retain).max(0)
}

fn compact_batch(
    log: &Log<'_>,
    expected: i64,
    target: i64,
    min_retain: i64,
    fault: Option<CompactFault>,
) -> Result<(CompactReply, Option<StoreEvent>), DbError> {
    let current = log.current_revision()?;
    let stored = log.compact_revision()?;
    if stored != expected {
        return Ok((CompactReply::Mismatch { stored, current }, None));
    }
    let target = safe_compact_revision(target, current, min_retain);
    if target <= expected {
        return Ok((CompactReply::AlreadyCompacted { stored, current }, None));
    }
    let rows_before = log.row_count()?;
    let deleted_rows = log.delete_compacted(target)?;
    let locked = fault == Some(CompactFault::DatabaseLocked);
    if !locked {
        log.set_compact_revision(target)?;
    }
    let event = StoreEvent::DbCompact {
        from: expected,
        to: target,
        committed: !locked,
        deleted_rows,
        rows_before,
        rows_after: rows_before, // filled in after commit or rollback
        stored_before: stored,
        stored_after: if locked { stored } else { target },
    };
    Ok((
        CompactReply::Committed {
            compacted: target,
            current,
        },
        Some(event),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observer;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Collect(Mutex<Vec<StoreEvent>>);
    impl Observer for Collect {
        fn record(&self, e: StoreEvent) {
            self.0.lock().unwrap().push(e);
        }
    }

    fn db_with_history(n: i64) -> (Database, Arc<Collect>) {
        let obs = Arc::new(Collect::default());
        let mut db = Database::open(obs.clone()).unwrap();
        db.execute(&DbRequest::Startup).unwrap();
        let mut prev = 0;
        for _ in 0..n {
            let row = NewRow {
                name: "/registry/pods/ns/a".into(),
                created: prev == 0,
                prev_revision: prev,
                ..Default::default()
            };
            match db.execute(&DbRequest::Insert(row)).unwrap() {
                DbResponse::Inserted(id) => prev = id,
                other => panic!("unexpected {other:?}"),
            }
        }
        (db, obs)
    }

    #[test]
    fn startup_creates_the_marker_at_revision_one_once() {
        let (mut db, _) = db_with_history(0);
        db.execute(&DbRequest::Startup).unwrap();
        assert_eq!(
            db.execute(&DbRequest::CurrentRevision).unwrap(),
            DbResponse::Revision(1)
        );
    }

    #[test]
    fn a_locked_batch_rolls_back_its_deletes() {
        let (mut db, obs) = db_with_history(10);
        let req = DbRequest::CompactBatch {
            expected: 0,
            target: 8,
            min_retain: 0,
            fault: Some(CompactFault::DatabaseLocked),
        };
        assert_eq!(db.execute(&req), Err(DbError::Locked));
        let events = obs.0.lock().unwrap();
        let Some(StoreEvent::DbCompact {
            committed,
            deleted_rows,
            rows_before,
            rows_after,
            ..
        }) = events.last().cloned()
        else {
            panic!("no compaction event")
        };
        assert!(!committed);
        assert!(deleted_rows > 0, "the DELETE ran before the failure");
        assert_eq!(rows_before, rows_after, "the rollback restored every row");
        drop(events);
        assert_eq!(
            db.execute(&DbRequest::CompactRevision).unwrap(),
            DbResponse::Revision(0)
        );
    }

    #[test]
    fn a_batch_checks_the_stored_revision_and_clamps_to_min_retain() {
        let (mut db, _) = db_with_history(10); // revisions 1..=11
        let batch = |expected, target| DbRequest::CompactBatch {
            expected,
            target,
            min_retain: 5,
            fault: None,
        };
        assert_eq!(
            db.execute(&batch(0, 100)).unwrap(),
            DbResponse::Compact(CompactReply::Committed {
                compacted: 6,
                current: 11
            })
        );
        assert_eq!(
            db.execute(&batch(0, 100)).unwrap(),
            DbResponse::Compact(CompactReply::Mismatch {
                stored: 6,
                current: 11
            })
        );
        assert_eq!(
            db.execute(&batch(6, 100)).unwrap(),
            DbResponse::Compact(CompactReply::AlreadyCompacted {
                stored: 6,
                current: 11
            })
        );
    }
}

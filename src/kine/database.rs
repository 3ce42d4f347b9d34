//! The database: kine's log table behind one request type, each request one transaction.
//!
//! This is what a kine server's driver talks to, in-process (single topology) or over the
//! simulated network (the HA topology's database node). It owns the SQLite connection, which is the
//! node's durable disk: the world keeps it across restarts, and a request that never reaches
//! `execute` (killed first) leaves no trace. It reports every committed row and every compaction.

use super::lease::{self, Appender, LeaseAnswer};
use super::sql::{self, End, Log, NewRow, Row, SqlError, COMPACT_REV_KEY};
use crate::design::InsertVariant;
use crate::faults::CompactFault;
use crate::observe::{SharedObserver, StoreEvent};
use serde::{Deserialize, Serialize};

/// One driver call. Each is executed as one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbRequest {
    /// Creates the schema's `compact_rev_key` row if missing and merges duplicates; renews
    /// every lease to its full TTL, as etcd's new leader does, so time a server was down (or
    /// restarting) never counts against a lease.
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
        /// When the limit cuts the page, also count the range from this key at the listed
        /// revision, in the same transaction: a separate Count could see commits the list did
        /// not (a mysql-like insert below the revision committing in between).
        #[serde(default)]
        count_from: String,
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
    /// The lease requests (`lease.rs`), each one transaction at the database's clock.
    LeaseGrant {
        id: i64,
        ttl_s: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseRenew {
        id: i64,
    },
    LeaseTimeToLive {
        id: i64,
        keys: bool,
    },
    LeaseLeases,
    /// Expires at most `limit` leases past their deadline.
    LeaseExpire {
        limit: i64,
    },
}

impl DbRequest {
    fn is_lease(&self) -> bool {
        matches!(
            self,
            DbRequest::LeaseGrant { .. }
                | DbRequest::LeaseRevoke { .. }
                | DbRequest::LeaseRenew { .. }
                | DbRequest::LeaseTimeToLive { .. }
                | DbRequest::LeaseLeases
                | DbRequest::LeaseExpire { .. }
        )
    }
}

/// Every answer carries the revisions a kine caller needs alongside its rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbResponse {
    /// Startup's answer: the revisions and how many leases the database holds.
    Started {
        current: i64,
        compact: i64,
        leases: i64,
    },
    Revision(i64),
    Rows {
        current: i64,
        compact: i64,
        rows: Vec<Row>,
    },
    /// A List's rows, with the range's count when the limit cut the page.
    Page {
        current: i64,
        compact: i64,
        rows: Vec<Row>,
        count: Option<i64>,
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
    /// A lease request's answer, the current revision after it and how many rows it appended.
    Lease {
        current: i64,
        appended: usize,
        answer: LeaseAnswer,
    },
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
    #[error("a newer row of this key exists")]
    Superseded,
    #[error("database is locked")]
    Locked,
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// A lease request or an attaching write named a lease that does not exist.
    #[error("{}", crate::error::LEASE_NOT_FOUND)]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("{0}")]
    Other(String),
}

impl From<SqlError> for DbError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::UniqueViolation => DbError::UniqueViolation,
            SqlError::Superseded => DbError::Superseded,
            SqlError::Sqlite(e) => DbError::Other(e.to_string()),
        }
    }
}

/// How the database orders the rows it appends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Dialect {
    /// SQLite: one writer at a time, an insert's id is assigned when it commits, so ids become
    /// visible in order and never leave a gap.
    #[default]
    Sqlite,
    /// MySQL/PostgreSQL: an insert reserves its id when it starts and its row becomes visible
    /// when it commits, after a drawn delay. Ids can become visible out of order, and an insert
    /// that is aborted leaves its id unused for ever.
    MysqlLike {
        /// Percent of inserts whose commit is slow.
        slow_commit_pct: u32,
        /// How long a slow commit takes, drawn uniformly; other commits take 0-2 ms.
        slow_commit_ms: (u64, u64),
    },
}

impl Dialect {
    /// How long an insert holds its reserved id before committing (zero for SQLite).
    pub fn draw_commit_delay(&self) -> std::time::Duration {
        use rand::Rng;
        let ms = match *self {
            Dialect::Sqlite => 0,
            Dialect::MysqlLike {
                slow_commit_pct,
                slow_commit_ms: (lo, hi),
            } => {
                let mut rng = madsim::rand::thread_rng();
                if rng.gen_range(0..100) < slow_commit_pct {
                    rng.gen_range(lo..=hi.max(lo))
                } else {
                    rng.gen_range(0..=2)
                }
            }
        };
        std::time::Duration::from_millis(ms)
    }
}

/// An insert that has reserved its id but not committed (mysql-like dialect only).
#[derive(Clone, Debug)]
struct Pending {
    name: String,
    prev_revision: i64,
}

/// The database's committed state, its in-flight reservations and its observer.
pub struct Database {
    conn: rusqlite::Connection,
    observer: SharedObserver,
    dialect: Dialect,
    /// The next id a mysql-like insert reserves; like InnoDB's persisted counter it survives
    /// restarts and never goes back.
    next_id: i64,
    pending: std::collections::BTreeMap<i64, Pending>,
    insert: InsertVariant,
    /// Set by the real server over a file that commits without syncing: makes commits durable
    /// in groups before they are answered. None in the simulator (its database is memory).
    group_commit: Option<std::sync::Arc<dyn GroupCommit>>,
}

/// Group commit: the connection commits without syncing, and whoever answers a request first
/// waits until every commit made before it is on disk, one sync serving all who wait at once.
/// This is how etcd batches its WAL fsyncs; an answer never reports a write a crash could lose.
pub trait GroupCommit: Send + Sync {
    /// Taken under the database lock right after a request ran: for a write, its own commit;
    /// for a read, the newest commit it could have seen.
    fn ticket(&self, wrote: bool) -> u64;
    /// Resolves once every commit up to `ticket` is durable.
    fn durable(
        &self,
        ticket: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;
}

impl DbRequest {
    /// True for the requests that only read (their transactions commit nothing). Any other,
    /// including one added later, counts as a write and is synced before it is answered.
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            DbRequest::CurrentRevision
                | DbRequest::CompactRevision
                | DbRequest::Get { .. }
                | DbRequest::List { .. }
                | DbRequest::Count { .. }
                | DbRequest::After { .. }
        )
    }
}

impl Database {
    pub fn open(observer: SharedObserver) -> Result<Self, DbError> {
        Self::open_with(observer, Dialect::Sqlite)
    }

    pub fn open_with(observer: SharedObserver, dialect: Dialect) -> Result<Self, DbError> {
        Self::with_connection(sql::open()?, observer, dialect)
    }

    /// A database over a connection the caller opened (the real server's file), with kine's
    /// schema created if missing.
    pub fn with_connection(
        conn: rusqlite::Connection,
        observer: SharedObserver,
        dialect: Dialect,
    ) -> Result<Self, DbError> {
        let conn = sql::with_schema(conn)?;
        Ok(Database {
            conn,
            observer,
            dialect,
            next_id: 1,
            pending: Default::default(),
            insert: InsertVariant::Fixed,
            group_commit: None,
        })
    }

    /// Commits become durable through `group` (see [`GroupCommit`]).
    pub fn with_group_commit(mut self, group: std::sync::Arc<dyn GroupCommit>) -> Self {
        self.group_commit = Some(group);
        self
    }

    /// The wait, if any, before the answer to a request that just ran may leave.
    pub fn durable_after(
        &self,
        req: &DbRequest,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>> {
        let group = self.group_commit.as_ref()?;
        Some(group.durable(group.ticket(!req.reads_only())))
    }

    /// Selects what guards an append (the fixed design unless told otherwise).
    pub fn with_insert(mut self, insert: InsertVariant) -> Self {
        self.insert = insert;
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a mysql-like insert: checks kine's (name, prev_revision) guard against committed
    /// rows and other in-flight inserts, and reserves the next id. The row is not visible until
    /// `commit_reserved`; if that never happens, the id stays a gap. The fixed design also refuses
    /// while a row of the key newer than the previous one is committed or in flight, as the row
    /// lock a guarded insert takes would: nothing else can commit for the key until this one
    /// commits or aborts.
    pub fn reserve(&mut self, row: &NewRow) -> Result<i64, DbError> {
        let log = Log::new(&self.conn);
        attachable(&log, row)?;
        let clash = self
            .pending
            .values()
            .any(|p| p.name == row.name && p.prev_revision == row.prev_revision);
        if clash || log.has_row(&row.name, row.prev_revision)? {
            crate::probe!("kine.insert.reserve_unique_violation");
            return Err(DbError::UniqueViolation);
        }
        if self.insert == InsertVariant::Fixed
            && (self.pending.values().any(|p| p.name == row.name)
                || log.has_newer(&row.name, row.prev_revision)?)
        {
            crate::probe!("kine.insert.reserve_superseded");
            return Err(DbError::Superseded);
        }
        let id = self.next_id.max(log.current_revision()? + 1);
        self.next_id = id + 1;
        self.pending.insert(
            id,
            Pending {
                name: row.name.clone(),
                prev_revision: row.prev_revision,
            },
        );
        Ok(id)
    }

    /// Commits a reserved insert. If a premature gap fill took its id meanwhile, or compaction
    /// passed it (a row there would be history no watcher reads), the insert is retried under a
    /// fresh id, so it is never lost. Returns the id the row committed under.
    pub fn commit_reserved(&mut self, id: i64, row: &NewRow) -> Result<i64, DbError> {
        self.pending.remove(&id);
        let tx = self
            .conn
            .transaction()
            .map_err(|e| DbError::Other(e.to_string()))?;
        let log = Log::of_tx(&tx);
        // The lease may have been revoked while the insert was in flight.
        attachable(&log, row)?;
        let id = if log.has_id(id)? || id <= log.compact_revision()? {
            crate::probe!("kine.insert.recommitted_under_fresh_id");
            let fresh = self.next_id.max(log.current_revision()? + 1);
            self.next_id = fresh + 1;
            fresh
        } else {
            id
        };
        log.insert_at(id, row)?;
        tx.commit().map_err(|e| DbError::Other(e.to_string()))?;
        self.record_insert(id, row.clone());
        Ok(id)
    }

    /// Gives up a reserved insert (its caller was cut off or timed out): its id stays unused.
    pub fn abort_reserved(&mut self, id: i64) {
        if let Some(p) = self.pending.remove(&id) {
            crate::probe!("kine.insert.aborted");
            self.observer
                .record(StoreEvent::DbInsertAborted { id, key: p.name });
        }
    }

    fn record_insert(&self, id: i64, row: NewRow) {
        self.observer.record(StoreEvent::DbInsert {
            id,
            key: row.name,
            created: row.created,
            deleted: row.deleted,
            create_revision: if row.created { id } else { row.create_revision },
            prev_revision: row.prev_revision,
        });
    }

    /// Swaps the observer, so events after a restart are attributed to the new incarnation.
    pub fn set_observer(&mut self, observer: SharedObserver) {
        self.observer = observer;
    }

    /// Reports the committed state, as a database does when it (re)opens its files. Inserts that
    /// were in flight when it went down never commit.
    pub fn announce(&mut self) -> Result<(), DbError> {
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            self.abort_reserved(id);
        }
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
        let guarded = self.insert == InsertVariant::Fixed;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| DbError::Other(e.to_string()))?;
        let log = Log::of_tx(&tx);
        let revisions = |log: &Log<'_>| -> Result<(i64, i64), DbError> {
            Ok((log.current_revision()?, log.compact_revision()?))
        };
        let mut inserted: Vec<(i64, NewRow)> = Vec::new();
        let mut compacted: Option<StoreEvent> = None;
        let resp = match req {
            DbRequest::Startup => {
                startup(&log, &mut inserted)?;
                let leases = log.renew_all_leases(lease::now_ms())?;
                let (current, compact) = revisions(&log)?;
                DbResponse::Started {
                    current,
                    compact,
                    leases,
                }
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
                count_from,
            } => {
                let (current, compact) = revisions(&log)?;
                let rows = log.list(start, end, *revision, *limit, *include_deleted, *by_id)?;
                let cut = *limit > 0 && rows.len() as i64 >= *limit;
                let at = if *revision > 0 { *revision } else { current };
                let count = if cut {
                    Some(log.count(count_from, end, at)?)
                } else {
                    None
                };
                DbResponse::Page {
                    current,
                    compact,
                    rows,
                    count,
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
                attachable(&log, row)?;
                let id = if guarded {
                    log.insert_if_newest(row)?
                } else {
                    log.insert(row)?
                };
                inserted.push((id, row.clone()));
                DbResponse::Inserted(id)
            }
            DbRequest::Fill { id } => {
                let compact = log.compact_revision()?;
                if *id <= compact {
                    crate::probe!("kine.poll.fill_refused_below_compact");
                    // Compaction removed whatever was there, and a pending insert commits above
                    // the compact revision: there is no gap to fill, and filling would put a
                    // second row at an id that may have held one.
                    return Err(DbError::Other(format!(
                        "id {id} is at or below the compact revision {compact}: nothing to fill"
                    )));
                }
                let row = NewRow {
                    name: format!("gap-{id}"),
                    deleted: true,
                    ..Default::default()
                };
                log.insert_at(*id, &row)?;
                inserted.push((*id, row));
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
            lease_request => {
                debug_assert!(lease_request.is_lease());
                let mysql_like = self.dialect != Dialect::Sqlite;
                let answer = Appender {
                    log: &log,
                    next_id: mysql_like.then_some(&mut self.next_id),
                    inserted: &mut inserted,
                }
                .lease(lease_request, lease::now_ms())?;
                DbResponse::Lease {
                    current: log.current_revision()?,
                    appended: inserted.len(),
                    answer,
                }
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
        for (id, row) in inserted {
            self.record_insert(id, row);
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
fn startup(log: &Log<'_>, inserted: &mut Vec<(i64, NewRow)>) -> Result<(), DbError> {
    let rows = log.compact_rows()?;
    if rows.is_empty() {
        // Creating the marker is an ordinary append, so it consumes revision 1.
        let row = NewRow {
            name: COMPACT_REV_KEY.into(),
            created: true,
            ..Default::default()
        };
        let id = log.insert(&row)?;
        inserted.push((id, row));
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

/// A row naming a lease may be appended only while that lease exists (etcd refuses a Put naming
/// an unknown lease); checked in the transaction that appends it, so a revoke cannot slip between.
fn attachable(log: &Log<'_>, row: &NewRow) -> Result<(), DbError> {
    if row.lease != 0 && log.lease(row.lease)?.is_none() {
        return Err(DbError::LeaseNotFound);
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
    if min_retain > 0 && safe_compact_revision(target, current, min_retain) < target {
        crate::probe!("kine.compact.target_clamped_by_min_retain");
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

    #[test]
    fn a_mysql_like_insert_is_invisible_until_commit_and_guarded_while_pending() {
        let obs = Arc::new(Collect::default());
        let dialect = Dialect::MysqlLike {
            slow_commit_pct: 0,
            slow_commit_ms: (0, 0),
        };
        let mut db = Database::open_with(obs.clone(), dialect).unwrap();
        db.execute(&DbRequest::Startup).unwrap();
        let row = NewRow {
            name: "/a".into(),
            created: true,
            ..Default::default()
        };
        let id = db.reserve(&row).unwrap();
        assert_eq!(id, 2);
        assert_eq!(
            db.execute(&DbRequest::CurrentRevision).unwrap(),
            DbResponse::Revision(1),
            "not visible while pending"
        );
        assert_eq!(
            db.reserve(&row),
            Err(DbError::UniqueViolation),
            "a second create of the same key clashes with the pending one"
        );
        let other = NewRow {
            name: "/b".into(),
            created: true,
            ..Default::default()
        };
        let id_b = db.reserve(&other).unwrap();
        assert_eq!(db.commit_reserved(id_b, &other).unwrap(), 3);
        db.abort_reserved(id);
        assert_eq!(
            db.execute(&DbRequest::CurrentRevision).unwrap(),
            DbResponse::Revision(3),
            "3 visible, 2 a gap"
        );
        assert!(obs
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, StoreEvent::DbInsertAborted { id: 2, .. })));
        assert_eq!(db.reserve(&row).unwrap(), 4, "ids never go back");
    }

    #[test]
    fn a_mysql_like_revoke_takes_ids_past_a_pending_insert_and_refuses_a_gone_lease() {
        let dialect = Dialect::MysqlLike {
            slow_commit_pct: 0,
            slow_commit_ms: (0, 0),
        };
        let mut db = Database::open_with(Arc::new(Collect::default()), dialect).unwrap();
        db.execute(&DbRequest::Startup).unwrap(); // 1
        db.execute(&DbRequest::LeaseGrant { id: 7, ttl_s: 60 })
            .unwrap();
        let leased = NewRow {
            name: "/held".into(),
            created: true,
            lease: 7,
            ..Default::default()
        };
        let id = db.reserve(&leased).unwrap();
        db.commit_reserved(id, &leased).unwrap(); // 2
        let pending = NewRow {
            name: "/slow".into(),
            created: true,
            ..Default::default()
        };
        let slow = db.reserve(&pending).unwrap(); // 3, in flight
        let DbResponse::Lease {
            current, answer, ..
        } = db.execute(&DbRequest::LeaseRevoke { id: 7 }).unwrap()
        else {
            panic!("a revoke answers as a lease request")
        };
        assert_eq!(
            answer,
            LeaseAnswer::Revoked {
                deleted: vec!["/held".into()]
            }
        );
        assert_eq!(
            current,
            slow + 1,
            "the tombstone did not take the reserved id"
        );
        assert_eq!(db.commit_reserved(slow, &pending).unwrap(), slow);
        let late = NewRow {
            name: "/late".into(),
            created: true,
            lease: 7,
            ..Default::default()
        };
        assert_eq!(db.reserve(&late), Err(DbError::LeaseNotFound));
    }

    #[test]
    fn nothing_is_filled_or_committed_at_or_below_the_compact_revision() {
        let obs = Arc::new(Collect::default());
        let dialect = Dialect::MysqlLike {
            slow_commit_pct: 0,
            slow_commit_ms: (0, 0),
        };
        let mut db = Database::open_with(obs, dialect).unwrap();
        db.execute(&DbRequest::Startup).unwrap(); // 1
        let pending = NewRow {
            name: "/slow".into(),
            created: true,
            ..Default::default()
        };
        let slow = db.reserve(&pending).unwrap(); // 2, still in flight
        for name in ["/a", "/b", "/c"] {
            let row = NewRow {
                name: name.into(),
                created: true,
                ..Default::default()
            };
            let id = db.reserve(&row).unwrap();
            db.commit_reserved(id, &row).unwrap(); // 3, 4, 5
        }
        let compact = |db: &mut Database| {
            db.execute(&DbRequest::CompactBatch {
                expected: 0,
                target: 4,
                min_retain: 0,
                fault: None,
            })
        };
        compact(&mut db).unwrap();
        assert!(
            db.execute(&DbRequest::Fill { id: 2 }).is_err(),
            "id 2 is below the compact revision 4: no gap row there"
        );
        let committed = db.commit_reserved(slow, &pending).unwrap();
        assert_eq!(
            committed, 6,
            "the late insert lands above the compact revision"
        );
        let DbResponse::Rows { rows, .. } = db
            .execute(&DbRequest::After {
                start: String::new(),
                end: End::Unbounded,
                after: 0,
                limit: 0,
            })
            .unwrap()
        else {
            panic!("After answers rows")
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 3, 4, 5, 6]);
    }

    /// Kine issue 504's starting point: `/k` created (2) and deleted (3), a filler key written
    /// (4), then compaction to 4 removes both of `/k`'s rows. Returns the database and the
    /// tombstone's id, which a create that read it before compaction names as its previous row.
    fn compacted_tombstone(dialect: Dialect, insert: InsertVariant) -> (Database, i64) {
        let mut db = Database::open_with(Arc::new(Collect::default()), dialect)
            .unwrap()
            .with_insert(insert);
        db.execute(&DbRequest::Startup).unwrap(); // 1
        let rows = [
            ("/k", true, false, 0),
            ("/k", false, true, 2),
            ("/x", true, false, 0),
        ];
        for (name, created, deleted, prev) in rows {
            let row = NewRow {
                name: name.into(),
                created,
                deleted,
                prev_revision: prev,
                ..Default::default()
            };
            match dialect {
                Dialect::Sqlite => {
                    db.execute(&DbRequest::Insert(row)).unwrap();
                }
                Dialect::MysqlLike { .. } => {
                    let id = db.reserve(&row).unwrap();
                    db.commit_reserved(id, &row).unwrap();
                }
            }
        }
        db.execute(&DbRequest::CompactBatch {
            expected: 0,
            target: 4,
            min_retain: 0,
            fault: None,
        })
        .unwrap();
        let DbResponse::Row { row, .. } = db
            .execute(&DbRequest::Get {
                name: "/k".into(),
                revision: 0,
            })
            .unwrap()
        else {
            panic!("Get answers a row")
        };
        assert_eq!(row, None, "compaction removed the tombstone");
        (db, 3)
    }

    fn create(prev_revision: i64) -> NewRow {
        NewRow {
            name: "/k".into(),
            created: true,
            prev_revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_create_whose_tombstone_was_compacted_loses_to_the_create_that_beat_it() {
        for insert in [InsertVariant::Fixed, InsertVariant::Kine504] {
            let (mut db, tombstone) = compacted_tombstone(Dialect::Sqlite, insert);
            assert!(db.execute(&DbRequest::Insert(create(0))).is_ok());
            let stale = db.execute(&DbRequest::Insert(create(tombstone)));
            match insert {
                InsertVariant::Fixed => assert_eq!(stale, Err(DbError::Superseded)),
                InsertVariant::Kine504 => assert!(stale.is_ok(), "kine #504: both creates win"),
            }
        }
        // Without a newer row the stale create is simply a create: nothing raced it.
        let (mut db, tombstone) = compacted_tombstone(Dialect::Sqlite, InsertVariant::Fixed);
        assert!(db.execute(&DbRequest::Insert(create(tombstone))).is_ok());
    }

    #[test]
    fn a_mysql_like_create_whose_tombstone_was_compacted_loses_while_the_winner_is_in_flight() {
        let dialect = Dialect::MysqlLike {
            slow_commit_pct: 0,
            slow_commit_ms: (0, 0),
        };
        for insert in [InsertVariant::Fixed, InsertVariant::Kine504] {
            let (mut db, tombstone) = compacted_tombstone(dialect, insert);
            let winner = db.reserve(&create(0)).unwrap();
            let in_flight = db.reserve(&create(tombstone));
            let after_commit = {
                db.commit_reserved(winner, &create(0)).unwrap();
                db.reserve(&create(tombstone))
            };
            match insert {
                InsertVariant::Fixed => {
                    assert_eq!(in_flight, Err(DbError::Superseded));
                    assert_eq!(after_commit, Err(DbError::Superseded));
                }
                InsertVariant::Kine504 => {
                    assert!(in_flight.is_ok(), "kine #504: the index sees no clash");
                    assert_eq!(
                        after_commit,
                        Err(DbError::UniqueViolation),
                        "the in-flight stale create still holds its (name, prev_revision)"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cut_page_is_counted_in_its_own_transaction_at_its_revision() {
        let (mut db, _) = db_with_history(0);
        let mut ids = Vec::new();
        for name in ["/r/a", "/r/b", "/r/c"] {
            let row = NewRow {
                name: name.into(),
                created: true,
                ..Default::default()
            };
            match db.execute(&DbRequest::Insert(row)).unwrap() {
                DbResponse::Inserted(id) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
        let page = |db: &mut Database, revision, limit| {
            db.execute(&DbRequest::List {
                start: "/r/".into(),
                end: End::Exclusive("/r0".into()),
                revision,
                limit,
                include_deleted: false,
                by_id: false,
                count_from: "/r/".into(),
            })
            .unwrap()
        };
        let DbResponse::Page { rows, count, .. } = page(&mut db, 0, 2) else {
            panic!("List answers a page")
        };
        assert_eq!(
            (rows.len(), count),
            (2, Some(3)),
            "cut: the whole range counted"
        );
        let DbResponse::Page { count, .. } = page(&mut db, ids[1], 2) else {
            panic!("List answers a page")
        };
        assert_eq!(
            count,
            Some(2),
            "counted at the listed revision, not the current one"
        );
        let DbResponse::Page { count, .. } = page(&mut db, 0, 5) else {
            panic!("List answers a page")
        };
        assert_eq!(count, None, "an uncut page needs no count");
    }
}

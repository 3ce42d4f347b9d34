//! kine's single-table log over SQLite: the schema, the row queries and the compaction DELETE.
//!
//! Every write appends a row whose `id` is the revision; only the `compact_rev_key` row's
//! `prev_revision` is updated in place. This module is synchronous and knows nothing of networks,
//! time or faults: callers give it whole transactions. It never decides policy (min retain,
//! batching); it executes exactly the statement it is asked for.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// How many prepared statements a connection keeps.
const STATEMENT_CACHE: usize = 64;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,
        created INTEGER,
        deleted INTEGER,
        create_revision INTEGER,
        prev_revision INTEGER,
        lease INTEGER,
        value BLOB,
        old_value BLOB)",
    "CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name)",
    "CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name, id)",
    "CREATE INDEX IF NOT EXISTS kine_id_deleted_index ON kine (id, deleted)",
    "CREATE INDEX IF NOT EXISTS kine_prev_revision_index ON kine (prev_revision)",
    // The guard that makes two writes racing from the same previous row conflict.
    "CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision)",
    // Leases (faultline's own table; real kine has none): the granted TTL and the deadline, in
    // milliseconds of the database's clock, after which any server may expire the lease.
    "CREATE TABLE IF NOT EXISTS kine_lease (
        id INTEGER PRIMARY KEY,
        ttl INTEGER NOT NULL,
        deadline_ms INTEGER NOT NULL)",
    // Finds a lease's keys without scanning the log; rows without a lease are not indexed.
    "CREATE INDEX IF NOT EXISTS kine_lease_index ON kine (lease) WHERE lease != 0",
];

/// An append; ?9 is the id (NULL: the next one).
const INSERT: &str = "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
     VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The same append, made only while no row of the key is newer than its previous row (?5).
const INSERT_IF_NEWEST: &str = "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
     SELECT ?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
     WHERE NOT EXISTS (SELECT 1 FROM kine WHERE name = ?1 AND id > ?5)";

/// One row of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub id: i64,
    pub name: String,
    pub created: bool,
    pub deleted: bool,
    pub create_revision: i64,
    pub prev_revision: i64,
    pub lease: i64,
    pub value: Vec<u8>,
    pub old_value: Vec<u8>,
}

/// A row to append; the database assigns its id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRow {
    pub name: String,
    pub created: bool,
    pub deleted: bool,
    pub create_revision: i64,
    pub prev_revision: i64,
    pub lease: i64,
    pub value: Vec<u8>,
    pub old_value: Vec<u8>,
}

/// The upper end of a key range: kine's `name < end`, or no bound at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    Exclusive(String),
    Unbounded,
}

impl End {
    /// The SQL condition for this end, its bound value (if any) being parameter `?n`.
    fn clause(&self, n: usize) -> String {
        match self {
            End::Exclusive(_) => format!("AND name < ?{n}"),
            End::Unbounded => String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The (name, prev_revision) guard fired: another write to this key won the race.
    #[error("UNIQUE constraint failed: kine.name, kine.prev_revision")]
    UniqueViolation,
    /// A row of this key newer than the writer's previous row exists: another write won the
    /// race, though the unique index could not see it (compaction removed the previous row).
    #[error("a newer row of this key exists")]
    Superseded,
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        created: r.get::<_, i64>(2)? != 0,
        deleted: r.get::<_, i64>(3)? != 0,
        create_revision: r.get(4)?,
        prev_revision: r.get(5)?,
        lease: r.get(6)?,
        value: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
        old_value: r.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default(),
    })
}

const COLUMNS: &str =
    "id, name, created, deleted, create_revision, prev_revision, lease, value, old_value";

const GET: &str =
    "SELECT id, name, created, deleted, create_revision, prev_revision, lease, value, old_value
    FROM kine WHERE name = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1";

/// Opens an in-memory database with kine's schema.
pub fn open() -> Result<Connection, SqlError> {
    with_schema(Connection::open_in_memory()?)
}

/// Creates kine's schema on a connection the caller opened (the real server opens a file),
/// keeping whatever rows it already holds.
pub fn with_schema(conn: Connection) -> Result<Connection, SqlError> {
    // Every statement below is prepared once per connection and kept: re-parsing them was a
    // quarter of a kine run's time. The distinct statement texts (list and count variants
    // included) fit well within this.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    for stmt in SCHEMA {
        conn.execute(stmt, [])?;
    }
    Ok(conn)
}

/// A LIMIT written into a statement's text (none for 0 or less).
fn limit_clause(limit: i64) -> String {
    if limit > 0 {
        format!(" LIMIT {limit}")
    } else {
        String::new()
    }
}

/// Read and write queries over one connection or transaction.
pub struct Log<'c> {
    conn: &'c Connection,
}

impl<'c> Log<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        Log { conn }
    }

    pub fn of_tx(tx: &'c Transaction<'c>) -> Self {
        Log { conn: tx }
    }

    /// One value from a single-row query, through the statement cache.
    fn one<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<T, SqlError> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, |r| r.get(0))?)
    }

    /// Executes a write through the statement cache; returns the rows it changed.
    fn write(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// The current revision: the highest id ever assigned. AUTOINCREMENT keeps it in
    /// `sqlite_sequence`, so compacting away the newest row (a tombstone at the compact
    /// revision) never takes the revision back, live or after a restart; `MAX(id)` alone would.
    pub fn current_revision(&self) -> Result<i64, SqlError> {
        self.one(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kine'), 0),
                        COALESCE((SELECT MAX(id) FROM kine), 0))",
            [],
        )
    }

    /// The stored compact revision, from the `compact_rev_key` row (0 when there is none).
    pub fn compact_revision(&self) -> Result<i64, SqlError> {
        self.one(
            "SELECT COALESCE(MAX(prev_revision), 0) FROM kine WHERE name = ?1",
            [COMPACT_REV_KEY],
        )
    }

    /// True when a row with this (name, prev_revision) exists: kine's unique guard.
    pub fn has_row(&self, name: &str, prev_revision: i64) -> Result<bool, SqlError> {
        self.one(
            "SELECT EXISTS(SELECT 1 FROM kine WHERE name = ?1 AND prev_revision = ?2)",
            params![name, prev_revision],
        )
    }

    /// True when a row with this id exists.
    pub fn has_id(&self, id: i64) -> Result<bool, SqlError> {
        self.one("SELECT EXISTS(SELECT 1 FROM kine WHERE id = ?1)", [id])
    }

    pub fn row_count(&self) -> Result<i64, SqlError> {
        self.one("SELECT COUNT(*) FROM kine", [])
    }

    /// Every `compact_rev_key` row, as (id, stored compact revision).
    pub fn compact_rows(&self) -> Result<Vec<(i64, i64)>, SqlError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, prev_revision FROM kine WHERE name = ?1 ORDER BY id")?;
        let rows = st.query_map([COMPACT_REV_KEY], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For each name in `[start, end)`, its newest row with id <= `revision` (0 = newest of all),
    /// sorted by name; deleted rows only when asked. `limit` 0 means no limit.
    pub fn list(
        &self,
        start: &str,
        end: &End,
        revision: i64,
        limit: i64,
        include_deleted: bool,
        by_id: bool,
    ) -> Result<Vec<Row>, SqlError> {
        let rev = if revision <= 0 { i64::MAX } else { revision };
        // The statement's text carries every choice, the limit included, never a bound value:
        // SQLite re-plans, at every step, a statement whose plan may depend on a value bound to
        // it (a bound LIMIT is one).
        let sql = format!(
            "SELECT {COLUMNS} FROM kine WHERE id IN (
                SELECT MAX(id) FROM kine WHERE name >= ?1 {} AND id <= ?2 GROUP BY name)
             {} ORDER BY {} ASC{}",
            end.clause(3),
            if include_deleted {
                ""
            } else {
                "AND deleted = 0"
            },
            if by_id { "id" } else { "name" },
            limit_clause(limit)
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = match end {
            End::Exclusive(e) => st.query_map(params![start, rev, e], row_from)?,
            End::Unbounded => st.query_map(params![start, rev], row_from)?,
        };
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The number of live names in `[start, end)` at `revision` (0 = newest).
    pub fn count(&self, start: &str, end: &End, revision: i64) -> Result<i64, SqlError> {
        let rev = if revision <= 0 { i64::MAX } else { revision };
        let sql = format!(
            "SELECT COUNT(*) FROM kine WHERE id IN (
                SELECT MAX(id) FROM kine WHERE name >= ?1 {} AND id <= ?2 GROUP BY name)
             AND deleted = 0",
            end.clause(3)
        );
        match end {
            End::Exclusive(e) => self.one(&sql, params![start, rev, e]),
            End::Unbounded => self.one(&sql, params![start, rev]),
        }
    }

    /// The newest row of one name with id <= `revision` (0 = newest), deleted or not.
    pub fn get(&self, name: &str, revision: i64) -> Result<Option<Row>, SqlError> {
        let rev = if revision <= 0 { i64::MAX } else { revision };
        let mut st = self.conn.prepare_cached(GET)?;
        Ok(st.query_row(params![name, rev], row_from).optional()?)
    }

    /// Rows with id > `after` whose name is in `[start, end)`, by id, at most `limit` (0 = all).
    pub fn after(
        &self,
        start: &str,
        end: &End,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Row>, SqlError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM kine WHERE id > ?1 AND name >= ?2 {} ORDER BY id ASC{}",
            end.clause(3),
            limit_clause(limit)
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = match end {
            End::Exclusive(e) => st.query_map(params![after, start, e], row_from)?,
            End::Unbounded => st.query_map(params![after, start], row_from)?,
        };
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends a row and returns its id (the new revision).
    pub fn insert(&self, row: &NewRow) -> Result<i64, SqlError> {
        self.insert_with(INSERT, None, row)
    }

    /// Appends a row only while no row of its key is newer than its previous row, in one
    /// statement. The unique index alone misses the race of kine issue 504: a create that read a
    /// tombstone, which compaction then deleted, no longer collides with the create that beat it.
    pub fn insert_if_newest(&self, row: &NewRow) -> Result<i64, SqlError> {
        self.insert_with(INSERT_IF_NEWEST, None, row)
    }

    /// True when a row of `name` newer than `prev_revision` exists.
    pub fn has_newer(&self, name: &str, prev_revision: i64) -> Result<bool, SqlError> {
        self.one(
            "SELECT EXISTS(SELECT 1 FROM kine WHERE name = ?1 AND id > ?2)",
            params![name, prev_revision],
        )
    }

    /// Inserts a row with a chosen id (a gap fill); fails if that id exists.
    pub fn insert_at(&self, id: i64, row: &NewRow) -> Result<i64, SqlError> {
        self.insert_with(INSERT, Some(id), row)
    }

    /// Runs one of the two insert statements; no row inserted means the newer-row guard fired.
    fn insert_with(&self, sql: &str, id: Option<i64>, row: &NewRow) -> Result<i64, SqlError> {
        let res = self.write(
            sql,
            params![
                row.name,
                row.created as i64,
                row.deleted as i64,
                row.create_revision,
                row.prev_revision,
                row.lease,
                row.value,
                row.old_value,
                id
            ],
        );
        match res {
            Ok(0) => Err(SqlError::Superseded),
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(SqlError::UniqueViolation)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// kine's compaction DELETE for target `revision`: every row some row with id <= revision
    /// names as its previous revision, plus every deleted row with id below revision. The
    /// `compact_rev_key` row's chain is never followed. Returns the number of rows deleted.
    ///
    /// kine deletes a tombstone at exactly the target too; then a watch resumed from the compact
    /// revision, as a compacted watcher is told to, silently misses that DELETE (etcd's #18089
    /// in kine). Keeping it until the next compaction, as etcd's fix keeps its tombstone at the
    /// compact revision, delivers it whole: the tombstone carries its previous value.
    pub fn delete_compacted(&self, revision: i64) -> Result<i64, SqlError> {
        let n = self.write(
            "DELETE FROM kine WHERE id IN (
                SELECT kp.prev_revision FROM kine AS kp
                WHERE kp.name != ?2 AND kp.prev_revision != 0 AND kp.id <= ?1
                UNION
                SELECT kd.id FROM kine AS kd WHERE kd.deleted != 0 AND kd.id < ?1)",
            params![revision, COMPACT_REV_KEY],
        )?;
        Ok(n as i64)
    }

    /// Stores the compact revision in place; this does not consume a revision.
    pub fn set_compact_revision(&self, revision: i64) -> Result<(), SqlError> {
        self.write(
            "UPDATE kine SET prev_revision = ?1 WHERE name = ?2",
            params![revision, COMPACT_REV_KEY],
        )?;
        Ok(())
    }

    /// A lease's granted TTL (seconds) and deadline (ms), if it exists.
    pub fn lease(&self, id: i64) -> Result<Option<(i64, i64)>, SqlError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT ttl, deadline_ms FROM kine_lease WHERE id = ?1")?;
        Ok(st
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Adds a lease; false when one with this id exists.
    pub fn insert_lease(&self, id: i64, ttl: i64, deadline_ms: i64) -> Result<bool, SqlError> {
        let n = self.write(
            "INSERT OR IGNORE INTO kine_lease (id, ttl, deadline_ms) VALUES (?1, ?2, ?3)",
            params![id, ttl, deadline_ms],
        )?;
        Ok(n == 1)
    }

    pub fn delete_lease(&self, id: i64) -> Result<(), SqlError> {
        self.write("DELETE FROM kine_lease WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Moves a lease's deadline to `ttl` seconds after `now_ms`, never earlier than it was.
    pub fn renew_lease(&self, id: i64, now_ms: i64) -> Result<(), SqlError> {
        self.write(
            "UPDATE kine_lease SET deadline_ms = MAX(deadline_ms, ?2 + ttl * 1000) WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// Renews every lease to its full TTL from `now_ms` (never shortening one); returns how
    /// many leases there are.
    pub fn renew_all_leases(&self, now_ms: i64) -> Result<i64, SqlError> {
        self.write(
            "UPDATE kine_lease SET deadline_ms = MAX(deadline_ms, ?1 + ttl * 1000)",
            [now_ms],
        )?;
        self.one("SELECT COUNT(*) FROM kine_lease", [])
    }

    /// Ids of the leases whose deadline is after `now_ms`, ascending.
    pub fn live_leases(&self, now_ms: i64) -> Result<Vec<i64>, SqlError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM kine_lease WHERE deadline_ms > ?1 ORDER BY id")?;
        let ids = st.query_map([now_ms], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// Ids of at most `limit` leases whose deadline is at or before `now_ms`, earliest first.
    pub fn expired_leases(&self, now_ms: i64, limit: i64) -> Result<Vec<i64>, SqlError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM kine_lease WHERE deadline_ms <= ?1 ORDER BY deadline_ms, id LIMIT ?2",
        )?;
        let ids = st.query_map(params![now_ms, limit], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// The newest row of every live key attached to `lease`, by name.
    pub fn leased_rows(&self, lease: i64) -> Result<Vec<Row>, SqlError> {
        // `lease != 0` repeats the partial index's condition so SQLite may use it.
        let sql = format!(
            "SELECT {COLUMNS} FROM kine AS k WHERE k.lease = ?1 AND k.lease != 0 AND k.deleted = 0
             AND NOT EXISTS (SELECT 1 FROM kine WHERE name = k.name AND id > k.id)
             ORDER BY k.name"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([lease], row_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes one row by id (used to merge duplicate `compact_rev_key` rows).
    pub fn delete_row(&self, id: i64) -> Result<(), SqlError> {
        self.write("DELETE FROM kine WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(log: &Log<'_>, name: &str, prev: Option<&Row>, deleted: bool) -> i64 {
        let (created, create_revision, prev_revision) = match prev {
            Some(p) if !p.deleted => (false, p.create_revision, p.id),
            Some(p) => (true, 0, p.id),
            None => (true, 0, 0),
        };
        log.insert(&NewRow {
            name: name.into(),
            created,
            deleted,
            create_revision,
            prev_revision,
            value: b"v".to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn list_sees_the_newest_row_per_name_at_a_revision() {
        let conn = open().unwrap();
        let log = Log::new(&conn);
        let a1 = put(&log, "/a", None, false);
        let b1 = put(&log, "/b", None, false);
        let a1row = log.get("/a", 0).unwrap().unwrap();
        let a2 = put(&log, "/a", Some(&a1row), false);
        let b1row = log.get("/b", 0).unwrap().unwrap();
        put(&log, "/b", Some(&b1row), true);
        let all = End::Exclusive("/c".into());
        let now = log.list("/", &all, 0, 0, false, false).unwrap();
        assert_eq!(now.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a2]);
        let then = log.list("/", &all, b1, 0, false, false).unwrap();
        assert_eq!(then.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a1, b1]);
        assert_eq!(log.count("/", &all, b1).unwrap(), 2);
        // Count starts at the start key, not at the prefix.
        assert_eq!(log.count("/b", &all, b1).unwrap(), 1);
        assert_eq!(log.list("/", &all, b1, 1, false, false).unwrap().len(), 1);
    }

    #[test]
    fn racing_writes_from_one_previous_row_conflict() {
        let conn = open().unwrap();
        let log = Log::new(&conn);
        put(&log, "/a", None, false);
        let first = log.get("/a", 0).unwrap().unwrap();
        put(&log, "/a", Some(&first), false);
        let again = log.insert(&NewRow {
            name: "/a".into(),
            prev_revision: first.id,
            ..Default::default()
        });
        assert!(matches!(again, Err(SqlError::UniqueViolation)));
    }

    #[test]
    fn compaction_keeps_the_newest_version_of_live_keys() {
        let conn = open().unwrap();
        let log = Log::new(&conn);
        put(&log, "/a", None, false); // 1
        let a1 = log.get("/a", 0).unwrap().unwrap();
        put(&log, "/a", Some(&a1), false); // 2 supersedes 1
        put(&log, "/b", None, false); // 3
        let b = log.get("/b", 0).unwrap().unwrap();
        put(&log, "/b", Some(&b), true); // 4 tombstone supersedes 3
        put(&log, "/c", None, false); // 5
        assert_eq!(
            log.delete_compacted(2).unwrap(),
            1,
            "only row 1 is superseded at 2"
        );
        let ids = |log: &Log<'_>| -> Vec<i64> {
            log.after("", &End::Unbounded, 0, 0)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(
            log.delete_compacted(4).unwrap(),
            1,
            "row 3 goes at 4; tombstone 4, at the compact revision, stays"
        );
        assert_eq!(ids(&log), vec![2, 4, 5]);
        assert_eq!(log.delete_compacted(5).unwrap(), 1, "tombstone 4 goes at 5");
        assert_eq!(ids(&log), vec![2, 5]);
    }

    #[test]
    fn compacting_the_newest_tombstone_keeps_the_revision() {
        let conn = open().unwrap();
        let log = Log::new(&conn);
        put(&log, "/a", None, false); // 1
        let a = log.get("/a", 0).unwrap().unwrap();
        let tombstone = put(&log, "/a", Some(&a), true); // 2, the newest row
        assert_eq!(log.delete_compacted(tombstone).unwrap(), 1, "row 1 only");
        assert_eq!(log.delete_compacted(tombstone + 1).unwrap(), 1, "then 2");
        assert_eq!(log.row_count().unwrap(), 0);
        assert_eq!(log.current_revision().unwrap(), tombstone);
        assert_eq!(put(&log, "/b", None, false), tombstone + 1);
    }
}

//! The real server's database: kine's table in a SQLite file in WAL mode, or in memory.
//!
//! Only this file touches the disk. WAL with `synchronous = FULL` makes every acknowledged write
//! durable across a crash or power loss, so a restart finds the same rows and revision.

use anyhow::Context;
use std::sync::{Arc, Mutex};
use store::kine::database::{Database, Dialect};
use store::kine::driver::SharedDatabase;

pub const IN_MEMORY: &str = ":memory:";

pub fn open(path: &str) -> anyhow::Result<SharedDatabase> {
    let conn = if path == IN_MEMORY {
        rusqlite::Connection::open_in_memory()?
    } else {
        let conn = rusqlite::Connection::open(path).context("cannot open the SQLite file")?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .context("cannot read it as a SQLite database")?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "SQLite kept journal mode {mode} instead of WAL"
        );
        conn
    };
    conn.pragma_update(None, "synchronous", "FULL")?;
    let db = Database::with_connection(conn, Arc::new(super::log::Log), Dialect::Sqlite)
        .map_err(|e| anyhow::anyhow!("cannot create kine's table: {e}"))?;
    Ok(Arc::new(Mutex::new(db)))
}

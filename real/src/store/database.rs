//! The real server's database: kine's table in a SQLite file in WAL mode, or in memory.
//!
//! Only this file touches the disk. Transactions commit into the WAL without syncing; before an
//! answer leaves, the commits it depends on are synced (one `fdatasync` of the WAL serving every
//! request waiting at that moment: group commit, as etcd batches its WAL fsyncs). So every
//! acknowledged write survives a crash or power loss, and no read reports a write that could not.

use anyhow::Context;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use store::kine::database::{Database, Dialect, GroupCommit};
use store::kine::driver::SharedDatabase;

pub const IN_MEMORY: &str = ":memory:";

pub fn open(path: &str) -> anyhow::Result<SharedDatabase> {
    if path == IN_MEMORY {
        let conn = rusqlite::Connection::open_in_memory()?;
        return Ok(Arc::new(Mutex::new(kine(conn)?)));
    }
    let conn = rusqlite::Connection::open(path).context("cannot open the SQLite file")?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .context("cannot read it as a SQLite database")?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "SQLite kept journal mode {mode} instead of WAL"
    );
    // NORMAL: a commit is written to the WAL but not synced (checkpoints still sync the
    // database file); WalSync syncs the WAL before any answer that depends on a commit.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let db = kine(conn)?;
    // Creating the schema wrote to the WAL, so the file exists; it lives as long as the
    // connection (the last connection to close checkpoints and removes it).
    let wal = format!("{path}-wal");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .with_context(|| format!("cannot open the WAL file {wal}"))?;
    let sync = wal_sync(file);
    Ok(Arc::new(Mutex::new(db.with_group_commit(Arc::new(sync)))))
}

fn wal_sync(file: std::fs::File) -> WalSync {
    WalSync {
        shared: Arc::new(Shared {
            wal: Arc::new(file),
            issued: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
            syncs: AtomicU64::new(0),
        }),
    }
}

fn kine(conn: rusqlite::Connection) -> anyhow::Result<Database> {
    Database::with_connection(conn, Arc::new(super::log::Log), Dialect::Sqlite)
        .map_err(|e| anyhow::anyhow!("cannot create kine's table: {e}"))
}

struct Shared {
    wal: Arc<std::fs::File>,
    /// Tickets handed out: one per committed write, in commit order.
    issued: AtomicU64,
    /// The highest ticket known durable; its lock is held by the one sync in progress.
    synced: tokio::sync::Mutex<u64>,
    /// Syncs done, for the tests.
    syncs: AtomicU64,
}

struct WalSync {
    shared: Arc<Shared>,
}

impl GroupCommit for WalSync {
    fn ticket(&self, wrote: bool) -> u64 {
        // Called under the database lock right after the request's transaction, so a ticket
        // is issued only once its commit is in the WAL.
        if wrote {
            self.shared.issued.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.shared.issued.load(Ordering::SeqCst)
        }
    }

    fn durable(&self, ticket: u64) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut synced = shared.synced.lock().await;
            if *synced >= ticket {
                return; // a sync that began after this commit has finished
            }
            // Every ticket issued by now belongs to a commit already in the WAL: one sync
            // covers them all, including commits that arrived while the previous sync ran.
            let covers = shared.issued.load(Ordering::SeqCst);
            let wal = shared.wal.clone();
            let outcome = tokio::task::spawn_blocking(move || wal.sync_data()).await;
            match outcome {
                Ok(Ok(())) => {
                    *synced = covers;
                    shared.syncs.fetch_add(1, Ordering::SeqCst);
                }
                // A failed fsync leaves the WAL's durability unknown (the kernel may have
                // dropped the pages): acknowledging anything now could lie, so the process
                // stops at once; SQLite recovers the WAL on the next start.
                Ok(Err(e)) => {
                    eprintln!("faultline-store: syncing the SQLite WAL failed: {e}; stopping");
                    std::process::abort();
                }
                Err(e) => {
                    eprintln!("faultline-store: the WAL sync task failed: {e}; stopping");
                    std::process::abort();
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syncs(s: &WalSync) -> u64 {
        s.shared.syncs.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_sync_covers_every_commit_made_before_it_and_reads_of_synced_data_wait_for_none() {
        let path = std::env::temp_dir().join(format!("faultline-walsync-{}", std::process::id()));
        let s = wal_sync(std::fs::File::create(&path).unwrap());

        // A read before any write waits for nothing.
        s.durable(s.ticket(false)).await;
        assert_eq!(syncs(&s), 0);

        // A write is synced before its answer; asking again needs no second sync.
        let first = s.ticket(true);
        s.durable(first).await;
        assert_eq!(syncs(&s), 1);
        s.durable(first).await;
        s.durable(s.ticket(false)).await;
        assert_eq!(syncs(&s), 1, "nothing new was committed");

        // Fifty writes committed before anyone waits: one sync serves them all.
        let tickets: Vec<u64> = (0..50).map(|_| s.ticket(true)).collect();
        let waits: Vec<_> = tickets
            .iter()
            .map(|t| tokio::spawn(s.durable(*t)))
            .collect();
        for w in waits {
            w.await.unwrap();
        }
        assert_eq!(syncs(&s), 2, "one sync for the fifty commits");

        // A read after an unsynced write waits for that write's sync.
        s.ticket(true);
        s.durable(s.ticket(false)).await;
        assert_eq!(syncs(&s), 3);
        let _ = std::fs::remove_file(&path);
    }
}

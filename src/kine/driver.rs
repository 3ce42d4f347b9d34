//! The driver boundary: how a kine server reaches its database, one call per transaction.
//!
//! In the single topology the database lives on the server's own node; in the HA topology it is
//! a database node reached over the simulated network with a deadline, where a lost reply leaves
//! the caller not knowing whether its transaction committed. Injected compaction faults are
//! honoured here, where a real database or network would fail. Never holds a lock across `await`.

use super::database::{Database, DbError, DbRequest, DbResponse, Dialect};
use crate::faults::CompactFault;
use madsim::net::rpc::Request;
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The durable database shared between incarnations of the node that holds it.
pub type SharedDatabase = Arc<Mutex<Database>>;

/// How long one database transaction takes, drawn uniformly per call.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Latency {
    fn draw(self) -> Duration {
        use rand::Rng;
        let ms = if self.max_ms > self.min_ms {
            madsim::rand::thread_rng().gen_range(self.min_ms..=self.max_ms)
        } else {
            self.min_ms
        };
        Duration::from_millis(ms)
    }
}

/// Why a driver call did not return an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The database answered with an error; the transaction did not commit.
    #[error("{0}")]
    Db(DbError),
    /// No answer within the deadline: the transaction may or may not have committed.
    #[error("database call timed out (outcome unknown)")]
    Timeout,
    /// The answer was lost after the transaction ran: it may have committed.
    #[error("connection to database lost (outcome unknown)")]
    ReplyLost,
    #[error("database unreachable: {0}")]
    Unreachable(String),
}

impl DriverError {
    /// True when the transaction may have committed even though the caller got no answer.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DriverError::Timeout | DriverError::ReplyLost)
    }
}

/// The message a server sends to the database node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbCall(pub DbRequest);

impl Request for DbCall {
    type Response = Result<DbResponse, DbError>;
    const ID: u64 = madsim::net::rpc::hash_str("faultline.kine.DbCall");
}

pub enum Driver {
    Local {
        db: SharedDatabase,
        latency: Latency,
    },
    Remote {
        endpoint: Endpoint,
        addr: SocketAddr,
    },
}

impl Driver {
    /// A driver that reaches the database node at `addr` from this node.
    pub async fn remote(addr: SocketAddr) -> std::io::Result<Driver> {
        let endpoint = Endpoint::bind("0.0.0.0:0").await?;
        Ok(Driver::Remote { endpoint, addr })
    }

    /// Runs one transaction, giving up after `timeout`.
    pub async fn call(&self, req: DbRequest, timeout: Duration) -> Result<DbResponse, DriverError> {
        let fault = compact_fault(&req);
        match self {
            Driver::Local { db, latency } => {
                let run = async {
                    // A zero latency (the real server's own file) takes no trip through the timer.
                    let delay = latency.draw();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if fault == Some(CompactFault::Timeout) {
                        // The transaction outlives its context; the timeout below cancels it
                        // before it ever commits.
                        tokio::time::sleep(timeout + Duration::from_secs(1)).await;
                    }
                    let result = execute(db, &req, None).await;
                    if fault == Some(CompactFault::ReplyLost) && result.is_ok() {
                        return Err(DriverError::ReplyLost);
                    }
                    result.map_err(DriverError::Db)
                };
                tokio::time::timeout(timeout, run)
                    .await
                    .unwrap_or(Err(DriverError::Timeout))
            }
            Driver::Remote { endpoint, addr } => {
                match endpoint.call_timeout(*addr, DbCall(req), timeout).await {
                    Ok(result) => result.map_err(DriverError::Db),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        crate::probe!("kine.driver.call_timed_out");
                        Err(DriverError::Timeout)
                    }
                    Err(e) => Err(DriverError::Unreachable(e.to_string())),
                }
            }
        }
    }
}

/// Aborts a reserved insert unless it committed: dropped when the caller's deadline cancels the
/// call or a kill ends the task mid-commit.
struct Reservation<'a> {
    db: &'a SharedDatabase,
    id: Option<i64>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Ok(mut db) = self.db.lock() {
                db.abort_reserved(id);
            }
        }
    }
}

/// Runs one request against the database. A mysql-like insert reserves its id, holds it for
/// the drawn commit delay, then commits; if the caller's deadline (`abort_after`, the database
/// noticing its client is gone) passes first, it rolls back and leaves a gap.
async fn execute(
    db: &SharedDatabase,
    req: &DbRequest,
    abort_after: Option<Duration>,
) -> Result<DbResponse, DbError> {
    let dialect = db.lock().expect("database lock poisoned").dialect();
    let row = match req {
        DbRequest::Insert(row) if dialect != Dialect::Sqlite => row,
        _ => {
            let (result, durable) = {
                let mut db = db.lock().expect("database lock poisoned");
                let result = db.execute(req);
                (result, db.durable_after(req))
            };
            if let Some(durable) = durable {
                durable.await;
            }
            return result;
        }
    };
    let started = tokio::time::Instant::now();
    let id = db.lock().expect("database lock poisoned").reserve(row)?;
    let mut reservation = Reservation { db, id: Some(id) };
    tokio::time::sleep(dialect.draw_commit_delay()).await;
    if abort_after.is_some_and(|limit| started.elapsed() >= limit) {
        crate::probe!("kine.insert.commit_outlived_deadline");
        return Err(DbError::DeadlineExceeded); // the reservation aborts as it drops
    }
    reservation.id = None;
    let id = db
        .lock()
        .expect("database lock poisoned")
        .commit_reserved(id, row)?;
    Ok(DbResponse::Inserted(id))
}

fn compact_fault(req: &DbRequest) -> Option<CompactFault> {
    match req {
        DbRequest::CompactBatch { fault, .. } => *fault,
        _ => None,
    }
}

/// Serves the database on `addr` until the node is killed. Each call runs as its own task, takes
/// the drawn latency, then executes as one transaction; a call cut by a kill never executes.
pub async fn serve_database(
    db: SharedDatabase,
    addr: SocketAddr,
    latency: Latency,
    call_timeout: Duration,
) {
    let endpoint = Endpoint::bind(addr)
        .await
        .expect("database node binds its address");
    endpoint.add_rpc_handler(move |DbCall(req): DbCall| {
        let db = db.clone();
        // Boxed, as the supervisor's: each call's task moves a pointer, not this whole future.
        Box::pin(async move {
            tokio::time::sleep(latency.draw()).await;
            let fault = compact_fault(&req);
            if fault == Some(CompactFault::Timeout) {
                // The caller's deadline passes first; the cancelled transaction never commits.
                tokio::time::sleep(call_timeout + Duration::from_secs(1)).await;
                return Err(DbError::DeadlineExceeded);
            }
            let result = execute(&db, &req, Some(call_timeout)).await;
            if fault == Some(CompactFault::ReplyLost) && result.is_ok() {
                // Committed, but the reply is lost on the way back: hold it until the caller has
                // long given up.
                tokio::time::sleep(call_timeout * 10).await;
            }
            result
        })
    });
    // The handler runs on its own task; this one only keeps the endpoint alive.
    std::future::pending::<()>().await;
}

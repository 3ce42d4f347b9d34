//! The store's fault points: the one narrow place where a simulation may make the store fail.
//!
//! The store consults a [`FaultPoints`] at the driver boundary, as a real database or network
//! would fail there. It never draws randomness itself; the host decides, from its seed, whether a
//! fault fires. Outside a simulation, [`NoFaults`] is used and nothing is injected.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A failure injected into one compaction batch transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactFault {
    /// The database answers "database is locked" after the DELETE ran, so the transaction must
    /// roll back its deletes.
    DatabaseLocked,
    /// The transaction outlives the compact timeout and is cancelled before it commits.
    Timeout,
    /// The transaction commits, but its reply never reaches the server.
    ReplyLost,
}

impl CompactFault {
    pub fn name(self) -> &'static str {
        match self {
            CompactFault::DatabaseLocked => "compact-database-locked",
            CompactFault::Timeout => "compact-timeout",
            CompactFault::ReplyLost => "compact-reply-lost",
        }
    }
}

/// Consulted by the store where faults may be injected.
pub trait FaultPoints: Send + Sync {
    /// Called once per compaction batch, before the batch is sent to the database: the
    /// `batch`-th batch (from 1) of the compactor's `tick`-th tick (from 1) since it started. The
    /// numbers name the batch, so a host can fail the same batch again without replaying the
    /// order in which it was asked.
    fn compact_batch(&self, server: &str, tick: u64, batch: u64) -> Option<CompactFault>;

    /// Called by an etcd member at a named crash point (etcd's robustness tests use gofail
    /// failpoints here). `true` means the member dies at this point: it stops and the host kills
    /// and later restarts its node.
    fn member_crash(&self, _member: &str, _point: &str) -> bool {
        false
    }
}

/// Injects nothing.
pub struct NoFaults;

impl FaultPoints for NoFaults {
    fn compact_batch(&self, _server: &str, _tick: u64, _batch: u64) -> Option<CompactFault> {
        None
    }
}

pub type SharedFaults = Arc<dyn FaultPoints>;

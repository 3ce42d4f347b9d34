//! What the store tells the world about itself: a narrow, typed event stream.
//!
//! The store never decides where its events go or when they happened; the runtime that hosts it
//! supplies an [`Observer`] that stamps each event with the node and (simulated) time. The events
//! are facts the checkers need and clients cannot see: compactor ticks and batches, and the rows
//! and compactions the database commits. An observer must never block or fail.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Receives the store's events. Implementations record them; they must not call back into the store.
pub trait Observer: Send + Sync {
    fn record(&self, event: StoreEvent);
}

/// An observer that drops everything, for code that runs outside a simulation.
pub struct Discard;

impl Observer for Discard {
    fn record(&self, _event: StoreEvent) {}
}

pub type SharedObserver = Arc<dyn Observer>;

/// How one compaction batch (one transaction) ended, as the compactor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BatchOutcome {
    /// The batch committed: rows up to `to` are gone and the stored compact revision is `to`.
    Committed { current_revision: i64 },
    /// The stored compact revision differed from the compactor's: another server compacted (or an
    /// earlier commit's reply was lost). The compactor adopts `stored_compact_revision`.
    Resync {
        stored_compact_revision: i64,
        current_revision: i64,
    },
    /// The clamped target was already compacted; nothing to do this tick.
    AlreadyCompacted {
        stored_compact_revision: i64,
        current_revision: i64,
    },
    /// The batch failed; whether it committed is known only to the database.
    Failed { error: String },
}

/// An etcd member's raft state as it stands on its disk: the log's last entry (after the
/// snapshot, if any), the hard state and the snapshot. What a member reports it made durable
/// must be what it finds on restart: anything less was lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftDurable {
    pub last_index: u64,
    pub last_term: u64,
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub snapshot_index: u64,
}

/// One fact reported by the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StoreEvent {
    /// A kine server finished starting against its database.
    ServerStarted {
        current_revision: i64,
        compact_revision: i64,
    },
    /// The compactor loop started: its in-memory compact revision and first target.
    CompactorStarted {
        compact_revision: i64,
        target_revision: i64,
    },
    /// A compactor tick fired.
    CompactTickStart {
        tick: u64,
        compact_revision: i64,
        target_revision: i64,
    },
    /// One batch transaction of a tick, compacting `from..=to`.
    CompactBatch {
        from: i64,
        to: i64,
        outcome: BatchOutcome,
    },
    /// A tick ended; the compactor carries these into the next tick.
    CompactTickEnd {
        tick: u64,
        compact_revision: i64,
        next_target_revision: i64,
        batches_committed: u64,
    },
    /// The store consulted its fault points and a fault was injected here.
    FaultInjected { fault: String, detail: String },
    /// The database committed a row of the log.
    DbInsert {
        id: i64,
        key: String,
        created: bool,
        deleted: bool,
        create_revision: i64,
        prev_revision: i64,
    },
    /// An insert that had reserved `id` was aborted before it committed (mysql-like dialect):
    /// the id is a gap in the log for ever, unless the watch poller fills it.
    DbInsertAborted { id: i64, key: String },
    /// The database ran a compaction transaction, committed or rolled back.
    DbCompact {
        from: i64,
        to: i64,
        committed: bool,
        deleted_rows: i64,
        rows_before: i64,
        rows_after: i64,
        stored_before: i64,
        stored_after: i64,
    },
    /// The database (re)opened its committed data.
    DbStarted {
        current_revision: i64,
        compact_revision: i64,
        rows: i64,
    },
    /// An etcd member started from its disk image (or empty, to join); `recovered` is the raft
    /// state its disk held.
    MemberStarted {
        member_id: u64,
        applied_index: u64,
        current_revision: i64,
        compact_revision: i64,
        scheduled_compact_revision: i64,
        #[serde(default)]
        recovered: RaftDurable,
    },
    /// An etcd member fsynced its raft state (WAL entries and hard state, snapshot) and now
    /// counts on it. Reported at every fsync; the recorder keeps only the last one per node and
    /// writes it into the history when the node is killed, so a restart can be held to it.
    MemberPersisted { durable: RaftDurable },
    /// An etcd member stopped for good: raft-rs panicked, as it does on state it cannot have
    /// lost (for example a leader's commit index past this member's last log index). It serves
    /// nothing until its node restarts, and a restart from the same disk fails again.
    MemberHalted {
        member_id: u64,
        last_index: u64,
        reason: String,
    },
    /// An etcd member's MVCC store passed a compaction phase (`scheduled`, `deleted`,
    /// `finished`) for `revision`.
    MemberCompaction { revision: i64, phase: String },
    /// A supervisor added a member to the etcd cluster for a joining node.
    MemberAdded { member_id: u64, node: String },
    /// A supervisor removed a node's member from the etcd cluster (the node had left).
    MemberRemoved { member_id: u64, node: String },
    /// The node's server lists changed (members joined or left): its load balancer, persisted
    /// server list and etcd endpoints now follow `known`, learned `via` a server or its own
    /// member list.
    ServersUpdated {
        via: String,
        known: Vec<String>,
        /// The servers its load balancer now knows besides the default (join) server.
        #[serde(default)]
        lb: Vec<String>,
    },
    /// A kill dropped the node's unsynced disk writes; `torn` when part of the last write stayed.
    DiskLost { files: u64, bytes: u64, torn: bool },
    /// The node joined the cluster through `via`'s supervisor and now knows these servers.
    Joined { via: String, known: Vec<String> },
    /// The node's client load balancer now routes new connections to `server` (`None` when it
    /// knows no server); `apiserver` says whether that server runs an apiserver.
    LbRoute {
        server: Option<String>,
        apiserver: bool,
        reason: String,
    },
    /// The node's load balancer checked `server`'s health and found something other than its
    /// previous check did (recorded on change only): whether the server answered within the
    /// check's timeout and whether its apiserver was ready. `known: false` when the load
    /// balancer stopped checking it (the server lists dropped it).
    LbHealth {
        server: String,
        reachable: bool,
        apiserver: bool,
        known: bool,
    },
    /// The kubelet tried to renew its Node lease through the load balancer.
    NodeLeaseRenew {
        via: Option<String>,
        ok: bool,
        error: String,
    },
    /// A component waiting for the apiserver polled `/readyz` through `via`; these checks failed.
    ApiserverWaiting {
        via: Option<String>,
        failing: Vec<String>,
    },
}

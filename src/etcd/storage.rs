//! A member's raft log storage: raft-rs's in-memory log, rebuilt from the WAL on restart, with
//! snapshots cut on demand from the applied MVCC store.
//!
//! raft-rs's own `MemStorage` hands out snapshots without data; a lagging follower needs the key
//! space, so this wrapper builds each snapshot from the store at its consistent index.

use super::lease::Lessor;
use super::mvcc::{BackendRecord, Mvcc};
use raft::eraftpb::{ConfState, Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::sync::{Arc, Mutex};

/// The applied side of a member, shared by its raft loop and its API.
pub struct Applied {
    pub mvcc: Mvcc,
    /// The leases applied beside the store (their records share its backend and snapshots).
    pub lessor: Lessor,
    pub leader: u64,
    pub term: u64,
    pub last_index: u64,
}

pub type SharedApplied = Arc<Mutex<Applied>>;

#[derive(Clone)]
pub struct MemberStorage {
    pub log: MemStorage,
    pub applied: SharedApplied,
}

pub fn encode_records(records: &[BackendRecord]) -> Vec<u8> {
    bincode::serialize(records).expect("backend records encode")
}

pub fn decode_records(bytes: &[u8]) -> Vec<BackendRecord> {
    // Bytes that passed their frame checksum (or came in a raft snapshot) are ours: a parse
    // failure is a bug, not a disk fault.
    bincode::deserialize(bytes).expect("backend records decode")
}

pub fn conf_state(voters: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        ..Default::default()
    }
}

impl Storage for MemberStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let applied = self.applied.lock().expect("applied state lock poisoned");
        let index = applied.mvcc.consistent_index();
        if index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = self.log.term(index)?;
        let mut records = applied.mvcc.dump();
        records.extend(applied.lessor.dump());
        let mut snap = Snapshot {
            data: encode_records(&records).into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state(applied.mvcc.voters()));
        Ok(snap)
    }
}

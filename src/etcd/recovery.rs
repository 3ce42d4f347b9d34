//! A member's start from its disk: snapshot, backend and WAL read back into raft-rs's log and
//! the MVCC store, and the raft state the disk held, to hold against what the member had
//! reported fsynced before it was killed.
//!
//! It only reads the disk, except to cut a torn tail off the WAL and, on a brand-new cluster's
//! first start, to write the initial snapshot. It never decides what a shortfall means; raft-rs and the checkers do.

use super::disk::SharedDisk;
use super::lease::Lessor;
use super::member::{MemberConfig, BACKEND, SNAP, WAL};
use super::mvcc::Mvcc;
use super::storage::{conf_state, decode_records, encode_records, Applied, MemberStorage};
use super::wal::{frames, replay};
use crate::observe::RaftDurable;
use protobuf::Message as _;
use raft::eraftpb::Snapshot;
use raft::storage::MemStorage;
use raft::Storage;
use std::sync::{Arc, Mutex};

/// What a start found on the disk.
pub(crate) struct Recovered {
    pub storage: MemberStorage,
    pub applied_index: u64,
    pub resume_compaction: Option<i64>,
    /// The raft state the disk held (the hard state as the WAL recorded it).
    pub durable: RaftDurable,
}

pub(crate) fn recover(config: &MemberConfig, disk: &SharedDisk) -> Recovered {
    let d = disk.lock().expect("disk lock poisoned");
    let snap = d
        .read(SNAP)
        .map(|b| Snapshot::parse_from_bytes(&b).expect("a synced snapshot parses"));
    let mut backend = Vec::new();
    if let Some(bytes) = d.read(BACKEND) {
        for f in frames(&bytes).0 {
            backend.extend(decode_records(f));
        }
    }
    let wal = d.read(WAL).unwrap_or_default();
    drop(d);
    let mut snap_index = snap.as_ref().map(|s| s.get_metadata().index).unwrap_or(0);
    let now = tokio::time::Instant::now();
    let min_ttl = config.min_lease_ttl();
    let mut lessor = Lessor::restore(&backend, min_ttl, config.lease, now);
    let (mut mvcc, mut resume) = Mvcc::restore(backend, config.compaction);
    if let Some(s) = &snap {
        if mvcc.consistent_index() < snap_index {
            // The snapshot was saved but the backend built from it was not: start from it.
            let records = decode_records(&s.data);
            lessor = Lessor::restore(&records, min_ttl, config.lease, now);
            (mvcc, resume) = Mvcc::restore(records, config.compaction);
        }
    }
    let log = MemStorage::new();
    if snap_index > 1 {
        crate::probe!("etcd.restart.from_snapshot");
    }
    if resume.is_some() {
        crate::probe!("etcd.restart.resumes_compaction");
    }
    if let Some(mut s) = snap {
        s.data = Default::default();
        log.wl()
            .apply_snapshot(s)
            .expect("a fresh log takes any snapshot");
    }
    let (entries, hard_state, valid) = replay(&wal, snap_index);
    if valid < wal.len() {
        crate::probe!("etcd.restart.wal_torn_tail_cut");
        // Cut the torn tail off the file too (etcd's WAL repair truncates it): frames appended
        // after it would be unreadable at the next start, their entries lost though fsynced.
        let mut d = disk.lock().expect("disk lock poisoned");
        d.replace(WAL, wal[..valid].to_vec());
        d.sync(WAL);
    }
    if entries
        .last()
        .is_some_and(|e| e.index > mvcc.consistent_index())
    {
        crate::probe!("etcd.restart.wal_replayed_past_backend");
    }
    log.wl()
        .append(&entries)
        .expect("replayed entries are contiguous");
    let last = log.last_index().expect("memory log answers");
    let wal_hard_state = hard_state.clone().unwrap_or_default();
    {
        let mut core = log.wl();
        if let Some(mut hs) = hard_state {
            if hs.commit < mvcc.consistent_index() {
                crate::probe!("etcd.restart.backend_ahead_of_wal_commit");
            }
            // The backend may have applied past the last commit index the WAL recorded.
            hs.commit = hs
                .commit
                .max(mvcc.consistent_index())
                .min(last)
                .max(snap_index);
            core.set_hardstate(hs);
        }
        if !mvcc.voters().is_empty() {
            core.set_conf_state(conf_state(mvcc.voters()));
        }
    }
    if mvcc.voters().is_empty() && !config.initial_voters.is_empty() && last == 0 {
        // A new cluster starts from a snapshot at index 1 that holds the initial membership,
        // so a member added later learns every voter from it (raft-rs replicates only changes).
        mvcc.set_voters(config.initial_voters.clone());
        mvcc.set_consistent_index(1);
        let mut snap = Snapshot {
            data: encode_records(&mvcc.dump()).into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(conf_state(&config.initial_voters));
        let mut d = disk.lock().expect("disk lock poisoned");
        d.replace(SNAP, snap.write_to_bytes().expect("a snapshot encodes"));
        d.sync(SNAP);
        drop(d);
        snap.data = Default::default();
        log.wl()
            .apply_snapshot(snap)
            .expect("an empty log takes the initial snapshot");
        snap_index = 1;
    }
    let last_index = log.last_index().expect("memory log answers");
    let durable = RaftDurable {
        last_index,
        last_term: log.term(last_index).unwrap_or(0),
        term: wal_hard_state.term,
        vote: wal_hard_state.vote,
        commit: wal_hard_state.commit,
        snapshot_index: snap_index,
    };
    let applied_index = mvcc
        .consistent_index()
        .max(snap_index)
        .max(log.first_index().expect("memory log answers") - 1);
    let applied = Arc::new(Mutex::new(Applied {
        mvcc,
        lessor,
        leader: 0,
        term: 0,
        last_index: 0,
    }));
    Recovered {
        storage: MemberStorage { log, applied },
        applied_index,
        resume_compaction: resume,
        durable,
    }
}

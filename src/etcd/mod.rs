//! Embedded etcd: members replicated with raft over a simulated disk, serving the etcd v3 API.
//!
//! A member owns its raft node, its MVCC store and its disk files; nothing else may write them.
//! Everything it must keep across a kill goes through [`disk::Disk`] and fsync; everything else
//! is rebuilt on restart from the WAL, the snapshot and the backend.

pub mod disk;
pub mod member;
pub mod mvcc;
pub mod node;
mod recovery;
pub mod service;
pub mod storage;
pub mod wal;

#[cfg(test)]
mod member_tests;

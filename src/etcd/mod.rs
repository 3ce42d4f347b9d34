//! Embedded etcd: members replicated with raft over a simulated disk, serving the etcd v3 API.
//!
//! A member owns its raft node, its MVCC store and its disk files; nothing else may write them.
//! Everything it must keep across a kill goes through [`disk::Disk`] and fsync; everything else
//! is rebuilt on restart from the WAL, the snapshot and the backend.

pub mod disk;
pub mod lease;
// The member's raft transport, its gRPC services and the k3s glue use madsim's raw endpoints:
// they exist only in the simulator. `mvcc` (the conformance suite calls it directly), the
// lessor, the disk, the WAL and the raft storage build everywhere.
#[cfg(madsim)]
pub mod member;
pub mod mvcc;
#[cfg(madsim)]
pub mod node;
#[cfg(madsim)]
mod recovery;
#[cfg(madsim)]
pub mod service;
pub mod storage;
pub mod wal;

#[cfg(all(test, madsim))]
mod lease_tests;
#[cfg(all(test, madsim))]
mod member_tests;

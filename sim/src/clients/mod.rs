//! The clients of a run: the etcd-level workload, watchers, lease clients, and controllers over
//! the apiserver.
//!
//! Each client runs on its own simulated node and records what it asked and what came back; none
//! of them reads the store's internals or the checkers.

// Controllers reach the apiserver facade over madsim's connections: simulator only.
pub mod compactor;
#[cfg(madsim)]
pub mod controller;
pub mod etcd_call;
pub mod leases;
pub mod watcher;
pub mod workload;

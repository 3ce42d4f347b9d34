//! faultline's store under test: an etcd-compatible API served by kine over SQLite.
//!
//! This crate never imports the simulator. It sees the world through the runtime it is given
//! (madsim's tokio, network and time), an [`observe::Observer`] it reports to, and the
//! [`faults::FaultPoints`] it consults; so the same code runs outside a simulation.
//!
//! Built without `--cfg madsim` (the real server, the conformance suite), madsim's tokio and
//! tonic are the real ones. The only parts left out of that build are the simulator's own
//! topology, which talks over madsim's in-memory connections: the apiserver facade's serving
//! loop, k3s's node processes (all but the roles) and the etcd member's raft transport. The
//! facade's types, keys and continue tokens are built in both: live mode's checkers read them. The store logic is the same code in both builds.

pub mod apiserver;
pub mod design;
pub mod error;
pub mod etcd;
pub mod faults;
pub mod k3s;
pub mod kine;
pub mod kv_rules;
pub mod node;
pub mod observe;
pub mod probe;
pub mod server;

/// The generated etcd v3 API types (see `proto/`). tonic's generated code returns its large
/// `Status` by value, which clippy flags; that code is not ours to reshape.
#[allow(clippy::result_large_err)]
pub mod proto {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

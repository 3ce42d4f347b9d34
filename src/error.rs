//! The store's errors and how they reach an etcd client.
//!
//! Messages are etcd's own, because clients (and the Kubernetes apiserver) match on them. The
//! gRPC code says whether a write may have taken effect: `Unavailable` means "unknown".

use crate::kine::driver::DriverError;

pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub const TIMED_OUT: &str = "etcdserver: request timed out";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{COMPACTED}")]
    Compacted,
    #[error("{FUTURE_REV}")]
    FutureRevision,
    /// The database may or may not have committed the request.
    #[error("{TIMED_OUT}")]
    OutcomeUnknown,
    /// The database refused the request; it did not commit.
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    Unsupported(String),
    /// The etcd member knows no leader: nothing was proposed.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The etcd member does not serve clients (not ready yet, or stopped): nothing was done.
    #[error("{0}")]
    NotServing(&'static str),
    /// etcd's ErrLeaseNotFound: a revoke, or a put naming a lease, of a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// etcd's ErrLeaseExist: a grant naming an ID already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// etcd's ErrLeaseTTLTooLarge.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A lease call that only the raft leader answers reached another member; nothing was done
    /// and the client should try another endpoint (etcd would forward it to the leader).
    #[error("etcdserver: not leader")]
    NotLeader,
}

impl From<DriverError> for StoreError {
    fn from(e: DriverError) -> Self {
        if e.outcome_unknown() {
            StoreError::OutcomeUnknown
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::Compacted | StoreError::FutureRevision => tonic::Status::out_of_range(msg),
            StoreError::OutcomeUnknown
            | StoreError::NoLeader
            | StoreError::NotServing(_)
            | StoreError::NotLeader => tonic::Status::unavailable(msg),
            StoreError::LeaseNotFound => tonic::Status::not_found(msg),
            StoreError::LeaseExists => tonic::Status::failed_precondition(msg),
            StoreError::LeaseTtlTooLarge => tonic::Status::out_of_range(msg),
            StoreError::Database(_) => tonic::Status::unknown(msg),
            StoreError::Unsupported(_) => tonic::Status::invalid_argument(msg),
        }
    }
}

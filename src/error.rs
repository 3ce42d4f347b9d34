//! The store's errors and how they reach an etcd client.
//!
//! Messages are etcd's own, because clients (and the Kubernetes apiserver) match on them. The
//! gRPC code says whether a write may have taken effect: `Unavailable` means "unknown".

use crate::kine::driver::DriverError;

pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub const TIMED_OUT: &str = "etcdserver: request timed out";
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

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
    /// A lease named by the request does not exist (never granted, revoked or expired).
    #[error("{LEASE_NOT_FOUND}")]
    LeaseNotFound,
    /// A grant named an ID a live lease already has.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asked for more than etcd's maximum TTL.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The etcd member does not serve clients (not ready yet, or stopped): nothing was done.
    #[error("{0}")]
    NotServing(&'static str),
    /// A lease call that only the raft leader answers reached another member; nothing was done
    /// and the client should try another endpoint (etcd would forward it to the leader).
    #[error("etcdserver: not leader")]
    NotLeader,
}

impl From<DriverError> for StoreError {
    fn from(e: DriverError) -> Self {
        use crate::kine::database::DbError;
        match e {
            DriverError::Db(DbError::LeaseNotFound) => return StoreError::LeaseNotFound,
            DriverError::Db(DbError::LeaseExists) => return StoreError::LeaseExists,
            _ => {}
        }
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

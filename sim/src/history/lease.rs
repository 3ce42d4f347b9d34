//! Lease operations as the lease clients recorded them: grants, keep-alives, revokes, the keys
//! they attached and the reads and probes that show whether those keys and leases still exist.
//!
//! Kept apart from `Operation` so the KV checkers, which model the workload's resources, never
//! see them; the `lease` checker reads them together with the watchers' sessions.

use super::SimNanos;
use serde::{Deserialize, Serialize};

/// One lease-client request and what came of it. Ids come from the same sequence as the KV
/// operations', so `op#N` names one request across the whole history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseOperation {
    pub id: u64,
    pub client: String,
    /// The client's own number for the lease the request is about (its n-th lease), so a
    /// request is tied to its lease even where a store hands out one ID twice. 0 for
    /// `Leases`, which is about every lease.
    pub life: u64,
    /// The server node the request was sent to.
    pub server: String,
    pub invoke_ns: SimNanos,
    pub complete_ns: SimNanos,
    pub request: LeaseRequest,
    pub outcome: LeaseOutcome,
}

/// What a lease client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaseRequest {
    /// LeaseGrant with a server-chosen ID (ID 0), as the apiserver asks.
    Grant {
        ttl_s: i64,
    },
    /// One request on a LeaseKeepAlive stream; `stream` numbers the client's streams.
    KeepAlive {
        lease: i64,
        stream: u64,
    },
    Revoke {
        lease: i64,
    },
    /// LeaseTimeToLive with `keys`: a probe that does not renew.
    TimeToLive {
        lease: i64,
    },
    /// LeaseLeases: every live lease ID.
    Leases,
    /// A Put of `key` attached to `lease`.
    Attach {
        lease: i64,
        key: String,
    },
    /// A linearizable Range of `[start, end)`: the keys one lease's keys live under.
    Read {
        lease: i64,
        start: String,
        end: String,
    },
}

impl LeaseRequest {
    /// The lease the request names (none for `Grant` and `Leases`).
    pub fn lease(&self) -> Option<i64> {
        match self {
            LeaseRequest::KeepAlive { lease, .. }
            | LeaseRequest::Revoke { lease }
            | LeaseRequest::TimeToLive { lease }
            | LeaseRequest::Attach { lease, .. }
            | LeaseRequest::Read { lease, .. } => Some(*lease),
            LeaseRequest::Grant { .. } | LeaseRequest::Leases => None,
        }
    }
}

/// How a lease request ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LeaseOutcome {
    /// The server answered; `header_revision` is the response header's revision (0 when the
    /// answer carries no header, as a keep-alive's may not).
    Ok {
        header_revision: i64,
        result: LeaseResult,
    },
    /// The request definitely did not take effect (the server said so).
    Failed { error: String },
    /// The request may or may not have taken effect (deadline, broken stream, lost reply).
    Unknown { error: String },
}

/// The body of a successful lease answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeaseResult {
    /// The lease's ID and the TTL actually granted (the server may raise it to its minimum).
    Granted {
        lease: i64,
        ttl_s: i64,
    },
    /// The TTL the lease was renewed to; 0 when the server no longer knows the lease.
    KeptAlive {
        ttl_s: i64,
    },
    Revoked,
    /// The remaining TTL (-1: no such lease), the granted TTL and the attached keys.
    TimeToLive {
        ttl_s: i64,
        granted_ttl_s: i64,
        keys: Vec<String>,
    },
    Leases {
        ids: Vec<i64>,
    },
    /// The Put took effect at the header revision.
    Attached,
    /// The keys present, each with its mod revision and the lease it is attached to.
    Read {
        kvs: Vec<LeasedKv>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedKv {
    pub key: String,
    pub mod_revision: i64,
    pub lease: i64,
}

impl LeaseOperation {
    /// The successful result, if the server answered.
    pub fn result(&self) -> Option<&LeaseResult> {
        match &self.outcome {
            LeaseOutcome::Ok { result, .. } => Some(result),
            _ => None,
        }
    }

    /// The header revision of a successful answer.
    pub fn revision(&self) -> Option<i64> {
        match &self.outcome {
            LeaseOutcome::Ok {
                header_revision, ..
            } => Some(*header_revision),
            _ => None,
        }
    }
}

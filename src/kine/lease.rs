//! Leases in the kine store, as etcd 3.4 defines them (SEMANTICS.md section 6), over the database.
//!
//! A lease is a row of `kine_lease` (granted TTL, deadline by the database's clock); the keys
//! attached to it are the live keys whose newest row names it. Every lease rule runs inside one
//! database transaction, so every server of an HA cluster sees the same leases, and a lease is
//! revoked or expired exactly once: its keys' deletes and its removal commit together. Real kine
//! has no lease table (its lease ID is the TTL); this module never changes how rows without a
//! lease behave, and a server that never meets a lease never wakes for one.

use super::database::{DbError, DbRequest, DbResponse};
use super::sql::{Log, NewRow, Row};
use super::store::KineStore;
use crate::error::StoreError;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// etcd 3.4's minimum TTL with default flags: 1.5 x the 1 s election timeout, rounded up to
/// whole seconds. faultline-store has no election; it keeps etcd's default.
pub const MIN_TTL_S: i64 = 2;
/// etcd's largest TTL (`lease.MaxLeaseTTL`).
pub const MAX_TTL_S: i64 = 9_000_000_000;
/// How often a server looks for leases past their deadline (etcd's leader checks every 500 ms).
pub const EXPIRY_EVERY: Duration = Duration::from_millis(500);
/// Leases one expiry transaction revokes at most, and such transactions per round: a backlog
/// is worked off over several rounds, never in one unbounded burst.
const EXPIRE_BATCH: i64 = 32;
const EXPIRE_ROUNDS: usize = 8;
/// Draws of a server-chosen lease ID before giving up (a clash needs 2^63 luck).
const ID_DRAWS: usize = 8;

/// What a lease request did inside the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAnswer {
    Granted,
    /// The keys whose deletes the revoke appended.
    Revoked {
        deleted: Vec<String>,
    },
    /// The TTL the lease was renewed to; 0 when it does not exist (or had just expired).
    Renewed {
        ttl_s: i64,
    },
    /// `remaining_ms` is -1 when the lease does not exist.
    TimeToLive {
        remaining_ms: i64,
        granted_ttl_s: i64,
        keys: Vec<String>,
    },
    Leases(Vec<i64>),
    /// The leases this transaction expired.
    Expired(Vec<i64>),
}

/// The database's clock, in milliseconds: simulated time under madsim (which answers the
/// system clock), the wall clock for real. Every deadline is read against this one clock, so
/// HA servers never disagree about whether a lease expired.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends rows inside one transaction: SQLite assigns ids in order; a mysql-like database hands
/// out its reservation counter (so a pending insert's id is never taken). Keeps what it appended
/// for the database to report after commit.
pub(super) struct Appender<'a, 'c> {
    pub log: &'a Log<'c>,
    pub next_id: Option<&'a mut i64>,
    pub inserted: &'a mut Vec<(i64, NewRow)>,
}

impl Appender<'_, '_> {
    fn append(&mut self, row: NewRow) -> Result<i64, DbError> {
        let id = match self.next_id.as_deref_mut() {
            None => self.log.insert_if_newest(&row)?,
            Some(next) => {
                let id = (*next).max(self.log.current_revision()? + 1);
                *next = id + 1;
                self.log.insert_at(id, &row)?
            }
        };
        self.inserted.push((id, row));
        Ok(id)
    }

    /// Deletes every key attached to `lease` and the lease itself. kine's log holds one row
    /// per revision, so the deletes take consecutive revisions of this one transaction, where
    /// etcd deletes them all at one revision.
    fn revoke(&mut self, lease: i64) -> Result<Vec<String>, DbError> {
        let rows = self.log.leased_rows(lease)?;
        let mut deleted = Vec::with_capacity(rows.len());
        for row in rows {
            deleted.push(row.name.clone());
            self.append(tombstone(row))?;
        }
        self.log.delete_lease(lease)?;
        Ok(deleted)
    }

    /// Runs one lease request at `now_ms`. A lease past its deadline is expired by whichever
    /// request meets it first (the expiry loop, a keep-alive, a time-to-live): once its
    /// deadline passed it can never be renewed.
    pub(super) fn lease(&mut self, req: &DbRequest, now_ms: i64) -> Result<LeaseAnswer, DbError> {
        let log = self.log;
        let live = |id: i64| -> Result<Option<(i64, i64)>, DbError> { Ok(log.lease(id)?) };
        Ok(match *req {
            DbRequest::LeaseGrant { id, ttl_s } => {
                if !log.insert_lease(id, ttl_s, now_ms + ttl_s * 1000)? {
                    return Err(DbError::LeaseExists);
                }
                LeaseAnswer::Granted
            }
            DbRequest::LeaseRevoke { id } => match live(id)? {
                None => return Err(DbError::LeaseNotFound),
                Some(_) => LeaseAnswer::Revoked {
                    deleted: self.revoke(id)?,
                },
            },
            DbRequest::LeaseRenew { id } => match live(id)? {
                None => LeaseAnswer::Renewed { ttl_s: 0 },
                Some((_, deadline)) if deadline <= now_ms => {
                    self.revoke(id)?;
                    LeaseAnswer::Renewed { ttl_s: 0 }
                }
                Some((ttl_s, _)) => {
                    log.renew_lease(id, now_ms)?;
                    LeaseAnswer::Renewed { ttl_s }
                }
            },
            DbRequest::LeaseTimeToLive { id, keys } => match live(id)? {
                Some((ttl_s, deadline)) if deadline > now_ms => LeaseAnswer::TimeToLive {
                    remaining_ms: deadline - now_ms,
                    granted_ttl_s: ttl_s,
                    keys: if keys {
                        log.leased_rows(id)?.into_iter().map(|r| r.name).collect()
                    } else {
                        vec![]
                    },
                },
                found => {
                    if found.is_some() {
                        self.revoke(id)?;
                    }
                    LeaseAnswer::TimeToLive {
                        remaining_ms: -1,
                        granted_ttl_s: 0,
                        keys: vec![],
                    }
                }
            },
            DbRequest::LeaseLeases => LeaseAnswer::Leases(log.live_leases(now_ms)?),
            DbRequest::LeaseExpire { limit } => {
                let expired = log.expired_leases(now_ms, limit)?;
                for &id in &expired {
                    self.revoke(id)?;
                }
                LeaseAnswer::Expired(expired)
            }
            _ => unreachable!("not a lease request: {req:?}"),
        })
    }
}

/// The delete of a leased key's newest row, as a DeleteRange appends it.
fn tombstone(row: Row) -> NewRow {
    NewRow {
        create_revision: if row.created {
            row.id
        } else {
            row.create_revision
        },
        prev_revision: row.id,
        old_value: row.value,
        name: row.name,
        created: false,
        deleted: true,
        lease: 0,
        value: vec![],
    }
}

impl KineStore {
    /// Runs one lease request: (current revision after it, its answer).
    async fn lease_call(&self, req: DbRequest) -> Result<(i64, LeaseAnswer), StoreError> {
        match self.call(req).await? {
            DbResponse::Lease {
                current,
                appended,
                answer,
            } => {
                if appended > 0 {
                    // Wake this server's poller, as a local insert does.
                    self.inserted().notify_one();
                }
                Ok((current, answer))
            }
            other => unreachable!("a lease request answered {other:?}"),
        }
    }

    /// LeaseGrant: the client's ID, or one drawn here for ID 0 (from madsim's seeded generator
    /// in the simulation); a TTL below etcd's minimum is raised to it.
    pub async fn lease_grant(
        &self,
        req: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, StoreError> {
        if req.ttl > MAX_TTL_S {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl_s = req.ttl.max(MIN_TTL_S);
        for _ in 0..ID_DRAWS {
            let id = match req.id {
                0 => {
                    use rand::Rng;
                    madsim::rand::thread_rng().gen_range(1..=i64::MAX)
                }
                id => id,
            };
            match self.lease_call(DbRequest::LeaseGrant { id, ttl_s }).await {
                Ok((current, _)) => {
                    return Ok(LeaseGrantResponse {
                        header: self.header(current),
                        id,
                        ttl: ttl_s,
                        error: String::new(),
                    })
                }
                Err(StoreError::LeaseExists) if req.id == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::LeaseExists)
    }

    pub async fn lease_revoke(
        &self,
        req: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, StoreError> {
        let (current, _) = self
            .lease_call(DbRequest::LeaseRevoke { id: req.id })
            .await?;
        Ok(LeaseRevokeResponse {
            header: self.header(current),
        })
    }

    /// One keep-alive: renews the lease to its full TTL; TTL 0 when it does not exist.
    pub async fn lease_renew(&self, id: i64) -> Result<LeaseKeepAliveResponse, StoreError> {
        match self.lease_call(DbRequest::LeaseRenew { id }).await? {
            (current, LeaseAnswer::Renewed { ttl_s }) => Ok(LeaseKeepAliveResponse {
                header: self.header(current),
                id,
                ttl: ttl_s,
            }),
            (_, other) => unreachable!("a renew answered {other:?}"),
        }
    }

    /// LeaseTimeToLive: whole seconds left (truncated, as etcd's), -1 for an unknown lease.
    pub async fn lease_time_to_live(
        &self,
        req: &LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, StoreError> {
        let call = DbRequest::LeaseTimeToLive {
            id: req.id,
            keys: req.keys,
        };
        match self.lease_call(call).await? {
            (
                current,
                LeaseAnswer::TimeToLive {
                    remaining_ms,
                    granted_ttl_s,
                    keys,
                },
            ) => Ok(LeaseTimeToLiveResponse {
                header: self.header(current),
                id: req.id,
                ttl: if remaining_ms < 0 {
                    -1
                } else {
                    remaining_ms / 1000
                },
                granted_ttl: granted_ttl_s,
                keys: keys.into_iter().map(String::into_bytes).collect(),
            }),
            (_, other) => unreachable!("a time-to-live answered {other:?}"),
        }
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, StoreError> {
        match self.lease_call(DbRequest::LeaseLeases).await? {
            (current, LeaseAnswer::Leases(ids)) => Ok(LeaseLeasesResponse {
                header: self.header(current),
                leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
            }),
            (_, other) => unreachable!("leases answered {other:?}"),
        }
    }

    /// One expiry round: transactions of up to `EXPIRE_BATCH` expired leases until one finds
    /// fewer, at most `EXPIRE_ROUNDS` of them. Returns the leases expired.
    pub async fn expire_leases(&self) -> Result<Vec<i64>, StoreError> {
        let mut all = Vec::new();
        for _ in 0..EXPIRE_ROUNDS {
            let call = DbRequest::LeaseExpire {
                limit: EXPIRE_BATCH,
            };
            match self.lease_call(call).await? {
                (_, LeaseAnswer::Expired(ids)) => {
                    let done = (ids.len() as i64) < EXPIRE_BATCH;
                    all.extend(ids);
                    if done {
                        break;
                    }
                }
                (_, other) => unreachable!("an expiry answered {other:?}"),
            }
        }
        Ok(all)
    }
}

/// A server's expiry loop: every `EXPIRY_EVERY`, expire the leases past their deadline. Started
/// only once the server knows leases exist (`KineStore::leases_in_use`), so a server whose
/// clients never use leases makes no extra database call. A failed round is retried next tick.
pub async fn expiry_loop(store: Arc<KineStore>) {
    loop {
        tokio::time::sleep(EXPIRY_EVERY).await;
        let _ = store.expire_leases().await;
    }
}

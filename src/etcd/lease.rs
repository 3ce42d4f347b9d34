//! An etcd member's lessor: the leases it applied, and their deadlines where it is the primary.
//!
//! Grants and revokes are raft entries every member applies in order (so every member holds the
//! same leases, in its backend and its snapshots); deadlines are local clocks that count only on
//! the primary: the leader once it has applied an entry of its own term. It renews on keep-alive
//! and finds expired leases; the member proposes their revokes. A member that becomes primary
//! renews every lease to its full TTL plus the election timeout (etcd's Promote), so a leader
//! change only lengthens a lease; one that stops leading stops expiring (etcd's Demote).
//!
//! Which keys a lease holds is not kept here: the store's rows carry their lease, and
//! [`Mvcc::keys_with_lease`] reads it (etcd's lessor rebuilds its item sets from them too).

use super::mvcc::{BackendRecord, Mvcc};
use crate::design::LeaseVariant;
use crate::error::StoreError;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// etcd's MaxLeaseTTL: a grant for longer is refused.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// How often the primary looks for expired leases (etcd's revoke loop interval).
pub const EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// At most this many revokes are proposed per check (etcd's leaseRevokeRate of 1000/s).
pub const REVOKES_PER_CHECK: usize = 500;
/// A lease whose revoke was proposed is not proposed again before this (etcd's
/// expiredLeaseRetryInterval): the first may still be on its way through raft.
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds.
pub fn min_ttl(election_timeout: Duration) -> i64 {
    let ms = election_timeout.as_millis() as i64 * 3 / 2;
    (ms + 999) / 1000
}

#[derive(Clone, Debug)]
struct LeaseState {
    /// The TTL granted, in seconds (at least the minimum).
    ttl: i64,
    /// When it expires, as this member last set it (on grant, restart, renewal or promotion).
    deadline: Instant,
    /// Its revoke was proposed: not again before this.
    retry_after: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct Lessor {
    leases: BTreeMap<i64, LeaseState>,
    min_ttl: i64,
    primary: bool,
    variant: LeaseVariant,
}

impl Lessor {
    pub fn new(min_ttl: i64, variant: LeaseVariant) -> Self {
        Lessor {
            leases: BTreeMap::new(),
            min_ttl,
            primary: false,
            variant,
        }
    }

    /// The leases a backend (or snapshot) holds, read back in order; their deadlines start over
    /// at `now` and count only once this member is promoted.
    pub fn restore<'a>(
        records: impl IntoIterator<Item = &'a BackendRecord>,
        min_ttl: i64,
        variant: LeaseVariant,
        now: Instant,
    ) -> Self {
        let mut l = Lessor::new(min_ttl, variant);
        for r in records {
            match r {
                BackendRecord::Lease { id, ttl } => {
                    l.leases.insert(*id, l.fresh(*ttl, now));
                }
                BackendRecord::LeaseRevoked(id) => {
                    l.leases.remove(id);
                }
                _ => {}
            }
        }
        l
    }

    fn fresh(&self, ttl: i64, now: Instant) -> LeaseState {
        LeaseState {
            ttl,
            deadline: now + Duration::from_secs(ttl as u64),
            retry_after: None,
        }
    }

    /// Every lease as backend records: its part of a snapshot.
    pub fn dump(&self) -> Vec<BackendRecord> {
        self.leases
            .iter()
            .map(|(&id, l)| BackendRecord::Lease { id, ttl: l.ttl })
            .collect()
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The live lease IDs, in order.
    pub fn leases(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Applies a grant: returns the TTL granted (raised to the minimum).
    pub fn grant(
        &mut self,
        mvcc: &mut Mvcc,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<i64, StoreError> {
        if id == 0 {
            // The member picks an ID before proposing; a zero in the log is a bug, as in etcd.
            return Err(StoreError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        let ttl = ttl.max(self.min_ttl);
        self.leases.insert(id, self.fresh(ttl, now));
        mvcc.record(BackendRecord::Lease { id, ttl });
        Ok(ttl)
    }

    /// Applies a revoke: every key attached to the lease is deleted in one write (one revision,
    /// one DELETE each), and the lease with it.
    pub fn revoke(&mut self, mvcc: &mut Mvcc, id: i64) -> Result<(), StoreError> {
        if self.leases.remove(&id).is_none() {
            return Err(StoreError::LeaseNotFound);
        }
        let keys = mvcc.keys_with_lease(id);
        mvcc.delete_keys(&keys);
        mvcc.record(BackendRecord::LeaseRevoked(id));
        Ok(())
    }

    /// A keep-alive at the primary: the lease lives its full TTL from now. `None`: no such
    /// lease, or it already expired (its revoke is on its way): the client must read it as lost.
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        if l.deadline <= now {
            return None;
        }
        l.deadline = now + Duration::from_secs(l.ttl as u64);
        Some(l.ttl)
    }

    /// The whole seconds left (0 once expired) and the TTL granted.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let l = self.leases.get(&id)?;
        let left = l.deadline.saturating_duration_since(now).as_secs() as i64;
        Some((left, l.ttl))
    }

    /// This member leads and has applied everything committed before its term: it now keeps
    /// the deadlines. Every lease gets its full TTL plus `extend` (the election timeout), so no
    /// lease expires because keep-alives could not reach a leader during the election.
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        for l in self.leases.values_mut() {
            l.retry_after = None;
            if self.variant != LeaseVariant::NoRenewOnPromote {
                l.deadline = now + extend + Duration::from_secs(l.ttl as u64);
            }
        }
    }

    /// This member no longer leads: it neither renews nor expires.
    pub fn demote(&mut self) {
        self.primary = false;
    }

    /// At the primary, up to `limit` leases past their deadline whose revoke is not already on
    /// its way; each is not offered again for [`REVOKE_RETRY`].
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        if !self.primary {
            return vec![];
        }
        let mut out = Vec::new();
        for (&id, l) in self.leases.iter_mut() {
            if out.len() == limit {
                break;
            }
            if l.deadline <= now && l.retry_after.is_none_or(|r| r <= now) {
                l.retry_after = Some(now + REVOKE_RETRY);
                out.push(id);
            }
        }
        out
    }
}

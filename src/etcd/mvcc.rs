//! An etcd member's applied state: the MVCC key space, its revision counter and compaction marks.
//!
//! Every change is also queued as a backend record; the member commits that queue to its disk
//! (the stand-in for etcd's bbolt backend) and rebuilds the store from it on restart. It is pure:
//! no I/O, no time, no randomness; the member decides when to commit and what to apply.

use crate::design::CompactionVariant;
use crate::error::StoreError;
use crate::kv_rules;
use crate::observe::StoreEvent;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::response_op::Response as OpResponse;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
    WatchCreateRequest,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// One change to the backend, in the order it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BackendRecord {
    /// A key's version at revision `rev.sub`; `value: None` is a tombstone.
    Row {
        key: Vec<u8>,
        rev: i64,
        sub: i64,
        create_revision: i64,
        version: i64,
        value: Option<Vec<u8>>,
        lease: i64,
    },
    /// Compaction removed the row at `rev.sub` of `key`.
    Removed {
        key: Vec<u8>,
        rev: i64,
        sub: i64,
    },
    /// The last raft entry whose effects are in the backend.
    ConsistentIndex(u64),
    ScheduledCompact(i64),
    FinishedCompact(i64),
    /// The cluster membership as of the consistent index.
    Voters(Vec<u64>),
    /// A lease granted with this TTL (etcd's lease bucket); read back by the member's lessor.
    Lease {
        id: i64,
        ttl: i64,
    },
    /// The lease was revoked (or expired): its row in the lease bucket is gone.
    LeaseRevoked(i64),
}

#[derive(Clone, Debug, PartialEq)]
struct Version {
    rev: i64,
    sub: i64,
    create_revision: i64,
    version: i64,
    /// `None`: the key was deleted at this revision.
    value: Option<Vec<u8>>,
    lease: i64,
}

impl Version {
    fn kv(&self, key: &[u8], keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.rev,
            version: self.version,
            value: if keys_only {
                vec![]
            } else {
                self.value.clone().unwrap_or_default()
            },
            lease: self.lease,
        }
    }
}

#[derive(Debug)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// Which key changed at each revision, for watches.
    by_rev: BTreeMap<(i64, i64), Vec<u8>>,
    current: i64,
    /// The compact revision reads are judged against (etcd's compactMainRev): set when a
    /// compaction is scheduled, before its rows are gone.
    compact: i64,
    scheduled: i64,
    finished: i64,
    consistent_index: u64,
    voters: Vec<u64>,
    dirty: Vec<BackendRecord>,
    /// Rows written since the last [`Mvcc::take_commits`], as commit facts for observers.
    commits: Vec<StoreEvent>,
    variant: CompactionVariant,
}

/// Whether `key` falls in etcd's `[key, range_end)` selection.
pub fn in_range(start: &[u8], range_end: &[u8], key: &[u8]) -> bool {
    match range_end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn bounds<'a>(start: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    match range_end {
        [] => (Bound::Included(start), Bound::Included(start)),
        [0] => (Bound::Included(start), Bound::Unbounded),
        end if end <= start => (Bound::Included(start), Bound::Excluded(start)),
        end => (Bound::Included(start), Bound::Excluded(end)),
    }
}

impl Mvcc {
    pub fn new(variant: CompactionVariant) -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            by_rev: BTreeMap::new(),
            current: 1,
            compact: 0,
            scheduled: 0,
            finished: 0,
            consistent_index: 0,
            voters: vec![],
            dirty: vec![],
            commits: vec![],
            variant,
        }
    }

    /// The rows written since the last call, as `DbInsert` facts (id = revision).
    pub fn take_commits(&mut self) -> Vec<StoreEvent> {
        std::mem::take(&mut self.commits)
    }

    pub fn current_revision(&self) -> i64 {
        self.current
    }
    pub fn compact_revision(&self) -> i64 {
        self.compact
    }
    pub fn scheduled_compact_revision(&self) -> i64 {
        self.scheduled
    }
    pub fn finished_compact_revision(&self) -> i64 {
        self.finished
    }
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// Records that the effects of raft entry `index` are applied.
    pub fn set_consistent_index(&mut self, index: u64) {
        self.consistent_index = index;
        self.dirty.push(BackendRecord::ConsistentIndex(index));
    }

    pub fn set_voters(&mut self, voters: Vec<u64>) {
        self.voters = voters.clone();
        self.dirty.push(BackendRecord::Voters(voters));
    }

    /// Queues a record another part of the applied state (the lessor) writes to the backend,
    /// in order with the store's own.
    pub fn record(&mut self, r: BackendRecord) {
        self.dirty.push(r);
    }

    /// The live keys whose current version is attached to `lease`, in key order (etcd's lessor
    /// keeps this set beside the store; here the store's own rows say it).
    pub fn keys_with_lease(&self, lease: i64) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter(|(_, versions)| {
                versions
                    .last()
                    .is_some_and(|v| v.value.is_some() && v.lease == lease)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Deletes `keys` in one write: one new revision, one tombstone (DELETE event) per live key.
    pub fn delete_keys(&mut self, keys: &[Vec<u8>]) {
        let mut tx = Tx::new(self);
        for key in keys {
            tx.delete(&DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            });
        }
        tx.end();
    }

    /// The operations a transaction runs: its success branch if every compare holds now.
    pub fn txn_branch<'r>(&self, req: &'r TxnRequest) -> &'r [RequestOp] {
        if req.compare.iter().all(|c| self.compare(c)) {
            &req.success
        } else {
            &req.failure
        }
    }

    /// Backend writes applied but not yet committed (etcd's batch tx `pending`).
    pub fn pending_writes(&self) -> usize {
        self.dirty.len()
    }

    /// The records changed since the last call: what the next backend commit must write.
    pub fn take_dirty(&mut self) -> Vec<BackendRecord> {
        std::mem::take(&mut self.dirty)
    }

    /// The whole store as records: a snapshot, or a defragmented backend.
    pub fn dump(&self) -> Vec<BackendRecord> {
        let mut out = Vec::new();
        for (key, versions) in &self.keys {
            for v in versions {
                out.push(row_record(key, v));
            }
        }
        out.push(BackendRecord::ScheduledCompact(self.scheduled));
        out.push(BackendRecord::FinishedCompact(self.finished));
        out.push(BackendRecord::Voters(self.voters.clone()));
        out.push(BackendRecord::ConsistentIndex(self.consistent_index));
        out
    }

    /// Rebuilds a store from its backend records, as etcd's kvstore restore does. Returns the
    /// store and, when a compaction was scheduled but not finished, its revision to resume.
    pub fn restore(
        records: impl IntoIterator<Item = BackendRecord>,
        variant: CompactionVariant,
    ) -> (Self, Option<i64>) {
        let mut m = Mvcc::new(variant);
        for r in records {
            match r {
                BackendRecord::Row {
                    key,
                    rev,
                    sub,
                    create_revision,
                    version,
                    value,
                    lease,
                } => {
                    let v = Version {
                        rev,
                        sub,
                        create_revision,
                        version,
                        value,
                        lease,
                    };
                    m.store_version(&key, v);
                }
                BackendRecord::Removed { key, rev, sub } => {
                    m.by_rev.remove(&(rev, sub));
                    if let Some(versions) = m.keys.get_mut(&key) {
                        versions.retain(|v| (v.rev, v.sub) != (rev, sub));
                        if versions.is_empty() {
                            m.keys.remove(&key);
                        }
                    }
                }
                BackendRecord::ConsistentIndex(i) => m.consistent_index = i,
                BackendRecord::ScheduledCompact(r) => m.scheduled = r,
                BackendRecord::FinishedCompact(r) => m.finished = r,
                BackendRecord::Voters(v) => m.voters = v,
                BackendRecord::Lease { .. } | BackendRecord::LeaseRevoked(_) => {}
            }
        }
        // The current revision is the newest row left in the backend...
        let newest = m.by_rev.keys().next_back().map(|(r, _)| *r).unwrap_or(1);
        m.current = newest.max(1).max(m.finished);
        if m.variant == CompactionVariant::Fixed {
            // ...but compaction may have removed the newest row (a tombstone at the compact
            // revision): the scheduled mark is the proof the revision was reached (etcd #17780).
            m.current = m.current.max(m.scheduled);
        }
        m.compact = m.finished;
        let resume = (m.scheduled > m.finished).then_some(m.scheduled);
        if let Some(r) = resume {
            m.compact = r;
        }
        (m, resume)
    }

    fn check_revision(&self, revision: i64) -> Result<i64, StoreError> {
        if revision > self.current {
            return Err(StoreError::FutureRevision);
        }
        if revision > 0 && revision < self.compact {
            crate::probe!("etcd.range.compacted");
            return Err(StoreError::Compacted);
        }
        Ok(if revision <= 0 {
            self.current
        } else {
            revision
        })
    }

    /// The version of each key in the range live at `at`, in key order.
    fn live_at<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        at: i64,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Version)> + 'a {
        self.keys
            .range::<[u8], _>(bounds(key, range_end))
            .filter_map(move |(k, versions)| {
                let i = versions.partition_point(|v| v.rev <= at);
                let v = versions.get(i.checked_sub(1)?)?;
                v.value.is_some().then_some((k, v))
            })
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        kv_rules::check_range(req)?;
        let at = self.check_revision(req.revision)?;
        if req.revision > 0 && req.revision == self.compact {
            crate::probe!("etcd.range.at_compact_revision");
        }
        if req.range_end.len() > 1 && self.keys.contains_key(&req.range_end) {
            crate::probe!("etcd.range.key_at_range_end");
        }
        Ok(self.range_at(req, at))
    }

    /// etcd's Range over the versions live at `at`: the count is the whole range's; filters,
    /// sort and limit follow etcd's applier (`kv_rules::finish_range`).
    fn range_at(&self, req: &RangeRequest, at: i64) -> RangeResponse {
        let read_limit = kv_rules::read_limit(req);
        let mut kvs = Vec::new();
        let mut count = 0;
        for (k, v) in self.live_at(&req.key, &req.range_end, at) {
            count += 1;
            if req.count_only || (read_limit > 0 && kvs.len() as i64 >= read_limit) {
                continue;
            }
            kvs.push(v.kv(k, false));
        }
        // A count-only range returns no key-values, so nothing was cut (etcd's applier).
        let (kvs, more) = kv_rules::finish_range(req, kvs);
        RangeResponse {
            header: revision_header(self.current),
            more,
            count,
            kvs,
        }
    }

    fn latest(&self, key: &[u8]) -> Option<&Version> {
        self.keys
            .get(key)
            .and_then(|v| v.last())
            .filter(|v| v.value.is_some())
    }

    fn write_row(&mut self, key: &[u8], rev: i64, sub: i64, value: Option<Vec<u8>>, lease: i64) {
        let prev = self
            .latest(key)
            .map(|p| (p.create_revision, p.rev, p.version));
        let (create_revision, version) = match (prev, &value) {
            (_, None) => (0, 0),
            (Some((created, _, version)), Some(_)) => (created, version + 1),
            (None, Some(_)) => (rev, 1),
        };
        self.commits.push(StoreEvent::DbInsert {
            id: rev,
            key: String::from_utf8_lossy(key).into_owned(),
            created: prev.is_none(),
            deleted: value.is_none(),
            create_revision: prev.map(|p| p.0).unwrap_or(rev),
            prev_revision: prev.map(|p| p.1).unwrap_or(0),
        });
        let v = Version {
            rev,
            sub,
            create_revision,
            version,
            value,
            lease,
        };
        self.dirty.push(row_record(key, &v));
        self.store_version(key, v);
    }

    /// Files a version under its key (kept in revision order) and in the revision index.
    fn store_version(&mut self, key: &[u8], v: Version) {
        self.by_rev.insert((v.rev, v.sub), key.to_vec());
        let versions = self.keys.entry(key.to_vec()).or_default();
        let at = versions.partition_point(|x| (x.rev, x.sub) < (v.rev, v.sub));
        versions.insert(at, v);
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        kv_rules::check_put(req)?;
        self.check_put_applies(req)?;
        let mut tx = Tx::new(self);
        let prev_kv = tx.put(req);
        let header = revision_header(tx.revision());
        tx.end();
        Ok(PutResponse { header, prev_kv })
    }

    /// etcd's apply-time check of a put: `ignore_value` and `ignore_lease` need a live key.
    fn check_put_applies(&self, p: &PutRequest) -> Result<(), StoreError> {
        if (p.ignore_value || p.ignore_lease) && self.latest(&p.key).is_none() {
            return Err(StoreError::Unsupported(kv_rules::KEY_NOT_FOUND.into()));
        }
        Ok(())
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        kv_rules::check_delete(req)?;
        let mut tx = Tx::new(self);
        let resp = tx.delete(req);
        tx.end();
        Ok(resp)
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        kv_rules::check_txn(req)?;
        let succeeded = req.compare.iter().all(|c| {
            let holds = self.compare(c);
            if !holds {
                self.probe_failed_compare(c);
            }
            holds
        });
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        // etcd checks the branch against the store as it was before the transaction: a read at
        // a revision it cannot serve, or a put that needs a key that is not there, fails it all.
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) => {
                    self.check_revision(r.revision)?;
                }
                Some(Op::RequestPut(p)) => self.check_put_applies(p)?,
                Some(Op::RequestTxn(_)) => {
                    return Err(StoreError::Unsupported(
                        "faultline etcd member: request_txn (a Txn nested in a Txn) is unsupported"
                            .into(),
                    ))
                }
                Some(Op::RequestDeleteRange(_)) | None => {}
            }
        }
        let mut tx = Tx::new(self);
        let mut responses = Vec::new();
        for op in ops {
            let response = match &op.request {
                Some(Op::RequestRange(r)) => {
                    // Reads inside a transaction see its earlier writes, and say at which
                    // revision they read.
                    let at = if r.revision > 0 {
                        r.revision
                    } else {
                        tx.revision()
                    };
                    let mut resp = tx.m.range_at(r, at);
                    resp.header = revision_header(tx.revision());
                    OpResponse::ResponseRange(resp)
                }
                Some(Op::RequestPut(p)) => OpResponse::ResponsePut(PutResponse {
                    prev_kv: tx.put(p),
                    header: revision_header(tx.revision()),
                }),
                Some(Op::RequestDeleteRange(d)) => OpResponse::ResponseDeleteRange(tx.delete(d)),
                Some(Op::RequestTxn(_)) | None => unreachable!("checked above"),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        let header = revision_header(tx.revision());
        tx.end();
        Ok(TxnResponse {
            header,
            succeeded,
            responses,
        })
    }

    fn compare(&self, c: &Compare) -> bool {
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
        let keys: Vec<(Vec<u8>, Option<&Version>)> = if c.range_end.is_empty() {
            vec![(c.key.clone(), self.latest(&c.key))]
        } else {
            self.live_at(&c.key, &c.range_end, self.current)
                .map(|(k, v)| (k.clone(), Some(v)))
                .collect()
        };
        keys.iter().all(|(_, v)| {
            let ord = match (&c.target_union, v) {
                (Some(TargetUnion::Value(want)), Some(v)) => {
                    v.value.as_deref().unwrap_or_default().cmp(want.as_slice())
                }
                (Some(TargetUnion::Value(_)), None) => return false,
                (Some(TargetUnion::Version(want)), v) => v.map_or(0, |v| v.version).cmp(want),
                (Some(TargetUnion::CreateRevision(want)), v) => {
                    v.map_or(0, |v| v.create_revision).cmp(want)
                }
                (Some(TargetUnion::ModRevision(want)), v) => v.map_or(0, |v| v.rev).cmp(want),
                (Some(TargetUnion::Lease(want)), v) => v.map_or(0, |v| v.lease).cmp(want),
                (None, _) => return target == CompareTarget::Version,
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::NotEqual => ord.is_ne(),
            }
        })
    }

    /// Names which compare failed (for code probes only): a Kubernetes-shaped create (mod
    /// revision 0) that found the key live, an update that found it gone or rewritten, or the
    /// apiserver compactor's version compare on `compact_rev_key`, which another one won.
    fn probe_failed_compare(&self, c: &Compare) {
        let have = self.latest(&c.key).map_or(0, |v| v.rev);
        match c.target_union {
            Some(TargetUnion::ModRevision(0)) => crate::probe!("etcd.txn.create_found_key_live"),
            Some(TargetUnion::ModRevision(_)) if have == 0 => {
                crate::probe!("etcd.txn.update_found_key_gone")
            }
            Some(TargetUnion::ModRevision(_)) => {
                crate::probe!("etcd.txn.update_found_newer_revision")
            }
            Some(TargetUnion::Version(_)) => crate::probe!("etcd.txn.version_compare_failed"),
            _ => {}
        }
    }

    /// First phase of a compaction: validates `revision` and persists the scheduled mark.
    pub fn schedule_compaction(&mut self, revision: i64) -> Result<(), StoreError> {
        if revision <= self.compact {
            return Err(StoreError::Compacted);
        }
        if revision > self.current {
            return Err(StoreError::FutureRevision);
        }
        self.compact = revision;
        self.scheduled = revision;
        self.dirty.push(BackendRecord::ScheduledCompact(revision));
        Ok(())
    }

    /// Second phase: removes every version superseded at or before `revision`, and every
    /// tombstone at or before it. Returns how many rows went.
    pub fn compact_rows(&mut self, revision: i64) -> usize {
        let mut removed = Vec::new();
        self.keys.retain(|key, versions| {
            let upto = versions.partition_point(|v| v.rev <= revision);
            let keep_newest = upto > 0 && versions[upto - 1].value.is_some();
            let drop = if keep_newest { upto - 1 } else { upto };
            for v in versions.drain(..drop) {
                removed.push((key.clone(), v.rev, v.sub));
            }
            !versions.is_empty()
        });
        for (key, rev, sub) in &removed {
            self.by_rev.remove(&(*rev, *sub));
            self.dirty.push(BackendRecord::Removed {
                key: key.clone(),
                rev: *rev,
                sub: *sub,
            });
        }
        removed.len()
    }

    /// Third phase: the finished mark.
    pub fn finish_compaction(&mut self, revision: i64) {
        self.finished = revision;
        self.dirty.push(BackendRecord::FinishedCompact(revision));
    }

    /// The oldest revision a watch may start from without losing an event: the compact
    /// revision, or the one after it when the change at the compact revision is gone.
    pub fn watch_floor(&self) -> i64 {
        let c = self.compact;
        // Only a creation at the compact revision can still be delivered whole: a tombstone
        // there is gone, and so is the previous version an update's prev_kv needs.
        let rows: Vec<&Vec<u8>> = self
            .by_rev
            .range((c, 0)..(c + 1, 0))
            .map(|(_, k)| k)
            .collect();
        let whole = !rows.is_empty()
            && rows
                .iter()
                .all(|k| self.keys[*k].iter().any(|v| v.rev == c && v.version == 1));
        c + (c > 1 && !whole) as i64
    }

    /// Events in `[key, range_end)` from revision `from` on, in revision order, with `prev_kv`.
    ///
    /// A watch from exactly the compact revision is refused when that revision's change cannot
    /// be delivered whole (a tombstone compacted away, or an update whose previous version is
    /// gone): serving it would silently skip the DELETE. With `variant_18089` it is served
    /// anyway, as etcd before its fix for #18089 did.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        variant_18089: bool,
    ) -> Result<Vec<(i64, Event)>, StoreError> {
        if from > 0 && from < self.compact {
            return Err(StoreError::Compacted);
        }
        let edge_lost = from == self.compact && self.watch_floor() > from;
        if edge_lost && !variant_18089 {
            crate::probe!("watch.etcd.refused_at_compact_revision");
            return Err(StoreError::Compacted);
        }
        if from == self.compact {
            crate::probe!("watch.etcd.opened_at_compact_revision");
        }
        let mut out = Vec::new();
        for (&(rev, sub), k) in self.by_rev.range((from.max(1), 0)..) {
            if range_end.len() > 1 && k.as_slice() == range_end {
                crate::probe!("watch.etcd.event_at_range_end");
            }
            if !in_range(key, range_end, k) {
                continue;
            }
            let versions = &self.keys[k];
            let i = versions
                .iter()
                .position(|v| (v.rev, v.sub) == (rev, sub))
                .expect("the revision index names a stored version");
            let v = &versions[i];
            let prev_kv = i
                .checked_sub(1)
                .map(|p| &versions[p])
                .filter(|p| p.value.is_some())
                .map(|p| p.kv(k, false));
            let (kind, kv) = match v.value {
                Some(_) => (EventType::Put, v.kv(k, false)),
                None => (
                    EventType::Delete,
                    KeyValue {
                        key: k.clone(),
                        mod_revision: rev,
                        ..Default::default()
                    },
                ),
            };
            out.push((
                rev,
                Event {
                    r#type: kind as i32,
                    kv: Some(kv),
                    prev_kv,
                },
            ));
        }
        Ok(out)
    }
}

impl Mvcc {
    /// What a watch created by `create` receives from revision `from` on: its events in order,
    /// with its filters and its prev_kv choice applied; or, when `from` can no longer be served,
    /// the compact revision its cancellation names (the oldest it could resume from). One
    /// definition for the member's watchers and the conformance suite.
    pub fn watch_events(
        &self,
        create: &WatchCreateRequest,
        from: i64,
        variant_18089: bool,
    ) -> Result<Vec<(i64, Event)>, i64> {
        let events = self
            .events(&create.key, &create.range_end, from, variant_18089)
            .map_err(|_| self.watch_floor())?;
        Ok(events
            .into_iter()
            .filter(|(_, e)| {
                let filter = if e.r#type == EventType::Put as i32 {
                    FilterType::Noput
                } else {
                    FilterType::Nodelete
                };
                !create.filters.contains(&(filter as i32))
            })
            .map(|(rev, mut e)| {
                if !create.prev_kv {
                    e.prev_kv = None;
                }
                (rev, e)
            })
            .collect())
    }
}

/// A header carrying only a revision, as etcd's applier fills it; the member's services add
/// the cluster, member and term to the outer one.
fn revision_header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn row_record(key: &[u8], v: &Version) -> BackendRecord {
    BackendRecord::Row {
        key: key.to_vec(),
        rev: v.rev,
        sub: v.sub,
        create_revision: v.create_revision,
        version: v.version,
        value: v.value.clone(),
        lease: v.lease,
    }
}

/// One write transaction: every write shares the next main revision, with rising sub revisions.
struct Tx<'a> {
    m: &'a mut Mvcc,
    sub: i64,
}

impl<'a> Tx<'a> {
    fn new(m: &'a mut Mvcc) -> Self {
        Tx { m, sub: 0 }
    }

    fn rev(&self) -> i64 {
        self.m.current + 1
    }

    /// The revision the transaction's reads see and its responses carry: the one it writes at
    /// once it wrote something, the current one before (etcd's `storeTxnWrite`).
    fn revision(&self) -> i64 {
        if self.sub > 0 {
            self.rev()
        } else {
            self.m.current
        }
    }

    fn put(&mut self, p: &PutRequest) -> Option<KeyValue> {
        let prev = self.m.latest(&p.key).map(|v| v.kv(&p.key, false));
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map(|kv| kv.lease).unwrap_or_default()
        } else {
            p.lease
        };
        let (rev, sub) = (self.rev(), self.sub);
        self.m.write_row(&p.key, rev, sub, Some(value), lease);
        self.sub += 1;
        prev.filter(|_| p.prev_kv)
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let live: Vec<KeyValue> = self
            .m
            .live_at(&d.key, &d.range_end, i64::MAX)
            .map(|(k, v)| v.kv(k, false))
            .collect();
        let (rev, mut sub) = (self.rev(), self.sub);
        for kv in &live {
            self.m.write_row(&kv.key, rev, sub, None, 0);
            sub += 1;
        }
        self.sub = sub;
        DeleteRangeResponse {
            header: revision_header(self.revision()),
            deleted: live.len() as i64,
            prev_kvs: if d.prev_kv { live } else { vec![] },
        }
    }

    /// The revision advances once, and only if something was written.
    fn end(self) {
        if self.sub > 0 {
            self.m.current += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
        m.put(&PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .unwrap();
        m.current_revision()
    }

    fn del(m: &mut Mvcc, k: &str) -> i64 {
        m.delete_range(&DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        })
        .unwrap();
        m.current_revision()
    }

    fn get(m: &Mvcc, k: &str, rev: i64) -> Result<Option<KeyValue>, StoreError> {
        m.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })
        .map(|r| r.kvs.into_iter().next())
    }

    #[test]
    fn revisions_versions_and_reads_follow_etcd() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        assert_eq!(put(&mut m, "a", "1"), 2);
        assert_eq!(put(&mut m, "a", "2"), 3);
        let kv = get(&m, "a", 0).unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(get(&m, "a", 2).unwrap().unwrap().value, b"1");
        // Deleting nothing does not advance the revision.
        assert_eq!(del(&mut m, "zz"), 3);
        assert_eq!(del(&mut m, "a"), 4);
        assert_eq!(get(&m, "a", 0).unwrap(), None);
        assert_eq!(get(&m, "a", 5), Err(StoreError::FutureRevision));
        let all = m
            .range(&RangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                limit: 1,
                revision: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((all.count, all.more, all.kvs.len()), (1, false, 1));
    }

    #[test]
    fn responses_carry_the_revision_etcd_puts_in_their_headers() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        put(&mut m, "a", "1"); // 2
        put(&mut m, "b", "1"); // 3
        let rev = |h: &Option<ResponseHeader>| h.as_ref().map(|h| h.revision);
        let count = m
            .range(&RangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                limit: 1,
                count_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (count.count, count.more, count.kvs.len(), rev(&count.header)),
            (2, false, 0, Some(3)),
            "a count-only range returns nothing, so nothing was cut"
        );
        let op = |request| crate::proto::etcdserverpb::RequestOp {
            request: Some(request),
        };
        let get = || {
            op(Op::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            }))
        };
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                get(),
                op(Op::RequestPut(PutRequest {
                    key: b"a".to_vec(),
                    value: b"2".to_vec(),
                    ..Default::default()
                })),
                get(),
                op(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: b"zz".to_vec(),
                    ..Default::default()
                })),
            ],
            failure: vec![],
        };
        let resp = m.txn(&txn).unwrap();
        let inner: Vec<Option<i64>> = resp
            .responses
            .iter()
            .map(|r| match &r.response {
                Some(OpResponse::ResponseRange(r)) => rev(&r.header),
                Some(OpResponse::ResponsePut(p)) => rev(&p.header),
                Some(OpResponse::ResponseDeleteRange(d)) => rev(&d.header),
                _ => None,
            })
            .collect();
        // A read before the write sees revision 3; everything after it, the txn's revision 4.
        assert_eq!(inner, vec![Some(3), Some(4), Some(4), Some(4)]);
        assert_eq!(rev(&resp.header), Some(4));
    }

    #[test]
    fn compaction_keeps_the_newest_live_version_and_drops_tombstones() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        put(&mut m, "a", "1"); // 2
        put(&mut m, "a", "2"); // 3
        put(&mut m, "b", "1"); // 4
        del(&mut m, "b"); // 5
        m.schedule_compaction(5).unwrap();
        assert_eq!(m.compact_rows(5), 3);
        m.finish_compaction(5);
        assert_eq!(get(&m, "a", 3), Err(StoreError::Compacted));
        assert_eq!(get(&m, "a", 5).unwrap().unwrap().value, b"2");
        assert_eq!(m.schedule_compaction(5), Err(StoreError::Compacted));
        assert_eq!(m.schedule_compaction(9), Err(StoreError::FutureRevision));
        assert_eq!(m.events(b"a", &[0], 4, false), Err(StoreError::Compacted));
        // Revision 5 was b's delete, compacted away: a watch from 5 must not silently skip it.
        assert_eq!(m.events(b"b", &[0], 5, false), Err(StoreError::Compacted));
        assert_eq!(
            m.events(b"b", &[0], 5, true),
            Ok(vec![]),
            "etcd #18089 serves it"
        );
        // An update at the compact revision lost its previous version: not deliverable whole.
        put(&mut m, "a", "3"); // 6
        m.schedule_compaction(6).unwrap();
        m.compact_rows(6);
        assert_eq!(m.watch_floor(), 7);
        assert_eq!(m.events(b"a", &[0], 6, false), Err(StoreError::Compacted));
        put(&mut m, "c", "1"); // 7: a creation
        m.schedule_compaction(7).unwrap();
        m.compact_rows(7);
        assert_eq!(
            m.watch_floor(),
            7,
            "a creation at the compact revision is whole"
        );
    }

    #[test]
    fn a_txn_writes_at_one_revision_and_compares_first() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        put(&mut m, "a", "1");
        // Create b and c only if c does not exist yet.
        let cmp = Compare {
            key: b"c".to_vec(),
            target: CompareTarget::Version as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        };
        let txn = TxnRequest {
            compare: vec![cmp],
            success: vec![
                crate::proto::etcdserverpb::RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: b"b".to_vec(),
                        value: b"x".to_vec(),
                        ..Default::default()
                    })),
                },
                crate::proto::etcdserverpb::RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: b"c".to_vec(),
                        value: b"y".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        };
        assert!(m.txn(&txn).unwrap().succeeded);
        assert_eq!(m.current_revision(), 3);
        assert_eq!(get(&m, "c", 0).unwrap().unwrap().mod_revision, 3);
        assert!(!m.txn(&txn).unwrap().succeeded, "c exists now");
        assert_eq!(m.current_revision(), 3);
        let events = m.events(b"b", b"d", 3, false).unwrap();
        assert_eq!(events.len(), 2);
    }

    /// Compacting a tombstone at the latest revision removes the newest row; a crash before the
    /// finished mark leaves only the scheduled mark to say how far the revision had come.
    fn crash_mid_compaction(variant: CompactionVariant) -> Mvcc {
        let mut m = Mvcc::new(variant);
        let mut backend = Vec::new();
        put(&mut m, "a", "1"); // 2
        put(&mut m, "b", "1"); // 3
        let last = del(&mut m, "b"); // 4
        m.schedule_compaction(last).unwrap();
        backend.extend(m.take_dirty());
        m.compact_rows(last);
        backend.extend(m.take_dirty());
        // The process dies here: the finished mark never reaches the backend.
        let (restored, resume) = Mvcc::restore(backend, variant);
        assert_eq!(resume, Some(last));
        restored
    }

    #[test]
    fn recovery_keeps_the_revision_at_least_the_scheduled_compaction() {
        assert_eq!(
            crash_mid_compaction(CompactionVariant::Fixed).current_revision(),
            4
        );
        assert_eq!(
            crash_mid_compaction(CompactionVariant::Etcd17780).current_revision(),
            2,
            "etcd #17780: the member restarts at the newest row left, below revision 4"
        );
    }

    #[test]
    fn restore_from_a_dump_is_the_same_store() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        put(&mut m, "a", "1");
        put(&mut m, "a", "2");
        del(&mut m, "a");
        put(&mut m, "b", "1");
        m.set_consistent_index(7);
        let (r, resume) = Mvcc::restore(m.dump(), CompactionVariant::Fixed);
        assert_eq!(resume, None);
        assert_eq!(r.current_revision(), m.current_revision());
        assert_eq!(r.consistent_index(), 7);
        assert_eq!(
            r.events(b"a", &[0], 1, false),
            m.events(b"a", &[0], 1, false)
        );
    }

    #[test]
    fn sorts_and_filters_follow_etcds_applier() {
        use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        for (k, v) in [("a", "3"), ("b", "1"), ("c", "4")] {
            put(&mut m, k, v); // created at 2, 3, 4
        }
        put(&mut m, "c", "5"); // 5
        put(&mut m, "a", "6"); // 6
        let all = |r: RangeRequest| RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            ..r
        };
        let keys =
            |r: &RangeResponse| -> Vec<Vec<u8>> { r.kvs.iter().map(|kv| kv.key.clone()).collect() };
        let by_mod = m
            .range(&all(RangeRequest {
                limit: 2,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Mod as i32,
                ..Default::default()
            }))
            .unwrap();
        assert_eq!(keys(&by_mod), vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!((by_mod.count, by_mod.more), (3, true));
        let by_version = m
            .range(&all(RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Version as i32,
                ..Default::default()
            }))
            .unwrap();
        // a and c have version 2, b version 1: equal versions keep key order.
        assert_eq!(
            keys(&by_version),
            vec![b"a".to_vec(), b"c".to_vec(), b"b".to_vec()]
        );
        // Order NONE with target MOD and a limit: etcd reads limit + 1 keys in key order and
        // sorts only those, so b (mod 3) comes first and c is never read.
        let quirk = m
            .range(&all(RangeRequest {
                limit: 1,
                sort_target: SortTarget::Mod as i32,
                ..Default::default()
            }))
            .unwrap();
        assert_eq!(keys(&quirk), vec![b"b".to_vec()]);
        assert!(quirk.more);
        let filtered = m
            .range(&all(RangeRequest {
                limit: 1,
                min_create_revision: 3,
                max_mod_revision: 4,
                ..Default::default()
            }))
            .unwrap();
        // Only b (create 3, mod 3) passes; one key-value under a limit of one is not "more".
        assert_eq!(keys(&filtered), vec![b"b".to_vec()]);
        assert_eq!((filtered.count, filtered.more), (3, false));
    }

    #[test]
    fn ignore_value_and_ignore_lease_need_a_live_key() {
        let mut m = Mvcc::new(CompactionVariant::Fixed);
        m.put(&PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            lease: 9,
            ..Default::default()
        })
        .unwrap();
        let keep = PutRequest {
            key: b"a".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        m.put(&keep).unwrap();
        let kv = get(&m, "a", 0).unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.lease, kv.version),
            (&b"1"[..], 9, 2)
        );
        let missing = PutRequest {
            key: b"b".to_vec(),
            ..keep
        };
        let not_found = StoreError::Unsupported(kv_rules::KEY_NOT_FOUND.into());
        assert_eq!(m.put(&missing), Err(not_found.clone()));
        let txn = TxnRequest {
            success: vec![crate::proto::etcdserverpb::RequestOp {
                request: Some(Op::RequestPut(missing)),
            }],
            ..Default::default()
        };
        let before = m.current_revision();
        assert_eq!(m.txn(&txn), Err(not_found));
        assert_eq!(m.current_revision(), before, "a refused txn writes nothing");
    }
}

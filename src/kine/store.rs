//! etcd semantics over kine's log: Range, Put, DeleteRange, Txn and Compact.
//!
//! As in kine, a write is a read of the key's newest row followed by an append guarded by the
//! (name, prev_revision) unique index, each its own driver call; losing the race means the
//! compare no longer holds. Revisions come only from the database. This layer never retries a
//! write whose outcome is unknown: it tells the client so.

use super::database::{DbRequest, DbResponse};
use super::driver::Driver;
use super::sql::{End, NewRow, Row};
use crate::design::ListVariant;
use crate::error::StoreError;
use crate::kv_rules;
use crate::proto::etcdserverpb::range_request::SortTarget;
use crate::proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use std::time::Duration;

/// kine keeps no per-key version counter (every live key reports version 1), so it refuses a
/// sort by version rather than answer in key order as if it had sorted.
pub const SORT_BY_VERSION: &str =
    "kine: sort_target VERSION is unsupported: kine keeps no per-key version counter";

/// kine writes one row per revision, so a DeleteRange over a range of keys cannot happen at
/// one revision.
pub const RANGE_DELETE: &str =
    "kine: range_end is unsupported in DeleteRange: kine's log writes one \
     key per revision, so a range cannot be deleted at one revision; delete keys one at a time";

/// How many times a write that lost a race is re-evaluated before giving up.
const MAX_CONFLICT_RETRIES: usize = 5;

pub struct KineStore {
    driver: Driver,
    call_timeout: Duration,
    member_id: u64,
    /// Wakes this server's watch poller after a local insert.
    inserted: tokio::sync::Notify,
    list: ListVariant,
    /// Whether this server's lease expiry loop runs (started when it first meets a lease).
    expiry_started: std::sync::atomic::AtomicBool,
}

/// Converts a row into the key-value a client sees. kine keeps no per-key version counter, so a
/// live key reports version 1: only "exists or not" is meaningful, as etcd's `version = 0`
/// idiom needs.
pub fn to_kv(row: &Row, keys_only: bool) -> KeyValue {
    KeyValue {
        key: row.name.clone().into_bytes(),
        create_revision: if row.created {
            row.id
        } else {
            row.create_revision
        },
        mod_revision: row.id,
        version: if row.deleted { 0 } else { 1 },
        value: if keys_only { vec![] } else { row.value.clone() },
        lease: row.lease,
    }
}

fn key_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// etcd's range_end: empty is one key, `\0` is everything from the key on.
fn range_end(range_end: &[u8]) -> Option<End> {
    match range_end {
        [] => None,
        [0] => Some(End::Unbounded),
        e => Some(End::Exclusive(key_string(e))),
    }
}

/// The prefix a `[prefix, prefix+1)` range end stands for.
fn prefix_of(end: &End) -> Option<String> {
    let End::Exclusive(e) = end else { return None };
    let mut chars: Vec<char> = e.chars().collect();
    let last = chars.pop()?;
    chars.push(char::from_u32(last as u32 - 1)?);
    Some(chars.into_iter().collect())
}

fn check_revision(revision: i64, current: i64, compact: i64) -> Result<(), StoreError> {
    if revision > current {
        return Err(StoreError::FutureRevision);
    }
    if revision > 0 && revision < compact {
        crate::probe!("kine.range.compacted");
        return Err(StoreError::Compacted);
    }
    Ok(())
}

impl KineStore {
    pub fn new(driver: Driver, call_timeout: Duration, member_id: u64) -> Self {
        KineStore {
            driver,
            call_timeout,
            member_id,
            inserted: tokio::sync::Notify::new(),
            list: ListVariant::Fixed,
            expiry_started: Default::default(),
        }
    }

    /// Starts this server's lease expiry loop, once, when it learns that leases exist (a lease
    /// call, a write naming a lease, a polled row naming one, or leases found at startup). Until
    /// then the server makes no lease call of its own, so a run whose clients never use leases
    /// is the run it was before leases existed. A lease with no key that only another server
    /// knows of is still expired on access: every lease request checks the deadline itself.
    pub fn leases_in_use(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if !self.expiry_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(super::lease::expiry_loop(self.clone()));
        }
    }

    /// Selects how lists behave (the fixed design unless a variant is asked for).
    pub fn with_list_variant(mut self, list: ListVariant) -> Self {
        self.list = list;
        self
    }

    /// Notified after every row this server appends.
    pub fn inserted(&self) -> &tokio::sync::Notify {
        &self.inserted
    }

    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: self.member_id,
            revision,
            raft_term: 0,
        })
    }

    pub async fn call(&self, req: DbRequest) -> Result<DbResponse, StoreError> {
        Ok(self.driver.call(req, self.call_timeout).await?)
    }

    /// (current revision, compact revision).
    pub async fn revisions(&self) -> Result<(i64, i64), StoreError> {
        match self
            .call(DbRequest::Get {
                name: String::new(),
                revision: 0,
            })
            .await?
        {
            DbResponse::Row {
                current, compact, ..
            } => Ok((current, compact)),
            other => unreachable!("Get answered {other:?}"),
        }
    }

    /// The newest row of `key`, deleted or not, with the current revision.
    async fn latest(&self, key: &str) -> Result<(i64, Option<Row>), StoreError> {
        match self
            .call(DbRequest::Get {
                name: key.into(),
                revision: 0,
            })
            .await?
        {
            DbResponse::Row { current, row, .. } => Ok((current, row)),
            other => unreachable!("Get answered {other:?}"),
        }
    }

    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        kv_rules::check_range(req)?;
        if kv_rules::sort_order(req).is_some_and(|(target, _)| target == SortTarget::Version) {
            return Err(StoreError::Unsupported(SORT_BY_VERSION.into()));
        }
        let key = key_string(&req.key);
        let Some(end) = range_end(&req.range_end) else {
            let (current, compact, row) = match self
                .call(DbRequest::Get {
                    name: key,
                    revision: req.revision,
                })
                .await?
            {
                DbResponse::Row {
                    current,
                    compact,
                    row,
                } => (current, compact, row),
                other => unreachable!("Get answered {other:?}"),
            };
            check_revision(req.revision, current, compact)?;
            let kvs: Vec<KeyValue> = row
                .filter(|r| !r.deleted)
                .map(|r| to_kv(&r, false))
                .into_iter()
                .collect();
            let count = kvs.len() as i64;
            let (kvs, more) = if req.count_only {
                (vec![], false)
            } else {
                kv_rules::finish_range(req, kvs)
            };
            return Ok(RangeResponse {
                header: self.header(current),
                kvs,
                more,
                count,
            });
        };
        if req.count_only {
            let (current, compact, count) = match self
                .call(DbRequest::Count {
                    start: key,
                    end,
                    revision: req.revision,
                })
                .await?
            {
                DbResponse::Count {
                    current,
                    compact,
                    count,
                } => (current, compact, count),
                other => unreachable!("Count answered {other:?}"),
            };
            check_revision(req.revision, current, compact)?;
            return Ok(RangeResponse {
                header: self.header(current),
                kvs: vec![],
                more: false,
                count,
            });
        }
        // The one place the list variants differ from the fixed design.
        let (key, count_start) = match self.list {
            ListVariant::Fixed | ListVariant::KeysOnlyValues => (key.clone(), key),
            ListVariant::Kine298 => {
                let prefix = prefix_of(&end).unwrap_or_else(|| key.clone());
                (
                    if req.revision == 0 {
                        prefix.clone()
                    } else {
                        key
                    },
                    prefix,
                )
            }
            ListVariant::StartKeyIgnored => {
                let first = prefix_of(&end).unwrap_or_else(|| key.clone());
                (first.clone(), first)
            }
            ListVariant::StartKeyInclusive => match key.strip_suffix('\0') {
                Some(inclusive) => (inclusive.to_string(), inclusive.to_string()),
                None => (format!("{key}\0"), format!("{key}\0")),
            },
        };
        // One row more than the limit tells whether there is more (a sort or a filter reads
        // the whole range, as etcd does); the count of the whole range at the listed revision
        // comes from the same transaction.
        let fetch = kv_rules::read_limit(req);
        let (current, compact, rows, counted) = match self
            .call(DbRequest::List {
                start: key.clone(),
                end: end.clone(),
                revision: req.revision,
                limit: fetch,
                include_deleted: false,
                by_id: self.list == ListVariant::Kine298,
                count_from: count_start,
            })
            .await?
        {
            DbResponse::Page {
                current,
                compact,
                rows,
                count,
            } => (current, compact, rows, count),
            other => unreachable!("List answered {other:?}"),
        };
        check_revision(req.revision, current, compact)?;
        if req.revision > 0 && req.revision == compact {
            crate::probe!("kine.range.at_compact_revision");
        }
        let cut = fetch > 0 && rows.len() as i64 >= fetch;
        let count = if cut {
            counted.expect("a cut page is counted")
        } else {
            rows.len() as i64
        };
        let kvs = rows.iter().map(|r| to_kv(r, false)).collect();
        // keys-only-values: a keys-only answer keeps its values.
        let kept;
        let finish = if req.keys_only && self.list == ListVariant::KeysOnlyValues {
            kept = RangeRequest {
                keys_only: false,
                ..req.clone()
            };
            &kept
        } else {
            req
        };
        let (kvs, more) = kv_rules::finish_range(finish, kvs);
        Ok(RangeResponse {
            header: self.header(current),
            kvs,
            more,
            count,
        })
    }

    /// Appends a row for `key` on top of `prev` (its newest row, if any). `Ok(None)` means the
    /// guard fired: another write to this key got there first.
    async fn append(
        &self,
        key: &str,
        prev: Option<&Row>,
        deleted: bool,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<i64>, StoreError> {
        let live = prev.filter(|p| !p.deleted);
        let row = NewRow {
            name: key.to_string(),
            created: live.is_none() && !deleted,
            deleted,
            create_revision: live
                .map(|p| if p.created { p.id } else { p.create_revision })
                .unwrap_or(0),
            prev_revision: prev.map(|p| p.id).unwrap_or(0),
            lease,
            old_value: live.map(|p| p.value.clone()).unwrap_or_default(),
            value,
        };
        match self
            .driver
            .call(DbRequest::Insert(row), self.call_timeout)
            .await
        {
            Ok(DbResponse::Inserted(id)) => {
                // Wake this server's poller; a permit is kept if it is busy, as kine's buffered
                // notify channel does.
                self.inserted.notify_one();
                Ok(Some(id))
            }
            Ok(other) => unreachable!("Insert answered {other:?}"),
            Err(super::driver::DriverError::Db(
                super::database::DbError::UniqueViolation | super::database::DbError::Superseded,
            )) => {
                crate::probe!("kine.insert.guard_refused");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        kv_rules::check_put(req)?;
        let key = key_string(&req.key);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (_, prev) = self.latest(&key).await?;
            let live = prev.as_ref().filter(|p| !p.deleted);
            let (value, lease) = put_value_and_lease(req, live)?;
            if let Some(id) = self
                .append(&key, prev.as_ref(), false, value, lease)
                .await?
            {
                return Ok(PutResponse {
                    header: self.header(id),
                    prev_kv: live.filter(|_| req.prev_kv).map(|p| to_kv(p, false)),
                });
            }
        }
        Err(StoreError::Database(format!(
            "put {key}: too many conflicting writes"
        )))
    }

    pub async fn delete_range(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        kv_rules::check_delete(req)?;
        if !req.range_end.is_empty() {
            return Err(StoreError::Unsupported(RANGE_DELETE.into()));
        }
        let key = key_string(&req.key);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (current, prev) = self.latest(&key).await?;
            let Some(live) = prev.as_ref().filter(|p| !p.deleted) else {
                return Ok(DeleteRangeResponse {
                    header: self.header(current),
                    deleted: 0,
                    prev_kvs: vec![],
                });
            };
            if let Some(id) = self.append(&key, prev.as_ref(), true, vec![], 0).await? {
                return Ok(DeleteRangeResponse {
                    header: self.header(id),
                    deleted: 1,
                    prev_kvs: if req.prev_kv {
                        vec![to_kv(live, false)]
                    } else {
                        vec![]
                    },
                });
            }
        }
        Err(StoreError::Database(format!(
            "delete {key}: too many conflicting writes"
        )))
    }

    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        kv_rules::check_txn(req)?;
        for branch in [&req.success, &req.failure] {
            validate_branch(branch)?;
        }
        for c in &req.compare {
            if !c.range_end.is_empty() {
                return Err(StoreError::Unsupported(
                    "kine: range_end is unsupported in Compare: a compare reads one key".into(),
                ));
            }
        }
        'attempt: for _ in 0..MAX_CONFLICT_RETRIES {
            let mut seen: Vec<(String, Option<Row>)> = Vec::new();
            let mut current = 0;
            for c in &req.compare {
                let key = key_string(&c.key);
                if !seen.iter().any(|(k, _)| *k == key) {
                    let (cur, row) = self.latest(&key).await?;
                    current = current.max(cur);
                    seen.push((key, row));
                }
            }
            let succeeded = req.compare.iter().all(|c| {
                let row = seen
                    .iter()
                    .find(|(k, _)| k.as_bytes() == c.key.as_slice())
                    .and_then(|(_, r)| r.as_ref())
                    .filter(|r| !r.deleted);
                let holds = compare_holds(c, row);
                if !holds {
                    probe_failed_compare(c, row.map(|r| r.id).unwrap_or(0));
                }
                holds
            });
            let ops = if succeeded {
                &req.success
            } else {
                &req.failure
            };
            let mut responses = Vec::with_capacity(ops.len());
            let mut revision = current;
            for op in ops {
                let response = match &op.request {
                    Some(request_op::Request::RequestRange(r)) => {
                        let resp = self.range(r).await?;
                        revision =
                            revision.max(resp.header.as_ref().map(|h| h.revision).unwrap_or(0));
                        response_op::Response::ResponseRange(resp)
                    }
                    Some(request_op::Request::RequestPut(p)) => {
                        let key = key_string(&p.key);
                        let prev = match seen.iter().find(|(k, _)| *k == key) {
                            Some((_, row)) => row.clone(),
                            None => self.latest(&key).await?.1,
                        };
                        let live = prev.as_ref().filter(|r| !r.deleted);
                        // The branch writes one key, so nothing was written before this check.
                        let (value, lease) = put_value_and_lease(p, live)?;
                        let Some(id) = self
                            .append(&key, prev.as_ref(), false, value, lease)
                            .await?
                        else {
                            continue 'attempt;
                        };
                        revision = id;
                        response_op::Response::ResponsePut(PutResponse {
                            header: self.header(id),
                            prev_kv: live.filter(|_| p.prev_kv).map(|r| to_kv(r, false)),
                        })
                    }
                    Some(request_op::Request::RequestDeleteRange(d)) => {
                        let key = key_string(&d.key);
                        let prev = match seen.iter().find(|(k, _)| *k == key) {
                            Some((_, row)) => row.clone(),
                            None => self.latest(&key).await?.1,
                        };
                        match prev.as_ref().filter(|r| !r.deleted) {
                            None => {
                                response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                                    header: self.header(revision),
                                    deleted: 0,
                                    prev_kvs: vec![],
                                })
                            }
                            Some(live) => {
                                let Some(id) =
                                    self.append(&key, prev.as_ref(), true, vec![], 0).await?
                                else {
                                    continue 'attempt;
                                };
                                revision = id;
                                response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                                    header: self.header(id),
                                    deleted: 1,
                                    prev_kvs: if d.prev_kv {
                                        vec![to_kv(live, false)]
                                    } else {
                                        vec![]
                                    },
                                })
                            }
                        }
                    }
                    Some(request_op::Request::RequestTxn(_)) | None => {
                        unreachable!("validate_branch rejects nested and empty ops")
                    }
                };
                responses.push(ResponseOp {
                    response: Some(response),
                });
            }
            return Ok(TxnResponse {
                header: self.header(revision),
                succeeded,
                responses,
            });
        }
        Err(StoreError::Database(
            "txn: too many conflicting writes".into(),
        ))
    }

    /// Compacts the log to `revision` on a client's request (the apiserver's way), as batches of
    /// one transaction each. kine's own compactor does not go through here.
    pub async fn compact(&self, req: &CompactionRequest) -> Result<i64, StoreError> {
        let (current, compact) = self.revisions().await?;
        if req.revision <= compact {
            return Err(StoreError::Compacted);
        }
        if req.revision > current {
            return Err(StoreError::FutureRevision);
        }
        let reply = self
            .call(DbRequest::CompactBatch {
                expected: compact,
                target: req.revision,
                min_retain: 0,
                fault: None,
            })
            .await?;
        match reply {
            DbResponse::Compact(super::database::CompactReply::Committed { current, .. }) => {
                Ok(current)
            }
            DbResponse::Compact(_) => Err(StoreError::Compacted),
            other => unreachable!("CompactBatch answered {other:?}"),
        }
    }
}

/// What a put writes: its own value and lease, or the live key's where it asks to keep them
/// (`ignore_value`, `ignore_lease`), which etcd refuses when the key does not exist.
fn put_value_and_lease(p: &PutRequest, live: Option<&Row>) -> Result<(Vec<u8>, i64), StoreError> {
    if (p.ignore_value || p.ignore_lease) && live.is_none() {
        return Err(StoreError::Unsupported(kv_rules::KEY_NOT_FOUND.into()));
    }
    let value = match (p.ignore_value, live) {
        (true, Some(r)) => r.value.clone(),
        _ => p.value.clone(),
    };
    let lease = match (p.ignore_lease, live) {
        (true, Some(r)) => r.lease,
        _ => p.lease,
    };
    Ok((value, lease))
}

/// kine appends one row per revision, so one Txn branch may write at most one key.
fn validate_branch(ops: &[RequestOp]) -> Result<(), StoreError> {
    let mut writes = 0;
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestRange(_)) => {}
            Some(request_op::Request::RequestPut(_)) => writes += 1,
            Some(request_op::Request::RequestDeleteRange(d)) => {
                if !d.range_end.is_empty() {
                    return Err(StoreError::Unsupported(RANGE_DELETE.into()));
                }
                writes += 1
            }
            Some(request_op::Request::RequestTxn(_)) => {
                return Err(StoreError::Unsupported(
                    "kine: request_txn (a Txn nested in a Txn) is unsupported".into(),
                ))
            }
            None => {
                return Err(StoreError::Unsupported(
                    "etcdserver: empty request in txn".into(),
                ))
            }
        }
    }
    if writes > 1 {
        return Err(StoreError::Unsupported(
            "kine: a transaction may write only one key (one row per revision)".into(),
        ));
    }
    Ok(())
}

/// etcd's compare semantics; a value compare on a missing key is always false.
fn compare_holds(c: &Compare, row: Option<&Row>) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => match row {
            None => return false,
            Some(r) => r.value.as_slice().cmp(v.as_slice()),
        },
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => {
            (row.map(|_| 1i64).unwrap_or(0)).cmp(v)
        }
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => row
            .map(|r| if r.created { r.id } else { r.create_revision })
            .unwrap_or(0)
            .cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => {
            row.map(|r| r.id).unwrap_or(0).cmp(v)
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => {
            row.map(|r| r.lease).unwrap_or(0).cmp(v)
        }
        // A compare without its operand compares against the zero value, as etcd does.
        (
            CompareTarget::Version
            | CompareTarget::Create
            | CompareTarget::Mod
            | CompareTarget::Lease,
            None,
        ) => {
            let have = match target {
                CompareTarget::Version => row.map(|_| 1).unwrap_or(0),
                CompareTarget::Create => row
                    .map(|r| r.create_revision.max(if r.created { r.id } else { 0 }))
                    .unwrap_or(0),
                CompareTarget::Mod => row.map(|r| r.id).unwrap_or(0),
                _ => row.map(|r| r.lease).unwrap_or(0),
            };
            have.cmp(&0)
        }
        _ => return false,
    };
    match result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
        CompareResult::NotEqual => ord.is_ne(),
    }
}

/// Names which Kubernetes-shaped compare failed (for code probes only): a create (mod
/// revision 0) that found the key live, an update or delete that found it gone or rewritten.
fn probe_failed_compare(c: &Compare, have_mod_revision: i64) {
    use compare::TargetUnion;
    match c.target_union {
        Some(TargetUnion::ModRevision(0)) => crate::probe!("kine.txn.create_found_key_live"),
        Some(TargetUnion::ModRevision(_)) if have_mod_revision == 0 => {
            crate::probe!("kine.txn.update_found_key_gone")
        }
        Some(TargetUnion::ModRevision(_)) => crate::probe!("kine.txn.update_found_newer_revision"),
        _ => {}
    }
}

//! etcd 3.4's rules for KV requests that both stores share: the checks its gRPC layer makes
//! before a request reaches a store (`v3rpc/key.go`), and what Range does with the key-values
//! it read (`apply.go`: revision filters, sort, limit cut, keys-only).
//!
//! Pure functions over the protobuf types: they never read a store, so the kine store, the etcd
//! member and the conformance suite's model apply one definition.

use crate::error::StoreError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;
use std::cmp::Ordering;
use std::collections::BTreeSet;

pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
/// etcd 3.5's answer to a sort option the enum does not know (3.4 crashes on an unknown target).
pub const INVALID_SORT: &str = "etcdserver: invalid sort option";
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's default `--max-request-bytes` (1.5 MiB): the most a marshalled raft request may hold.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// What etcd's raft request adds around a Put, DeleteRange or Txn: the header (a two-byte tag
/// for field 100, its length, and the request id at its longest, ten bytes after a one-byte
/// tag) and the one-byte tag of the request's own field.
const RAFT_REQUEST_OVERHEAD: usize = 2 + 1 + 1 + 10 + 1;

/// The bytes etcd's `InternalRaftRequest` takes around a KV write request of `body` bytes:
/// what it compares with `--max-request-bytes` before proposing (`processInternalRaftRequestOnce`).
pub fn raft_request_bytes(body: usize) -> usize {
    RAFT_REQUEST_OVERHEAD + prost::encoding::encoded_len_varint(body as u64) + body
}

/// etcd's size check of a write: a request of `body` bytes whose raft request would exceed
/// `MAX_REQUEST_BYTES` is refused before it is proposed. Reads are not proposed, so not checked.
pub fn check_request_bytes(body: usize) -> Result<(), StoreError> {
    if raft_request_bytes(body) > MAX_REQUEST_BYTES {
        crate::probe!("etcd.write.request_too_large");
        return Err(invalid(REQUEST_TOO_LARGE));
    }
    Ok(())
}

fn invalid(msg: &str) -> StoreError {
    StoreError::Unsupported(msg.to_string())
}

/// etcd's `checkRangeRequest`, and 3.5's check of the sort enums.
pub fn check_range(r: &RangeRequest) -> Result<(), StoreError> {
    if r.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(invalid(INVALID_SORT));
    }
    Ok(())
}

/// etcd's `checkPutRequest`: `ignore_value` and `ignore_lease` take the key's own.
pub fn check_put(p: &PutRequest) -> Result<(), StoreError> {
    if p.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(invalid(VALUE_PROVIDED));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(invalid(LEASE_PROVIDED));
    }
    Ok(())
}

pub fn check_delete(d: &DeleteRangeRequest) -> Result<(), StoreError> {
    if d.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and, for one level of operations, `checkIntervals`: no key written
/// twice, no put inside a range the same branch deletes.
pub fn check_txn(t: &TxnRequest) -> Result<(), StoreError> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > MAX_TXN_OPS {
        return Err(invalid(TOO_MANY_OPS));
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(invalid(EMPTY_KEY));
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(request_op::Request::RequestTxn(inner)) => check_txn(inner)?,
            // etcd answers an empty operation with this message.
            None => return Err(invalid(KEY_NOT_FOUND)),
        }
    }
    for branch in [&t.success, &t.failure] {
        check_overlaps(branch)?;
    }
    Ok(())
}

fn check_overlaps(ops: &[RequestOp]) -> Result<(), StoreError> {
    let deletes: Vec<&DeleteRangeRequest> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => Some(d),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        let deleted = deletes
            .iter()
            .any(|d| crate::etcd::mvcc::in_range(&d.key, &d.range_end, &p.key));
        if !puts.insert(p.key.as_slice()) || deleted {
            return Err(invalid(DUPLICATE_KEY));
        }
    }
    Ok(())
}

/// etcd reads the whole range when it must sort or filter it; otherwise one key-value more
/// than the limit, to tell whether there is more.
pub fn reads_whole_range(r: &RangeRequest) -> bool {
    r.sort_order != SortOrder::None as i32
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
}

/// How many key-values (in key order) a store must read for `r`: 0 means all.
pub fn read_limit(r: &RangeRequest) -> i64 {
    if reads_whole_range(r) || r.limit <= 0 {
        0
    } else {
        r.limit + 1
    }
}

/// Whether a key-value passes the request's four revision filters (0 = no bound).
pub fn passes_filters(r: &RangeRequest, kv: &KeyValue) -> bool {
    !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
        || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
        || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
        || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
}

/// The order the request asks for, as etcd applies it: a target other than KEY with order NONE
/// sorts ascending; KEY with NONE keeps the store's key order. `None`: no sort.
pub fn sort_order(r: &RangeRequest) -> Option<(SortTarget, SortOrder)> {
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let order = match SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None) {
        SortOrder::None if target != SortTarget::Key => SortOrder::Ascend,
        o => o,
    };
    (order != SortOrder::None).then_some((target, order))
}

fn compare_by(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// Range's steps after the read, as etcd 3.4's applier takes them: `kvs` is what the store read
/// (in key order, values whole, as many as [`read_limit`] asked); the revision filters drop
/// key-values, the sort orders the rest, the limit cuts them and says whether there was more,
/// and keys-only empties the values last (a sort by value still sees them). The count is not
/// touched here: it stays the count of the whole range.
///
/// The sort is stable, so equal key-values keep key order in both directions: what etcd's
/// `sort.Sort` (Go 1.19: insertion sort up to 12 elements) gives; beyond 12 equal elements
/// etcd's order among them is unspecified.
pub fn finish_range(r: &RangeRequest, mut kvs: Vec<KeyValue>) -> (Vec<KeyValue>, bool) {
    kvs.retain(|kv| passes_filters(r, kv));
    if let Some((target, order)) = sort_order(r) {
        match order {
            SortOrder::Descend => kvs.sort_by(|a, b| compare_by(target, b, a)),
            _ => kvs.sort_by(|a, b| compare_by(target, a, b)),
        }
    }
    let more = r.limit > 0 && kvs.len() as i64 > r.limit;
    if more {
        kvs.truncate(r.limit as usize);
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    (kvs, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, create: i64, modified: i64, version: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modified,
            version,
            value: value.into(),
            lease: 0,
        }
    }

    fn keys(kvs: &[KeyValue]) -> Vec<String> {
        kvs.iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    fn store() -> Vec<KeyValue> {
        vec![
            kv("a", 2, 9, 3, "z"),
            kv("b", 3, 3, 1, "x"),
            kv("c", 4, 7, 2, "y"),
            kv("d", 5, 5, 1, "w"),
        ]
    }

    #[test]
    fn every_target_sorts_both_ways_and_the_limit_cuts_after_the_sort() {
        let req = |target: SortTarget, order: SortOrder| RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            limit: 2,
            sort_target: target as i32,
            sort_order: order as i32,
            ..Default::default()
        };
        let cases = [
            (SortTarget::Key, SortOrder::Descend, vec!["d", "c"]),
            (SortTarget::Mod, SortOrder::Descend, vec!["a", "c"]),
            (SortTarget::Mod, SortOrder::Ascend, vec!["b", "d"]),
            (SortTarget::Create, SortOrder::Descend, vec!["d", "c"]),
            (SortTarget::Value, SortOrder::Ascend, vec!["d", "b"]),
            // Equal versions keep key order, both ways.
            (SortTarget::Version, SortOrder::Ascend, vec!["b", "d"]),
            (SortTarget::Version, SortOrder::Descend, vec!["a", "c"]),
            // NONE with a target other than KEY sorts ascending.
            (SortTarget::Mod, SortOrder::None, vec!["b", "d"]),
            (SortTarget::Key, SortOrder::None, vec!["a", "b"]),
        ];
        for (target, order, want) in cases {
            let r = req(target, order);
            assert!(reads_whole_range(&r) || order == SortOrder::None);
            let (kvs, more) = finish_range(&r, store());
            assert_eq!(keys(&kvs), want, "{target:?} {order:?}");
            assert!(
                more,
                "{target:?} {order:?}: four key-values under a limit of two"
            );
        }
    }

    #[test]
    fn filters_cut_before_the_limit_and_more_counts_what_passed() {
        let r = RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            limit: 2,
            min_mod_revision: 5,
            max_create_revision: 4,
            keys_only: true,
            ..Default::default()
        };
        assert_eq!(read_limit(&r), 0, "filters read the whole range");
        let (kvs, more) = finish_range(&r, store());
        // b (mod 3) and d (create 5) go: a and c are left, exactly the limit.
        assert_eq!(keys(&kvs), vec!["a", "c"]);
        assert!(!more);
        assert!(kvs.iter().all(|kv| kv.value.is_empty()), "keys-only");
        let plain = RangeRequest {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(read_limit(&plain), 3, "one more than the limit");
    }

    #[test]
    fn checks_refuse_what_etcd_refuses() {
        let put = |value: &str, lease, ignore_value, ignore_lease| PutRequest {
            key: b"k".to_vec(),
            value: value.into(),
            lease,
            ignore_value,
            ignore_lease,
            ..Default::default()
        };
        assert_eq!(
            check_put(&put("v", 0, true, false)),
            Err(invalid(VALUE_PROVIDED))
        );
        assert_eq!(
            check_put(&put("", 5, false, true)),
            Err(invalid(LEASE_PROVIDED))
        );
        assert_eq!(check_put(&put("", 0, true, true)), Ok(()));
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(invalid(EMPTY_KEY))
        );
        assert_eq!(
            check_range(&RangeRequest {
                key: b"k".to_vec(),
                sort_target: 9,
                ..Default::default()
            }),
            Err(invalid(INVALID_SORT))
        );
        let op = |request| RequestOp {
            request: Some(request),
        };
        let twice = TxnRequest {
            success: vec![
                op(request_op::Request::RequestPut(put("a", 0, false, false))),
                op(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b"a".to_vec(),
                        range_end: b"z".to_vec(),
                        ..Default::default()
                    },
                )),
            ],
            ..Default::default()
        };
        assert_eq!(check_txn(&twice), Err(invalid(DUPLICATE_KEY)));
    }

    /// A write whose raft request fills `--max-request-bytes` exactly passes; one byte more is
    /// refused with etcd's message.
    #[test]
    fn a_write_fits_up_to_the_request_limit_and_not_a_byte_past() {
        use prost::Message;
        let txn = |n: usize| {
            crate::apiserver::guarded_txn("/registry/pods0", 7, Some(&"x".repeat(n))).encoded_len()
        };
        let mut n = MAX_REQUEST_BYTES;
        while raft_request_bytes(txn(n)) > MAX_REQUEST_BYTES {
            n -= 1;
        }
        assert_eq!(raft_request_bytes(txn(n)), MAX_REQUEST_BYTES);
        assert_eq!(check_request_bytes(txn(n)), Ok(()));
        assert_eq!(
            check_request_bytes(txn(n + 1)),
            Err(invalid(REQUEST_TOO_LARGE))
        );
        assert_eq!(check_request_bytes(txn(0)), Ok(()));
    }
}

//! The operations the suite sends to every side, and how each is written in a report.
//!
//! One `Op` is one request as an etcd client would send it (the Kubernetes apiserver's guarded
//! transactions, ranges, compactions, watches and progress requests). It knows nothing of the
//! sides or the comparison.

use std::fmt;
use store::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use store::proto::etcdserverpb::watch_create_request::FilterType;
use store::proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest,
};

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The apiserver's create: put if the key does not exist, else read it.
    Create {
        key: String,
        value: String,
    },
    /// The apiserver's update: put if the key is still at `expected_mod`, else read it.
    Update {
        key: String,
        value: String,
        expected_mod: i64,
    },
    /// The apiserver's delete: delete if the key is still at `expected_mod`, else read it.
    Delete {
        key: String,
        expected_mod: i64,
    },
    /// A plain put, as etcdctl sends it, keeping the key's value or lease when asked.
    Put {
        key: String,
        value: String,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    },
    /// A plain delete of one key.
    DeleteKey {
        key: String,
        prev_kv: bool,
    },
    /// A delete of every key in `[key, range_end)`.
    DeleteRange {
        key: String,
        range_end: Vec<u8>,
        prev_kv: bool,
    },
    Range(RangeRequest),
    /// The same range as the one operation of a Txn without compares.
    TxnRange(RangeRequest),
    Compact {
        revision: i64,
    },
    /// Opens watch number `watch` on a stream of its own.
    Watch {
        watch: usize,
        create: WatchCreateRequest,
    },
    /// Asks watch `watch`'s stream for a progress notification.
    Progress {
        watch: usize,
    },
    /// A lease operation (`lease.rs`).
    Lease(crate::lease::LeaseOp),
}

/// What goes on the wire for a key-value operation.
pub enum Request {
    Txn(TxnRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Compact(CompactionRequest),
}

fn mod_is(key: &str, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: vec![],
    }
}

fn get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

impl Op {
    /// The key-value request, or `None` for the watch operations.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Op::Create { key, value } => Request::Txn(TxnRequest {
                compare: vec![mod_is(key, 0)],
                success: vec![put(key, value)],
                failure: vec![get(key)],
            }),
            Op::Update {
                key,
                value,
                expected_mod,
            } => Request::Txn(TxnRequest {
                compare: vec![mod_is(key, *expected_mod)],
                success: vec![put(key, value)],
                failure: vec![get(key)],
            }),
            Op::Delete { key, expected_mod } => Request::Txn(TxnRequest {
                compare: vec![mod_is(key, *expected_mod)],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: key.clone().into_bytes(),
                            ..Default::default()
                        },
                    )),
                }],
                failure: vec![get(key)],
            }),
            Op::Put {
                key,
                value,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => Request::Put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                prev_kv: *prev_kv,
                ignore_value: *ignore_value,
                ignore_lease: *ignore_lease,
                ..Default::default()
            }),
            Op::DeleteKey { key, prev_kv } => Request::Delete(DeleteRangeRequest {
                key: key.clone().into_bytes(),
                prev_kv: *prev_kv,
                ..Default::default()
            }),
            Op::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => Request::Delete(DeleteRangeRequest {
                key: key.clone().into_bytes(),
                range_end: range_end.clone(),
                prev_kv: *prev_kv,
            }),
            Op::Range(r) => Request::Range(r.clone()),
            Op::TxnRange(r) => Request::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(r.clone())),
                }],
                failure: vec![],
            }),
            // Physical: etcd answers once the compaction's rows are gone. Otherwise a watch
            // opened soon after could still find a tombstone at the compact revision that a
            // little later it would not (etcd compacts its index and backend in the background).
            Op::Compact { revision } => Request::Compact(CompactionRequest {
                revision: *revision,
                physical: true,
            }),
            Op::Watch { .. } | Op::Progress { .. } | Op::Lease(_) => return None,
        })
    }
}

/// A key range as etcdctl would say it.
pub fn describe_range(key: &[u8], range_end: &[u8]) -> String {
    let k = String::from_utf8_lossy(key);
    match range_end {
        [] if key.is_empty() => "\"\"".to_string(),
        [] => format!("{k}"),
        [0] => format!("{k} --from-key"),
        end => {
            let mut prefix_end = key.to_vec();
            if let Some(last) = prefix_end.last_mut() {
                *last += 1;
            }
            if prefix_end == end {
                format!("{k} --prefix")
            } else {
                format!("[{k}, {})", String::from_utf8_lossy(end))
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { key, value } => {
                write!(
                    f,
                    "txn create {key}: if mod_revision == 0 then put {value:?} else get"
                )
            }
            Op::Update {
                key,
                value,
                expected_mod,
            } => write!(
                f,
                "txn update {key}: if mod_revision == {expected_mod} then put {value:?} else get"
            ),
            Op::Delete { key, expected_mod } => write!(
                f,
                "txn delete {key}: if mod_revision == {expected_mod} then delete else get"
            ),
            Op::Put {
                key,
                value,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => {
                write!(f, "put {key} {value:?}")?;
                for (set, flag) in [
                    (prev_kv, "--prev-kv"),
                    (ignore_value, "--ignore-value"),
                    (ignore_lease, "--ignore-lease"),
                ] {
                    if *set {
                        write!(f, " {flag}")?;
                    }
                }
                Ok(())
            }
            Op::DeleteKey { key, prev_kv } => {
                write!(f, "del {key}{}", if *prev_kv { " --prev-kv" } else { "" })
            }
            Op::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => write!(
                f,
                "del {}{}",
                describe_range(key.as_bytes(), range_end),
                if *prev_kv { " --prev-kv" } else { "" }
            ),
            Op::Range(r) | Op::TxnRange(r) => {
                if matches!(self, Op::TxnRange(_)) {
                    write!(f, "txn: ")?;
                }
                write!(f, "get {}", describe_range(&r.key, &r.range_end))?;
                if r.limit > 0 {
                    write!(f, " --limit {}", r.limit)?;
                }
                if r.revision > 0 {
                    write!(f, " --rev {}", r.revision)?;
                }
                if r.keys_only {
                    write!(f, " --keys-only")?;
                }
                if r.count_only {
                    write!(f, " --count-only")?;
                }
                if r.sort_order != 0 || r.sort_target != 0 {
                    let order = SortOrder::try_from(r.sort_order).map(|o| o.as_str_name());
                    let target = SortTarget::try_from(r.sort_target).map(|t| t.as_str_name());
                    write!(
                        f,
                        " --order={} --sort-by={}",
                        order.unwrap_or("?"),
                        target.unwrap_or("?")
                    )?;
                }
                for (bound, name) in [
                    (r.min_mod_revision, "min_mod_revision"),
                    (r.max_mod_revision, "max_mod_revision"),
                    (r.min_create_revision, "min_create_revision"),
                    (r.max_create_revision, "max_create_revision"),
                ] {
                    if bound != 0 {
                        write!(f, " {name}={bound}")?;
                    }
                }
                Ok(())
            }
            Op::Compact { revision } => write!(f, "compact {revision} --physical"),
            Op::Watch { watch, create } => {
                write!(
                    f,
                    "watch#{watch} {}",
                    describe_range(&create.key, &create.range_end)
                )?;
                if create.start_revision > 0 {
                    write!(f, " --rev {}", create.start_revision)?;
                }
                if create.prev_kv {
                    write!(f, " --prev-kv")?;
                }
                for filter in &create.filters {
                    let name = FilterType::try_from(*filter).map(|t| t.as_str_name());
                    write!(f, " --filter={}", name.unwrap_or("?"))?;
                }
                Ok(())
            }
            Op::Progress { watch } => write!(f, "progress request on watch#{watch}'s stream"),
            Op::Lease(lease) => write!(f, "{lease}"),
        }
    }
}

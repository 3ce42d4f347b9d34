//! The operations the suite sends to every side, and how each is written in a report.
//!
//! One `Op` is one request as an etcd client would send it (the Kubernetes apiserver's guarded
//! transactions, ranges, compactions, watches and progress requests). It knows nothing of the
//! sides or the comparison.

use std::fmt;
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
    /// A plain put, as etcdctl sends it.
    Put {
        key: String,
        value: String,
        prev_kv: bool,
    },
    /// A plain delete of one key.
    DeleteKey {
        key: String,
        prev_kv: bool,
    },
    Range(RangeRequest),
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
            } => Request::Put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                prev_kv: *prev_kv,
                ..Default::default()
            }),
            Op::DeleteKey { key, prev_kv } => Request::Delete(DeleteRangeRequest {
                key: key.clone().into_bytes(),
                prev_kv: *prev_kv,
                ..Default::default()
            }),
            Op::Range(r) => Request::Range(r.clone()),
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
            } => write!(
                f,
                "put {key} {value:?}{}",
                if *prev_kv { " --prev-kv" } else { "" }
            ),
            Op::DeleteKey { key, prev_kv } => {
                write!(f, "del {key}{}", if *prev_kv { " --prev-kv" } else { "" })
            }
            Op::Range(r) => {
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
                Ok(())
            }
            Op::Progress { watch } => write!(f, "progress request on watch#{watch}'s stream"),
            Op::Lease(lease) => write!(f, "{lease}"),
        }
    }
}

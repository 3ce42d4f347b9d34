//! etcd semantics of the kine store, exercised through its public API on an in-process database
//! inside a madsim runtime (the driver sleeps in simulated time).

use super::database::Database;
use super::driver::{Driver, Latency};
use super::store::KineStore;
use crate::error::StoreError;
use crate::kine::database::DbRequest;
use crate::observe::Discard;
use crate::proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn store() -> KineStore {
    let db = Database::open(Arc::new(Discard)).unwrap();
    let driver = Driver::Local {
        db: Arc::new(Mutex::new(db)),
        latency: Latency {
            min_ms: 1,
            max_ms: 1,
        },
    };
    let s = KineStore::new(driver, Duration::from_secs(1), 1);
    s.call(DbRequest::Startup).await.unwrap();
    s
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: true,
        ..Default::default()
    }
}

fn update_txn(key: &str, expected_mod: i64, value: &str) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.into(),
            target_union: Some(compare::TargetUnion::ModRevision(expected_mod)),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(key, value))),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        }],
    }
}

fn header_rev(h: &Option<crate::proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().unwrap().revision
}

#[madsim::test]
async fn every_write_advances_the_revision_by_one() {
    let s = store().await;
    // Revision 1 is the compact marker kine creates on first start.
    let r1 = header_rev(&s.put(&put("/a", "1")).await.unwrap().header);
    let r2 = header_rev(&s.put(&put("/a", "2")).await.unwrap().header);
    assert_eq!((r1, r2), (2, 3));
    let got = s
        .range(&RangeRequest {
            key: "/a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        header_rev(&got.header),
        3,
        "reads do not advance the revision"
    );
    let kv = &got.kvs[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
        (2, 3, &b"2"[..])
    );
}

#[madsim::test]
async fn txn_on_a_stale_mod_revision_takes_the_failure_branch() {
    let s = store().await;
    let created = header_rev(&s.put(&put("/k", "v1")).await.unwrap().header);
    let ok = s.txn(&update_txn("/k", created, "v2")).await.unwrap();
    assert!(ok.succeeded);
    let stale = s.txn(&update_txn("/k", created, "v3")).await.unwrap();
    assert!(!stale.succeeded);
    let Some(response_op::Response::ResponseRange(r)) = &stale.responses[0].response else {
        panic!("failure branch is a range")
    };
    assert_eq!(r.kvs[0].value, b"v2");
    assert_eq!(
        header_rev(&stale.header),
        header_rev(&ok.header),
        "no write, no new revision"
    );
}

#[madsim::test]
async fn a_create_compares_mod_revision_zero() {
    let s = store().await;
    assert!(s.txn(&update_txn("/new", 0, "x")).await.unwrap().succeeded);
    assert!(!s.txn(&update_txn("/new", 0, "y")).await.unwrap().succeeded);
    s.delete_range(&DeleteRangeRequest {
        key: "/new".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        s.txn(&update_txn("/new", 0, "z")).await.unwrap().succeeded,
        "a deleted key can be created again"
    );
}

#[madsim::test]
async fn reads_below_the_compact_revision_or_beyond_the_current_one_fail() {
    let s = store().await;
    for i in 0..10 {
        s.put(&put("/c", &i.to_string())).await.unwrap();
    }
    s.compact(&CompactionRequest {
        revision: 6,
        physical: false,
    })
    .await
    .unwrap();
    let at = |revision| RangeRequest {
        key: "/".into(),
        range_end: "0".into(),
        revision,
        ..Default::default()
    };
    assert_eq!(s.range(&at(5)).await.unwrap_err(), StoreError::Compacted);
    assert_eq!(
        s.range(&at(12)).await.unwrap_err(),
        StoreError::FutureRevision
    );
    let at6 = s.range(&at(6)).await.unwrap();
    assert_eq!(
        at6.kvs[0].mod_revision, 6,
        "the newest version at the compact revision survives"
    );
    assert_eq!(
        s.compact(&CompactionRequest {
            revision: 6,
            physical: false
        })
        .await
        .unwrap_err(),
        StoreError::Compacted
    );
}

#[madsim::test]
async fn a_limited_list_counts_from_its_start_key_and_says_more() {
    let s = store().await;
    for k in ["/r/a", "/r/b", "/r/c", "/r/d"] {
        s.put(&put(k, "v")).await.unwrap();
    }
    let page = s
        .range(&RangeRequest {
            key: "/r/b".into(),
            range_end: "/r0".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<&[u8]> = page.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"/r/b"[..], b"/r/c"]);
    assert!(page.more);
    assert_eq!(
        page.count, 3,
        "keys from the start key on, not the whole prefix"
    );
}

#[madsim::test]
async fn a_txn_writing_two_keys_is_refused() {
    let s = store().await;
    let mut t = update_txn("/x", 0, "1");
    t.success.push(RequestOp {
        request: Some(request_op::Request::RequestPut(put("/y", "2"))),
    });
    assert!(matches!(s.txn(&t).await, Err(StoreError::Unsupported(_))));
}

/// Keys /s/a../s/d created at 2..5 (revision 1 is the compact marker), then c, a and d updated
/// at 6, 7 and 8: mod order and value order both differ from key order.
async fn sort_fixture(s: &KineStore) {
    for (k, v) in [("/s/a", "3"), ("/s/b", "1"), ("/s/c", "4"), ("/s/d", "2")] {
        s.put(&put(k, v)).await.unwrap();
    }
    s.put(&put("/s/c", "5")).await.unwrap();
    s.put(&put("/s/a", "6")).await.unwrap();
    s.put(&put("/s/d", "7")).await.unwrap();
}

fn keys_of(r: &crate::proto::etcdserverpb::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn prefix_s() -> RangeRequest {
    RangeRequest {
        key: "/s/".into(),
        range_end: "/s0".into(),
        ..Default::default()
    }
}

#[madsim::test]
async fn a_descending_sort_by_mod_revision_with_a_limit_sorts_the_whole_range_first() {
    use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    let s = store().await;
    sort_fixture(&s).await;
    let got = s
        .range(&RangeRequest {
            limit: 2,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            ..prefix_s()
        })
        .await
        .unwrap();
    // Mod revisions: a=7, b=3, c=6, d=8 (revision 1 is the compact marker).
    assert_eq!(keys_of(&got), vec!["/s/d", "/s/a"]);
    assert_eq!((got.count, got.more), (4, true));
    let by_value = s
        .range(&RangeRequest {
            sort_target: SortTarget::Value as i32,
            keys_only: true,
            ..prefix_s()
        })
        .await
        .unwrap();
    assert_eq!(
        keys_of(&by_value),
        vec!["/s/b", "/s/c", "/s/a", "/s/d"],
        "order NONE with target VALUE sorts ascending by the values keys-only leaves out"
    );
    assert!(by_value.kvs.iter().all(|kv| kv.value.is_empty()));
    let by_version = s
        .range(&RangeRequest {
            sort_target: SortTarget::Version as i32,
            ..prefix_s()
        })
        .await;
    assert_eq!(
        by_version.unwrap_err(),
        StoreError::Unsupported(super::store::SORT_BY_VERSION.into()),
        "kine keeps no version counter: refused, not answered in key order"
    );
}

#[madsim::test]
async fn revision_filters_cut_the_result_while_count_stays_the_range_count() {
    let s = store().await;
    sort_fixture(&s).await;
    // Created at 2..5; a and c modified again at 7 and 6.
    let got = s
        .range(&RangeRequest {
            limit: 1,
            min_mod_revision: 6,
            max_create_revision: 4,
            ..prefix_s()
        })
        .await
        .unwrap();
    // a (create 2, mod 7) and c (create 4, mod 6) pass; the limit shows a and says more.
    assert_eq!(keys_of(&got), vec!["/s/a"]);
    assert_eq!((got.count, got.more), (4, true));
    let single = s
        .range(&RangeRequest {
            key: "/s/b".into(),
            min_mod_revision: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (single.kvs.len(), single.count),
        (0, 1),
        "one key, filtered out"
    );
    let counted = s
        .range(&RangeRequest {
            count_only: true,
            min_mod_revision: 100,
            ..prefix_s()
        })
        .await
        .unwrap();
    assert_eq!(
        (counted.count, counted.more),
        (4, false),
        "count-only ignores filters"
    );
}

#[madsim::test]
async fn ignore_value_and_ignore_lease_keep_the_keys_own_in_puts_and_txns() {
    let s = store().await;
    // A put may name only a lease that exists.
    s.lease_grant(&crate::proto::etcdserverpb::LeaseGrantRequest { ttl: 600, id: 7 })
        .await
        .unwrap();
    let mut first = put("/k", "v1");
    first.lease = 7;
    s.put(&first).await.unwrap();
    let kept = PutRequest {
        key: "/k".into(),
        ignore_value: true,
        ignore_lease: true,
        prev_kv: true,
        ..Default::default()
    };
    let resp = s.put(&kept).await.unwrap();
    assert_eq!(resp.prev_kv.unwrap().value, b"v1");
    let now = s
        .range(&RangeRequest {
            key: "/k".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (now.kvs[0].value.as_slice(), now.kvs[0].lease),
        (&b"v1"[..], 7)
    );
    let missing = PutRequest {
        key: "/nothing".into(),
        ..kept.clone()
    };
    assert_eq!(
        s.put(&missing).await.unwrap_err(),
        StoreError::Unsupported(crate::kv_rules::KEY_NOT_FOUND.into())
    );
    let in_txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(missing)),
        }],
        ..Default::default()
    };
    assert_eq!(
        s.txn(&in_txn).await.unwrap_err(),
        StoreError::Unsupported(crate::kv_rules::KEY_NOT_FOUND.into()),
        "a txn's put keeps etcd's rule too"
    );
    let with_value = PutRequest {
        value: b"x".to_vec(),
        ..kept
    };
    assert_eq!(
        s.put(&with_value).await.unwrap_err(),
        StoreError::Unsupported(crate::kv_rules::VALUE_PROVIDED.into())
    );
    let range_delete = DeleteRangeRequest {
        key: "/a".into(),
        range_end: "/b".into(),
        ..Default::default()
    };
    assert_eq!(
        s.delete_range(&range_delete).await.unwrap_err(),
        StoreError::Unsupported(super::store::RANGE_DELETE.into())
    );
}

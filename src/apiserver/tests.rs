//! The facade's LIST read options over kine: no resourceVersion reads the latest revision,
//! "0" any, NotOlderThan R at least R (504 while the store is below R), Exact R exactly R (410
//! once R is compacted); resourceVersionMatch without a resourceVersion, with a continue token,
//! or Exact "0" is 422 Invalid; and the stale-consistent-list variant's stale answers.

use super::*;
use crate::design::ApiServerVariant;
use crate::kine::database::{Database, DbRequest, Dialect};
use crate::kine::driver::{Driver, Latency};
use crate::observe::Discard;
use crate::proto::etcdserverpb::CompactionRequest;
use std::sync::Mutex;

async fn facade(variant: ApiServerVariant) -> ApiServer {
    let db = Arc::new(Mutex::new(
        Database::open_with(Arc::new(Discard), Dialect::Sqlite).unwrap(),
    ));
    let driver = Driver::Local {
        db,
        latency: Latency {
            min_ms: 1,
            max_ms: 2,
        },
    };
    let store = Arc::new(KineStore::new(driver, Duration::from_secs(1), 1));
    store.call(DbRequest::Startup).await.unwrap();
    ApiServer {
        backend: Backend::Kine {
            store,
            hub: Arc::new(WatchHub::default()),
        },
        watchlist: WatchListVariant::Fixed,
        consistent_lists: ConsistentLists::new(variant),
    }
}

/// Creates `name` in namespace `ns` of widgets; returns its resourceVersion.
async fn create(api: &ApiServer, name: &str) -> i64 {
    let req = ApiRequest::Create {
        resource: "widgets".into(),
        namespace: "ns".into(),
        name: name.into(),
        value: format!("{name}-value"),
    };
    match api.handle(req).await {
        ApiResponse::Object(o) => o.resource_version,
        other => panic!("create {name}: {other:?}"),
    }
}

fn list(rv: Option<i64>, rv_match: Option<ResourceVersionMatch>) -> ApiRequest {
    page(0, None, rv, rv_match)
}

fn page(
    limit: i64,
    continue_token: Option<String>,
    rv: Option<i64>,
    rv_match: Option<ResourceVersionMatch>,
) -> ApiRequest {
    ApiRequest::List {
        resource: "widgets".into(),
        namespace: None,
        limit,
        continue_token,
        resource_version: rv,
        resource_version_match: rv_match,
    }
}

/// (resourceVersion, item names) of a LIST page, or the status code it got.
async fn listed(api: &ApiServer, req: ApiRequest) -> Result<(i64, Vec<String>), u16> {
    match api.handle(req).await {
        ApiResponse::List(l) => Ok((
            l.resource_version,
            l.items
                .iter()
                .map(|o| o.key.rsplit('/').next().unwrap().to_string())
                .collect(),
        )),
        ApiResponse::Status(st) => Err(st.code),
        other => panic!("{other:?}"),
    }
}

#[madsim::test]
async fn list_read_options_follow_kubernetes() {
    use ResourceVersionMatch::{Exact, NotOlderThan};
    let api = facade(ApiServerVariant::Fixed).await;
    let a = create(&api, "a").await;
    let b = create(&api, "b").await;
    let both = vec!["a".to_string(), "b".to_string()];
    assert_eq!(listed(&api, list(None, None)).await, Ok((b, both.clone())));
    assert_eq!(
        listed(&api, list(Some(0), None)).await,
        Ok((b, both.clone()))
    );
    assert_eq!(
        listed(&api, list(Some(a), Some(NotOlderThan))).await,
        Ok((b, both.clone())),
        "NotOlderThan an older revision reads the latest"
    );
    assert_eq!(
        listed(&api, list(Some(b + 5), Some(NotOlderThan))).await,
        Err(504),
        "NotOlderThan a revision the store has not reached"
    );
    assert_eq!(
        listed(&api, list(Some(a), Some(Exact))).await,
        Ok((a, vec!["a".to_string()]))
    );
    assert_eq!(
        listed(&api, list(Some(a), None)).await,
        Ok((a, vec!["a".to_string()])),
        "a bare resourceVersion is exact, as this facade always read it"
    );
    for invalid in [list(None, Some(NotOlderThan)), list(Some(0), Some(Exact))] {
        assert_eq!(listed(&api, invalid).await, Err(422));
    }
    let ApiResponse::List(first) = api.handle(page(1, None, None, None)).await else {
        panic!("a first page");
    };
    let continued = page(1, first.continue_token, Some(a), Some(NotOlderThan));
    assert_eq!(listed(&api, continued).await, Err(422));
    // Compacted away: Exact is 410 Expired.
    let c = create(&api, "c").await;
    if let Backend::Kine { store, .. } = &api.backend {
        store
            .compact(&CompactionRequest {
                revision: c,
                physical: false,
            })
            .await
            .unwrap();
    }
    assert_eq!(listed(&api, list(Some(a), Some(Exact))).await, Err(410));
}

#[madsim::test]
async fn the_stale_variant_serves_consistent_lists_from_an_older_snapshot() {
    let api = facade(ApiServerVariant::StaleConsistentList).await;
    let a = create(&api, "a").await;
    assert_eq!(listed(&api, list(None, None)).await.unwrap().0, a);
    let b = create(&api, "b").await;
    assert_eq!(
        listed(&api, list(None, None)).await,
        Ok((a, vec!["a".to_string()])),
        "served at the snapshot taken before b was written"
    );
    let fixed = facade(ApiServerVariant::Fixed).await;
    create(&fixed, "a").await;
    listed(&fixed, list(None, None)).await.unwrap();
    let b2 = create(&fixed, "b").await;
    assert_eq!(b2, b);
    assert_eq!(listed(&fixed, list(None, None)).await.unwrap().0, b);
}

#[test]
fn invalid_options_are_named() {
    use ResourceVersionMatch::{Exact, NotOlderThan};
    assert_eq!(invalid_list_options(false, None, None), None);
    assert_eq!(invalid_list_options(false, Some(0), None), None);
    assert_eq!(invalid_list_options(false, Some(5), Some(Exact)), None);
    assert!(invalid_list_options(false, None, Some(NotOlderThan))
        .unwrap()
        .contains("unless resourceVersion"));
    assert!(invalid_list_options(true, Some(5), Some(NotOlderThan))
        .unwrap()
        .contains("continue"));
    assert!(invalid_list_options(false, Some(0), Some(Exact))
        .unwrap()
        .contains("Exact"));
}

/// The Kubernetes compactor's ticks: the first win compacts nothing (no earlier revision), a
/// later win compacts to the revision the previous answer came at, and a lost compare adopts
/// the winner's version without compacting.
#[test]
fn the_compact_rev_key_compactor_compacts_one_interval_behind_and_only_when_it_wins() {
    use crate::proto::etcdserverpb::{response_op, ResponseHeader, ResponseOp};
    use crate::proto::mvccpb::KeyValue;
    let answer = |succeeded: bool, revision: i64, version: Option<i64>| TxnResponse {
        header: Some(ResponseHeader {
            revision,
            ..Default::default()
        }),
        succeeded,
        responses: version
            .map(|v| ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs: vec![KeyValue {
                        key: COMPACT_REV_KEY.to_vec(),
                        version: v,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            })
            .into_iter()
            .collect(),
    };
    let mut k = CompactRevKey::default();
    let txn = k.txn();
    assert_eq!(
        txn.compare[0].target_union,
        Some(compare::TargetUnion::Version(0))
    );
    assert_eq!(k.answered(&answer(true, 10, None)), None);
    assert_eq!(
        k,
        CompactRevKey {
            version: 1,
            revision: 10
        }
    );
    // The put records the revision it will compact to next.
    let Some(request_op::Request::RequestPut(put)) = &k.txn().success[0].request else {
        panic!("a put on success");
    };
    assert_eq!(put.value, b"10");
    assert_eq!(k.answered(&answer(true, 25, None)), Some(10));
    assert_eq!(
        k,
        CompactRevKey {
            version: 2,
            revision: 25
        }
    );
    // Another apiserver won this interval: no compaction, its version adopted.
    assert_eq!(k.answered(&answer(false, 40, Some(5))), None);
    assert_eq!(
        k,
        CompactRevKey {
            version: 5,
            revision: 40
        }
    );
}

//! Leases in the kine store, through its public API on an in-process database inside a madsim
//! runtime: simulated time drives every deadline, so expiry is tested in seconds that cost none.

use super::database::{Database, DbRequest, DbResponse};
use super::driver::{Driver, Latency, SharedDatabase};
use super::lease::{MAX_TTL_S, MIN_TTL_S};
use super::sql::End;
use super::store::KineStore;
use crate::error::StoreError;
use crate::observe::Discard;
use crate::proto::etcdserverpb::{
    compare, request_op, Compare, LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn database() -> SharedDatabase {
    Arc::new(Mutex::new(Database::open(Arc::new(Discard)).unwrap()))
}

/// A server over `db`, started as `start_kine` starts one (Startup renews every lease).
async fn server(db: &SharedDatabase) -> Arc<KineStore> {
    let driver = Driver::Local {
        db: db.clone(),
        latency: Latency {
            min_ms: 1,
            max_ms: 1,
        },
    };
    let s = Arc::new(KineStore::new(driver, Duration::from_secs(1), 1));
    s.call(DbRequest::Startup).await.unwrap();
    s
}

fn grant(ttl: i64, id: i64) -> LeaseGrantRequest {
    LeaseGrantRequest { ttl, id }
}

fn put(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    }
}

async fn exists(s: &KineStore, key: &str) -> bool {
    let r = s
        .range(&RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    !r.kvs.is_empty()
}

async fn ttl(s: &KineStore, id: i64) -> i64 {
    s.lease_time_to_live(&LeaseTimeToLiveRequest { id, keys: false })
        .await
        .unwrap()
        .ttl
}

/// Every row of the log, as (id, name, deleted).
async fn log(s: &KineStore) -> Vec<(i64, String, bool)> {
    match s
        .call(DbRequest::After {
            start: String::new(),
            end: End::Unbounded,
            after: 0,
            limit: 0,
        })
        .await
        .unwrap()
    {
        DbResponse::Rows { rows, .. } => rows
            .into_iter()
            .map(|r| (r.id, r.name, r.deleted))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[madsim::test]
async fn grant_chooses_unique_ids_keeps_the_clients_and_raises_the_ttl_to_the_minimum() {
    let s = server(&database()).await;
    let a = s.lease_grant(&grant(1, 0)).await.unwrap();
    let b = s.lease_grant(&grant(1, 0)).await.unwrap();
    assert!(a.id > 0 && b.id > 0 && a.id != b.id, "{} {}", a.id, b.id);
    assert_eq!(
        (a.ttl, b.ttl),
        (MIN_TTL_S, MIN_TTL_S),
        "1 s is raised to etcd's 2 s"
    );
    let mine = s.lease_grant(&grant(30, 7)).await.unwrap();
    assert_eq!((mine.id, mine.ttl), (7, 30));
    assert_eq!(
        s.lease_grant(&grant(30, 7)).await.unwrap_err(),
        StoreError::LeaseExists
    );
    assert_eq!(
        s.lease_grant(&grant(MAX_TTL_S + 1, 0)).await.unwrap_err(),
        StoreError::LeaseTtlTooLarge
    );
    assert_eq!(
        s.lease_grant(&grant(MAX_TTL_S, 0)).await.unwrap().ttl,
        MAX_TTL_S
    );
    let listed: Vec<i64> = s
        .lease_leases()
        .await
        .unwrap()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed.len(), 4);
    assert!(listed.contains(&7) && listed.contains(&a.id));
}

#[madsim::test]
async fn revoke_deletes_every_attached_key_in_one_transaction() {
    let s = server(&database()).await;
    let id = s.lease_grant(&grant(60, 0)).await.unwrap().id;
    s.put(&put("/a", id)).await.unwrap();
    s.put(&put("/b", id)).await.unwrap();
    s.put(&put("/c", 0)).await.unwrap();
    // Re-put without the lease: detached, as in etcd.
    s.put(&put("/d", id)).await.unwrap();
    let before = s.put(&put("/d", 0)).await.unwrap().header.unwrap().revision;
    let keys = s
        .lease_time_to_live(&LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .keys;
    assert_eq!(keys, vec![b"/a".to_vec(), b"/b".to_vec()]);
    let revoked = s.lease_revoke(&LeaseRevokeRequest { id }).await.unwrap();
    assert_eq!(
        revoked.header.unwrap().revision,
        before + 2,
        "one tombstone per attached key, at consecutive revisions"
    );
    assert!(!exists(&s, "/a").await && !exists(&s, "/b").await);
    assert!(exists(&s, "/c").await && exists(&s, "/d").await);
    let tail: Vec<_> = log(&s).await.into_iter().filter(|r| r.0 > before).collect();
    assert_eq!(
        tail,
        vec![
            (before + 1, "/a".into(), true),
            (before + 2, "/b".into(), true)
        ]
    );
    assert_eq!(
        s.lease_revoke(&LeaseRevokeRequest { id })
            .await
            .unwrap_err(),
        StoreError::LeaseNotFound
    );
    assert_eq!(ttl(&s, id).await, -1);
}

#[madsim::test]
async fn a_lease_expires_after_its_ttl_and_not_before() {
    let s = server(&database()).await;
    s.leases_in_use();
    let id = s.lease_grant(&grant(3, 0)).await.unwrap().id;
    s.put(&put("/held", id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_900)).await;
    assert!(exists(&s, "/held").await, "alive before its TTL");
    assert_eq!(ttl(&s, id).await, 0, "less than a second left");
    // The loop checks every 500 ms; the next check after the deadline expires it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!exists(&s, "/held").await, "deleted by expiry");
    assert_eq!(ttl(&s, id).await, -1);
    assert!(s.lease_leases().await.unwrap().leases.is_empty());
}

#[madsim::test]
async fn keep_alive_renews_to_the_full_ttl_and_answers_zero_for_an_unknown_lease() {
    let s = server(&database()).await;
    s.leases_in_use();
    let id = s.lease_grant(&grant(2, 0)).await.unwrap().id;
    s.put(&put("/k", id)).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let renewed = s.lease_renew(id).await.unwrap();
        assert_eq!((renewed.id, renewed.ttl), (id, 2));
    }
    assert!(exists(&s, "/k").await, "6 s of a 2 s lease, kept alive");
    assert_eq!(s.lease_renew(12345).await.unwrap().ttl, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.lease_renew(id).await.unwrap().ttl, 0, "expired: lost");
    assert!(!exists(&s, "/k").await);
}

#[madsim::test]
async fn a_lease_past_its_deadline_cannot_be_renewed_even_before_the_loop_runs() {
    let s = server(&database()).await;
    let id = s.lease_grant(&grant(2, 0)).await.unwrap().id;
    s.put(&put("/k", id)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists(&s, "/k").await, "no loop has run on this server");
    assert_eq!(s.lease_renew(id).await.unwrap().ttl, 0);
    assert!(
        !exists(&s, "/k").await,
        "the keep-alive that met it expired it"
    );
}

#[madsim::test]
async fn a_write_naming_an_unknown_lease_is_refused() {
    let s = server(&database()).await;
    assert_eq!(
        s.put(&put("/k", 99)).await.unwrap_err(),
        StoreError::LeaseNotFound
    );
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"/k".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(0)),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("/k", 99))),
        }],
        failure: vec![],
    };
    assert_eq!(s.txn(&txn).await.unwrap_err(), StoreError::LeaseNotFound);
    assert!(!exists(&s, "/k").await);
    let id = s.lease_grant(&grant(60, 99)).await.unwrap().id;
    assert!(s.txn(&txn).await.unwrap().succeeded);
    let kept = PutRequest {
        ignore_lease: true,
        ..put("/k", 0)
    };
    s.put(&kept).await.unwrap();
    s.lease_revoke(&LeaseRevokeRequest { id }).await.unwrap();
    assert!(
        !exists(&s, "/k").await,
        "ignore_lease kept the key attached"
    );
}

#[madsim::test]
async fn two_servers_expire_a_lease_exactly_once() {
    let db = database();
    let (a, b) = (server(&db).await, server(&db).await);
    let id = a.lease_grant(&grant(2, 0)).await.unwrap().id;
    b.put(&put("/shared", id)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (from_a, from_b) = tokio::join!(a.expire_leases(), b.expire_leases());
    let mut expired = from_a.unwrap();
    expired.extend(from_b.unwrap());
    assert_eq!(
        expired,
        vec![id],
        "one server expired it, the other found nothing"
    );
    let tombstones = log(&a)
        .await
        .into_iter()
        .filter(|(_, name, deleted)| name == "/shared" && *deleted)
        .count();
    assert_eq!(tombstones, 1);
    assert!(!exists(&b, "/shared").await);
}

#[madsim::test]
async fn a_restart_renews_every_lease_instead_of_expiring_it() {
    let db = database();
    let first = server(&db).await;
    let id = first.lease_grant(&grant(5, 0)).await.unwrap().id;
    first.put(&put("/k", id)).await.unwrap();
    drop(first);
    // Down for longer than the TTL; the next start renews the lease to its full TTL.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = server(&db).await;
    assert_eq!(ttl(&again, id).await, 4, "5 s from the restart, truncated");
    assert!(exists(&again, "/k").await);
}

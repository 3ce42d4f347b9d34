//! A member on its own disk inside a madsim runtime: what survives a kill, and what a restart
//! replays, with the backend committed on its batch interval.

use super::disk::{Disk, SharedDisk};
use super::member::{start_member, MemberConfig, MemberHandle, Outcome, Proposal, BACKEND};
use super::mvcc::Mvcc;
use super::storage::decode_records;
use super::wal::frames;
use crate::design::CompactionVariant;
use crate::faults::NoFaults;
use crate::observe::Discard;
use crate::proto::etcdserverpb::{PutRequest, RangeRequest};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Slot = Arc<Mutex<Option<MemberHandle>>>;

fn single_voter() -> MemberConfig {
    let addr: SocketAddr = "10.0.1.1:2380".parse().unwrap();
    MemberConfig {
        name: "m1".into(),
        id: 1,
        peers: BTreeMap::from([(1, addr)]),
        initial_voters: vec![1],
        snapshot_entries: 1000,
        keep_entries: 100,
        compaction: CompactionVariant::Fixed,
    }
}

/// A node running one member on `disk`; each start puts its handle in the slot.
fn member_node(disk: &SharedDisk, slot: &Slot) -> NodeId {
    let (disk, slot) = (disk.clone(), slot.clone());
    Handle::current()
        .create_node()
        .name("m1")
        .ip("10.0.1.1".parse().unwrap())
        .init(move || {
            let (disk, slot) = (disk.clone(), slot.clone());
            async move {
                let m =
                    start_member(single_voter(), disk, Arc::new(Discard), Arc::new(NoFaults)).await;
                *slot.lock().unwrap() = Some(m);
                std::future::pending::<()>().await
            }
        })
        .build()
        .id()
}

/// The member in the slot once it serves clients (bounded: an election and a publish).
async fn serving(slot: &Slot) -> MemberHandle {
    for _ in 0..100 {
        let m = slot.lock().unwrap().clone();
        if let Some(m) = m.filter(|m| m.serving().is_ok()) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the member never became ready to serve");
}

fn put(key: &str, value: &str) -> Proposal {
    Proposal::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn get(m: &MemberHandle, key: &str) -> Option<(String, i64)> {
    let a = m.applied.lock().unwrap();
    let r = a
        .mvcc
        .range(&RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .unwrap();
    r.kvs.first().map(|kv| {
        (
            String::from_utf8_lossy(&kv.value).into_owned(),
            kv.mod_revision,
        )
    })
}

/// What the backend file alone would restore.
fn backend_alone(disk: &SharedDisk) -> Mvcc {
    let bytes = disk.lock().unwrap().read(BACKEND).unwrap_or_default();
    let records = frames(&bytes).0.into_iter().flat_map(decode_records);
    Mvcc::restore(records, CompactionVariant::Fixed).0
}

#[madsim::test]
async fn an_acknowledged_write_survives_a_crash_through_the_wal_alone() {
    let (disk, slot) = (Disk::shared(), Slot::default());
    let node = member_node(&disk, &slot);
    let m = serving(&slot).await;
    let (outcome, rev) = m
        .propose(put("/a", "1"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Put(_)));
    // Acknowledged, but the backend commits on its batch interval: only the WAL holds it yet.
    let behind = backend_alone(&disk);
    assert!(
        behind.current_revision() < rev,
        "the backend committed at once"
    );
    Handle::current().kill(node);
    let loss = disk.lock().unwrap().crash(None);
    assert_eq!(loss.bytes, 0, "nothing was left unsynced: {loss:?}");
    Handle::current().restart(node);
    let m = serving(&slot).await;
    assert_eq!(
        get(&m, "/a"),
        Some(("1".into(), rev)),
        "replayed from the WAL"
    );
}

#[madsim::test]
async fn the_backend_commits_on_its_batch_interval() {
    let (disk, slot) = (Disk::shared(), Slot::default());
    member_node(&disk, &slot);
    let m = serving(&slot).await;
    let (_, rev) = m
        .propose(put("/a", "1"), Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let committed = backend_alone(&disk);
    assert_eq!(committed.current_revision(), rev);
    let applied = m.applied.lock().unwrap().mvcc.consistent_index();
    assert_eq!(committed.consistent_index(), applied);
}

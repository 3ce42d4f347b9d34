//! Members on their own disks inside a madsim runtime: what survives a kill, what a restart
//! replays with the backend committed on its batch interval, and what a member that lost
//! fsynced state reports and does, and how a member that lags judges a member removal.

use super::disk::{Disk, Loss, SharedDisk};
use super::member::{
    start_member, MemberChange, MemberConfig, MemberHandle, Outcome, Proposal, BACKEND, WAL,
};
use super::mvcc::Mvcc;
use super::storage::decode_records;
use super::wal::{frame, frames};
use crate::design::{CompactionVariant, LeaseVariant};
use crate::error::StoreError;
use crate::faults::NoFaults;
use crate::observe::{Discard, Observer, RaftDurable, StoreEvent};
use crate::proto::etcdserverpb::{PutRequest, RangeRequest};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(super) type Slot = Arc<Mutex<Option<MemberHandle>>>;

pub(super) fn single_voter() -> MemberConfig {
    let addr: SocketAddr = "10.0.1.1:2380".parse().unwrap();
    MemberConfig {
        name: "m1".into(),
        id: 1,
        peers: BTreeMap::from([(1, addr)]),
        initial_voters: vec![1],
        snapshot_entries: 1000,
        keep_entries: 100,
        compaction: CompactionVariant::Fixed,
        lease: LeaseVariant::Fixed,
    }
}

/// A node running one member on `disk`; each start puts its handle in the slot.
pub(super) fn member_node(disk: &SharedDisk, slot: &Slot) -> NodeId {
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
pub(super) async fn serving(slot: &Slot) -> MemberHandle {
    for _ in 0..100 {
        let m = slot.lock().unwrap().clone();
        if let Some(m) = m.filter(|m| m.serving().is_ok()) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the member never became ready to serve");
}

pub(super) fn put(key: &str, value: &str) -> Proposal {
    Proposal::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

pub(super) fn get(m: &MemberHandle, key: &str) -> Option<(String, i64)> {
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
    // Acknowledged, but the backend commits on its batch interval: only the WAL holds it yet.
    // (A batch tick that was due during the WAL fsync may run before this task reads the
    // backend; then write again.)
    let mut unbacked = None;
    for i in 0..10 {
        let key = format!("/a{i}");
        let (outcome, rev) = m
            .propose(put(&key, "1"), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Put(_)));
        if backend_alone(&disk).current_revision() < rev {
            unbacked = Some((key, rev));
            break;
        }
    }
    let (key, rev) = unbacked.expect("the backend committed every write at once");
    Handle::current().kill(node);
    *slot.lock().unwrap() = None;
    // Whatever was unsynced (an fsync under way) was never acknowledged.
    disk.lock().unwrap().crash(None);
    Handle::current().restart(node);
    let m = serving(&slot).await;
    assert_eq!(
        get(&m, &key),
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

/// A lone leader stops ticking while it has nothing to do; a write after a quiet spell still
/// waits for the batch interval before the backend commits it, not a moment less.
#[madsim::test]
async fn after_a_quiet_spell_the_backend_still_commits_on_its_interval() {
    let (disk, slot) = (Disk::shared(), Slot::default());
    member_node(&disk, &slot);
    let m = serving(&slot).await;
    // The publish that made it ready is committed to the backend within one interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let syncs = disk.lock().unwrap().syncs();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(disk.lock().unwrap().syncs(), syncs, "an idle member wrote");
    let (_, rev) = m
        .propose(put("/a", "1"), Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        backend_alone(&disk).current_revision() < rev,
        "committed to the backend before a batch interval passed"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend_alone(&disk).current_revision(), rev);
}

#[derive(Default)]
pub(super) struct Collect(pub(super) Mutex<Vec<StoreEvent>>);

impl Observer for Collect {
    fn record(&self, e: StoreEvent) {
        self.0.lock().unwrap().push(e);
    }
}

impl Collect {
    pub(super) fn last_persisted(&self) -> Option<RaftDurable> {
        self.0.lock().unwrap().iter().rev().find_map(|e| match e {
            StoreEvent::MemberPersisted { durable } => Some(*durable),
            _ => None,
        })
    }

    fn starts(&self) -> Vec<RaftDurable> {
        let events = self.0.lock().unwrap();
        let recovered = events.iter().filter_map(|e| match e {
            StoreEvent::MemberStarted { recovered, .. } => Some(*recovered),
            _ => None,
        });
        recovered.collect()
    }

    fn halts(&self) -> Vec<String> {
        let events = self.0.lock().unwrap();
        let reasons = events.iter().filter_map(|e| match e {
            StoreEvent::MemberHalted { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        reasons.collect()
    }
}

/// Three members, one per node; returns each node's id, disk, handle slot and observer.
pub(super) struct Trio {
    pub(super) nodes: Vec<(NodeId, SharedDisk, Slot, Arc<Collect>)>,
}

impl Trio {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Three members whose configs `adjust` changes first.
    pub(super) fn start_with(adjust: impl Fn(&mut MemberConfig)) -> Self {
        Self::start_on(1, adjust)
    }

    /// Three members on 10.0.`subnet`.0/24 (several trios may share a runtime).
    pub(super) fn start_on(subnet: u8, adjust: impl Fn(&mut MemberConfig)) -> Self {
        let peers: BTreeMap<u64, SocketAddr> = (1..=3)
            .map(|i| (i, format!("10.0.{subnet}.{i}:2380").parse().unwrap()))
            .collect();
        let nodes = (1..=3u64)
            .map(|id| {
                let (disk, slot, events) =
                    (Disk::shared(), Slot::default(), Arc::<Collect>::default());
                let mut config = MemberConfig {
                    name: format!("m{id}"),
                    id,
                    peers: peers.clone(),
                    initial_voters: vec![1, 2, 3],
                    ..single_voter()
                };
                adjust(&mut config);
                let (d, s, o) = (disk.clone(), slot.clone(), events.clone());
                let node = Handle::current()
                    .create_node()
                    .name(config.name.clone())
                    .ip(format!("10.0.{subnet}.{id}").parse().unwrap())
                    .init(move || {
                        let (config, d, s, o) = (config.clone(), d.clone(), s.clone(), o.clone());
                        async move {
                            let m = start_member(config, d, o, Arc::new(NoFaults)).await;
                            *s.lock().unwrap() = Some(m);
                            std::future::pending::<()>().await
                        }
                    })
                    .build()
                    .id();
                (node, disk, slot, events)
            })
            .collect();
        Trio { nodes }
    }

    /// Writes `n` keys through member 1 and returns a member that follows the leader.
    async fn write_then_pick_follower(&self, n: usize) -> usize {
        let m = serving(&self.nodes[0].2).await;
        for i in 0..n {
            m.propose(put(&format!("/k{i}"), "v"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        // Every member has caught up and acknowledged everything.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = m.leader();
        (0..3).find(|i| *i as u64 + 1 != leader).unwrap()
    }

    pub(super) fn kill(&self, i: usize) {
        Handle::current().kill(self.nodes[i].0);
        *self.nodes[i].2.lock().unwrap() = None;
        self.nodes[i].1.lock().unwrap().crash(None);
    }
}

/// Keeps only the first `keep` frames of a WAL image: a disk that lost what it had fsynced.
fn drop_wal_frames(disk: &SharedDisk, drop_last: usize) {
    let mut d = disk.lock().unwrap();
    let bytes = d.read(WAL).unwrap();
    let (kept, _) = frames(&bytes);
    let image: Vec<u8> = kept[..kept.len() - drop_last]
        .iter()
        .flat_map(|p| frame(p))
        .collect();
    d.replace(WAL, image);
    d.sync(WAL);
}

#[madsim::test]
async fn a_clean_restart_finds_everything_the_member_reported_fsynced() {
    let trio = Trio::start();
    let victim = trio.write_then_pick_follower(20).await;
    let events = &trio.nodes[victim].3;
    let before = events
        .last_persisted()
        .expect("a member reports its fsyncs");
    assert!(before.last_index >= 20, "{before:?}");
    trio.kill(victim);
    Handle::current().restart(trio.nodes[victim].0);
    let m = serving(&trio.nodes[victim].2).await;
    assert_eq!(events.starts().last(), Some(&before));
    assert!(events.halts().is_empty());
    assert_eq!(get(&m, "/k19").map(|(v, _)| v), Some("v".into()));
}

#[madsim::test]
async fn a_member_whose_wal_lost_fsynced_entries_halts_and_stays_down() {
    let trio = Trio::start();
    let victim = trio.write_then_pick_follower(20).await;
    let events = &trio.nodes[victim].3;
    let before = events.last_persisted().unwrap();
    trio.kill(victim);
    drop_wal_frames(&trio.nodes[victim].1, 6);
    Handle::current().restart(trio.nodes[victim].0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovered = *events.starts().last().unwrap();
    assert!(
        recovered.last_index < before.last_index,
        "{recovered:?} {before:?}"
    );
    let halts = events.halts();
    assert_eq!(halts.len(), 1, "raft-rs halts the member once: {halts:?}");
    assert!(halts[0].contains("out of range"), "{halts:?}");
    let m = trio.nodes[victim].2.lock().unwrap().clone();
    let m = m.expect("the halted member's start handed out its handle");
    assert_eq!(
        m.serving().unwrap_err().to_string(),
        "etcdserver: server stopped"
    );
    // A restart from the same disk fails the same way.
    trio.kill(victim);
    Handle::current().restart(trio.nodes[victim].0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events.halts().len(), 2, "{:?}", events.halts());
    // The rest of the cluster still serves.
    let other = (0..3).find(|i| *i != victim).unwrap();
    serving(&trio.nodes[other].2).await;
}

/// A member restarted behind the cluster is asked to remove a voter it has not yet seen added
/// (an operator's removal reaching a lagging server). It must judge on a member list that has
/// applied everything committed before the request: answering "not a member" from its own stale
/// list would leave the voter in, and the operator would believe it gone.
#[madsim::test]
async fn a_lagging_member_removes_a_voter_it_had_not_yet_seen_added() {
    let trio = Trio::start();
    let victim = trio.write_then_pick_follower(5).await;
    trio.kill(victim);
    let other = (0..3).find(|i| *i != victim).unwrap();
    let m = serving(&trio.nodes[other].2).await;
    // Voter 4 never starts: with the victim down, the cluster waits for the victim's return.
    let voters = m
        .change_member(MemberChange::Add, 4, Duration::from_secs(5))
        .await
        .expect("the add commits on the old three's majority");
    assert_eq!(sorted(voters), vec![1, 2, 3, 4]);
    Handle::current().restart(trio.nodes[victim].0);
    // Caught as soon as its start hands out the handle, before it hears from the leader.
    let mut lagging = None;
    for _ in 0..10_000 {
        lagging = trio.nodes[victim].2.lock().unwrap().clone();
        if lagging.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let lagging = lagging.expect("the restarted member starts within 10 s");
    assert_eq!(
        sorted(lagging.voters()),
        vec![1, 2, 3],
        "restarted behind the add"
    );
    // Until it hears from a leader it cannot judge at all, and says so; an operator retries.
    let mut answer = Err(StoreError::NoLeader);
    for _ in 0..100 {
        answer = lagging
            .change_member(MemberChange::Remove, 4, Duration::from_secs(5))
            .await;
        if !matches!(answer, Err(StoreError::NoLeader)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the removal commits once the victim is back");
    assert_eq!(sorted(answer), vec![1, 2, 3]);
    // The cluster, not only the member asked, has voter 4 gone.
    let leader = serving(&trio.nodes[other].2).await;
    for _ in 0..50 {
        if sorted(leader.voters()) == vec![1, 2, 3] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("voter 4 is still in the cluster: {:?}", leader.voters());
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// Writes keys `{prefix}0`, `{prefix}1`, ... through the member in `slot` one after another
/// until it stops answering; returns the keys it acknowledged.
async fn write_until_killed(slot: Slot, prefix: &'static str) -> Vec<(String, i64)> {
    let m = serving(&slot).await;
    let mut acked = Vec::new();
    for i in 0.. {
        let key = format!("{prefix}{i}");
        match m.propose(put(&key, "v"), Duration::from_millis(500)).await {
            Ok((_, rev)) => acked.push((key, rev)),
            Err(_) => break,
        }
    }
    acked
}

/// Kills the member at a moment its WAL fsync is under way, leaving `tear` (a torn prefix of
/// the append, or none); returns what the kill took.
async fn kill_mid_fsync(node: NodeId, disk: &SharedDisk, slot: &Slot, tear: Option<u64>) -> Loss {
    for _ in 0..10_000 {
        if disk.lock().unwrap().unsynced(WAL) {
            Handle::current().kill(node);
            *slot.lock().unwrap() = None;
            return disk.lock().unwrap().crash(tear);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    panic!("the WAL was never caught mid-fsync");
}

#[madsim::test]
async fn a_kill_during_a_wal_fsync_tears_the_append_and_loses_nothing_acknowledged() {
    let (disk, slot) = (Disk::shared(), Slot::default());
    let node = member_node(&disk, &slot);
    serving(&slot).await;
    let writer = tokio::spawn(write_until_killed(slot.clone(), "/a"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loss = kill_mid_fsync(node, &disk, &slot, Some(7)).await;
    assert!(
        loss.torn,
        "the fsync under way left a torn append: {loss:?}"
    );
    let first = writer.await.unwrap();
    assert!(first.len() > 5, "the writer got going: {first:?}");
    Handle::current().restart(node);
    let m = serving(&slot).await;
    for (key, rev) in &first {
        assert_eq!(get(&m, key), Some(("v".into(), *rev)), "acknowledged {key}");
    }
    // Writes after the torn tail must survive the next kill too: the restart cut the tail off
    // the file, so frames appended after it are readable.
    let writer = tokio::spawn(write_until_killed(slot.clone(), "/b"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill_mid_fsync(node, &disk, &slot, None).await;
    let second = writer.await.unwrap();
    assert!(second.len() > 5, "the writer got going: {second:?}");
    Handle::current().restart(node);
    let m = serving(&slot).await;
    for (key, rev) in first.iter().chain(&second) {
        assert_eq!(get(&m, key), Some(("v".into(), *rev)), "acknowledged {key}");
    }
}

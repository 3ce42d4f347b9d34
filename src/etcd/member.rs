//! One etcd member: a raft node whose committed entries are applied to the MVCC store.
//!
//! The raft loop owns the raft node and is the only writer of the member's disk files: the WAL
//! (entries and hard state, fsynced before messages that depend on them leave), the backend
//! (applied changes with their consistent index, committed on etcd's batch interval, not per
//! apply: a restart replays from the WAL every entry after the backend's consistent index) and
//! the snapshot. After every fsync it reports the raft state it now counts on, so a restart that
//! finds less on its disk can be told apart. A panic inside raft-rs (its answer to state a member
//! cannot have lost) halts this member, never the whole simulation. Clients talk to it through a
//! [`MemberHandle`]; peers through raft messages on its peer address.

use super::disk::SharedDisk;
use super::lease::{self, Lessor};
use super::mvcc::Mvcc;
use super::recovery::recover;
use super::storage::{decode_records, encode_records, MemberStorage, SharedApplied};
use super::wal::{frame, WalBatch};
use crate::design::{CompactionVariant, LeaseVariant};
use crate::error::StoreError;
use crate::faults::SharedFaults;
use crate::observe::{RaftDurable, SharedObserver, StoreEvent};
use crate::proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use madsim::net::Endpoint;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

pub(crate) const WAL: &str = "member/wal";
pub(crate) const BACKEND: &str = "member/backend";
pub(crate) const SNAP: &str = "member/snap";
const RAFT_TAG: u64 = 0x7261_6674;
/// The raft tick, which is also etcd's `--backend-batch-interval` (100 ms): pending backend
/// writes are committed at every tick (one timer per member, not two)...
const TICK: Duration = Duration::from_millis(100);
/// Ticks without a heartbeat before a follower stands for election (etcd's election timeout is
/// 10 heartbeats, 1 s with its default flags; it also sets the minimum lease TTL).
const ELECTION_TICKS: usize = 10;
/// How long a WAL fsync takes: etcd asks for a p99 under 10 ms (and warns past 1 s); cloud
/// disks often sit at a few milliseconds.
const WAL_FSYNC: Duration = Duration::from_millis(5);
/// A publish that did not apply within this long is proposed again (etcd retries its publish).
const PUBLISH_RETRY: Duration = Duration::from_secs(1);
/// ...or at once when this many are pending (`--backend-batch-limit`), whichever comes first.
const BACKEND_BATCH_LIMIT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub name: String,
    pub id: u64,
    /// The raft address of every node that may ever be a member, by member id.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// On an empty disk, the voters the member starts with (etcd's initial cluster); empty:
    /// wait to be added by a member add and fed by a leader.
    pub initial_voters: Vec<u64>,
    /// Applied entries between log compactions (etcd's snapshot-count, scaled down).
    pub snapshot_entries: u64,
    /// Entries kept behind a log compaction for slow followers.
    pub keep_entries: u64,
    pub compaction: CompactionVariant,
    pub lease: LeaseVariant,
}

impl MemberConfig {
    /// The election timeout of this member's raft.
    pub fn election_timeout(&self) -> Duration {
        TICK * ELECTION_TICKS as u32
    }

    /// etcd's minimum lease TTL for this member's election timeout.
    pub fn min_lease_ttl(&self) -> i64 {
        lease::min_ttl(self.election_timeout())
    }
}

/// A client request as it travels through the raft log.
#[derive(Clone, Debug)]
pub enum Proposal {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// The ID is never 0 in the log: the proposing member picks one first.
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    /// A member announcing itself after it started (etcd's publish of its attributes): once it
    /// applied its own, it has applied everything committed before it started, and may serve.
    Publish,
}

/// What applying a proposal produced, with the store revision right after it.
#[derive(Clone, Debug)]
pub enum Outcome {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compacted,
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoked,
}

pub type ApplyResult = Result<(Outcome, i64), StoreError>;

impl Proposal {
    fn encode(&self, id: u64) -> Vec<u8> {
        let (tag, body) = match self {
            Proposal::Put(r) => (1u8, r.encode_to_vec()),
            Proposal::DeleteRange(r) => (2, r.encode_to_vec()),
            Proposal::Txn(r) => (3, r.encode_to_vec()),
            Proposal::Compact(r) => (4, r.encode_to_vec()),
            Proposal::Publish => (5, vec![]),
            Proposal::LeaseGrant(r) => (6, r.encode_to_vec()),
            Proposal::LeaseRevoke(r) => (7, r.encode_to_vec()),
        };
        let mut out = id.to_le_bytes().to_vec();
        out.push(tag);
        out.extend(body);
        out
    }

    fn decode(data: &[u8]) -> (u64, Proposal) {
        let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let body = &data[9..];
        let p = match data[8] {
            1 => Proposal::Put(PutRequest::decode(body).expect("logged put decodes")),
            2 => Proposal::DeleteRange(
                DeleteRangeRequest::decode(body).expect("logged delete decodes"),
            ),
            3 => Proposal::Txn(TxnRequest::decode(body).expect("logged txn decodes")),
            4 => {
                Proposal::Compact(CompactionRequest::decode(body).expect("logged compact decodes"))
            }
            5 => Proposal::Publish,
            6 => Proposal::LeaseGrant(
                LeaseGrantRequest::decode(body).expect("logged lease grant decodes"),
            ),
            7 => Proposal::LeaseRevoke(
                LeaseRevokeRequest::decode(body).expect("logged lease revoke decodes"),
            ),
            t => panic!("unknown proposal tag {t} in the raft log"),
        };
        (id, p)
    }
}

enum Command {
    Propose {
        proposal: Proposal,
        reply: oneshot::Sender<ApplyResult>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    ChangeMember {
        change: MemberChange,
        id: u64,
        reply: oneshot::Sender<Result<Vec<u64>, StoreError>>,
    },
}

/// A membership change (etcd's member add and member remove).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Add,
    Remove,
}

/// The member's applied raft index, and a wake-up for everyone waiting on it.
///
/// Deliberately not `tokio::sync::watch`: its receivers spread over several notifiers picked by
/// a per-process random generator, so their wake order (and the trace) would change from run to
/// run. A single `Notify` wakes waiters in the order they registered.
#[derive(Default)]
pub struct AppliedIndex {
    index: std::sync::atomic::AtomicU64,
    /// The member stopped: the index never moves again, and nobody should wait for it.
    stopped: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl AppliedIndex {
    pub fn get(&self) -> u64 {
        self.index.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, index: u64) {
        self.index.store(index, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Waits until the index differs from `seen` (or the member stopped); returns the index.
    pub async fn next_change(&self, seen: u64) -> u64 {
        loop {
            // Registered before the check, so a change in between still wakes it.
            let woken = self.notify.notified();
            let now = self.get();
            if now != seen || self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return now;
            }
            woken.await;
        }
    }
}

/// Whether a member may serve clients: not before its publish applied after a start (etcd's
/// ReadyNotify: until then its state may be older than what it served before a restart), and
/// never after it halted.
#[derive(Default)]
pub struct Serving {
    /// 0: starting, 1: ready, 2: halted.
    state: std::sync::atomic::AtomicU8,
}

impl Serving {
    fn set_ready(&self) {
        // A halted member stays halted.
        let _ = self.state.compare_exchange(
            0,
            1,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    fn halt(&self) {
        self.state.store(2, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_ready(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::SeqCst) == 1
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.state.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Ok(()),
            0 => Err(StoreError::NotServing(
                "etcdserver: not ready to serve clients yet",
            )),
            _ => Err(StoreError::NotServing("etcdserver: server stopped")),
        }
    }
}

/// How the API reaches a running member.
#[derive(Clone)]
pub struct MemberHandle {
    pub id: u64,
    pub name: String,
    pub applied: SharedApplied,
    /// The applied raft index, bumped after every applied batch: watchers and reads wait on it.
    pub progress: Arc<AppliedIndex>,
    serving: Arc<Serving>,
    commands: mpsc::Sender<Command>,
}

impl MemberHandle {
    /// Whether the member serves clients now; every client request asks first.
    pub fn serving(&self) -> Result<(), StoreError> {
        self.serving.check()
    }

    /// Sends the raft loop a command and waits (bounded) for its answer; a loop that is gone or
    /// slow leaves the outcome unknown.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let answer = self.send(command).await?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            _ => Err(StoreError::OutcomeUnknown),
        }
    }

    /// Hands the raft loop a command; the receiver gets its answer.
    async fn send<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::OutcomeUnknown)?;
        Ok(answer)
    }

    /// Replicates `proposal` and waits until this member applied it.
    pub async fn propose(&self, proposal: Proposal, timeout: Duration) -> ApplyResult {
        self.ask(|reply| Command::Propose { proposal, reply }, timeout)
            .await
    }

    /// Waits until this member has applied everything committed before now (raft ReadIndex):
    /// after it, a read of the local store is linearizable.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), StoreError> {
        let work = async {
            let index = self
                .send(|reply| Command::ReadIndex { reply })
                .await?
                .await
                .map_err(|_| StoreError::OutcomeUnknown)??;
            let mut seen = self.progress.get();
            if seen < index {
                crate::probe!("etcd.read.waited_for_apply");
            }
            while seen < index {
                seen = self.progress.next_change(seen).await;
                self.serving()?;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(StoreError::OutcomeUnknown))
    }

    /// Adds member `id` as a voter, or removes it (through the leader); returns the voters once
    /// the change applied here. Asking for what already holds answers at once; for a removal,
    /// only after a ReadIndex barrier: "not a member" is judged on a member list that has
    /// applied every change committed before the request (as etcd judges a member change where
    /// it applies, never on a lagging member's view). A member restarted behind the cluster, or
    /// one not yet added, would otherwise call a member removed that is still a voter, and an
    /// operator would go on to remove another one, taking quorum with them. "Already a voter"
    /// needs no barrier: ids are never reused and a removed member never returns, so a voter in
    /// any applied list is one still (a restarted member re-adding itself answers at once, as
    /// k3s starts an existing member without a member add).
    pub async fn change_member(
        &self,
        change: MemberChange,
        id: u64,
        timeout: Duration,
    ) -> Result<Vec<u64>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if change == MemberChange::Remove {
            self.read_barrier(timeout).await?;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.ask(|reply| Command::ChangeMember { change, id, reply }, left)
            .await
    }

    /// The voters as this member last applied them (its member list; stale while it lags).
    pub fn voters(&self) -> Vec<u64> {
        let a = self.applied.lock().expect("applied state lock poisoned");
        a.mvcc.voters().to_vec()
    }

    pub fn leader(&self) -> u64 {
        self.applied
            .lock()
            .expect("applied state lock poisoned")
            .leader
    }
}

/// Starts a member from its disk and returns its handle; the raft loop runs until the node dies.
pub async fn start_member(
    config: MemberConfig,
    disk: SharedDisk,
    observer: SharedObserver,
    faults: SharedFaults,
) -> MemberHandle {
    let rec = recover(&config, &disk);
    let applied = rec.storage.applied.clone();
    {
        let a = applied.lock().expect("applied state lock poisoned");
        observer.record(StoreEvent::MemberStarted {
            member_id: config.id,
            applied_index: rec.applied_index,
            current_revision: a.mvcc.current_revision(),
            compact_revision: a.mvcc.compact_revision(),
            scheduled_compact_revision: a.mvcc.scheduled_compact_revision(),
            recovered: rec.durable,
        });
    }
    let (commands_tx, commands) = mpsc::channel(1024);
    let progress = Arc::new(AppliedIndex::default());
    progress.set(rec.applied_index);
    let serving = Arc::new(Serving::default());
    let handle = MemberHandle {
        id: config.id,
        name: config.name.clone(),
        applied: applied.clone(),
        progress: progress.clone(),
        serving: serving.clone(),
        commands: commands_tx,
    };
    let raft_config = Config {
        id: config.id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: 1,
        applied: rec.applied_index,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    raft_config
        .validate()
        .expect("the member's raft config is valid");
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let started = catch_raft_panic(|| RawNode::new(&raft_config, rec.storage.clone(), &logger));
    let node = match started {
        Ok(node) => node.expect("raft starts from the recovered log"),
        Err(reason) => {
            // raft-rs refused the state on this disk (an applied index past its log, say): the
            // member halts as etcd would, and a restart from the same disk halts again.
            observer.record(StoreEvent::MemberHalted {
                member_id: config.id,
                last_index: rec.durable.last_index,
                reason,
            });
            serving.halt();
            progress.stop();
            return handle;
        }
    };
    let endpoint = Arc::new(
        Endpoint::bind(config.peers[&config.id])
            .await
            .expect("a member binds its peer address"),
    );
    let (inbox_tx, inbox) = mpsc::channel(4096);
    let ep = endpoint.clone();
    tokio::spawn(async move {
        loop {
            let Ok((payload, _from)) = ep.recv_from_raw(RAFT_TAG).await else {
                continue;
            };
            if let Ok(msg) = payload.downcast::<Message>() {
                if inbox_tx.send(*msg).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut outboxes = BTreeMap::new();
    for (&id, &addr) in &config.peers {
        if id == config.id {
            continue;
        }
        let (tx, mut rx) = mpsc::channel::<Message>(4096);
        let ep = endpoint.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let _ = ep.send_to_raw(addr, RAFT_TAG, Box::new(m)).await;
            }
        });
        outboxes.insert(id, tx);
    }
    let next_request = request_id_base(config.id);
    let mut member = Member {
        me: handle.clone(),
        expiring: false,
        config,
        node,
        storage: rec.storage,
        disk,
        observer,
        faults,
        outboxes,
        waiters: BTreeMap::new(),
        reads: BTreeMap::new(),
        next_request,
        progress: progress.clone(),
        serving,
        publishing: None,
        last_log_compaction: rec.applied_index,
        durable: rec.durable,
        reported: rec.durable,
    };
    if let Some(rev) = rec.resume_compaction {
        member.finish_compaction(rev);
        member.commit_backend();
    }
    tokio::spawn(member.run(commands, inbox));
    handle
}

enum Waiter {
    Apply(oneshot::Sender<ApplyResult>),
    Members(oneshot::Sender<Result<Vec<u64>, StoreError>>),
}

struct Member {
    /// This member as its API sees it: the lease revokes it proposes go through it.
    me: MemberHandle,
    /// This start's lease expiry loop is running (started the first time this member is the
    /// primary with leases to watch, so runs without leases have no extra timer).
    expiring: bool,
    config: MemberConfig,
    node: RawNode<MemberStorage>,
    storage: MemberStorage,
    disk: SharedDisk,
    observer: SharedObserver,
    faults: SharedFaults,
    outboxes: BTreeMap<u64, mpsc::Sender<Message>>,
    waiters: BTreeMap<u64, Waiter>,
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, StoreError>>>,
    next_request: u64,
    progress: Arc<AppliedIndex>,
    serving: Arc<Serving>,
    /// This start's publish in flight: its request id and when it was proposed.
    publishing: Option<(u64, tokio::time::Instant)>,
    last_log_compaction: u64,
    /// The raft state this member has fsynced and counts on, and the last one it reported.
    durable: RaftDurable,
    reported: RaftDurable,
}

/// Why the raft loop stopped.
#[derive(Debug)]
enum Stopped {
    /// A crash point fired inside the apply loop: the world kills the node.
    Crashed,
    /// raft-rs panicked: the member halted.
    Halted,
}

/// Every [`lease::EXPIRY_CHECK`], while this member's lessor is the primary: proposes the
/// revokes of expired leases, as etcd's lessor loop and server do, beside the raft loop. With
/// `check`, it first confirms with a ReadIndex round that this member still leads in the term it
/// found them in: a leader that was stuck (paused, starved) finds every deadline past when it
/// resumes, and by the time its revokes reach raft it may be a follower whose proposals go to
/// the new leader, which kept those leases alive (etcd #15247; `lease=etcd-15247` skips it).
async fn revoke_expired_leases(me: MemberHandle, check: bool) {
    loop {
        tokio::time::sleep(lease::EXPIRY_CHECK).await;
        let now = tokio::time::Instant::now();
        let (expired, term) = {
            let mut a = me.applied.lock().expect("applied lock");
            (a.lessor.expired(now, lease::REVOKES_PER_CHECK), a.term)
        };
        if expired.is_empty() {
            continue;
        }
        if check {
            if me.read_barrier(lease::REVOKE_RETRY).await.is_err() {
                continue;
            }
            let a = me.applied.lock().expect("applied lock");
            if a.leader != me.id || a.term != term {
                continue;
            }
        }
        for id in expired {
            let revoke = Proposal::LeaseRevoke(LeaseRevokeRequest { id });
            // A revoke that fails is offered again by a later check if the lease is still there.
            let _ = me.propose(revoke, lease::REVOKE_RETRY).await;
        }
    }
}

/// Runs `f`, turning a panic into its message. raft-rs panics (its `fatal!`) where its state
/// contradicts what the rest of the cluster knows, which a member whose disk lost fsynced
/// state runs into; that must become a finding about this member, not end the simulation.
fn catch_raft_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "raft-rs panicked with a non-string payload".into()
        }
    })
}

/// The first request id of this start, as etcd's id generator makes it: the member id in the top
/// 16 bits, then the start time in milliseconds, then a counter. Ids of entries a previous start
/// proposed (still in the log, applied after a restart) never match a new request's.
fn request_id_base(member_id: u64) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ((member_id & 0xffff) << 48) | ((ms & 0xff_ffff_ffff) << 8)
}

impl Member {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbox: mpsc::Receiver<Message>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let mut idle = false;
        loop {
            let ticking = self.needs_tick();
            if ticking && idle {
                // The first tick after a quiet spell comes a whole period later, as it would
                // have on a timer that kept running.
                tick.reset();
            }
            idle = !ticking;
            tokio::select! {
                biased;
                _ = tick.tick(), if ticking => {
                    let was_leader = self.node.raft.state == StateRole::Leader;
                    self.node.tick();
                    // A leader that stops leading on a tick found no quorum active: check-quorum.
                    if was_leader && self.node.raft.state != StateRole::Leader {
                        crate::probe!("etcd.raft.check_quorum_step_down");
                    }
                    self.maybe_publish();
                    self.waiters.retain(|_, w| match w {
                        Waiter::Apply(s) => !s.is_closed(),
                        Waiter::Members(s) => !s.is_closed(),
                    });
                    self.commit_backend();
                }
                Some(m) = inbox.recv() => {
                    if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                        crate::probe!("etcd.snapshot.received");
                    }
                    let was_leader = self.node.raft.state == StateRole::Leader;
                    if let Err(reason) = catch_raft_panic(|| self.node.step(m)) {
                        self.halt(reason);
                        return;
                    }
                    if was_leader && self.node.raft.state != StateRole::Leader {
                        crate::probe!("etcd.raft.leader_deposed_by_message");
                    }
                }
                Some(c) = commands.recv() => self.command(c),
            }
            match self.handle_ready().await {
                Ok(()) => {}
                // A crash point fired: the world kills this node; nothing more may reach disk.
                Err(Stopped::Crashed) => std::future::pending::<()>().await,
                Err(Stopped::Halted) => return,
            }
        }
    }

    /// Whether a tick can change anything. The leader of a one-voter cluster sends no heartbeats
    /// and cannot lose its leadership; with nothing for the backend to commit, its publish applied
    /// and nobody waiting on it, its ticks would do nothing but cost the simulation a timer and a
    /// wake-up ten times a simulated second. Any message, command or write makes it tick again.
    fn needs_tick(&self) -> bool {
        let raft = &self.node.raft;
        let quiet_leader = raft.state == StateRole::Leader && raft.prs().is_singleton();
        !(quiet_leader
            && self.serving.is_ready()
            && self.waiters.is_empty()
            && self.reads.is_empty()
            && self
                .storage
                .applied
                .lock()
                .expect("applied lock")
                .mvcc
                .pending_writes()
                == 0)
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Proposes this start's publish once a leader is known, again if it did not apply in time.
    fn maybe_publish(&mut self) {
        if self.serving.is_ready() || self.node.raft.leader_id == 0 {
            return;
        }
        let now = tokio::time::Instant::now();
        if self
            .publishing
            .is_some_and(|(_, at)| now < at + PUBLISH_RETRY)
        {
            return;
        }
        if self.publishing.is_some() {
            crate::probe!("etcd.publish.retried");
        }
        let id = self.request_id();
        if self
            .node
            .propose(vec![], Proposal::Publish.encode(id))
            .is_ok()
        {
            self.publishing = Some((id, now));
        }
    }

    fn command(&mut self, c: Command) {
        let leader = self.node.raft.leader_id;
        match c {
            Command::Propose {
                mut proposal,
                reply,
            } => {
                let id = self.request_id();
                if let Proposal::LeaseGrant(r) = &mut proposal {
                    if r.id == 0 {
                        // etcd's LeaseGrant takes the ID from the member's request id generator
                        // (member id, start time, counter), made positive.
                        r.id = (self.request_id() & (i64::MAX as u64)) as i64;
                    }
                }
                if leader == 0 || self.node.propose(vec![], proposal.encode(id)).is_err() {
                    crate::probe!("etcd.propose.no_leader");
                    let _ = reply.send(Err(StoreError::NoLeader));
                    return;
                }
                self.waiters.insert(id, Waiter::Apply(reply));
            }
            Command::ReadIndex { reply } => {
                if leader == 0 {
                    crate::probe!("etcd.read_index.no_leader");
                    let _ = reply.send(Err(StoreError::NoLeader));
                    return;
                }
                let raft = &self.node.raft;
                if raft.state == StateRole::Leader && !raft.commit_to_current_term() {
                    crate::probe!("etcd.read_index.before_leader_committed_in_term");
                } else if raft.raft_log.term(raft.raft_log.committed).unwrap_or(0) != raft.term {
                    crate::probe!("etcd.read_index.before_commit_in_term_seen");
                }
                let id = self.request_id();
                self.node.read_index(id.to_le_bytes().to_vec());
                self.reads.insert(id, reply);
            }
            Command::ChangeMember {
                change,
                id: node_id,
                reply,
            } => {
                let voters = self
                    .storage
                    .applied
                    .lock()
                    .expect("applied lock")
                    .mvcc
                    .voters()
                    .to_vec();
                if voters.contains(&node_id) == (change == MemberChange::Add) {
                    let _ = reply.send(Ok(voters));
                    return;
                }
                let id = self.request_id();
                let mut cc = ConfChange::default();
                cc.set_change_type(match change {
                    MemberChange::Add => ConfChangeType::AddNode,
                    MemberChange::Remove => ConfChangeType::RemoveNode,
                });
                cc.node_id = node_id;
                if leader == 0
                    || self
                        .node
                        .propose_conf_change(id.to_le_bytes().to_vec(), cc)
                        .is_err()
                {
                    let _ = reply.send(Err(StoreError::NoLeader));
                    return;
                }
                self.waiters.insert(id, Waiter::Members(reply));
            }
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgRequestPreVoteResponse && m.reject
            {
                crate::probe!("etcd.raft.pre_vote_refused");
            }
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgRequestVoteResponse && m.reject {
                crate::probe!("etcd.raft.vote_refused");
            }
            if let Some(out) = self.outboxes.get(&to) {
                // A full queue is a congested link: drop, as etcd's peer streams do.
                let _ = out.try_send(m);
            }
            if snapshot {
                crate::probe!("etcd.snapshot.sent");
                self.node.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
    }

    async fn handle_ready(&mut self) -> Result<(), Stopped> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = match catch_raft_panic(|| self.node.ready()) {
            Ok(ready) => ready,
            Err(reason) => return Err(self.halt(reason)),
        };
        if let Some(ss) = ready.ss() {
            let mut a = self.storage.applied.lock().expect("applied lock");
            a.leader = ss.leader_id;
        }
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone());
        }
        for rs in ready.take_read_states() {
            let id = u64::from_le_bytes(rs.request_ctx[..8].try_into().expect("8 bytes"));
            if let Some(reply) = self.reads.remove(&id) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        self.apply(ready.take_committed_entries())?;
        let batch = WalBatch {
            entries: ready.entries().clone(),
            hard_state: ready.hs().cloned(),
        };
        {
            let mut core = self.storage.log.wl();
            core.append(&batch.entries)
                .expect("raft hands out contiguous entries");
            if let Some(hs) = &batch.hard_state {
                core.set_hardstate(hs.clone());
            }
        }
        if !batch.entries.is_empty() || batch.hard_state.is_some() {
            self.disk
                .lock()
                .expect("disk lock poisoned")
                .append(WAL, frame(&batch.encode()));
            // The fsync takes time, and the raft loop waits for it as etcd's does: a kill in
            // between finds the append unsynced (dropped, or torn part-way). Nothing that
            // depends on it (persisted messages, the durable report) happens before it ends.
            tokio::time::sleep(WAL_FSYNC).await;
            self.disk.lock().expect("disk lock poisoned").sync(WAL);
            self.wal_synced(&batch);
        }
        self.report_durable();
        self.send(ready.take_persisted_messages());
        let mut light = match catch_raft_panic(|| self.node.advance(ready)) {
            Ok(light) => light,
            Err(reason) => return Err(self.halt(reason)),
        };
        if let Some(commit) = light.commit_index() {
            self.storage.log.wl().mut_hard_state().commit = commit;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        if let Err(reason) = catch_raft_panic(|| self.node.advance_apply()) {
            return Err(self.halt(reason));
        }
        let pending = self
            .storage
            .applied
            .lock()
            .expect("applied lock")
            .mvcc
            .pending_writes();
        if pending >= BACKEND_BATCH_LIMIT {
            self.commit_backend();
        }
        {
            let mut a = self.storage.applied.lock().expect("applied lock");
            a.term = self.node.raft.term;
            a.last_index = self.node.raft.raft_log.last_index();
            a.leader = self.node.raft.leader_id;
        }
        let applied = self
            .storage
            .applied
            .lock()
            .expect("applied lock")
            .mvcc
            .consistent_index();
        self.progress.set(applied);
        self.promote_or_demote();
        self.maybe_compact_log(applied);
        self.report_durable();
        Ok(())
    }

    /// Hands the lease deadlines to this member once it leads and has applied an entry of its
    /// own term (so every revoke committed before its term has applied: etcd 3.5 makes a new
    /// leader wait for its applied index before renewing), and takes them back when it stops.
    fn promote_or_demote(&mut self) {
        let raft = &self.node.raft;
        let leading = raft.state == StateRole::Leader;
        let caught_up = raft.raft_log.term(raft.raft_log.applied).ok() == Some(raft.term);
        let mut a = self.storage.applied.lock().expect("applied lock");
        if leading && caught_up && !a.lessor.is_primary() {
            let now = tokio::time::Instant::now();
            a.lessor.promote(now, self.config.election_timeout());
        } else if !leading && a.lessor.is_primary() {
            a.lessor.demote();
        }
        if a.lessor.is_primary() && !a.lessor.is_empty() && !self.expiring {
            self.expiring = true;
            let check = self.config.lease != LeaseVariant::Etcd15247;
            tokio::spawn(revoke_expired_leases(self.me.clone(), check));
        }
    }

    /// The WAL now durably ends with `batch`: later entries overwrite from their index on.
    fn wal_synced(&mut self, batch: &WalBatch) {
        if let Some(last) = batch.entries.last() {
            self.durable.last_index = last.index;
            self.durable.last_term = last.term;
        }
        if let Some(hs) = &batch.hard_state {
            self.durable.term = hs.term;
            self.durable.vote = hs.vote;
            self.durable.commit = hs.commit;
        }
    }

    /// Tells the observer what this member now counts on, when that changed.
    fn report_durable(&mut self) {
        if self.durable != self.reported {
            self.reported = self.durable;
            self.observer.record(StoreEvent::MemberPersisted {
                durable: self.durable,
            });
        }
    }

    /// raft-rs panicked: this member serves nothing more and its loop ends, as an etcd process
    /// that hit raft's fatal error exits. What it lost is for the history to tell.
    fn halt(&mut self, reason: String) -> Stopped {
        // raft-rs may have panicked holding its log's lock; read it without trusting that.
        let last_index = catch_raft_panic(|| self.storage.log.last_index().unwrap_or(0))
            .unwrap_or(self.durable.last_index);
        self.observer.record(StoreEvent::MemberHalted {
            member_id: self.config.id,
            last_index,
            reason,
        });
        self.serving.halt();
        self.progress.stop();
        Stopped::Halted
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Stopped> {
        for e in entries {
            // The consistent index moves with the entry's first backend write (a compaction
            // commits its scheduled mark mid-apply), as etcd's does.
            self.storage
                .applied
                .lock()
                .expect("applied lock")
                .mvcc
                .set_consistent_index(e.index);
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let (id, proposal) = Proposal::decode(&e.data);
                    if let Proposal::Publish = proposal {
                        if self.publishing.is_some_and(|(p, _)| p == id) {
                            self.publishing = None;
                            self.serving.set_ready();
                        }
                        continue;
                    }
                    let result = self.apply_proposal(proposal)?;
                    if let Some(Waiter::Apply(reply)) = self.waiters.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                EntryType::EntryConfChange => {
                    let cc =
                        ConfChange::parse_from_bytes(&e.data).expect("a logged conf change parses");
                    probe_conf_change(&self.node.raft, &cc, e.index);
                    let cs = self
                        .node
                        .apply_conf_change(&cc)
                        .expect("a committed conf change applies");
                    self.storage.log.wl().set_conf_state(cs.clone());
                    let mut a = self.storage.applied.lock().expect("applied lock");
                    a.mvcc.set_voters(cs.voters.clone());
                    drop(a);
                    if e.context.len() == 8 {
                        let id = u64::from_le_bytes(e.context[..8].try_into().expect("8 bytes"));
                        if let Some(Waiter::Members(reply)) = self.waiters.remove(&id) {
                            let _ = reply.send(Ok(cs.voters.clone()));
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => panic!("members only propose v1 conf changes"),
            }
        }
        Ok(())
    }

    fn apply_proposal(&mut self, p: Proposal) -> Result<ApplyResult, Stopped> {
        let mut guard = self.storage.applied.lock().expect("applied lock");
        let a = &mut *guard;
        let (m, lessor) = (&mut a.mvcc, &mut a.lessor);
        let now = tokio::time::Instant::now();
        let out = match p {
            // A put naming a lease this member has not applied (never granted, or revoked
            // before the put's turn) is refused where it applies, identically on every member.
            Proposal::Put(r) if r.lease != 0 && !lessor.contains(r.lease) => {
                Err(StoreError::LeaseNotFound)
            }
            Proposal::Put(r) => m.put(&r).map(Outcome::Put),
            Proposal::DeleteRange(r) => m.delete_range(&r).map(Outcome::DeleteRange),
            // Only the branch the compares choose is checked, as etcd's applier does.
            Proposal::Txn(r)
                if m.txn_branch(&r).iter().any(|op| match &op.request {
                    Some(request_op::Request::RequestPut(p)) => {
                        p.lease != 0 && !lessor.contains(p.lease)
                    }
                    _ => false,
                }) =>
            {
                Err(StoreError::LeaseNotFound)
            }
            Proposal::Txn(r) => m.txn(&r).map(Outcome::Txn),
            Proposal::LeaseGrant(r) => lessor.grant(m, r.id, r.ttl, now).map(|ttl| {
                Outcome::LeaseGrant(LeaseGrantResponse {
                    id: r.id,
                    ttl,
                    ..Default::default()
                })
            }),
            Proposal::LeaseRevoke(r) => lessor.revoke(m, r.id).map(|()| Outcome::LeaseRevoked),
            Proposal::Publish => unreachable!("a publish changes no key and is applied apart"),
            Proposal::Compact(r) => {
                let rev = r.revision;
                match m.schedule_compaction(rev) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        drop(guard);
                        self.observer.record(StoreEvent::MemberCompaction {
                            revision: rev,
                            phase: "scheduled".into(),
                        });
                        // The scheduled mark is durable before any row goes.
                        self.commit_backend();
                        self.compact_rows(rev)?;
                        self.finish_compaction(rev);
                        guard = self.storage.applied.lock().expect("applied lock");
                        Ok(Outcome::Compacted)
                    }
                }
            }
        };
        let rev = guard.mvcc.current_revision();
        let commits = guard.mvcc.take_commits();
        drop(guard);
        for c in commits {
            self.observer.record(c);
        }
        Ok(out.map(|o| (o, rev)))
    }

    fn compact_rows(&mut self, rev: i64) -> Result<(), Stopped> {
        let removed = self
            .storage
            .applied
            .lock()
            .expect("applied lock")
            .mvcc
            .compact_rows(rev);
        self.commit_backend();
        self.observer.record(StoreEvent::MemberCompaction {
            revision: rev,
            phase: format!("deleted {removed} rows"),
        });
        if self
            .faults
            .member_crash(&self.config.name, "compact-before-finished")
        {
            self.observer.record(StoreEvent::FaultInjected {
                fault: "member-crash".into(),
                detail: format!(
                    "{} crashed before saving compaction {rev} as finished",
                    self.config.name
                ),
            });
            crate::probe!("etcd.compaction.crashed_before_finished");
            return Err(Stopped::Crashed);
        }
        Ok(())
    }

    fn finish_compaction(&mut self, rev: i64) {
        let mut a = self.storage.applied.lock().expect("applied lock");
        if a.mvcc.finished_compact_revision() < rev {
            a.mvcc.compact_rows(rev);
            a.mvcc.finish_compaction(rev);
            drop(a);
            self.observer.record(StoreEvent::MemberCompaction {
                revision: rev,
                phase: "finished".into(),
            });
        }
    }

    /// Writes the applied changes since the last commit to the backend, durably: on the batch
    /// interval, at the batch limit, and where etcd forces a commit (a compaction's scheduled
    /// mark and its deleted rows).
    fn commit_backend(&mut self) {
        let dirty = self
            .storage
            .applied
            .lock()
            .expect("applied lock")
            .mvcc
            .take_dirty();
        if dirty.is_empty() {
            return;
        }
        let mut d = self.disk.lock().expect("disk lock poisoned");
        d.append(BACKEND, frame(&encode_records(&dirty)));
        d.sync(BACKEND);
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let index = snap.get_metadata().index;
        let records = decode_records(&snap.data);
        let (mvcc, _) = Mvcc::restore(records.clone(), self.config.compaction);
        crate::probe!("etcd.snapshot.applied");
        if mvcc.compact_revision() > 0 {
            crate::probe!("etcd.snapshot.applied_after_compaction");
        }
        assert_eq!(
            mvcc.consistent_index(),
            index,
            "a snapshot's data is its index's state"
        );
        let mut stored = snap.clone();
        stored.data = Default::default();
        self.storage
            .log
            .wl()
            .apply_snapshot(stored)
            .expect("raft only hands out snapshots newer than the log");
        // The new WAL starts after the snapshot but keeps the hard state (term, vote): a member
        // that forgot its vote could vote twice in one term.
        let base = WalBatch {
            entries: vec![],
            hard_state: Some(self.storage.log.rl().hard_state().clone()),
        };
        let mut d = self.disk.lock().expect("disk lock poisoned");
        // Snapshot first: a crash before the backend is replaced restarts from the snapshot.
        d.replace(SNAP, snap.write_to_bytes().expect("a snapshot encodes"));
        d.sync(SNAP);
        // The snapshot's data is the whole store's records: the compacted backend, as it is.
        d.replace(BACKEND, frame(&snap.data));
        d.sync(BACKEND);
        d.replace(WAL, frame(&base.encode()));
        d.sync(WAL);
        drop(d);
        self.durable.snapshot_index = index;
        self.durable.last_index = index;
        self.durable.last_term = snap.get_metadata().term;
        self.wal_synced(&base);
        let lessor = Lessor::restore(
            &records,
            self.config.min_lease_ttl(),
            self.config.lease,
            tokio::time::Instant::now(),
        );
        let mut a = self.storage.applied.lock().expect("applied lock");
        a.mvcc = mvcc;
        a.lessor = lessor;
        drop(a);
        self.last_log_compaction = index;
    }

    /// Every `snapshot_entries` applied entries: save a snapshot, rewrite the backend compactly
    /// and drop log entries older than `keep_entries` from memory and the WAL.
    fn maybe_compact_log(&mut self, applied: u64) {
        if applied < self.last_log_compaction + self.config.snapshot_entries {
            return;
        }
        let Ok(snap) = self.storage.snapshot(applied, 0) else {
            return;
        };
        crate::probe!("etcd.log.compacted_into_snapshot");
        // The backend is rewritten below from the same state: a forced commit of everything
        // pending (etcd commits its backend before a snapshot too).
        self.storage
            .applied
            .lock()
            .expect("applied lock")
            .mvcc
            .take_dirty();
        let keep_from = applied.saturating_sub(self.config.keep_entries).max(1);
        let entries: Vec<Entry> = {
            let log = &self.storage.log;
            let first = log
                .first_index()
                .expect("memory log answers")
                .max(keep_from);
            let last = log.last_index().expect("memory log answers");
            if first > last {
                vec![]
            } else {
                self.storage
                    .log
                    .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
                    .unwrap_or_default()
            }
        };
        let hard_state = self.storage.log.rl().hard_state().clone();
        let mut d = self.disk.lock().expect("disk lock poisoned");
        // The on-disk snapshot is the WAL's base: the new WAL holds only what follows it.
        let snap_on_disk = snap.clone();
        d.replace(
            SNAP,
            snap_on_disk.write_to_bytes().expect("a snapshot encodes"),
        );
        d.sync(SNAP);
        d.replace(BACKEND, frame(&snap.data));
        d.sync(BACKEND);
        let tail = WalBatch {
            entries: entries.into_iter().filter(|e| e.index > applied).collect(),
            hard_state: Some(hard_state),
        };
        d.replace(WAL, frame(&tail.encode()));
        d.sync(WAL);
        drop(d);
        self.durable.snapshot_index = applied;
        self.durable.last_index = applied;
        self.durable.last_term = snap.get_metadata().term;
        self.wal_synced(&tail);
        let _ = self.storage.log.wl().compact(keep_from);
        self.last_log_compaction = applied;
    }
}

/// Names a membership change as it applies (for code probes only): added or removed, and
/// applied on a leader while a voter had neither been heard from lately nor received the
/// change (a member change going through while part of the cluster is cut off).
fn probe_conf_change(raft: &raft::Raft<MemberStorage>, cc: &ConfChange, index: u64) {
    match cc.get_change_type() {
        ConfChangeType::AddNode => crate::probe!("etcd.membership.member_added"),
        ConfChangeType::RemoveNode => crate::probe!("etcd.membership.member_removed"),
        ConfChangeType::AddLearnerNode => {}
    }
    let cut_off = raft.state == StateRole::Leader
        && raft
            .prs()
            .iter()
            .any(|(id, pr)| *id != raft.id && !pr.recent_active && pr.matched < index);
    if cut_off {
        crate::probe!("etcd.membership.applied_while_voter_cut_off");
    }
}

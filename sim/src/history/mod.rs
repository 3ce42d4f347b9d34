//! The recorded history of one run: the single format every checker reads.
//!
//! A history holds what clients did and saw (operations with invoke and completion times, in
//! simulated nanoseconds since the run began) and what the world and the store reported (events).
//! Checkers read only this; they never reach back into the cluster. It owns no behaviour beyond
//! small queries shared by several checkers.

pub mod lease;
pub mod recorder;
pub mod trace;

pub use lease::{LeaseOperation, LeaseOutcome, LeaseRequest, LeaseResult, LeasedKv};

use serde::{Deserialize, Serialize};
use store::observe::StoreEvent;

/// Simulated nanoseconds since the run began.
pub type SimNanos = u64;

/// Parameters of the run that checkers need to judge it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryParams {
    /// The kine servers, by node name.
    pub servers: Vec<String>,
    pub compact_interval_ms: u64,
    /// Jitter added to each compactor interval, as a percentage of the interval (0..=100).
    pub compact_interval_jitter_pct: u64,
    pub compact_min_retain: i64,
    pub compact_batch_revisions: i64,
    pub compact_timeout_ms: u64,
    /// When the last fault was healed and the quiet period began.
    pub faults_stop_ns: SimNanos,
    /// When the run ended (after the final audit read).
    pub end_ns: SimNanos,
    /// The id of the final audit read: a full List at the latest revision taken after the quiet
    /// period, once every node is up and every partition healed.
    pub final_read: Option<u64>,
    /// etcd topology: each node's role (`server`, `etcd-only`, `control-plane-only`, `agent`).
    #[serde(default)]
    pub node_roles: std::collections::BTreeMap<String, String>,
    /// etcd topology: how long after faults stop every node must be routed to an apiserver and
    /// Ready again (derived from the health-check period, lease interval and grace period).
    #[serde(default)]
    pub rejoin_bound_ns: SimNanos,
    /// etcd topology: how long a node's load balancer may keep routing to a server that fails its
    /// health check while another it knows passes (a health-check period, a failed check's
    /// timeout, and slack for message delivery); 0: routing is not judged during faults.
    #[serde(default)]
    pub lb_health_bound_ns: SimNanos,
    /// etcd topology: a Node is NotReady after this long without a lease renewal.
    #[serde(default)]
    pub node_lease_grace_ns: SimNanos,
    /// etcd topology: each member's status, read after the quiet period.
    #[serde(default)]
    pub members_final: Vec<MemberFinal>,
    /// `single`, `ha` or `etcd`.
    #[serde(default)]
    pub topology: String,
    /// kine's database dialect (`sqlite` or `mysql-like`); empty for etcd.
    #[serde(default)]
    pub database_dialect: String,
    /// Key prefixes that only the recorded client operations write (the workload's resources):
    /// a checker that models the key space from operations alone judges these ranges, while
    /// controllers, kubelets and the stores' own bookkeeping write elsewhere.
    #[serde(default)]
    pub workload_prefixes: Vec<String>,
    /// Recorded by `faultline live` against real processes: the store's own events (commits,
    /// compactions, member state) are unknown, so checks rebuild what was committed from what
    /// clients saw, and compactions from the compactor's requests (`History::compactions`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub live: bool,
}

/// One etcd member's status as the final audit read it (serializable, from the member itself).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberFinal {
    pub node: String,
    pub member_id: u64,
    /// False when the member did not answer the audit.
    pub reachable: bool,
    pub revision: i64,
    pub applied_index: u64,
    /// The member id this member believes leads (0: none).
    pub leader: u64,
}

/// Everything that was recorded in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub params: HistoryParams,
    /// Client operations, ordered by invoke time.
    pub ops: Vec<Operation>,
    /// World and store events, ordered by time (ties keep the order they were recorded in).
    pub events: Vec<WorldEvent>,
    /// Watch streams clients held, one per session (a resumed watch is a new session).
    #[serde(default)]
    pub watches: Vec<WatchSession>,
    /// Chunked LISTs through the apiserver facade, page by page.
    #[serde(default)]
    pub lists: Vec<ChunkedList>,
    /// WATCH and WatchList streams through the apiserver facade (a resumed one is a new session).
    #[serde(default)]
    pub api_watches: Vec<ApiWatch>,
    /// The lease clients' requests, ordered by invoke time (absent from runs without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseOperation>,
    /// Controllers' requests through the apiserver facade (GET, each LIST page, create, update,
    /// delete) as operations on their `/registry` keys, ordered by invoke time. Kept apart from
    /// `ops` so the checks of the etcd API's answers never mistake one for theirs; the
    /// linearizable check judges both together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_ops: Vec<ApiOperation>,
    /// Compactions clients asked for through the etcd API (live mode's compactor), ordered by
    /// invoke time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compactions: Vec<CompactionRequest>,
}

/// One Compact request a client sent, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionRequest {
    pub id: u64,
    pub client: String,
    pub server: String,
    pub invoke_ns: SimNanos,
    pub complete_ns: SimNanos,
    pub revision: i64,
    /// `ok`, or the error the client got (a timeout leaves the outcome unknown).
    pub outcome: String,
}

/// A request through the apiserver facade: the operation on its key as the etcd API would have
/// carried it, and what Kubernetes promises of its answer. An answer carries only key,
/// resourceVersion (the mod revision) and value: its key-values have create revision and version
/// 0, meaning "not carried". A GET's answer carries no list revision: its header revision is the
/// object's resourceVersion (0 for 404 Not Found).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiOperation {
    pub op: Operation,
    pub read: Freshness,
}

/// What a facade request may be answered from (SEMANTICS.md section 3, reads and their
/// freshness).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Freshness {
    /// A create, update or delete: judged as the etcd API's guarded writes.
    Write,
    /// No resourceVersion (or a continue token of rv -1): at least as new as every write
    /// acknowledged before it was sent.
    Consistent,
    /// resourceVersion "0": any revision; not judged for freshness.
    Any,
    /// `resourceVersionMatch=NotOlderThan` with `rv`: at a revision >= rv.
    NotOlderThan { rv: i64 },
    /// `resourceVersionMatch=Exact` with `rv` (or a bare resourceVersion on a LIST): at rv.
    Exact { rv: i64 },
    /// A page continued from a token of revision `rv`: the list-continuation check judges that
    /// it came at `rv`; its items are judged at the revision it reports.
    Continue { rv: i64 },
}

/// One chunked LIST through the apiserver: its pages in order, continued token by token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkedList {
    pub id: u64,
    pub client: String,
    pub resource: String,
    pub limit: i64,
    /// Set for the conformance flow: page 2 retried with the first token until a 410 arrives,
    /// for at most this long after the first page.
    pub conformance_window_ns: Option<SimNanos>,
    /// The conformance flow's object count: every page together must hold this many.
    pub expected_total: Option<usize>,
    pub pages: Vec<ListPage>,
    /// Why the list stopped, when it did not reach its last page.
    pub abandoned: Option<String>,
}

/// One page request and its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    pub server: String,
    pub invoke_ns: SimNanos,
    pub complete_ns: SimNanos,
    pub continue_token: Option<String>,
    pub answer: PageAnswer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PageAnswer {
    Page {
        /// (key, resourceVersion) of every item, in the order received.
        items: Vec<(String, i64)>,
        resource_version: i64,
        continue_token: Option<String>,
        remaining_item_count: Option<i64>,
    },
    Status {
        code: u16,
        reason: String,
        continue_token: Option<String>,
    },
    /// No answer within the deadline.
    NoAnswer { error: String },
}

/// One WATCH or WatchList stream through the apiserver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiWatch {
    pub id: u64,
    pub client: String,
    pub server: String,
    pub request: store::apiserver::WatchRequest,
    pub opened_ns: SimNanos,
    pub events: Vec<ApiWatchEvent>,
    pub end: Option<ApiWatchEnd>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiWatchEvent {
    pub at_ns: SimNanos,
    pub kind: store::apiserver::EventType,
    pub key: String,
    pub resource_version: i64,
    pub initial_events_end: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiWatchEnd {
    pub at_ns: SimNanos,
    /// The status that ended (or refused) the stream, if the server sent one.
    pub code: Option<u16>,
    pub reason: String,
}

/// One watch stream from its creation to its end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchSession {
    pub id: u64,
    pub client: String,
    pub server: String,
    /// The watched range `[start, end)`.
    pub start_key: String,
    pub end_key: String,
    /// The requested start revision (etcd's `start_revision`, inclusive).
    pub start_revision: i64,
    /// When the client sent the create request: the server registered the watch between this
    /// and `opened_ns`, when the stream's answer arrived.
    #[serde(default)]
    pub invoked_ns: SimNanos,
    pub opened_ns: SimNanos,
    /// Every event, in the order received.
    pub events: Vec<WatchEventRecord>,
    /// Progress notifications: (time received, revision).
    pub progress: Vec<(SimNanos, i64)>,
    pub end: Option<WatchSessionEnd>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventRecord {
    pub at_ns: SimNanos,
    /// The response this event came in (events of one response share it).
    pub response: u64,
    pub key: String,
    pub deleted: bool,
    pub mod_revision: i64,
    pub create_revision: i64,
    /// The key-value's version and value (a DELETE's carry neither).
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// The previous key-value, when the watch asked for prev_kv and got one.
    pub prev_kv: Option<Kv>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSessionEnd {
    pub at_ns: SimNanos,
    /// Set when the server cancelled the watch because its start was compacted.
    pub compact_revision: i64,
    pub reason: String,
}

/// One client request and what came of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub client: String,
    /// The server node the request was sent to.
    pub server: String,
    pub invoke_ns: SimNanos,
    pub complete_ns: SimNanos,
    pub request: Request,
    pub outcome: Outcome,
}

/// What a client asked for. Writes are the Txn shapes the Kubernetes apiserver sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Range of one key at `revision` (0 = latest).
    Get {
        key: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        revision: i64,
        /// Served from the member's local state, which may be stale (etcd's `serializable`).
        #[serde(default, skip_serializing_if = "is_false")]
        serializable: bool,
    },
    /// Range of `[start, end)` with a limit (0 = none) at `revision` (0 = latest).
    List {
        start: String,
        end: String,
        limit: i64,
        revision: i64,
        #[serde(default, skip_serializing_if = "is_false")]
        serializable: bool,
        /// Only the count is returned (etcd's `count_only`): no kvs.
        #[serde(default, skip_serializing_if = "is_false")]
        count_only: bool,
        /// kvs come without values (etcd's `keys_only`).
        #[serde(default, skip_serializing_if = "is_false")]
        keys_only: bool,
    },
    /// Txn: if mod_revision(key) == 0 then put.
    Create { key: String, value: String },
    /// Txn: if mod_revision(key) == expected then put else get.
    Update {
        key: String,
        value: String,
        expected_mod_revision: i64,
    },
    /// Txn: if mod_revision(key) == expected then delete else get.
    Delete {
        key: String,
        expected_mod_revision: i64,
    },
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Request {
    /// A linearizable List of `[start, end)` at the latest revision, without a limit.
    pub fn list_all(start: &str, end: &str) -> Request {
        Request::List {
            start: start.into(),
            end: end.into(),
            limit: 0,
            revision: 0,
            serializable: false,
            count_only: false,
            keys_only: false,
        }
    }

    /// The operation kind's name, as reports and histograms label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Get { .. } => "get",
            Request::List { .. } => "list",
            Request::Create { .. } => "create",
            Request::Update { .. } => "update",
            Request::Delete { .. } => "delete",
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. } | Request::Update { .. } | Request::Delete { .. }
        )
    }

    /// The key a write touches.
    pub fn write_key(&self) -> Option<&str> {
        match self {
            Request::Create { key, .. }
            | Request::Update { key, .. }
            | Request::Delete { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A key-value as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: String,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered; `header_revision` is the response header's revision.
    Ok {
        header_revision: i64,
        result: OpResult,
    },
    /// The request definitely did not take effect (the server said so).
    Failed { error: String },
    /// The request may or may not have taken effect (deadline, lost reply, server unsure).
    Unknown { error: String },
}

impl Outcome {
    pub fn header_revision(&self) -> Option<i64> {
        match self {
            Outcome::Ok {
                header_revision, ..
            } => Some(*header_revision),
            _ => None,
        }
    }
}

/// The body of a successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpResult {
    Read {
        kvs: Vec<Kv>,
        more: bool,
        count: i64,
    },
    /// A Txn write. `succeeded` is the Txn's compare result; when it succeeded, the write's
    /// revision is the header revision. When it did not, `current` is the key as it stands.
    Write {
        succeeded: bool,
        current: Option<Kv>,
        /// What the branch the Txn took answered, one entry per response, in order (empty in
        /// histories recorded before it was kept).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        responses: Vec<TxnAnswer>,
    },
}

/// One response of the branch a Txn took: the parts of it that `current` does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnAnswer {
    /// A put's answer; `prev_kv` says whether it carried one.
    Put { prev_kv: bool },
    /// A delete's answer: how many keys it deleted and how many previous key-values it carried.
    Delete { deleted: i64, prev_kvs: usize },
    /// A range's answer (its first key-value is `current`).
    Range { kvs: usize, more: bool, count: i64 },
    /// A nested Txn's answer, or a response with no body.
    Other,
}

/// Something the world or the store reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldEvent {
    pub at_ns: SimNanos,
    pub node: String,
    pub kind: EventKind,
}

/// World-level events (the simulator's own) and the store's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    NodeStarted,
    NodeKilled,
    NodeRestarted,
    /// The node's tasks and timers stopped (a process pause); messages to it wait.
    NodePaused,
    /// The paused node went on as it was (a kill of a paused node ends its pause instead).
    NodeResumed,
    /// Messages from every node in `from` to every node in `to` are dropped (and back, unless
    /// `one_way`).
    PartitionStarted {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    PartitionHealed {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    /// The fault schedule ended; the quiet period begins.
    FaultsStopped,
    /// A new server node started with a fresh disk to join the cluster through `via` (in place
    /// of `replacing`, for a replacement).
    ServerJoined {
        via: String,
        #[serde(default)]
        replacing: Option<String>,
    },
    /// The server node was stopped for good and its disk discarded; its etcd member is removed
    /// next. It is not expected back (`replaced_by` names its replacement, if any).
    ServerLeft {
        #[serde(default)]
        replaced_by: Option<String>,
    },
    /// A client polled an apiserver's `/readyz` and it was not ready.
    NotReady {
        server: String,
        failing: Vec<String>,
    },
    Store {
        event: StoreEvent,
    },
}

impl History {
    /// Store events with their time and node, in order.
    pub fn store_events(&self) -> impl Iterator<Item = (SimNanos, &str, &StoreEvent)> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Store { event } => Some((e.at_ns, e.node.as_str(), event)),
            _ => None,
        })
    }

    /// The final audit read, when the run got that far.
    pub fn final_read(&self) -> Option<&Operation> {
        let id = self.params.final_read?;
        self.ops.iter().find(|o| o.id == id)
    }
}

/// A key or range bound as a person reads it: keys may end in NUL (a continue key), and traces
/// and explanations are text, so `\0` and other control bytes are escaped.
pub fn printable(key: &str) -> std::str::EscapeDebug<'_> {
    key.escape_debug()
}

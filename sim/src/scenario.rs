//! Scenario files: what cluster to build, what load to drive and which faults to draw.
//!
//! A scenario is TOML. Every table rejects unknown fields so a misspelt key is an error that
//! names the file, line and field, never a silently ignored setting. Loading validates ranges
//! too; nothing downstream needs to re-check them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; results go to `<out>/<name>/seed-<N>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds of workload with faults.
    pub duration_s: u64,
    /// Simulated seconds of workload without faults at the end, so liveness can be judged.
    pub quiet_s: u64,
    pub topology: Topology,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub kine: Kine,
    #[serde(default)]
    pub etcd: Etcd,
    #[serde(default)]
    pub network: Network,
    pub workload: Workload,
    #[serde(default)]
    pub faults: Faults,
    /// Controllers reaching the store through the apiserver facade.
    #[serde(default)]
    pub controllers: Controllers,
    /// Design selections, area = variant (for example `compactor = "kine-357"`).
    #[serde(default)]
    pub design: std::collections::BTreeMap<String, String>,
    /// The faults to inject instead of drawing them from the seed (see `schedule.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyKind {
    /// One kine server with its SQLite database on the same node.
    Single,
    /// Several kine servers sharing one database node over the network.
    Ha,
    /// Embedded etcd: every server runs an etcd member (raft-replicated, with its own disk).
    Etcd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub kind: TopologyKind,
    /// Kine servers (1 for single; 1 to 5 for ha).
    pub servers: u32,
    /// Client nodes driving the workload.
    pub clients: u32,
    /// etcd topology: etcd-only servers (`etcd-N`: an etcd member, no apiserver).
    #[serde(default)]
    pub etcd_only: u32,
    /// etcd topology: control-plane-only servers (`cp-N`: an apiserver, no etcd member).
    #[serde(default)]
    pub control_plane_only: u32,
    /// etcd topology: agents (`agent-N`: a kubelet only).
    #[serde(default)]
    pub agents: u32,
    /// etcd topology: the server every other node joins through (it starts the etcd cluster
    /// alone; the others are added as members). Unset: every etcd server starts as a voter of
    /// one initial cluster and nodes join through the first server.
    #[serde(default)]
    pub join: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite` (ids visible in commit order) or `mysql-like` (ids reserved when an insert
    /// starts, visible when it commits: out of order, with gaps where inserts abort).
    pub dialect: String,
    /// Simulated time one database transaction takes, drawn per transaction.
    pub latency_ms: [u64; 2],
    /// mysql-like only: percent of inserts whose commit is slow.
    pub slow_commit_pct: u32,
    /// mysql-like only: how long a slow commit holds its reserved id.
    pub slow_commit_ms: [u64; 2],
}

impl Default for Database {
    fn default() -> Self {
        Database {
            dialect: "sqlite".into(),
            latency_ms: [1, 3],
            slow_commit_pct: 5,
            slow_commit_ms: [200, 2500],
        }
    }
}

impl Database {
    /// The store's dialect for this section (validated at load).
    pub fn store_dialect(&self) -> store::kine::database::Dialect {
        use store::kine::database::Dialect;
        match self.dialect.as_str() {
            "mysql-like" => Dialect::MysqlLike {
                slow_commit_pct: self.slow_commit_pct,
                slow_commit_ms: (self.slow_commit_ms[0], self.slow_commit_ms[1]),
            },
            _ => Dialect::Sqlite,
        }
    }
}

/// kine's compactor settings (SEMANTICS.md section 2), with kine's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kine {
    pub compact_interval_s: u64,
    /// Up to this percentage of the interval is added to each wait, drawn per tick.
    pub compact_interval_jitter_pct: u64,
    pub compact_min_retain: i64,
    pub compact_batch_revisions: i64,
    pub compact_timeout_ms: u64,
    /// Deadline of one server-to-database call.
    pub db_call_timeout_ms: u64,
}

impl Default for Kine {
    fn default() -> Self {
        Kine {
            compact_interval_s: 300,
            compact_interval_jitter_pct: 0,
            compact_min_retain: 1000,
            compact_batch_revisions: 1000,
            compact_timeout_ms: 5000,
            db_call_timeout_ms: 2000,
        }
    }
}

/// Embedded etcd settings (SEMANTICS.md sections 1 and 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Etcd {
    /// How often the apiservers compact (Kubernetes: every 5 minutes); 0 turns it off.
    pub compact_interval_s: u64,
    /// `apiserver` (compare-and-swap on compact_rev_key, compacting what the previous interval
    /// saw) or `latest` (compact to the current revision, as etcd's robustness traffic does).
    pub compact_mode: String,
    /// Applied entries between a member's snapshots (etcd's snapshot-count, scaled down).
    pub snapshot_entries: u64,
    /// Log entries a member keeps behind its snapshot for slow followers.
    pub keep_entries: u64,
    /// Chance that a kill tears the last unsynced write instead of dropping it whole.
    pub torn_write_probability: f64,
    /// Chance that a member crashes between deleting a compaction's rows and saving it as
    /// finished (etcd's `compactBeforeSetFinishedCompact` failpoint).
    pub compaction_crash_probability: f64,
}

impl Default for Etcd {
    fn default() -> Self {
        Etcd {
            compact_interval_s: 300,
            compact_mode: "apiserver".into(),
            snapshot_entries: 500,
            keep_entries: 100,
            torn_write_probability: 0.3,
            compaction_crash_probability: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// One-way message latency range.
    pub latency_ms: [u64; 2],
}

impl Default for Network {
    fn default() -> Self {
        Network { latency_ms: [1, 5] }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Kubernetes resource kinds, the `<resource>` in `/registry/<resource>/<ns>/<name>`.
    pub resources: Vec<String>,
    pub namespaces: u32,
    /// Distinct object names per resource and namespace.
    pub names: u32,
    /// Operations per second issued by each client (one at a time, Poisson-spaced).
    pub ops_per_s: f64,
    /// Relative weights of each operation kind.
    #[serde(default)]
    pub mix: Mix,
    /// `limit` of paginated List requests.
    pub list_limit: i64,
    /// Client deadline of one request.
    pub request_timeout_ms: u64,
    /// Bytes of value per object.
    #[serde(default = "default_value_bytes")]
    pub value_bytes: usize,
    /// Watcher nodes, each holding a watch on every object (with prev_kv and progress requests),
    /// resuming from its last revision after any break.
    #[serde(default)]
    pub watchers: u32,
    /// The first N clients each stay on one server (client-i on the i-th server, wrapping) and
    /// never move, even while it is down or cut off; the others move to another server after an
    /// error. `minority` partitions cut a server off together with the clients pinned to it.
    #[serde(default)]
    pub pinned_clients: u32,
    /// Lease client nodes (`clients/leases.rs`), each granting leases, attaching keys under
    /// `/registry/events/` and `/registry/leases/`, keeping some alive, letting some lapse and
    /// revoking others. 0: no leases in the run (the `lease` check is n/a).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_clients: u32,
    /// The TTLs, in seconds, lease clients draw from (one per lease, uniformly).
    #[serde(
        default = "default_lease_ttls_s",
        skip_serializing_if = "is_default_lease_ttls"
    )]
    pub lease_ttls_s: Vec<i64>,
    /// Keys attached to each lease.
    #[serde(
        default = "default_lease_keys",
        skip_serializing_if = "is_default_lease_keys"
    )]
    pub lease_keys: u32,
    /// Chance that a key a client picks to create or read is one at a range's edge instead of
    /// an object's: `/registry0` (the end of the watchers' and the final audit's range),
    /// `/registry/<resource>0` (the end of a resource's lists), `/registry/<resource>/` (their
    /// start) and `/registry/<resource>/ns-0/obj-0000\0` (right after an object, where a list's
    /// next page starts). 0: none.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub edge_keys: f64,
    /// Chance that a List, count-only or past-revision read is drawn at an edge of its options
    /// instead: limit 1, limit equal to the count a count-only read just gave (at that revision,
    /// so `more` must be false), or a revision that closes in on the compact revision by
    /// bisection and then reads exactly at it; keys-only and count-only drawn at those edges.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub edge_reads: f64,
    /// Chance that a write puts an empty value.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub empty_values: f64,
    /// Chance that a write to a resource's range-end key (`/registry/<resource>0`, outside its
    /// lists, so pages stay small) puts a value that fills etcd's request limit exactly
    /// (`--max-request-bytes`, 1.5 MiB), or one in four times a byte more, which etcd refuses.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub large_values: f64,
    /// Chance that a watcher's session starts at revision 1 instead of where the last one
    /// ended: once anything was compacted, the server cancels it with the compact revision and
    /// the next session starts exactly there (the case etcd #18089 mishandled). 0: never.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub compacted_starts: f64,
    /// Chance that a watcher's session starts 1 to 20 revisions past where the last one ended,
    /// in the future of the store, and asks for progress while it waits there (etcd answered
    /// such progress requests below the watch's start until its #20229). 0: never.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub future_starts: f64,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn default_value_bytes() -> usize {
    64
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Event-like leases of a few seconds and leader-election-like ones of ten and more.
fn default_lease_ttls_s() -> Vec<i64> {
    vec![2, 3, 5, 10, 15]
}

fn is_default_lease_ttls(v: &[i64]) -> bool {
    v == default_lease_ttls_s().as_slice()
}

fn default_lease_keys() -> u32 {
    2
}

fn is_default_lease_keys(n: &u32) -> bool {
    *n == default_lease_keys()
}

/// Relative weights of the operations a client draws, one at a time. Writes are the
/// apiserver's guarded Txns; every read is recorded with its options, as the server answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub create: f64,
    pub update: f64,
    pub delete: f64,
    /// A linearizable Get of one key at the latest revision.
    pub get: f64,
    /// A linearizable List of one resource in pages, continued at the first page's revision.
    pub list: f64,
    /// A Get served from the server's own state, which may be stale (etcd's `serializable`).
    /// Only pinned clients send these: a client that moves to another server could see an
    /// older state there. Unpinned clients send the linearizable Get instead.
    pub serializable_get: f64,
    /// A serializable List in pages (pinned clients only, as `serializable_get`).
    pub serializable_list: f64,
    /// A Get or a one-page List at a revision this client saw recently: served as the state
    /// then, or refused with etcd's compacted error once compaction passed it.
    pub old_revision_read: f64,
    /// A Get or a one-page List at a revision from the older half of what this client has
    /// seen: once compaction has run, mostly refused with etcd's compacted error.
    pub compacted_read: f64,
    /// A List of one resource that returns only the count (etcd's `count_only`).
    pub count_only: f64,
    /// A List in pages whose kvs carry no values (etcd's `keys_only`).
    pub keys_only: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            create: 3.0,
            update: 4.0,
            delete: 1.0,
            get: 1.0,
            list: 1.0,
            serializable_get: 0.0,
            serializable_list: 0.0,
            old_revision_read: 0.0,
            compacted_read: 0.0,
            count_only: 0.0,
            keys_only: 0.0,
        }
    }
}

impl Mix {
    /// Every weight with its field name, in the order a client draws them.
    pub fn weights(&self) -> [(&'static str, f64); 11] {
        [
            ("create", self.create),
            ("update", self.update),
            ("delete", self.delete),
            ("get", self.get),
            ("list", self.list),
            ("serializable_get", self.serializable_get),
            ("serializable_list", self.serializable_list),
            ("old_revision_read", self.old_revision_read),
            ("compacted_read", self.compacted_read),
            ("count_only", self.count_only),
            ("keys_only", self.keys_only),
        ]
    }
}

/// Fault rates and ranges; the seed draws the actual schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Draw a different fault mix per seed: each fault family is switched on or off, and each
    /// rate scaled, by the seed.
    pub swarm: bool,
    /// Network partitions started per simulated minute.
    pub partitions_per_min: f64,
    pub partition_duration_s: [u64; 2],
    /// Probability that a partition is one-way.
    pub one_way_probability: f64,
    /// Which links partitions cut: any of `server-database`, `client-server`, `server-server`,
    /// `isolate-node`, `isolate-control-plane`, `minority` (one server with its pinned clients,
    /// cut from every other server).
    pub partition_kinds: Vec<String>,
    /// Node kills per simulated minute; each killed node restarts after a drawn downtime.
    pub kills_per_min: f64,
    pub kill_downtime_s: [u64; 2],
    /// Which roles may be killed: any of `server`, `database`, `client`.
    pub kill_roles: Vec<String>,
    /// Probability that one compaction batch fails.
    pub compact_failure_probability: f64,
    /// Which compaction failures to inject: any of `database-locked`, `timeout`, `reply-lost`.
    pub compact_failure_kinds: Vec<String>,
    /// etcd topology: server membership changes started per simulated minute (at least 30 s
    /// apart), as operators make them. Not part of the swarm draw.
    pub membership_changes_per_min: f64,
    /// Which changes: any of `server-join` (a new server with a fresh disk joins through a
    /// current member: member add, catch up), `server-leave` (a server is stopped for good, its
    /// member removed and its disk discarded), `server-replace` (a leave, then a join under a
    /// new name with the same role).
    pub membership_kinds: Vec<String>,
    /// Process pauses started per simulated minute: the node's tasks and timers stop (a
    /// SIGSTOP, a GC pause, a VM stall) while the rest of the cluster goes on, and it resumes
    /// as it was, state intact. Messages sent to it wait for it; its own timers fire late.
    pub pauses_per_min: f64,
    /// How long a pause lasts, in seconds (fractions allowed), drawn log-uniformly so short
    /// pauses (below an election timeout) are as common per decade as long ones (past lease
    /// intervals and request deadlines).
    pub pause_duration_s: [f64; 2],
    /// Which nodes may be paused: any of `server` (any server node, as `kill_roles` names
    /// them), `database`, `client`, `join-target`, `control-plane` (nodes running an apiserver),
    /// `etcd-member` (nodes running an etcd member), `etcd-only`, `agent`.
    pub pause_roles: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            swarm: false,
            partitions_per_min: 0.0,
            partition_duration_s: [5, 30],
            one_way_probability: 0.0,
            partition_kinds: vec![],
            kills_per_min: 0.0,
            kill_downtime_s: [1, 10],
            kill_roles: vec![],
            compact_failure_probability: 0.0,
            compact_failure_kinds: vec![],
            membership_changes_per_min: 0.0,
            membership_kinds: vec![],
            pauses_per_min: 0.0,
            pause_duration_s: [0.2, 30.0],
            pause_roles: vec![],
        }
    }
}

impl Scenario {
    /// The scenario's own `[design]` selections.
    pub fn design(&self) -> store::design::Design {
        let mut d = store::design::Design::default();
        for (area, variant) in &self.design {
            d.set(area, variant).expect("validated when loaded");
        }
        d
    }
}

mod load;
pub mod schedule;
mod validate;

pub use load::{load, load_schedule, parse};
pub use schedule::Schedule;

#[cfg(test)]
mod tests;

/// Controllers: clients of the apiserver facade that write, list in pages, and hold WatchLists
/// resumed after breaks, as client-go does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Controllers {
    /// Controller nodes (0 = none).
    pub count: u32,
    /// The resource they list, watch and write.
    pub resource: String,
    /// Objects controller-1 creates first in namespace `seed` (the conformance test's data).
    pub seed_objects: u32,
    /// Writes per second per controller on `churn_names` objects in namespace `churn`.
    pub writes_per_s: f64,
    pub churn_names: u32,
    /// Each controller renews its Node lease this often, like a kubelet (0 = never).
    pub lease_every_s: u64,
    /// A chunked LIST of the resource this often (0 = never), pausing between pages.
    pub list_every_s: u64,
    pub list_limit: i64,
    pub page_pause_s: [u64; 2],
    /// Hold a WatchList on the resource, resumed from the last resourceVersion after breaks.
    pub watch_lists: bool,
    /// Send a WatchList request the apiserver must refuse (422 or 406) this often (0 = never).
    pub probe_every_s: u64,
    /// controller-1 runs the chunked-list conformance flow on the seeded objects.
    pub conformance: bool,
    pub conformance_retry_s: u64,
    pub conformance_window_s: u64,
    pub request_timeout_ms: u64,
}

impl Default for Controllers {
    fn default() -> Self {
        Controllers {
            count: 0,
            resource: "widgets".into(),
            seed_objects: 0,
            writes_per_s: 0.0,
            churn_names: 20,
            lease_every_s: 10,
            list_every_s: 0,
            list_limit: 40,
            page_pause_s: [0, 5],
            watch_lists: false,
            probe_every_s: 0,
            conformance: false,
            conformance_retry_s: 20,
            conformance_window_s: 600,
            request_timeout_ms: 3000,
        }
    }
}

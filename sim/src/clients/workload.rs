//! Clients: Kubernetes-shaped load against the servers' etcd API over gRPC, with deadlines.
//!
//! Each client issues one request at a time, Poisson-spaced: creates, updates and deletes as the
//! apiserver's Txn shapes (compare on mod_revision), and reads of every kind the mix weighs:
//! linearizable and serializable gets and paginated lists (continued at the first page's
//! revision), reads at old and compacted revisions, count-only and keys-only lists. Every request
//! is recorded before it is sent and completed with what came back. A client never retries a
//! write itself; it only learns from answers. A pinned client stays on its one server.
//!
//! Where the scenario asks for them, clients also draw edges: keys exactly at and next to the
//! ends of the ranges lists, watches and the final audit read, empty values and values that fill
//! etcd's request limit, and reads whose options sit at their edges (limit 1, limit equal to the
//! count, exactly the compact revision).

use super::etcd_call::send;
use crate::history::recorder::Recorder;
use crate::history::{OpResult, Outcome, Request};
use crate::scenario::Workload;
use prost::Message as _;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use store::proto::etcdserverpb::kv_client::KvClient;
use tokio::time::Instant;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct ClientConfig {
    pub name: String,
    pub servers: Vec<(String, SocketAddr)>,
    /// The index in `servers` of the one server a pinned client uses.
    pub pinned: Option<usize>,
    pub workload: Workload,
    pub stop_at: Instant,
}

/// How many of its latest header revisions a client remembers for old-revision reads.
const RECENT_REVISIONS: usize = 32;

/// The end of the range watchers watch and the final audit reads (`/registry/`, exclusive).
const REGISTRY_END: &str = "/registry0";

/// The end of a resource's lists: `[/registry/<r>/, /registry/<r>0)`.
fn resource_end(r: &str) -> String {
    format!("/registry/{r}0")
}

/// The keys at range edges a client picks with `Workload::edge_keys`: the watchers' and audit's
/// end; per resource its lists' end, their start, and an object's name followed by `\0`, the
/// key a list's next page starts at after that object.
pub fn edge_keys(w: &Workload) -> Vec<String> {
    let mut keys = vec![REGISTRY_END.to_string()];
    for r in &w.resources {
        keys.push(resource_end(r));
        keys.push(format!("/registry/{r}/"));
        keys.push(format!("/registry/{r}/ns-0/obj-0000\0"));
    }
    keys
}

/// The key prefixes only the workload writes, which the checkers model from its operations:
/// its resources', and with edge keys the range-end keys outside them.
pub fn owned_prefixes(w: &Workload) -> Vec<String> {
    let mut prefixes: Vec<String> = w
        .resources
        .iter()
        .map(|r| format!("/registry/{r}/"))
        .collect();
    if w.edge_keys > 0.0 {
        prefixes.extend(w.resources.iter().map(|r| resource_end(r)));
        prefixes.push(REGISTRY_END.to_string());
    }
    prefixes
}

/// A value of `unique` padded so that the guarded Txn writing it to `key` fills etcd's request
/// limit exactly (`kv_rules::MAX_REQUEST_BYTES`), or with `over` a byte past it.
fn large_value(key: &str, expected: i64, unique: &str, over: bool) -> String {
    use store::kv_rules::{raft_request_bytes, MAX_REQUEST_BYTES};
    let value = |n: usize| format!("{unique}{}", "x".repeat(n.saturating_sub(unique.len())));
    let bytes = |v: &str| {
        raft_request_bytes(store::apiserver::guarded_txn(key, expected, Some(v)).encoded_len())
    };
    // The raft request grows at least a byte per value byte: start at an upper bound and step
    // down by the excess, then up while a byte more still fits (length prefixes change size).
    let mut n = MAX_REQUEST_BYTES - bytes("");
    loop {
        let b = bytes(&value(n));
        if b <= MAX_REQUEST_BYTES {
            break;
        }
        n -= b - MAX_REQUEST_BYTES;
    }
    while bytes(&value(n + 1)) <= MAX_REQUEST_BYTES {
        n += 1;
    }
    value(n + usize::from(over))
}

/// One operation a client draws from the mix (in `Mix::weights` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Draw {
    Create,
    Update,
    Delete,
    Get,
    List,
    SerializableGet,
    SerializableList,
    OldRevisionRead,
    CompactedRead,
    CountOnly,
    KeysOnly,
}

const DRAWS: [Draw; 11] = [
    Draw::Create,
    Draw::Update,
    Draw::Delete,
    Draw::Get,
    Draw::List,
    Draw::SerializableGet,
    Draw::SerializableList,
    Draw::OldRevisionRead,
    Draw::CompactedRead,
    Draw::CountOnly,
    Draw::KeysOnly,
];

/// Options of a List in pages.
#[derive(Clone, Copy, Default)]
struct ListOptions {
    serializable: bool,
    keys_only: bool,
}

struct Client {
    cfg: ClientConfig,
    recorder: Recorder,
    /// The connection in use and the server it reaches.
    conn: Option<(usize, KvClient<Channel>)>,
    /// What this client last saw of each key: its mod revision, 0 when absent.
    known: BTreeMap<String, i64>,
    keys: Vec<String>,
    seq: u64,
    /// The header revisions of this client's latest answers, oldest first.
    recent: std::collections::VecDeque<i64>,
    /// The highest header revision this client has seen.
    top: i64,
    /// Keys at range edges (empty without `Workload::edge_keys`).
    edges: Vec<String>,
    /// What this client's past-revision reads taught it of the compact revision: the highest
    /// revision refused as compacted, and the lowest served above it (0: none since).
    compact_refused: i64,
    compact_served: i64,
}

/// Runs one client until `stop_at`, then returns.
pub async fn run_client(cfg: ClientConfig, recorder: Recorder) {
    let w = &cfg.workload;
    let mut keys = Vec::new();
    for r in &w.resources {
        for ns in 0..w.namespaces {
            for n in 0..w.names {
                keys.push(format!("/registry/{r}/ns-{ns}/obj-{n:04}"));
            }
        }
    }
    let mut client = Client {
        cfg: cfg.clone(),
        recorder,
        conn: None,
        known: BTreeMap::new(),
        keys,
        seq: 0,
        recent: Default::default(),
        top: 0,
        edges: edge_keys(&cfg.workload),
        compact_refused: 0,
        compact_served: 0,
    };
    while Instant::now() < cfg.stop_at {
        let gap: f64 = madsim::rand::thread_rng().gen::<f64>();
        let wait = -(1.0 - gap).ln() / cfg.workload.ops_per_s.max(0.001);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        if Instant::now() >= cfg.stop_at {
            break;
        }
        client.step().await;
    }
}

impl Client {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.workload.request_timeout_ms)
    }

    /// A connection to some server, trying each once from a random start; a pinned client
    /// only ever connects to its own server.
    async fn connect(&mut self) -> Option<(usize, KvClient<Channel>)> {
        if let Some(c) = &self.conn {
            return Some(c.clone());
        }
        let n = self.cfg.servers.len();
        let candidates: Vec<usize> = match self.cfg.pinned {
            Some(idx) => vec![idx],
            None => {
                let first = madsim::rand::thread_rng().gen_range(0..n);
                (0..n).map(|i| (first + i) % n).collect()
            }
        };
        for idx in candidates {
            let (_, addr) = &self.cfg.servers[idx];
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("server addresses are valid URIs")
                .timeout(self.timeout())
                .connect_timeout(self.timeout());
            if let Ok(channel) = endpoint.connect().await {
                let c = (idx, KvClient::new(channel));
                self.conn = Some(c.clone());
                return Some(c);
            }
        }
        None
    }

    fn pick_key(&self, live_only: bool) -> Option<String> {
        let mut rng = madsim::rand::thread_rng();
        let edge = self.cfg.workload.edge_keys;
        if !live_only && edge > 0.0 && rng.gen_bool(edge) {
            return Some(self.edges[rng.gen_range(0..self.edges.len())].clone());
        }
        if live_only {
            let live: Vec<&String> = self
                .known
                .iter()
                .filter(|(_, m)| **m > 0)
                .map(|(k, _)| k)
                .collect();
            if live.is_empty() {
                return None;
            }
            return Some(live[rng.gen_range(0..live.len())].clone());
        }
        // Creating a key this client knows to exist only fails its compare; look a few times
        // for one it believes absent, as a controller creating new objects would.
        let mut key = &self.keys[rng.gen_range(0..self.keys.len())];
        for _ in 0..3 {
            if self.known.get(key).copied().unwrap_or(0) == 0 {
                break;
            }
            key = &self.keys[rng.gen_range(0..self.keys.len())];
        }
        Some(key.clone())
    }

    fn draw(&self) -> Draw {
        let weights = self.cfg.workload.mix.weights();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let mut x = madsim::rand::thread_rng().gen::<f64>() * total;
        for (draw, (_, w)) in DRAWS.iter().zip(weights) {
            if x < w {
                return *draw;
            }
            x -= w;
        }
        Draw::Create
    }

    async fn step(&mut self) {
        let mut draw = self.draw();
        if self.cfg.pinned.is_none() {
            // A client that moves between servers may meet an older state on the next one:
            // only a pinned client's serializable reads must never go back.
            draw = match draw {
                Draw::SerializableGet => Draw::Get,
                Draw::SerializableList => Draw::List,
                other => other,
            };
        }
        let edge_reads = self.cfg.workload.edge_reads;
        let edge_read = matches!(
            draw,
            Draw::List
                | Draw::SerializableList
                | Draw::KeysOnly
                | Draw::CountOnly
                | Draw::OldRevisionRead
                | Draw::CompactedRead
        ) && edge_reads > 0.0
            && madsim::rand::thread_rng().gen_bool(edge_reads);
        if edge_read {
            return self.edge_read(draw).await;
        }
        self.seq += 1;
        let value = format!(
            "{}-{}-{}",
            self.cfg.name,
            self.seq,
            "x".repeat(self.cfg.workload.value_bytes.saturating_sub(16))
        );
        let mut request = match draw {
            Draw::Update | Draw::Delete => match self.pick_key(true) {
                Some(key) => {
                    let expected_mod_revision = self.known[&key];
                    if draw == Draw::Update {
                        Request::Update {
                            key,
                            value,
                            expected_mod_revision,
                        }
                    } else {
                        Request::Delete {
                            key,
                            expected_mod_revision,
                        }
                    }
                }
                None => Request::Create {
                    key: self.pick_key(false).expect("keys exist"),
                    value,
                },
            },
            Draw::Get | Draw::SerializableGet => Request::Get {
                key: self.pick_key(false).expect("keys exist"),
                revision: 0,
                serializable: draw == Draw::SerializableGet,
            },
            Draw::List => return self.paginated_list(ListOptions::default()).await,
            Draw::SerializableList => {
                let options = ListOptions {
                    serializable: true,
                    ..Default::default()
                };
                return self.paginated_list(options).await;
            }
            Draw::KeysOnly => {
                let options = ListOptions {
                    keys_only: true,
                    ..Default::default()
                };
                return self.paginated_list(options).await;
            }
            Draw::OldRevisionRead | Draw::CompactedRead => {
                let revision = self.past_revision(draw == Draw::CompactedRead);
                self.read_at(revision)
            }
            Draw::CountOnly => {
                let (start, end) = self.pick_resource();
                Request::List {
                    start,
                    end,
                    limit: 0,
                    revision: 0,
                    serializable: false,
                    count_only: true,
                    keys_only: false,
                }
            }
            Draw::Create => Request::Create {
                key: self.pick_key(false).expect("keys exist"),
                value,
            },
        };
        self.edge_value(&mut request);
        self.execute(request).await;
    }

    /// With `Workload::empty_values`, a put's value is made empty; with `large_values`, a put to
    /// a resource's range-end key gets a value filling etcd's request limit (or a byte past it,
    /// which etcd refuses as too large). Keys in lists keep small values: every page showing a
    /// value that size would be recorded whole.
    fn edge_value(&self, request: &mut Request) {
        let w = &self.cfg.workload;
        let (key, expected, value) = match request {
            Request::Create { key, value } => (key, 0, value),
            Request::Update {
                key,
                value,
                expected_mod_revision,
            } => (key, *expected_mod_revision, value),
            _ => return,
        };
        let mut rng = madsim::rand::thread_rng();
        if w.empty_values > 0.0 && rng.gen_bool(w.empty_values) {
            value.clear();
            return;
        }
        let range_end = || w.resources.iter().any(|r| *key == resource_end(r));
        if w.large_values > 0.0 && range_end() && rng.gen_bool(w.large_values) {
            let unique = format!("{}-{}-", self.cfg.name, self.seq);
            *value = large_value(key, expected, &unique, rng.gen_bool(0.25));
        }
    }

    /// A read at an edge of its options, in place of `draw`. A past-revision draw reads at the
    /// revision this client believes is the compact revision, closing in on it by bisection
    /// (a Get, a one-page List with limit 1, or a count-only read). Any other draw counts one
    /// resource (count-only with limit 1, which etcd ignores), then lists it at that count's
    /// revision with limit 1 and with limit equal to the count, where `more` must be false.
    async fn edge_read(&mut self, draw: Draw) {
        let serializable = draw == Draw::SerializableList;
        let (start, end) = self.pick_resource();
        let list = |limit, revision, count_only, keys_only| Request::List {
            start: start.clone(),
            end: end.clone(),
            limit,
            revision,
            serializable: serializable && revision == 0,
            count_only,
            keys_only,
        };
        // Once a compaction was met, the other edge reads close in on it too until found, then
        // half of them: bisection takes about ten reads to find a compaction hundreds of
        // revisions on, and kine's compactor moves it every tick.
        let found = self.compact_served == self.compact_refused + 1;
        let compact_edge = matches!(draw, Draw::OldRevisionRead | Draw::CompactedRead)
            || (self.compact_refused > 0 && (!found || madsim::rand::thread_rng().gen_bool(0.5)));
        if compact_edge {
            let revision = self.compact_edge();
            let request = match madsim::rand::thread_rng().gen_range(0..4) {
                0 => Request::Get {
                    key: self.pick_key(false).expect("keys exist"),
                    revision,
                    serializable: false,
                },
                1 => list(1, revision, false, false),
                2 => list(1, revision, false, true),
                _ => list(0, revision, true, false),
            };
            self.execute(request).await;
            return;
        }
        let keys_only = draw == Draw::KeysOnly || madsim::rand::thread_rng().gen_bool(0.25);
        let Some(Outcome::Ok {
            header_revision,
            result: OpResult::Read { count, .. },
        }) = self.execute(list(1, 0, true, false)).await
        else {
            return;
        };
        self.execute(list(1, header_revision, false, keys_only))
            .await;
        if count > 0 {
            self.execute(list(count, header_revision, false, keys_only))
                .await;
        }
    }

    /// The revision to read at to find the compact revision: before any was refused as
    /// compacted, one from the older half of what this client saw (as a compacted read); once a
    /// revision was refused and the next one served, that one (exactly the compact revision,
    /// unless a compaction moved it since); otherwise halfway between what was refused and what
    /// was served (or the newest revision seen).
    fn compact_edge(&self) -> i64 {
        let refused = self.compact_refused;
        if refused == 0 {
            return self.past_revision(true);
        }
        let hi = if self.compact_served > refused {
            self.compact_served
        } else {
            self.top
        };
        if hi <= refused + 1 {
            return hi.max(refused + 1);
        }
        refused + 1 + (hi - refused - 1) / 2
    }

    /// What a read at a past revision says about the compact revision.
    fn learn_compaction(&mut self, revision: i64, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { .. }
                if revision > self.compact_refused
                    && (self.compact_served <= self.compact_refused
                        || revision < self.compact_served) =>
            {
                self.compact_served = revision;
            }
            Outcome::Failed { error } if error == store::error::COMPACTED => {
                self.compact_refused = self.compact_refused.max(revision);
                if self.compact_served <= self.compact_refused {
                    self.compact_served = 0;
                }
            }
            _ => {}
        }
    }

    /// A revision in the past of what this client has seen: one of its recent answers', or
    /// (`compacted`) one from the older half of everything it saw, which compaction has most
    /// likely passed. 0 (the latest) while the client has seen nothing.
    fn past_revision(&self, compacted: bool) -> i64 {
        let mut rng = madsim::rand::thread_rng();
        if compacted {
            return if self.top > 1 {
                rng.gen_range(1..=self.top / 2)
            } else {
                0
            };
        }
        if self.recent.is_empty() {
            return 0;
        }
        self.recent[rng.gen_range(0..self.recent.len())]
    }

    /// A Get of one key or a one-page List of one resource, at `revision`.
    fn read_at(&self, revision: i64) -> Request {
        if madsim::rand::thread_rng().gen_bool(0.5) {
            return Request::Get {
                key: self.pick_key(false).expect("keys exist"),
                revision,
                serializable: false,
            };
        }
        let (start, end) = self.pick_resource();
        Request::List {
            start,
            end,
            limit: self.cfg.workload.list_limit,
            revision,
            serializable: false,
            count_only: false,
            keys_only: false,
        }
    }

    /// The key range `[/registry/<r>/, /registry/<r>0)` of one of the workload's resources.
    fn pick_resource(&self) -> (String, String) {
        let resources = &self.cfg.workload.resources;
        let r = &resources[madsim::rand::thread_rng().gen_range(0..resources.len())];
        (format!("/registry/{r}/"), format!("/registry/{r}0"))
    }

    /// Lists one resource in pages; later pages continue at the first page's revision. A page
    /// that does not move past its start key ends the list, as do more pages than there are
    /// keys: a store that repeats a page would otherwise be asked for it again and again, and
    /// a broken design's seed would cost many times a clean one's.
    async fn paginated_list(&mut self, options: ListOptions) {
        let (mut start, end) = self.pick_resource();
        let mut revision = 0;
        for _ in 0..=self.keys.len() {
            let req = Request::List {
                start: start.clone(),
                end: end.clone(),
                limit: self.cfg.workload.list_limit,
                revision,
                serializable: options.serializable,
                count_only: false,
                keys_only: options.keys_only,
            };
            match self.execute(req).await {
                Some(Outcome::Ok {
                    header_revision,
                    result:
                        OpResult::Read {
                            kvs, more: true, ..
                        },
                }) if kvs.last().is_some_and(|kv| kv.key >= start) => {
                    if revision == 0 {
                        revision = header_revision;
                    }
                    start = format!("{}\0", kvs.last().expect("not empty").key);
                }
                _ => return,
            }
        }
    }

    /// Sends one request and records it; returns the outcome.
    async fn execute(&mut self, request: Request) -> Option<Outcome> {
        let (idx, mut kv) = self.connect().await?;
        let server = self.cfg.servers[idx].0.clone();
        let id = self
            .recorder
            .invoke(&self.cfg.name, &server, request.clone());
        let outcome = send(&mut kv, &request).await;
        self.learn(&request, &outcome);
        if let Request::Get { revision, .. } | Request::List { revision, .. } = &request {
            if *revision > 0 {
                self.learn_compaction(*revision, &outcome);
            }
        }
        if let Some(rev) = outcome.header_revision() {
            self.top = self.top.max(rev);
            if self.recent.len() == RECENT_REVISIONS {
                self.recent.pop_front();
            }
            self.recent.push_back(rev);
        }
        if !matches!(outcome, Outcome::Ok { .. }) {
            // A stalled or broken connection is dropped; the next request may pick another server.
            self.conn = None;
        }
        self.recorder.complete(id, outcome.clone());
        Some(outcome)
    }

    fn learn(&mut self, request: &Request, outcome: &Outcome) {
        let Outcome::Ok {
            header_revision,
            result,
        } = outcome
        else {
            return;
        };
        match (request, result) {
            // A read at a past revision (an old read, a later page) says nothing about now.
            (Request::Get { revision, .. } | Request::List { revision, .. }, _)
                if *revision > 0 => {}
            (Request::Get { .. } | Request::List { .. }, OpResult::Read { kvs, .. }) => {
                for kv in kvs {
                    self.known.insert(kv.key.clone(), kv.mod_revision);
                }
                if let (Request::Get { key, .. }, true) = (request, kvs.is_empty()) {
                    self.known.insert(key.clone(), 0);
                }
            }
            (
                _,
                OpResult::Write {
                    succeeded: true, ..
                },
            ) => {
                let key = request.write_key().expect("a write").to_string();
                let rev = if matches!(request, Request::Delete { .. }) {
                    0
                } else {
                    *header_revision
                };
                self.known.insert(key, rev);
            }
            (
                _,
                OpResult::Write {
                    succeeded: false,
                    current,
                    ..
                },
            ) => {
                let key = request.write_key().expect("a write").to_string();
                self.known
                    .insert(key, current.as_ref().map(|c| c.mod_revision).unwrap_or(0));
            }
            _ => {}
        }
    }
}

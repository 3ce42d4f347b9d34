//! Clients: Kubernetes-shaped load against the servers' etcd API over gRPC, with deadlines.
//!
//! Each client issues one request at a time, Poisson-spaced: creates, updates and deletes as the
//! apiserver's Txn shapes (compare on mod_revision), and reads of every kind the mix weighs:
//! linearizable and serializable gets and paginated lists (continued at the first page's
//! revision), reads at old and compacted revisions, count-only and keys-only lists. Every request
//! is recorded before it is sent and completed with what came back. A client never retries a
//! write itself; it only learns from answers. A pinned client stays on its one server.

use super::etcd_call::send;
use crate::history::recorder::Recorder;
use crate::history::{OpResult, Outcome, Request};
use crate::scenario::Workload;
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
        self.seq += 1;
        let value = format!(
            "{}-{}-{}",
            self.cfg.name,
            self.seq,
            "x".repeat(self.cfg.workload.value_bytes.saturating_sub(16))
        );
        let request = match draw {
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
        self.execute(request).await;
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

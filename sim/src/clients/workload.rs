//! Clients: Kubernetes-shaped load against the kine servers over gRPC, with deadlines.
//!
//! Each client issues one request at a time, Poisson-spaced: creates, updates and deletes as the
//! apiserver's Txn shapes (compare on mod_revision), gets, and paginated lists that continue at
//! the first page's revision. Every request is recorded before it is sent and completed with what
//! came back. A client never retries a write itself; it only learns from answers.

use crate::history::recorder::Recorder;
use crate::history::{Kv, OpResult, Outcome, Request};
use crate::scenario::Workload;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, response_op, RangeRequest, TxnRequest, TxnResponse,
};
use store::proto::mvccpb::KeyValue;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

#[derive(Clone)]
pub struct ClientConfig {
    pub name: String,
    pub servers: Vec<(String, SocketAddr)>,
    pub workload: Workload,
    pub stop_at: Instant,
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

fn kv_of(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: String::from_utf8_lossy(&kv.value).into_owned(),
    }
}

/// Whether a failed write may still have taken effect. Only answers the store gives after
/// deciding (compacted, future revision, invalid request) are definite.
fn write_outcome_is_definite(code: Code) -> bool {
    matches!(
        code,
        Code::OutOfRange | Code::InvalidArgument | Code::FailedPrecondition
    )
}

impl Client {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.workload.request_timeout_ms)
    }

    /// A connection to some server, trying each once from a random start.
    async fn connect(&mut self) -> Option<(usize, KvClient<Channel>)> {
        if let Some(c) = &self.conn {
            return Some(c.clone());
        }
        let n = self.cfg.servers.len();
        let first = madsim::rand::thread_rng().gen_range(0..n);
        for i in 0..n {
            let idx = (first + i) % n;
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

    async fn step(&mut self) {
        let m = &self.cfg.workload.mix;
        let weights = [m.create, m.update, m.delete, m.get, m.list];
        let total: f64 = weights.iter().sum();
        let mut x = madsim::rand::thread_rng().gen::<f64>() * total;
        let mut choice = 0;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                choice = i;
                break;
            }
            x -= w;
        }
        self.seq += 1;
        let value = format!(
            "{}-{}-{}",
            self.cfg.name,
            self.seq,
            "x".repeat(self.cfg.workload.value_bytes.saturating_sub(16))
        );
        let request = match choice {
            1 | 2 => match self.pick_key(true) {
                Some(key) => {
                    let expected_mod_revision = self.known[&key];
                    if choice == 1 {
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
            3 => Request::Get {
                key: self.pick_key(false).expect("keys exist"),
                revision: 0,
                serializable: false,
            },
            4 => return self.paginated_list().await,
            _ => Request::Create {
                key: self.pick_key(false).expect("keys exist"),
                value,
            },
        };
        self.execute(request).await;
    }

    /// Lists one resource in pages; later pages continue at the first page's revision.
    async fn paginated_list(&mut self) {
        let resources = &self.cfg.workload.resources;
        let r = &resources[madsim::rand::thread_rng().gen_range(0..resources.len())];
        let prefix = format!("/registry/{r}/");
        let end = format!("/registry/{r}0");
        let mut start = prefix;
        let mut revision = 0;
        loop {
            let req = Request::List {
                start: start.clone(),
                end: end.clone(),
                limit: self.cfg.workload.list_limit,
                revision,
                serializable: false,
                count_only: false,
                keys_only: false,
            };
            match self.execute(req).await {
                Some(Outcome::Ok {
                    header_revision,
                    result:
                        OpResult::Read {
                            kvs, more: true, ..
                        },
                }) if !kvs.is_empty() => {
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
        let outcome = match &request {
            Request::Get {
                key,
                revision,
                serializable,
            } => {
                let req = RangeRequest {
                    key: key.clone().into_bytes(),
                    revision: *revision,
                    serializable: *serializable,
                    ..Default::default()
                };
                read_outcome(kv.range(req).await)
            }
            Request::List {
                start,
                end,
                limit,
                revision,
                serializable,
                count_only,
                keys_only,
            } => {
                let req = RangeRequest {
                    key: start.clone().into_bytes(),
                    range_end: end.clone().into_bytes(),
                    limit: *limit,
                    revision: *revision,
                    serializable: *serializable,
                    count_only: *count_only,
                    keys_only: *keys_only,
                    ..Default::default()
                };
                read_outcome(kv.range(req).await)
            }
            Request::Create { key, value } => write_outcome(kv.txn(txn(key, 0, Some(value))).await),
            Request::Update {
                key,
                value,
                expected_mod_revision,
            } => write_outcome(kv.txn(txn(key, *expected_mod_revision, Some(value))).await),
            Request::Delete {
                key,
                expected_mod_revision,
            } => write_outcome(kv.txn(txn(key, *expected_mod_revision, None)).await),
        };
        self.learn(&request, &outcome);
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

/// The apiserver's Txn: if mod_revision(key) == expected then put (or delete) else get.
fn txn(key: &str, expected: i64, value: Option<&String>) -> TxnRequest {
    store::apiserver::guarded_txn(key, expected, value.map(String::as_str))
}

fn read_outcome(
    r: Result<tonic::Response<store::proto::etcdserverpb::RangeResponse>, tonic::Status>,
) -> Outcome {
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            Outcome::Ok {
                header_revision: resp.header.map(|h| h.revision).unwrap_or(0),
                result: OpResult::Read {
                    kvs: resp.kvs.iter().map(kv_of).collect(),
                    more: resp.more,
                    count: resp.count,
                },
            }
        }
        // A read changes nothing, so every failure is definite.
        Err(status) => Outcome::Failed {
            error: status.message().to_string(),
        },
    }
}

fn write_outcome(r: Result<tonic::Response<TxnResponse>, tonic::Status>) -> Outcome {
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            let current = resp.responses.iter().find_map(|r| match &r.response {
                Some(response_op::Response::ResponseRange(rr)) => rr.kvs.first().map(kv_of),
                _ => None,
            });
            Outcome::Ok {
                header_revision: resp.header.map(|h| h.revision).unwrap_or(0),
                result: OpResult::Write {
                    succeeded: resp.succeeded,
                    current,
                },
            }
        }
        Err(status) if write_outcome_is_definite(status.code()) => Outcome::Failed {
            error: status.message().to_string(),
        },
        Err(status) => Outcome::Unknown {
            error: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}

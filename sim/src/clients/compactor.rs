//! Compaction from outside the store, through the etcd API, as live mode needs it (a real etcd
//! compacts only when someone asks it to).
//!
//! Two kinds of tick, alternating as `CompactorConfig::edge_every` says:
//! - **the apiserver's** (`store::apiserver::CompactRevKey`, the simulated apiservers' own): a
//!   Txn that bumps `compact_rev_key`'s version if it is still the one this compactor last saw
//!   (so several apiservers compact once per interval between them), then a Compact at the
//!   revision the previous tick's Txn answered with: what Kubernetes' compactor does every
//!   `--etcd-compaction-interval`. Such a revision is always that key's own write.
//! - **an operator's at a delete**: put and delete a key of the watched range, then compact at the
//!   delete's revision, as `etcdctl compact` at a chosen revision would. Only this puts a
//!   tombstone exactly at the compact revision, the edge etcd #18089 mishandled.
//!
//! Every Compact is recorded (`Recorder::invoke_compaction`), and so are the operator's writes,
//! as workload operations. The `compact_rev_key` Txn is not a workload shape and is not recorded:
//! its revisions are gaps to the checkers, as any writer they do not model.

use crate::clients::etcd_call;
use crate::history::recorder::Recorder;
use crate::history::{OpResult, Outcome, Request};
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use store::apiserver::CompactRevKey;
use store::proto::etcdserverpb::{kv_client::KvClient, CompactionRequest};
use tokio::time::Instant;
use tonic::transport::Channel;

/// The key an operator's tick writes and deletes, inside the watchers' range.
pub const EDGE_KEY: &str = "/registry/faultline-compactor/edge";

#[derive(Clone)]
pub struct CompactorConfig {
    pub name: String,
    pub servers: Vec<(String, SocketAddr)>,
    pub interval: Duration,
    /// Every `edge_every`-th tick is an operator's compaction at a delete (0: never).
    pub edge_every: u32,
    pub timeout: Duration,
    pub stop_at: Instant,
}

struct Compactor {
    cfg: CompactorConfig,
    recorder: Recorder,
    /// The Kubernetes compactor's state between its ticks.
    apiserver: CompactRevKey,
}

pub async fn run_compactor(cfg: CompactorConfig, recorder: Recorder) {
    let mut c = Compactor {
        cfg,
        recorder,
        apiserver: CompactRevKey::default(),
    };
    let mut tick = 0u32;
    loop {
        tokio::time::sleep(c.cfg.interval).await;
        if Instant::now() >= c.cfg.stop_at {
            return;
        }
        tick += 1;
        let Some((server, kv)) = c.connect().await else {
            continue;
        };
        if c.cfg.edge_every > 0 && tick.is_multiple_of(c.cfg.edge_every) {
            c.at_a_delete(&server, kv).await;
        } else {
            c.apiserver_tick(&server, kv).await;
        }
    }
}

impl Compactor {
    /// Some server that accepts a connection, tried from a random one.
    async fn connect(&self) -> Option<(String, KvClient<Channel>)> {
        let n = self.cfg.servers.len();
        let first = madsim::rand::thread_rng().gen_range(0..n);
        for i in 0..n {
            let (name, addr) = &self.cfg.servers[(first + i) % n];
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("server addresses are valid URIs")
                .timeout(self.cfg.timeout)
                .connect_timeout(self.cfg.timeout);
            if let Ok(channel) = endpoint.connect().await {
                return Some((name.clone(), KvClient::new(channel)));
            }
        }
        None
    }

    async fn apiserver_tick(&mut self, server: &str, mut kv: KvClient<Channel>) {
        let Ok(answer) = kv.txn(self.apiserver.txn()).await else {
            return;
        };
        if let Some(target) = self.apiserver.answered(&answer.into_inner()) {
            self.compact(server, &mut kv, target).await;
        }
    }

    /// Writes and deletes `EDGE_KEY`, then compacts at the delete's revision.
    async fn at_a_delete(&mut self, server: &str, mut kv: KvClient<Channel>) {
        let get = Request::Get {
            key: EDGE_KEY.into(),
            revision: 0,
            serializable: false,
        };
        let mut existing = match self.call(server, &mut kv, get).await {
            Outcome::Ok {
                result: OpResult::Read { kvs, .. },
                ..
            } => kvs.first().map(|kv| kv.mod_revision).unwrap_or(0),
            _ => return,
        };
        if existing == 0 {
            let create = Request::Create {
                key: EDGE_KEY.into(),
                value: format!("compactor tick at {} ns", self.recorder.now_ns()),
            };
            existing = match written(self.call(server, &mut kv, create).await) {
                Some(revision) => revision,
                None => return,
            };
        }
        let delete = Request::Delete {
            key: EDGE_KEY.into(),
            expected_mod_revision: existing,
        };
        if let Some(revision) = written(self.call(server, &mut kv, delete).await) {
            self.compact(server, &mut kv, revision).await;
        }
    }

    /// One recorded KV request (the channel's deadline bounds it, as the workload's).
    async fn call(&self, server: &str, kv: &mut KvClient<Channel>, request: Request) -> Outcome {
        let id = self
            .recorder
            .invoke(&self.cfg.name, server, request.clone());
        let outcome = etcd_call::send(kv, &request).await;
        self.recorder.complete(id, outcome.clone());
        outcome
    }

    async fn compact(&self, server: &str, kv: &mut KvClient<Channel>, revision: i64) {
        let id = self
            .recorder
            .invoke_compaction(&self.cfg.name, server, revision);
        let request = CompactionRequest {
            revision,
            physical: false,
        };
        let outcome = match kv.compact(request).await {
            Ok(_) => "ok".to_string(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        self.recorder.complete_compaction(id, &outcome);
    }
}

/// The revision a guarded write took, when it surely took effect.
fn written(outcome: Outcome) -> Option<i64> {
    match outcome {
        Outcome::Ok {
            header_revision,
            result: OpResult::Write {
                succeeded: true, ..
            },
        } => Some(header_revision),
        _ => None,
    }
}

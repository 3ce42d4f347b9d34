//! Compaction from outside the store, through the etcd API, as live mode needs it (a real etcd
//! compacts only when someone asks it to).
//!
//! Two kinds of tick, alternating as `CompactorConfig::edge_every` says:
//! - **the apiserver's**: a Txn that bumps `compact_rev_key`'s version if it is still the one this
//!   compactor last saw (so several apiservers compact once per interval between them), then a
//!   Compact at the revision the previous tick's Txn answered with: what Kubernetes' compactor
//!   does every `--etcd-compaction-interval`. Such a revision is always that key's own write.
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
use store::proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, CompactionRequest, Compare, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tokio::time::Instant;
use tonic::transport::Channel;

/// The key Kubernetes' compactor keeps its count of compactions in.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";
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
    /// `compact_rev_key`'s version as this compactor last saw it.
    version: i64,
    /// The revision the last apiserver tick's Txn answered with: the next one compacts there.
    revision: i64,
}

pub async fn run_compactor(cfg: CompactorConfig, recorder: Recorder) {
    let mut c = Compactor {
        cfg,
        recorder,
        version: 0,
        revision: 0,
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
        let key = COMPACT_REV_KEY.as_bytes().to_vec();
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::Version(self.version)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.revision.to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let Ok(Ok(answer)) = tokio::time::timeout(self.cfg.timeout, kv.txn(txn)).await else {
            return;
        };
        let answer = answer.into_inner();
        let current = answer.header.map(|h| h.revision).unwrap_or(0);
        if !answer.succeeded {
            // Another compactor went first: take its count, and compact next time.
            self.version = answer
                .responses
                .first()
                .and_then(|r| match &r.response {
                    Some(store::proto::etcdserverpb::response_op::Response::ResponseRange(
                        range,
                    )) => range.kvs.first().map(|kv| kv.version),
                    _ => None,
                })
                .unwrap_or(0);
            self.revision = current;
            return;
        }
        self.version += 1;
        let target = std::mem::replace(&mut self.revision, current);
        // Kubernetes does not compact on its first tick: there is no earlier revision yet.
        if target > 0 {
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

    /// One recorded KV request.
    async fn call(&self, server: &str, kv: &mut KvClient<Channel>, request: Request) -> Outcome {
        let id = self
            .recorder
            .invoke(&self.cfg.name, server, request.clone());
        let outcome =
            match tokio::time::timeout(self.cfg.timeout, etcd_call::send(kv, &request)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let error = "deadline exceeded".to_string();
                    if request.is_write() {
                        Outcome::Unknown { error }
                    } else {
                        Outcome::Failed { error }
                    }
                }
            };
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
        let outcome = match tokio::time::timeout(self.cfg.timeout, kv.compact(request)).await {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => "deadline exceeded".to_string(),
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

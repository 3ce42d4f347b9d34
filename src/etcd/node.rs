//! What runs on an etcd server node: its member, the etcd API, and the apiserver's compactor.
//!
//! A restart calls [`run_etcd_server`] again on the same disk: the member is rebuilt from what
//! the disk kept, everything else starts afresh.

use super::disk::SharedDisk;
use super::member::{start_member, MemberConfig};
use super::service::MemberApi;
use crate::design::Design;
use crate::faults::SharedFaults;
use crate::k3s::etcd_client::EtcdClient;
use crate::observe::{SharedObserver, StoreEvent};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::response_op::Response as OpResponse;
use crate::proto::etcdserverpb::{
    kv_server::KvServer, lease_server::LeaseServer, maintenance_server::MaintenanceServer,
    watch_server::WatchServer, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use std::net::SocketAddr;
use std::time::Duration;

/// The key the Kubernetes apiservers agree on compactions through.
pub const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

#[derive(Clone, Debug)]
pub struct EtcdServerConfig {
    pub member: MemberConfig,
    pub listen: SocketAddr,
    /// How often this node's apiserver compacts (Kubernetes: 5 minutes); `None`: it does not.
    pub compact_interval: Option<Duration>,
    /// Compact straight to the latest revision each interval, as etcd's robustness traffic does,
    /// instead of the apiserver's compare-and-swap on `compact_rev_key`.
    pub compact_at_latest: bool,
    pub request_timeout: Duration,
}

pub async fn run_etcd_server(
    config: EtcdServerConfig,
    design: Design,
    disk: SharedDisk,
    observer: SharedObserver,
    faults: SharedFaults,
) {
    let member = start_member(config.member.clone(), disk, observer.clone(), faults).await;
    if let Some(every) = config.compact_interval {
        let client = EtcdClient::new(vec![config.listen], config.request_timeout);
        if config.compact_at_latest {
            tokio::spawn(compact_latest_loop(client, every, observer));
        } else {
            tokio::spawn(compact_loop(client, every, observer));
        }
    }
    let api = MemberApi {
        member,
        watch_variant: design.watch,
    };
    tonic::transport::Server::builder()
        .add_service(KvServer::new(api.clone()))
        .add_service(WatchServer::new(api.clone()))
        .add_service(LeaseServer::new(api.clone()))
        .add_service(MaintenanceServer::new(api))
        .serve(config.listen)
        .await
        .expect("the etcd API serves until the node dies");
}

/// Compacts to the current revision every interval: the target is often a tombstone at the
/// latest revision, the case etcd #17780 mishandled.
async fn compact_latest_loop(client: EtcdClient, every: Duration, observer: SharedObserver) {
    loop {
        tokio::time::sleep(every).await;
        let Ok(revision) = client.current_revision().await else {
            continue;
        };
        if let Err(e) = client.compact(revision).await {
            observer.record(StoreEvent::MemberCompaction {
                revision,
                phase: format!("request failed: {e}"),
            });
        }
    }
}

/// The Kubernetes apiserver's compactor: each interval, the apiserver that wins a
/// compare-and-swap on `compact_rev_key` compacts to the revision it saw one interval earlier,
/// so every apiserver may run it and only one compacts per interval.
async fn compact_loop(client: EtcdClient, every: Duration, observer: SharedObserver) {
    let mut version = 0;
    let mut revision = 0;
    loop {
        tokio::time::sleep(every).await;
        let txn = TxnRequest {
            compare: vec![Compare {
                key: COMPACT_REV_KEY.to_vec(),
                target: CompareTarget::Version as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::Version(version)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: COMPACT_REV_KEY.to_vec(),
                    value: revision.to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: COMPACT_REV_KEY.to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let Ok(resp) = client.txn(txn).await else {
            continue;
        };
        let now = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if resp.succeeded {
            version += 1;
            if revision > 0 {
                let outcome = client.compact(revision).await;
                observer.record(StoreEvent::MemberCompaction {
                    revision,
                    phase: match outcome {
                        Ok(()) => "requested by apiserver".into(),
                        Err(e) => format!("apiserver request failed: {e}"),
                    },
                });
            }
        } else {
            // Another apiserver compacted: adopt its key version.
            version = resp
                .responses
                .first()
                .and_then(|r| match &r.response {
                    Some(OpResponse::ResponseRange(r)) => r.kvs.first().map(|kv| kv.version),
                    _ => None,
                })
                .unwrap_or(version);
        }
        revision = now;
    }
}

//! The network face of an etcd member (its gRPC services) and the apiserver's compactor.
//!
//! Both run beside a member on a k3s node; neither touches the member's state except through
//! the member's handle or the etcd API.

use super::member::MemberHandle;
use super::service::MemberApi;
use crate::apiserver::CompactRevKey;
use crate::design::WatchVariant;
use crate::k3s::etcd_client::EtcdClient;
use crate::observe::{SharedObserver, StoreEvent};
use crate::proto::etcdserverpb::{
    kv_server::KvServer, lease_server::LeaseServer, maintenance_server::MaintenanceServer,
    watch_server::WatchServer,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves the etcd API of `member` on `listen` until the node dies.
pub async fn serve_member(member: MemberHandle, watch_variant: WatchVariant, listen: SocketAddr) {
    let api = MemberApi {
        member,
        watch_variant,
    };
    tonic::transport::Server::builder()
        .add_service(KvServer::new(api.clone()))
        .add_service(WatchServer::new(api.clone()))
        .add_service(LeaseServer::new(api.clone()))
        .add_service(MaintenanceServer::new(api))
        .serve(listen)
        .await
        .expect("the etcd API serves until the node dies");
}

/// An apiserver's compactor: every `every`, either straight to the latest revision or by the
/// Kubernetes compare-and-swap on `compact_rev_key`.
pub async fn compact_loop(
    client: Arc<EtcdClient>,
    every: Duration,
    at_latest: bool,
    observer: SharedObserver,
) {
    if at_latest {
        compact_latest_loop(&client, every, observer).await
    } else {
        compact_rev_key_loop(&client, every, observer).await
    }
}

/// Compacts to the current revision every interval: the target is often a tombstone at the
/// latest revision, the case etcd #17780 mishandled.
async fn compact_latest_loop(client: &EtcdClient, every: Duration, observer: SharedObserver) {
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
async fn compact_rev_key_loop(client: &EtcdClient, every: Duration, observer: SharedObserver) {
    let mut state = CompactRevKey::default();
    loop {
        tokio::time::sleep(every).await;
        let Ok(resp) = client.txn(state.txn()).await else {
            continue;
        };
        if let Some(revision) = state.answered(&resp) {
            let outcome = client.compact(revision).await;
            observer.record(StoreEvent::MemberCompaction {
                revision,
                phase: match outcome {
                    Ok(()) => "requested by apiserver".into(),
                    Err(e) => format!("apiserver request failed: {e}"),
                },
            });
        }
    }
}

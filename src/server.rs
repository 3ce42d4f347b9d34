//! The etcd v3 gRPC services (KV, Lease, Maintenance) over the kine store.
//!
//! A thin adapter: it converts requests, calls the store and maps errors to etcd's status codes
//! and messages. It holds no state of its own beyond the store handle. Watch answers
//! `unimplemented` until the store's watch exists.

// tonic's `Status` is large and its service traits return it by value.
#![allow(clippy::result_large_err)]

use crate::kine::store::KineStore;
use crate::proto::etcdserverpb::{
    kv_server::Kv, lease_server::Lease, maintenance_server::Maintenance, watch_server::Watch,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    StatusRequest, StatusResponse, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

type Answer<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One handle serves every service of a kine server.
#[derive(Clone)]
pub struct EtcdApi {
    pub store: Arc<KineStore>,
}

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(&self, r: Request<RangeRequest>) -> Answer<RangeResponse> {
        Ok(Response::new(self.store.range(r.get_ref()).await?))
    }

    async fn put(&self, r: Request<PutRequest>) -> Answer<PutResponse> {
        Ok(Response::new(self.store.put(r.get_ref()).await?))
    }

    async fn delete_range(&self, r: Request<DeleteRangeRequest>) -> Answer<DeleteRangeResponse> {
        Ok(Response::new(self.store.delete_range(r.get_ref()).await?))
    }

    async fn txn(&self, r: Request<TxnRequest>) -> Answer<TxnResponse> {
        Ok(Response::new(self.store.txn(r.get_ref()).await?))
    }

    async fn compact(&self, r: Request<CompactionRequest>) -> Answer<CompactionResponse> {
        let current = self.store.compact(r.get_ref()).await?;
        Ok(Response::new(CompactionResponse {
            header: self.store.header(current),
        }))
    }
}

#[tonic::async_trait]
impl Lease for EtcdApi {
    /// kine's lease IDs equal their TTL: there is no lease table, only the number on each key.
    async fn lease_grant(&self, r: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        let ttl = r.get_ref().ttl;
        let (current, _) = self.store.revisions().await?;
        Ok(Response::new(LeaseGrantResponse {
            header: self.store.header(current),
            id: ttl,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(&self, _r: Request<LeaseRevokeRequest>) -> Answer<LeaseRevokeResponse> {
        let (current, _) = self.store.revisions().await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.store.header(current),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let header = self.store.header(0);
        let answers = r.into_inner().map(move |req| {
            req.map(|req| LeaseKeepAliveResponse {
                header,
                id: req.id,
                ttl: req.id,
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn status(&self, _r: Request<StatusRequest>) -> Answer<StatusResponse> {
        let (current, _) = self.store.revisions().await?;
        let header = self.store.header(current);
        let member = header.as_ref().map(|h| h.member_id).unwrap_or(0);
        Ok(Response::new(StatusResponse {
            header,
            version: "3.5.0-kine".into(),
            leader: member,
            raft_index: current as u64,
            raft_applied_index: current as u64,
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, _r: Request<Streaming<WatchRequest>>) -> Answer<Self::WatchStream> {
        Err(Status::unimplemented(
            "faultline's kine store does not serve Watch yet",
        ))
    }
}

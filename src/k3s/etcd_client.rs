//! An apiserver's etcd client: the etcd endpoints it knows, tried in turn.
//!
//! It stays on the endpoint that last answered and moves to the next on an error or a deadline,
//! as k3s's local etcd load balancer and etcd's client do. Errors carry etcd's own messages back
//! as [`StoreError`]s, so the facade maps them as it maps kine's.

use crate::error::{StoreError, COMPACTED, FUTURE_REV};
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{
    CompactionRequest, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse,
};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Channel;

pub struct EtcdClient {
    endpoints: Vec<SocketAddr>,
    timeout: Duration,
    /// Index of the endpoint in use and its open channel.
    current: Mutex<(usize, Option<Channel>)>,
}

fn store_error(status: &tonic::Status) -> StoreError {
    match status.message() {
        COMPACTED => StoreError::Compacted,
        FUTURE_REV => StoreError::FutureRevision,
        _ => StoreError::OutcomeUnknown,
    }
}

impl EtcdClient {
    pub fn new(endpoints: Vec<SocketAddr>, timeout: Duration) -> Self {
        assert!(!endpoints.is_empty(), "an etcd client needs an endpoint");
        EtcdClient {
            endpoints,
            timeout,
            current: Mutex::new((0, None)),
        }
    }

    async fn channel(&self) -> Result<(usize, KvClient<Channel>), StoreError> {
        let (at, ch) = self.open().await?;
        Ok((at, KvClient::new(ch)))
    }

    /// The endpoint in use and its channel, connecting to the next endpoint when needed.
    async fn open(&self) -> Result<(usize, Channel), StoreError> {
        for _ in 0..self.endpoints.len() {
            let (at, open) = self.current.lock().expect("client lock poisoned").clone();
            if let Some(ch) = open {
                return Ok((at, ch));
            }
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.endpoints[at]))
                    .expect("endpoint addresses are valid URIs")
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout);
            match endpoint.connect().await {
                Ok(ch) => {
                    *self.current.lock().expect("client lock poisoned") = (at, Some(ch.clone()));
                    return Ok((at, ch));
                }
                Err(_) => self.fail(at),
            }
        }
        Err(StoreError::OutcomeUnknown)
    }

    /// Drops the channel to endpoint `at` and moves on to the next one.
    pub fn fail(&self, at: usize) {
        let mut cur = self.current.lock().expect("client lock poisoned");
        if cur.0 == at {
            *cur = ((at + 1) % self.endpoints.len(), None);
        }
    }

    fn failed(&self, at: usize, status: &tonic::Status) -> StoreError {
        let e = store_error(status);
        if e == StoreError::OutcomeUnknown {
            self.fail(at);
        }
        e
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let (at, mut kv) = self.channel().await?;
        kv.range(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.failed(at, &s))
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        let (at, mut kv) = self.channel().await?;
        kv.txn(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.failed(at, &s))
    }

    /// Opens a Watch stream on the endpoint in use, sending `requests`; returns the endpoint's
    /// index (for [`EtcdClient::fail`]) and the responses.
    pub async fn watch(
        &self,
        requests: impl futures::Stream<Item = WatchRequest> + Send + 'static,
    ) -> Result<(usize, tonic::Streaming<WatchResponse>), StoreError> {
        let (at, channel) = self.open().await?;
        WatchClient::new(channel)
            .watch(requests)
            .await
            .map(|r| (at, r.into_inner()))
            .map_err(|s| self.failed(at, &s))
    }

    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let (at, mut kv) = self.channel().await?;
        kv.compact(CompactionRequest {
            revision,
            physical: false,
        })
        .await
        .map(|_| ())
        .map_err(|s| self.failed(at, &s))
    }

    /// The store revision, by a linearizable read of one key.
    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        let resp = self
            .range(RangeRequest {
                key: b"/registry/health".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }
}

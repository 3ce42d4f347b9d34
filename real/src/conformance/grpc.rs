//! A side reached over gRPC, as any etcd client reaches a server: real etcd, or faultline-store.
//!
//! Each watch gets a stream of its own; a reader task keeps every response in order, and the
//! suite waits on that log for the answer it needs (created, a progress notification) with a
//! deadline, so a server that never answers is reported, never waited on for ever.

use crate::answer::{Answer, Cancel, WatchOutcome};
use crate::ops::{Op, Request};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, Notify};
use tonic::transport::Channel;

/// How long one request may take before the side counts as silent.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

pub struct GrpcSide {
    pub(crate) channel: Channel,
    kv: KvClient<Channel>,
    watches: BTreeMap<usize, Stream>,
    /// The IDs this side gave the sequence's lease grants.
    pub leases: crate::lease::Grants,
}

struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    log: Arc<Mutex<Vec<WatchResponse>>>,
    arrived: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
}

fn is_progress(r: &WatchResponse) -> bool {
    r.events.is_empty() && !r.created && !r.canceled && r.compact_revision == 0
}

impl Stream {
    /// Waits until `seen` finds what it looks for in the responses so far, re-reading the log
    /// each time a response arrives, for at most `deadline`.
    async fn wait_until<T>(
        &self,
        deadline: Duration,
        seen: impl Fn(&[WatchResponse]) -> Option<T>,
    ) -> Option<T> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = seen(&self.log.lock().unwrap()) {
                return Some(found);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until a response after the first `after` ones satisfies `want`.
    async fn wait_for(
        &self,
        after: usize,
        want: impl Fn(&WatchResponse) -> bool,
        deadline: Duration,
    ) -> Option<WatchResponse> {
        self.wait_until(deadline, |log| {
            log.iter().skip(after).find(|r| want(r)).cloned()
        })
        .await
    }

    /// Sends a progress request and waits for the notification that answers it.
    async fn progress(&self) -> Answer {
        let after = self.log.lock().unwrap().len();
        let request = WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        };
        if self.requests.send(request).await.is_err() {
            return Answer::Silent("the watch stream is closed".into());
        }
        match self.wait_for(after, is_progress, REQUEST_DEADLINE).await {
            Some(r) => Answer::Progress(r),
            None => Answer::no_progress(REQUEST_DEADLINE),
        }
    }
}

impl GrpcSide {
    pub async fn connect(addr: &str) -> anyhow::Result<GrpcSide> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(REQUEST_DEADLINE)
            .connect()
            .await?;
        Ok(GrpcSide {
            kv: KvClient::new(channel.clone()),
            channel,
            watches: BTreeMap::new(),
            leases: Default::default(),
        })
    }

    pub async fn apply(&mut self, op: &Op) -> Answer {
        match (op, op.request()) {
            (_, Some(request)) => self.kv(request).await,
            (Op::Watch { watch, create }, None) => {
                let request = WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create.clone())),
                };
                self.watch(*watch, request).await
            }
            (Op::Progress { watch }, None) => match self.watches.get(watch) {
                Some(stream) => stream.progress().await,
                None => Answer::Silent(format!("watch#{watch} never opened")),
            },
            (Op::Lease(lease), None) => crate::lease::apply_grpc(self, lease).await,
            (op, None) => unreachable!("{op} has a request"),
        }
    }

    pub(crate) async fn kv(&mut self, request: Request) -> Answer {
        let kv = &mut self.kv;
        let call = async {
            match request {
                Request::Range(r) => kv.range(r).await.map(|r| Answer::Range(r.into_inner())),
                Request::Put(p) => kv.put(p).await.map(|r| Answer::Put(r.into_inner())),
                Request::Delete(d) => kv
                    .delete_range(d)
                    .await
                    .map(|r| Answer::Delete(r.into_inner())),
                Request::Txn(t) => kv.txn(t).await.map(|r| Answer::Txn(r.into_inner())),
                Request::Compact(c) => kv.compact(c).await.map(|r| Answer::Compact(r.into_inner())),
            }
        };
        match tokio::time::timeout(REQUEST_DEADLINE, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) => Answer::from_status(&status),
            Err(_) => Answer::Silent(format!("no answer within {} s", REQUEST_DEADLINE.as_secs())),
        }
    }

    async fn watch(&mut self, id: usize, create: WatchRequest) -> Answer {
        let (requests, mut queue) = mpsc::channel::<WatchRequest>(16);
        requests.send(create).await.expect("the queue is open");
        let outbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
        let opened = tokio::time::timeout(
            REQUEST_DEADLINE,
            WatchClient::new(self.channel.clone()).watch(outbound),
        )
        .await;
        let mut inbound = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Answer::from_status(&status),
            Err(_) => return Answer::Silent("the watch stream did not open".into()),
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let reader = {
            let (log, arrived) = (log.clone(), arrived.clone());
            tokio::spawn(async move {
                while let Ok(Some(r)) = inbound.message().await {
                    log.lock().unwrap().push(r);
                    arrived.notify_waiters();
                }
            })
        };
        let stream = Stream {
            requests,
            log,
            arrived,
            reader,
        };
        let created = stream.wait_for(0, |r| r.created, REQUEST_DEADLINE).await;
        self.watches.insert(id, stream);
        match created {
            Some(r) => Answer::Created(r),
            None => Answer::Silent("no created response".into()),
        }
    }

    /// Makes sure watch `id` has caught up with the store: a progress request answered. For
    /// faultline-store that is exact (it answers only once its watchers are synced); etcd 3.4
    /// answers at once, so the caller also waits out etcd's watcher sync period.
    pub async fn fence(&self, id: usize) {
        if let Some(stream) = self.watches.get(&id) {
            let _ = stream.progress().await;
        }
    }

    /// Waits until watch `id` has delivered at least `events` events, or been cancelled when
    /// `cancelled`; a side that falls short is compared as it is after the deadline.
    pub async fn wait_delivered(&self, id: usize, events: usize, cancelled: bool) {
        if let Some(stream) = self.watches.get(&id) {
            stream
                .wait_until(REQUEST_DEADLINE, |log| {
                    let delivered: usize = log.iter().map(|r| r.events.len()).sum();
                    let cancel = log.iter().any(|r| r.canceled);
                    (delivered >= events && (cancel || !cancelled)).then_some(())
                })
                .await;
        }
    }

    /// Everything watch `id` delivered: its events in order and its cancellation.
    pub fn outcome(&self, id: usize) -> Answer {
        let Some(stream) = self.watches.get(&id) else {
            return Answer::Silent(format!("watch#{id} never opened"));
        };
        let log = stream.log.lock().unwrap();
        let mut outcome = WatchOutcome::default();
        for r in log.iter() {
            outcome.events.extend(r.events.iter().cloned());
            if r.canceled && outcome.cancel.is_none() {
                outcome.cancel = Some(Cancel {
                    compact_revision: r.compact_revision,
                    reason: r.cancel_reason.clone(),
                });
            }
        }
        Answer::Watch(outcome)
    }
}

impl Drop for GrpcSide {
    fn drop(&mut self) {
        for stream in self.watches.values() {
            stream.reader.abort();
        }
    }
}

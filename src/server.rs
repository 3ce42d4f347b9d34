//! The etcd v3 gRPC services (KV, Watch, Lease, Maintenance) over the kine store.
//!
//! A thin adapter: it converts requests, calls the store and maps errors to etcd's status codes
//! and messages. Watch streams run one task per stream and one per watcher; the store's watch
//! hub decides what they see.

// tonic's `Status` is large and its service traits return it by value.
#![allow(clippy::result_large_err)]

use crate::kine::sql::{End, Row};
use crate::kine::store::{to_kv, KineStore};
use crate::kine::watch::{run_watcher, WatchEnd, WatchHub, WatchItem};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    kv_server::{Kv, KvServer},
    lease_server::{Lease, LeaseServer},
    maintenance_server::{Maintenance, MaintenanceServer},
    watch_server::{Watch, WatchServer},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
    WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

type Answer<T> = Result<Response<T>, Status>;
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One handle serves every service of a kine server.
#[derive(Clone)]
pub struct EtcdApi {
    pub store: Arc<KineStore>,
    pub hub: Arc<WatchHub>,
}

impl EtcdApi {
    /// The four services, ready to serve on an address (simulator) or a listener (real server).
    pub fn router(self) -> tonic::transport::server::Router {
        self.router_on(tonic::transport::Server::builder())
    }

    /// The four services on a server the caller configured (the real server's TLS).
    pub fn router_on(
        self,
        mut server: tonic::transport::Server,
    ) -> tonic::transport::server::Router {
        server
            .add_service(KvServer::new(self.clone()))
            .add_service(LeaseServer::new(self.clone()))
            .add_service(MaintenanceServer::new(self.clone()))
            .add_service(WatchServer::new(self))
    }
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
    /// Leases follow etcd 3.4 over the database (`kine/lease.rs`); every lease call also makes
    /// sure this server runs its expiry loop.
    async fn lease_grant(&self, r: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        self.store.leases_in_use();
        Ok(Response::new(self.store.lease_grant(r.get_ref()).await?))
    }

    async fn lease_revoke(&self, r: Request<LeaseRevokeRequest>) -> Answer<LeaseRevokeResponse> {
        self.store.leases_in_use();
        Ok(Response::new(self.store.lease_revoke(r.get_ref()).await?))
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    /// Each request renews its lease and is answered in order (TTL 0: the lease is gone). A
    /// database failure ends the stream with its error, as etcd's does.
    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let store = self.store.clone();
        store.leases_in_use();
        let answers = r.into_inner().then(move |req| {
            let store = store.clone();
            async move {
                match req {
                    Ok(req) => Ok(store.lease_renew(req.id).await?),
                    Err(status) => Err(status),
                }
            }
        });
        let until_error = answers.scan(false, |failed, answer| {
            let end = *failed;
            *failed = answer.is_err();
            futures::future::ready((!end).then_some(answer))
        });
        Ok(Response::new(Box::pin(until_error)))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Answer<LeaseTimeToLiveResponse> {
        self.store.leases_in_use();
        Ok(Response::new(
            self.store.lease_time_to_live(r.get_ref()).await?,
        ))
    }

    async fn lease_leases(&self, _r: Request<LeaseLeasesRequest>) -> Answer<LeaseLeasesResponse> {
        self.store.leases_in_use();
        Ok(Response::new(self.store.lease_leases().await?))
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

/// A row as a watch event. A delete's key-value carries only the key and revision, as etcd's
/// tombstones do; `prev_kv` comes from the row's old value.
fn event_of(row: &Row, with_prev: bool) -> Event {
    let kv = if row.deleted {
        KeyValue {
            key: row.name.clone().into_bytes(),
            mod_revision: row.id,
            ..Default::default()
        }
    } else {
        to_kv(row, false)
    };
    let prev_kv = (with_prev && !row.created && row.prev_revision > 0).then(|| KeyValue {
        key: row.name.clone().into_bytes(),
        create_revision: row.create_revision,
        mod_revision: row.prev_revision,
        version: 1,
        value: row.old_value.clone(),
        lease: 0,
    });
    Event {
        r#type: if row.deleted {
            EventType::Delete
        } else {
            EventType::Put
        } as i32,
        kv: Some(kv),
        prev_kv,
    }
}

/// The stream's client went away: nothing more can be sent on it.
#[derive(Debug)]
pub(crate) struct StreamClosed;

/// A watch stream's outgoing responses, shared by its watchers and its dispatcher. It keeps the
/// highest event revision handed to the stream, so that a progress notification never names a
/// revision below an event already sent: etcd's names the store revision when it is sent, and
/// its synced watchers have queued every event up to that revision before it.
#[derive(Clone)]
pub(crate) struct Outbox {
    responses: tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>,
    sent_revision: Arc<AtomicI64>,
    /// The watches that sent events since the last periodic progress round (`progress_notify`).
    sent_events: Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>,
}

impl Outbox {
    fn new(responses: tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>) -> Self {
        Outbox {
            responses,
            sent_revision: Arc::new(AtomicI64::new(0)),
            sent_events: Arc::default(),
        }
    }

    /// Queues one response for the client.
    pub(crate) async fn send(
        &self,
        response: Result<WatchResponse, Status>,
    ) -> Result<(), StreamClosed> {
        if let Ok(r) = &response {
            let newest = r.events.iter().filter_map(|e| e.kv.as_ref());
            if let Some(rev) = newest.map(|kv| kv.mod_revision).max() {
                // Counted before the send waits for room: a progress notification racing it
                // sees it already and waits for the next round.
                self.sent_revision.fetch_max(rev, Ordering::SeqCst);
                self.sent_events
                    .lock()
                    .expect("sent events lock poisoned")
                    .insert(r.watch_id);
            }
        }
        self.responses
            .send(response)
            .await
            .map_err(|_| StreamClosed)
    }

    /// The watches that sent events since the last call.
    fn take_sent_events(&self) -> std::collections::BTreeSet<i64> {
        std::mem::take(&mut *self.sent_events.lock().expect("sent events lock poisoned"))
    }

    /// The highest revision of an event handed to the stream so far.
    fn sent_revision(&self) -> i64 {
        self.sent_revision.load(Ordering::SeqCst)
    }

    fn is_closed(&self) -> bool {
        self.responses.is_closed()
    }

    /// Queues a progress notification at `revision` unless an event above it has been handed
    /// to the stream; returns whether it was queued. The check and the queueing happen in one
    /// step, with room in the stream already reserved.
    async fn send_progress(
        &self,
        header: Option<ResponseHeader>,
        revision: i64,
    ) -> Result<bool, StreamClosed> {
        self.send_progress_of(STREAM_WATCH_ID, header, revision)
            .await
    }

    /// The same for one watch's periodic notification, under its own id.
    async fn send_progress_of(
        &self,
        watch_id: i64,
        header: Option<ResponseHeader>,
        revision: i64,
    ) -> Result<bool, StreamClosed> {
        let permit = self.responses.reserve().await.map_err(|_| StreamClosed)?;
        if self.sent_revision() > revision {
            crate::probe!("watch.progress.overtaken_by_event");
            return Ok(false);
        }
        permit.send(Ok(WatchResponse {
            watch_id,
            ..progress_notification(header)
        }));
        Ok(true)
    }
}

/// A progress probe: the watcher answers with the revision up to which it has handed every
/// event in its range to the stream's outbox.
pub(crate) type Probe = tokio::sync::oneshot::Sender<i64>;

/// The watch id of a progress notification: etcd answers a progress request once for the whole
/// stream, not per watcher.
pub const STREAM_WATCH_ID: i64 = -1;

/// etcd's answer to a progress request: one response for the stream, at a revision up to which
/// every watcher on it has delivered everything (etcd 3.4.24+/3.5.8+, where a request waits for
/// unsynced watchers; etcd 3.4.23 could answer before them, #15220).
pub fn progress_notification(header: Option<ResponseHeader>) -> WatchResponse {
    WatchResponse {
        header,
        watch_id: STREAM_WATCH_ID,
        ..Default::default()
    }
}

/// The response that ends a watch whose start revision was compacted. etcd sets only the compact
/// revision (its client turns that into its compacted error) and no cancel reason.
pub fn compacted_cancel(
    header: Option<ResponseHeader>,
    watch_id: i64,
    compact_revision: i64,
) -> WatchResponse {
    WatchResponse {
        header,
        watch_id,
        canceled: true,
        compact_revision,
        ..Default::default()
    }
}

impl EtcdApi {
    /// Runs one watcher and forwards what it yields as responses of `watch_id`; answers each
    /// probe once every row before it has been forwarded.
    fn spawn_watcher(
        &self,
        watch_id: i64,
        create: crate::proto::etcdserverpb::WatchCreateRequest,
        mut probes: tokio::sync::mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        let (store, hub) = (self.store.clone(), self.hub.clone());
        tokio::spawn(async move {
            let key = String::from_utf8_lossy(&create.key).into_owned();
            let end = match create.range_end.as_slice() {
                [] => None,
                [0] => Some(End::Unbounded),
                e => Some(End::Exclusive(String::from_utf8_lossy(e).into_owned())),
            };
            let no_put = create.filters.contains(&(FilterType::Noput as i32));
            let no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
            let (items_tx, mut items) = tokio::sync::mpsc::channel(64);
            let (progress, progress_rx) = tokio::sync::mpsc::channel(4);
            let watcher = run_watcher(
                store.clone(),
                hub.clone(),
                key,
                end,
                create.start_revision,
                progress_rx,
                items_tx,
            );
            // The probe the watcher has been asked and not answered yet: a stream probes each
            // watcher once at a time. Kept until the watcher's end response is queued: a probe
            // dropped earlier would let a progress notification overtake that response and claim
            // revisions the watcher never delivered (a start compacted meanwhile).
            let mut waiting: Option<Probe> = None;
            let forward = async {
                loop {
                    tokio::select! {
                        biased;
                        item = items.recv() => match item {
                            None => return,
                            Some(WatchItem::Rows(rows)) => {
                                let last = rows.last().map(|r| r.id).unwrap_or(0);
                                let events = rows
                                    .iter()
                                    .filter(|r| !(r.deleted && no_delete || !r.deleted && no_put))
                                    .map(|r| event_of(r, create.prev_kv))
                                    .collect::<Vec<_>>();
                                if events.is_empty() {
                                    continue;
                                }
                                let resp = WatchResponse {
                                    header: store.header(last),
                                    watch_id,
                                    events,
                                    ..Default::default()
                                };
                                if outbox.send(Ok(resp)).await.is_err() {
                                    return;
                                }
                            }
                            Some(WatchItem::Progress(upto)) => {
                                if let Some(probe) = waiting.take() {
                                    let _ = probe.send(upto);
                                }
                            }
                        },
                        probe = probes.recv() => match probe {
                            Some(probe) if progress.try_send(()).is_ok() => waiting = Some(probe),
                            Some(_) | None => {}
                        },
                    }
                }
            };
            // The watcher ends (and drops its sender) before the forwarder drains and stops.
            let (end, ()) = futures::join!(watcher, forward);
            let header = store.header(kine_current_revision(&store, &hub).await);
            let resp = match end {
                WatchEnd::Compacted { compact_revision } => {
                    compacted_cancel(header, watch_id, compact_revision)
                }
                WatchEnd::Lagged => WatchResponse {
                    header,
                    watch_id,
                    canceled: true,
                    cancel_reason: "watcher fell behind; resume from the last revision".into(),
                    ..Default::default()
                },
                WatchEnd::Failed(e) => WatchResponse {
                    header,
                    watch_id,
                    canceled: true,
                    cancel_reason: e.to_string(),
                    ..Default::default()
                },
            };
            let _ = outbox.send(Ok(resp)).await;
            drop(waiting);
        })
    }
}

/// The store's current revision, or the poller's when the database cannot say.
async fn kine_current_revision(store: &KineStore, hub: &WatchHub) -> i64 {
    store
        .revisions()
        .await
        .map(|(c, _)| c)
        .unwrap_or_else(|_| hub.polled())
}

/// How often a progress request re-probes watchers that have not caught up yet.
const PROGRESS_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// What a watch stream's dispatcher needs from the server behind it.
pub(crate) trait WatchBackend: Clone + Send + Sync + 'static {
    /// The store's current revision: a created response's, and a progress request's target.
    fn current_revision(&self) -> impl std::future::Future<Output = i64> + Send;
    fn header(&self, revision: i64) -> Option<ResponseHeader>;
    /// Starts one watcher that sends its responses (tagged `watch_id`) to `outbox` and answers
    /// `probes`.
    fn start_watcher(
        &self,
        watch_id: i64,
        create: crate::proto::etcdserverpb::WatchCreateRequest,
        probes: tokio::sync::mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()>;
}

/// A watcher as a progress request sees it: where to probe it, and the start revision its
/// create request asked for (0 for a watch from now).
type Probed = (tokio::sync::mpsc::Sender<Probe>, i64);

/// Answers one progress request: the current revision once every watcher has delivered up to
/// it and has reached its start revision, probing again while any has not (etcd defers it the
/// same way, #20229: a member behind a watch's start never answers with a revision below it).
/// Ends when answered or when the stream closes.
async fn answer_progress<B: WatchBackend>(backend: B, probes: Vec<Probed>, outbox: Outbox) {
    loop {
        // Never below an event already sent on the stream: a watcher may have sent events past
        // the store revision this request first saw (etcd names the revision at sending).
        let target = backend.current_revision().await.max(outbox.sent_revision());
        let mut synced = true;
        for (watcher, start_revision) in &probes {
            let (probe, answer) = tokio::sync::oneshot::channel();
            if watcher.send(probe).await.is_err() {
                continue; // the watcher ended: it has nothing more to deliver
            }
            let behind = answer.await.is_ok_and(|upto| upto < target);
            if target < *start_revision {
                crate::probe!("watch.progress.deferred_below_start_revision");
            }
            if behind || target < *start_revision {
                crate::probe!("watch.progress.deferred");
                synced = false;
            }
        }
        if synced {
            match outbox.send_progress(backend.header(target), target).await {
                Ok(true) | Err(StreamClosed) => return,
                // An event above the target went out after its watcher answered: every
                // watcher is probed again at a target that covers it.
                Ok(false) => continue,
            }
        }
        if outbox.is_closed() {
            return;
        }
        tokio::time::sleep(PROGRESS_RETRY).await;
    }
}

/// How often a watch created with `progress_notify` hears of progress while it has no events:
/// etcd's default (`--experimental-watch-progress-notify-interval`, 10 minutes).
pub const PROGRESS_NOTIFY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// One periodic progress notification of watch `watch_id`, as etcd sends it: under the watch's
/// own id, at the current revision, and only when the watcher has delivered everything up to
/// it (a watcher still catching up is skipped this round) and reached its start revision.
async fn notify_progress<B: WatchBackend>(
    backend: B,
    watch_id: i64,
    (watcher, start_revision): Probed,
    outbox: Outbox,
) {
    let target = backend.current_revision().await;
    let (probe, answer) = tokio::sync::oneshot::channel();
    if target < start_revision || watcher.send(probe).await.is_err() {
        return;
    }
    if answer.await.is_ok_and(|upto| upto >= target) {
        // Skipped, like a watcher behind, if an event above the target went out meanwhile.
        let _ = outbox
            .send_progress_of(watch_id, backend.header(target), target)
            .await;
    }
}

/// Serves one etcd Watch stream: creates, cancels and progress requests multiplexed over it,
/// one task per watcher, all stopped when the client goes away. Shared by kine and etcd members.
pub(crate) fn serve_watch_stream<B: WatchBackend>(
    backend: B,
    inbound: impl Stream<Item = Result<WatchRequest, Status>> + Send + 'static,
) -> BoxStream<WatchResponse> {
    let mut inbound = Box::pin(inbound);
    let (responses_tx, mut responses) = tokio::sync::mpsc::channel(256);
    let outbox = Outbox::new(responses_tx);
    tokio::spawn(async move {
        let mut watchers: BTreeMap<i64, (tokio::task::JoinHandle<()>, Probed)> = BTreeMap::new();
        let mut next_id = 0;
        // One progress request is answered at a time; those arriving while it waits share its
        // answer.
        let mut progress: Option<tokio::task::JoinHandle<()>> = None;
        // Watches created with progress_notify, and the timer of their periodic notifications
        // (made with the first such watch, so a stream without one sets no timer).
        let mut notified: BTreeMap<i64, Probed> = BTreeMap::new();
        let mut ticker: Option<tokio::time::Interval> = None;
        loop {
            let next_tick = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let req = tokio::select! {
                biased;
                req = inbound.next() => match req {
                    Some(Ok(req)) => req,
                    _ => break,
                },
                () = next_tick => {
                    // A watch that sent events in the last interval needs no notification.
                    let quiet = outbox.take_sent_events();
                    for (id, probed) in notified.iter().filter(|(id, _)| !quiet.contains(id)) {
                        let outbox = outbox.clone();
                        tokio::spawn(notify_progress(backend.clone(), *id, probed.clone(), outbox));
                    }
                    continue;
                }
            };
            match req.request_union {
                Some(RequestUnion::CreateRequest(mut create)) => {
                    let watch_id = if create.watch_id != 0 {
                        create.watch_id
                    } else {
                        next_id
                    };
                    let refused = if watchers.contains_key(&watch_id) {
                        Some((-1, "mvcc: duplicate watch ID provided on the WatchStream"))
                    } else if !matches!(create.range_end.as_slice(), [] | [0])
                        && create.key >= create.range_end
                    {
                        Some((watch_id, "mvcc: watcher range is empty"))
                    } else {
                        None
                    };
                    let now = backend.current_revision().await;
                    if let Some((watch_id, reason)) = refused {
                        // etcd answers a watch it cannot create as created and cancelled.
                        let resp = WatchResponse {
                            header: backend.header(now),
                            watch_id,
                            created: true,
                            canceled: true,
                            cancel_reason: reason.into(),
                            ..Default::default()
                        };
                        if outbox.send(Ok(resp)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    next_id = next_id.max(watch_id + 1);
                    let requested_start = create.start_revision;
                    // A watch from now starts after the revision its created response names,
                    // fixed before that response goes out: a write the client makes once it
                    // has seen the response is never missed (etcd registers the watcher first).
                    if create.start_revision == 0 {
                        create.start_revision = now + 1;
                    }
                    let created = WatchResponse {
                        header: backend.header(now),
                        watch_id,
                        created: true,
                        ..Default::default()
                    };
                    if outbox.send(Ok(created)).await.is_err() {
                        break;
                    }
                    let (probes, probes_rx) = tokio::sync::mpsc::channel(1);
                    if create.progress_notify {
                        notified.insert(watch_id, (probes.clone(), requested_start));
                        ticker.get_or_insert_with(|| {
                            let first = tokio::time::Instant::now() + PROGRESS_NOTIFY_INTERVAL;
                            tokio::time::interval_at(first, PROGRESS_NOTIFY_INTERVAL)
                        });
                    }
                    let task = backend.start_watcher(watch_id, create, probes_rx, outbox.clone());
                    watchers.insert(watch_id, (task, (probes, requested_start)));
                }
                Some(RequestUnion::CancelRequest(cancel)) => {
                    notified.remove(&cancel.watch_id);
                    if let Some((task, _)) = watchers.remove(&cancel.watch_id) {
                        crate::probe!("watch.cancelled_by_client");
                        task.abort();
                        // A progress answer still pending counted this watch, whose task just
                        // stopped wherever it was: sent ahead of the cancel's answer, it would
                        // tell the client this watch had delivered everything up to it. It is
                        // asked again, of the watches left, once the cancel is answered.
                        let pending = progress.take().filter(|p| !p.is_finished());
                        if let Some(p) = &pending {
                            p.abort();
                        }
                        let _ = outbox
                            .send(Ok(WatchResponse {
                                header: backend.header(backend.current_revision().await),
                                watch_id: cancel.watch_id,
                                canceled: true,
                                ..Default::default()
                            }))
                            .await;
                        if pending.is_some() {
                            let probes = watchers.values().map(|(_, p)| p.clone()).collect();
                            progress = Some(tokio::spawn(answer_progress(
                                backend.clone(),
                                probes,
                                outbox.clone(),
                            )));
                        }
                    }
                }
                Some(RequestUnion::ProgressRequest(_))
                    if progress.as_ref().is_none_or(|p| p.is_finished()) =>
                {
                    let probes = watchers.values().map(|(_, p)| p.clone()).collect();
                    progress = Some(tokio::spawn(answer_progress(
                        backend.clone(),
                        probes,
                        outbox.clone(),
                    )));
                }
                // A progress request while one is pending is answered by that one.
                Some(RequestUnion::ProgressRequest(_)) => crate::probe!("watch.progress.shared"),
                None => {}
            }
        }
        for (task, _) in watchers.into_values() {
            task.abort();
        }
        if let Some(p) = progress {
            p.abort();
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| responses.poll_recv(cx)))
}

impl WatchBackend for EtcdApi {
    async fn current_revision(&self) -> i64 {
        kine_current_revision(&self.store, &self.hub).await
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        self.store.header(revision)
    }

    fn start_watcher(
        &self,
        watch_id: i64,
        create: crate::proto::etcdserverpb::WatchCreateRequest,
        probes: tokio::sync::mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_watcher(watch_id, create, probes, outbox)
    }
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, r: Request<Streaming<WatchRequest>>) -> Answer<Self::WatchStream> {
        Ok(Response::new(serve_watch_stream(
            self.clone(),
            r.into_inner(),
        )))
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

//! The facade's WATCH and WatchList: validation, initial events, then the backend's changes.
//!
//! One serving path for both backends: a backend only supplies a [`Feed`] (kine's in-process
//! watcher over its poller, or an etcd Watch stream through the apiserver's etcd client) and the
//! revision whose state can no longer change; validation, initial events, bookmarks and the
//! 410 on a compacted start are decided here once. It never writes to the store.

use super::{
    prefix_end, resource_prefix, ApiServer, Backend, EventType, Object, Status, WatchMessage,
    WatchRequest, BOOKMARK_EVERY,
};
use crate::design::WatchListVariant;
use crate::k3s::etcd_client::EtcdClient;
use crate::kine::sql::{End, Row};
use crate::kine::store::KineStore;
use crate::kine::watch::{run_watcher, WatchEnd, WatchHub, WatchItem};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    RangeRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest as EtcdWatchRequest,
    WatchResponse,
};
use crate::proto::mvccpb::event::EventType as EtcdEventType;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a backend's watch hands the facade, in revision order.
#[derive(Debug)]
enum Feed {
    /// The changes of one or more revisions, ascending.
    Changes(Vec<(EventType, Object)>),
    /// Every change up to this revision has been handed over.
    Progress(i64),
    /// The watch ended; the status says why (410 Expired for a compacted start).
    End(Status),
}

/// How long a bookmark request may go unanswered before the backend's stream is given up
/// (an etcd stream cut off by a partition stalls rather than breaks).
const FEED_STALLED: Duration = Duration::from_secs(12);

fn expired(start_after: i64, compact_revision: i64) -> Status {
    crate::probe!("api.watch.expired_410");
    Status::new(
        410,
        "Expired",
        format!("too old resource version: {start_after} ({compact_revision})"),
    )
}

fn bookmark(rv: i64, initial_events_end: bool) -> WatchMessage {
    WatchMessage::Event {
        kind: EventType::Bookmark,
        object: Object {
            key: String::new(),
            resource_version: rv,
            value: String::new(),
        },
        initial_events_end,
    }
}

/// Aborts the feed's task when the stream it serves ends, however it ends.
struct FeedTask(tokio::task::JoinHandle<()>);

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Backend {
    /// Starts this backend's watch of `prefix` from `start_revision` (inclusive); a message on
    /// `progress` asks for a [`Feed::Progress`].
    fn feed(
        &self,
        prefix: &str,
        start_revision: i64,
        progress: mpsc::Receiver<()>,
    ) -> (FeedTask, mpsc::Receiver<Feed>) {
        let (out, feed) = mpsc::channel(256);
        let prefix = prefix.to_string();
        let task = match self {
            Backend::Kine { store, hub } => tokio::spawn(kine_feed(
                store.clone(),
                hub.clone(),
                prefix,
                start_revision,
                progress,
                out,
            )),
            Backend::Etcd(client) => tokio::spawn(etcd_feed(
                client.clone(),
                prefix,
                start_revision,
                progress,
                out,
            )),
        };
        (FeedTask(task), feed)
    }

    /// The newest revision whose state can no longer change, once it is at least `required`
    /// (waiting a bounded while for it): kine's poller must have settled every id up to it, as
    /// the watch cache would; an etcd linearizable read's revision is settled by definition.
    async fn settled_revision(&self, required: i64) -> Result<i64, Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let settled = match self {
                Backend::Kine { hub, .. } => hub.polled(),
                Backend::Etcd(c) => c
                    .current_revision()
                    .await
                    .map_err(|e| Status::from_store(&e))?,
            };
            if settled >= required {
                return Ok(settled);
            }
            crate::probe!("api.watchlist.waited_for_watch_cache");
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {required}, current: {settled}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn change_of_row(row: &Row) -> (EventType, Object) {
    let kind = if row.deleted {
        EventType::Deleted
    } else if row.created {
        EventType::Added
    } else {
        EventType::Modified
    };
    let object = Object {
        key: row.name.clone(),
        resource_version: row.id,
        value: String::from_utf8_lossy(&row.value).into_owned(),
    };
    (kind, object)
}

/// kine: the server's own watcher over its poller, rows turned into changes.
async fn kine_feed(
    store: Arc<KineStore>,
    hub: Arc<WatchHub>,
    prefix: String,
    start_revision: i64,
    progress: mpsc::Receiver<()>,
    out: mpsc::Sender<Feed>,
) {
    let end = End::Exclusive(String::from_utf8_lossy(&prefix_end(&prefix)).into_owned());
    let (items_tx, mut items) = mpsc::channel(256);
    let watcher = run_watcher(
        store,
        hub,
        prefix,
        Some(end),
        start_revision,
        progress,
        items_tx,
    );
    let forward = async {
        while let Some(item) = items.recv().await {
            let feed = match item {
                WatchItem::Rows(rows) => Feed::Changes(rows.iter().map(change_of_row).collect()),
                WatchItem::Progress(rv) => Feed::Progress(rv),
            };
            if out.send(feed).await.is_err() {
                return;
            }
        }
    };
    // The watcher ends (and drops its sender) before the forwarder drains and stops.
    let (end, ()) = futures::join!(watcher, forward);
    let status = match end {
        WatchEnd::Compacted { compact_revision } => expired(start_revision - 1, compact_revision),
        other => Status::new(500, "InternalError", format!("watch ended: {other:?}")),
    };
    let _ = out.send(Feed::End(status)).await;
}

/// An etcd watch response as changes: a put that created its key is ADDED.
fn changes_of_response(resp: &WatchResponse) -> Vec<(EventType, Object)> {
    resp.events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let kind = if e.r#type == EtcdEventType::Delete as i32 {
                EventType::Deleted
            } else if kv.create_revision == kv.mod_revision {
                EventType::Added
            } else {
                EventType::Modified
            };
            let object = Object {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                resource_version: kv.mod_revision,
                value: String::from_utf8_lossy(&kv.value).into_owned(),
            };
            (kind, object)
        })
        .collect()
}

/// etcd: one Watch stream through the apiserver's etcd client, with progress notifications for
/// bookmarks. A stream that answers no progress request within [`FEED_STALLED`] is given up
/// and its endpoint failed over, as the etcd client's keepalive would.
async fn etcd_feed(
    client: Arc<EtcdClient>,
    prefix: String,
    start_revision: i64,
    mut progress: mpsc::Receiver<()>,
    out: mpsc::Sender<Feed>,
) {
    let (requests, mut queue) = mpsc::channel::<EtcdWatchRequest>(8);
    let create = EtcdWatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(&prefix),
            start_revision,
            ..Default::default()
        })),
    };
    let _ = requests.send(create).await;
    let outbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
    let (at, mut inbound) = match client.watch(outbound).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = out.send(Feed::End(Status::from_store(&e))).await;
            return;
        }
    };
    // When the oldest unanswered progress request was sent.
    let mut asked: Option<tokio::time::Instant> = None;
    let status = loop {
        let stall = asked.map(|t| t + FEED_STALLED);
        let stalled = async {
            match stall {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            msg = inbound.message() => match msg {
                Ok(Some(resp)) if resp.canceled => {
                    break if resp.compact_revision > 0 {
                        expired(start_revision - 1, resp.compact_revision)
                    } else {
                        Status::new(500, "InternalError", format!("etcd cancelled the watch: {}", resp.cancel_reason))
                    };
                }
                Ok(Some(resp)) if resp.created => {}
                Ok(Some(resp)) if resp.events.is_empty() => {
                    asked = None;
                    let rv = resp.header.map(|h| h.revision).unwrap_or(0);
                    if out.send(Feed::Progress(rv)).await.is_err() {
                        return;
                    }
                }
                Ok(Some(resp)) => {
                    if out.send(Feed::Changes(changes_of_response(&resp))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break Status::new(500, "InternalError", "etcd closed the watch stream"),
                Err(e) => {
                    crate::probe!("api.watch.etcd_stream_broken");
                    client.fail(at);
                    break Status::new(500, "InternalError", format!("etcd watch stream broken: {}", e.message()));
                }
            },
            asked_now = progress.recv() => {
                if asked_now.is_none() {
                    return;
                }
                asked.get_or_insert_with(tokio::time::Instant::now);
                let req = EtcdWatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                };
                let _ = requests.try_send(req);
            }
            _ = stalled => {
                crate::probe!("api.watch.etcd_stream_stalled");
                client.fail(at);
                break Status::new(504, "Timeout", "etcd watch stream stalled: no progress notification");
            }
        }
    };
    let _ = out.send(Feed::End(status)).await;
}

impl ApiServer {
    /// Validates a watch request the way the apiserver does: content negotiation first, then
    /// the WatchList parameter rules.
    pub fn refuse(&self, req: &WatchRequest) -> Option<Status> {
        if req.is_watch_list()
            && req.accepts_only_table()
            && self.watchlist == WatchListVariant::Fixed
        {
            return Some(Status::new(
                406,
                "NotAcceptable",
                "the WatchList stream cannot be served as Table",
            ));
        }
        let not_older = req.resource_version_match.as_deref() == Some("NotOlderThan");
        if req.send_initial_events && !not_older {
            return Some(Status::new(
                422,
                "Invalid",
                "sendInitialEvents: Forbidden: sendInitialEvents is allowed only with resourceVersionMatch=NotOlderThan",
            ));
        }
        if req.resource_version_match.is_some() && !req.send_initial_events {
            return Some(Status::new(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is set",
            ));
        }
        if req.continue_token.is_some() {
            return Some(Status::new(
                422,
                "Invalid",
                "continue: Forbidden: continue is forbidden for watch",
            ));
        }
        if !req.send_initial_events && req.resource_version.is_none() {
            return Some(Status::new(
                422,
                "Invalid",
                "resourceVersion: Required: this facade serves watches from a resourceVersion",
            ));
        }
        None
    }

    /// Serves one watch stream until the client goes away or the watch ends.
    pub async fn watch(self: Arc<Self>, req: WatchRequest, out: mpsc::Sender<WatchMessage>) {
        if let Some(status) = self.refuse(&req) {
            match status.code {
                406 => crate::probe!("api.watch.refused_406"),
                _ => crate::probe!("api.watch.refused_422"),
            }
            let _ = out.send(WatchMessage::Status(status)).await;
            return;
        }
        let prefix = resource_prefix(&req.resource);
        let start_after = if req.send_initial_events {
            match self.initial_events(&req, &prefix, &out).await {
                Ok(Some(at)) => at,
                Ok(None) => return,
                Err(status) => {
                    let _ = out.send(WatchMessage::Status(status)).await;
                    return;
                }
            }
        } else {
            req.resource_version.unwrap_or(0)
        };
        let (progress_tx, progress_rx) = mpsc::channel(4);
        let (_task, mut feed) = self.backend.feed(&prefix, start_after + 1, progress_rx);
        let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                biased;
                item = feed.recv() => {
                    let messages = match item {
                        Some(Feed::Changes(changes)) => changes
                            .into_iter()
                            .map(|(kind, object)| WatchMessage::Event { kind, object, initial_events_end: false })
                            .collect(),
                        Some(Feed::Progress(rv)) => {
                            crate::probe!("api.watch.bookmark");
                            vec![bookmark(rv, false)]
                        }
                        Some(Feed::End(status)) => {
                            let _ = out.send(WatchMessage::Status(status)).await;
                            return;
                        }
                        None => return,
                    };
                    for msg in messages {
                        if out.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
                _ = bookmarks.tick(), if req.allow_watch_bookmarks => {
                    let _ = progress_tx.try_send(());
                }
            }
        }
    }

    /// Sends a WatchList's initial ADDED events and its initial-events-end bookmark; returns the
    /// bookmark's revision, after which ordinary events follow.
    async fn initial_events(
        &self,
        req: &WatchRequest,
        prefix: &str,
        out: &mpsc::Sender<WatchMessage>,
    ) -> Result<Option<i64>, Status> {
        // The revision the initial state must be at least as new as.
        let required = match req.resource_version {
            Some(rv) if rv > 0 => rv,
            _ => self
                .backend
                .current_revision()
                .await
                .map_err(|e| Status::from_store(&e))?,
        };
        let at = self.backend.settled_revision(required).await?;
        let resp = self
            .backend
            .range(&RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                revision: at,
                ..Default::default()
            })
            .await
            .map_err(|e| Status::from_store(&e))?;
        for kv in &resp.kvs {
            let msg = WatchMessage::Event {
                kind: EventType::Added,
                object: Object {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    resource_version: kv.mod_revision,
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                },
                initial_events_end: false,
            };
            if out.send(msg).await.is_err() {
                return Ok(None);
            }
        }
        crate::probe!("api.watchlist.initial_events_end_bookmark");
        if out.send(bookmark(at, true)).await.is_err() {
            return Ok(None);
        }
        Ok(Some(at))
    }
}

//! The watch stream's progress answers against a scripted backend and watcher: a notification
//! never names a revision below a watch's start or below an event already sent on the stream.

use super::{answer_progress, notify_progress, serve_watch_stream, Outbox, Probe, WatchBackend};
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::{Event, KeyValue};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// A backend whose current revision the test sets.
#[derive(Clone)]
struct Scripted {
    current: Arc<AtomicI64>,
}

impl WatchBackend for Scripted {
    async fn current_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn start_watcher(
        &self,
        _watch_id: i64,
        _create: WatchCreateRequest,
        _probes: mpsc::Receiver<Probe>,
        _outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        unreachable!("these tests drive answer_progress with their own watchers")
    }
}

fn event_at(revision: i64) -> WatchResponse {
    WatchResponse {
        watch_id: 1,
        events: vec![Event {
            kv: Some(KeyValue {
                key: b"/k".to_vec(),
                mod_revision: revision,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every response queued so far: (events' newest revision or None for a progress, header revision).
fn drain(rx: &mut mpsc::Receiver<Result<WatchResponse, Status>>) -> Vec<(Option<i64>, i64)> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        let r = r.expect("no error response");
        let newest = r
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .max();
        out.push((newest, r.header.map(|h| h.revision).unwrap_or(0)));
    }
    out
}

#[madsim::test]
async fn a_progress_request_waits_for_a_watch_whose_start_is_ahead_of_the_member() {
    let backend = Scripted {
        current: Arc::new(AtomicI64::new(461)),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let outbox = Outbox::new(tx);
    let (probes, mut probed) = mpsc::channel::<Probe>(1);
    // The watch asked for 480 on: with nothing to send below it, it has covered up to 479, and
    // up to the member's revision once the member passes that.
    let member = backend.current.clone();
    tokio::spawn(async move {
        while let Some(p) = probed.recv().await {
            let _ = p.send(member.load(Ordering::SeqCst).max(479));
        }
    });
    let answer = tokio::spawn(answer_progress(
        backend.clone(),
        vec![(probes, 480)],
        outbox,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        drain(&mut rx),
        vec![],
        "no notification below the start 480"
    );
    backend.current.store(480, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(answer.is_finished());
    assert_eq!(drain(&mut rx), vec![(None, 480)]);
}

#[madsim::test]
async fn a_progress_notification_is_never_below_an_event_already_sent() {
    let backend = Scripted {
        current: Arc::new(AtomicI64::new(461)),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let outbox = Outbox::new(tx);
    let (probes, mut probed) = mpsc::channel::<Probe>(1);
    let watcher_outbox = outbox.clone();
    // The watcher answers the first probe at 461 and, before the notification goes out, sends
    // the event at 462 that a write just applied: the race the stream must not lose.
    tokio::spawn(async move {
        let mut upto = 461;
        while let Some(p) = probed.recv().await {
            let _ = p.send(upto);
            if upto == 461 {
                upto = 462;
                watcher_outbox.send(Ok(event_at(462))).await.unwrap();
            }
        }
    });
    let answer = tokio::spawn(answer_progress(backend, vec![(probes, 0)], outbox));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(answer.is_finished());
    assert_eq!(drain(&mut rx), vec![(Some(462), 0), (None, 462)]);
}

/// A watcher that answers every probe with `upto`.
fn watcher_at(upto: i64) -> mpsc::Sender<Probe> {
    let (probes, mut probed) = mpsc::channel::<Probe>(1);
    tokio::spawn(async move {
        while let Some(p) = probed.recv().await {
            let _ = p.send(upto);
        }
    });
    probes
}

#[madsim::test]
async fn a_periodic_progress_notification_goes_only_to_a_watcher_that_has_caught_up() {
    let backend = Scripted {
        current: Arc::new(AtomicI64::new(30)),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let outbox = Outbox::new(tx);
    notify_progress(backend.clone(), 4, (watcher_at(30), 0), outbox.clone()).await;
    let sent = rx.try_recv().unwrap().unwrap();
    assert_eq!(
        (
            sent.watch_id,
            sent.header.map(|h| h.revision),
            sent.events.len()
        ),
        (4, Some(30), 0),
        "under the watch's own id, at the current revision"
    );
    notify_progress(backend.clone(), 5, (watcher_at(29), 0), outbox.clone()).await;
    notify_progress(backend.clone(), 6, (watcher_at(30), 31), outbox.clone()).await;
    assert_eq!(
        drain(&mut rx),
        vec![],
        "a watcher still behind, or one whose start is ahead, is skipped this round"
    );
    outbox.send(Ok(event_at(31))).await.unwrap();
    drain(&mut rx);
    notify_progress(backend.clone(), 4, (watcher_at(30), 0), outbox.clone()).await;
    assert_eq!(
        drain(&mut rx),
        vec![],
        "never below an event already sent on the stream"
    );
    assert_eq!(
        outbox.take_sent_events().into_iter().collect::<Vec<_>>(),
        vec![1],
        "a watch that sent events is known, so its next notification is elided"
    );
    assert!(outbox.take_sent_events().is_empty());
}

/// A backend whose every watcher sends one event every 100 ms, at revisions 1, 2, 3...
#[derive(Clone)]
struct Ticking;

impl WatchBackend for Ticking {
    async fn current_revision(&self) -> i64 {
        0
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn start_watcher(
        &self,
        watch_id: i64,
        _create: WatchCreateRequest,
        _probes: mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for revision in 1.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let event = WatchResponse {
                    watch_id,
                    ..event_at(revision)
                };
                if outbox.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        })
    }
}

/// etcd answers a client's cancel with one response naming the watch, cancelled, without a
/// compact revision or reason, and sends nothing more for that watch; a cancel of a watch the
/// stream does not have goes unanswered.
#[madsim::test]
async fn a_cancelled_watch_gets_one_cancel_answer_and_nothing_after() {
    use crate::proto::etcdserverpb::{
        watch_request::RequestUnion, WatchCancelRequest, WatchRequest,
    };
    use futures::StreamExt;
    let (requests, mut queue) = mpsc::channel::<Result<WatchRequest, Status>>(8);
    let inbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
    let mut responses = serve_watch_stream(Ticking, inbound);
    let send = |union| {
        let requests = requests.clone();
        async move {
            let request_union = Some(union);
            requests
                .send(Ok(WatchRequest { request_union }))
                .await
                .unwrap();
        }
    };
    let create = WatchCreateRequest {
        key: b"/k".to_vec(),
        ..Default::default()
    };
    send(RequestUnion::CreateRequest(create)).await;
    let created = responses.next().await.unwrap().unwrap();
    assert!(created.created && !created.canceled);
    let id = created.watch_id;
    tokio::time::sleep(Duration::from_millis(350)).await;
    send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: id + 7,
    }))
    .await;
    send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: id,
    }))
    .await;
    let mut got = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), responses.next()).await {
        got.push(r.unwrap());
    }
    let (cancel, events) = got.split_last().expect("a cancel answer");
    assert_eq!(events.len(), 3, "events before the cancel: {events:?}");
    assert!(events.iter().all(|e| e.watch_id == id && !e.canceled));
    assert_eq!(
        (cancel.watch_id, cancel.canceled, cancel.compact_revision),
        (id, true, 0)
    );
    assert!(cancel.cancel_reason.is_empty() && cancel.events.is_empty());
}

/// A backend with one scripted watcher: it hands events at revisions 1..=255 to the stream (with
/// the created response, 256: the response channel's capacity), answers the first progress
/// probe at 255, and then a write at 256 applies and its event is handed to the stream.
#[derive(Clone)]
struct Filling {
    current: Arc<AtomicI64>,
}

impl WatchBackend for Filling {
    async fn current_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn start_watcher(
        &self,
        watch_id: i64,
        _create: WatchCreateRequest,
        mut probes: mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        let current = self.current.clone();
        tokio::spawn(async move {
            let event = |revision| WatchResponse {
                watch_id,
                ..event_at(revision)
            };
            for revision in 1..=255 {
                outbox.send(Ok(event(revision))).await.unwrap();
            }
            let mut upto = 255;
            while let Some(probe) = probes.recv().await {
                let _ = probe.send(upto);
                if upto == 255 {
                    upto = 256;
                    current.store(256, Ordering::SeqCst);
                    if outbox.send(Ok(event(256))).await.is_err() {
                        return;
                    }
                }
            }
        })
    }
}

/// A client that stops reading fills its stream; a progress request answered at 255 then waits
/// for room beside an event at 256. Whichever gets room first, the notification at 255 is
/// withheld (the event above it was handed to the stream) and the request is answered at 256,
/// after that event. How a stream reaches `watch.progress.overtaken_by_event`: a simulated
/// stream never fills, so no scenario does (probe::SCENARIO_UNREACHABLE).
#[madsim::test]
async fn a_progress_held_back_by_a_full_stream_is_withheld_once_an_event_overtakes_it() {
    use crate::proto::etcdserverpb::{
        watch_request::RequestUnion, WatchProgressRequest, WatchRequest,
    };
    use futures::StreamExt;
    let overtaken_before = crate::probe::hits_of("watch.progress.overtaken_by_event");
    let (requests, mut queue) = mpsc::channel::<Result<WatchRequest, Status>>(8);
    let inbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
    let backend = Filling {
        current: Arc::new(AtomicI64::new(255)),
    };
    let mut responses = serve_watch_stream(backend, inbound);
    let send = |union| {
        let requests = requests.clone();
        async move {
            let request_union = Some(union);
            requests
                .send(Ok(WatchRequest { request_union }))
                .await
                .unwrap();
        }
    };
    let create = WatchCreateRequest {
        key: b"/k".to_vec(),
        ..Default::default()
    };
    // The client reads nothing until the stream is full and both are waiting for room.
    send(RequestUnion::CreateRequest(create)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut got = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), responses.next()).await {
        got.push(r.unwrap());
    }
    let created = got.first().expect("a created response");
    assert!(created.created && !created.canceled);
    let events = got[1..].iter().filter(|r| !r.events.is_empty()).count();
    assert_eq!(events, 256, "every event, none lost to the full stream");
    let mut newest_sent = 0;
    let mut progress = Vec::new();
    for r in &got[1..] {
        let revision = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if let Some(newest) = r
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .max()
        {
            newest_sent = newest_sent.max(newest);
        } else {
            assert!(
                revision >= newest_sent,
                "a progress notification at {revision} below an event sent at {newest_sent}"
            );
            progress.push(revision);
        }
    }
    assert_eq!(
        progress,
        vec![256],
        "answered once, after the event that overtook it"
    );
    assert!(
        cfg!(faultline_no_probes)
            || crate::probe::hits_of("watch.progress.overtaken_by_event") > overtaken_before,
        "the withheld notification is counted"
    );
}

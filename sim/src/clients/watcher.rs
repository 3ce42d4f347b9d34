//! Watchers: clients that hold an etcd watch on every object and resume it after any break.
//!
//! Like client-go's reflector, a watcher starts from the revision of a read, asks for prev_kv,
//! requests progress when the stream is quiet, gives up on a stream that stays silent past its
//! deadline (a partition stalls streams rather than breaking them) and resumes from the last
//! revision it saw plus one. Every session, event and progress notification is recorded.

use crate::history::recorder::Recorder;
use crate::history::WatchEventRecord;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, RangeRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use store::proto::mvccpb::event::EventType;
use tokio::time::Instant;

const START: &str = "/registry/";
const END: &str = "/registry0";
/// Silence after which a progress request is sent, and after which the stream is abandoned.
const QUIET: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct WatcherConfig {
    pub name: String,
    pub servers: Vec<(String, SocketAddr)>,
    pub stop_at: Instant,
    pub timeout: Duration,
}

fn endpoint(addr: &SocketAddr, timeout: Duration) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("server addresses are valid URIs")
        .connect_timeout(timeout)
}

/// The current revision, as a reflector's initial list would see it.
async fn current_revision(addr: &SocketAddr, timeout: Duration) -> Option<i64> {
    let channel = endpoint(addr, timeout)
        .timeout(timeout)
        .connect()
        .await
        .ok()?;
    let req = RangeRequest {
        key: START.into(),
        range_end: END.into(),
        count_only: true,
        ..Default::default()
    };
    let resp = KvClient::new(channel).range(req).await.ok()?.into_inner();
    resp.header.map(|h| h.revision)
}

pub async fn run_watcher(cfg: WatcherConfig, recorder: Recorder) {
    let mut next_start = 0i64;
    while Instant::now() < cfg.stop_at {
        let idx = madsim::rand::thread_rng().gen_range(0..cfg.servers.len());
        let (server, addr) = cfg.servers[idx].clone();
        if next_start == 0 {
            match current_revision(&addr, cfg.timeout).await {
                Some(r) => next_start = r + 1,
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if let Some(last) = session(&cfg, &server, &addr, next_start, &recorder).await {
            next_start = last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One watch stream; returns the revision the next session should start from.
async fn session(
    cfg: &WatcherConfig,
    server: &str,
    addr: &SocketAddr,
    start: i64,
    recorder: &Recorder,
) -> Option<i64> {
    let channel = endpoint(addr, cfg.timeout).connect().await.ok()?;
    let (requests, mut queue) = tokio::sync::mpsc::channel::<WatchRequest>(8);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: START.into(),
            range_end: END.into(),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })),
    };
    requests.send(create).await.ok()?;
    let outbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
    let invoked_ns = recorder.now_ns();
    let opened = tokio::time::timeout(cfg.timeout, WatchClient::new(channel).watch(outbound)).await;
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        _ => return None,
    };
    let id = recorder.open_watch(&cfg.name, server, (START, END), start, invoked_ns);
    let mut next = start;
    let mut asked = false;
    loop {
        let left = cfg.stop_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            recorder.end_watch(id, 0, "workload stopped");
            return Some(next);
        }
        let msg = match tokio::time::timeout(QUIET.min(left), inbound.message()).await {
            Err(_) if Instant::now() >= cfg.stop_at => continue,
            Err(_) if !asked => {
                asked = true;
                let progress = WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                };
                let _ = requests.send(progress).await;
                continue;
            }
            Err(_) => {
                recorder.end_watch(id, 0, "stalled: no answer to a progress request");
                return Some(next);
            }
            Ok(Err(status)) => {
                recorder.end_watch(id, 0, &format!("stream broken: {}", status.message()));
                return Some(next);
            }
            Ok(Ok(None)) => {
                recorder.end_watch(id, 0, "stream closed by the server");
                return Some(next);
            }
            Ok(Ok(Some(m))) => m,
        };
        asked = false;
        if msg.canceled {
            recorder.end_watch(id, msg.compact_revision, &msg.cancel_reason);
            // A compacted start cannot be resumed; like a reflector after relisting, continue
            // from the oldest revision still available.
            return Some(if msg.compact_revision > 0 {
                msg.compact_revision
            } else {
                next
            });
        }
        if msg.created {
            continue;
        }
        if msg.events.is_empty() {
            recorder.watch_progress(id, msg.header.map(|h| h.revision).unwrap_or(0));
            continue;
        }
        let records: Vec<WatchEventRecord> = msg
            .events
            .iter()
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                WatchEventRecord {
                    at_ns: 0,
                    response: 0,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    deleted: e.r#type == EventType::Delete as i32,
                    mod_revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                    prev_mod_revision: e.prev_kv.as_ref().map(|p| p.mod_revision),
                }
            })
            .collect();
        next = next.max(records.iter().map(|r| r.mod_revision).max().unwrap_or(0) + 1);
        recorder.watch_events(id, records);
    }
}

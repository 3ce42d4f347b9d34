//! Watchers: clients that hold an etcd watch on every object and resume it after any break.
//!
//! Like client-go's reflector, a watcher starts from the revision of a read, asks for prev_kv,
//! requests progress when the stream is quiet, gives up on a stream that stays silent past its
//! deadline (a partition stalls streams rather than breaking them) and resumes from the last
//! revision it saw plus one. While its server cannot be reached it backs off, as a reflector
//! does, rather than knocking every half second. Every session, event and progress notification
//! is recorded.

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
/// The pause before the next session once one has run.
const RESUME: Duration = Duration::from_millis(500);
/// The longest pause between attempts that reach no server. client-go's reflector grows to 30 s;
/// a shorter cap keeps watchers present in every scenario's later faults.
const RETRY_MAX: Duration = Duration::from_secs(8);

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
    let mut retry = RESUME;
    while Instant::now() < cfg.stop_at {
        let idx = madsim::rand::thread_rng().gen_range(0..cfg.servers.len());
        let (server, addr) = cfg.servers[idx].clone();
        if next_start == 0 {
            match current_revision(&addr, cfg.timeout).await {
                Some(r) => next_start = r + 1,
                None => {
                    retry = back_off(retry).await;
                    continue;
                }
            }
        }
        match session(&cfg, &server, &addr, next_start, &recorder).await {
            Some(last) => {
                next_start = last;
                retry = RESUME;
                tokio::time::sleep(RESUME).await;
            }
            None => retry = back_off(retry).await,
        }
    }
}

/// Waits `retry` and up to half as long again (jitter, so watchers cut off together do not come
/// back together), and returns the next wait: twice this one, up to `RETRY_MAX`.
async fn back_off(retry: Duration) -> Duration {
    let jitter = madsim::rand::thread_rng().gen_range(0.0..0.5);
    tokio::time::sleep(retry.mul_f64(1.0 + jitter)).await;
    (retry * 2).min(RETRY_MAX)
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
                    version: kv.version,
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                    prev_kv: e.prev_kv.as_ref().map(crate::clients::etcd_call::kv_of),
                }
            })
            .collect();
        next = next.max(records.iter().map(|r| r.mod_revision).max().unwrap_or(0) + 1);
        recorder.watch_events(id, records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts that reach nobody wait longer each time, jittered, and never past the cap.
    #[madsim::test]
    async fn a_watcher_that_reaches_no_server_backs_off_to_its_cap() {
        let mut retry = RESUME;
        let mut asked = vec![];
        for _ in 0..7 {
            let started = Instant::now();
            let next = back_off(retry).await;
            let waited = started.elapsed();
            assert!(
                waited >= retry && waited <= retry.mul_f64(1.5),
                "waited {waited:?} for a retry of {retry:?}"
            );
            asked.push(retry.as_millis());
            retry = next;
        }
        assert_eq!(asked, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }
}

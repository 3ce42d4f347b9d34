//! Watchers: clients that hold an etcd watch on every object and resume it after any break.
//!
//! Like client-go's reflector, a watcher starts from the revision of a read, asks for prev_kv,
//! requests progress when the stream is quiet, gives up on a stream that stays silent past its
//! deadline (a partition stalls streams rather than breaking them) and resumes from the last
//! revision it saw plus one. While its server cannot be reached it backs off, as a reflector
//! does, rather than knocking every half second. It also asks for progress at random moments
//! (sometimes right after the create, while the server replays history), and every session ends
//! by the client's own cancel after a drawn lifetime, as client-go stops a watch: the cancel's
//! answer ends the session, and the stream is read a moment longer for events that must not come.
//! Every session, event and progress notification is recorded.

use crate::history::recorder::Recorder;
use crate::history::WatchEventRecord;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, RangeRequest,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use store::proto::mvccpb::event::EventType;
use store::server::STREAM_WATCH_ID;
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
    /// Chance that a session starts at revision 1 (`Workload::compacted_starts`).
    pub compacted_starts: f64,
    /// Chance that a session starts in the store's future (`Workload::future_starts`).
    pub future_starts: f64,
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
        // Drawn only when asked for, so scenarios without them draw what they always drew.
        let start = if cfg.compacted_starts > 0.0
            && madsim::rand::thread_rng().gen_bool(cfg.compacted_starts)
        {
            1
        } else if cfg.future_starts > 0.0 && madsim::rand::thread_rng().gen_bool(cfg.future_starts)
        {
            next_start + madsim::rand::thread_rng().gen_range(1..=20)
        } else {
            next_start
        };
        match session(&cfg, &server, &addr, start, &recorder).await {
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

/// How often, on average, a session asks for progress at a random moment, whatever the stream
/// carries (a reflector's bookmark requests race the events it is receiving).
const PROGRESS_EVERY: Duration = Duration::from_secs(4);
/// The chance that a session asks for progress as soon as it is opened, while the server still
/// replays its history.
const EARLY_PROGRESS_CHANCE: f64 = 0.5;
/// How long a session lives before its client cancels it: most within `CANCEL_WITHIN`, the rest
/// within `LONG_WITHIN` (client-go stops a watch when its consumer goes away or its timeout
/// ends, etcdctl when it exits).
const SHORT_CHANCE: f64 = 0.8;
const CANCEL_WITHIN: Duration = Duration::from_secs(30);
const LONG_WITHIN: Duration = Duration::from_secs(300);
/// How a session the client cancelled is recorded as ended.
pub const CANCELLED_BY_CLIENT: &str = "cancelled by the client";

/// A random moment within `within` from now.
fn some_time_within(within: Duration) -> Instant {
    let f = madsim::rand::thread_rng().gen_range(0.05..1.0);
    Instant::now() + within.mul_f64(f)
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
    // A progress request sent after QUIET silence; a second silence abandons the stream.
    let mut asked = false;
    let mut quiet_until = Instant::now() + QUIET;
    // A progress request not answered yet: a cancel waits for its answer, so that a progress
    // notification the stream owes is never mistaken for one of the next session.
    let mut pending = false;
    // Sometimes right away, racing the watcher's replay of history.
    let mut progress_at = if madsim::rand::thread_rng().gen_bool(EARLY_PROGRESS_CHANCE) {
        Instant::now()
    } else {
        some_time_within(PROGRESS_EVERY * 2)
    };
    let lifetime = if madsim::rand::thread_rng().gen_bool(SHORT_CHANCE) {
        CANCEL_WITHIN
    } else {
        LONG_WITHIN
    };
    let (mut cancel_at, mut watch_id, mut cancelling) =
        (Some(some_time_within(lifetime)), None, false);
    let progress = || WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    loop {
        let now = Instant::now();
        if now >= cfg.stop_at {
            recorder.end_watch(id, 0, "workload stopped");
            return Some(next);
        }
        if let (Some(at), Some(watch_id), false) = (cancel_at, watch_id, pending) {
            if now >= at {
                cancel_at = None;
                cancelling = true;
                let cancel = WatchRequest {
                    request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                        watch_id,
                    })),
                };
                let _ = requests.send(cancel).await;
            }
        }
        if now >= progress_at && !pending && !cancelling {
            pending = true;
            let _ = requests.send(progress()).await;
        }
        if now >= progress_at {
            progress_at = some_time_within(PROGRESS_EVERY * 2);
        }
        let mut wake = quiet_until.min(cfg.stop_at).min(progress_at);
        if let Some(at) = cancel_at.filter(|_| watch_id.is_some() && !pending) {
            wake = wake.min(at);
        }
        let msg = match tokio::time::timeout(
            wake.saturating_duration_since(Instant::now()),
            inbound.message(),
        )
        .await
        {
            Err(_) if Instant::now() < quiet_until => continue,
            Err(_) if !asked => {
                asked = true;
                pending = true;
                quiet_until = Instant::now() + QUIET;
                let _ = requests.send(progress()).await;
                continue;
            }
            Err(_) => {
                let reason = if cancelling {
                    "stalled: no answer to a cancel"
                } else {
                    "stalled: no answer to a progress request"
                };
                recorder.end_watch(id, 0, reason);
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
        quiet_until = Instant::now() + QUIET;
        if msg.canceled {
            // etcd answers a client's cancel with the watch id, cancelled, and nothing else.
            let by_client = cancelling && msg.compact_revision == 0 && msg.cancel_reason.is_empty();
            let reason = if by_client {
                CANCELLED_BY_CLIENT
            } else {
                &msg.cancel_reason
            };
            recorder.end_watch(id, msg.compact_revision, reason);
            if by_client {
                linger(&mut inbound, msg.watch_id, id, recorder).await;
            }
            // A compacted start cannot be resumed; like a reflector after relisting, continue
            // from the oldest revision still available.
            return Some(if msg.compact_revision > 0 {
                msg.compact_revision
            } else {
                next
            });
        }
        if msg.created {
            watch_id = Some(msg.watch_id);
            continue;
        }
        if msg.events.is_empty() {
            if msg.watch_id == STREAM_WATCH_ID {
                pending = false;
            }
            recorder.watch_progress(id, msg.header.map(|h| h.revision).unwrap_or(0));
            continue;
        }
        let records = records_of(&msg);
        next = next.max(records.iter().map(|r| r.mod_revision).max().unwrap_or(0) + 1);
        recorder.watch_events(id, records);
    }
}

/// A watch response's events as the history records them.
fn records_of(msg: &WatchResponse) -> Vec<WatchEventRecord> {
    msg.events
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
        .collect()
}

/// How long a stream is still read after the server answered a cancel.
const LINGER: Duration = Duration::from_secs(1);

/// Reads the stream a little longer after a cancel was answered and records any event of the
/// cancelled watch into its ended session: etcd sends none once it has answered the cancel.
async fn linger(
    inbound: &mut tonic::Streaming<WatchResponse>,
    watch_id: i64,
    session: u64,
    recorder: &Recorder,
) {
    let until = Instant::now() + LINGER;
    while let Ok(Ok(Some(msg))) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        inbound.message(),
    )
    .await
    {
        if msg.watch_id == watch_id && !msg.events.is_empty() {
            recorder.watch_events(session, records_of(&msg));
        }
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

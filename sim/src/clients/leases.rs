//! Lease clients: leases used as the apiserver uses them for Events and leader-election records.
//!
//! Each client starts a lease now and then (a few at a time): it grants it (server-chosen ID),
//! attaches keys to it, then keeps it alive for a while over a LeaseKeepAlive stream, lets it
//! lapse, or revokes it, and afterwards reads its keys and asks its TTL, so the history shows
//! whether the keys outlived the lease or died before it. Every request is recorded; every wait
//! is bounded (a partition stalls an open stream rather than breaking it, so a keep-alive that
//! gets no answer in time abandons its stream and the next one opens another).

use crate::history::recorder::Recorder;
use crate::history::{LeaseOutcome, LeaseRequest, LeaseResult, LeasedKv};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    ResponseHeader,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

/// Where the keys of short leases live (Events, which the apiserver gives a TTL).
pub const EVENT_PREFIX: &str = "/registry/events/faultline-lease/";
/// Where the keys of longer leases live (leader-election records, kept alive by their holder).
pub const ELECTION_PREFIX: &str = "/registry/leases/faultline-lease/";
/// Leases of at least this TTL hold leader-election-like keys; shorter ones hold Events.
const ELECTION_TTL_S: i64 = 10;

/// Mean pause between the starts of two leases of one client (Poisson-spaced).
const LEASE_EVERY: Duration = Duration::from_secs(5);
/// At most this many leases of one client are in hand at a time.
const MAX_LIVE: usize = 3;
/// How late after a lapsed lease's TTL its last probe comes: past the `lease` check's bound
/// (`checkers/lease.rs`), so a lease that never expires is seen alive where it must be gone.
const PROBE_LATE: Duration = Duration::from_secs(25);

#[derive(Clone)]
pub struct LeaseClientConfig {
    pub name: String,
    pub servers: Vec<(String, SocketAddr)>,
    pub ttls_s: Vec<i64>,
    pub keys: u32,
    pub timeout: Duration,
    pub stop_at: Instant,
}

/// What a client does with a lease once its keys are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Keep it alive for two to four TTLs, then stop renewing.
    KeepThenLapse,
    /// Keep it alive for two to four TTLs, then revoke it.
    KeepThenRevoke,
    /// Never renew it.
    Lapse,
    /// Revoke it within half its TTL.
    Revoke,
}

/// Runs one lease client until `stop_at`; its leases run as tasks of their own.
pub async fn run_lease_client(cfg: LeaseClientConfig, recorder: Recorder) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut seq = 0u64;
    while Instant::now() < cfg.stop_at {
        let u: f64 = madsim::rand::thread_rng().gen();
        let wait = -(1.0 - u).ln() * LEASE_EVERY.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        if Instant::now() >= cfg.stop_at || live.load(Ordering::Relaxed) >= MAX_LIVE {
            continue;
        }
        seq += 1;
        live.fetch_add(1, Ordering::Relaxed);
        let life = Life {
            cfg: cfg.clone(),
            recorder: recorder.clone(),
            seq,
            conn: None,
            streams: 0,
        };
        let live = live.clone();
        tokio::spawn(async move {
            life.run().await;
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One lease from its grant to its last probe.
struct Life {
    cfg: LeaseClientConfig,
    recorder: Recorder,
    seq: u64,
    /// The server in use (index into `servers`) and a channel to it.
    conn: Option<(usize, Channel)>,
    /// Keep-alive streams opened so far.
    streams: u64,
}

/// `[start, end)` of the keys of one lease.
fn key_range(prefix: &str, client: &str, seq: u64) -> (String, String) {
    let start = format!("{prefix}{client}-{seq}/");
    let end = format!("{prefix}{client}-{seq}0");
    (start, end)
}

impl Life {
    fn stopped(&self) -> bool {
        Instant::now() >= self.cfg.stop_at
    }

    async fn run(mut self) {
        let ttl_s = {
            let ttls = &self.cfg.ttls_s;
            ttls[madsim::rand::thread_rng().gen_range(0..ttls.len())]
        };
        let granted = self.execute(LeaseRequest::Grant { ttl_s }).await;
        let Some(LeaseOutcome::Ok {
            result: LeaseResult::Granted { lease, ttl_s },
            ..
        }) = granted
        else {
            return;
        };
        let prefix = if ttl_s >= ELECTION_TTL_S {
            ELECTION_PREFIX
        } else {
            EVENT_PREFIX
        };
        let (start, end) = key_range(prefix, &self.cfg.name, self.seq);
        let mut last_renewal = Instant::now();
        for k in 0..self.cfg.keys {
            let key = format!("{start}k{k}");
            let put = self.execute(LeaseRequest::Attach { lease, key }).await;
            if matches!(put, Some(LeaseOutcome::Failed { .. }) | None) {
                break;
            }
        }
        let fate = {
            let mut rng = madsim::rand::thread_rng();
            match rng.gen_range(0..10) {
                0..=2 => Fate::KeepThenLapse,
                3..=5 => Fate::KeepThenRevoke,
                6..=7 => Fate::Lapse,
                _ => Fate::Revoke,
            }
        };
        let ttl = Duration::from_secs(ttl_s.max(1) as u64);
        if matches!(fate, Fate::KeepThenLapse | Fate::KeepThenRevoke) {
            let hold = ttl.mul_f64(madsim::rand::thread_rng().gen_range(2.0..4.0));
            let until = Instant::now() + hold;
            match self.keep_alive(lease, ttl, until).await {
                Some(at) => last_renewal = at,
                None => {
                    // The server says the lease is gone: its keys must be too.
                    self.probe(lease, &start, &end).await;
                    return;
                }
            }
        }
        match fate {
            Fate::KeepThenRevoke | Fate::Revoke => {
                if fate == Fate::Revoke {
                    let before = ttl.mul_f64(madsim::rand::thread_rng().gen_range(0.0..0.5));
                    self.sleep_until(Instant::now() + before).await;
                }
                if self.stopped() {
                    return;
                }
                self.execute(LeaseRequest::Revoke { lease }).await;
                self.probe(lease, &start, &end).await;
            }
            Fate::KeepThenLapse | Fate::Lapse => {
                // Still alive at half its TTL, gone soon after it, surely gone well after it.
                for after in [ttl / 2, ttl + Duration::from_secs(2), ttl + PROBE_LATE] {
                    self.sleep_until(last_renewal + after).await;
                    if self.stopped() {
                        return;
                    }
                    self.probe(lease, &start, &end).await;
                }
            }
        }
    }

    async fn sleep_until(&self, at: Instant) {
        tokio::time::sleep_until(at.min(self.cfg.stop_at)).await;
    }

    /// Reads the lease's keys and asks its TTL (and, now and then, the list of leases).
    async fn probe(&mut self, lease: i64, start: &str, end: &str) {
        let read = LeaseRequest::Read {
            lease,
            start: start.to_string(),
            end: end.to_string(),
        };
        self.execute(read).await;
        self.execute(LeaseRequest::TimeToLive { lease }).await;
        if madsim::rand::thread_rng().gen_bool(0.3) {
            self.execute(LeaseRequest::Leases).await;
        }
    }

    /// A channel to some server, trying each once from a random start.
    async fn connect(&mut self) -> Option<(usize, Channel)> {
        if let Some(c) = &self.conn {
            return Some(c.clone());
        }
        let n = self.cfg.servers.len();
        let first = madsim::rand::thread_rng().gen_range(0..n);
        for idx in (0..n).map(|i| (first + i) % n) {
            let (_, addr) = &self.cfg.servers[idx];
            // No per-request timeout on the channel: it would cut the keep-alive stream; every
            // call below has its own deadline.
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("server addresses are valid URIs")
                .connect_timeout(self.cfg.timeout);
            if let Ok(channel) = endpoint.connect().await {
                self.conn = Some((idx, channel.clone()));
                return Some((idx, channel));
            }
        }
        None
    }

    /// Sends one unary request and records it; None when no server could be reached.
    async fn execute(&mut self, request: LeaseRequest) -> Option<LeaseOutcome> {
        let (idx, channel) = self.connect().await?;
        let server = self.cfg.servers[idx].0.clone();
        let id = self
            .recorder
            .invoke_lease(&self.cfg.name, &server, self.seq, request.clone());
        let outcome = match tokio::time::timeout(self.cfg.timeout, send(channel, &request)).await {
            Ok(outcome) => outcome,
            Err(_) if changes_nothing(&request) => LeaseOutcome::Failed {
                error: "deadline exceeded".into(),
            },
            Err(_) => LeaseOutcome::Unknown {
                error: "deadline exceeded".into(),
            },
        };
        if !matches!(outcome, LeaseOutcome::Ok { .. }) {
            // A stalled or broken connection is dropped; the next request may pick another server.
            self.conn = None;
        }
        self.recorder.complete_lease(id, outcome.clone());
        Some(outcome)
    }

    /// Renews `lease` every third of its TTL over a keep-alive stream until `until` (or the end
    /// of the workload), reopening the stream (on any server) whenever an answer does not come
    /// in time. Returns when the last successful renewal was sent, or None when the server
    /// answered that the lease is gone (TTL 0).
    async fn keep_alive(&mut self, lease: i64, ttl: Duration, until: Instant) -> Option<Instant> {
        let every = (ttl / 3).max(Duration::from_millis(500));
        let deadline = self.cfg.timeout.min(every);
        let mut last = Instant::now();
        let until = until.min(self.cfg.stop_at);
        'streams: while Instant::now() < until {
            let Some((idx, channel)) = self.connect().await else {
                self.sleep_until(Instant::now() + every).await;
                continue;
            };
            let server = self.cfg.servers[idx].0.clone();
            self.streams += 1;
            let stream = self.streams;
            let (requests, mut queue) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(4);
            let outbound = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
            let opened = tokio::time::timeout(
                deadline,
                LeaseClient::new(channel).lease_keep_alive(outbound),
            )
            .await;
            let mut inbound = match opened {
                Ok(Ok(r)) => r.into_inner(),
                _ => {
                    self.conn = None;
                    self.sleep_until(Instant::now() + every.min(Duration::from_secs(1)))
                        .await;
                    continue;
                }
            };
            while Instant::now() < until {
                let request = LeaseRequest::KeepAlive { lease, stream };
                let sent = Instant::now();
                let id = self
                    .recorder
                    .invoke_lease(&self.cfg.name, &server, self.seq, request);
                let outcome = if requests
                    .send(LeaseKeepAliveRequest { id: lease })
                    .await
                    .is_err()
                {
                    Err("stream closed before the request was sent".to_string())
                } else {
                    match tokio::time::timeout(deadline, inbound.message()).await {
                        Ok(Ok(Some(answer))) => Ok(answer),
                        Ok(Ok(None)) => Err("stream closed by the server".into()),
                        Ok(Err(status)) => Err(format!("stream broken: {}", status.message())),
                        Err(_) => Err("no answer within the deadline".into()),
                    }
                };
                match outcome {
                    Ok(answer) => {
                        self.recorder.complete_lease(
                            id,
                            LeaseOutcome::Ok {
                                header_revision: revision(&answer.header),
                                result: LeaseResult::KeptAlive { ttl_s: answer.ttl },
                            },
                        );
                        if answer.ttl <= 0 {
                            return None;
                        }
                        last = sent;
                    }
                    Err(error) => {
                        self.recorder
                            .complete_lease(id, LeaseOutcome::Unknown { error });
                        self.conn = None;
                        continue 'streams;
                    }
                }
                self.sleep_until((Instant::now() + every).min(until)).await;
            }
        }
        Some(last)
    }
}

/// A probe or read: whatever became of it, it took no effect.
fn changes_nothing(request: &LeaseRequest) -> bool {
    matches!(
        request,
        LeaseRequest::Read { .. } | LeaseRequest::TimeToLive { .. } | LeaseRequest::Leases
    )
}

fn revision(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map(|h| h.revision).unwrap_or(0)
}

/// A refused request: definite when the store decided (no such lease, a bad or unsupported
/// request, a refused TTL) or the request was a probe; otherwise it may have taken effect.
fn failure(request: &LeaseRequest, status: tonic::Status) -> LeaseOutcome {
    let definite = matches!(
        status.code(),
        Code::NotFound
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
    );
    if definite || changes_nothing(request) {
        LeaseOutcome::Failed {
            error: format!("{:?}: {}", status.code(), status.message()),
        }
    } else {
        LeaseOutcome::Unknown {
            error: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

fn ok(header: &Option<ResponseHeader>, result: LeaseResult) -> LeaseOutcome {
    LeaseOutcome::Ok {
        header_revision: revision(header),
        result,
    }
}

/// Sends one unary lease request (a keep-alive goes over its stream, never here).
async fn send(channel: Channel, request: &LeaseRequest) -> LeaseOutcome {
    let mut leases = LeaseClient::new(channel.clone());
    let answer = match request {
        LeaseRequest::Grant { ttl_s } => leases
            .lease_grant(LeaseGrantRequest { ttl: *ttl_s, id: 0 })
            .await
            .map(|r| {
                let r = r.into_inner();
                if !r.error.is_empty() {
                    return LeaseOutcome::Failed { error: r.error };
                }
                let result = LeaseResult::Granted {
                    lease: r.id,
                    ttl_s: r.ttl,
                };
                ok(&r.header, result)
            }),
        LeaseRequest::Revoke { lease } => leases
            .lease_revoke(LeaseRevokeRequest { id: *lease })
            .await
            .map(|r| ok(&r.into_inner().header, LeaseResult::Revoked)),
        LeaseRequest::TimeToLive { lease } => leases
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: *lease,
                keys: true,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let result = LeaseResult::TimeToLive {
                    ttl_s: r.ttl,
                    granted_ttl_s: r.granted_ttl,
                    keys: r
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect(),
                };
                ok(&r.header, result)
            }),
        LeaseRequest::Leases => leases.lease_leases(LeaseLeasesRequest {}).await.map(|r| {
            let r = r.into_inner();
            let ids = r.leases.iter().map(|l| l.id).collect();
            ok(&r.header, LeaseResult::Leases { ids })
        }),
        LeaseRequest::Attach { lease, key } => KvClient::new(channel)
            .put(PutRequest {
                key: key.clone().into_bytes(),
                value: b"leased".to_vec(),
                lease: *lease,
                ..Default::default()
            })
            .await
            .map(|r| ok(&r.into_inner().header, LeaseResult::Attached)),
        LeaseRequest::Read { start, end, .. } => KvClient::new(channel)
            .range(RangeRequest {
                key: start.clone().into_bytes(),
                range_end: end.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let kvs = r
                    .kvs
                    .iter()
                    .map(|kv| LeasedKv {
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        mod_revision: kv.mod_revision,
                        lease: kv.lease,
                    })
                    .collect();
                ok(&r.header, LeaseResult::Read { kvs })
            }),
        LeaseRequest::KeepAlive { .. } => unreachable!("keep-alives go over their stream"),
    };
    answer.unwrap_or_else(|status| failure(request, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One lease's keys fall inside its range and no other lease's (client-1-1 vs client-1-10).
    #[test]
    fn a_lease_range_holds_its_own_keys_only() {
        let (start, end) = key_range(EVENT_PREFIX, "lease-client-1", 1);
        let inside = |k: &str| k >= start.as_str() && k < end.as_str();
        assert!(inside(&format!("{start}k0")));
        let (other, _) = key_range(EVENT_PREFIX, "lease-client-1", 10);
        assert!(!inside(&format!("{other}k0")));
        let (other, _) = key_range(EVENT_PREFIX, "lease-client-1#2", 1);
        assert!(!inside(&format!("{other}k0")));
    }
}

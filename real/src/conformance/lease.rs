//! Lease operations: what the generator draws, how a gRPC side runs them, the reference lessor
//! the MVCC side answers from, and lease IDs compared by the grant that made them.
//!
//! Expiry makes time matter, so it is drawn only as one self-contained operation (grant a short
//! lease, attach a key, check it is alive just before its TTL, wait until it is gone) during
//! which nothing else happens; every other lease gets a TTL of ten minutes or more and never
//! expires within a sequence. A lease never holds more than one key: kine's log writes one row
//! per revision, so a revoke of several keys takes several revisions where etcd takes one (see
//! README), and a sequence compares revisions exactly.

use crate::answer::Answer;
use crate::grpc::GrpcSide;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};
use store::error::StoreError;
use store::etcd::mvcc::Mvcc;
use store::proto::etcdserverpb::{
    lease_client::LeaseClient, request_op, response_op, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, TxnRequest,
};
use store::proto::mvccpb::{Event, KeyValue};
use tonic::transport::Channel;

/// etcd 3.4's minimum TTL with default flags, and its maximum.
const MIN_TTL: i64 = 2;
const MAX_TTL: i64 = 9_000_000_000;
/// How long before its TTL an expiring lease is checked to be still alive.
const ALIVE_MARGIN: Duration = Duration::from_millis(400);
/// How long after its TTL an expiring lease may take to go: etcd's leader checks every 500 ms
/// and revokes through raft; faultline-store's servers check every 500 ms.
const EXPIRY_SLACK: Duration = Duration::from_secs(3);
/// Client-chosen IDs come from this small pool, so a grant sometimes names a taken one.
const CLIENT_IDS: std::ops::Range<i64> = 0x1000..0x1006;
/// An ID no grant in a sequence ever uses.
const NEVER_GRANTED: i64 = 0x0bad_1ea5e;

/// Which lease an operation names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The lease of the sequence's `n`-th grant (whatever ID each side gave it).
    Grant(usize),
    /// An ID no grant used.
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LeaseOp {
    /// Grant number `lease`: the client's `id`, or the server's choice when 0.
    Grant {
        lease: usize,
        ttl: i64,
        id: i64,
    },
    /// Put `key` attached to a lease, plainly or as a Txn's only write.
    Attach {
        key: String,
        value: String,
        lease: Target,
        txn: bool,
    },
    KeepAlive {
        lease: Target,
    },
    Revoke {
        lease: Target,
    },
    TimeToLive {
        lease: Target,
        keys: bool,
    },
    Leases,
    /// Grant number `lease` with a short TTL, attach `key`, and wait for the lease to expire.
    Expire {
        lease: usize,
        ttl: i64,
        key: String,
        value: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Grant(n) => write!(f, "lease#{n}"),
            Target::Never => write!(f, "{NEVER_GRANTED:x} (never granted)"),
        }
    }
}

impl fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseOp::Grant { lease, ttl, id } => {
                write!(f, "lease grant {ttl} as lease#{lease}")?;
                if *id != 0 {
                    write!(f, " with ID {id:x}")?;
                }
                Ok(())
            }
            LeaseOp::Attach {
                key,
                value,
                lease,
                txn,
            } => write!(
                f,
                "{}put {key} {value:?} --lease={lease}",
                if *txn { "txn: " } else { "" }
            ),
            LeaseOp::KeepAlive { lease } => write!(f, "lease keep-alive --once {lease}"),
            LeaseOp::Revoke { lease } => write!(f, "lease revoke {lease}"),
            LeaseOp::TimeToLive { lease, keys } => write!(
                f,
                "lease timetolive {lease}{}",
                if *keys { " --keys" } else { "" }
            ),
            LeaseOp::Leases => write!(f, "lease list"),
            LeaseOp::Expire {
                lease,
                ttl,
                key,
                value,
            } => write!(
                f,
                "lease grant {ttl} as lease#{lease}, put {key} {value:?} on it, wait for it to expire"
            ),
        }
    }
}

/// What a side answered to a lease operation. IDs are as the side gave them until `named`.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseReply {
    Granted {
        revision: i64,
        id: i64,
        ttl: i64,
    },
    Revoked {
        revision: i64,
    },
    KeptAlive {
        id: i64,
        ttl: i64,
    },
    TimeToLive {
        revision: i64,
        id: i64,
        ttl: i64,
        granted_ttl: i64,
        keys: Vec<String>,
    },
    Leases {
        revision: i64,
        ids: Vec<i64>,
    },
    /// An expiry: the grant's and the attaching put's answers, whether the lease was still alive
    /// just before its TTL (not expired early) and gone within the slack after it, and the key
    /// read once it went.
    Expired {
        grant: Box<Answer>,
        attach: Box<Answer>,
        alive_before_ttl: bool,
        gone_in_time: bool,
        after: Box<Answer>,
    },
}

fn revision(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

impl LeaseReply {
    /// The reply's fields, as `Answer::fields` lists them.
    pub fn fields(&self) -> Vec<(String, String)> {
        let f = |k: &str, v: String| (k.to_string(), v);
        match self {
            LeaseReply::Granted { revision, id, ttl } => vec![
                f("header.revision", revision.to_string()),
                f("ID", id_name(*id)),
                f("TTL", ttl.to_string()),
            ],
            LeaseReply::Revoked { revision } => vec![f("header.revision", revision.to_string())],
            LeaseReply::KeptAlive { id, ttl } => {
                vec![f("ID", id_name(*id)), f("TTL", ttl.to_string())]
            }
            LeaseReply::TimeToLive {
                revision,
                id,
                ttl,
                granted_ttl,
                keys,
            } => vec![
                f("header.revision", revision.to_string()),
                f("ID", id_name(*id)),
                f("TTL", ttl.to_string()),
                f("grantedTTL", granted_ttl.to_string()),
                f("keys", format!("{keys:?}")),
            ],
            LeaseReply::Leases { revision, ids } => {
                let names: Vec<String> = ids.iter().map(|id| id_name(*id)).collect();
                vec![
                    f("header.revision", revision.to_string()),
                    f("leases", names.join(", ")),
                ]
            }
            LeaseReply::Expired {
                grant,
                attach,
                alive_before_ttl,
                gone_in_time,
                after,
            } => {
                let mut out = Vec::new();
                for (at, a) in [("grant.", grant), ("put.", attach)] {
                    out.extend(a.fields().into_iter().map(|(k, v)| (format!("{at}{k}"), v)));
                }
                out.push(f("alive before its TTL", alive_before_ttl.to_string()));
                out.push(f("gone within 3 s after its TTL", gone_in_time.to_string()));
                out.extend(
                    after
                        .fields()
                        .into_iter()
                        .map(|(k, v)| (format!("get after expiry.{k}"), v)),
                );
                out
            }
        }
    }
}

/// A lease ID as a report shows it: `lease#n` once named, else the side's own ID in hex.
fn id_name(id: i64) -> String {
    if id < 0 {
        format!("lease#{}", -id - 1)
    } else {
        format!("{id:x}")
    }
}

/// The IDs one side's grants got, by grant number (`None`: the grant was refused).
#[derive(Default)]
pub struct Grants(Vec<Option<i64>>);

impl Grants {
    fn record(&mut self, n: usize, id: Option<i64>) {
        if self.0.len() <= n {
            self.0.resize(n + 1, None);
        }
        self.0[n] = id;
    }

    /// The ID a target means on this side; a refused grant's stands in as never granted.
    fn id(&self, t: Target) -> i64 {
        match t {
            Target::Grant(n) => self.0.get(n).copied().flatten().unwrap_or(NEVER_GRANTED),
            Target::Never => NEVER_GRANTED,
        }
    }

    fn name(&self, id: i64) -> i64 {
        match self.0.iter().position(|g| *g == Some(id) && id != 0) {
            Some(n) => -(n as i64) - 1,
            None => id,
        }
    }

    /// The answer with every lease ID this side granted replaced by its grant number (a key's
    /// `lease` field reads -(n+1) for grant n), so sides that chose different IDs compare.
    pub fn named(&self, mut answer: Answer) -> Answer {
        self.rename(&mut answer);
        answer
    }

    /// Events (what etcd 3.4.23 would have served a watch) with their lease IDs named.
    pub fn named_events(&self, events: Vec<Event>) -> Vec<Event> {
        let outcome = Answer::Watch(crate::answer::WatchOutcome {
            events,
            cancel: None,
        });
        match self.named(outcome) {
            Answer::Watch(o) => o.events,
            _ => unreachable!("a watch outcome stays one"),
        }
    }

    fn rename(&self, answer: &mut Answer) {
        let kv = |kv: &mut KeyValue| kv.lease = self.name(kv.lease);
        match answer {
            Answer::Range(r) => r.kvs.iter_mut().for_each(kv),
            Answer::Put(p) => p.prev_kv.iter_mut().for_each(kv),
            Answer::Delete(d) => d.prev_kvs.iter_mut().for_each(kv),
            Answer::Txn(t) => {
                for r in &mut t.responses {
                    match &mut r.response {
                        Some(response_op::Response::ResponseRange(r)) => {
                            r.kvs.iter_mut().for_each(kv)
                        }
                        Some(response_op::Response::ResponsePut(p)) => {
                            p.prev_kv.iter_mut().for_each(kv)
                        }
                        Some(response_op::Response::ResponseDeleteRange(d)) => {
                            d.prev_kvs.iter_mut().for_each(kv)
                        }
                        _ => {}
                    }
                }
            }
            Answer::Watch(o) => {
                for e in &mut o.events {
                    e.kv.iter_mut().for_each(kv);
                    e.prev_kv.iter_mut().for_each(kv);
                }
            }
            Answer::Lease(reply) => match reply {
                LeaseReply::Granted { id, .. }
                | LeaseReply::KeptAlive { id, .. }
                | LeaseReply::TimeToLive { id, .. } => *id = self.name(*id),
                LeaseReply::Leases { ids, .. } => {
                    ids.iter_mut().for_each(|id| *id = self.name(*id));
                    ids.sort_unstable();
                }
                LeaseReply::Revoked { .. } => {}
                LeaseReply::Expired {
                    grant,
                    attach,
                    after,
                    ..
                } => {
                    for a in [grant, attach, after] {
                        self.rename(a);
                    }
                }
            },
            _ => {}
        }
    }
}

/// The lease ops' share of drawn operations, in percent.
pub const DRAWN_PERCENT: u32 = 14;

/// Draws one lease operation. `model` gives the live leases and the keys attached to them.
pub fn draw(
    rng: &mut StdRng,
    model: &ModelLeases,
    mvcc: &Mvcc,
    key: String,
    value: String,
) -> LeaseOp {
    let granted = model.grants.0.len();
    let target = |rng: &mut StdRng| -> Target {
        if granted == 0 || rng.gen_bool(0.1) {
            Target::Never
        } else {
            Target::Grant(rng.gen_range(0..granted))
        }
    };
    let id = |rng: &mut StdRng| {
        if rng.gen_bool(0.5) {
            0
        } else {
            rng.gen_range(CLIENT_IDS)
        }
    };
    match rng.gen_range(0..100) {
        0..=24 => LeaseOp::Grant {
            lease: granted,
            ttl: if rng.gen_bool(0.05) {
                MAX_TTL + rng.gen_range(1..=3)
            } else {
                rng.gen_range(600..=3600)
            },
            id: id(rng),
        },
        25..=49 => {
            // Never onto a live lease that holds another key (one key per lease); a gone
            // lease or one never granted is fine: every side refuses it.
            let full = |n: usize| {
                let id = model.grants.id(Target::Grant(n));
                model.live.contains_key(&id) && model.attached(mvcc, id).iter().any(|k| *k != key)
            };
            let open: Vec<usize> = (0..granted).filter(|&n| !full(n)).collect();
            let lease = if open.is_empty() || rng.gen_bool(0.1) {
                Target::Never
            } else {
                Target::Grant(open[rng.gen_range(0..open.len())])
            };
            LeaseOp::Attach {
                key,
                value,
                lease,
                txn: rng.gen_bool(0.3),
            }
        }
        50..=62 => LeaseOp::KeepAlive { lease: target(rng) },
        63..=74 => LeaseOp::Revoke { lease: target(rng) },
        75..=86 => LeaseOp::TimeToLive {
            lease: target(rng),
            keys: rng.gen_bool(0.5),
        },
        87..=92 => LeaseOp::Leases,
        _ => LeaseOp::Expire {
            lease: granted,
            ttl: rng.gen_range(1..=3),
            key,
            value,
        },
    }
}

fn put_request(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        ..Default::default()
    }
}

fn in_txn(put: PutRequest) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        failure: vec![],
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn error(e: StoreError) -> Answer {
    Answer::from_status(&tonic::Status::from(e))
}

/// The reference lessor of the MVCC side: etcd 3.4's lease rules over faultline's etcd MVCC.
#[derive(Default)]
pub struct ModelLeases {
    pub grants: Grants,
    /// Live leases: granted TTL and when last granted or renewed.
    live: BTreeMap<i64, (i64, Instant)>,
}

impl ModelLeases {
    /// The live keys attached to lease `id`, by name.
    fn attached(&self, mvcc: &Mvcc, id: i64) -> Vec<String> {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let kvs = mvcc.range(&all).map(|r| r.kvs).unwrap_or_default();
        kvs.into_iter()
            .filter(|kv| kv.lease == id && id != 0)
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    fn grant(&mut self, mvcc: &Mvcc, lease: usize, ttl: i64, id: i64) -> Answer {
        self.grants.record(lease, None);
        if ttl > MAX_TTL {
            return error(StoreError::LeaseTtlTooLarge);
        }
        // The model's own choice for ID 0: any unique ID does, sides are compared by grant.
        let id = if id == 0 {
            0x7000_0000 + lease as i64
        } else {
            id
        };
        if self.live.contains_key(&id) {
            return error(StoreError::LeaseExists);
        }
        let ttl = ttl.max(MIN_TTL);
        self.live.insert(id, (ttl, Instant::now()));
        self.grants.record(lease, Some(id));
        Answer::Lease(LeaseReply::Granted {
            revision: mvcc.current_revision(),
            id,
            ttl,
        })
    }

    /// Deletes the lease's keys in one transaction (one revision, as etcd's lessor does).
    fn revoke(&mut self, mvcc: &mut Mvcc, id: i64) {
        let deletes = self
            .attached(mvcc, id)
            .into_iter()
            .map(|key| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    store::proto::etcdserverpb::DeleteRangeRequest {
                        key: key.into_bytes(),
                        ..Default::default()
                    },
                )),
            })
            .collect::<Vec<_>>();
        if !deletes.is_empty() {
            mvcc.txn(&TxnRequest {
                compare: vec![],
                success: deletes,
                failure: vec![],
            })
            .expect("deleting keys cannot fail");
        }
        self.live.remove(&id);
    }

    fn attach(&mut self, mvcc: &mut Mvcc, key: &str, value: &str, id: i64, txn: bool) -> Answer {
        if !self.live.contains_key(&id) {
            return error(StoreError::LeaseNotFound);
        }
        let put = put_request(key, value, id);
        let header = |m: &Mvcc| {
            Some(ResponseHeader {
                revision: m.current_revision(),
                ..Default::default()
            })
        };
        if txn {
            let mut t = mvcc.txn(&in_txn(put)).expect("a put cannot fail");
            t.header = header(mvcc);
            Answer::Txn(t)
        } else {
            let mut p = mvcc.put(&put).expect("a put attaching a key cannot fail");
            p.header = header(mvcc);
            Answer::Put(p)
        }
    }

    fn read(mvcc: &Mvcc, key: &str) -> Answer {
        let mut r = mvcc.range(&get(key)).expect("a read now cannot fail");
        r.header = Some(ResponseHeader {
            revision: mvcc.current_revision(),
            ..Default::default()
        });
        Answer::Range(r)
    }

    pub fn apply(&mut self, op: &LeaseOp, mvcc: &mut Mvcc) -> Answer {
        let current = mvcc.current_revision();
        match op {
            LeaseOp::Grant { lease, ttl, id } => self.grant(mvcc, *lease, *ttl, *id),
            LeaseOp::Attach {
                key,
                value,
                lease,
                txn,
            } => self.attach(mvcc, key, value, self.grants.id(*lease), *txn),
            LeaseOp::KeepAlive { lease } => {
                let id = self.grants.id(*lease);
                let ttl = match self.live.get_mut(&id) {
                    Some((ttl, renewed)) => {
                        *renewed = Instant::now();
                        *ttl
                    }
                    None => 0,
                };
                Answer::Lease(LeaseReply::KeptAlive { id, ttl })
            }
            LeaseOp::Revoke { lease } => {
                let id = self.grants.id(*lease);
                if !self.live.contains_key(&id) {
                    return error(StoreError::LeaseNotFound);
                }
                self.revoke(mvcc, id);
                Answer::Lease(LeaseReply::Revoked {
                    revision: mvcc.current_revision(),
                })
            }
            LeaseOp::TimeToLive { lease, keys } => {
                let id = self.grants.id(*lease);
                let (ttl, granted_ttl, keys) = match self.live.get(&id) {
                    Some((ttl, renewed)) => (
                        (*ttl - renewed.elapsed().as_millis() as i64 / 1000 - 1).max(0),
                        *ttl,
                        if *keys {
                            self.attached(mvcc, id)
                        } else {
                            vec![]
                        },
                    ),
                    None => (-1, 0, vec![]),
                };
                Answer::Lease(LeaseReply::TimeToLive {
                    revision: current,
                    id,
                    ttl,
                    granted_ttl,
                    keys,
                })
            }
            LeaseOp::Leases => Answer::Lease(LeaseReply::Leases {
                revision: current,
                ids: self.live.keys().copied().collect(),
            }),
            LeaseOp::Expire {
                lease,
                ttl,
                key,
                value,
            } => {
                let grant = self.grant(mvcc, *lease, *ttl, 0);
                let id = self.grants.id(Target::Grant(*lease));
                let attach = self.attach(mvcc, key, value, id, false);
                self.revoke(mvcc, id);
                Answer::Lease(LeaseReply::Expired {
                    grant: Box::new(grant),
                    attach: Box::new(attach),
                    alive_before_ttl: true,
                    gone_in_time: true,
                    after: Box::new(Self::read(mvcc, key)),
                })
            }
        }
    }
}

/// Runs one lease operation on a side over gRPC, recording the IDs its grants got.
pub async fn apply_grpc(side: &mut GrpcSide, op: &LeaseOp) -> Answer {
    let mut leases = LeaseClient::new(side.channel.clone());
    let status = |s: tonic::Status| Answer::from_status(&s);
    match op {
        LeaseOp::Grant { lease, ttl, id } => {
            let answer = leases
                .lease_grant(LeaseGrantRequest { ttl: *ttl, id: *id })
                .await;
            side.leases
                .record(*lease, answer.as_ref().ok().map(|r| r.get_ref().id));
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    Answer::Lease(LeaseReply::Granted {
                        revision: revision(&r.header),
                        id: r.id,
                        ttl: r.ttl,
                    })
                }
                Err(s) => status(s),
            }
        }
        LeaseOp::Attach {
            key,
            value,
            lease,
            txn,
        } => {
            let put = put_request(key, value, side.leases.id(*lease));
            if *txn {
                side.kv(crate::ops::Request::Txn(in_txn(put))).await
            } else {
                side.kv(crate::ops::Request::Put(put)).await
            }
        }
        LeaseOp::KeepAlive { lease } => {
            let id = side.leases.id(*lease);
            let once = futures::stream::iter([LeaseKeepAliveRequest { id }]);
            match leases.lease_keep_alive(once).await {
                Ok(r) => match r.into_inner().message().await {
                    Ok(Some(r)) => Answer::Lease(LeaseReply::KeptAlive {
                        id: r.id,
                        ttl: r.ttl,
                    }),
                    Ok(None) => Answer::Silent("the keep-alive stream ended unanswered".into()),
                    Err(s) => status(s),
                },
                Err(s) => status(s),
            }
        }
        LeaseOp::Revoke { lease } => {
            let id = side.leases.id(*lease);
            match leases.lease_revoke(LeaseRevokeRequest { id }).await {
                Ok(r) => Answer::Lease(LeaseReply::Revoked {
                    revision: revision(&r.into_inner().header),
                }),
                Err(s) => status(s),
            }
        }
        LeaseOp::TimeToLive { lease, keys } => {
            time_to_live(&mut leases, side.leases.id(*lease), *keys).await
        }
        LeaseOp::Leases => match leases.lease_leases(LeaseLeasesRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                Answer::Lease(LeaseReply::Leases {
                    revision: revision(&r.header),
                    ids: r.leases.iter().map(|l| l.id).collect(),
                })
            }
            Err(s) => status(s),
        },
        LeaseOp::Expire {
            lease,
            ttl,
            key,
            value,
        } => {
            let sent = Instant::now();
            let grant = leases
                .lease_grant(LeaseGrantRequest { ttl: *ttl, id: 0 })
                .await;
            side.leases
                .record(*lease, grant.as_ref().ok().map(|r| r.get_ref().id));
            let (id, granted_ttl) = match &grant {
                Ok(r) => (r.get_ref().id, r.get_ref().ttl),
                Err(_) => (NEVER_GRANTED, 0),
            };
            let grant = match grant {
                Ok(r) => {
                    let r = r.into_inner();
                    Answer::Lease(LeaseReply::Granted {
                        revision: revision(&r.header),
                        id: r.id,
                        ttl: r.ttl,
                    })
                }
                Err(s) => status(s),
            };
            let attach = side
                .kv(crate::ops::Request::Put(put_request(key, value, id)))
                .await;
            let ttl = Duration::from_secs(granted_ttl.max(0) as u64);
            tokio::time::sleep_until((sent + ttl.saturating_sub(ALIVE_MARGIN)).into()).await;
            // Gone in an answer that came back before the TTL had passed since the grant was
            // sent: expired early. Gone in a later answer (a slow machine) proves nothing.
            let gone_then = matches!(
                time_to_live(&mut leases, id, false).await,
                Answer::Lease(LeaseReply::TimeToLive { ttl: -1, .. })
            );
            let alive_before_ttl = !(gone_then && sent.elapsed() < ttl);
            let gone_in_time = loop {
                let gone = matches!(
                    time_to_live(&mut leases, id, false).await,
                    Answer::Lease(LeaseReply::TimeToLive { ttl: -1, .. })
                );
                if gone || sent.elapsed() > ttl + EXPIRY_SLACK {
                    break gone;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // The lease may leave the lessor a moment before its keys' deletes are readable.
            let mut after = side.kv(crate::ops::Request::Range(get(key))).await;
            for _ in 0..20 {
                if !matches!(&after, Answer::Range(r) if !r.kvs.is_empty()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                after = side.kv(crate::ops::Request::Range(get(key))).await;
            }
            Answer::Lease(LeaseReply::Expired {
                grant: Box::new(grant),
                attach: Box::new(attach),
                alive_before_ttl,
                gone_in_time,
                after: Box::new(after),
            })
        }
    }
}

async fn time_to_live(leases: &mut LeaseClient<Channel>, id: i64, keys: bool) -> Answer {
    match leases
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let mut names: Vec<String> = r
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            names.sort();
            Answer::Lease(LeaseReply::TimeToLive {
                revision: revision(&r.header),
                id: r.id,
                ttl: r.ttl,
                granted_ttl: r.granted_ttl,
                keys: names,
            })
        }
        Err(s) => Answer::from_status(&s),
    }
}

/// The `lease-ttl-clock` allowance: a remaining TTL is read off each server's clock a few
/// milliseconds apart and truncated to whole seconds, so two live answers may differ by one.
pub fn ttl_within_a_second(etcd: &Answer, other: &mut Answer) -> bool {
    let (
        Answer::Lease(LeaseReply::TimeToLive { ttl: e, .. }),
        Answer::Lease(LeaseReply::TimeToLive { ttl: o, .. }),
    ) = (etcd, other)
    else {
        return false;
    };
    let close = *e >= 0 && *o >= 0 && *e != *o && (*e - *o).abs() <= 1;
    if close {
        *o = *e;
    }
    close
}

/// The `kine-prev-kv-lease` allowance: kine's row keeps the previous value (old_value) but not
/// the previous lease, so a watch event's prev_kv reads lease 0 where etcd names it.
pub fn kine_prev_kv_lease(etcd: &Answer, kine: &mut Answer) -> bool {
    let (Answer::Watch(e), Answer::Watch(k)) = (etcd, kine) else {
        return false;
    };
    let mut changed = false;
    for ev in &mut k.events {
        let id = ev.kv.as_ref().map(|kv| (kv.mod_revision, kv.key.clone()));
        let Some(prev) = ev.prev_kv.as_mut().filter(|p| p.lease == 0) else {
            continue;
        };
        let etcd_lease = e
            .events
            .iter()
            .find(|x| x.kv.as_ref().map(|kv| (kv.mod_revision, kv.key.clone())) == id)
            .and_then(|x| x.prev_kv.as_ref())
            .map_or(0, |p| p.lease);
        if etcd_lease != 0 {
            prev.lease = etcd_lease;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::WatchOutcome;
    use store::design::CompactionVariant;

    fn ttl_answer(ttl: i64) -> Answer {
        Answer::Lease(LeaseReply::TimeToLive {
            revision: 3,
            id: -1,
            ttl,
            granted_ttl: 600,
            keys: vec![],
        })
    }

    #[test]
    fn lease_ttl_clock_hides_one_second_and_nothing_else() {
        let mut o = ttl_answer(598);
        assert!(ttl_within_a_second(&ttl_answer(599), &mut o));
        assert_eq!(o, ttl_answer(599));
        let mut far = ttl_answer(597);
        assert!(!ttl_within_a_second(&ttl_answer(599), &mut far));
        let mut gone = ttl_answer(-1);
        assert!(
            !ttl_within_a_second(&ttl_answer(0), &mut gone),
            "-1 is not a clock"
        );
    }

    fn event(prev_lease: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: b"/k".to_vec(),
                mod_revision: 5,
                ..Default::default()
            }),
            prev_kv: Some(KeyValue {
                key: b"/k".to_vec(),
                mod_revision: 4,
                lease: prev_lease,
                ..Default::default()
            }),
        }
    }

    fn watched(prev_lease: i64) -> Answer {
        Answer::Watch(WatchOutcome {
            events: vec![event(prev_lease)],
            cancel: None,
        })
    }

    #[test]
    fn kine_prev_kv_lease_fills_only_a_missing_lease() {
        let mut k = watched(0);
        assert!(kine_prev_kv_lease(&watched(-1), &mut k));
        assert_eq!(k, watched(-1));
        let mut wrong = watched(-2);
        assert!(!kine_prev_kv_lease(&watched(-1), &mut wrong));
        assert_eq!(
            wrong,
            watched(-2),
            "a different lease is still a difference"
        );
    }

    #[test]
    fn ids_are_named_by_grant_so_different_choices_compare() {
        let mut a = Grants::default();
        let mut b = Grants::default();
        a.record(0, Some(0x694d));
        b.record(0, Some(0x7000_0000));
        let granted = |id| {
            Answer::Lease(LeaseReply::Granted {
                revision: 1,
                id,
                ttl: 600,
            })
        };
        assert_eq!(a.named(granted(0x694d)), b.named(granted(0x7000_0000)));
        assert_ne!(a.named(granted(0x694d)), b.named(granted(0x694d)));
    }

    #[test]
    fn the_model_revokes_a_leases_key_at_one_new_revision() {
        let mut mvcc = Mvcc::new(CompactionVariant::Fixed);
        let mut model = ModelLeases::default();
        model.apply(
            &LeaseOp::Grant {
                lease: 0,
                ttl: 600,
                id: 0,
            },
            &mut mvcc,
        );
        let attach = LeaseOp::Attach {
            key: "/k".into(),
            value: "v".into(),
            lease: Target::Grant(0),
            txn: false,
        };
        assert!(matches!(model.apply(&attach, &mut mvcc), Answer::Put(_)));
        let before = mvcc.current_revision();
        let revoked = model.apply(
            &LeaseOp::Revoke {
                lease: Target::Grant(0),
            },
            &mut mvcc,
        );
        assert_eq!(
            revoked,
            Answer::Lease(LeaseReply::Revoked {
                revision: before + 1
            })
        );
        assert!(matches!(
            model.apply(&attach, &mut mvcc),
            Answer::Error { code, .. } if code == "NotFound"
        ));
    }
}

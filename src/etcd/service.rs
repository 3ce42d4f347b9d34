//! The etcd v3 gRPC services (KV, Watch, Lease, Maintenance) of an etcd member.
//!
//! Writes go through the raft log and answer once this member applied them; linearizable reads
//! wait for a ReadIndex barrier, serializable reads are served from the local store as it is.
//! Nothing is served before the member is ready (its publish applied after a start).
//! It never writes the store itself: only the member's raft loop does.

// tonic's `Status` is large and its service traits return it by value.
#![allow(clippy::result_large_err)]

use super::member::{MemberHandle, Outcome, Proposal};
use crate::design::WatchVariant;
use crate::error::StoreError;
use crate::proto::etcdserverpb::{
    kv_server::Kv, lease_server::Lease, maintenance_server::Maintenance, watch_server::Watch,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::server::{compacted_cancel, BoxStream, Outbox, Probe};
use futures::StreamExt as _;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

type Answer<T> = Result<Response<T>, Status>;

/// etcd's default request timeout is 5 s plus election time; clients set their own deadlines.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

#[derive(Clone)]
pub struct MemberApi {
    pub member: MemberHandle,
    pub watch_variant: WatchVariant,
}

impl MemberApi {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let a = self.member.applied.lock().expect("applied lock poisoned");
        Some(ResponseHeader {
            cluster_id: 0xfa17,
            member_id: self.member.id,
            revision: if revision > 0 {
                revision
            } else {
                a.mvcc.current_revision()
            },
            raft_term: a.term,
        })
    }

    async fn write(&self, p: Proposal) -> Result<(Outcome, i64), Status> {
        self.member.serving()?;
        Ok(self.member.propose(p, REQUEST_TIMEOUT).await?)
    }

    async fn read(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        self.member.serving()?;
        if !req.serializable {
            self.member.read_barrier(REQUEST_TIMEOUT).await?;
        }
        let a = self.member.applied.lock().expect("applied lock poisoned");
        let mut resp = a.mvcc.range(req)?;
        drop(a);
        resp.header = self.header(0);
        Ok(resp)
    }
}

#[tonic::async_trait]
impl Kv for MemberApi {
    async fn range(&self, r: Request<RangeRequest>) -> Answer<RangeResponse> {
        Ok(Response::new(self.read(r.get_ref()).await?))
    }

    async fn put(&self, r: Request<PutRequest>) -> Answer<PutResponse> {
        crate::kv_rules::check_request_bytes(prost::Message::encoded_len(r.get_ref()))?;
        match self.write(Proposal::Put(r.into_inner())).await? {
            (Outcome::Put(mut resp), rev) => {
                resp.header = self.header(rev);
                Ok(Response::new(resp))
            }
            other => unreachable!("a put applied as {other:?}"),
        }
    }

    async fn delete_range(&self, r: Request<DeleteRangeRequest>) -> Answer<DeleteRangeResponse> {
        crate::kv_rules::check_request_bytes(prost::Message::encoded_len(r.get_ref()))?;
        match self.write(Proposal::DeleteRange(r.into_inner())).await? {
            (Outcome::DeleteRange(mut resp), rev) => {
                resp.header = self.header(rev);
                Ok(Response::new(resp))
            }
            other => unreachable!("a delete applied as {other:?}"),
        }
    }

    async fn txn(&self, r: Request<TxnRequest>) -> Answer<TxnResponse> {
        crate::kv_rules::check_request_bytes(prost::Message::encoded_len(r.get_ref()))?;
        match self.write(Proposal::Txn(r.into_inner())).await? {
            (Outcome::Txn(mut resp), rev) => {
                resp.header = self.header(rev);
                Ok(Response::new(resp))
            }
            other => unreachable!("a txn applied as {other:?}"),
        }
    }

    async fn compact(&self, r: Request<CompactionRequest>) -> Answer<CompactionResponse> {
        let (_, rev) = self.write(Proposal::Compact(r.into_inner())).await?;
        Ok(Response::new(CompactionResponse {
            header: self.header(rev),
        }))
    }
}

impl MemberApi {
    /// One keep-alive: at the leader (once promoted), the lease lives its full TTL from now and
    /// the answer carries its granted TTL; an unknown or expired lease answers TTL 0. Any other
    /// member refuses with `Unavailable` "etcdserver: not leader" (etcd forwards to the leader
    /// instead): the client retries through another endpoint.
    pub(crate) fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, StoreError> {
        self.member.serving()?;
        let mut a = self.member.applied.lock().expect("applied lock poisoned");
        if !a.lessor.is_primary() {
            return Err(StoreError::NotLeader);
        }
        let ttl = a.lessor.renew(id, tokio::time::Instant::now()).unwrap_or(0);
        drop(a);
        Ok(LeaseKeepAliveResponse {
            header: self.header(0),
            id,
            ttl,
        })
    }
}

/// The etcd member's leases (src/etcd/lease.rs): grants and revokes through raft, renewals and
/// time-to-live at the leader, expiry by the leader.
#[tonic::async_trait]
impl Lease for MemberApi {
    async fn lease_grant(&self, r: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        match self.write(Proposal::LeaseGrant(r.into_inner())).await? {
            (Outcome::LeaseGrant(mut resp), rev) => {
                resp.header = self.header(rev);
                Ok(Response::new(resp))
            }
            other => unreachable!("a lease grant applied as {other:?}"),
        }
    }

    async fn lease_revoke(&self, r: Request<LeaseRevokeRequest>) -> Answer<LeaseRevokeResponse> {
        let (_, rev) = self.write(Proposal::LeaseRevoke(r.into_inner())).await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.header(rev),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    /// Answers each request as it arrives; a refusal ends the stream with its status.
    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        self.member.serving()?;
        let api = self.clone();
        Ok(Response::new(Box::pin(r.into_inner().map(move |req| {
            let req = req?;
            api.keep_alive_once(req.id).map_err(Status::from)
        }))))
    }

    /// At the leader: the whole seconds left, the TTL granted and, with `keys`, the attached
    /// keys in key order; an unknown lease answers TTL -1. Elsewhere: "etcdserver: not leader".
    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Answer<LeaseTimeToLiveResponse> {
        self.member.serving()?;
        let req = r.into_inner();
        let a = self.member.applied.lock().expect("applied lock poisoned");
        if !a.lessor.is_primary() {
            return Err(StoreError::NotLeader.into());
        }
        let resp = match a.lessor.time_to_live(req.id, tokio::time::Instant::now()) {
            None => LeaseTimeToLiveResponse {
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
            Some((ttl, granted_ttl)) => LeaseTimeToLiveResponse {
                id: req.id,
                ttl,
                granted_ttl,
                keys: if req.keys {
                    a.mvcc.keys_with_lease(req.id)
                } else {
                    vec![]
                },
                ..Default::default()
            },
        };
        drop(a);
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(0),
            ..resp
        }))
    }

    /// The leases this member has applied, in ID order (etcd 3.4 answers from the local lessor
    /// on any member).
    async fn lease_leases(&self, _r: Request<LeaseLeasesRequest>) -> Answer<LeaseLeasesResponse> {
        self.member.serving()?;
        let ids = self
            .member
            .applied
            .lock()
            .expect("applied lock poisoned")
            .lessor
            .leases();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(0),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for MemberApi {
    async fn status(&self, _r: Request<StatusRequest>) -> Answer<StatusResponse> {
        self.member.serving()?;
        let a = self.member.applied.lock().expect("applied lock poisoned");
        let resp = StatusResponse {
            header: None,
            version: "3.5.0-faultline".into(),
            leader: a.leader,
            raft_index: a.last_index,
            raft_term: a.term,
            raft_applied_index: a.mvcc.consistent_index(),
            ..Default::default()
        };
        drop(a);
        Ok(Response::new(StatusResponse {
            header: self.header(0),
            ..resp
        }))
    }
}

impl MemberApi {
    /// One watcher: sends every event from `start_revision` on, one response per revision, as
    /// the member applies them; ends cancelled when its start is compacted.
    async fn run_watcher(
        self,
        watch_id: i64,
        create: WatchCreateRequest,
        mut probes: tokio::sync::mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) {
        let mut next = if create.start_revision > 0 {
            create.start_revision
        } else {
            self.member
                .applied
                .lock()
                .expect("applied lock poisoned")
                .mvcc
                .current_revision()
                + 1
        };
        let applied = self.member.progress.clone();
        loop {
            if let Err(e) = self.member.serving() {
                // The member halted: its streams break, as a dead process's would.
                let _ = outbox.send(Err(e.into())).await;
                return;
            }
            let seen = applied.get();
            let (events, current) = {
                let a = self.member.applied.lock().expect("applied lock poisoned");
                (
                    a.mvcc.watch_events(
                        &create,
                        next,
                        self.watch_variant == WatchVariant::Etcd18089,
                    ),
                    a.mvcc.current_revision(),
                )
            };
            let events = match events {
                Ok(e) => e,
                // What the client may resume from: a cancelled watch restarts there.
                Err(compact) => {
                    crate::probe!("watch.etcd.cancelled_as_compacted");
                    let cancel = compacted_cancel(self.header(current), watch_id, compact);
                    let _ = outbox.send(Ok(cancel)).await;
                    return;
                }
            };
            let mut by_rev: BTreeMap<i64, Vec<_>> = BTreeMap::new();
            for (rev, e) in events {
                by_rev.entry(rev).or_default().push(e);
            }
            for (rev, events) in by_rev {
                next = rev + 1;
                let resp = WatchResponse {
                    header: self.header(rev),
                    watch_id,
                    events,
                    ..Default::default()
                };
                if outbox.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            next = next.max(current + 1);
            tokio::select! {
                biased;
                _ = applied.next_change(seen) => {}
                // Everything up to `next - 1` is in the outbox already.
                Some(probe) = probes.recv() => {
                    let _ = probe.send(next - 1);
                }
            }
        }
    }
}

impl crate::server::WatchBackend for MemberApi {
    async fn current_revision(&self) -> i64 {
        let a = self.member.applied.lock().expect("applied lock poisoned");
        a.mvcc.current_revision()
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        MemberApi::header(self, revision)
    }

    fn start_watcher(
        &self,
        watch_id: i64,
        create: WatchCreateRequest,
        probes: tokio::sync::mpsc::Receiver<Probe>,
        outbox: Outbox,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_watcher(watch_id, create, probes, outbox))
    }
}

#[tonic::async_trait]
impl Watch for MemberApi {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, r: Request<Streaming<WatchRequest>>) -> Answer<Self::WatchStream> {
        self.member.serving()?;
        Ok(Response::new(crate::server::serve_watch_stream(
            self.clone(),
            r.into_inner(),
        )))
    }
}

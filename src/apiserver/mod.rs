//! The Kubernetes apiserver facade: what controllers reach instead of the etcd API.
//!
//! Requests and answers are typed values with HTTP status codes rather than real HTTP. It serves
//! GET, chunked LIST with continue tokens (and 410 Expired with an rv=-1 token once the first
//! page's revision is compacted), create/update/delete with optimistic concurrency, WATCH from a
//! resourceVersion with bookmarks, WatchList with its validation (`watch.rs`, over kine or etcd),
//! and `/readyz` with named checks, per SEMANTICS.md section 3. Watches are streams over the
//! simulated network: the first message is the request, every later one an answer, so a
//! partition stalls them as it would a TCP connection, and clients keep a deadline.

#[cfg(test)]
mod tests;
mod token;
mod watch;

pub use token::{decode_continue, encode_continue};

use crate::design::{ApiServerVariant, WatchListVariant};
use crate::error::StoreError;
use crate::kine::store::KineStore;
use crate::kine::watch::WatchHub;
use crate::proto::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use crate::proto::etcdserverpb::{RangeResponse, TxnResponse};
use madsim::net::rpc::Request;
#[cfg(madsim)]
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
#[cfg(madsim)]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where every object lives in the key space.
pub const REGISTRY: &str = "/registry/";
/// The annotation on the bookmark that ends a WatchList's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// How often a watch with bookmarks allowed gets one (it doubles as the stream's keepalive).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// The key prefix of a resource, with its trailing slash.
pub fn resource_prefix(resource: &str) -> String {
    format!("{REGISTRY}{resource}/")
}

/// The key prefix a LIST or WATCH covers: a resource, or one namespace of it.
pub fn list_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{REGISTRY}{resource}/{ns}/"),
        None => resource_prefix(resource),
    }
}

/// The key of one object.
pub fn object_key(resource: &str, namespace: &str, name: &str) -> String {
    format!("{REGISTRY}{resource}/{namespace}/{name}")
}

/// An object as the apiserver returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub key: String,
    /// The object's resourceVersion: the revision that last wrote it.
    pub resource_version: i64,
    pub value: String,
}

/// A refusal or failure, as a Kubernetes `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// Set on 410 Expired for a compacted continuation: the token that lists the remainder.
    pub continue_token: Option<String>,
}

impl Status {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            continue_token: None,
        }
    }

    fn from_store(e: &StoreError) -> Self {
        match e {
            StoreError::Compacted => Status::new(410, "Expired", e.to_string()),
            StoreError::FutureRevision => Status::new(504, "Timeout", e.to_string()),
            StoreError::OutcomeUnknown
            | StoreError::NoLeader
            | StoreError::NotServing(_)
            | StoreError::NotLeader => Status::new(504, "Timeout", e.to_string()),
            StoreError::Database(_)
            | StoreError::Unsupported(_)
            | StoreError::LeaseNotFound
            | StoreError::LeaseExists
            | StoreError::LeaseTtlTooLarge => Status::new(500, "InternalError", e.to_string()),
        }
    }
}

/// One request to the facade (everything but watches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiRequest {
    Get {
        resource: String,
        namespace: String,
        name: String,
    },
    /// LIST of a resource across namespaces. `limit` 0 = everything; `continue_token` continues
    /// a chunked list. On a first page, `resource_version` as Kubernetes reads it: none is a
    /// consistent read (the latest revision), 0 is any revision, R with
    /// `resource_version_match` NotOlderThan is any revision >= R, R with Exact (or with no
    /// match, as this facade always took it) is exactly R.
    List {
        resource: String,
        /// One namespace, or every namespace.
        namespace: Option<String>,
        limit: i64,
        continue_token: Option<String>,
        resource_version: Option<i64>,
        resource_version_match: Option<ResourceVersionMatch>,
    },
    Create {
        resource: String,
        namespace: String,
        name: String,
        value: String,
    },
    /// Update guarded by the resourceVersion the client last saw.
    Update {
        resource: String,
        namespace: String,
        name: String,
        value: String,
        resource_version: i64,
    },
    Delete {
        resource: String,
        namespace: String,
        name: String,
        resource_version: i64,
    },
    Readyz,
}

/// `resourceVersionMatch` on a LIST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceVersionMatch {
    NotOlderThan,
    Exact,
}

/// A LIST page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectList {
    pub items: Vec<Object>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
    pub remaining_item_count: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiResponse {
    Object(Object),
    List(ObjectList),
    /// A successful delete: the revision of the deletion.
    Deleted {
        resource_version: i64,
    },
    Status(Status),
    /// `/readyz`: 200 when every named check passes, else 500; one line per check.
    Readyz {
        code: u16,
        checks: Vec<String>,
    },
}

/// The message a client sends for one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiCall(pub ApiRequest);

impl Request for ApiCall {
    type Response = ApiResponse;
    const ID: u64 = madsim::net::rpc::hash_str("faultline.apiserver.ApiCall");
}

/// A WATCH or WatchList request, the first message on a watch stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub resource: String,
    pub resource_version: Option<i64>,
    pub send_initial_events: bool,
    /// `resourceVersionMatch`, e.g. `NotOlderThan`.
    pub resource_version_match: Option<String>,
    pub allow_watch_bookmarks: bool,
    pub continue_token: Option<String>,
    /// Content types the client accepts (`application/json`, or only the Table format).
    pub accept: Vec<String>,
}

/// The Table format's content type, as a client asking for Table rows sends it.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub const ACCEPT_JSON: &str = "application/json";

impl WatchRequest {
    /// True for `sendInitialEvents=true` (a WatchList).
    pub fn is_watch_list(&self) -> bool {
        self.send_initial_events
    }

    fn accepts_only_table(&self) -> bool {
        !self.accept.is_empty() && self.accept.iter().all(|a| a.contains("as=Table"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

/// One message on a watch stream after the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchMessage {
    /// The watch was refused or ended with this status (a 410 Expired, a 422, a 406).
    Status(Status),
    Event {
        kind: EventType,
        object: Object,
        /// Only on the bookmark that ends a WatchList's initial events.
        initial_events_end: bool,
    },
}

/// The first key after every key with `prefix` (etcd's prefix range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The apiserver's Txn: if mod_revision(key) == expected then put (or delete) else get.
pub fn guarded_txn(key: &str, expected: i64, value: Option<&str>) -> TxnRequest {
    let key_bytes = key.as_bytes().to_vec();
    let write = match value {
        Some(v) => request_op::Request::RequestPut(PutRequest {
            key: key_bytes.clone(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        }),
        None => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key_bytes.clone(),
            ..Default::default()
        }),
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key_bytes.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(expected)),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(write),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key_bytes,
                ..Default::default()
            })),
        }],
    }
}

/// The key the Kubernetes apiservers agree on compactions through.
pub const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

/// One tick of the Kubernetes apiserver's compactor, as its state between ticks: the version of
/// `compact_rev_key` it last saw and the revision its last Txn was answered at (the next
/// compaction's target). Each tick sends [`CompactRevKey::txn`]; [`CompactRevKey::answered`]
/// says whether to compact and where, so every apiserver may run it and only one compacts per
/// interval, one interval behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactRevKey {
    pub version: i64,
    pub revision: i64,
}

impl CompactRevKey {
    /// If `compact_rev_key` is still at the version this apiserver saw, bump it (recording the
    /// revision to compact), else read it.
    pub fn txn(&self) -> TxnRequest {
        let key = COMPACT_REV_KEY.to_vec();
        TxnRequest {
            compare: vec![Compare {
                key: key.clone(),
                target: compare::CompareTarget::Version as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::Version(self.version)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.revision.to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        }
    }

    /// Takes the Txn's answer: the revision to compact to now (this apiserver won, and it is not
    /// the first tick), or `None` (another apiserver compacted this interval: its version is
    /// adopted). Either way the next target is the revision this answer came at.
    pub fn answered(&mut self, resp: &TxnResponse) -> Option<i64> {
        let target = self.revision;
        self.revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if resp.succeeded {
            self.version += 1;
            return (target > 0).then_some(target);
        }
        self.version = resp
            .responses
            .first()
            .and_then(|r| match &r.response {
                Some(response_op::Response::ResponseRange(r)) => r.kvs.first().map(|kv| kv.version),
                _ => None,
            })
            .unwrap_or(self.version);
        None
    }
}

/// Where an apiserver keeps its objects.
pub enum Backend {
    /// kine in the same process: the watch cache polls its log directly.
    Kine {
        store: Arc<KineStore>,
        hub: Arc<WatchHub>,
    },
    /// etcd members, reached over gRPC through the apiserver's etcd client (watches too).
    Etcd(Arc<crate::k3s::etcd_client::EtcdClient>),
}

impl Backend {
    async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        match self {
            Backend::Kine { store, .. } => store.range(req).await,
            Backend::Etcd(c) => c.range(req.clone()).await,
        }
    }

    async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        match self {
            Backend::Kine { store, .. } => store.txn(req).await,
            Backend::Etcd(c) => c.txn(req.clone()).await,
        }
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        match self {
            Backend::Kine { store, .. } => store.revisions().await.map(|(c, _)| c),
            Backend::Etcd(c) => c.current_revision().await,
        }
    }

    /// Whether the watch cache has synced: kine's poller has read the log once (etcd's watch
    /// is served by the members themselves).
    fn watch_cache_synced(&self) -> bool {
        match self {
            Backend::Kine { hub, .. } => hub.polled() > 0,
            Backend::Etcd(_) => true,
        }
    }
}

/// One server's apiserver.
pub struct ApiServer {
    pub backend: Backend,
    pub watchlist: WatchListVariant,
    pub consistent_lists: ConsistentLists,
}

/// Where consistent LISTs (no resourceVersion) are read: the store's latest revision, or with
/// `apiserver=stale-consistent-list` a snapshot revision refreshed on one such LIST in four.
#[derive(Default)]
pub struct ConsistentLists {
    variant: ApiServerVariant,
    snapshot: AtomicI64,
    served: AtomicU64,
}

impl ConsistentLists {
    pub fn new(variant: ApiServerVariant) -> Self {
        ConsistentLists {
            variant,
            ..Default::default()
        }
    }

    /// The revision a consistent LIST reads (0: the latest).
    fn revision(&self) -> i64 {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        match self.variant {
            ApiServerVariant::StaleConsistentList if !n.is_multiple_of(4) => {
                self.snapshot.load(Ordering::Relaxed)
            }
            _ => 0,
        }
    }

    /// A consistent LIST was read from the store at `rv`.
    fn read_at(&self, rv: i64) {
        self.snapshot.store(rv, Ordering::Relaxed);
    }
}

impl ApiServer {
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        match req {
            ApiRequest::Get {
                resource,
                namespace,
                name,
            } => self.get(&object_key(&resource, &namespace, &name)).await,
            ApiRequest::List {
                resource,
                namespace,
                limit,
                continue_token,
                resource_version,
                resource_version_match,
            } => {
                let prefix = list_prefix(&resource, namespace.as_deref());
                let at = (resource_version, resource_version_match);
                self.list(&prefix, limit, continue_token, at).await
            }
            ApiRequest::Create {
                resource,
                namespace,
                name,
                value,
            } => {
                let key = object_key(&resource, &namespace, &name);
                self.write(&key, 0, Some(&value), "AlreadyExists").await
            }
            ApiRequest::Update {
                resource,
                namespace,
                name,
                value,
                resource_version,
            } => {
                let key = object_key(&resource, &namespace, &name);
                self.write(&key, resource_version, Some(&value), "Conflict")
                    .await
            }
            ApiRequest::Delete {
                resource,
                namespace,
                name,
                resource_version,
            } => {
                let key = object_key(&resource, &namespace, &name);
                self.write(&key, resource_version, None, "Conflict").await
            }
            ApiRequest::Readyz => self.readyz().await,
        }
    }

    async fn get(&self, key: &str) -> ApiResponse {
        let req = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        match self.backend.range(&req).await {
            Ok(resp) => match resp.kvs.first() {
                Some(kv) => ApiResponse::Object(Object {
                    key: key.to_string(),
                    resource_version: kv.mod_revision,
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                }),
                None => {
                    ApiResponse::Status(Status::new(404, "NotFound", format!("{key} not found")))
                }
            },
            Err(e) => ApiResponse::Status(Status::from_store(&e)),
        }
    }

    async fn write(
        &self,
        key: &str,
        expected: i64,
        value: Option<&str>,
        clash: &str,
    ) -> ApiResponse {
        match self.backend.txn(&guarded_txn(key, expected, value)).await {
            Ok(resp) if resp.succeeded => {
                let rv = resp.header.map(|h| h.revision).unwrap_or(0);
                match value {
                    Some(v) => ApiResponse::Object(Object {
                        key: key.to_string(),
                        resource_version: rv,
                        value: v.to_string(),
                    }),
                    None => ApiResponse::Deleted {
                        resource_version: rv,
                    },
                }
            }
            Ok(resp) => {
                let now = resp.responses.iter().find_map(|r| match &r.response {
                    Some(response_op::Response::ResponseRange(rr)) => {
                        rr.kvs.first().map(|kv| kv.mod_revision)
                    }
                    _ => None,
                });
                let (code, reason) = match (now, expected) {
                    (None, e) if e > 0 => (404, "NotFound"),
                    _ if clash == "AlreadyExists" => (409, "AlreadyExists"),
                    _ => (409, "Conflict"),
                };
                match reason {
                    "NotFound" => crate::probe!("api.write.not_found"),
                    "AlreadyExists" => crate::probe!("api.write.already_exists"),
                    _ => crate::probe!("api.write.conflict"),
                }
                ApiResponse::Status(Status::new(
                    code,
                    reason,
                    format!("{key}: stored resourceVersion is {now:?}, request had {expected}"),
                ))
            }
            Err(e) => ApiResponse::Status(Status::from_store(&e)),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        limit: i64,
        token: Option<String>,
        (resource_version, rv_match): (Option<i64>, Option<ResourceVersionMatch>),
    ) -> ApiResponse {
        if let Some(why) = invalid_list_options(token.is_some(), resource_version, rv_match) {
            return ApiResponse::Status(Status::new(422, "Invalid", why));
        }
        let (start, continue_rv) = match &token {
            Some(t) => match decode_continue(prefix, t) {
                Ok((start, rv)) => (start, Some(rv)),
                Err(msg) => return ApiResponse::Status(Status::new(400, "BadRequest", msg)),
            },
            None => (prefix.to_string(), None),
        };
        // NotOlderThan and "0" (any) read the latest revision: the store has no older cache.
        let not_older_than = match (resource_version, rv_match) {
            (Some(0), _) => {
                crate::probe!("api.list.any_resource_version");
                Some(0)
            }
            (Some(r), Some(ResourceVersionMatch::NotOlderThan)) => {
                crate::probe!("api.list.not_older_than");
                Some(r)
            }
            _ => None,
        };
        let resource_version = resource_version.filter(|_| not_older_than.is_none());
        // rv -1: the remainder at the latest revision (inconsistent with the earlier pages).
        let revision = match continue_rv {
            Some(rv) if rv > 0 => rv,
            Some(_) => {
                crate::probe!("api.list.continue_with_rv_minus_one");
                0
            }
            None if resource_version.is_none() && not_older_than.is_none() => {
                self.consistent_lists.revision()
            }
            None => resource_version.unwrap_or(0),
        };
        let consistent = continue_rv.is_none() && resource_version.is_none();
        let consistent = consistent && not_older_than.is_none();
        match (continue_rv, revision) {
            (None, 0) if consistent => crate::probe!("api.list.consistent_read_from_store"),
            (None, r) if r > 0 && !consistent => {
                crate::probe!("api.list.at_resource_version_from_store")
            }
            _ => {}
        }
        let req = RangeRequest {
            key: start.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            limit,
            revision,
            ..Default::default()
        };
        let resp = match self.backend.range(&req).await {
            Ok(resp) => resp,
            Err(StoreError::Compacted) if continue_rv.is_some_and(|rv| rv > 0) => {
                crate::probe!("api.list.continue_expired_410");
                let key_of_start = start.strip_suffix('\0').unwrap_or(&start);
                let mut status = Status::new(
                    410,
                    "Expired",
                    "the continue token's resource version has been compacted; list again from \
                     the start, or continue with the token in this status for the rest of the \
                     list at the latest revision (not consistent with the earlier pages)",
                );
                status.continue_token = Some(encode_continue(prefix, key_of_start, -1));
                return ApiResponse::Status(status);
            }
            Err(e) => return ApiResponse::Status(Status::from_store(&e)),
        };
        let rv = if revision > 0 {
            revision
        } else {
            resp.header.as_ref().map(|h| h.revision).unwrap_or(0)
        };
        if consistent && revision == 0 {
            self.consistent_lists.read_at(rv);
        }
        if not_older_than.is_some_and(|r| rv < r) {
            return ApiResponse::Status(Status::new(
                504,
                "Timeout",
                format!("too large resource version: the store is at {rv}"),
            ));
        }
        if continue_rv.is_some_and(|c| c > 0)
            && resp.header.as_ref().is_some_and(|h| h.revision > rv)
        {
            crate::probe!("api.list.continue_while_store_moved_on");
        }
        let items: Vec<Object> = resp
            .kvs
            .iter()
            .map(|kv| Object {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                resource_version: kv.mod_revision,
                value: String::from_utf8_lossy(&kv.value).into_owned(),
            })
            .collect();
        let (continue_token, remaining_item_count) = match (resp.more, items.last()) {
            (true, Some(last)) => (
                Some(encode_continue(prefix, &last.key, rv)),
                Some(resp.count - items.len() as i64),
            ),
            _ => (None, None),
        };
        ApiResponse::List(ObjectList {
            items,
            resource_version: rv,
            continue_token,
            remaining_item_count,
        })
    }

    async fn readyz(&self) -> ApiResponse {
        let etcd = tokio::time::timeout(Duration::from_secs(2), self.backend.current_revision())
            .await
            .is_ok_and(|r| r.is_ok());
        let cache = self.backend.watch_cache_synced();
        let checks = [
            ("ping", true),
            ("etcd", etcd),
            ("poststarthook/watch-cache-synced", cache),
        ];
        let code = if checks.iter().all(|(_, ok)| *ok) {
            200
        } else {
            500
        };
        if !etcd {
            crate::probe!("api.readyz.etcd_failed");
        }
        if !cache {
            crate::probe!("api.readyz.watch_cache_not_synced");
        }
        ApiResponse::Readyz {
            code,
            checks: checks
                .iter()
                .map(|(name, ok)| {
                    if *ok {
                        format!("[+]{name} ok")
                    } else {
                        format!("[-]{name} failed: reason withheld")
                    }
                })
                .collect(),
        }
    }
}

/// Why a LIST's resourceVersion, resourceVersionMatch and continue token do not go together,
/// as Kubernetes validates them (422 Invalid): a match needs a resourceVersion and no continue
/// token, and Exact cannot ask for "0" (any).
fn invalid_list_options(
    continuing: bool,
    resource_version: Option<i64>,
    rv_match: Option<ResourceVersionMatch>,
) -> Option<&'static str> {
    match (rv_match?, resource_version) {
        _ if continuing => Some("resourceVersionMatch is forbidden when continue is provided"),
        (_, None) => Some("resourceVersionMatch is forbidden unless resourceVersion is provided"),
        (ResourceVersionMatch::Exact, Some(0)) => {
            Some("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"")
        }
        _ => None,
    }
}

/// Serves the facade: requests on `api_addr`, watch streams on `watch_addr`, until the node is
/// killed. Simulator only: madsim's connections carry its watch streams.
#[cfg(madsim)]
pub async fn serve_api(api: Arc<ApiServer>, api_addr: SocketAddr, watch_addr: SocketAddr) {
    let rpc = Endpoint::bind(api_addr)
        .await
        .expect("the apiserver binds its address");
    let handler_api = api.clone();
    rpc.add_rpc_handler(move |ApiCall(req): ApiCall| {
        let api = handler_api.clone();
        // Boxed, as the supervisor's: each request's task then moves a pointer, not the whole
        // state of `handle`.
        Box::pin(async move { api.handle(req).await })
    });
    let streams = Endpoint::bind(watch_addr)
        .await
        .expect("the apiserver binds its watch address");
    loop {
        let Ok((tx, mut rx, _peer)) = streams.accept1().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let Ok(first) = rx.recv().await else { return };
            let Ok(req) = first.downcast::<WatchRequest>() else {
                return;
            };
            let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(64);
            let serving = tokio::spawn(api.watch(*req, out_tx));
            while let Some(msg) = out_rx.recv().await {
                if tx.send(Box::new(msg)).await.is_err() {
                    break;
                }
            }
            serving.abort();
        });
    }
}

//! Controllers: clients of the apiserver facade, shaped like client-go's.
//!
//! Each controller waits for an apiserver's `/readyz`, renews its Node lease, writes objects with
//! optimistic concurrency, lists in pages (pausing between pages, so compaction can land in
//! between, and following a 410's token as the apiserver offers), holds a WatchList that it
//! resumes from the last resourceVersion after any break, and probes the WatchList validation
//! rules. controller-1 can run the chunked-list conformance flow instead of ordinary lists. Every
//! page and every watch message is recorded.
//!
//! Every GET, LIST page, create, update and delete is also recorded as the operation on its
//! `/registry` key (`History::api_ops`), with the freshness Kubernetes promises its answer, for
//! the linearizable check. Reads are drawn of every kind: consistent (no resourceVersion), any
//! ("0"), `resourceVersionMatch=NotOlderThan` and `Exact` at a resourceVersion seen earlier.
//! Every value written is unique, so an answer showing it names the write.

use crate::history::recorder::Recorder;
use crate::history::{
    ApiWatchEvent, ChunkedList, EventKind, Freshness, Kv, ListPage, OpResult, Outcome, PageAnswer,
    Request,
};
use crate::scenario::Controllers;
use madsim::net::Endpoint;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use store::apiserver::{
    decode_continue, list_prefix, object_key, prefix_end, ApiCall, ApiRequest, ApiResponse, Object,
    ResourceVersionMatch, WatchMessage, WatchRequest, ACCEPT_JSON, ACCEPT_TABLE,
};
use tokio::time::Instant;

/// A watch stream silent this long is abandoned (the apiserver bookmarks every 5 s).
const STALLED: Duration = Duration::from_secs(12);
/// The namespace of the conformance objects, and of the objects controllers churn.
pub const SEED_NS: &str = "seed";
pub const CHURN_NS: &str = "churn";

/// The key prefixes only controllers write (their resource, and their Node leases), which the
/// linearizable check models from their recorded requests; none without controllers.
pub fn owned_prefixes(s: &Controllers) -> Vec<String> {
    if s.count == 0 {
        return vec![];
    }
    vec![
        store::apiserver::resource_prefix(&s.resource),
        format!("{}controller-", list_prefix("leases", Some(LEASE_NS))),
    ]
}

/// The namespace of Node leases.
const LEASE_NS: &str = "kube-node-lease";

/// An apiserver: its node name, request address and watch address.
#[derive(Clone, Debug)]
pub struct ApiServerAddr {
    pub name: String,
    pub api: SocketAddr,
    pub watch: SocketAddr,
}

#[derive(Clone)]
pub struct ControllerConfig {
    pub name: String,
    pub index: u32,
    pub servers: Vec<ApiServerAddr>,
    pub settings: Controllers,
    pub stop_at: Instant,
}

struct Client {
    cfg: ControllerConfig,
    recorder: Recorder,
    endpoint: Endpoint,
    timeout: Duration,
    /// Values written so far: each write's value is unique.
    written: AtomicU64,
    /// The highest resourceVersion an answer showed, for reads that name one.
    seen_rv: AtomicI64,
}

impl Client {
    fn pick(&self) -> ApiServerAddr {
        let i = madsim::rand::thread_rng().gen_range(0..self.cfg.servers.len());
        self.cfg.servers[i].clone()
    }

    /// A value no other write carries.
    fn value(&self, what: &str) -> String {
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        format!("{what}@{}#{n}", self.cfg.name)
    }

    /// Sends one request; records it (all but `/readyz`) as the operation on its key.
    async fn call(&self, server: &ApiServerAddr, req: ApiRequest) -> Result<ApiResponse, String> {
        let op = as_operation(&req);
        let id = op.as_ref().map(|(request, read)| {
            self.recorder
                .invoke_api(&self.cfg.name, &server.name, request.clone(), *read)
        });
        let answer = self
            .endpoint
            .call_timeout(server.api, ApiCall(req), self.timeout)
            .await
            .map_err(|e| e.to_string());
        if let (Some(id), Some((request, _))) = (id, op) {
            self.recorder.complete_api(id, outcome(&request, &answer));
        }
        let rv = match &answer {
            Ok(ApiResponse::Object(o)) => o.resource_version,
            Ok(ApiResponse::List(l)) => l.resource_version,
            Ok(ApiResponse::Deleted { resource_version }) => *resource_version,
            _ => 0,
        };
        self.seen_rv.fetch_max(rv, Ordering::Relaxed);
        answer
    }

    fn running(&self) -> bool {
        Instant::now() < self.cfg.stop_at
    }

    /// Polls `/readyz` every second until some apiserver is ready, tracing what is not.
    async fn wait_ready(&self) {
        while self.running() {
            let server = self.pick();
            match self.call(&server, ApiRequest::Readyz).await {
                Ok(ApiResponse::Readyz { code: 200, .. }) => return,
                Ok(ApiResponse::Readyz { checks, .. }) => self.recorder.event(
                    &self.cfg.name,
                    EventKind::NotReady {
                        server: server.name.clone(),
                        failing: checks
                            .into_iter()
                            .filter(|c| c.starts_with("[-]"))
                            .collect(),
                    },
                ),
                _ => self.recorder.event(
                    &self.cfg.name,
                    EventKind::NotReady {
                        server: server.name.clone(),
                        failing: vec!["no answer".into()],
                    },
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

pub async fn run_controller(cfg: ControllerConfig, recorder: Recorder) {
    let Ok(endpoint) = Endpoint::bind("0.0.0.0:0").await else {
        return;
    };
    let timeout = Duration::from_millis(cfg.settings.request_timeout_ms);
    let client = std::sync::Arc::new(Client {
        cfg,
        recorder,
        endpoint,
        timeout,
        written: AtomicU64::new(0),
        seen_rv: AtomicI64::new(0),
    });
    client.wait_ready().await;
    let s = client.cfg.settings.clone();
    if s.lease_every_s > 0 {
        tokio::spawn(renew_lease(client.clone()));
    }
    if s.writes_per_s > 0.0 {
        tokio::spawn(churn(client.clone()));
    }
    if s.watch_lists {
        tokio::spawn(watch_loop(client.clone()));
    }
    if s.probe_every_s > 0 {
        tokio::spawn(probes(client.clone()));
    }
    if client.cfg.index == 1 && s.seed_objects > 0 {
        seed(&client).await;
    }
    if client.cfg.index == 1 && s.conformance {
        conformance(&client).await;
    } else if s.list_every_s > 0 {
        while client.running() {
            tokio::time::sleep(Duration::from_secs(s.list_every_s)).await;
            chunked_list(&client).await;
        }
    }
    std::future::pending::<()>().await;
}

/// Creates the seeded objects, retrying each until it exists.
async fn seed(c: &Client) {
    let s = &c.cfg.settings;
    for i in 0..s.seed_objects {
        while c.running() {
            let req = ApiRequest::Create {
                resource: s.resource.clone(),
                namespace: SEED_NS.into(),
                name: format!("obj-{i:04}"),
                value: c.value(&format!("seed-{i}")),
            };
            match c.call(&c.pick(), req).await {
                Ok(ApiResponse::Object(_)) => break,
                Ok(ApiResponse::Status(st)) if st.code == 409 => break,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Renews this node's lease, kubelet-style: read, then update at the read resourceVersion.
async fn renew_lease(c: std::sync::Arc<Client>) {
    let every = Duration::from_secs(c.cfg.settings.lease_every_s);
    while c.running() {
        let server = c.pick();
        let name = c.cfg.name.clone();
        let current = c
            .call(
                &server,
                ApiRequest::Get {
                    resource: "leases".into(),
                    namespace: LEASE_NS.into(),
                    name: name.clone(),
                },
            )
            .await;
        let value = c.value("renewed");
        let req = match current {
            Ok(ApiResponse::Object(o)) => Some(ApiRequest::Update {
                resource: "leases".into(),
                namespace: LEASE_NS.into(),
                name,
                value,
                resource_version: o.resource_version,
            }),
            Ok(ApiResponse::Status(st)) if st.code == 404 => Some(ApiRequest::Create {
                resource: "leases".into(),
                namespace: LEASE_NS.into(),
                name,
                value,
            }),
            _ => None,
        };
        if let Some(req) = req {
            let _ = c.call(&server, req).await;
        }
        tokio::time::sleep(every).await;
    }
}

/// Creates, updates and deletes objects in the churn namespace at the configured rate.
async fn churn(c: std::sync::Arc<Client>) {
    let s = c.cfg.settings.clone();
    let mut known: std::collections::BTreeMap<String, i64> = Default::default();
    while c.running() {
        let (wait, name, choice, read) = {
            let mut rng = madsim::rand::thread_rng();
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let wait = Duration::from_secs_f64(-u.ln() / s.writes_per_s);
            let name = format!(
                "{}-obj-{:02}",
                c.cfg.name,
                rng.gen_range(0..s.churn_names.max(1))
            );
            (wait, name, rng.gen_range(0..10u32), rng.gen_range(0..10u32))
        };
        tokio::time::sleep(wait).await;
        let (resource, namespace) = (s.resource.clone(), CHURN_NS.to_string());
        let req = match known.get(&name) {
            None => ApiRequest::Create {
                resource,
                namespace,
                name: name.clone(),
                value: c.value(&format!("v-{choice}")),
            },
            Some(&rv) if choice < 2 => ApiRequest::Delete {
                resource,
                namespace,
                name: name.clone(),
                resource_version: rv,
            },
            Some(&rv) => ApiRequest::Update {
                resource,
                namespace,
                name: name.clone(),
                value: c.value(&format!("v-{choice}")),
                resource_version: rv,
            },
        };

        match c.call(&c.pick(), req).await {
            Ok(ApiResponse::Object(o)) => {
                known.insert(name.clone(), o.resource_version);
            }
            Ok(ApiResponse::Deleted { .. }) => {
                known.remove(&name);
            }
            // A conflict or an unknown outcome: learn the object's state again.
            _ => {
                let get = ApiRequest::Get {
                    resource: s.resource.clone(),
                    namespace: CHURN_NS.into(),
                    name: name.clone(),
                };
                match c.call(&c.pick(), get).await {
                    Ok(ApiResponse::Object(o)) => {
                        known.insert(name.clone(), o.resource_version);
                    }
                    Ok(ApiResponse::Status(st)) if st.code == 404 => {
                        known.remove(&name);
                    }
                    _ => {}
                }
            }
        }
        // A read after most writes, of every kind the facade serves.
        read_once(&c, &name, read).await;
    }
}

/// Where a LIST's first page asks to be read: (resourceVersion, resourceVersionMatch).
type ListAt = (Option<i64>, Option<ResourceVersionMatch>);

/// Draws where a first page is read: mostly a consistent read, else any revision ("0"), or not
/// older than (or, with `exact`, exactly at) the newest resourceVersion this client has seen.
fn draw_list_at(c: &Client, exact: bool) -> ListAt {
    let seen = c.seen_rv.load(Ordering::Relaxed);
    let n = madsim::rand::thread_rng().gen_range(0..10u32);
    match n {
        _ if seen == 0 => (None, None),
        0..=5 => (None, None),
        6 | 7 => (Some(0), None),
        8 => (Some(seen), Some(ResourceVersionMatch::NotOlderThan)),
        _ if exact => (Some(seen), Some(ResourceVersionMatch::Exact)),
        _ => (Some(seen), Some(ResourceVersionMatch::NotOlderThan)),
    }
}

/// One read drawn by `n` (0..10): a GET of `name`, one LIST page of the resource read as
/// `draw_list_at` picks (an Exact one may meet a compacted revision: 410), or nothing.
async fn read_once(c: &Client, name: &str, n: u32) {
    let s = &c.cfg.settings;
    let req = match n {
        0..=3 => ApiRequest::Get {
            resource: s.resource.clone(),
            namespace: CHURN_NS.into(),
            name: name.to_string(),
        },
        4..=8 => {
            let (resource_version, resource_version_match) = draw_list_at(c, true);
            ApiRequest::List {
                resource: s.resource.clone(),
                namespace: None,
                limit: s.list_limit,
                continue_token: None,
                resource_version,
                resource_version_match,
            }
        }
        _ => return,
    };
    let _ = c.call(&c.pick(), req).await;
}

/// A facade request as the operation on its key the linearizable check judges, and the
/// freshness Kubernetes promises its answer; `None` for `/readyz` (and a token the client
/// cannot read, which the list-continuation check judges).
fn as_operation(req: &ApiRequest) -> Option<(Request, Freshness)> {
    Some(match req {
        ApiRequest::Get {
            resource,
            namespace,
            name,
        } => (
            Request::Get {
                key: object_key(resource, namespace, name),
                revision: 0,
                serializable: false,
            },
            Freshness::Consistent,
        ),
        ApiRequest::List {
            resource,
            namespace,
            limit,
            continue_token,
            resource_version,
            resource_version_match,
        } => {
            let prefix = list_prefix(resource, namespace.as_deref());
            let (start, revision, read) = match (continue_token, resource_version) {
                (Some(t), _) => {
                    let (start, rv) = decode_continue(&prefix, t).ok()?;
                    match rv {
                        // The rest at the latest revision: a consistent read.
                        -1 => (start, 0, Freshness::Consistent),
                        rv => (start, 0, Freshness::Continue { rv }),
                    }
                }
                (None, None) => (prefix.clone(), 0, Freshness::Consistent),
                (None, Some(0)) => (prefix.clone(), 0, Freshness::Any),
                (None, Some(rv)) => match resource_version_match {
                    Some(ResourceVersionMatch::NotOlderThan) => {
                        (prefix.clone(), 0, Freshness::NotOlderThan { rv: *rv })
                    }
                    _ => (prefix.clone(), *rv, Freshness::Exact { rv: *rv }),
                },
            };
            let end = String::from_utf8(prefix_end(&prefix)).expect("resource names are ASCII");
            (
                Request::List {
                    start,
                    end,
                    limit: *limit,
                    revision,
                    serializable: false,
                    count_only: false,
                    keys_only: false,
                },
                read,
            )
        }
        ApiRequest::Create {
            resource,
            namespace,
            name,
            value,
        } => (
            Request::Create {
                key: object_key(resource, namespace, name),
                value: value.clone(),
            },
            Freshness::Write,
        ),
        ApiRequest::Update {
            resource,
            namespace,
            name,
            value,
            resource_version,
        } => (
            Request::Update {
                key: object_key(resource, namespace, name),
                value: value.clone(),
                expected_mod_revision: *resource_version,
            },
            Freshness::Write,
        ),
        ApiRequest::Delete {
            resource,
            namespace,
            name,
            resource_version,
        } => (
            Request::Delete {
                key: object_key(resource, namespace, name),
                expected_mod_revision: *resource_version,
            },
            Freshness::Write,
        ),
        ApiRequest::Readyz => return None,
    })
}

/// A facade answer as the operation's outcome. It carries only key, resourceVersion and value:
/// create revision and version stay 0 ("not carried"). A GET's header is its object's
/// resourceVersion (0 for 404); a refusal (400, 404, 409, 410, 422) did not take effect; any
/// other failure of a write may have.
fn outcome(req: &Request, answer: &Result<ApiResponse, String>) -> Outcome {
    let kv = |o: &Object| Kv {
        key: o.key.clone(),
        create_revision: 0,
        mod_revision: o.resource_version,
        version: 0,
        value: o.value.clone(),
    };
    let written = |rv: i64| Outcome::Ok {
        header_revision: rv,
        result: OpResult::Write {
            succeeded: true,
            current: None,
            responses: vec![],
        },
    };
    let read = |header_revision: i64, kvs: Vec<Kv>, more: bool, count: i64| Outcome::Ok {
        header_revision,
        result: OpResult::Read { kvs, more, count },
    };
    match (req, answer) {
        (Request::Get { .. }, Ok(ApiResponse::Object(o))) => {
            read(o.resource_version, vec![kv(o)], false, 1)
        }
        (Request::Get { .. }, Ok(ApiResponse::Status(st))) if st.code == 404 => {
            read(0, vec![], false, 0)
        }
        (Request::List { .. }, Ok(ApiResponse::List(l))) => {
            let n = l.items.len() as i64;
            read(
                l.resource_version,
                l.items.iter().map(kv).collect(),
                l.continue_token.is_some(),
                n + l.remaining_item_count.unwrap_or(0),
            )
        }
        (w, Ok(ApiResponse::Object(o))) if w.is_write() => written(o.resource_version),
        (w, Ok(ApiResponse::Deleted { resource_version })) if w.is_write() => {
            written(*resource_version)
        }
        (_, Ok(ApiResponse::Status(st))) if matches!(st.code, 400 | 404 | 409 | 410 | 422) => {
            Outcome::Failed {
                error: format!("{} {}", st.code, st.reason),
            }
        }
        (w, Ok(ApiResponse::Status(st))) if w.is_write() => Outcome::Unknown {
            error: format!("{} {}", st.code, st.reason),
        },
        (w, Err(e)) if w.is_write() => Outcome::Unknown { error: e.clone() },
        (_, Ok(other)) => Outcome::Failed {
            error: format!("unexpected answer {other:?}"),
        },
        (_, Err(e)) => Outcome::Failed { error: e.clone() },
    }
}

/// Requests one page, retrying a page that got no answer up to three times.
async fn page(
    c: &Client,
    list: u64,
    namespace: Option<&str>,
    token: Option<String>,
    (resource_version, resource_version_match): ListAt,
) -> Option<PageAnswer> {
    let s = &c.cfg.settings;
    for _ in 0..3 {
        let server = c.pick();
        let invoke_ns = c.recorder.now_ns();
        let req = ApiRequest::List {
            resource: s.resource.clone(),
            namespace: namespace.map(str::to_string),
            limit: s.list_limit,
            continue_token: token.clone(),
            resource_version: resource_version.filter(|_| token.is_none()),
            resource_version_match: resource_version_match.filter(|_| token.is_none()),
        };
        let answer = match c.call(&server, req).await {
            Ok(ApiResponse::List(l)) => PageAnswer::Page {
                items: l
                    .items
                    .iter()
                    .map(|o| (o.key.clone(), o.resource_version))
                    .collect(),
                resource_version: l.resource_version,
                continue_token: l.continue_token,
                remaining_item_count: l.remaining_item_count,
            },
            Ok(ApiResponse::Status(st)) => PageAnswer::Status {
                code: st.code,
                reason: st.reason,
                continue_token: st.continue_token,
            },
            Ok(other) => PageAnswer::NoAnswer {
                error: format!("unexpected answer {other:?}"),
            },
            Err(e) => PageAnswer::NoAnswer { error: e },
        };
        c.recorder.list_page(
            list,
            ListPage {
                server: server.name.clone(),
                invoke_ns,
                complete_ns: c.recorder.now_ns(),
                continue_token: token.clone(),
                answer: answer.clone(),
            },
        );
        let retry = match &answer {
            PageAnswer::NoAnswer { .. } => true,
            PageAnswer::Status { code, .. } => *code >= 500,
            PageAnswer::Page { .. } => false,
        };
        if !retry {
            return Some(answer);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// Follows continue tokens from `token` to the last page, pausing between pages; a 410 with a
/// token continues the list at the latest revision, as the apiserver offers.
async fn follow(
    c: &Client,
    list: u64,
    namespace: Option<&str>,
    mut token: Option<String>,
    first: ListAt,
) {
    let [lo, hi] = c.cfg.settings.page_pause_s;
    let mut expired = false;
    loop {
        match page(c, list, namespace, token.clone(), first).await {
            Some(PageAnswer::Page {
                continue_token: Some(next),
                ..
            }) => (token, expired) = (Some(next), false),
            Some(PageAnswer::Page { .. }) => return,
            // Continued at once, but only once in a row: the 410's token lists at the latest
            // revision, and a store that expires that too would be asked again without pause.
            Some(PageAnswer::Status {
                code: 410,
                continue_token: Some(next),
                ..
            }) if !std::mem::replace(&mut expired, true) => {
                token = Some(next);
                continue;
            }
            Some(PageAnswer::Status { code, reason, .. }) => {
                c.recorder.abandon_list(list, &format!("{code} {reason}"));
                return;
            }
            _ => {
                c.recorder.abandon_list(list, "no answer after 3 tries");
                return;
            }
        }
        if !c.running() {
            c.recorder.abandon_list(list, "workload stopped");
            return;
        }
        let pause = madsim::rand::thread_rng().gen_range(lo..=hi);
        // Never past the workload's end: a list the run cut short is abandoned, not complete.
        let left = c.cfg.stop_at.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_secs(pause).min(left)).await;
        if !c.running() {
            c.recorder.abandon_list(list, "workload stopped");
            return;
        }
    }
}

async fn chunked_list(c: &Client) {
    let list = c.recorder.start_list(ChunkedList {
        client: c.cfg.name.clone(),
        resource: c.cfg.settings.resource.clone(),
        limit: c.cfg.settings.list_limit,
        ..Default::default()
    });
    // Never Exact: a first page's 410 is the list-continuation check's violation.
    follow(c, list, None, None, draw_list_at(c, false)).await;
}

/// The conformance test: first page, then page 2 with the first token every retry period until
/// a 410 Expired arrives (or the window passes), then the rest from the 410's token.
async fn conformance(c: &Client) {
    let s = c.cfg.settings.clone();
    let window = Duration::from_secs(s.conformance_window_s);
    let list = c.recorder.start_list(ChunkedList {
        client: c.cfg.name.clone(),
        resource: s.resource.clone(),
        limit: s.list_limit,
        conformance_window_ns: Some(window.as_nanos() as u64),
        expected_total: Some(s.seed_objects as usize),
        ..Default::default()
    });
    let first = loop {
        match page(c, list, Some(SEED_NS), None, (None, None)).await {
            Some(PageAnswer::Page {
                continue_token: Some(t),
                ..
            }) => break t,
            _ if !c.running() => return,
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(s.conformance_retry_s)).await;
        if started.elapsed() > window || !c.running() {
            c.recorder.abandon_list(
                list,
                &format!(
                    "no 410 Expired within {} s of retrying page 2",
                    window.as_secs()
                ),
            );
            return;
        }
        if let Some(PageAnswer::Status {
            code: 410,
            continue_token: Some(next),
            ..
        }) = page(c, list, Some(SEED_NS), Some(first.clone()), (None, None)).await
        {
            follow(c, list, Some(SEED_NS), Some(next), (None, None)).await;
            return;
        }
    }
}

/// Opens a watch stream and sends its request. The endpoint must outlive the stream.
async fn open_stream(
    c: &Client,
    server: &ApiServerAddr,
    req: &WatchRequest,
) -> Option<(Endpoint, madsim::net::Sender, madsim::net::Receiver)> {
    let ep = Endpoint::bind("0.0.0.0:0").await.ok()?;
    let (tx, rx) = tokio::time::timeout(c.timeout, ep.connect1(server.watch))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(c.timeout, tx.send(Box::new(req.clone())))
        .await
        .ok()?
        .ok()?;
    Some((ep, tx, rx))
}

/// Holds a WatchList on the resource; after a break resumes with a plain watch from the last
/// resourceVersion seen, and after a 410 starts a new WatchList, as a reflector does.
async fn watch_loop(c: std::sync::Arc<Client>) {
    let resource = c.cfg.settings.resource.clone();
    let mut last_rv: Option<i64> = None;
    let mut with_rv = false;
    while c.running() {
        let server = c.pick();
        let req = match last_rv {
            None => {
                with_rv = !with_rv;
                WatchRequest {
                    resource: resource.clone(),
                    // Alternate between "at least this revision" and "at least now".
                    resource_version: if with_rv { latest_rv(&c).await } else { None },
                    send_initial_events: true,
                    resource_version_match: Some("NotOlderThan".into()),
                    allow_watch_bookmarks: true,
                    accept: vec![ACCEPT_JSON.into()],
                    ..Default::default()
                }
            }
            Some(rv) => WatchRequest {
                resource: resource.clone(),
                resource_version: Some(rv),
                allow_watch_bookmarks: true,
                accept: vec![ACCEPT_JSON.into()],
                ..Default::default()
            },
        };
        let Some((_ep, _tx, mut rx)) = open_stream(&c, &server, &req).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let id = c
            .recorder
            .open_api_watch(&c.cfg.name, &server.name, req.clone());
        let mut synced = !req.send_initial_events;
        loop {
            let left = c.cfg.stop_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                c.recorder.end_api_watch(id, None, "workload stopped");
                return;
            }
            let msg = match tokio::time::timeout(STALLED.min(left), rx.recv()).await {
                Ok(Ok(payload)) => match payload.downcast::<WatchMessage>() {
                    Ok(m) => *m,
                    Err(_) => break,
                },
                Ok(Err(e)) => {
                    c.recorder
                        .end_api_watch(id, None, &format!("stream broken: {e}"));
                    break;
                }
                Err(_) if Instant::now() >= c.cfg.stop_at => continue,
                Err(_) => {
                    c.recorder
                        .end_api_watch(id, None, "stalled: no bookmark in time");
                    break;
                }
            };
            match msg {
                WatchMessage::Status(st) => {
                    c.recorder.end_api_watch(
                        id,
                        Some(st.code),
                        &format!("{} {}", st.reason, st.message),
                    );
                    if st.code == 410 {
                        last_rv = None;
                    }
                    break;
                }
                WatchMessage::Event {
                    kind,
                    object,
                    initial_events_end,
                } => {
                    c.recorder.api_watch_event(
                        id,
                        ApiWatchEvent {
                            at_ns: 0,
                            kind,
                            key: object.key.clone(),
                            resource_version: object.resource_version,
                            initial_events_end,
                        },
                    );
                    if initial_events_end {
                        synced = true;
                    }
                    // Initial events say nothing about where to resume; everything after does.
                    if synced {
                        last_rv = Some(object.resource_version);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The latest revision a page of one item reports.
async fn latest_rv(c: &Client) -> Option<i64> {
    let req = ApiRequest::List {
        resource: c.cfg.settings.resource.clone(),
        namespace: None,
        limit: 1,
        continue_token: None,
        resource_version: None,
        resource_version_match: None,
    };
    match c.call(&c.pick(), req).await {
        Ok(ApiResponse::List(l)) => Some(l.resource_version),
        _ => None,
    }
}

/// Sends, in turn, each kind of WatchList request the apiserver must refuse, and records what
/// came back (the first message, or the first few if it was served).
async fn probes(c: std::sync::Arc<Client>) {
    let every = Duration::from_secs(c.cfg.settings.probe_every_s);
    let resource = c.cfg.settings.resource.clone();
    let mut turn = c.cfg.index as usize;
    while c.running() {
        tokio::time::sleep(every).await;
        let valid_watch_list = WatchRequest {
            resource: resource.clone(),
            send_initial_events: true,
            resource_version_match: Some("NotOlderThan".into()),
            allow_watch_bookmarks: true,
            accept: vec![ACCEPT_JSON.into()],
            ..Default::default()
        };
        let req = match turn % 4 {
            0 => WatchRequest {
                accept: vec![ACCEPT_TABLE.into()],
                ..valid_watch_list
            },
            1 => WatchRequest {
                resource_version_match: None,
                ..valid_watch_list
            },
            2 => WatchRequest {
                send_initial_events: false,
                resource_version: Some(1),
                ..valid_watch_list
            },
            _ => WatchRequest {
                continue_token: Some(store::apiserver::encode_continue(
                    &list_prefix(&resource, None),
                    "/registry/x",
                    5,
                )),
                ..valid_watch_list
            },
        };
        turn += 1;
        let server = c.pick();
        let Some((_ep, _tx, mut rx)) = open_stream(&c, &server, &req).await else {
            continue;
        };
        let id = c.recorder.open_api_watch(&c.cfg.name, &server.name, req);
        // A refusal is the first message; a served stream shows itself within a few messages.
        for _ in 0..3 {
            match tokio::time::timeout(c.timeout, rx.recv()).await {
                Ok(Ok(payload)) => match payload.downcast::<WatchMessage>() {
                    Ok(m) => match *m {
                        WatchMessage::Status(st) => {
                            c.recorder.end_api_watch(id, Some(st.code), &st.reason);
                            break;
                        }
                        WatchMessage::Event {
                            kind,
                            object,
                            initial_events_end,
                        } => c.recorder.api_watch_event(
                            id,
                            ApiWatchEvent {
                                at_ns: 0,
                                kind,
                                key: object.key,
                                resource_version: object.resource_version,
                                initial_events_end,
                            },
                        ),
                    },
                    Err(_) => break,
                },
                _ => break,
            }
        }
        if c.recorder.api_watch_open(id) {
            c.recorder
                .end_api_watch(id, None, "probe closed by the client");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::history::PageAnswer;
    use store::apiserver::EventType;

    /// Every request but `/readyz` is recorded as the operation on its key, reads of every
    /// freshness among them, and the linearizable check judges them with the etcd API's.
    #[test]
    fn controllers_requests_are_recorded_for_the_linearizable_check() {
        use crate::checkers::Checker;
        use crate::history::{Freshness, Request};
        let mut scenario = crate::scenario::load("../scenarios/kine-contention.toml")
            .expect("the shipped scenario loads");
        scenario.duration_s = 150;
        scenario.quiet_s = 20;
        scenario.controllers.writes_per_s = 2.0;
        scenario.controllers.list_every_s = 15;
        let out = crate::world::run_seed(&scenario, 3, &Default::default());
        let h = &out.history;
        let kinds =
            |want: fn(&Freshness) -> bool| h.api_ops.iter().filter(|a| want(&a.read)).count();
        assert!(kinds(|f| *f == Freshness::Write) > 50, "writes");
        assert!(
            kinds(|f| *f == Freshness::Consistent) > 50,
            "consistent reads"
        );
        assert!(kinds(|f| *f == Freshness::Any) > 5, "reads at \"0\"");
        assert!(kinds(|f| matches!(f, Freshness::NotOlderThan { .. })) > 5);
        assert!(kinds(|f| matches!(f, Freshness::Exact { .. })) > 5);
        assert!(
            h.api_ops
                .iter()
                .any(|a| matches!(a.op.request, Request::Get { .. })),
            "GETs"
        );
        assert!(h
            .params
            .workload_prefixes
            .contains(&"/registry/widgets/".to_string()));
        let report = crate::checkers::linearizable::Linearizable.check(h);
        assert!(report.passed(), "{:?}", report.first());
        let reads = report.judged.iter().find(|(what, _)| *what == "reads");
        let answered = |o: &&crate::history::Operation| o.outcome.header_revision().is_some();
        let etcd_reads = h
            .ops
            .iter()
            .filter(|o| !o.request.is_write())
            .filter(answered)
            .count() as u64;
        assert!(
            reads.is_some_and(|(_, n)| *n > etcd_reads),
            "facade reads judged too: {:?}",
            report.judged
        );
    }

    /// On the etcd topology the apiservers serve WatchLists and watches from the members' own
    /// watch streams: controllers get initial events, bookmarks and changes, and every checker
    /// that judges them passes.
    #[test]
    fn controllers_watch_and_list_through_apiservers_over_etcd() {
        let mut scenario = crate::scenario::load("../scenarios/etcd-compaction-crash.toml")
            .expect("the shipped scenario loads");
        scenario.duration_s = 120;
        scenario.quiet_s = 30;
        scenario.controllers = crate::scenario::Controllers {
            count: 2,
            writes_per_s: 1.0,
            churn_names: 5,
            list_every_s: 20,
            list_limit: 2,
            page_pause_s: [1, 10],
            watch_lists: true,
            probe_every_s: 15,
            ..Default::default()
        };
        let out = crate::world::run_seed(&scenario, 2, &Default::default());
        let h = &out.history;
        let served = |kind: EventType| {
            h.api_watches
                .iter()
                .flat_map(|w| &w.events)
                .filter(|e| e.kind == kind)
                .count()
        };
        assert!(served(EventType::Added) > 10, "initial and new objects");
        assert!(served(EventType::Modified) > 10, "updates");
        assert!(served(EventType::Bookmark) > 10, "bookmarks");
        assert!(
            h.api_watches
                .iter()
                .any(|w| w.events.iter().any(|e| e.initial_events_end)),
            "a WatchList ended its initial events"
        );
        let pages = h
            .lists
            .iter()
            .flat_map(|l| &l.pages)
            .filter(|p| matches!(p.answer, PageAnswer::Page { .. }))
            .count();
        assert!(pages > 10, "chunked lists over etcd ({pages} pages)");
        for check in crate::checkers::all() {
            let report = check.check(h);
            assert!(report.passed(), "{}: {:?}", report.check, report.first());
        }
    }
}

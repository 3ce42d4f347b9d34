//! Controllers: clients of the apiserver facade, shaped like client-go's.
//!
//! Each controller waits for an apiserver's `/readyz`, renews its Node lease, writes objects with
//! optimistic concurrency, lists in pages (pausing between pages, so compaction can land in
//! between, and following a 410's token as the apiserver offers), holds a WatchList that it
//! resumes from the last resourceVersion after any break, and probes the WatchList validation
//! rules. controller-1 can run the chunked-list conformance flow instead of ordinary lists. Every
//! page and every watch message is recorded.

use crate::history::recorder::Recorder;
use crate::history::{ApiWatchEvent, ChunkedList, EventKind, ListPage, PageAnswer};
use crate::scenario::Controllers;
use madsim::net::Endpoint;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use store::apiserver::{
    list_prefix, ApiCall, ApiRequest, ApiResponse, WatchMessage, WatchRequest, ACCEPT_JSON,
    ACCEPT_TABLE,
};
use tokio::time::Instant;

/// A watch stream silent this long is abandoned (the apiserver bookmarks every 5 s).
const STALLED: Duration = Duration::from_secs(12);
/// The namespace of the conformance objects, and of the objects controllers churn.
pub const SEED_NS: &str = "seed";
pub const CHURN_NS: &str = "churn";

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
}

impl Client {
    fn pick(&self) -> ApiServerAddr {
        let i = madsim::rand::thread_rng().gen_range(0..self.cfg.servers.len());
        self.cfg.servers[i].clone()
    }

    async fn call(&self, server: &ApiServerAddr, req: ApiRequest) -> Result<ApiResponse, String> {
        self.endpoint
            .call_timeout(server.api, ApiCall(req), self.timeout)
            .await
            .map_err(|e| e.to_string())
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
                value: format!("seed-{i}"),
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
                    namespace: "kube-node-lease".into(),
                    name: name.clone(),
                },
            )
            .await;
        let value = format!("renewed-by-{name}");
        let req = match current {
            Ok(ApiResponse::Object(o)) => Some(ApiRequest::Update {
                resource: "leases".into(),
                namespace: "kube-node-lease".into(),
                name,
                value,
                resource_version: o.resource_version,
            }),
            Ok(ApiResponse::Status(st)) if st.code == 404 => Some(ApiRequest::Create {
                resource: "leases".into(),
                namespace: "kube-node-lease".into(),
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
        let (wait, name, choice) = {
            let mut rng = madsim::rand::thread_rng();
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let wait = Duration::from_secs_f64(-u.ln() / s.writes_per_s);
            let name = format!(
                "{}-obj-{:02}",
                c.cfg.name,
                rng.gen_range(0..s.churn_names.max(1))
            );
            (wait, name, rng.gen_range(0..10u32))
        };
        tokio::time::sleep(wait).await;
        let (resource, namespace) = (s.resource.clone(), CHURN_NS.to_string());
        let req = match known.get(&name) {
            None => ApiRequest::Create {
                resource,
                namespace,
                name: name.clone(),
                value: format!("v-{choice}"),
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
                value: format!("v-{choice}"),
                resource_version: rv,
            },
        };
        match c.call(&c.pick(), req).await {
            Ok(ApiResponse::Object(o)) => {
                known.insert(name, o.resource_version);
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
                        known.insert(name, o.resource_version);
                    }
                    Ok(ApiResponse::Status(st)) if st.code == 404 => {
                        known.remove(&name);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Requests one page, retrying a page that got no answer up to three times.
async fn page(
    c: &Client,
    list: u64,
    namespace: Option<&str>,
    token: Option<String>,
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
            resource_version: None,
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
async fn follow(c: &Client, list: u64, namespace: Option<&str>, mut token: Option<String>) {
    let [lo, hi] = c.cfg.settings.page_pause_s;
    let mut expired = false;
    loop {
        match page(c, list, namespace, token.clone()).await {
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
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }
}

async fn chunked_list(c: &Client) {
    let list = c.recorder.start_list(ChunkedList {
        client: c.cfg.name.clone(),
        resource: c.cfg.settings.resource.clone(),
        limit: c.cfg.settings.list_limit,
        ..Default::default()
    });
    follow(c, list, None, None).await;
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
        match page(c, list, Some(SEED_NS), None).await {
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
        }) = page(c, list, Some(SEED_NS), Some(first.clone())).await
        {
            follow(c, list, Some(SEED_NS), Some(next)).await;
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

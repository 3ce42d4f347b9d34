//! One k3s node's life: its etcd member and apiserver (by role), joining through the join
//! target, following the server lists as servers join and leave, the client load balancer with
//! its health checks, and the kubelet's Node lease.
//!
//! A restart runs [`run_k3s_node`] again on the same disk: the member and the persisted server
//! list come back from it; everything else starts afresh and must find its way back on its own.

use super::etcd_client::EtcdClient;
use super::lb::{LoadBalancer, Probe};
use super::supervisor::{
    serve_supervisor, ServerLists, Supervisor, SupervisorCall, SupervisorRequest,
    SupervisorResponse,
};
use crate::apiserver::{serve_api, ApiCall, ApiRequest, ApiResponse, ApiServer, Backend};
use crate::design::{Design, StartupVariant};
use crate::etcd::disk::SharedDisk;
use crate::etcd::member::{start_member, MemberConfig};
use crate::etcd::node::{compact_loop, serve_member};
use crate::faults::SharedFaults;
use crate::observe::{SharedObserver, StoreEvent};
use madsim::net::Endpoint;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SEMANTICS.md section 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// Control plane and etcd (k3s's default server).
    Server,
    EtcdOnly,
    ControlPlaneOnly,
    Agent,
}

impl NodeRole {
    pub fn etcd(self) -> bool {
        matches!(self, NodeRole::Server | NodeRole::EtcdOnly)
    }
    pub fn control_plane(self) -> bool {
        matches!(self, NodeRole::Server | NodeRole::ControlPlaneOnly)
    }
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Server => "server",
            NodeRole::EtcdOnly => "etcd-only",
            NodeRole::ControlPlaneOnly => "control-plane-only",
            NodeRole::Agent => "agent",
        }
    }
}

/// Where a node's services listen; every node knows every node's addresses (as DNS would), but
/// learns which servers exist only by joining.
#[derive(Clone, Debug)]
pub struct NodeAddrs {
    pub role: NodeRole,
    /// The node's etcd member id, for roles that hold one.
    pub member_id: Option<u64>,
    pub supervisor: SocketAddr,
    pub api: SocketAddr,
    pub watch: SocketAddr,
    pub etcd: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct K3sNodeConfig {
    pub name: String,
    pub role: NodeRole,
    /// The server this node joins through: its load balancer's default server.
    pub join: String,
    pub book: BTreeMap<String, NodeAddrs>,
    /// This node's etcd member, for roles that hold one.
    pub member: Option<MemberConfig>,
    /// How often this node's apiserver compacts; `None`: never.
    pub compact_interval: Option<Duration>,
    pub compact_at_latest: bool,
    pub request_timeout: Duration,
    /// Load balancer health checks (k3s: every second).
    pub health_every: Duration,
    /// Kubelet Node lease renewals (Kubernetes: every 10 seconds).
    pub lease_every: Duration,
}

const SERVERS_FILE: &str = "agent/servers";
/// Every server the last join named (control plane and etcd): where a restart may rejoin.
const KNOWN_FILE: &str = "agent/known-servers";
/// Components give up waiting for the apiserver after this long (and the process restarts).
const READYZ_GIVE_UP: Duration = Duration::from_secs(15 * 60);
/// How often a node checks the server lists again (k3s watches the apiserver endpoints and the
/// etcd member list; a few seconds' delay stands in for the watch).
const SERVERS_EVERY: Duration = Duration::from_secs(5);

pub async fn run_k3s_node(
    config: K3sNodeConfig,
    design: Design,
    disk: SharedDisk,
    observer: SharedObserver,
    faults: SharedFaults,
) {
    let me = config.book[&config.name].clone();
    let member = match &config.member {
        Some(mc) => {
            let m = start_member(mc.clone(), disk.clone(), observer.clone(), faults).await;
            tokio::spawn(serve_member(m.clone(), design.watch, me.etcd));
            Some(m)
        }
        None => None,
    };
    let supervisor = Arc::new(Supervisor {
        member: member.clone(),
        apiserver: std::sync::OnceLock::new(),
        book: config.book.clone(),
        learned: Mutex::new(None),
        observer: observer.clone(),
        ready_cache: Default::default(),
    });
    if config.role != NodeRole::Agent {
        tokio::spawn(serve_supervisor(supervisor.clone(), me.supervisor));
    }
    let rpc = Arc::new(
        Endpoint::bind("0.0.0.0:0")
            .await
            .expect("a node binds an ephemeral endpoint"),
    );
    let lists = join(&config, &design, &rpc, &disk, &observer, member.is_some()).await;
    if member.is_none() {
        *supervisor.learned.lock().expect("lists lock poisoned") = Some(lists.clone());
    }
    let mut etcd_client = None;
    if config.role.control_plane() {
        let endpoints = etcd_endpoints(&config, member.is_some(), &lists.etcd);
        let client = Arc::new(EtcdClient::new(endpoints, config.request_timeout));
        etcd_client = Some(client.clone());
        let api = Arc::new(ApiServer {
            backend: Backend::Etcd(client.clone()),
            watchlist: design.watchlist,
        });
        let _ = supervisor.apiserver.set(api.clone());
        tokio::spawn(serve_api(api, me.api, me.watch));
        if let Some(every) = config.compact_interval {
            tokio::spawn(compact_loop(
                client,
                every,
                config.compact_at_latest,
                observer.clone(),
            ));
        }
    }
    let lb = Arc::new(Mutex::new(LoadBalancer::new(
        &config.join,
        &lists.control_plane,
        design.lb,
    )));
    persist_servers(&disk, &lb.lock().expect("lb lock poisoned").servers());
    tokio::spawn(health_checks(
        config.clone(),
        lb.clone(),
        rpc.clone(),
        observer.clone(),
    ));
    let following = Following {
        supervisor,
        lb: lb.clone(),
        etcd_client,
        disk,
        observer: observer.clone(),
    };
    tokio::spawn(follow_servers(
        config.clone(),
        following,
        rpc.clone(),
        lists,
    ));
    kubelet(config, lb, rpc, observer).await;
}

/// The etcd endpoints of an apiserver: the local member first, then the others (k3s's local
/// etcd load balancer).
fn etcd_endpoints(config: &K3sNodeConfig, local_member: bool, etcd: &[String]) -> Vec<SocketAddr> {
    let me = &config.book[&config.name];
    let mut endpoints: Vec<SocketAddr> = local_member.then_some(me.etcd).into_iter().collect();
    endpoints.extend(
        etcd.iter()
            .filter(|n| **n != config.name)
            .filter_map(|n| config.book.get(n).map(|a| a.etcd)),
    );
    if endpoints.is_empty() {
        // Never left without an endpoint: the join target is where this node came in.
        endpoints.push(config.book[&config.join].etcd);
    }
    endpoints
}

/// What follows the server lists on a node.
struct Following {
    supervisor: Arc<Supervisor>,
    lb: Arc<Mutex<LoadBalancer>>,
    etcd_client: Option<Arc<EtcdClient>>,
    disk: SharedDisk,
    observer: SharedObserver,
}

/// Keeps the node's server lists current as servers join and leave: a node with a member reads
/// its member list, one without asks the etcd servers it knows. A change reaches the load
/// balancer (removed servers dropped, new ones probed), the persisted lists (a restart rejoins
/// through servers that still exist), the apiserver's etcd endpoints and, on a node without a
/// member, its supervisor's answers.
async fn follow_servers(
    config: K3sNodeConfig,
    f: Following,
    rpc: Arc<Endpoint>,
    mut current: ServerLists,
) {
    loop {
        tokio::time::sleep(SERVERS_EVERY).await;
        let fresh = if f.supervisor.member.is_some() {
            f.supervisor.lists().map(|l| ("member list".to_string(), l))
        } else {
            ask_servers(&config, &rpc, &current.etcd).await
        };
        let Some((via, fresh)) = fresh else {
            continue;
        };
        if fresh == current {
            continue;
        }
        if f.supervisor.member.is_none() {
            *f.supervisor.learned.lock().expect("lists lock poisoned") = Some(fresh.clone());
        }
        let servers = {
            let mut lb = f.lb.lock().expect("lb lock poisoned");
            lb.set_servers(&fresh.control_plane);
            lb.servers()
        };
        persist_servers(&f.disk, &servers);
        persist(&f.disk, KNOWN_FILE, &fresh.known());
        if let Some(client) = &f.etcd_client {
            let local = f.supervisor.member.is_some();
            client.set_endpoints(etcd_endpoints(&config, local, &fresh.etcd));
        }
        f.observer.record(StoreEvent::ServersUpdated {
            via,
            known: fresh.known(),
        });
        current = fresh;
    }
}

/// The server lists from the first etcd server (other than this node) that answers.
async fn ask_servers(
    config: &K3sNodeConfig,
    rpc: &Endpoint,
    etcd: &[String],
) -> Option<(String, ServerLists)> {
    for s in etcd.iter().filter(|s| **s != config.name) {
        let Some(addrs) = config.book.get(s) else {
            continue;
        };
        let call = SupervisorCall(SupervisorRequest::Servers);
        let answer = rpc
            .call_timeout(addrs.supervisor, call, config.request_timeout)
            .await;
        if let Ok(SupervisorResponse::Servers(lists)) = answer {
            return Some((s.clone(), lists));
        }
    }
    None
}

fn persist_servers(disk: &SharedDisk, servers: &[String]) {
    persist(disk, SERVERS_FILE, servers)
}

fn persist(disk: &SharedDisk, file: &str, servers: &[String]) {
    let mut d = disk.lock().expect("disk lock poisoned");
    d.replace(file, servers.join("\n").into_bytes());
    d.sync(file);
}

fn persisted(disk: &SharedDisk, file: &str) -> Vec<String> {
    let d = disk.lock().expect("disk lock poisoned");
    d.read(file)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Joins through the join target (or, fixed, any previously known server), retrying each
/// second; returns the control-plane servers and etcd members the supervisor named.
async fn join(
    config: &K3sNodeConfig,
    design: &Design,
    rpc: &Endpoint,
    disk: &SharedDisk,
    observer: &SharedObserver,
    has_member: bool,
) -> ServerLists {
    let mut targets = vec![config.join.clone()];
    let insists =
        design.startup == StartupVariant::K3s11333 && config.role == NodeRole::ControlPlaneOnly;
    if !insists {
        // Any server a previous join named will do (not this node itself: it cannot vouch for
        // a cluster it is not yet part of).
        for s in persisted(disk, KNOWN_FILE) {
            if !targets.contains(&s) && s != config.name {
                targets.push(s);
            }
        }
    }
    let member_id = config.member.as_ref().filter(|_| has_member).map(|m| m.id);
    // Adding a member waits for a membership change to commit; a plain join is one request.
    let deadline = if member_id.is_some() {
        Duration::from_secs(12)
    } else {
        config.request_timeout
    };
    loop {
        let mut failing = Vec::new();
        for t in &targets {
            let Some(addrs) = config.book.get(t) else {
                continue;
            };
            let req = SupervisorCall(SupervisorRequest::Join {
                node: config.name.clone(),
                member_id,
            });
            match rpc.call_timeout(addrs.supervisor, req, deadline).await {
                Ok(SupervisorResponse::Joined {
                    control_plane,
                    etcd,
                }) => {
                    let lists = ServerLists {
                        control_plane,
                        etcd,
                    };
                    let known = lists.known();
                    persist(disk, KNOWN_FILE, &known);
                    observer.record(StoreEvent::Joined {
                        via: t.clone(),
                        known,
                    });
                    return lists;
                }
                Ok(other) => failing.push(format!("join via {t}: {other:?}")),
                Err(e) => failing.push(format!("join via {t}: {e}")),
            }
        }
        observer.record(StoreEvent::ApiserverWaiting {
            via: Some(config.join.clone()),
            failing,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Probes every known server each period and records each change of route.
async fn health_checks(
    config: K3sNodeConfig,
    lb: Arc<Mutex<LoadBalancer>>,
    rpc: Arc<Endpoint>,
    observer: SharedObserver,
) {
    let mut last: Option<Option<String>> = None;
    let mut tick = tokio::time::interval(config.health_every);
    loop {
        tick.tick().await;
        let servers = lb.lock().expect("lb lock poisoned").servers();
        let probes = futures::future::join_all(servers.iter().map(|s| {
            let addr = config.book[s].supervisor;
            let rpc = rpc.clone();
            let timeout = config.health_every;
            async move {
                match rpc
                    .call_timeout(addr, SupervisorCall(SupervisorRequest::Ping), timeout)
                    .await
                {
                    Ok(SupervisorResponse::Pong { apiserver }) => Probe {
                        reachable: true,
                        apiserver,
                    },
                    _ => Probe {
                        reachable: false,
                        apiserver: false,
                    },
                }
            }
        }))
        .await;
        let route = {
            let mut lb = lb.lock().expect("lb lock poisoned");
            for (s, p) in servers.iter().zip(&probes) {
                lb.record(s, *p);
            }
            lb.route()
        };
        if last.as_ref() != Some(&route) {
            let apiserver = route
                .as_ref()
                .is_some_and(|s| config.book[s].role.control_plane());
            let reason = match &route {
                Some(s) => {
                    let i = servers.iter().position(|x| x == s);
                    let p = i.map(|i| probes[i]);
                    format!("health check of {s}: {p:?}")
                }
                None => "no server known".into(),
            };
            observer.record(StoreEvent::LbRoute {
                server: route.clone(),
                apiserver,
                reason,
            });
            last = Some(route);
        }
    }
}

async fn api_call(
    config: &K3sNodeConfig,
    rpc: &Endpoint,
    via: &str,
    req: ApiRequest,
) -> Result<ApiResponse, String> {
    let addr = config.book[via].api;
    rpc.call_timeout(addr, ApiCall(req), config.request_timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Waits for an apiserver through the load balancer, then renews the Node lease every period.
async fn kubelet(
    config: K3sNodeConfig,
    lb: Arc<Mutex<LoadBalancer>>,
    rpc: Arc<Endpoint>,
    observer: SharedObserver,
) {
    let started = tokio::time::Instant::now();
    loop {
        let via = lb.lock().expect("lb lock poisoned").route();
        let failing = match &via {
            None => vec!["no server to reach an apiserver through".to_string()],
            Some(s) => match api_call(&config, &rpc, s, ApiRequest::Readyz).await {
                Ok(ApiResponse::Readyz { code: 200, .. }) => break,
                Ok(ApiResponse::Readyz { checks, .. }) => checks
                    .into_iter()
                    .filter(|c| c.starts_with("[-]"))
                    .collect(),
                Ok(other) => vec![format!("unexpected answer {other:?}")],
                Err(e) => vec![e],
            },
        };
        observer.record(StoreEvent::ApiserverWaiting { via, failing });
        if started.elapsed() > READYZ_GIVE_UP {
            // k3s exits here and its service manager starts it again: wait afresh.
            return Box::pin(kubelet(config, lb, rpc, observer)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut tick = tokio::time::interval(config.lease_every);
    loop {
        tick.tick().await;
        let via = lb.lock().expect("lb lock poisoned").route();
        let result = match &via {
            None => Err("no server to reach an apiserver through".to_string()),
            Some(s) => renew_lease(&config, &rpc, s).await,
        };
        observer.record(StoreEvent::NodeLeaseRenew {
            via,
            ok: result.is_ok(),
            error: result.err().unwrap_or_default(),
        });
    }
}

/// Get-then-update of the node's Lease object, created when missing.
async fn renew_lease(config: &K3sNodeConfig, rpc: &Endpoint, via: &str) -> Result<(), String> {
    let (resource, namespace, name) = (
        "leases".to_string(),
        "kube-node-lease".to_string(),
        config.name.clone(),
    );
    let now = format!(
        "renewTime={}",
        tokio::time::Instant::now().elapsed().as_millis()
    );
    let current = api_call(
        config,
        rpc,
        via,
        ApiRequest::Get {
            resource: resource.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        },
    )
    .await?;
    let write = match current {
        ApiResponse::Object(o) => ApiRequest::Update {
            resource,
            namespace,
            name,
            value: now,
            resource_version: o.resource_version,
        },
        ApiResponse::Status(s) if s.code == 404 => ApiRequest::Create {
            resource,
            namespace,
            name,
            value: now,
        },
        ApiResponse::Status(s) => return Err(format!("{} {}: {}", s.code, s.reason, s.message)),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    match api_call(config, rpc, via, write).await? {
        ApiResponse::Object(_) => Ok(()),
        ApiResponse::Status(s) => Err(format!("{} {}: {}", s.code, s.reason, s.message)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

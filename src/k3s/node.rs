//! One k3s node's life: its etcd member and apiserver (by role), joining through the join
//! target, following the server lists as servers join and leave, the client load balancer with
//! its health checks, and the kubelet's Node lease.
//!
//! A restart runs [`run_k3s_node`] again on the same disk: the member and the persisted server
//! list come back from it; everything else starts afresh and must find its way back on its own.

use super::etcd_client::EtcdClient;
use super::lb::{LoadBalancer, Probe};
use super::servers::{etcd_endpoints, follow_servers, join, persist_servers, Following};
use super::supervisor::{
    serve_supervisor, Supervisor, SupervisorCall, SupervisorRequest, SupervisorResponse,
};
use crate::apiserver::{serve_api, ApiCall, ApiRequest, ApiResponse, ApiServer, Backend};
use crate::design::Design;
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

pub use super::role::NodeRole;

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

/// Components give up waiting for the apiserver after this long (and the process restarts).
const READYZ_GIVE_UP: Duration = Duration::from_secs(15 * 60);

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
            consistent_lists: crate::apiserver::ConsistentLists::new(design.apiserver),
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

/// Probes every known server each period and records each change of a server's health and of
/// the route.
async fn health_checks(
    config: K3sNodeConfig,
    lb: Arc<Mutex<LoadBalancer>>,
    rpc: Arc<Endpoint>,
    observer: SharedObserver,
) {
    let mut last: Option<Option<String>> = None;
    let mut seen: BTreeMap<String, Probe> = BTreeMap::new();
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
        record_health(&observer, &mut seen, &servers, &probes);
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

/// Records each server whose check found something else than its previous one, and each server
/// no longer checked: what the routing check judges the route against.
fn record_health(
    observer: &SharedObserver,
    seen: &mut BTreeMap<String, Probe>,
    servers: &[String],
    probes: &[Probe],
) {
    for (s, p) in servers.iter().zip(probes) {
        if seen.insert(s.clone(), *p) != Some(*p) {
            observer.record(StoreEvent::LbHealth {
                server: s.clone(),
                reachable: p.reachable,
                apiserver: p.apiserver,
                known: true,
            });
        }
    }
    let dropped: Vec<String> = seen
        .keys()
        .filter(|s| !servers.contains(s))
        .cloned()
        .collect();
    for s in dropped {
        seen.remove(&s);
        observer.record(StoreEvent::LbHealth {
            server: s,
            reachable: false,
            apiserver: false,
            known: false,
        });
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
                Ok(ApiResponse::Readyz { checks, .. }) => {
                    crate::probe!("k3s.kubelet.apiserver_not_ready");
                    checks
                        .into_iter()
                        .filter(|c| c.starts_with("[-]"))
                        .collect()
                }
                Ok(other) => vec![format!("unexpected answer {other:?}")],
                Err(e) => vec![e],
            },
        };
        observer.record(StoreEvent::ApiserverWaiting { via, failing });
        if started.elapsed() > READYZ_GIVE_UP {
            crate::probe!("k3s.kubelet.readyz_wait_gave_up");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observer;

    #[derive(Default)]
    struct Collect(Mutex<Vec<StoreEvent>>);

    impl Observer for Collect {
        fn record(&self, e: StoreEvent) {
            self.0.lock().unwrap().push(e);
        }
    }

    fn health(server: &str, reachable: bool, apiserver: bool, known: bool) -> StoreEvent {
        StoreEvent::LbHealth {
            server: server.into(),
            reachable,
            apiserver,
            known,
        }
    }

    #[test]
    fn health_is_recorded_on_change_and_when_a_server_is_no_longer_checked() {
        let collect = Arc::new(Collect::default());
        let observer: SharedObserver = collect.clone();
        let mut seen = BTreeMap::new();
        let (up, etcd_only) = (
            Probe {
                reachable: true,
                apiserver: true,
            },
            Probe {
                reachable: true,
                apiserver: false,
            },
        );
        let servers = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        record_health(
            &observer,
            &mut seen,
            &servers(&["s0", "s1"]),
            &[etcd_only, up],
        );
        // The same outcomes again: nothing new to tell.
        record_health(
            &observer,
            &mut seen,
            &servers(&["s0", "s1"]),
            &[etcd_only, up],
        );
        record_health(&observer, &mut seen, &servers(&["s0"]), &[up]);
        let events = std::mem::take(&mut *collect.0.lock().unwrap());
        let want = [
            health("s0", true, false, true),
            health("s1", true, true, true),
            health("s0", true, true, true),
            health("s1", false, false, false),
        ];
        assert_eq!(events, want);
    }
}

//! How a k3s node learns the servers it knows and keeps them: joining through its join target
//! (or, after a restart, any server it knew), then following the server lists as servers join
//! and leave, and the lists persisted on its disk so a restart rejoins through servers that
//! still exist.
//!
//! It reaches other nodes only through their supervisors, and its own node's parts (load
//! balancer, etcd client, supervisor) only through the handles it is given.

use super::etcd_client::EtcdClient;
use super::lb::LoadBalancer;
use super::node::{K3sNodeConfig, NodeRole};
use super::supervisor::{
    ServerLists, Supervisor, SupervisorCall, SupervisorRequest, SupervisorResponse,
};
use crate::design::{Design, StartupVariant};
use crate::etcd::disk::SharedDisk;
use crate::observe::{SharedObserver, StoreEvent};
use madsim::net::Endpoint;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVERS_FILE: &str = "agent/servers";
/// Every server the last join named (control plane and etcd): where a restart may rejoin.
const KNOWN_FILE: &str = "agent/known-servers";
/// How often a node checks the server lists again (k3s watches the apiserver endpoints and the
/// etcd member list; a few seconds' delay stands in for the watch).
const SERVERS_EVERY: Duration = Duration::from_secs(5);

/// The etcd endpoints of an apiserver: the local member first, then the others (k3s's local
/// etcd load balancer).
pub(super) fn etcd_endpoints(
    config: &K3sNodeConfig,
    local_member: bool,
    etcd: &[String],
) -> Vec<SocketAddr> {
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
pub(super) struct Following {
    pub supervisor: Arc<Supervisor>,
    pub lb: Arc<Mutex<LoadBalancer>>,
    pub etcd_client: Option<Arc<EtcdClient>>,
    pub disk: SharedDisk,
    pub observer: SharedObserver,
}

/// Keeps the node's server lists current as servers join and leave: a node with a member reads
/// its member list, one without asks the etcd servers it knows. A change reaches the load
/// balancer (removed servers dropped, new ones probed), the persisted lists (a restart rejoins
/// through servers that still exist), the apiserver's etcd endpoints and, on a node without a
/// member, its supervisor's answers.
pub(super) async fn follow_servers(
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
        crate::probe!("k3s.servers.list_updated");
        if f.supervisor.member.is_none() {
            crate::probe!("k3s.servers.list_updated_without_member");
        }
        if f.supervisor.member.is_none() {
            *f.supervisor.learned.lock().expect("lists lock poisoned") = Some(fresh.clone());
        }
        let (servers, lb_others) = {
            let mut lb = f.lb.lock().expect("lb lock poisoned");
            lb.set_servers(&fresh.control_plane);
            (lb.servers(), lb.others().to_vec())
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
            lb: lb_others,
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

pub(super) fn persist_servers(disk: &SharedDisk, servers: &[String]) {
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
pub(super) async fn join(
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
                    if *t != config.join {
                        crate::probe!("k3s.join.through_other_than_join_target");
                    }
                    let known = lists.known();
                    persist(disk, KNOWN_FILE, &known);
                    observer.record(StoreEvent::Joined {
                        via: t.clone(),
                        known,
                    });
                    return lists;
                }
                Ok(other) => failing.push(format!("join via {t}: {other:?}")),
                Err(e) => {
                    if *t == config.join && targets.len() > 1 {
                        crate::probe!("k3s.join.rejoin_with_join_target_down");
                    }
                    failing.push(format!("join via {t}: {e}"))
                }
            }
        }
        crate::probe!("k3s.join.retried");
        observer.record(StoreEvent::ApiserverWaiting {
            via: Some(config.join.clone()),
            failing,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

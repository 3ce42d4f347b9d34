//! The k3s supervisor on a server node: answers joins (adding etcd members), the current server
//! lists, member removals and health pings.
//!
//! A joining node learns the cluster's control-plane servers and etcd members from it, and every
//! node keeps learning them as members come and go; a load balancer's health check asks it
//! whether this server's apiserver is ready. Its lists follow the etcd member list (its own
//! member's, or on a node without one, what the node last learned); it holds no other state
//! beyond handles to the member and apiserver running beside it.

use super::node::{NodeAddrs, NodeRole};
use crate::apiserver::{ApiRequest, ApiResponse, ApiServer};
use crate::etcd::member::{MemberChange, MemberHandle};
use crate::observe::{SharedObserver, StoreEvent};
use madsim::net::rpc::Request;
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SupervisorRequest {
    /// A node joins; `member_id` when it brings an etcd member to add.
    Join {
        node: String,
        member_id: Option<u64>,
    },
    /// A load balancer's health check.
    Ping,
    /// The server lists as this server knows them now (k3s nodes follow the apiserver
    /// endpoints and the etcd member list).
    Servers,
    /// An operator removes `node`'s etcd member (k3s: the Node is deleted, its etcd member
    /// removed by a server's etcd controller).
    RemoveMember { node: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorResponse {
    Joined {
        /// Servers that run an apiserver, by node name.
        control_plane: Vec<String>,
        /// Servers that hold an etcd member, by node name.
        etcd: Vec<String>,
    },
    Pong {
        /// Whether this server runs an apiserver whose `/readyz` passes.
        apiserver: bool,
    },
    Servers(ServerLists),
    /// The member is out of the cluster (or never was in it).
    Removed,
    Refused(String),
}

/// The servers a node knows, by node name, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLists {
    /// Servers that run an apiserver.
    pub control_plane: Vec<String>,
    /// Servers that hold an etcd member.
    pub etcd: Vec<String>,
}

impl ServerLists {
    /// Every server of both lists, control plane first: where a restart may rejoin.
    pub fn known(&self) -> Vec<String> {
        let mut known = self.control_plane.clone();
        for n in &self.etcd {
            if !known.contains(n) {
                known.push(n.clone());
            }
        }
        known
    }
}

/// How long a member add or remove may take to commit and apply here.
const MEMBER_CHANGE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupervisorCall(pub SupervisorRequest);

impl Request for SupervisorCall {
    type Response = SupervisorResponse;
    const ID: u64 = madsim::net::rpc::hash_str("faultline.k3s.SupervisorCall");
}

pub struct Supervisor {
    pub member: Option<MemberHandle>,
    /// Set once this node's apiserver runs (a control-plane-only node starts it after joining).
    pub apiserver: std::sync::OnceLock<Arc<ApiServer>>,
    /// Every node's addresses, role and member id (as DNS and the node objects would tell).
    pub book: BTreeMap<String, NodeAddrs>,
    /// On a node without a member: the lists the node last learned (at its join or since).
    pub learned: Mutex<Option<ServerLists>>,
    pub observer: SharedObserver,
    /// The last `/readyz` verdict and when it was taken: every node's load balancer pings every
    /// second, and one linearizable etcd read per second answers them all.
    pub ready_cache: std::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl Supervisor {
    /// The server lists as this server knows them: from its member's member list (every
    /// control-plane-only server, which holds no member, is listed as it is), or what a node
    /// without a member last learned. `None` while this server knows no cluster yet (a new
    /// member not yet caught up).
    pub fn lists(&self) -> Option<ServerLists> {
        let Some(member) = &self.member else {
            return self.learned.lock().expect("lists lock poisoned").clone();
        };
        let voters = member.voters();
        if voters.is_empty() {
            return None;
        }
        let is_voter = |a: &NodeAddrs| a.member_id.is_some_and(|id| voters.contains(&id));
        let named = |keep: &dyn Fn(&NodeAddrs) -> bool| -> Vec<String> {
            let kept = self.book.iter().filter(|(_, a)| keep(a));
            kept.map(|(n, _)| n.clone()).collect()
        };
        Some(ServerLists {
            control_plane: named(&|a| match a.role {
                NodeRole::ControlPlaneOnly => true,
                NodeRole::Server => is_voter(a),
                _ => false,
            }),
            etcd: named(&is_voter),
        })
    }

    async fn handle(&self, req: SupervisorRequest) -> SupervisorResponse {
        match req {
            SupervisorRequest::Ping => {
                let cached = *self.ready_cache.lock().expect("cache lock poisoned");
                let fresh = cached.filter(|(at, _)| at.elapsed() < Duration::from_secs(1));
                let apiserver = match (fresh, self.apiserver.get()) {
                    (Some((_, ready)), _) => ready,
                    (None, Some(api)) => {
                        let ready = matches!(
                            api.handle(ApiRequest::Readyz).await,
                            ApiResponse::Readyz { code: 200, .. }
                        );
                        *self.ready_cache.lock().expect("cache lock poisoned") =
                            Some((tokio::time::Instant::now(), ready));
                        ready
                    }
                    (None, None) => false,
                };
                SupervisorResponse::Pong { apiserver }
            }
            SupervisorRequest::Join { node, member_id } => {
                if let Some(id) = member_id {
                    let Some(member) = &self.member else {
                        return SupervisorResponse::Refused(
                            "this server holds no etcd member to add one through".into(),
                        );
                    };
                    if self.lists().is_none() {
                        crate::probe!("k3s.supervisor.join_refused_not_caught_up");
                        return SupervisorResponse::Refused(
                            "this server has not caught up with the cluster yet".into(),
                        );
                    }
                    let new = !member.voters().contains(&id);
                    let change = member.change_member(MemberChange::Add, id, MEMBER_CHANGE);
                    if let Err(e) = change.await {
                        crate::probe!("k3s.supervisor.member_add_failed");
                        return SupervisorResponse::Refused(format!(
                            "adding etcd member for {node}: {e}"
                        ));
                    }
                    if new {
                        let node = node.clone();
                        self.observer.record(StoreEvent::MemberAdded {
                            member_id: id,
                            node,
                        });
                    }
                }
                match self.lists() {
                    Some(lists) => SupervisorResponse::Joined {
                        control_plane: lists.control_plane,
                        etcd: lists.etcd,
                    },
                    None => SupervisorResponse::Refused("this server knows no cluster yet".into()),
                }
            }
            SupervisorRequest::Servers => match self.lists() {
                Some(lists) => SupervisorResponse::Servers(lists),
                None => SupervisorResponse::Refused("this server knows no cluster yet".into()),
            },
            SupervisorRequest::RemoveMember { node } => {
                let (Some(member), Some(id)) =
                    (&self.member, self.book.get(&node).and_then(|a| a.member_id))
                else {
                    return SupervisorResponse::Refused(format!(
                        "no etcd member to remove {node} through, or {node} holds none"
                    ));
                };
                let change = member.change_member(MemberChange::Remove, id, MEMBER_CHANGE);
                match change.await {
                    Ok(_) => {
                        self.observer.record(StoreEvent::MemberRemoved {
                            member_id: id,
                            node,
                        });
                        SupervisorResponse::Removed
                    }
                    Err(e) => {
                        crate::probe!("k3s.supervisor.member_remove_failed");
                        SupervisorResponse::Refused(format!("removing etcd member of {node}: {e}"))
                    }
                }
            }
        }
    }
}

pub async fn serve_supervisor(supervisor: Arc<Supervisor>, addr: SocketAddr) {
    let rpc = Endpoint::bind(addr)
        .await
        .expect("the supervisor binds its address");
    rpc.add_rpc_handler(move |SupervisorCall(req): SupervisorCall| {
        let s = supervisor.clone();
        // Boxed: madsim spawns a task per request and moves the handler's future into it, and
        // this one is large (every await of `handle`); moving a pointer instead took a fifth of
        // an idle etcd cluster's CPU off (same trace).
        Box::pin(async move { s.handle(req).await })
    });
    std::future::pending::<()>().await;
}

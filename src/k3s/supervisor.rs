//! The k3s supervisor on a server node: answers joins (adding etcd members) and health pings.
//!
//! A joining node learns the cluster's control-plane servers and etcd members from it; a load
//! balancer's health check asks it whether this server's apiserver is ready. It holds no state
//! of its own beyond handles to the member and apiserver running beside it.

use crate::apiserver::{ApiRequest, ApiResponse, ApiServer};
use crate::etcd::member::MemberHandle;
use madsim::net::rpc::Request;
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
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
    Refused(String),
}

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
    pub control_plane: Vec<String>,
    pub etcd: Vec<String>,
    /// The last `/readyz` verdict and when it was taken: every node's load balancer pings every
    /// second, and one linearizable etcd read per second answers them all.
    pub ready_cache: std::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl Supervisor {
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
                    if let Err(e) = member.add_member(id, Duration::from_secs(10)).await {
                        return SupervisorResponse::Refused(format!(
                            "adding etcd member for {node}: {e}"
                        ));
                    }
                }
                SupervisorResponse::Joined {
                    control_plane: self.control_plane.clone(),
                    etcd: self.etcd.clone(),
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
        async move { s.handle(req).await }
    });
    std::future::pending::<()>().await;
}

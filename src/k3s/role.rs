//! The four roles a k3s node can have: plain data, shared with the real build (live mode's
//! fault draws name nodes by role).

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

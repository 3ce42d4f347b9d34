//! What both topologies share: the registry of the nodes a run created, their addresses and the
//! well-known ports.
//!
//! Owned by the world while it builds a run; faults and audits look nodes up here by name. It
//! never starts a node itself.

use crate::faults::schedule::{NodeRef, Role};
use crate::history::recorder::Recorder;
use crate::history::EventKind;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub(crate) const ETCD_PORT: u16 = 2379;
pub(crate) const DB_PORT: u16 = 3306;
/// The apiserver facade: requests, and watch streams.
pub const API_PORT: u16 = 6443;
pub const WATCH_PORT: u16 = 6444;

pub(crate) fn ip(net: u8, host: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, net, host as u8))
}

pub(crate) struct Cluster {
    pub ids: BTreeMap<String, NodeId>,
    pub refs: Vec<NodeRef>,
    pub servers: Vec<(String, SocketAddr)>,
    /// etcd topology: the servers that join and leave during the run, and how.
    pub membership: Option<std::sync::Arc<crate::world::membership::Membership>>,
}

impl Cluster {
    /// Records a created node under its name and role, and that it started.
    pub fn register(&mut self, name: &str, id: NodeId, role: Role, recorder: &Recorder) {
        self.register_node(name, id, role, false, false, recorder)
    }

    pub fn register_node(
        &mut self,
        name: &str,
        id: NodeId,
        role: Role,
        control_plane: bool,
        join_target: bool,
        recorder: &Recorder,
    ) {
        self.register_absent(name, id, role, control_plane, join_target);
        recorder.event(name, EventKind::NodeStarted);
    }

    /// Records a created node that does not run yet (a server that joins later): faults may
    /// target it by name, and miss while it is absent.
    pub fn register_absent(
        &mut self,
        name: &str,
        id: NodeId,
        role: Role,
        control_plane: bool,
        join_target: bool,
    ) {
        self.ids.insert(name.to_string(), id);
        self.refs.push(NodeRef {
            name: name.to_string(),
            role,
            control_plane,
            join_target,
            pinned_to: None,
            k3s_role: None,
        });
    }

    /// etcd topology: records node `name`'s k3s role, which pauses target.
    pub fn set_k3s_role(&mut self, name: &str, role: store::k3s::role::NodeRole) {
        for r in self.refs.iter_mut().filter(|r| r.name == name) {
            r.k3s_role = Some(role);
        }
    }

    /// Records that client `name` only ever uses `server`.
    pub fn pin(&mut self, name: &str, server: &str) {
        for r in self.refs.iter_mut().filter(|r| r.name == name) {
            r.pinned_to = Some(server.to_string());
        }
    }

    /// The name node `id` was registered under.
    pub fn name_of(&self, id: NodeId) -> &str {
        self.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
            .unwrap_or_default()
    }

    pub fn ids_of(&self, names: &[String]) -> Vec<NodeId> {
        names.iter().map(|n| self.ids[n]).collect()
    }
}

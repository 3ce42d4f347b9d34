//! Carrying out the membership plan in an etcd-topology run: servers that join (a node created
//! at build and held down until then starts with its fresh disk and joins through the member it
//! was told about) and servers that leave (stopped for good, disk discarded, etcd member removed
//! by an operator through a remaining server's supervisor), as world events the checkers and the
//! timeline see. As an operator waits for a healthy cluster, no change starts before the one
//! before it took effect: a joiner's member added, a leaver's member removed.
//!
//! It owns only the plan and each server's disk and addresses; it changes nodes through the
//! lifecycle, never by reaching into a node.

use crate::faults::kill::Lifecycle;
use crate::faults::membership::{Change, Plan};
use crate::history::recorder::Recorder;
use crate::history::EventKind;
use crate::world::cluster::{ip, Cluster};
use madsim::net::Endpoint;
use madsim::runtime::Handle;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::etcd::disk::{Disk, SharedDisk};
use store::k3s::role::NodeRole;
use store::k3s::supervisor::{SupervisorCall, SupervisorRequest, SupervisorResponse};
use tokio::time::Instant;

/// An operator retries a call this often until a server answers as it needs (a member removed,
/// a joiner's member listed).
const OPERATOR_RETRY: Duration = Duration::from_secs(2);
/// How long one removal request may take (the supervisor waits up to 10 s for it to apply).
const REMOVE_CALL: Duration = Duration::from_secs(12);
/// How long one request for a supervisor's server lists may take.
const LISTS_CALL: Duration = Duration::from_secs(3);

/// A server that holds (or will hold) an etcd member.
pub(crate) struct ServerNode {
    pub disk: SharedDisk,
    pub supervisor: SocketAddr,
    pub etcd: SocketAddr,
}

pub(crate) struct Membership {
    plan: Plan,
    servers: BTreeMap<String, ServerNode>,
    /// Every k3s node that will ever exist, with its role, in roster order.
    roles: Vec<(String, NodeRole)>,
}

impl Membership {
    pub fn new(
        plan: Plan,
        servers: BTreeMap<String, ServerNode>,
        roles: Vec<(String, NodeRole)>,
    ) -> Self {
        Membership {
            plan,
            servers,
            roles,
        }
    }

    fn joins_later(&self, node: &str) -> bool {
        self.plan.joiners.iter().any(|j| j.name == node)
    }

    fn leaves(&self, node: &str) -> bool {
        self.plan.leavers().any(|l| l == node)
    }

    /// Holds every planned joiner down until it joins. Called before the run's first await, so
    /// none of them ever ran.
    pub fn hold_joiners(&self, cluster: &Cluster, lifecycle: &Lifecycle) {
        for j in &self.plan.joiners {
            lifecycle.hold(cluster.ids[&j.name]);
        }
    }

    /// The plan it carries out.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Each node's role at the end of the run: the bootstrap nodes and joiners, without the
    /// servers that left (nothing is expected of them any more).
    pub fn final_roles(&self) -> BTreeMap<String, String> {
        self.roles
            .iter()
            .filter(|(n, _)| !self.leaves(n))
            .map(|(n, r)| (n.clone(), r.name().to_string()))
            .collect()
    }

    /// The etcd members at the end of the run, with their client addresses, in roster order.
    pub fn final_members(&self) -> Vec<(String, SocketAddr)> {
        self.roles
            .iter()
            .filter(|(n, _)| !self.leaves(n))
            .filter_map(|(n, _)| self.servers.get(n).map(|s| (n.clone(), s.etcd)))
            .collect()
    }

    /// Whether change `k` is a join and the next change, at the same time, joins through it
    /// (the first of a `server-join-pair`).
    fn pair_follows(&self, k: usize) -> bool {
        let (Some(c), Some(next)) = (self.plan.changes.get(k), self.plan.changes.get(k + 1)) else {
            return false;
        };
        match (&c.change, &next.change) {
            (Change::Join { node }, Change::Join { node: second }) => {
                next.at == c.at && self.plan.joiner(second).via == *node
            }
            _ => false,
        }
    }

    /// Carries out the plan's changes one after the other, each at its planned time or once the
    /// change before it took effect, whichever is later (a join waits for its member add, a
    /// leave for its member removal, both bounded by `end`). Without the wait, a leave could
    /// stop a server while the member that joined just before it is not added yet: from two
    /// members, one stopped for good, neither the add nor the removal ever commits.
    pub async fn carry_out(
        self: Arc<Self>,
        cluster: Arc<Cluster>,
        lifecycle: Arc<Lifecycle>,
        recorder: Recorder,
        start: Instant,
        end: Instant,
    ) {
        let mut members: Vec<String> = self
            .roles
            .iter()
            .filter(|(n, r)| r.etcd() && !self.joins_later(n))
            .map(|(n, _)| n.clone())
            .collect();
        for (k, c) in self.plan.changes.iter().enumerate() {
            tokio::time::sleep_until(start + c.at).await;
            // Admits a joiner; returns the supervisors that will list its member once added.
            let join = |node: &str, replacing: Option<&str>, members: &mut Vec<String>| {
                lifecycle.admit(cluster.ids[node]);
                let via = self.plan.joiner(node).via.clone();
                let replacing = replacing.map(str::to_string);
                recorder.event(node, EventKind::ServerJoined { via, replacing });
                let through: Vec<SocketAddr> =
                    members.iter().map(|m| self.servers[m].supervisor).collect();
                members.push(node.to_string());
                through
            };
            match &c.change {
                Change::Join { node } => {
                    let through = join(node, None, &mut members);
                    // The first of a pair does not wait: the second starts with it and asks it
                    // to join before its own member add committed; the second's add waits.
                    if !self.pair_follows(k) {
                        member_added(node, through, k, end).await;
                    }
                }
                Change::Leave { node } => {
                    self.leave(
                        node,
                        None,
                        &mut members,
                        k,
                        &cluster,
                        &lifecycle,
                        &recorder,
                        end,
                    )
                    .await
                }
                Change::Replace { leave, join: new } => {
                    let next = Some(new.as_str());
                    self.leave(
                        leave,
                        next,
                        &mut members,
                        k,
                        &cluster,
                        &lifecycle,
                        &recorder,
                        end,
                    )
                    .await;
                    let through = join(new, Some(leave), &mut members);
                    member_added(new, through, k, end).await;
                }
            }
        }
    }

    /// Stops `node` for good, discards its disk and has an operator remove its member through
    /// the remaining members' supervisors, retrying until one does (or the run ends).
    #[allow(clippy::too_many_arguments)]
    async fn leave(
        &self,
        node: &str,
        replaced_by: Option<&str>,
        members: &mut Vec<String>,
        k: usize,
        cluster: &Cluster,
        lifecycle: &Lifecycle,
        recorder: &Recorder,
        end: Instant,
    ) {
        let replaced_by = replaced_by.map(str::to_string);
        recorder.event(node, EventKind::ServerLeft { replaced_by });
        lifecycle.hold(cluster.ids[node]);
        *self.servers[node].disk.lock().expect("disk lock poisoned") = Disk::default();
        members.retain(|m| m != node);
        let through: Vec<SocketAddr> = members.iter().map(|m| self.servers[m].supervisor).collect();
        remove_member(node, through, k, end).await;
    }
}

/// An operator node (`operator-K`) asks the given supervisors in turn to remove `node`'s member
/// until one does or `end` passes; returns whether it was removed.
async fn remove_member(node: &str, through: Vec<SocketAddr>, k: usize, end: Instant) -> bool {
    let request = SupervisorRequest::RemoveMember {
        node: node.to_string(),
    };
    let removed = |r: &SupervisorResponse| matches!(r, SupervisorResponse::Removed);
    let operator = Operator {
        name: format!("operator-{k}"),
        host: 10 + k as u32,
        call: REMOVE_CALL,
    };
    operator.ask(through, request, removed, end).await
}

/// An operator node (`operator-K-join`) asks the given supervisors in turn for their server
/// lists until one lists `node` as an etcd member (its member add committed) or `end` passes;
/// returns whether one did.
async fn member_added(node: &str, through: Vec<SocketAddr>, k: usize, end: Instant) -> bool {
    let node = node.to_string();
    let added = move |r: &SupervisorResponse| matches!(r, SupervisorResponse::Servers(l) if l.etcd.contains(&node));
    let operator = Operator {
        name: format!("operator-{k}-join"),
        host: 140 + k as u32,
        call: LISTS_CALL,
    };
    operator
        .ask(through, SupervisorRequest::Servers, added, end)
        .await
}

/// A node outside the cluster from which an operator calls servers' supervisors.
struct Operator {
    name: String,
    /// Its address's host part (network 9).
    host: u32,
    /// How long one call may take.
    call: Duration,
}

impl Operator {
    /// Sends `request` to each supervisor of `through` in turn, every `OPERATOR_RETRY`, until an
    /// answer is `done` or `end` passes; returns whether one was.
    async fn ask(
        self,
        through: Vec<SocketAddr>,
        request: SupervisorRequest,
        done: impl Fn(&SupervisorResponse) -> bool + Send + Sync + 'static,
        end: Instant,
    ) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let done = Arc::new(done);
        let call = self.call;
        Handle::current()
            .create_node()
            .name(self.name)
            .ip(ip(9, self.host))
            .init(move || {
                let (through, tx) = (through.clone(), tx.clone());
                let (request, done) = (request.clone(), done.clone());
                async move {
                    let rpc = Endpoint::bind("0.0.0.0:0")
                        .await
                        .expect("an operator binds an ephemeral endpoint");
                    let answered = 'tries: loop {
                        for addr in &through {
                            let req = SupervisorCall(request.clone());
                            if let Ok(r) = rpc.call_timeout(*addr, req, call).await {
                                if done(&r) {
                                    break 'tries true;
                                }
                            }
                        }
                        if Instant::now() >= end {
                            break false;
                        }
                        tokio::time::sleep(OPERATOR_RETRY).await;
                    };
                    if let Some(tx) = tx.lock().expect("operator channel lock poisoned").take() {
                        let _ = tx.send(answered);
                    }
                }
            })
            .build();
        rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use crate::history::EventKind;
    use store::observe::StoreEvent;

    /// Servers join, leave and are replaced during a run: the joined ones end as members every
    /// node knows, the ones that left are forgotten everywhere, and every check holds.
    #[test]
    fn servers_join_and_leave_and_every_node_follows() {
        let mut scenario = crate::scenario::load("../scenarios/etcd-ha-partitions.toml")
            .expect("the shipped scenario loads");
        scenario.duration_s = 400;
        scenario.quiet_s = 60;
        scenario.faults.swarm = false;
        // Leases are judged by the lease check's own tests; this run judges the members.
        scenario.workload.lease_clients = 0;
        scenario.faults.partitions_per_min = 0.5;
        scenario.faults.kills_per_min = 1.0;
        scenario.faults.membership_changes_per_min = 2.0;
        scenario.faults.membership_kinds = crate::faults::membership::KINDS
            .iter()
            .map(|k| k.to_string())
            .collect();
        let out = crate::world::run_seed(&scenario, 5, &Default::default());
        let h = &out.history;
        let joined: Vec<&str> = h
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ServerJoined { .. }))
            .map(|e| e.node.as_str())
            .collect();
        let left: Vec<&str> = h
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ServerLeft { .. }))
            .map(|e| e.node.as_str())
            .collect();
        assert!(
            !joined.is_empty() && !left.is_empty(),
            "{joined:?} {left:?}"
        );
        let roles = &h.params.node_roles;
        for n in &left {
            assert!(!roles.contains_key(*n), "{n} left but is judged");
            let removed = h
                .store_events()
                .any(|(_, _, e)| matches!(e, StoreEvent::MemberRemoved { node, .. } if node == n));
            assert!(removed, "{n}'s member was removed");
            let gone_at = h
                .events
                .iter()
                .find(|e| e.node == *n && matches!(e.kind, EventKind::ServerLeft { .. }))
                .map(|e| e.at_ns)
                .unwrap();
            let back = h.events.iter().any(|e| {
                e.node == *n && e.at_ns > gone_at && matches!(e.kind, EventKind::NodeRestarted)
            });
            assert!(!back, "{n} came back after it left");
        }
        let finals: Vec<&str> = h
            .params
            .members_final
            .iter()
            .map(|m| m.node.as_str())
            .collect();
        for n in joined.iter().filter(|n| !left.contains(n)) {
            assert!(roles.contains_key(*n), "{n} joined but is not judged");
            assert!(
                finals.contains(n),
                "{n} is not in the final audit: {finals:?}"
            );
        }
        assert!(finals.iter().all(|n| !left.contains(n)), "{finals:?}");
        // Every agent's last server list is the final membership.
        for agent in ["agent-1", "agent-2"] {
            let known =
                h.store_events()
                    .filter(|(_, n, _)| *n == agent)
                    .filter_map(|(_, _, e)| match e {
                        StoreEvent::ServersUpdated { known, .. }
                        | StoreEvent::Joined { known, .. } => Some(known),
                        _ => None,
                    })
                    .last()
                    .expect("an agent learns the servers");
            let mut known = known.clone();
            known.sort();
            let mut want: Vec<String> = finals.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(known, want, "{agent} follows membership");
        }
        for check in crate::checkers::all() {
            let report = check.check(h);
            assert!(report.passed(), "{}: {:?}", report.check, report.first());
        }
    }
}

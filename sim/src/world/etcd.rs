//! The embedded-etcd part of the world: server nodes that each run an etcd member on a disk of
//! their own (every node that will ever exist, planned joiners included, created up front in a
//! fixed order), and the audit of every member's final state.
//!
//! A node's disk is the only state that outlives its restarts; a restart first applies the power
//! loss (unsynced writes dropped, the last one sometimes torn, drawn from the seed) and records it.

use crate::clients::controller::ApiServerAddr;
use crate::faults::compaction::CompactionFaults;
use crate::faults::membership::{self, Plan};
use crate::faults::replay::Restarts;
use crate::faults::schedule::Role;
use crate::history::recorder::Recorder;
use crate::history::MemberFinal;
use crate::scenario::Scenario;
use crate::world::cluster::{ip, Cluster, API_PORT, ETCD_PORT, WATCH_PORT};
use crate::world::membership::{Membership, ServerNode};
use madsim::runtime::Handle;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::design::Design;
use store::etcd::disk::Disk;
use store::etcd::member::MemberConfig;
use store::k3s::node::{run_k3s_node, K3sNodeConfig, NodeAddrs, NodeRole};
use store::observe::StoreEvent;
use store::proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};

/// Raft traffic between members.
const PEER_PORT: u16 = 2380;
/// The k3s supervisor (joins and health checks).
pub(crate) const SUPERVISOR_PORT: u16 = 9345;
/// Load balancer health checks (k3s: every second).
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// The nodes' health checks (src/k3s/node.rs) time out after one period.
const HEALTH_TIMEOUT: Duration = HEALTH_EVERY;
/// Kubelet Node lease renewals (every 10 s) and the NotReady grace (40 s).
const LEASE_EVERY: Duration = Duration::from_secs(10);
pub(crate) const LEASE_GRACE: Duration = Duration::from_secs(40);

/// The network a role's nodes live on: `<prefix>-<n>` is `10.0.<net>.<n>`.
fn role_net(role: NodeRole) -> u8 {
    match role {
        NodeRole::Server => 1,
        NodeRole::EtcdOnly => 5,
        NodeRole::ControlPlaneOnly => 6,
        NodeRole::Agent => 7,
    }
}

/// The etcd topology's nodes at bootstrap, in order: (name, role, ip).
pub(crate) fn layout(t: &crate::scenario::Topology) -> Vec<(String, NodeRole, std::net::IpAddr)> {
    let mut out = Vec::new();
    let mut add = |prefix: &str, n: u32, role: NodeRole| {
        for i in 1..=n {
            out.push((format!("{prefix}-{i}"), role, ip(role_net(role), i)));
        }
    };
    add("server", t.servers, NodeRole::Server);
    add("etcd", t.etcd_only, NodeRole::EtcdOnly);
    add("cp", t.control_plane_only, NodeRole::ControlPlaneOnly);
    add("agent", t.agents, NodeRole::Agent);
    out
}

/// Every node that will ever exist: the bootstrap layout, then the planned joiners in order.
fn roster(t: &crate::scenario::Topology, plan: &Plan) -> Vec<(String, NodeRole, std::net::IpAddr)> {
    let mut out = layout(t);
    for j in &plan.joiners {
        let n: u32 = j
            .name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a joiner is named <prefix>-<n>");
        out.push((j.name.clone(), j.role, ip(role_net(j.role), n)));
    }
    out
}

/// The server every node of the topology joins through: the configured one, or the first
/// server (else the first etcd member).
fn join_target(t: &crate::scenario::Topology) -> String {
    if let Some(j) = &t.join {
        return j.clone();
    }
    let members: Vec<(String, NodeRole, _)> =
        layout(t).into_iter().filter(|(_, r, _)| r.etcd()).collect();
    members
        .iter()
        .find(|(_, r, _)| *r == NodeRole::Server)
        .or(members.first())
        .map(|(n, _, _)| n.clone())
        .expect("an etcd topology has a member")
}

/// The run's membership changes, drawn from the seed before anything is built (or the
/// schedule's).
fn plan_membership(scenario: &Scenario, seed: u64) -> Plan {
    if let Some(s) = &scenario.schedule {
        return crate::faults::replay::membership(s);
    }
    let t = &scenario.topology;
    let members: Vec<(String, NodeRole)> = layout(t)
        .into_iter()
        .filter(|(_, r, _)| r.etcd())
        .map(|(n, r, _)| (n, r))
        .collect();
    membership::draw(
        seed,
        &scenario.faults,
        &members,
        &[join_target(t)],
        Duration::from_secs(scenario.duration_s),
    )
}

/// How long after faults stop every node must be routed to an apiserver and Ready again: an
/// election (1 s) and a rejoin round, two health-check periods to fail over or back, a lease
/// interval for the next renewal and a request deadline for it, with slack for one retry.
pub(crate) fn rejoin_bound(request_timeout: Duration) -> Duration {
    Duration::from_secs(5) + 2 * HEALTH_EVERY + 2 * (LEASE_EVERY + request_timeout)
}

/// How long a node's load balancer may stay on a failing server while another it knows passes:
/// the check that sees the change starts within a period, or right after a round that waited out a
/// timeout, and takes at most one timeout (the node's checks time out after one period); plus
/// half a period for delivery and the route's recording.
pub(crate) fn lb_health_bound() -> Duration {
    HEALTH_EVERY.max(HEALTH_TIMEOUT) + HEALTH_TIMEOUT + HEALTH_EVERY / 2
}

/// The apiservers of the etcd topology (servers and control-plane-only nodes), for controllers.
pub(crate) fn apiservers(t: &crate::scenario::Topology) -> Vec<ApiServerAddr> {
    layout(t)
        .into_iter()
        .filter(|(_, role, _)| role.control_plane())
        .map(|(name, _, ip)| ApiServerAddr {
            name,
            api: SocketAddr::new(ip, API_PORT),
            watch: SocketAddr::new(ip, WATCH_PORT),
        })
        .collect()
}

pub(crate) fn build_etcd_servers(
    scenario: &Scenario,
    design: &Design,
    recorder: &Recorder,
    (faults, restarts): (Arc<CompactionFaults>, Arc<Restarts>),
    cluster: &mut Cluster,
    seed: u64,
) {
    let handle = Handle::current();
    let t = &scenario.topology;
    let plan = plan_membership(scenario, seed);
    let nodes = roster(t, &plan);
    // Member ids in roster order over the nodes that hold one.
    let member_ids: BTreeMap<String, u64> = nodes
        .iter()
        .filter(|(_, r, _)| r.etcd())
        .enumerate()
        .map(|(i, (n, _, _))| (n.clone(), i as u64 + 1))
        .collect();
    let book: BTreeMap<String, NodeAddrs> = nodes
        .iter()
        .map(|(name, role, ip)| {
            (
                name.clone(),
                NodeAddrs {
                    role: *role,
                    member_id: member_ids.get(name).copied(),
                    supervisor: SocketAddr::new(*ip, SUPERVISOR_PORT),
                    api: SocketAddr::new(*ip, API_PORT),
                    watch: SocketAddr::new(*ip, WATCH_PORT),
                    etcd: SocketAddr::new(*ip, ETCD_PORT),
                },
            )
        })
        .collect();
    let peers: BTreeMap<u64, SocketAddr> = nodes
        .iter()
        .filter_map(|(n, _, ip)| {
            member_ids
                .get(n)
                .map(|id| (*id, SocketAddr::new(*ip, PEER_PORT)))
        })
        .collect();
    let join = join_target(t);
    let joiners: BTreeMap<&str, &membership::Joiner> =
        plan.joiners.iter().map(|j| (j.name.as_str(), j)).collect();
    // Without a join target every bootstrap member starts as a voter of one initial cluster.
    let initial_voters: Vec<u64> = member_ids
        .iter()
        .filter(|(n, _)| !joiners.contains_key(n.as_str()))
        .map(|(_, id)| *id)
        .collect();
    let mut servers = BTreeMap::new();
    for (name, role, node_ip) in &nodes {
        let joiner = joiners.get(name.as_str());
        let member = member_ids.get(name).map(|&id| MemberConfig {
            name: name.clone(),
            id,
            peers: peers.clone(),
            // With a join target, only it starts the cluster; the others are added as members,
            // as is every server that joins later.
            initial_voters: match &t.join {
                _ if joiner.is_some() => vec![],
                Some(j) if j == name => vec![id],
                Some(_) => vec![],
                None => initial_voters.clone(),
            },
            snapshot_entries: scenario.etcd.snapshot_entries,
            keep_entries: scenario.etcd.keep_entries,
            compaction: design.compaction,
            lease: design.lease,
        });
        let config = K3sNodeConfig {
            name: name.clone(),
            role: *role,
            // A joiner is told one member to join through; every other node the join target.
            join: joiner.map_or(join.clone(), |j| j.via.clone()),
            book: book.clone(),
            member,
            compact_interval: (scenario.etcd.compact_interval_s > 0)
                .then(|| Duration::from_secs(scenario.etcd.compact_interval_s)),
            compact_at_latest: scenario.etcd.compact_mode == "latest",
            request_timeout: Duration::from_millis(scenario.workload.request_timeout_ms),
            health_every: HEALTH_EVERY,
            lease_every: LEASE_EVERY,
        };
        let disk = Disk::shared();
        if role.etcd() {
            let server = ServerNode {
                disk: disk.clone(),
                supervisor: book[name].supervisor,
                etcd: book[name].etcd,
            };
            servers.insert(name.clone(), server);
        }
        let (design, recorder_c, faults) = (design.clone(), recorder.clone(), faults.clone());
        let restarts = restarts.clone();
        let torn_p = scenario.etcd.torn_write_probability;
        let node_name = name.clone();
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let node = handle
            .create_node()
            .name(name)
            .ip(*node_ip)
            .init(move || {
                let start = starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let observer = recorder_c.observer(&node_name);
                // The kill that preceded this start was a power loss for the disk. A replayed
                // schedule still draws, so the generator moves as in the seed's own run.
                let mut rng = madsim::rand::thread_rng();
                let drawn = rng.gen_bool(torn_p).then(|| rng.gen::<u64>());
                let tear = restarts.tear(&node_name, drawn);
                let loss = disk.lock().expect("disk lock poisoned").crash(tear);
                if loss.files > 0 {
                    observer.record(StoreEvent::DiskLost {
                        files: loss.files,
                        bytes: loss.bytes,
                        torn: loss.torn,
                    });
                }
                run_k3s_node(
                    config.clone(),
                    design.clone(),
                    disk.clone(),
                    observer,
                    faults.for_start(start),
                )
            })
            .build();
        if joiner.is_some() {
            // Created now so ids and names follow the roster; held down until it joins.
            cluster.register_absent(name, node.id(), Role::Server, role.control_plane(), false);
            cluster.set_k3s_role(name, *role);
            continue;
        }
        cluster.register_node(
            name,
            node.id(),
            Role::Server,
            role.control_plane(),
            *name == join,
            recorder,
        );
        cluster.set_k3s_role(name, *role);
        if role.etcd() {
            cluster.servers.push((name.clone(), book[name].etcd));
        }
    }
    let roles = nodes.iter().map(|(n, r, _)| (n.clone(), *r)).collect();
    cluster.membership = Some(Arc::new(Membership::new(plan, servers, roles)));
}

/// Every member's own view (a serializable Status), from a fresh auditor node.
pub(crate) async fn member_audit(
    servers: &[(String, SocketAddr)],
    timeout_ms: u64,
) -> Vec<MemberFinal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let servers = servers.to_vec();
    Handle::current()
        .create_node()
        .name("member-audit")
        .ip(ip(9, 2))
        .init(move || {
            let (servers, tx) = (servers.clone(), tx.clone());
            async move {
                let timeout = Duration::from_millis(timeout_ms);
                // Kubelets keep renewing leases, so the revision moves every few seconds: poll
                // until every member answers at one revision (bounded), and keep the last poll.
                let mut out = Vec::new();
                for _ in 0..20 {
                    out = audit_once(&servers, timeout).await;
                    let revisions: BTreeSet<i64> = out.iter().map(|m| m.revision).collect();
                    if out.iter().all(|m| m.reachable) && revisions.len() == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if let Some(tx) = tx.lock().expect("audit channel lock poisoned").take() {
                    let _ = tx.send(out);
                }
            }
        })
        .build();
    rx.await.unwrap_or_default()
}

/// One round of serializable Status calls, member by member.
async fn audit_once(servers: &[(String, SocketAddr)], timeout: Duration) -> Vec<MemberFinal> {
    let mut out = Vec::new();
    for (name, addr) in servers {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("server addresses are valid URIs")
            .timeout(timeout)
            .connect_timeout(timeout);
        let status = match endpoint.connect().await {
            Ok(ch) => MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner()),
            Err(_) => None,
        };
        out.push(match status {
            Some(s) => MemberFinal {
                node: name.clone(),
                member_id: s.header.as_ref().map(|h| h.member_id).unwrap_or(0),
                reachable: true,
                revision: s.header.as_ref().map(|h| h.revision).unwrap_or(0),
                applied_index: s.raft_applied_index,
                leader: s.leader,
            },
            None => MemberFinal {
                node: name.clone(),
                ..Default::default()
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::history::EventKind;
    use store::observe::StoreEvent;

    /// Members killed mid-run come back from their disks (WAL, backend, snapshot), catch up, and
    /// the cluster's history stays correct.
    #[test]
    fn killed_members_recover_from_disk_and_catch_up() {
        let mut scenario = crate::scenario::load("../scenarios/etcd-ha-partitions.toml")
            .expect("the shipped scenario loads");
        scenario.duration_s = 120;
        scenario.quiet_s = 40;
        scenario.faults.swarm = false;
        // Leases are judged by the lease check's own tests; this run judges the members.
        scenario.workload.lease_clients = 0;
        scenario.faults.kills_per_min = 4.0;
        scenario.faults.kill_roles = vec!["server".into()];
        scenario.faults.partitions_per_min = 0.0;
        // The three bootstrap members are judged here; servers joining is membership's test.
        scenario.faults.membership_changes_per_min = 0.0;
        scenario.etcd.snapshot_entries = 50;
        scenario.etcd.keep_entries = 10;
        let out = crate::world::run_seed(&scenario, 3, &Default::default());
        let h = &out.history;
        let kills = h
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::NodeKilled))
            .count();
        assert!(kills >= 3, "the schedule kills servers ({kills})");
        let recovered = h
            .store_events()
            .filter(|(_, _, e)| {
                matches!(e, StoreEvent::MemberStarted { applied_index, .. } if *applied_index > 0)
            })
            .count();
        assert!(recovered >= 1, "a restarted member starts from its disk");
        let finals = &h.params.members_final;
        assert_eq!(finals.len(), 3);
        assert!(
            finals.iter().all(|m| m.reachable),
            "every member answers: {finals:?}"
        );
        let top = finals.iter().map(|m| m.revision).max().unwrap();
        assert!(
            finals.iter().all(|m| m.revision == top),
            "every member caught up: {finals:?}"
        );
        for check in crate::checkers::all() {
            let report = check.check(h);
            assert!(report.passed(), "{}: {:?}", report.check, report.first());
        }
    }
}

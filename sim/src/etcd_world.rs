//! The embedded-etcd part of the world: server nodes that each run an etcd member on a disk of
//! their own, and the audit of every member's final state.
//!
//! A node's disk is the only state that outlives its restarts; a restart first applies the power
//! loss (unsynced writes dropped, the last one sometimes torn, drawn from the seed) and records it.

use crate::faults::compaction::CompactionFaults;
use crate::faults::schedule::Role;
use crate::history::MemberFinal;
use crate::recorder::Recorder;
use crate::scenario::Scenario;
use crate::world::{ip, Cluster, ETCD_PORT};
use madsim::runtime::Handle;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::design::Design;
use store::etcd::disk::Disk;
use store::etcd::member::MemberConfig;
use store::etcd::node::{run_etcd_server, EtcdServerConfig};
use store::observe::StoreEvent;
use store::proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};

/// Raft traffic between members.
const PEER_PORT: u16 = 2380;

pub(crate) fn build_etcd_servers(
    scenario: &Scenario,
    design: &Design,
    recorder: &Recorder,
    faults: Arc<CompactionFaults>,
    cluster: &mut Cluster,
) {
    let handle = Handle::current();
    let n = scenario.topology.servers;
    let peers: BTreeMap<u64, SocketAddr> = (1..=n)
        .map(|i| (i as u64, SocketAddr::new(ip(1, i), PEER_PORT)))
        .collect();
    for i in 1..=n {
        let name = format!("server-{i}");
        let listen = SocketAddr::new(ip(1, i), ETCD_PORT);
        let config = EtcdServerConfig {
            member: MemberConfig {
                name: name.clone(),
                id: i as u64,
                peers: peers.clone(),
                // A fixed cluster: every server starts as a voter of the same membership.
                initial_voters: peers.keys().copied().collect(),
                snapshot_entries: scenario.etcd.snapshot_entries,
                keep_entries: scenario.etcd.keep_entries,
                compaction: design.compaction,
            },
            listen,
            compact_interval: (scenario.etcd.compact_interval_s > 0)
                .then(|| Duration::from_secs(scenario.etcd.compact_interval_s)),
            compact_at_latest: scenario.etcd.compact_mode == "latest",
            request_timeout: Duration::from_millis(scenario.workload.request_timeout_ms),
        };
        let disk = Disk::shared();
        let (design, recorder_c, faults) = (design.clone(), recorder.clone(), faults.clone());
        let torn_p = scenario.etcd.torn_write_probability;
        let node_name = name.clone();
        let node = handle
            .create_node()
            .name(&name)
            .ip(ip(1, i))
            .init(move || {
                let observer = recorder_c.observer(&node_name);
                // The kill that preceded this start was a power loss for the disk.
                let mut rng = madsim::rand::thread_rng();
                let tear = rng.gen_bool(torn_p).then(|| rng.gen::<u64>());
                let loss = disk.lock().expect("disk lock poisoned").crash(tear);
                if loss.files > 0 {
                    observer.record(StoreEvent::DiskLost {
                        files: loss.files,
                        bytes: loss.bytes,
                        torn: loss.torn,
                    });
                }
                run_etcd_server(
                    config.clone(),
                    design.clone(),
                    disk.clone(),
                    observer,
                    faults.clone(),
                )
            })
            .build();
        cluster.register(&name, node.id(), Role::Server, recorder);
        cluster.servers.push((name, listen));
    }
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
                let mut out = Vec::new();
                for (name, addr) in &servers {
                    let endpoint =
                        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
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
                if let Some(tx) = tx.lock().expect("audit channel lock poisoned").take() {
                    let _ = tx.send(out);
                }
            }
        })
        .build();
    rx.await.unwrap_or_default()
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
        scenario.faults.kills_per_min = 4.0;
        scenario.faults.kill_roles = vec!["server".into()];
        scenario.faults.partitions_per_min = 0.0;
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

//! The simulated cluster of one run: nodes, their wiring, the fault schedule and the clock.
//!
//! `run_seed` builds a fresh madsim runtime from the seed, creates the database, kine servers and
//! clients as nodes, carries out the seeded faults until the fault period ends, lets the workload
//! run through the quiet period, takes a final audit read and returns the recorded history. The
//! database is the only state that outlives a node's restart: it is the node's disk.

pub mod cluster;
pub mod etcd;
pub mod membership;

use crate::clients::controller::{run_controller, ApiServerAddr, ControllerConfig};
use crate::clients::etcd_call::audit_read;
use crate::clients::leases::{run_lease_client, LeaseClientConfig};
use crate::clients::watcher::{run_watcher, WatcherConfig};
use crate::clients::workload::{run_client, ClientConfig};
use crate::faults::compaction::CompactionFaults;
use crate::faults::draw_mix;
use crate::faults::kill::Lifecycle;
use crate::faults::network::Links;
use crate::faults::replay::{self, Cause, Restarts};
use crate::faults::schedule::{self, Fault, Role};
use crate::history::recorder::Recorder;
use crate::history::{EventKind, History, HistoryParams};
use crate::scenario::{Scenario, TopologyKind};
use cluster::{ip, Cluster, API_PORT, DB_PORT, ETCD_PORT, WATCH_PORT};
use madsim::runtime::Handle;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::design::Design;
use store::kine::compactor::CompactorConfig;
use store::kine::database::Database;
use store::kine::driver::{Latency, SharedDatabase};
use store::node::{run_database_node, run_kine_server, DatabaseLocation, KineServerConfig};
use tokio::time::Instant;

pub use crate::report::RunOutput;

/// Runs `scenario` on `seed` with `design` in a fresh madsim runtime. A panic inside the
/// simulation (a store assertion, or the simulated-time limit) propagates to the caller, which
/// reports it as a failed seed.
pub fn run_seed(scenario: &Scenario, seed: u64, design: &Design) -> RunOutput {
    let mut config = madsim::Config::default();
    let [lo, hi] = scenario.network.latency_ms;
    config.net.send_latency = Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1));
    let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, config);
    // A run that has not finished long after its scenario's end is hung in simulated time.
    rt.set_time_limit(Duration::from_secs(
        scenario.duration_s + scenario.quiet_s + 600,
    ));
    let scenario = scenario.clone();
    let design = design.clone();
    rt.block_on(async move { orchestrate(scenario, seed, design).await })
}

async fn orchestrate(scenario: Scenario, seed: u64, design: Design) -> RunOutput {
    let recorder = Recorder::new();
    let start = Instant::now();
    let fault_period = Duration::from_secs(scenario.duration_s);
    let faults_stop = start + fault_period;
    let end = faults_stop + Duration::from_secs(scenario.quiet_s);
    let (crash_tx, mut crashes) = tokio::sync::mpsc::unbounded_channel();
    // A schedule replaces every draw; without one, the seed draws the faults.
    let (mix, compaction_faults, told, restarts) = match &scenario.schedule {
        Some(s) => {
            let told = replay::plan(s, fault_period);
            let restarts = Restarts::told(s, &told);
            let faults = CompactionFaults::scheduled(s, faults_stop);
            (replay::mix(s), faults, Some(told), restarts)
        }
        None => {
            let mix = draw_mix(&scenario.faults, seed);
            let faults = CompactionFaults::drawn(
                seed,
                mix.compact_failure_probability,
                &scenario.faults.compact_failure_kinds,
                scenario.etcd.compaction_crash_probability,
                faults_stop,
            );
            (mix, faults, None, Restarts::default())
        }
    };
    let compaction_faults = Arc::new(compaction_faults.with_crashes(crash_tx));
    let restarts = Arc::new(restarts);
    let cluster = build_cluster(
        &scenario,
        &design,
        &recorder,
        (compaction_faults.clone(), restarts.clone()),
        end,
        seed,
    );

    let links = Arc::new(Links::default());
    let lifecycle = Arc::new(Lifecycle::default());
    if let Some(m) = &cluster.membership {
        m.hold_joiners(&cluster, &lifecycle);
    }
    {
        // A member that died at a crash point is killed here and restarted shortly after.
        let (lifecycle, recorder, ids) = (lifecycle.clone(), recorder.clone(), cluster.ids.clone());
        let restarts = restarts.clone();
        tokio::spawn(async move {
            while let Some((node, crash)) = crashes.recv().await {
                let id = ids[&node];
                if lifecycle.kill(id) {
                    restarts.went_down(&node, Cause::Crash(crash));
                    recorder.event(&node, EventKind::NodeKilled);
                    let (lifecycle, recorder) = (lifecycle.clone(), recorder.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        if lifecycle.restart(id) {
                            recorder.event(&node, EventKind::NodeRestarted);
                        }
                    });
                }
            }
        });
    }
    let plan = told.unwrap_or_else(|| {
        schedule::draw(
            seed,
            &scenario.faults,
            mix.partitions_per_min,
            mix.kills_per_min,
            mix.pauses_per_min,
            &cluster.refs,
            fault_period,
        )
    });
    let cluster = Arc::new(cluster);
    if let Some(m) = cluster.membership.clone() {
        let (c, l, r) = (cluster.clone(), lifecycle.clone(), recorder.clone());
        tokio::spawn(m.carry_out(c, l, r, start, end));
    }
    for (k, scheduled) in plan.iter().cloned().enumerate() {
        let (links, lifecycle, cluster, recorder, restarts) = (
            links.clone(),
            lifecycle.clone(),
            cluster.clone(),
            recorder.clone(),
            restarts.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(start + scheduled.start).await;
            match scheduled.fault {
                Fault::Partition { from, to, one_way } => {
                    let (a, b) = (cluster.ids_of(&from), cluster.ids_of(&to));
                    links.cut(&a, &b, one_way);
                    recorder.event(
                        "world",
                        EventKind::PartitionStarted {
                            from: from.clone(),
                            to: to.clone(),
                            one_way,
                        },
                    );
                    tokio::time::sleep(scheduled.duration).await;
                    links.heal(&a, &b, one_way);
                    recorder.event("world", EventKind::PartitionHealed { from, to, one_way });
                }
                Fault::Kill { node } => {
                    let id = cluster.ids[&node];
                    if lifecycle.kill(id) {
                        restarts.went_down(&node, Cause::Kill(k));
                        recorder.event(&node, EventKind::NodeKilled);
                        tokio::time::sleep(scheduled.duration).await;
                        if lifecycle.restart(id) {
                            recorder.event(&node, EventKind::NodeRestarted);
                        }
                    }
                }
                Fault::KillGroup { nodes } => {
                    let killed: Vec<&String> = nodes
                        .iter()
                        .filter(|n| lifecycle.kill(cluster.ids[*n]))
                        .collect();
                    for n in &killed {
                        restarts.went_down(n, Cause::Kill(k));
                        recorder.event(n, EventKind::NodeKilled);
                    }
                    tokio::time::sleep(scheduled.duration).await;
                    for n in killed {
                        if lifecycle.restart(cluster.ids[n]) {
                            recorder.event(n, EventKind::NodeRestarted);
                        }
                    }
                }
                Fault::Pause { node } => {
                    // A node down (or held down by membership) is not paused; one killed while
                    // paused is no longer paused when this pause ends.
                    let id = cluster.ids[&node];
                    if lifecycle.pause(id) {
                        recorder.event(&node, EventKind::NodePaused);
                        tokio::time::sleep(scheduled.duration).await;
                        if lifecycle.resume(id) {
                            recorder.event(&node, EventKind::NodeResumed);
                        }
                    }
                }
            }
        });
    }

    // The fault period ends: whatever is still cut, paused or down is healed, so liveness can be
    // judged.
    tokio::time::sleep_until(faults_stop + Duration::from_millis(1)).await;
    links.heal_all();
    for id in lifecycle.paused() {
        if lifecycle.resume(id) {
            recorder.event(cluster.name_of(id), EventKind::NodeResumed);
        }
    }
    for id in lifecycle.down() {
        if lifecycle.restart(id) {
            recorder.event(cluster.name_of(id), EventKind::NodeRestarted);
        }
    }
    recorder.event("world", EventKind::FaultsStopped);
    let faults_stop_ns = recorder.now_ns();

    // Clients stop at `end`; give their last requests their full deadline, then audit.
    tokio::time::sleep_until(
        end + Duration::from_millis(scenario.workload.request_timeout_ms + 100),
    )
    .await;
    let final_read = final_audit(&cluster, &recorder, scenario.workload.request_timeout_ms).await;
    let members_final = match &cluster.membership {
        Some(m) => {
            let members = m.final_members();
            crate::world::etcd::member_audit(&members, scenario.workload.request_timeout_ms).await
        }
        None => vec![],
    };

    let params = HistoryParams {
        servers: cluster.servers.iter().map(|(n, _)| n.clone()).collect(),
        compact_interval_ms: scenario.kine.compact_interval_s * 1000,
        compact_interval_jitter_pct: scenario.kine.compact_interval_jitter_pct,
        compact_min_retain: design
            .compact_min_retain
            .unwrap_or(scenario.kine.compact_min_retain),
        compact_batch_revisions: scenario.kine.compact_batch_revisions,
        compact_timeout_ms: scenario.kine.compact_timeout_ms,
        faults_stop_ns,
        end_ns: recorder.now_ns(),
        final_read,
        members_final,
        topology: format!("{:?}", scenario.topology.kind).to_lowercase(),
        database_dialect: if scenario.topology.kind == TopologyKind::Etcd {
            String::new()
        } else {
            scenario.database.dialect.clone()
        },
        workload_prefixes: crate::clients::workload::owned_prefixes(&scenario.workload)
            .into_iter()
            .chain(crate::clients::controller::owned_prefixes(
                &scenario.controllers,
            ))
            .collect(),
        ..Default::default()
    };
    let params = if let Some(m) = &cluster.membership {
        let timeout = Duration::from_millis(scenario.workload.request_timeout_ms);
        HistoryParams {
            node_roles: m.final_roles(),
            rejoin_bound_ns: crate::world::etcd::rejoin_bound(timeout).as_nanos() as u64,
            lb_health_bound_ns: crate::world::etcd::lb_health_bound().as_nanos() as u64,
            node_lease_grace_ns: crate::world::etcd::LEASE_GRACE.as_nanos() as u64,
            ..params
        }
    } else {
        params
    };
    let sim_ns = recorder.now_ns();
    let (history, trace) = recorder.finish(params);
    let faults_injected = count_faults(&history);
    let (compaction_failures, member_crashes) = compaction_faults.fired();
    let schedule = replay::to_schedule(replay::Fired {
        seed,
        mix: &mix,
        plan: &plan,
        membership: cluster.membership.as_ref().map(|m| m.plan()),
        compaction_failures,
        member_crashes,
        restarts: &restarts,
    });
    RunOutput {
        history,
        trace,
        sim_ns,
        faults_injected,
        fault_mix: mix,
        schedule,
    }
}

fn build_cluster(
    scenario: &Scenario,
    design: &Design,
    recorder: &Recorder,
    (faults, restarts): (Arc<CompactionFaults>, Arc<Restarts>),
    stop_at: Instant,
    seed: u64,
) -> Cluster {
    let handle = Handle::current();
    let mut cluster = Cluster {
        ids: BTreeMap::new(),
        refs: Vec::new(),
        servers: Vec::new(),
        membership: None,
    };
    let latency = Latency {
        min_ms: scenario.database.latency_ms[0],
        max_ms: scenario.database.latency_ms[1],
    };
    let call_timeout = Duration::from_millis(scenario.kine.db_call_timeout_ms);
    let disk: SharedDatabase = Arc::new(Mutex::new(
        Database::open_with(recorder.observer("db"), scenario.database.store_dialect())
            .expect("an in-memory database opens")
            .with_insert(design.insert),
    ));
    let database = match scenario.topology.kind {
        TopologyKind::Etcd => {
            crate::world::etcd::build_etcd_servers(
                scenario,
                design,
                recorder,
                (faults.clone(), restarts),
                &mut cluster,
                seed,
            );
            None
        }
        TopologyKind::Single => None,
        TopologyKind::Ha => {
            let (disk, recorder_c) = (disk.clone(), recorder.clone());
            let node = handle
                .create_node()
                .name("db")
                .ip(ip(0, 1))
                .init(move || {
                    run_database_node(
                        disk.clone(),
                        SocketAddr::new(ip(0, 1), DB_PORT),
                        latency,
                        call_timeout,
                        recorder_c.observer("db"),
                    )
                })
                .build();
            cluster.register("db", node.id(), Role::Database, recorder);
            Some(SocketAddr::new(ip(0, 1), DB_PORT))
        }
    };
    let kine_servers = if scenario.topology.kind == TopologyKind::Etcd {
        0
    } else {
        scenario.topology.servers
    };
    for i in 1..=kine_servers {
        let name = format!("kine-{i}");
        let listen = SocketAddr::new(ip(1, i), ETCD_PORT);
        let location = match database {
            Some(addr) => DatabaseLocation::Remote { addr },
            None => DatabaseLocation::Local {
                db: disk.clone(),
                latency,
            },
        };
        let config = KineServerConfig {
            name: name.clone(),
            member_id: i as u64,
            listen,
            database: location,
            db_call_timeout: call_timeout,
            apiserver: Some((
                SocketAddr::new(ip(1, i), API_PORT),
                SocketAddr::new(ip(1, i), WATCH_PORT),
            )),
            compactor: CompactorConfig {
                interval: Duration::from_secs(scenario.kine.compact_interval_s),
                jitter_pct: scenario.kine.compact_interval_jitter_pct,
                min_retain: design
                    .compact_min_retain
                    .unwrap_or(scenario.kine.compact_min_retain),
                batch_revisions: scenario.kine.compact_batch_revisions,
                timeout: Duration::from_millis(scenario.kine.compact_timeout_ms),
                variant: design.compactor,
            },
        };
        let (design, recorder_c, faults, disk, local) = (
            design.clone(),
            recorder.clone(),
            faults.clone(),
            disk.clone(),
            database.is_none(),
        );
        let node_name = name.clone();
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let node = handle
            .create_node()
            .name(&name)
            .ip(ip(1, i))
            .init(move || {
                let start = starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let observer = recorder_c.observer(&node_name);
                if local {
                    // This node holds the database: its events are this node's.
                    let mut db = disk.lock().expect("database lock poisoned");
                    db.set_observer(observer.clone());
                    db.announce()
                        .expect("the database reopens its committed data");
                }
                run_kine_server(
                    config.clone(),
                    design.clone(),
                    observer,
                    faults.for_start(start),
                )
            })
            .build();
        cluster.register(&name, node.id(), Role::Server, recorder);
        cluster.servers.push((name.clone(), listen));
    }
    for i in 1..=scenario.topology.clients {
        let name = format!("client-{i}");
        let pinned = (i <= scenario.workload.pinned_clients)
            .then(|| (i as usize - 1) % cluster.servers.len());
        let config = ClientConfig {
            name: name.clone(),
            servers: cluster.servers.clone(),
            pinned,
            workload: scenario.workload.clone(),
            stop_at,
        };
        // A restarted client is a new session: its operations are a new sequence.
        let node = session_node(
            &handle,
            &name,
            ip(2, i),
            config,
            recorder,
            |c| &mut c.name,
            run_client,
        );
        cluster.register(&name, node.id(), Role::Client, recorder);
        if let Some(idx) = pinned {
            let server = cluster.servers[idx].0.clone();
            cluster.pin(&name, &server);
        }
    }
    for i in 1..=scenario.workload.watchers {
        let name = format!("watcher-{i}");
        let config = WatcherConfig {
            name: name.clone(),
            servers: cluster.servers.clone(),
            stop_at,
            timeout: Duration::from_millis(scenario.workload.request_timeout_ms),
            compacted_starts: scenario.workload.compacted_starts,
            future_starts: scenario.workload.future_starts,
        };
        let recorder_c = recorder.clone();
        let node = handle
            .create_node()
            .name(&name)
            .ip(ip(3, i))
            .init(move || run_watcher(config.clone(), recorder_c.clone()))
            .build();
        cluster.register(&name, node.id(), Role::Client, recorder);
    }
    let apiservers: Vec<ApiServerAddr> = if scenario.topology.kind == TopologyKind::Etcd {
        crate::world::etcd::apiservers(&scenario.topology)
    } else {
        (1..=kine_servers)
            .map(|i| ApiServerAddr {
                name: format!("kine-{i}"),
                api: SocketAddr::new(ip(1, i), API_PORT),
                watch: SocketAddr::new(ip(1, i), WATCH_PORT),
            })
            .collect()
    };
    for i in 1..=scenario.controllers.count {
        let name = format!("controller-{i}");
        let config = ControllerConfig {
            name: name.clone(),
            index: i,
            servers: apiservers.clone(),
            settings: scenario.controllers.clone(),
            stop_at,
        };
        let recorder_c = recorder.clone();
        let node = handle
            .create_node()
            .name(&name)
            .ip(ip(4, i))
            .init(move || run_controller(config.clone(), recorder_c.clone()))
            .build();
        cluster.register(&name, node.id(), Role::Client, recorder);
    }
    // Created after every other node, so a run without lease clients is the run it always was.
    for i in 1..=scenario.workload.lease_clients {
        let name = format!("lease-client-{i}");
        let config = LeaseClientConfig {
            name: name.clone(),
            servers: cluster.servers.clone(),
            ttls_s: scenario.workload.lease_ttls_s.clone(),
            keys: scenario.workload.lease_keys,
            timeout: Duration::from_millis(scenario.workload.request_timeout_ms),
            stop_at,
        };
        // A restarted lease client is a new session; its old leases are left to lapse.
        let node = session_node(
            &handle,
            &name,
            ip(8, i),
            config,
            recorder,
            |c| &mut c.name,
            run_lease_client,
        );
        cluster.register(&name, node.id(), Role::Client, recorder);
    }
    cluster
}

/// A full List at the latest revision from a fresh auditor node, retried until some server
/// answers (bounded at a minute of simulated time). Returns the recorded operation's id.
async fn final_audit(cluster: &Cluster, recorder: &Recorder, timeout_ms: u64) -> Option<u64> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let servers = cluster.servers.clone();
    let recorder = recorder.clone();
    Handle::current()
        .create_node()
        .name("audit")
        .ip(ip(9, 1))
        .init(move || {
            let (servers, recorder, tx) = (servers.clone(), recorder.clone(), tx.clone());
            async move {
                let last = audit_read(&servers, &recorder, Duration::from_millis(timeout_ms)).await;
                if let Some(tx) = tx.lock().expect("audit channel lock poisoned").take() {
                    let _ = tx.send(last);
                }
            }
        })
        .build();
    rx.await.ok().flatten()
}

fn count_faults(history: &History) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in &history.events {
        let kind = match &e.kind {
            EventKind::PartitionStarted { one_way: false, .. } => "partition".to_string(),
            EventKind::PartitionStarted { one_way: true, .. } => "partition-one-way".to_string(),
            EventKind::NodeKilled => "kill".to_string(),
            EventKind::NodePaused => "pause".to_string(),
            EventKind::ServerJoined { replacing, .. } => match replacing {
                Some(_) => "server-replace".to_string(),
                None => "server-join".to_string(),
            },
            EventKind::ServerLeft { replaced_by: None } => "server-leave".to_string(),
            EventKind::Store {
                event: store::observe::StoreEvent::FaultInjected { fault, .. },
            } => fault.clone(),
            _ => continue,
        };
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

/// A client node whose every restart is a new session, named `<name>#<n>` from its second start.
fn session_node<C, F, Fut>(
    handle: &Handle,
    name: &str,
    addr: std::net::IpAddr,
    config: C,
    recorder: &Recorder,
    name_of: fn(&mut C) -> &mut String,
    run: F,
) -> madsim::runtime::NodeHandle
where
    C: Clone + Send + Sync + 'static,
    F: Fn(C, Recorder) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let recorder = recorder.clone();
    let incarnation = Arc::new(std::sync::atomic::AtomicU32::new(0));
    handle
        .create_node()
        .name(name)
        .ip(addr)
        .init(move || {
            let n = incarnation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut config = config.clone();
            if n > 0 {
                let name = name_of(&mut config);
                *name = format!("{name}#{}", n + 1);
            }
            run(config, recorder.clone())
        })
        .build()
}

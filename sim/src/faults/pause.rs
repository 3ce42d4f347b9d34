//! Process pauses: a node freezes (SIGSTOP, a long GC pause, a stalled VM) while the rest of the
//! cluster goes on, then resumes believing what it believed.
//!
//! What madsim 0.2's `Handle::pause`/`resume` does, and so what a pause here means:
//! - pausing sets a flag on the node; from then on every task of the node that becomes ready is
//!   parked instead of polled, so nothing of the node runs: no request is served, no raft tick,
//!   no lease renewal, no compaction tick;
//! - the clock is global and keeps going; a timer of the paused node still expires on time,
//!   but the task it wakes stays parked, so the node sees it fire only once resumed, late, and
//!   every `Instant::now()` it reads after resuming has jumped by the pause;
//! - messages sent to the paused node are delivered to its sockets on time (datagrams into the
//!   mailbox, stream messages into the connection's queue, new connections into the listener's
//!   accept queue, since madsim completes a connect without the listener's task) and wait there,
//!   unbounded, like a stopped process's socket buffers; they are read, in order, after the
//!   resume. A sender sees no error: only its own deadline tells it the peer is silent;
//! - resuming clears the flag and queues every parked task again: the node goes on with its
//!   memory, its connections and its disk as they were (no restart, nothing lost).
//!
//! A pause never targets a node that is down or held down by membership (`kill::Lifecycle`
//! refuses), and a kill of a paused node resumes it and kills it in the same instant: none of
//! its parked work runs, as a SIGKILL of a stopped process. Pauses still running when the fault
//! period ends are resumed before the quiet period and the final audit.

use super::schedule::{draw_secs_f64, pick, poisson_arrivals, Fault, NodeRef, Role, Scheduled};
use crate::scenario::Faults;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::Duration;
use store::k3s::role::NodeRole;

/// The roles `faults.pause_roles` may name.
pub const ROLES: &[&str] = &[
    "server",
    "database",
    "client",
    "join-target",
    "control-plane",
    "etcd-member",
    "etcd-only",
    "agent",
];

/// The roles that exist only in an etcd topology.
pub const ETCD_ROLES: &[&str] = &[
    "join-target",
    "control-plane",
    "etcd-member",
    "etcd-only",
    "agent",
];

/// Whether `node` is one `role` names.
fn has_role(node: &NodeRef, role: &str) -> bool {
    match role {
        "server" => node.role == Role::Server,
        "database" => node.role == Role::Database,
        "client" => node.role == Role::Client,
        "join-target" => node.join_target,
        "control-plane" => node.control_plane,
        "etcd-member" => node.k3s_role.is_some_and(|r| r.etcd()),
        "etcd-only" => node.k3s_role == Some(NodeRole::EtcdOnly),
        "agent" => node.k3s_role == Some(NodeRole::Agent),
        other => unreachable!("scenario validation admits no pause role `{other}`"),
    }
}

/// Pauses at `per_min` over the fault period, each of a role drawn from `faults.pause_roles`,
/// a node of that role, and a log-uniform length in `faults.pause_duration_s`, cut at the end
/// of the period. A role no node has draws nothing.
pub fn draw(
    rng: &mut StdRng,
    faults: &Faults,
    per_min: f64,
    nodes: &[NodeRef],
    period: Duration,
) -> Vec<Scheduled> {
    let mut out = Vec::new();
    for start in poisson_arrivals(rng, per_min, period) {
        if faults.pause_roles.is_empty() {
            break;
        }
        let kind = faults.pause_roles[rng.gen_range(0..faults.pause_roles.len())].clone();
        let length = draw_secs_f64(rng, faults.pause_duration_s);
        let of_role: Vec<&NodeRef> = nodes.iter().filter(|n| has_role(n, &kind)).collect();
        if let Some(victim) = pick(rng, &of_role) {
            out.push(Scheduled {
                start,
                duration: length.min(period - start),
                kind,
                kill: None,
                fault: Fault::Pause { node: victim.name },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn nodes() -> Vec<NodeRef> {
        let mk = |name: &str, role, k3s: Option<NodeRole>| NodeRef {
            name: name.into(),
            role,
            control_plane: k3s.is_some_and(|r| r.control_plane()),
            join_target: name == "server-1",
            pinned_to: None,
            k3s_role: k3s,
        };
        vec![
            mk("server-1", Role::Server, Some(NodeRole::Server)),
            mk("server-2", Role::Server, Some(NodeRole::Server)),
            mk("etcd-1", Role::Server, Some(NodeRole::EtcdOnly)),
            mk("cp-1", Role::Server, Some(NodeRole::ControlPlaneOnly)),
            mk("agent-1", Role::Server, Some(NodeRole::Agent)),
            mk("client-1", Role::Client, None),
        ]
    }

    fn drawn(roles: &[&str], range: [f64; 2]) -> Vec<Scheduled> {
        let faults = Faults {
            pauses_per_min: 6.0,
            pause_duration_s: range,
            pause_roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Faults::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        draw(&mut rng, &faults, 6.0, &nodes(), Duration::from_secs(600))
    }

    fn victims(plan: &[Scheduled]) -> std::collections::BTreeSet<String> {
        plan.iter()
            .map(|s| match &s.fault {
                Fault::Pause { node } => node.clone(),
                other => panic!("{other:?} is not a pause"),
            })
            .collect()
    }

    #[test]
    fn each_role_pauses_only_its_nodes() {
        for (role, expect) in [
            ("etcd-only", vec!["etcd-1"]),
            ("agent", vec!["agent-1"]),
            ("join-target", vec!["server-1"]),
            ("etcd-member", vec!["etcd-1", "server-1", "server-2"]),
            ("control-plane", vec!["cp-1", "server-1", "server-2"]),
            ("client", vec!["client-1"]),
        ] {
            let got = victims(&drawn(&[role], [0.2, 30.0]));
            let want: std::collections::BTreeSet<String> =
                expect.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "role {role}");
        }
        assert!(
            drawn(&["database"], [0.2, 30.0]).is_empty(),
            "no database node"
        );
    }

    #[test]
    fn lengths_cover_every_decade_of_the_range_and_stay_inside_it() {
        let plan = drawn(&["server"], [0.1, 100.0]);
        assert!(
            plan.len() > 40,
            "about 60 pauses in ten minutes: {}",
            plan.len()
        );
        let secs: Vec<f64> = plan.iter().map(|s| s.duration.as_secs_f64()).collect();
        for decade in [0.1, 1.0, 10.0] {
            assert!(
                secs.iter().any(|s| (decade..decade * 10.0).contains(s)),
                "no pause in [{decade}, {}) s: {secs:?}",
                decade * 10.0
            );
        }
        for s in &plan {
            assert!(
                s.duration >= Duration::from_millis(100)
                    || s.start + s.duration >= Duration::from_secs(600)
            );
            assert!(s.duration <= Duration::from_secs(100));
        }
    }

    /// One node that counts timer ticks in its own memory and logs the datagrams it reads, and
    /// a sender; the node is paused, resumed, then paused again and killed.
    #[test]
    fn a_paused_node_fires_no_timer_keeps_its_state_and_reads_what_waited_after_resuming() {
        use crate::faults::kill::Lifecycle;
        use madsim::net::Endpoint;
        use madsim::runtime::Handle;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        use tokio::time::{sleep, Instant};

        let rt = madsim::runtime::Runtime::with_seed_and_config(7, madsim::Config::default());
        rt.block_on(async {
            let t0 = Instant::now();
            let ticks = Arc::new(AtomicU64::new(0));
            let starts = Arc::new(AtomicU64::new(0));
            let got: Arc<Mutex<Vec<(u8, Duration)>>> = Arc::default();
            let (ticks_c, starts_c, got_c) = (ticks.clone(), starts.clone(), got.clone());
            let node = Handle::current()
                .create_node()
                .name("frozen")
                .ip("10.0.0.1".parse().unwrap())
                .init(move || {
                    let (ticks, got) = (ticks_c.clone(), got_c.clone());
                    starts_c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let ep = Endpoint::bind("10.0.0.1:1").await.unwrap();
                        tokio::spawn(async move {
                            // Held only in this task's memory: a restart would start it at 0.
                            let mut mine = 0u64;
                            loop {
                                sleep(Duration::from_millis(100)).await;
                                mine += 1;
                                ticks.store(mine, Ordering::SeqCst);
                            }
                        });
                        loop {
                            let mut buf = [0u8; 1];
                            ep.recv_from(1, &mut buf).await.unwrap();
                            got.lock().unwrap().push((buf[0], t0.elapsed()));
                        }
                    }
                })
                .build();
            let sender = Handle::current()
                .create_node()
                .name("sender")
                .ip("10.0.0.2".parse().unwrap())
                .build();
            let send = |b: u8| {
                sender.spawn(async move {
                    let ep = Endpoint::bind("10.0.0.2:0").await.unwrap();
                    ep.send_to("10.0.0.1:1", 1, &[b]).await.unwrap();
                })
            };
            let life = Lifecycle::default();

            sleep(Duration::from_millis(1050)).await;
            let before = ticks.load(Ordering::SeqCst);
            assert!(before >= 9, "the node ticks while up ({before})");
            assert!(life.pause(node.id()));
            assert!(!life.pause(node.id()), "a paused node is not paused again");
            send(1).await.unwrap();
            sleep(Duration::from_secs(5)).await;
            assert_eq!(
                ticks.load(Ordering::SeqCst),
                before,
                "no timer fired while paused"
            );
            assert!(
                got.lock().unwrap().is_empty(),
                "nothing is read while paused"
            );

            assert!(life.resume(node.id()));
            assert!(!life.resume(node.id()), "resumed once");
            sleep(Duration::from_millis(350)).await;
            let after = ticks.load(Ordering::SeqCst);
            assert!(
                after > before && after <= before + 5,
                "it goes on from its own count ({before} -> {after}), not from a restart"
            );
            assert_eq!(starts.load(Ordering::SeqCst), 1, "no restart");
            let read = got.lock().unwrap().clone();
            assert_eq!(
                read.len(),
                1,
                "the datagram waited for the resume: {read:?}"
            );
            assert!(
                read[0].1 >= Duration::from_millis(6050),
                "read after resuming: {read:?}"
            );

            // A kill of a paused node ends the pause; its next start runs, unpaused.
            assert!(life.pause(node.id()));
            assert!(life.kill(node.id()));
            assert!(!life.pause(node.id()), "a node that is down is not paused");
            assert!(!life.resume(node.id()), "the kill ended the pause");
            assert!(life.restart(node.id()));
            sleep(Duration::from_millis(550)).await;
            assert_eq!(starts.load(Ordering::SeqCst), 2);
            let fresh = ticks.load(Ordering::SeqCst);
            assert!(
                (1..=6).contains(&fresh),
                "the new start counts from 0 and runs: {fresh}"
            );
        });
    }

    /// Whole runs: every pause ends (resumed, or ended by a kill) before the quiet period, and
    /// no node is paused while it is down.
    #[test]
    fn in_a_run_every_pause_ends_before_the_quiet_period_and_hits_only_nodes_that_are_up() {
        use crate::history::EventKind;
        let scenario = crate::scenario::load("tests/fixtures/tiny-pauses.toml").unwrap();
        let mut ended_by_kill = 0;
        for seed in 1..=3 {
            let out = crate::world::run_seed(&scenario, seed, &Default::default());
            let (mut paused, mut down) = (
                std::collections::BTreeSet::new(),
                std::collections::BTreeSet::new(),
            );
            let mut count = 0;
            for e in &out.history.events {
                let n = e.node.as_str();
                match e.kind {
                    EventKind::NodePaused => {
                        assert!(!down.contains(n), "seed {seed}: {n} paused while down");
                        assert!(paused.insert(n), "seed {seed}: {n} paused twice");
                        count += 1;
                    }
                    EventKind::NodeResumed => assert!(paused.remove(n), "{n} resumed unpaused"),
                    EventKind::NodeKilled => {
                        ended_by_kill += usize::from(paused.remove(n));
                        down.insert(n);
                    }
                    EventKind::NodeRestarted => {
                        down.remove(n);
                    }
                    EventKind::FaultsStopped => {
                        assert!(paused.is_empty(), "seed {seed}: still paused: {paused:?}")
                    }
                    _ => {}
                }
            }
            assert!(
                count >= 5,
                "seed {seed}: about 12 pauses expected, got {count}"
            );
            assert_eq!(out.faults_injected.get("pause"), Some(&count));
            assert!(out.schedule.pauses.len() >= count as usize);
        }
        eprintln!("pauses ended by a kill: {ended_by_kill}");
    }
}

//! The seeded schedule of partitions and kills for one run, drawn before the run starts.
//!
//! Arrivals are Poisson at the mix's rates over the fault period; each fault's targets, duration
//! and direction are drawn from the same generator. Faults that would outlast the fault period are
//! cut at its end. Drawing is pure: the same seed and scenario give the same schedule.

use crate::scenario::Faults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// The roles a node can have, as the schedule targets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Database,
    Client,
}

#[derive(Clone, Debug)]
pub struct NodeRef {
    pub name: String,
    pub role: Role,
    /// The node runs an apiserver (etcd topology's servers and control-plane-only nodes).
    pub control_plane: bool,
    /// Every other node of the etcd topology joins through this one.
    pub join_target: bool,
    /// A pinned client: the one server it uses.
    pub pinned_to: Option<String>,
    /// etcd topology: the node's k3s role (server, etcd-only, control-plane-only, agent).
    pub k3s_role: Option<store::k3s::role::NodeRole>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Partition {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    Kill {
        node: String,
    },
    /// Every node in `nodes` goes down at once and comes back together.
    KillGroup {
        nodes: Vec<String>,
    },
    /// `node`'s tasks and timers stop for the duration; it then resumes as it was.
    Pause {
        node: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    pub start: Duration,
    /// Partition length, kill downtime or pause length, already cut at the end of the fault
    /// period.
    pub duration: Duration,
    /// The partition kind, kill role or pause role it was drawn as.
    pub kind: String,
    /// Replayed from a schedule: the kill's index in the schedule's kills.
    pub kill: Option<usize>,
    pub fault: Fault,
}

pub(super) fn poisson_arrivals(rng: &mut StdRng, per_min: f64, period: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    if per_min <= 0.0 {
        return out;
    }
    let rate_per_s = per_min / 60.0;
    let mut t = 0.0;
    loop {
        // Exponential gap by inversion; 1 - u keeps the log finite.
        let u: f64 = rng.gen();
        t += -(1.0 - u).ln() / rate_per_s;
        if t >= period.as_secs_f64() {
            return out;
        }
        out.push(Duration::from_secs_f64(t));
    }
}

pub(super) fn draw_secs(rng: &mut StdRng, range: [u64; 2]) -> Duration {
    Duration::from_millis(rng.gen_range(range[0] * 1000..=range[1] * 1000))
}

/// Seconds drawn log-uniformly from `range` (its minimum above 0), to the millisecond: every
/// decade of the range is as likely as any other.
pub(super) fn draw_secs_f64(rng: &mut StdRng, range: [f64; 2]) -> Duration {
    let [lo, hi] = range;
    let secs = if hi > lo {
        (rng.gen_range(lo.ln()..hi.ln())).exp()
    } else {
        lo
    };
    Duration::from_millis((secs * 1000.0).round() as u64)
}

pub(super) fn pick(rng: &mut StdRng, nodes: &[&NodeRef]) -> Option<NodeRef> {
    if nodes.is_empty() {
        None
    } else {
        Some(nodes[rng.gen_range(0..nodes.len())].clone())
    }
}

/// Draws the schedule. `nodes` lists every node; kinds that do not apply to the topology (a
/// server-database partition without a database node) are skipped when drawn.
pub fn draw(
    seed: u64,
    faults: &Faults,
    partitions_per_min: f64,
    kills_per_min: f64,
    pauses_per_min: f64,
    nodes: &[NodeRef],
    period: Duration,
) -> Vec<Scheduled> {
    let mut rng = StdRng::seed_from_u64(seed ^ super::SCHEDULE_SALT);
    let of = |role: Role| nodes.iter().filter(|n| n.role == role).collect::<Vec<_>>();
    let (servers, dbs, clients) = (of(Role::Server), of(Role::Database), of(Role::Client));
    let mut out = Vec::new();
    for start in poisson_arrivals(&mut rng, partitions_per_min, period) {
        if faults.partition_kinds.is_empty() {
            break;
        }
        let kind = faults.partition_kinds[rng.gen_range(0..faults.partition_kinds.len())].clone();
        let duration = draw_secs(&mut rng, faults.partition_duration_s);
        let one_way = rng.gen_bool(faults.one_way_probability.clamp(0.0, 1.0));
        let pair = match kind.as_str() {
            "server-database" => pick(&mut rng, &servers).zip(pick(&mut rng, &dbs)),
            "client-server" => pick(&mut rng, &clients).zip(pick(&mut rng, &servers)),
            "server-server" => {
                let a = pick(&mut rng, &servers);
                let others: Vec<&NodeRef> = servers
                    .iter()
                    .copied()
                    .filter(|s| Some(s.name.as_str()) != a.as_ref().map(|a| a.name.as_str()))
                    .collect();
                a.zip(pick(&mut rng, &others))
            }
            "isolate-control-plane" => {
                let (cp, rest): (Vec<&NodeRef>, Vec<&NodeRef>) =
                    nodes.iter().partition(|n| n.control_plane);
                if !cp.is_empty() && !rest.is_empty() {
                    out.push(Scheduled {
                        start,
                        duration: duration.min(period - start),
                        kind: kind.clone(),
                        kill: None,
                        fault: Fault::Partition {
                            from: cp.iter().map(|n| n.name.clone()).collect(),
                            to: rest.iter().map(|n| n.name.clone()).collect(),
                            one_way,
                        },
                    });
                }
                continue;
            }
            "minority" => {
                // One server, preferably one with clients pinned to it, cut off together with
                // those clients from every other server (and the database): a minority that
                // can no longer reach a quorum, while its clients still reach it.
                let pinned: Vec<&NodeRef> = servers
                    .iter()
                    .copied()
                    .filter(|s| nodes.iter().any(|n| n.pinned_to.as_ref() == Some(&s.name)))
                    .collect();
                let victim = pick(&mut rng, if pinned.is_empty() { &servers } else { &pinned });
                if let Some(victim) = victim {
                    let mut side = vec![victim.name.clone()];
                    side.extend(
                        nodes
                            .iter()
                            .filter(|n| n.pinned_to.as_ref() == Some(&victim.name))
                            .map(|n| n.name.clone()),
                    );
                    let rest: Vec<String> = nodes
                        .iter()
                        .filter(|n| matches!(n.role, Role::Server | Role::Database))
                        .filter(|n| n.name != victim.name)
                        .map(|n| n.name.clone())
                        .collect();
                    if !rest.is_empty() {
                        out.push(Scheduled {
                            start,
                            duration: duration.min(period - start),
                            kind: kind.clone(),
                            kill: None,
                            fault: Fault::Partition {
                                from: side,
                                to: rest,
                                one_way,
                            },
                        });
                    }
                }
                continue;
            }
            "isolate-node" => {
                let all: Vec<&NodeRef> = nodes.iter().collect();
                if let Some(victim) = pick(&mut rng, &all) {
                    let rest = nodes
                        .iter()
                        .filter(|n| n.name != victim.name)
                        .map(|n| n.name.clone())
                        .collect();
                    out.push(Scheduled {
                        start,
                        duration: duration.min(period - start),
                        kind: kind.clone(),
                        kill: None,
                        fault: Fault::Partition {
                            from: vec![victim.name.clone()],
                            to: rest,
                            one_way,
                        },
                    });
                }
                continue;
            }
            other => unreachable!("scenario validation admits no partition kind `{other}`"),
        };
        if let Some((a, b)) = pair {
            out.push(Scheduled {
                start,
                duration: duration.min(period - start),
                kind,
                kill: None,
                fault: Fault::Partition {
                    from: vec![a.name.clone()],
                    to: vec![b.name.clone()],
                    one_way,
                },
            });
        }
    }
    for start in poisson_arrivals(&mut rng, kills_per_min, period) {
        if faults.kill_roles.is_empty() {
            break;
        }
        let kind = faults.kill_roles[rng.gen_range(0..faults.kill_roles.len())].clone();
        let role = match kind.as_str() {
            "all-control-plane" => {
                let downtime = draw_secs(&mut rng, faults.kill_downtime_s);
                let cp: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.control_plane)
                    .map(|n| n.name.clone())
                    .collect();
                if !cp.is_empty() {
                    out.push(Scheduled {
                        start,
                        duration: downtime.min(period - start),
                        kind,
                        kill: None,
                        fault: Fault::KillGroup { nodes: cp },
                    });
                }
                continue;
            }
            "join-target" => &nodes.iter().filter(|n| n.join_target).collect::<Vec<_>>(),
            "server" => &servers,
            "database" => &dbs,
            "client" => &clients,
            other => unreachable!("scenario validation admits no kill role `{other}`"),
        };
        let downtime = draw_secs(&mut rng, faults.kill_downtime_s);
        if let Some(victim) = pick(&mut rng, role) {
            out.push(Scheduled {
                start,
                duration: downtime.min(period - start),
                kind,
                kill: None,
                fault: Fault::Kill {
                    node: victim.name.clone(),
                },
            });
        }
    }
    // Pauses are drawn last, so a scenario without them draws the partitions and kills it
    // always drew.
    out.extend(super::pause::draw(
        &mut rng,
        faults,
        pauses_per_min,
        nodes,
        period,
    ));
    out.sort_by_key(|s| s.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeRef> {
        let mk = |name: &str, role| NodeRef {
            name: name.into(),
            role,
            control_plane: false,
            join_target: false,
            pinned_to: None,
            k3s_role: None,
        };
        vec![
            mk("db", Role::Database),
            mk("kine-1", Role::Server),
            mk("kine-2", Role::Server),
            mk("client-1", Role::Client),
        ]
    }

    fn faults() -> Faults {
        Faults {
            partitions_per_min: 2.0,
            partition_kinds: vec!["server-database".into(), "isolate-node".into()],
            kills_per_min: 1.0,
            kill_roles: vec!["server".into(), "database".into()],
            ..Faults::default()
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let period = Duration::from_secs(600);
        let a = draw(7, &faults(), 2.0, 1.0, 0.0, &nodes(), period);
        let b = draw(7, &faults(), 2.0, 1.0, 0.0, &nodes(), period);
        let c = draw(8, &faults(), 2.0, 1.0, 0.0, &nodes(), period);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(
            a.len() > 5,
            "about 30 faults expected over ten minutes, got {}",
            a.len()
        );
    }

    #[test]
    fn a_minority_partition_cuts_a_server_and_its_pinned_clients_from_every_other_server() {
        let mut nodes = nodes();
        nodes[3].pinned_to = Some("kine-2".into());
        let faults = Faults {
            partitions_per_min: 2.0,
            partition_kinds: vec!["minority".into()],
            ..Faults::default()
        };
        let plan = draw(3, &faults, 2.0, 0.0, 0.0, &nodes, Duration::from_secs(300));
        assert!(!plan.is_empty());
        for s in plan {
            let Fault::Partition { from, to, .. } = s.fault else {
                panic!("{s:?} is not a partition");
            };
            assert_eq!(
                from,
                ["kine-2", "client-1"],
                "the server with a pinned client"
            );
            assert_eq!(to, ["db", "kine-1"], "every other server and the database");
        }
    }

    #[test]
    fn faults_end_within_the_fault_period() {
        let period = Duration::from_secs(120);
        for seed in 0..20 {
            for s in draw(seed, &faults(), 2.0, 1.0, 0.0, &nodes(), period) {
                assert!(s.start + s.duration <= period, "{s:?} outlives the period");
            }
        }
    }
}

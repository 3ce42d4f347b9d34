//! A run's faults as a `Schedule` and back: what the seed drew (partitions, kills, membership
//! changes, the swarm mix) joined with what fired during the run (compaction failures, member
//! crashes, torn writes at restarts), and a schedule turned into what the world carries out.
//!
//! Torn writes are drawn when a node starts, from madsim's generator; a replay draws them too,
//! so the generator moves exactly as in the seed's own run, then uses the schedule's value.

use super::membership::{Change, Joiner, Plan};
use super::schedule::{Fault, Scheduled};
use super::FaultMix;
use crate::scenario::schedule::{
    CompactionFailure, Kill, MemberCrash, MembershipChange, Mix, Partition, Pause, Schedule,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use store::k3s::role::NodeRole;

/// What took a node down, so its next start knows whose torn write to apply or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The `k`-th fault of the partition-and-kill plan.
    Kill(usize),
    /// The `i`-th member crash.
    Crash(usize),
}

/// Torn writes at restarts: what each restart after a kill or crash drew (or was told).
#[derive(Default)]
pub struct Restarts {
    pending: Mutex<BTreeMap<String, Cause>>,
    /// Replay: the torn write of each (cause, node); a restart not named here is not torn.
    told: Option<BTreeMap<(Cause, String), Option<u64>>>,
    drawn: Mutex<BTreeMap<(Cause, String), Option<u64>>>,
}

impl Restarts {
    /// Restarts that apply the schedule's torn writes instead of the drawn ones.
    pub fn told(schedule: &Schedule, plan: &[Scheduled]) -> Self {
        let mut told = BTreeMap::new();
        let kills = plan
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.kill.map(|i| (k, i)));
        for (k, i) in kills {
            for (node, tear) in &schedule.kills[i].torn_writes {
                told.insert((Cause::Kill(k), node.clone()), parse_tear(tear));
            }
        }
        for (i, c) in schedule.member_crashes.iter().enumerate() {
            let tear = c.torn_write.as_deref().and_then(parse_tear);
            told.insert((Cause::Crash(i), c.member.clone()), tear);
        }
        Restarts {
            told: Some(told),
            ..Default::default()
        }
    }

    /// `node` went down because of `cause`; its next start belongs to it.
    pub fn went_down(&self, node: &str, cause: Cause) {
        self.pending
            .lock()
            .expect("restart lock poisoned")
            .insert(node.to_string(), cause);
    }

    /// The torn write `node`'s disk gets at this start, given the one drawn for it.
    pub fn tear(&self, node: &str, drawn: Option<u64>) -> Option<u64> {
        let Some(cause) = self
            .pending
            .lock()
            .expect("restart lock poisoned")
            .remove(node)
        else {
            return drawn;
        };
        let key = (cause, node.to_string());
        let tear = match &self.told {
            Some(told) => told.get(&key).copied().flatten(),
            None => drawn,
        };
        self.drawn
            .lock()
            .expect("restart lock poisoned")
            .insert(key, tear);
        tear
    }

    fn outcome(&self, cause: Cause, node: &str) -> Option<String> {
        let drawn = self.drawn.lock().expect("restart lock poisoned");
        drawn
            .get(&(cause, node.to_string()))
            .copied()
            .flatten()
            .map(|t| format!("{t:x}"))
    }
}

fn parse_tear(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex, 16).ok()
}

fn secs(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e9
}

/// Seconds as written back to a `Duration`, to the nanosecond a run drew.
fn duration(s: f64) -> Duration {
    Duration::from_nanos((s * 1e9).round() as u64)
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::EtcdOnly => "etcd-only",
        _ => "server",
    }
}

/// Everything one run injected, as a schedule.
pub struct Fired<'a> {
    pub seed: u64,
    pub mix: &'a FaultMix,
    pub plan: &'a [Scheduled],
    pub membership: Option<&'a Plan>,
    pub compaction_failures: Vec<CompactionFailure>,
    pub member_crashes: Vec<MemberCrash>,
    pub restarts: &'a Restarts,
}

pub fn to_schedule(f: Fired<'_>) -> Schedule {
    let mut out = Schedule {
        seed: Some(f.seed),
        mix: Some(Mix {
            partitions_per_min: f.mix.partitions_per_min,
            kills_per_min: f.mix.kills_per_min,
            compact_failure_probability: f.mix.compact_failure_probability,
            pauses_per_min: f.mix.pauses_per_min,
        }),
        compaction_failures: f.compaction_failures,
        ..Default::default()
    };
    for (k, s) in f.plan.iter().enumerate() {
        match &s.fault {
            Fault::Partition { from, to, one_way } => out.partitions.push(Partition {
                kind: s.kind.clone(),
                from: from.clone(),
                to: to.clone(),
                one_way: *one_way,
                start_s: secs(s.start),
                duration_s: secs(s.duration),
            }),
            Fault::Kill { node } => out.kills.push(kill(s, k, vec![node.clone()], f.restarts)),
            Fault::KillGroup { nodes } => out.kills.push(kill(s, k, nodes.clone(), f.restarts)),
            Fault::Pause { node } => out.pauses.push(Pause {
                role: s.kind.clone(),
                node: node.clone(),
                at_s: secs(s.start),
                duration_s: secs(s.duration),
            }),
        }
    }
    out.member_crashes = f
        .member_crashes
        .into_iter()
        .enumerate()
        .map(|(i, c)| MemberCrash {
            torn_write: f.restarts.outcome(Cause::Crash(i), &c.member),
            ..c
        })
        .collect();
    if let Some(plan) = f.membership {
        out.membership = plan
            .changes
            .iter()
            .map(|c| {
                let (leave, join) = match &c.change {
                    Change::Join { node } => (None, Some(node)),
                    Change::Leave { node } => (Some(node), None),
                    Change::Replace { leave, join } => (Some(leave), Some(join)),
                };
                let joiner = join.map(|j| plan.joiner(j));
                MembershipChange {
                    at_s: secs(c.at),
                    change: match (leave, join) {
                        (Some(_), Some(_)) => "replace",
                        (None, _) => "join",
                        (_, None) => "leave",
                    }
                    .into(),
                    leave: leave.cloned(),
                    join: join.cloned(),
                    role: joiner.map(|j| role_name(j.role).into()),
                    via: joiner.map(|j| j.via.clone()),
                }
            })
            .collect();
    }
    out
}

fn kill(s: &Scheduled, k: usize, nodes: Vec<String>, restarts: &Restarts) -> Kill {
    let torn_writes = nodes
        .iter()
        .filter_map(|n| restarts.outcome(Cause::Kill(k), n).map(|t| (n.clone(), t)))
        .collect();
    Kill {
        role: s.kind.clone(),
        nodes,
        at_s: secs(s.start),
        downtime_s: secs(s.duration),
        torn_writes,
    }
}

/// The schedule's partitions, kills and pauses in the order the world starts them (by start
/// time; partitions, then kills, then pauses at equal times, as drawn), kept within the fault
/// `period` and cut at its end.
pub fn plan(schedule: &Schedule, period: Duration) -> Vec<Scheduled> {
    let mut out: Vec<Scheduled> = Vec::new();
    for p in &schedule.partitions {
        out.push(Scheduled {
            start: duration(p.start_s),
            duration: duration(p.duration_s),
            kind: p.kind.clone(),
            kill: None,
            fault: Fault::Partition {
                from: p.from.clone(),
                to: p.to.clone(),
                one_way: p.one_way,
            },
        });
    }
    for (i, k) in schedule.kills.iter().enumerate() {
        let fault = match k.nodes.as_slice() {
            [node] if k.role != "all-control-plane" => Fault::Kill { node: node.clone() },
            nodes => Fault::KillGroup {
                nodes: nodes.to_vec(),
            },
        };
        out.push(Scheduled {
            start: duration(k.at_s),
            duration: duration(k.downtime_s),
            kind: k.role.clone(),
            kill: Some(i),
            fault,
        });
    }
    for p in &schedule.pauses {
        out.push(Scheduled {
            start: duration(p.at_s),
            duration: duration(p.duration_s),
            kind: p.role.clone(),
            kill: None,
            fault: Fault::Pause {
                node: p.node.clone(),
            },
        });
    }
    out.retain(|s| s.start < period);
    for s in &mut out {
        s.duration = s.duration.min(period - s.start);
    }
    out.sort_by_key(|s| s.start);
    out
}

/// The schedule's membership changes as the world's plan (joiners in the order they join).
pub fn membership(schedule: &Schedule) -> Plan {
    let mut plan = Plan::default();
    for m in &schedule.membership {
        if let Some(join) = &m.join {
            plan.joiners.push(Joiner {
                name: join.clone(),
                role: match m.role.as_deref() {
                    Some("etcd-only") => NodeRole::EtcdOnly,
                    _ => NodeRole::Server,
                },
                via: m.via.clone().unwrap_or_default(),
            });
        }
        let change = match (&m.leave, &m.join) {
            (Some(leave), Some(join)) => Change::Replace {
                leave: leave.clone(),
                join: join.clone(),
            },
            (Some(node), None) => Change::Leave { node: node.clone() },
            (None, Some(node)) => Change::Join { node: node.clone() },
            (None, None) => continue,
        };
        plan.changes.push(super::membership::Scheduled {
            at: duration(m.at_s),
            change,
        });
    }
    plan
}

/// The mix a schedule records (zeros when it records none).
pub fn mix(schedule: &Schedule) -> FaultMix {
    let m = schedule.mix.clone().unwrap_or_default();
    FaultMix {
        partitions_per_min: m.partitions_per_min,
        kills_per_min: m.kills_per_min,
        compact_failure_probability: m.compact_failure_probability,
        pauses_per_min: m.pauses_per_min,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_to_the_nanosecond() {
        for ns in [0u64, 1, 999_999_999, 123_456_789_012, 1_799_999_999_999] {
            let d = Duration::from_nanos(ns);
            let text = toml::to_string(&Mix {
                partitions_per_min: secs(d),
                ..Default::default()
            })
            .unwrap();
            let back: Mix = toml::from_str(&text).unwrap();
            assert_eq!(duration(back.partitions_per_min), d, "{text}");
        }
    }
}

//! Carries out a schedule against a cluster in real monotonic time: each fault starts and ends
//! at its offset from the runner's start, and is logged with the instants it really started and
//! ended (a kill ends when the node is started again, not when it answers).
//!
//! Whatever is still in force when the runner is dropped (a cut, a stopped process) is undone,
//! so a run that stops early leaves a cluster that can heal.

use super::network::Endpoint;
use super::schedule::{self, Schedule};
use super::supervisor::Cluster;
use std::fmt;
use std::time::{Duration, Instant};

/// One fault as it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRecord {
    /// `partition symmetric n1 -> n2,n3`, `kill n2`, `pause n3`.
    pub fault: String,
    /// When the schedule asked for it, from the run's start.
    pub planned: Duration,
    /// When it started and ended, from the run's start.
    pub started: Duration,
    pub ended: Option<Duration>,
    /// What went wrong, if anything (a restart that could not spawn).
    pub note: Option<String>,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: planned {:.3} s, started {:.3} s",
            self.fault,
            self.planned.as_secs_f64(),
            self.started.as_secs_f64()
        )?;
        if let Some(end) = self.ended {
            write!(f, ", ended {:.3} s", end.as_secs_f64())?;
        }
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// What a step of the runner did, by node and client names (`n1`, `c2`), for a history's world
/// events.
#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    PartitionStarted {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    PartitionHealed {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    Killed(Vec<String>),
    Restarted(Vec<String>),
    Paused(String),
    Resumed(String),
}

enum Action {
    Cut(Vec<(Endpoint, Endpoint)>),
    Heal(Vec<(Endpoint, Endpoint)>),
    Kill(Vec<usize>),
    Restart(Vec<usize>),
    Pause(usize),
    Resume(usize),
}

struct Step {
    at: Duration,
    happened: Happened,
    /// The fault's index in the records.
    record: usize,
    action: Action,
}

/// What the runner has put in force and not yet undone.
struct InForce<'a> {
    cluster: &'a Cluster,
    cuts: Vec<Vec<(Endpoint, Endpoint)>>,
    /// Paused nodes, with the start they were paused in.
    paused: Vec<(usize, u32)>,
}

impl Drop for InForce<'_> {
    fn drop(&mut self) {
        for links in self.cuts.drain(..) {
            self.cluster.network.heal(&links);
        }
        for (node, start) in self.paused.drain(..) {
            if self.cluster.starts(node) == start {
                self.cluster.resume(node);
            }
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs `schedule` against `cluster` from now, calling `log` as each fault starts and ends;
/// returns every fault's record, in schedule order (partitions, kills, pauses).
pub async fn run(
    schedule: &Schedule,
    cluster: &Cluster,
    clients: usize,
    mut log: impl FnMut(&FaultRecord, &Happened),
) -> Vec<FaultRecord> {
    let nodes = cluster.nodes.len();
    let mut records = Vec::new();
    let mut steps = Vec::new();
    let index = |name: &str| {
        cluster
            .index(name)
            .expect("schedule checked against the cluster")
    };
    for p in &schedule.partitions {
        let links = p.links(nodes, clients);
        let record = records.len();
        records.push(FaultRecord {
            fault: format!(
                "partition {} {} {} {}",
                p.kind,
                p.from.join(","),
                if p.one_way { "->" } else { "<->" },
                p.to.join(",")
            ),
            planned: secs(p.start_s),
            started: Duration::ZERO,
            ended: None,
            note: None,
        });
        let (from, to, one_way) = (p.from.clone(), p.to.clone(), p.one_way);
        steps.push(Step {
            at: secs(p.start_s),
            happened: Happened::PartitionStarted {
                from: from.clone(),
                to: to.clone(),
                one_way,
            },
            record,
            action: Action::Cut(links.clone()),
        });
        steps.push(Step {
            at: secs(p.start_s + p.duration_s),
            happened: Happened::PartitionHealed { from, to, one_way },
            record,
            action: Action::Heal(links),
        });
    }
    for k in &schedule.kills {
        let members: Vec<usize> = k.nodes.iter().map(|n| index(n)).collect();
        let record = records.len();
        records.push(FaultRecord {
            fault: format!("kill {}", k.nodes.join(",")),
            planned: secs(k.at_s),
            started: Duration::ZERO,
            ended: None,
            note: None,
        });
        steps.push(Step {
            at: secs(k.at_s),
            happened: Happened::Killed(k.nodes.clone()),
            record,
            action: Action::Kill(members.clone()),
        });
        steps.push(Step {
            at: secs(k.at_s + k.downtime_s),
            happened: Happened::Restarted(k.nodes.clone()),
            record,
            action: Action::Restart(members),
        });
    }
    for p in &schedule.pauses {
        let node = index(&p.node);
        let record = records.len();
        records.push(FaultRecord {
            fault: format!("pause {}", p.node),
            planned: secs(p.at_s),
            started: Duration::ZERO,
            ended: None,
            note: None,
        });
        steps.push(Step {
            at: secs(p.at_s),
            happened: Happened::Paused(p.node.clone()),
            record,
            action: Action::Pause(node),
        });
        steps.push(Step {
            at: secs(p.at_s + p.duration_s),
            happened: Happened::Resumed(p.node.clone()),
            record,
            action: Action::Resume(node),
        });
    }
    // Stable: a fault's start stays before its end when both fall on the same instant.
    steps.sort_by_key(|s| s.at);
    let origin = Instant::now();
    let mut in_force = InForce {
        cluster,
        cuts: Vec::new(),
        paused: Vec::new(),
    };
    for step in steps {
        tokio::time::sleep_until((origin + step.at).into()).await;
        let now = origin.elapsed();
        let rec = &mut records[step.record];
        let mut ending = true;
        match step.action {
            Action::Cut(links) => {
                cluster.network.cut(&links);
                in_force.cuts.push(links);
                ending = false;
            }
            Action::Heal(links) => {
                cluster.network.heal(&links);
                if let Some(i) = in_force.cuts.iter().position(|l| *l == links) {
                    in_force.cuts.remove(i);
                }
            }
            Action::Kill(members) => {
                for &m in &members {
                    if !cluster.kill(m) {
                        rec.note = Some(format!(
                            "{} was not running",
                            schedule::name(Endpoint::Member(m))
                        ));
                    }
                }
                ending = false;
            }
            Action::Restart(members) => {
                for &m in &members {
                    if cluster.is_running(m) {
                        continue;
                    }
                    if let Err(e) = cluster.respawn(m) {
                        rec.note = Some(format!("restart failed: {e:#}"));
                    }
                }
            }
            Action::Pause(node) => {
                if cluster.pause(node) {
                    in_force.paused.push((node, cluster.starts(node)));
                } else {
                    rec.note = Some("not running: not paused".to_string());
                }
                ending = false;
            }
            Action::Resume(node) => {
                if let Some(i) = in_force.paused.iter().position(|p| p.0 == node) {
                    let (_, start) = in_force.paused.remove(i);
                    // A kill during the pause ended it; the new process was never stopped.
                    if cluster.starts(node) == start {
                        cluster.resume(node);
                    }
                }
            }
        }
        if ending {
            rec.ended = Some(now);
        } else {
            rec.started = now;
        }
        log(rec, &step.happened);
    }
    records
}

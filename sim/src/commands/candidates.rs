//! The candidates shrinking tries beside ddmin, each one step from the best run so far: faults
//! moved to earlier node starts or earlier in time, and smaller topologies. Pure: building a
//! candidate runs nothing; `shrink.rs` runs them.

use crate::commands::ddmin::prune;
use crate::scenario::{Scenario, TopologyKind};

pub fn with_schedule(base: &Scenario, schedule: crate::scenario::Schedule) -> Scenario {
    let mut s = base.clone();
    s.schedule = Some(schedule);
    prune(&mut s);
    s
}

/// `s` with its compaction failures and member crashes moved to the first start of their node
/// (without the kills of those nodes, then with them), then to the start before their own;
/// nothing when all are in a first start already.
pub fn earlier_starts(s: &Scenario) -> Vec<Scenario> {
    let Some(schedule) = &s.schedule else {
        return vec![];
    };
    let later = schedule.compaction_failures.iter().map(|c| c.start);
    if later
        .chain(schedule.member_crashes.iter().map(|c| c.start))
        .all(|n| n <= 1)
    {
        return vec![];
    }
    let moved = |f: &dyn Fn(u32) -> u32, drop_kills: bool| {
        let mut c = schedule.clone();
        let mut nodes = Vec::new();
        for x in &mut c.compaction_failures {
            nodes.push(x.server.clone());
            x.start = f(x.start);
        }
        for x in &mut c.member_crashes {
            nodes.push(x.member.clone());
            x.start = f(x.start);
        }
        if drop_kills {
            c.kills
                .retain(|k| !k.nodes.iter().any(|n| nodes.contains(n)));
        }
        with_schedule(s, c)
    };
    vec![
        moved(&|n| n.min(1), true),
        moved(&|n| n.min(1), false),
        moved(&|n| n.saturating_sub(1).max(1), false),
    ]
}

/// `s` with every timed fault (partitions, kills, pauses, membership changes) moved earlier by the same
/// amount, `n` amounts up to the earliest fault's start, the largest first.
pub fn earlier_in_time(s: &Scenario, n: usize) -> Vec<Scenario> {
    let Some(schedule) = &s.schedule else {
        return vec![];
    };
    let starts = schedule.partitions.iter().map(|p| p.start_s);
    let starts = starts.chain(schedule.kills.iter().map(|k| k.at_s));
    let starts = starts.chain(schedule.pauses.iter().map(|p| p.at_s));
    let first = starts
        .chain(schedule.membership.iter().map(|m| m.at_s))
        .fold(f64::INFINITY, f64::min);
    if !first.is_finite() || first < 10.0 {
        return vec![];
    }
    (1..=n)
        .rev()
        .map(|k| {
            let by = (first - 5.0) * k as f64 / n as f64;
            let mut c = schedule.clone();
            c.partitions.iter_mut().for_each(|p| p.start_s -= by);
            c.kills.iter_mut().for_each(|x| x.at_s -= by);
            c.pauses.iter_mut().for_each(|p| p.at_s -= by);
            c.membership.iter_mut().for_each(|m| m.at_s -= by);
            with_schedule(s, c)
        })
        .collect()
}

/// Smaller topologies one step away from `s`, the most promising first.
pub fn fewer_nodes(s: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut step = |f: &dyn Fn(&mut Scenario) -> bool| {
        let mut c = s.clone();
        if f(&mut c) {
            prune(&mut c);
            out.push(c);
        }
    };
    step(&|c| {
        c.topology.clients > 1 && {
            c.topology.clients -= 1;
            c.workload.pinned_clients = c.workload.pinned_clients.min(c.topology.clients);
            true
        }
    });
    step(&|c| {
        c.workload.watchers > 0 && {
            c.workload.watchers -= 1;
            true
        }
    });
    step(&|c| {
        c.controllers.count > 0 && {
            c.controllers.count -= 1;
            true
        }
    });
    step(&|c| {
        c.workload.lease_clients > 0 && {
            c.workload.lease_clients -= 1;
            true
        }
    });
    step(&|c| {
        c.topology.kind == TopologyKind::Ha && c.topology.servers > 1 && {
            c.topology.servers -= 1;
            true
        }
    });
    step(&|c| {
        c.topology.agents > 0 && {
            c.topology.agents -= 1;
            true
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::schedule::{Pause, Schedule};

    #[test]
    fn moving_faults_earlier_moves_pauses_too() {
        let mut s = crate::scenario::load("../scenarios/kine-ha-partitions.toml").unwrap();
        s.schedule = Some(Schedule {
            pauses: vec![Pause {
                role: "database".into(),
                node: "db".into(),
                at_s: 105.0,
                duration_s: 3.0,
            }],
            ..Default::default()
        });
        let moved = earlier_in_time(&s, 2);
        let at: Vec<f64> = moved
            .iter()
            .map(|c| c.schedule.as_ref().unwrap().pauses[0].at_s)
            .collect();
        assert_eq!(at, vec![5.0, 55.0], "the largest move first, to 5 s");
    }
}

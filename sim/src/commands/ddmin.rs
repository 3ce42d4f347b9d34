//! The pure half of shrinking: delta debugging (Zeller's ddmin) over a list of faults, and
//! turning a set of faults back into a schedule that names only nodes the run has.
//!
//! Nothing here runs a simulation; `shrink.rs` supplies the test that does.

use crate::scenario::schedule::{
    node_names, CompactionFailure, Kill, MemberCrash, MembershipChange, Partition, Pause,
};
use crate::scenario::{Scenario, Schedule};

/// One fault of a schedule, as shrinking removes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Partition(Partition),
    Kill(Kill),
    Pause(Pause),
    Compaction(CompactionFailure),
    Crash(MemberCrash),
    Membership(MembershipChange),
}

pub fn items(s: &Schedule) -> Vec<Item> {
    let mut out: Vec<Item> = s.partitions.iter().cloned().map(Item::Partition).collect();
    out.extend(s.kills.iter().cloned().map(Item::Kill));
    out.extend(s.pauses.iter().cloned().map(Item::Pause));
    out.extend(s.compaction_failures.iter().cloned().map(Item::Compaction));
    out.extend(s.member_crashes.iter().cloned().map(Item::Crash));
    out.extend(s.membership.iter().cloned().map(Item::Membership));
    out
}

/// The schedule holding exactly `items` (with `base`'s seed and mix). A member crash restarts
/// its member, so each crash left out moves that member's later crashes one start earlier.
pub fn schedule_of(base: &Schedule, items: &[Item]) -> Schedule {
    let kept_crash = |c: &MemberCrash| items.iter().any(|i| *i == Item::Crash(c.clone()));
    let dropped: Vec<&MemberCrash> = base
        .member_crashes
        .iter()
        .filter(|c| !kept_crash(c))
        .collect();
    let items: Vec<Item> = items
        .iter()
        .map(|i| match i {
            Item::Crash(c) => {
                let earlier = dropped
                    .iter()
                    .filter(|d| d.member == c.member && d.start < c.start)
                    .count() as u32;
                Item::Crash(MemberCrash {
                    start: c.start - earlier,
                    ..c.clone()
                })
            }
            other => other.clone(),
        })
        .collect();
    let items = items.as_slice();
    let mut s = Schedule {
        seed: base.seed,
        mix: base.mix.clone(),
        ..Default::default()
    };
    for i in items {
        match i.clone() {
            Item::Partition(p) => s.partitions.push(p),
            Item::Kill(k) => s.kills.push(k),
            Item::Pause(p) => s.pauses.push(p),
            Item::Compaction(c) => s.compaction_failures.push(c),
            Item::Crash(c) => s.member_crashes.push(c),
            Item::Membership(m) => s.membership.push(m),
        }
    }
    s
}

/// Drops from `scenario`'s schedule what its run cannot have: faults starting after the fault
/// period (the rest cut at its end) and anything naming a node the topology (or a remaining
/// join) does not create, so a smaller topology or a removed join leaves a valid schedule.
pub fn prune(scenario: &mut Scenario) {
    let Some(mut s) = scenario.schedule.take() else {
        return;
    };
    let period = scenario.duration_s as f64;
    s.partitions.retain(|p| p.start_s < period);
    s.kills.retain(|k| k.at_s < period);
    s.pauses.retain(|p| p.at_s < period);
    s.membership.retain(|m| m.at_s < period);
    for p in &mut s.partitions {
        p.duration_s = p.duration_s.min(period - p.start_s);
    }
    for k in &mut s.kills {
        k.downtime_s = k.downtime_s.min(period - k.at_s);
    }
    for p in &mut s.pauses {
        p.duration_s = p.duration_s.min(period - p.at_s);
    }
    // A join may name a joiner that an earlier removal left unknown: repeat until stable.
    loop {
        let names = node_names(scenario, &s);
        let known = |n: &Option<String>| n.as_ref().is_none_or(|n| names.contains(n));
        let before = s.membership.len();
        s.membership.retain(|m| known(&m.leave) && known(&m.via));
        if s.membership.len() == before {
            break;
        }
    }
    let names = node_names(scenario, &s);
    let known = |n: &String| names.contains(n);
    for p in &mut s.partitions {
        p.from.retain(known);
        p.to.retain(known);
    }
    s.partitions
        .retain(|p| !p.from.is_empty() && !p.to.is_empty());
    for k in &mut s.kills {
        k.nodes.retain(known);
        let nodes = k.nodes.clone();
        k.torn_writes.retain(|n, _| nodes.contains(n));
    }
    s.kills.retain(|k| !k.nodes.is_empty());
    s.pauses.retain(|p| known(&p.node));
    s.compaction_failures.retain(|c| known(&c.server));
    s.member_crashes.retain(|c| known(&c.member));
    scenario.schedule = Some(s);
}

/// `items` cut into `n` contiguous parts of nearly equal size.
fn split<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.min(items.len()).max(1);
    let (size, extra) = (items.len() / n, items.len() % n);
    let mut out = Vec::new();
    let mut at = 0;
    for i in 0..n {
        let len = size + usize::from(i < extra);
        out.push(items[at..at + len].to_vec());
        at += len;
    }
    out
}

/// ddmin: a 1-minimal subset of `items` on which the test still fails (assuming the empty set
/// passes). `fails` tests a batch of at most `batch` candidates side by side and returns the
/// index of the first that fails, so the search is the same whatever the batch size.
pub fn ddmin<T: Clone>(
    mut items: Vec<T>,
    batch: usize,
    mut fails: impl FnMut(&[Vec<T>]) -> Option<usize>,
) -> Vec<T> {
    let mut n = 2;
    while items.len() >= 2 {
        let parts = split(&items, n);
        let mut candidates = parts.clone();
        if parts.len() > 2 {
            for i in 0..parts.len() {
                let rest: Vec<T> = parts
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, p)| p.iter().cloned())
                    .collect();
                candidates.push(rest);
            }
        }
        let mut found = None;
        for (b, group) in candidates.chunks(batch.max(1)).enumerate() {
            if let Some(i) = fails(group) {
                found = Some(b * batch.max(1) + i);
                break;
            }
        }
        match found {
            Some(i) if i < parts.len() => {
                items = parts[i].clone();
                n = 2;
            }
            Some(i) => {
                items = candidates[i].clone();
                n = (n - 1).max(2);
            }
            None if n < items.len() => n = (2 * n).min(items.len()),
            None => break,
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_the_two_faults_that_matter_whatever_the_batch() {
        let items: Vec<u32> = (0..37).collect();
        for batch in [1, 2, 3, 8] {
            let mut runs = 0;
            let min = ddmin(items.clone(), batch, |group| {
                runs += group.len();
                group.iter().position(|c| c.contains(&7) && c.contains(&30))
            });
            assert_eq!(min, vec![7, 30], "batch {batch}");
            assert!(runs < 100, "{runs} runs");
        }
    }

    #[test]
    fn ddmin_keeps_everything_when_every_fault_matters() {
        let min = ddmin(vec![1, 2, 3], 2, |group| {
            group.iter().position(|c| c.len() == 3)
        });
        assert_eq!(min, vec![1, 2, 3]);
    }

    #[test]
    fn a_crash_left_out_moves_its_members_later_crashes_one_start_earlier() {
        let crash = |member: &str, start| MemberCrash {
            member: member.into(),
            start,
            point: "compact-before-finished".into(),
            occurrence: 1,
            torn_write: None,
        };
        let base = Schedule {
            member_crashes: vec![
                crash("server-1", 1),
                crash("server-2", 1),
                crash("server-1", 2),
            ],
            ..Default::default()
        };
        let kept = [
            Item::Crash(crash("server-2", 1)),
            Item::Crash(crash("server-1", 2)),
        ];
        let s = schedule_of(&base, &kept);
        assert_eq!(
            s.member_crashes,
            vec![crash("server-2", 1), crash("server-1", 1)]
        );
    }

    #[test]
    fn prune_drops_what_a_smaller_run_cannot_have() {
        let mut s = crate::scenario::load("../scenarios/kine-ha-partitions.toml").unwrap();
        let part = |from: &str, start_s: f64| Partition {
            kind: "server-server".into(),
            from: vec![from.into()],
            to: vec!["kine-1".into()],
            one_way: false,
            start_s,
            duration_s: 50.0,
        };
        s.duration_s = 100;
        s.topology.servers = 2;
        s.schedule = Some(Schedule {
            partitions: vec![
                part("kine-2", 10.0),
                part("kine-3", 20.0),
                part("kine-2", 80.0),
            ],
            kills: vec![Kill {
                role: "server".into(),
                nodes: vec!["kine-2".into()],
                at_s: 120.0,
                downtime_s: 5.0,
                torn_writes: Default::default(),
            }],
            ..Default::default()
        });
        prune(&mut s);
        let left = s.schedule.unwrap();
        assert!(left.kills.is_empty(), "a kill after the fault period");
        assert_eq!(left.partitions.len(), 2, "kine-3 is gone: {left:?}");
        assert_eq!(
            left.partitions[1].duration_s, 20.0,
            "cut at the period's end"
        );
    }

    #[test]
    fn pauses_are_faults_ddmin_drops_and_prune_keeps_within_the_run() {
        let pause = |node: &str, at_s: f64| Pause {
            role: "server".into(),
            node: node.into(),
            at_s,
            duration_s: 30.0,
        };
        let base = Schedule {
            pauses: vec![
                pause("kine-1", 10.0),
                pause("kine-3", 20.0),
                pause("kine-2", 90.0),
            ],
            ..Default::default()
        };
        let all = items(&base);
        assert_eq!(all.len(), 3, "each pause is one item");
        assert_eq!(base.len(), 3);
        let kept = ddmin(all, 2, |group| {
            group
                .iter()
                .position(|c| c.contains(&Item::Pause(pause("kine-3", 20.0))))
        });
        assert_eq!(kept, vec![Item::Pause(pause("kine-3", 20.0))]);
        assert_eq!(
            schedule_of(&base, &kept).pauses,
            vec![pause("kine-3", 20.0)]
        );

        let mut s = crate::scenario::load("../scenarios/kine-ha-partitions.toml").unwrap();
        s.duration_s = 100;
        s.topology.servers = 2;
        s.schedule = Some(Schedule {
            pauses: vec![
                pause("kine-1", 10.0),
                pause("kine-3", 20.0),
                pause("kine-2", 90.0),
                pause("kine-1", 100.0),
            ],
            ..Default::default()
        });
        prune(&mut s);
        let left = s.schedule.unwrap().pauses;
        let mut cut = pause("kine-2", 90.0);
        cut.duration_s = 10.0;
        assert_eq!(
            left,
            vec![pause("kine-1", 10.0), cut],
            "kine-3 is gone, the last starts after the period, kine-2's is cut at its end"
        );
    }
}

//! The seeded plan of server membership changes for one etcd-topology run: which servers join
//! (with their names, roles and the member they join through), which leave, and when.
//!
//! Drawn before the cluster is built, so every node that will ever exist is known up front (its
//! address in every node's book, its member id among the peers) and created in a fixed order.
//! Drawing is pure: the same seed and scenario give the same plan. Operators' rules hold in every
//! plan: changes at least `MIN_GAP` apart (but for the second of a pair, which joins right
//! after the first); a leave only from three members or more (removing
//! from two needs both); at most two members more than at bootstrap (and seven in all); the
//! server every node was told to join through, and every joiner's, never leaves.

use crate::scenario::Faults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use store::k3s::role::NodeRole;

/// The change kinds a scenario may name.
/// `server-join-pair`: two servers join at once, the second through the first, as automation
/// that brings several servers up together does; the second asks the first before its member
/// has caught up (it is refused and retries).
pub const KINDS: &[&str] = &[
    "server-join",
    "server-leave",
    "server-replace",
    "server-join-pair",
];

/// Changes start at least this far apart: a member add or remove must commit and the node
/// catch up before the next, as an operator waits for a healthy cluster.
pub const MIN_GAP: Duration = Duration::from_secs(30);
/// No change starts in the last minute of the fault period, so each completes under faults.
const LAST_START_BEFORE_END: Duration = Duration::from_secs(60);

/// A server that joins during the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joiner {
    pub name: String,
    pub role: NodeRole,
    /// The member it is told to join through (its load balancer's default server).
    pub via: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Join {
        node: String,
    },
    Leave {
        node: String,
    },
    /// `leave` leaves, then `join` (same role, new name) joins.
    Replace {
        leave: String,
        join: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub change: Change,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every server that joins, in the order it joins.
    pub joiners: Vec<Joiner>,
    pub changes: Vec<Scheduled>,
}

impl Plan {
    pub fn joiner(&self, name: &str) -> &Joiner {
        self.joiners
            .iter()
            .find(|j| j.name == name)
            .expect("a planned change names a planned joiner")
    }

    /// Every server that leaves, in order.
    pub fn leavers(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|c| match &c.change {
            Change::Leave { node } | Change::Replace { leave: node, .. } => Some(node.as_str()),
            Change::Join { .. } => None,
        })
    }
}

/// `prefix-N` names: the next unused N for each prefix.
fn next_names(members: &[(String, NodeRole)]) -> BTreeMap<&'static str, u32> {
    let mut next = BTreeMap::new();
    for (name, role) in members {
        let prefix = prefix(*role);
        let n = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        let e = next.entry(prefix).or_insert(1);
        *e = (*e).max(n + 1);
    }
    next
}

/// The name prefix of a joining role (`server-N`, `etcd-N`, as the topology names them).
pub fn prefix(role: NodeRole) -> &'static str {
    match role {
        NodeRole::EtcdOnly => "etcd",
        _ => "server",
    }
}

/// Draws the plan. `members` are the etcd-holding servers at bootstrap, in layout order, and
/// `protected` the servers that must never leave (the topology's join target).
pub fn draw(
    seed: u64,
    faults: &Faults,
    members: &[(String, NodeRole)],
    protected: &[String],
    period: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let rate = faults.membership_changes_per_min;
    if rate <= 0.0 || faults.membership_kinds.is_empty() || members.is_empty() {
        return plan;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ super::MEMBERSHIP_SALT);
    let mut roles: Vec<NodeRole> = Vec::new();
    for (_, role) in members {
        if !roles.contains(role) {
            roles.push(*role);
        }
    }
    let max_members = (members.len() + 2).min(7);
    let mut next = next_names(members);
    let mut current: Vec<(String, NodeRole)> = members.to_vec();
    let mut protected: Vec<String> = protected.to_vec();
    let mut last: Option<Duration> = None;
    let horizon = period.saturating_sub(LAST_START_BEFORE_END);
    let mut t = 0.0;
    loop {
        let u: f64 = rng.gen();
        t += -(1.0 - u).ln() / (rate / 60.0);
        if t >= horizon.as_secs_f64() {
            return plan;
        }
        let at = Duration::from_secs_f64(t);
        if last.is_some_and(|l| at < l + MIN_GAP) {
            continue;
        }
        let leavable: Vec<usize> = (0..current.len())
            .filter(|i| !protected.contains(&current[*i].0))
            .collect();
        let can_leave = current.len() >= 3 && !leavable.is_empty();
        let feasible: Vec<&str> = faults
            .membership_kinds
            .iter()
            .map(String::as_str)
            .filter(|k| match *k {
                "server-join" => current.len() < max_members,
                "server-join-pair" => current.len() + 2 <= max_members,
                _ => can_leave,
            })
            .collect();
        if feasible.is_empty() {
            continue;
        }
        let kind = feasible[rng.gen_range(0..feasible.len())];
        let mut new_server = |rng: &mut StdRng, role: NodeRole, current: &[(String, NodeRole)]| {
            let n = next.entry(prefix(role)).or_insert(1);
            let name = format!("{}-{n}", prefix(role));
            *n += 1;
            let via = current[rng.gen_range(0..current.len())].0.clone();
            Joiner { name, role, via }
        };
        let change = match kind {
            "server-join-pair" => {
                let role = roles[rng.gen_range(0..roles.len())];
                let first = new_server(&mut rng, role, &current);
                let second = Joiner {
                    via: first.name.clone(),
                    ..new_server(&mut rng, role, &current)
                };
                protected.push(first.via.clone());
                protected.push(first.name.clone());
                current.push((first.name.clone(), role));
                current.push((second.name.clone(), role));
                // Both start at `at` (the world does not wait for the first's member add
                // before starting the second).
                plan.changes.push(Scheduled {
                    at,
                    change: Change::Join {
                        node: first.name.clone(),
                    },
                });
                let node = second.name.clone();
                plan.joiners.push(first);
                plan.joiners.push(second);
                Change::Join { node }
            }
            "server-join" => {
                let role = roles[rng.gen_range(0..roles.len())];
                let j = new_server(&mut rng, role, &current);
                let node = j.name.clone();
                protected.push(j.via.clone());
                current.push((node.clone(), role));
                plan.joiners.push(j);
                Change::Join { node }
            }
            _ => {
                let i = leavable[rng.gen_range(0..leavable.len())];
                let (gone, role) = current.remove(i);
                if kind == "server-leave" {
                    Change::Leave { node: gone }
                } else {
                    let j = new_server(&mut rng, role, &current);
                    let join = j.name.clone();
                    protected.push(j.via.clone());
                    current.push((join.clone(), role));
                    plan.joiners.push(j);
                    Change::Replace { leave: gone, join }
                }
            }
        };
        plan.changes.push(Scheduled { at, change });
        last = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_servers() -> Vec<(String, NodeRole)> {
        (1..=3)
            .map(|i| (format!("server-{i}"), NodeRole::Server))
            .collect()
    }

    fn faults(kinds: &[&str]) -> Faults {
        Faults {
            membership_changes_per_min: 1.0,
            membership_kinds: kinds.iter().map(|k| k.to_string()).collect(),
            ..Faults::default()
        }
    }

    #[test]
    fn plans_are_drawn_from_the_seed_and_keep_operators_rules() {
        let period = Duration::from_secs(1200);
        let all = faults(KINDS);
        let protected = vec!["server-1".to_string()];
        let a = draw(7, &all, &three_servers(), &protected, period);
        assert_eq!(a, draw(7, &all, &three_servers(), &protected, period));
        assert_ne!(a, draw(8, &all, &three_servers(), &protected, period));
        for seed in 0..50 {
            let plan = draw(seed, &all, &three_servers(), &protected, period);
            let mut members: Vec<String> = three_servers().into_iter().map(|m| m.0).collect();
            let mut last: Option<Duration> = None;
            for c in &plan.changes {
                // The second of a pair joins at the first's time, through it.
                let second_of_pair = matches!(&c.change, Change::Join { node }
                    if last == Some(c.at) && members.last() == Some(&plan.joiner(node).via));
                assert!(
                    second_of_pair || last.is_none_or(|l| c.at >= l + MIN_GAP),
                    "{plan:?}"
                );
                assert!(c.at + LAST_START_BEFORE_END <= period);
                last = Some(c.at);
                let (gone, came) = match &c.change {
                    Change::Join { node } => (None, Some(node)),
                    Change::Leave { node } => (Some(node), None),
                    Change::Replace { leave, join } => (Some(leave), Some(join)),
                };
                if let Some(g) = gone {
                    assert!(members.len() >= 3, "a leave from two members: {plan:?}");
                    assert_ne!(g, "server-1", "the join target left");
                    assert!(
                        plan.joiners.iter().all(|j| &j.via != g),
                        "a joiner's server left: {plan:?}"
                    );
                    members.retain(|m| m != g);
                }
                if let Some(n) = came {
                    let j = plan.joiner(n);
                    assert!(members.contains(&j.via), "joins through a member: {plan:?}");
                    assert!(!members.contains(n), "a name is never reused");
                    members.push(n.clone());
                }
                assert!(members.len() <= 5, "at most two more than at bootstrap");
            }
        }
    }

    #[test]
    fn a_pair_joins_at_one_time_the_second_through_the_first() {
        let protected = vec!["server-1".to_string()];
        let period = Duration::from_secs(1200);
        let plan = draw(
            5,
            &faults(&["server-join-pair"]),
            &three_servers(),
            &protected,
            period,
        );
        // From three members, one pair fits under the two-more limit, and nothing after it.
        assert_eq!(plan.changes.len(), 2, "{plan:?}");
        assert_eq!(plan.changes[0].at, plan.changes[1].at);
        let (a, b) = (&plan.joiners[0], &plan.joiners[1]);
        assert_eq!(
            plan.changes[0].change,
            Change::Join {
                node: a.name.clone()
            }
        );
        assert_eq!(
            plan.changes[1].change,
            Change::Join {
                node: b.name.clone()
            }
        );
        assert!(three_servers().iter().any(|(n, _)| *n == a.via));
        assert_eq!(b.via, a.name, "the second joins through the first");
        let full = draw(
            5,
            &faults(&["server-join-pair"]),
            &three_servers()[..2],
            &protected,
            period,
        );
        assert_eq!(full.changes.len(), 2, "from two members too: {full:?}");
    }

    #[test]
    fn joiners_continue_the_topology_names_and_replacements_keep_the_role() {
        let members = vec![
            ("etcd-1".to_string(), NodeRole::EtcdOnly),
            ("etcd-2".to_string(), NodeRole::EtcdOnly),
            ("etcd-3".to_string(), NodeRole::EtcdOnly),
        ];
        let plan = draw(
            3,
            &faults(&["server-replace"]),
            &members,
            &["etcd-1".to_string()],
            Duration::from_secs(1200),
        );
        assert!(!plan.changes.is_empty());
        assert_eq!(plan.joiners[0].name, "etcd-4");
        assert!(plan.joiners.iter().all(|j| j.role == NodeRole::EtcdOnly));
        assert!(plan
            .changes
            .iter()
            .all(|c| matches!(c.change, Change::Replace { .. })));
        let none = draw(3, &faults(&[]), &members, &[], Duration::from_secs(1200));
        assert_eq!(none, Plan::default());
    }
}

//! The restart half of etcd-only-rejoin: a node that restarts while its join server is out of
//! reach must still rejoin through another server it knew, once one is reachable (SEMANTICS.md
//! section 4: "any node can restart as long as one previously known server is reachable").
//!
//! Reachability is rebuilt from the history's world events (kills, restarts, partitions), never
//! from the cluster. Only nodes without an etcd member are judged: any server's supervisor may
//! answer their join, while a member must be added through a server that holds one. A server
//! without a member (control-plane-only) answers only once it has joined itself since it last
//! started: until then it knows no cluster to tell (k3s admits a node through the apiserver,
//! which needs etcd).

use super::{secs, Violations};
use crate::history::{EventKind, History, SimNanos};
use std::collections::{BTreeMap, BTreeSet};
use store::observe::StoreEvent;

/// A known server must stay reachable this long for a join through it to complete.
pub const JOIN_WINDOW_NS: SimNanos = 15_000_000_000;
/// After that, the node has this long to have joined (one round of join attempts: a dead
/// target's deadline, then the next target's answer).
pub const JOIN_BOUND_NS: SimNanos = 30_000_000_000;

/// What changes who can answer a join: a world event, or a server without a member joining.
#[derive(Clone, Copy)]
enum Step<'a> {
    World(&'a EventKind),
    /// The server (one without an etcd member) joined: it answers joins until it restarts.
    Joined,
}

/// Who is down, which servers without a member have not joined since they started, and which
/// directed links are cut, as of one instant.
#[derive(Clone)]
struct World<'a> {
    down: BTreeSet<&'a str>,
    memberless: &'a BTreeSet<&'a str>,
    unjoined: BTreeSet<&'a str>,
    cuts: BTreeMap<(&'a str, &'a str), u32>,
}

impl<'a> World<'a> {
    /// The world at the start: every server without a member still has to join.
    fn new(memberless: &'a BTreeSet<&'a str>) -> Self {
        World {
            down: BTreeSet::new(),
            memberless,
            unjoined: memberless.clone(),
            cuts: BTreeMap::new(),
        }
    }

    fn apply(&mut self, node: &'a str, step: Step<'a>) {
        let kind = match step {
            Step::Joined => {
                self.unjoined.remove(node);
                return;
            }
            Step::World(kind) => kind,
        };
        match kind {
            // A paused node answers nobody until it resumes (a kill ends the pause).
            EventKind::NodeKilled | EventKind::NodePaused => {
                self.down.insert(node);
            }
            EventKind::NodeResumed => {
                self.down.remove(node);
            }
            EventKind::NodeRestarted | EventKind::ServerJoined { .. } => {
                self.down.remove(node);
                if self.memberless.contains(node) {
                    self.unjoined.insert(node);
                }
            }
            // A server that left never answers again.
            EventKind::ServerLeft { .. } => {
                self.down.insert(node);
            }
            EventKind::PartitionStarted { from, to, one_way }
            | EventKind::PartitionHealed { from, to, one_way } => {
                let start = matches!(kind, EventKind::PartitionStarted { .. });
                count_cuts(&mut self.cuts, from, to, *one_way, start);
            }
            _ => {}
        }
    }

    /// `n` can call `s` and hear back with the servers it knows.
    fn reachable(&self, n: &str, s: &str) -> bool {
        let cut = |a: &str, b: &str| self.cuts.get(&(a, b)).is_some_and(|c| *c > 0);
        let down = |x: &str| self.down.contains(x);
        !down(s) && !down(n) && !self.unjoined.contains(s) && !cut(n, s) && !cut(s, n)
    }
}

type Steps<'a> = Vec<(SimNanos, &'a str, Step<'a>)>;

/// The world events and the joins of servers without a member, in time order.
/// Counts a partition starting (`start`) or healing on every link it cuts: a link is cut while
/// its count is above zero, so overlapping partitions heal one at a time.
pub(super) fn count_cuts<'a>(
    cuts: &mut BTreeMap<(&'a str, &'a str), u32>,
    from: &'a [String],
    to: &'a [String],
    one_way: bool,
    start: bool,
) {
    for a in from {
        for b in to {
            let mut links = vec![(a.as_str(), b.as_str())];
            if !one_way {
                links.push((b.as_str(), a.as_str()));
            }
            for l in links {
                let c = cuts.entry(l).or_insert(0);
                *c = if start { *c + 1 } else { c.saturating_sub(1) };
            }
        }
    }
}

fn world_events<'a>(h: &'a History, memberless: &BTreeSet<&str>) -> Steps<'a> {
    let world = h.events.iter().filter(|e| {
        matches!(
            e.kind,
            EventKind::NodeKilled
                | EventKind::NodeRestarted
                | EventKind::NodePaused
                | EventKind::NodeResumed
                | EventKind::ServerJoined { .. }
                | EventKind::ServerLeft { .. }
                | EventKind::PartitionStarted { .. }
                | EventKind::PartitionHealed { .. }
        )
    });
    let mut steps: Steps<'a> = world
        .map(|e| (e.at_ns, e.node.as_str(), Step::World(&e.kind)))
        .collect();
    let joins = h
        .store_events()
        .filter(|(_, n, e)| memberless.contains(n) && matches!(e, StoreEvent::Joined { .. }));
    steps.extend(joins.map(|(at, n, _)| (at, n, Step::Joined)));
    // Stable: at one instant, world events keep their order and come before joins.
    steps.sort_by_key(|(at, _, _)| *at);
    steps
}

fn world_at<'a>(
    events: &[(SimNanos, &'a str, Step<'a>)],
    memberless: &'a BTreeSet<&'a str>,
    t: SimNanos,
) -> World<'a> {
    let mut w = World::new(memberless);
    for (at, node, step) in events {
        if *at > t {
            break;
        }
        w.apply(node, *step);
    }
    w
}

/// The first instant from `from` on at which some server of `known` stays reachable from `n`
/// for the whole join window.
fn first_reachable(
    events: &[(SimNanos, &str, Step)],
    memberless: &BTreeSet<&str>,
    n: &str,
    known: &[String],
    from: SimNanos,
    end: SimNanos,
) -> Option<(SimNanos, String)> {
    let candidates = std::iter::once(from).chain(
        events
            .iter()
            .map(|e| e.0)
            .filter(|t| *t > from && *t <= end),
    );
    for t in candidates {
        let window_end = t + JOIN_WINDOW_NS;
        if window_end > end {
            return None;
        }
        let checkpoints: Vec<SimNanos> = std::iter::once(t)
            .chain(
                events
                    .iter()
                    .map(|e| e.0)
                    .filter(|x| *x > t && *x <= window_end),
            )
            .collect();
        for s in known.iter().filter(|s| s.as_str() != n) {
            if checkpoints
                .iter()
                .all(|c| world_at(events, memberless, *c).reachable(n, s))
            {
                return Some((t, s.clone()));
            }
        }
    }
    None
}

/// Violations of restart liveness for nodes whose role holds no etcd member; returns how many
/// restarts it judged.
pub fn check(h: &History, out: &mut Violations) -> u64 {
    let p = &h.params;
    let mut judged = 0;
    let memberless: BTreeSet<&str> = p
        .node_roles
        .iter()
        .filter(|(_, role)| *role == "control-plane-only")
        .map(|(n, _)| n.as_str())
        .collect();
    let events = world_events(h, &memberless);
    for (node, role) in &p.node_roles {
        if role != "control-plane-only" && role != "agent" {
            continue;
        }
        let mut joins: Vec<(SimNanos, &[String])> = Vec::new();
        // What the node knew over time: its joins' answers, then each update since.
        let mut known_since: Vec<(SimNanos, &[String])> = Vec::new();
        let mut waiting: Vec<(SimNanos, &[String])> = Vec::new();
        for (at, who, e) in h.store_events() {
            if who != node {
                continue;
            }
            match e {
                StoreEvent::Joined { known, .. } => {
                    joins.push((at, known));
                    known_since.push((at, known));
                }
                // The servers it knows follow membership between joins too.
                StoreEvent::ServersUpdated { known, .. } => known_since.push((at, known)),
                StoreEvent::ApiserverWaiting { failing, .. } => waiting.push((at, failing)),
                _ => {}
            }
        }
        let restarts = events
            .iter()
            .filter(|(_, n, k)| *n == node && matches!(k, Step::World(EventKind::NodeRestarted)))
            .map(|(t, _, _)| *t);
        for t in restarts {
            let Some((_, known)) = known_since.iter().rev().find(|(at, _)| *at < t) else {
                continue;
            };
            let joined = joins.iter().find(|(at, _)| *at >= t).map(|(at, _)| *at);
            // Killed again before it could join: the next restart is judged instead. Paused
            // before it could join: its own stall, not a routing fault, so it is not judged.
            let next_kill = events
                .iter()
                .find(|(at, n, k)| {
                    *at > t
                        && *n == node
                        && matches!(
                            k,
                            Step::World(EventKind::NodeKilled | EventKind::NodePaused)
                        )
                })
                .map(|(at, _, _)| *at)
                .unwrap_or(p.end_ns);
            let Some((r, via)) = first_reachable(&events, &memberless, node, known, t, next_kill)
            else {
                continue;
            };
            let due = r + JOIN_BOUND_NS;
            judged += 1;
            if due > next_kill || joined.is_some_and(|j| j <= due) {
                continue;
            }
            let stuck = waiting
                .iter()
                .rev()
                .find(|(at, _)| *at >= t && *at <= due)
                .map(|(_, f)| format!("; it was stuck at: {}", f.join("; ")))
                .unwrap_or_default();
            out.fire(due, || format!(
                    "node {node} ({role}) restarted at {} and had not rejoined {} after {via}, a server it knew, became reachable at {}{}{stuck}",
                    secs(t),
                    secs(JOIN_BOUND_NS),
                    secs(r),
                    match joined {
                        Some(j) => format!(" (it joined only at {})", secs(j)),
                        None => " (it never rejoined)".into(),
                    },
                ));
        }
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::{history, store};
    use crate::history::WorldEvent;

    fn world(h: &mut History, at_s: f64, node: &str, kind: EventKind) {
        h.events.push(WorldEvent {
            at_ns: (at_s * 1e9) as u64,
            node: node.into(),
            kind,
        });
    }

    fn joined(h: &mut History, at_s: f64, node: &str) {
        store(
            h,
            at_s,
            node,
            StoreEvent::Joined {
                via: "etcd-1".into(),
                known: vec!["cp-1".into(), "etcd-1".into(), "etcd-2".into()],
            },
        );
    }

    /// The history's events in time order, judged.
    fn violations(mut h: History) -> Vec<crate::checkers::Violation> {
        h.events.sort_by_key(|e| e.at_ns);
        let mut out = Violations::new();
        check(&h, &mut out);
        out.kept().to_vec()
    }

    /// cp-1 restarts at 100 s while etcd-1 (its join server) is down until 300 s; etcd-2 is up.
    fn restart_while_join_server_down(rejoin_at_s: f64) -> Vec<crate::checkers::Violation> {
        let mut h = history();
        h.params.end_ns = 400_000_000_000;
        h.params.node_roles = [
            ("cp-1", "control-plane-only"),
            ("etcd-1", "etcd-only"),
            ("etcd-2", "etcd-only"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        joined(&mut h, 5.0, "cp-1");
        world(&mut h, 90.0, "etcd-1", EventKind::NodeKilled);
        world(&mut h, 95.0, "cp-1", EventKind::NodeKilled);
        world(&mut h, 100.0, "cp-1", EventKind::NodeRestarted);
        store(
            &mut h,
            110.0,
            "cp-1",
            StoreEvent::ApiserverWaiting {
                via: Some("etcd-1".into()),
                failing: vec!["join via etcd-1: RPC timeout".into()],
            },
        );
        world(&mut h, 300.0, "etcd-1", EventKind::NodeRestarted);
        joined(&mut h, rejoin_at_s, "cp-1");
        violations(h)
    }

    #[test]
    fn rejoining_through_another_known_server_passes() {
        assert_eq!(restart_while_join_server_down(113.0), vec![]);
    }

    #[test]
    fn waiting_for_the_join_server_while_another_is_reachable_fires() {
        let out = restart_while_join_server_down(301.0);
        assert_eq!(out.len(), 1, "{out:?}");
        let m = &out[0].message;
        assert!(
            m.contains("node cp-1 (control-plane-only) restarted at 100.000s"),
            "{m}"
        );
        assert!(
            m.contains("etcd-2, a server it knew, became reachable at 100.000s"),
            "{m}"
        );
        assert!(m.contains("join via etcd-1: RPC timeout"), "{m}");
        assert_eq!(out[0].at_ns, 130_000_000_000);
    }

    #[test]
    fn a_paused_server_is_unreachable_and_a_node_paused_before_rejoining_is_not_judged() {
        // etcd-2, the other server cp-1 knows, is paused from 99 s to 250 s: until then no
        // known server answers, so a rejoin at 260 s is in time; with etcd-2 up it is late.
        let with = |events: &[(f64, &str, EventKind)], rejoin_at_s: f64| {
            let mut h = history();
            h.params.end_ns = 400_000_000_000;
            h.params.node_roles = [
                ("cp-1", "control-plane-only"),
                ("etcd-1", "etcd-only"),
                ("etcd-2", "etcd-only"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            joined(&mut h, 5.0, "cp-1");
            world(&mut h, 90.0, "etcd-1", EventKind::NodeKilled);
            world(&mut h, 95.0, "cp-1", EventKind::NodeKilled);
            world(&mut h, 100.0, "cp-1", EventKind::NodeRestarted);
            for (at, node, kind) in events {
                world(&mut h, *at, node, kind.clone());
            }
            world(&mut h, 300.0, "etcd-1", EventKind::NodeRestarted);
            joined(&mut h, rejoin_at_s, "cp-1");
            violations(h)
        };
        let paused = [
            (99.0, "etcd-2", EventKind::NodePaused),
            (250.0, "etcd-2", EventKind::NodeResumed),
        ];
        assert_eq!(with(&paused, 260.0), vec![], "reachable only from 250 s");
        let late = with(&paused, 290.0);
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(
            late[0].message.contains("became reachable at 250.000s"),
            "{late:?}"
        );
        assert_eq!(with(&[], 260.0).len(), 1, "etcd-2 up: 260 s is late");
        // cp-1 itself is paused at 110 s for a minute: its own stall, not a routing fault.
        let own = [
            (110.0, "cp-1", EventKind::NodePaused),
            (170.0, "cp-1", EventKind::NodeResumed),
        ];
        assert_eq!(with(&own, 175.0), vec![]);
    }

    #[test]
    fn a_server_that_left_is_no_obligation_and_one_that_joined_is() {
        // cp-1 knew etcd-1 and etcd-2; etcd-2 left, etcd-3 joined and cp-1 learned of it.
        let setup = |rejoin_at_s: f64| {
            let mut h = history();
            h.params.end_ns = 400_000_000_000;
            h.params.node_roles = [("cp-1", "control-plane-only"), ("etcd-1", "etcd-only")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            joined(&mut h, 5.0, "cp-1");
            let left = EventKind::ServerLeft { replaced_by: None };
            world(&mut h, 40.0, "etcd-2", left);
            let came = EventKind::ServerJoined {
                via: "etcd-1".into(),
                replacing: None,
            };
            world(&mut h, 50.0, "etcd-3", came);
            let known = vec!["cp-1".into(), "etcd-1".into(), "etcd-3".into()];
            let update = StoreEvent::ServersUpdated {
                via: "etcd-1".into(),
                known,
                lb: vec![],
            };
            store(&mut h, 55.0, "cp-1", update);
            world(&mut h, 90.0, "etcd-1", EventKind::NodeKilled);
            world(&mut h, 95.0, "cp-1", EventKind::NodeKilled);
            world(&mut h, 100.0, "cp-1", EventKind::NodeRestarted);
            world(&mut h, 300.0, "etcd-1", EventKind::NodeRestarted);
            joined(&mut h, rejoin_at_s, "cp-1");
            violations(h)
        };
        assert_eq!(setup(110.0), vec![], "rejoined through etcd-3");
        let late = setup(301.0);
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(
            late[0]
                .message
                .contains("etcd-3, a server it knew, became reachable at 100.000s"),
            "{late:?}"
        );
    }

    #[test]
    fn a_server_without_a_member_answers_only_once_it_joined_again() {
        // agent-1 knew cp-1 and etcd-1. etcd-1 is down from 90 s to 300 s; cp-1 restarts at
        // 99 s and can join only through etcd-1, at 301 s: only from then may it admit agent-1.
        // Both know only each other and etcd-1.
        let join = |h: &mut History, at_s: f64, node: &str, via: &str| {
            let known = vec!["cp-1".into(), "etcd-1".into()];
            let via = via.to_string();
            store(h, at_s, node, StoreEvent::Joined { via, known });
        };
        let setup = |rejoin_at_s: f64| {
            let mut h = history();
            h.params.end_ns = 500_000_000_000;
            h.params.node_roles = [
                ("agent-1", "agent"),
                ("cp-1", "control-plane-only"),
                ("etcd-1", "etcd-only"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            join(&mut h, 4.0, "cp-1", "etcd-1");
            join(&mut h, 5.0, "agent-1", "etcd-1");
            world(&mut h, 90.0, "etcd-1", EventKind::NodeKilled);
            world(&mut h, 95.0, "agent-1", EventKind::NodeKilled);
            world(&mut h, 96.0, "cp-1", EventKind::NodeKilled);
            world(&mut h, 99.0, "cp-1", EventKind::NodeRestarted);
            world(&mut h, 100.0, "agent-1", EventKind::NodeRestarted);
            world(&mut h, 300.0, "etcd-1", EventKind::NodeRestarted);
            join(&mut h, 301.0, "cp-1", "etcd-1");
            join(&mut h, rejoin_at_s, "agent-1", "cp-1");
            violations(h)
        };
        assert_eq!(setup(302.0), vec![], "cp-1 knew no cluster before 301 s");
        let late = setup(400.0);
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(
            late[0]
                .message
                .contains("a server it knew, became reachable at 300.000s"),
            "{late:?}"
        );
    }

    #[test]
    fn no_reachable_server_means_no_obligation() {
        let mut h = history();
        h.params.end_ns = 400_000_000_000;
        h.params.node_roles = [("cp-1".to_string(), "control-plane-only".to_string())].into();
        joined(&mut h, 5.0, "cp-1");
        world(&mut h, 90.0, "cp-1", EventKind::NodeKilled);
        world(
            &mut h,
            95.0,
            "world",
            EventKind::PartitionStarted {
                from: vec!["cp-1".into()],
                to: vec!["etcd-1".into(), "etcd-2".into()],
                one_way: true,
            },
        );
        world(&mut h, 100.0, "cp-1", EventKind::NodeRestarted);
        world(
            &mut h,
            200.0,
            "world",
            EventKind::PartitionHealed {
                from: vec!["cp-1".into()],
                to: vec!["etcd-1".into(), "etcd-2".into()],
                one_way: true,
            },
        );
        joined(&mut h, 205.0, "cp-1");
        let mut out = Violations::new();
        check(&h, &mut out);
        assert!(
            out.is_empty(),
            "a one-way cut still breaks the join's answer: {:?}",
            out.kept()
        );
    }
}

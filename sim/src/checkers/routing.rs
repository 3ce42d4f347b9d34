//! The routing half of etcd-only-rejoin, judged all the time (faults or not): a node's load
//! balancer must not keep routing to a failing server while another server it knows passes
//! (SEMANTICS.md section 4: connections to a server that turns unhealthy are closed; the default
//! server is used only when every other is failing; clients fail back once a preferred server
//! passes).
//!
//! A server fails for a node when the node's own health check of it last failed (unreachable, or
//! its apiserver not ready), or when the world cut it off from the node (killed, left, paused,
//! or partitioned from it). A server passes for a node when the node's last check of it passed and
//! the world has not cut it off since. A route that stays on a failing server, while one fixed
//! other server passes, for longer than the health-check bound (`lb_health_bound_ns`) is a
//! violation. While a node is down or paused it is not judged; after it starts again only what
//! it checked since counts, and after it resumes the bound starts afresh.

use super::rejoin_liveness::count_cuts;
use super::{secs, Violations};
use crate::history::{EventKind, History, SimNanos};
use std::collections::{BTreeMap, BTreeSet};
use store::observe::StoreEvent;

/// What a node's load balancer last did and saw.
#[derive(Default)]
struct Lb<'a> {
    route: Option<&'a str>,
    /// Server -> whether the node's last health check of it passed.
    checks: BTreeMap<&'a str, Check>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Passed,
    Unreachable,
    NotReady,
}

/// Who is down or paused and which directed links are cut, as the fault executor reported.
#[derive(Default)]
struct World<'a> {
    down: BTreeSet<&'a str>,
    /// A paused node checks nothing and answers nobody until it resumes.
    paused: BTreeSet<&'a str>,
    cuts: BTreeMap<(&'a str, &'a str), u32>,
}

impl<'a> World<'a> {
    fn apply(&mut self, node: &'a str, kind: &'a EventKind) {
        match kind {
            EventKind::NodeKilled | EventKind::ServerLeft { .. } => {
                self.down.insert(node);
                self.paused.remove(node);
            }
            EventKind::NodePaused => {
                self.paused.insert(node);
            }
            EventKind::NodeResumed => {
                self.paused.remove(node);
            }
            EventKind::NodeRestarted | EventKind::ServerJoined { .. } => {
                self.down.remove(node);
            }
            EventKind::PartitionStarted { from, to, one_way }
            | EventKind::PartitionHealed { from, to, one_way } => {
                let start = matches!(kind, EventKind::PartitionStarted { .. });
                count_cuts(&mut self.cuts, from, to, *one_way, start);
            }
            _ => {}
        }
    }

    /// Why `node` cannot check `server` now (a check needs both directions), if it cannot.
    fn cut_off(&self, node: &str, server: &str) -> Option<&'static str> {
        let cut = |a: &str, b: &str| self.cuts.get(&(a, b)).is_some_and(|c| *c > 0);
        if self.down.contains(server) {
            Some("down")
        } else if self.paused.contains(server) {
            Some("paused")
        } else if cut(node, server) || cut(server, node) {
            Some("partitioned from it")
        } else {
            None
        }
    }
}

/// One stretch where `node` routed to `bad` while `good` passed: (node, bad, good) -> since.
type Open<'a> = BTreeMap<(&'a str, &'a str, &'a str), (SimNanos, String)>;

/// Judges every node's route against its servers' health over the whole run; returns how many
/// node-time stretches of a failing route with a passing alternative it saw (violations or not).
pub fn check(h: &History, out: &mut Violations) -> u64 {
    let bound = h.params.lb_health_bound_ns;
    let end = h.params.end_ns;
    // Histories recorded before this rule carry no bound and no health checks.
    if bound == 0 || h.params.node_roles.is_empty() {
        return 0;
    }
    let mut world = World::default();
    let mut lbs: BTreeMap<&str, Lb<'_>> = BTreeMap::new();
    let mut open: Open<'_> = BTreeMap::new();
    let mut stretches = 0;
    let close = |out: &mut Violations,
                 key: (&str, &str, &str),
                 since: SimNanos,
                 why: &str,
                 until: SimNanos,
                 ended: bool| {
        if until.saturating_sub(since) <= bound {
            return;
        }
        let (node, bad, good) = key;
        out.fire(since + bound, || {
            let to = if ended {
                format!("the end of the run at {}", secs(until))
            } else {
                secs(until)
            };
            format!(
                "node {node}'s load balancer kept routing to {bad} ({why}) from {} to {to} ({}), while {good}, which it knows, passed its health checks and was reachable (health-check bound {})",
                secs(since),
                secs(until - since),
                secs(bound)
            )
        });
    };
    let mut i = 0;
    while i < h.events.len() {
        let at = h.events[i].at_ns;
        if at > end {
            break;
        }
        // Every event of one instant first: a check round's results and its route are recorded
        // at the same time.
        while i < h.events.len() && h.events[i].at_ns == at {
            let e = &h.events[i];
            let node = e.node.as_str();
            match &e.kind {
                EventKind::Store { event } => match event {
                    StoreEvent::LbRoute { server, .. } => {
                        lbs.entry(node).or_default().route = server.as_deref();
                    }
                    StoreEvent::LbHealth {
                        server,
                        reachable,
                        apiserver,
                        known,
                    } => {
                        let checks = &mut lbs.entry(node).or_default().checks;
                        if !known {
                            checks.remove(server.as_str());
                        } else {
                            let c = match (reachable, apiserver) {
                                (true, true) => Check::Passed,
                                (true, false) => Check::NotReady,
                                _ => Check::Unreachable,
                            };
                            checks.insert(server.as_str(), c);
                        }
                    }
                    _ => {}
                },
                kind => {
                    world.apply(node, kind);
                    // A node that stops forgets its route and its checks.
                    if matches!(kind, EventKind::NodeKilled | EventKind::ServerLeft { .. }) {
                        lbs.remove(node);
                    }
                }
            }
            i += 1;
        }
        let now = stuck(&lbs, &world);
        let ended: Vec<_> = open
            .keys()
            .filter(|k| !now.contains_key(*k))
            .copied()
            .collect();
        for key in ended {
            let (since, why) = open.remove(&key).expect("an open stretch");
            close(out, key, since, &why, at, false);
        }
        for (key, why) in now {
            open.entry(key).or_insert_with(|| {
                stretches += 1;
                (at, why)
            });
        }
    }
    for (key, (since, why)) in open {
        close(out, key, since, &why, end, true);
    }
    stretches
}

/// Every (node, routed server, passing other) where the routed server fails, with why it fails.
fn stuck<'a>(
    lbs: &BTreeMap<&'a str, Lb<'a>>,
    world: &World<'_>,
) -> BTreeMap<(&'a str, &'a str, &'a str), String> {
    let mut out = BTreeMap::new();
    for (&node, lb) in lbs {
        let Some(bad) = lb.route else { continue };
        // A paused node's load balancer cannot act; once it resumes, it gets the bound anew.
        if world.down.contains(node) || world.paused.contains(node) {
            continue;
        }
        let why = match (world.cut_off(node, bad), lb.checks.get(bad)) {
            (Some(w), _) => w.to_string(),
            (None, Some(Check::NotReady)) => "its apiserver not ready by the node's check".into(),
            (None, Some(Check::Unreachable)) => "unreachable by the node's check".into(),
            // Passing, or not checked yet since the node started.
            (None, Some(Check::Passed) | None) => continue,
        };
        for (&good, c) in &lb.checks {
            if good != bad && *c == Check::Passed && world.cut_off(node, good).is_none() {
                out.insert((node, bad, good), why.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::WorldEvent;

    /// Three servers; agent-1 routes to cp-1; every check passes at 1 s. Bound 2.5 s.
    fn cluster() -> History {
        let mut h = history();
        h.params.node_roles = [("cp-1", "server"), ("cp-2", "server"), ("agent-1", "agent")]
            .into_iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        h.params.lb_health_bound_ns = 2_500_000_000;
        h.params.end_ns = 100 * S;
        for s in ["cp-1", "cp-2"] {
            health(&mut h, 1.0, s, true, true);
        }
        route(&mut h, 1.0, "cp-1");
        h
    }

    fn health(h: &mut History, at_s: f64, server: &str, reachable: bool, apiserver: bool) {
        let event = StoreEvent::LbHealth {
            server: server.into(),
            reachable,
            apiserver,
            known: true,
        };
        store(h, at_s, "agent-1", event);
    }

    fn route(h: &mut History, at_s: f64, server: &str) {
        let event = StoreEvent::LbRoute {
            server: Some(server.into()),
            apiserver: true,
            reason: "test".into(),
        };
        store(h, at_s, "agent-1", event);
    }

    fn world(h: &mut History, at_s: f64, node: &str, kind: EventKind) {
        h.events.push(WorldEvent {
            at_ns: (at_s * 1e9) as u64,
            node: node.into(),
            kind,
        });
    }

    fn judge(mut h: History) -> Violations {
        h.events.sort_by_key(|e| e.at_ns);
        let mut out = Violations::new();
        check(&h, &mut out);
        out
    }

    fn first(v: &Violations) -> String {
        v.kept()
            .first()
            .map(|v| v.message.clone())
            .unwrap_or_default()
    }

    #[test]
    fn staying_on_a_not_ready_server_past_the_bound_fires() {
        let mut h = cluster();
        health(&mut h, 10.0, "cp-1", true, false);
        route(&mut h, 20.0, "cp-2");
        let v = judge(h);
        assert_eq!(v.kept().len(), 1, "{v:?}");
        assert_eq!(
            first(&v),
            "node agent-1's load balancer kept routing to cp-1 (its apiserver not ready by the node's check) from 10.000s to 20.000s (10.000s), while cp-2, which it knows, passed its health checks and was reachable (health-check bound 2.500s)"
        );
        assert_eq!(v.kept().first().unwrap().at_ns, 12_500_000_000);
    }

    #[test]
    fn moving_within_the_bound_passes() {
        let mut h = cluster();
        health(&mut h, 10.0, "cp-1", true, false);
        route(&mut h, 10.0, "cp-2");
        // Killed: the route may lag one round and a timeout behind the world.
        world(&mut h, 30.0, "cp-2", EventKind::NodeKilled);
        health(&mut h, 31.0, "cp-1", true, true);
        health(&mut h, 32.0, "cp-2", false, false);
        route(&mut h, 32.0, "cp-1");
        assert_eq!(judge(h.clone()).kept().len(), 0);
        // The same move a little later than the bound fires.
        h.events.retain(|e| e.at_ns < 32 * S);
        route(&mut h, 33.6, "cp-1");
        assert!(first(&judge(h)).contains("kept routing to cp-2 (down) from 31.000s to 33.600s"));
    }

    #[test]
    fn no_other_server_passing_passes() {
        let mut h = cluster();
        health(&mut h, 10.0, "cp-1", true, false);
        health(&mut h, 10.0, "cp-2", false, false);
        assert_eq!(judge(h).kept().len(), 0);
        // The other passes by the node's last check but the world cut it off.
        let mut h = cluster();
        health(&mut h, 10.0, "cp-1", true, false);
        world(
            &mut h,
            5.0,
            "cp-2",
            EventKind::PartitionStarted {
                from: vec!["agent-1".into()],
                to: vec!["cp-2".into()],
                one_way: true,
            },
        );
        assert_eq!(judge(h).kept().len(), 0);
    }

    #[test]
    fn a_killed_or_partitioned_route_fires_and_a_dropped_server_does_not_count() {
        let mut h = cluster();
        world(&mut h, 10.0, "cp-1", EventKind::NodeKilled);
        let v = judge(h);
        assert!(first(&v).contains("kept routing to cp-1 (down) from 10.000s to the end of the run at 100.000s (90.000s)"), "{v:?}");
        let mut h = cluster();
        let cut = |from: &str| EventKind::PartitionStarted {
            from: vec![from.into()],
            to: vec!["cp-1".into()],
            one_way: true,
        };
        world(&mut h, 10.0, "agent-1", cut("agent-1"));
        world(
            &mut h,
            15.0,
            "agent-1",
            EventKind::PartitionHealed {
                from: vec!["agent-1".into()],
                to: vec!["cp-1".into()],
                one_way: true,
            },
        );
        assert!(first(&judge(h)).contains("(partitioned from it) from 10.000s to 15.000s"));
        // The server lists dropped cp-2: it is no longer an alternative.
        let mut h = cluster();
        let dropped = StoreEvent::LbHealth {
            server: "cp-2".into(),
            reachable: false,
            apiserver: false,
            known: false,
        };
        store(&mut h, 9.0, "agent-1", dropped);
        health(&mut h, 10.0, "cp-1", false, false);
        assert_eq!(judge(h).kept().len(), 0);
    }

    #[test]
    fn a_node_that_restarts_is_judged_on_what_it_checked_since() {
        let mut h = cluster();
        world(&mut h, 10.0, "agent-1", EventKind::NodeKilled);
        // Down: nothing routes. Restarted: no route until its first round.
        world(&mut h, 40.0, "cp-1", EventKind::NodeKilled);
        world(&mut h, 50.0, "agent-1", EventKind::NodeRestarted);
        health(&mut h, 51.0, "cp-1", false, false);
        route(&mut h, 51.0, "cp-1");
        assert_eq!(judge(h.clone()).kept().len(), 0, "cp-2 not checked since");
        health(&mut h, 52.0, "cp-2", true, true);
        assert!(first(&judge(h)).contains("from 52.000s to the end"));
    }

    #[test]
    fn a_paused_node_is_not_judged_until_it_resumes_and_a_paused_server_fails() {
        let mut h = cluster();
        world(&mut h, 10.0, "agent-1", EventKind::NodePaused);
        world(&mut h, 11.0, "cp-1", EventKind::NodeKilled);
        world(&mut h, 40.0, "agent-1", EventKind::NodeResumed);
        route(&mut h, 42.0, "cp-2");
        assert_eq!(judge(h.clone()).kept().len(), 0);
        h.events.retain(|e| e.at_ns < 42 * S);
        route(&mut h, 43.0, "cp-2");
        assert!(first(&judge(h)).contains("(down) from 40.000s to 43.000s"));
        // Routed to a server that stays paused: it fails like a dead one.
        let mut h = cluster();
        world(&mut h, 10.0, "cp-1", EventKind::NodePaused);
        world(&mut h, 20.0, "cp-1", EventKind::NodeResumed);
        assert!(first(&judge(h)).contains("kept routing to cp-1 (paused) from 10.000s to 20.000s"));
    }

    #[test]
    fn without_a_bound_nothing_is_judged() {
        let mut h = cluster();
        h.params.lb_health_bound_ns = 0;
        health(&mut h, 10.0, "cp-1", true, false);
        assert_eq!(judge(h).kept().len(), 0);
    }
}

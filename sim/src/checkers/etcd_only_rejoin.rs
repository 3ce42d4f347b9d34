//! etcd-only-rejoin: after faults stop, every k3s node of an etcd topology finds its way back;
//! and all the time, faults or not, its load balancer leaves a failing server for a passing one
//! (the routing half, routing.rs).
//!
//! Within the rejoin bound every node's load balancer routes to a server that runs an apiserver
//! and stays there, every node is Ready at the end, and every etcd member has caught up. It reads
//! only the recorded history and params; it never judges a run without node roles.

use super::{secs, CheckReport, Checker, Violations};
use crate::history::{History, SimNanos};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub struct EtcdOnlyRejoin;

/// One node's load-balancer route: (time, server, whether it runs an apiserver).
type Route<'a> = (SimNanos, Option<&'a str>, bool);

/// What one node reported, in time order.
#[derive(Default)]
struct NodeLog<'a> {
    routes: Vec<Route<'a>>,
    last_renewed: Option<SimNanos>,
    renewed_after_faults: bool,
    /// The last failed renewal: (via, error).
    last_failure: Option<(Option<&'a str>, &'a str)>,
    last_waiting: Option<&'a [String]>,
}

impl Checker for EtcdOnlyRejoin {
    fn name(&self) -> &'static str {
        "etcd-only-rejoin"
    }

    fn meaning(&self) -> &'static str {
        "within the rejoin bound after faults stop, every node routes to a server with an apiserver and stays there, is Ready at the end, and every etcd member is caught up; a restarted node rejoins through any server it knew once one is reachable; a load balancer drops the servers the lists dropped; and at all times, faults or not, no load balancer keeps routing to a server failing its health check (apiserver not ready, or unreachable) while another it knows passes, for longer than the health-check bound"
    }

    fn check(&self, h: &History) -> CheckReport {
        let p = &h.params;
        let mut judge = Judge {
            faults_stop_ns: p.faults_stop_ns,
            end_ns: p.end_ns,
            bound: format!("bound {}", secs(p.rejoin_bound_ns)),
            out: Violations::new(),
        };
        if p.live {
            return CheckReport::not_applicable(
                self.name(),
                "live run: no k3s nodes, and their load balancers, node leases and members' catch-up are reported only from inside the simulation",
            );
        }
        if p.node_roles.is_empty() {
            return CheckReport::not_applicable(
                self.name(),
                "not an etcd topology: no k3s nodes to rejoin",
            );
        }
        let deadline = p.faults_stop_ns.saturating_add(p.rejoin_bound_ns);
        // A run too short to reach the bound is still judged, at its end, and says so.
        if p.end_ns < deadline {
            judge.bound += &format!(
                "; the run ended {} after faults stopped, before the bound",
                judge.after_faults(p.end_ns)
            );
        }
        let logs = node_logs(h);
        let empty = NodeLog::default();
        for (node, role) in &p.node_roles {
            let log = logs.get(node.as_str()).unwrap_or(&empty);
            let who = format!("node {node} ({role})");
            judge.route(&who, log, deadline.min(p.end_ns));
            judge.ready(&who, log, p.node_lease_grace_ns);
        }
        judge.members(h);
        judge.load_balancers(h);
        let restarts = super::rejoin_liveness::check(h, &mut judge.out);
        let stuck = super::routing::check(h, &mut judge.out);
        CheckReport::judged(
            self.name(),
            judge.out,
            vec![
                ("nodes", p.node_roles.len() as u64),
                ("members", p.members_final.len() as u64),
                ("restarts", restarts),
                ("failing routes with a passing alternative", stuck),
                // The bound every routing violation quotes, stated on a pass too.
                ("ms routing bound", p.lb_health_bound_ns / 1_000_000),
            ],
            "no k3s node in this run",
        )
    }
}

fn node_logs(h: &History) -> BTreeMap<&str, NodeLog<'_>> {
    let mut logs: BTreeMap<&str, NodeLog<'_>> = BTreeMap::new();
    for (at, node, e) in h.store_events() {
        // Whatever happened after the run's end was not part of what is judged.
        if at > h.params.end_ns {
            continue;
        }
        let log = logs.entry(node).or_default();
        match e {
            StoreEvent::LbRoute {
                server, apiserver, ..
            } => log.routes.push((at, server.as_deref(), *apiserver)),
            StoreEvent::NodeLeaseRenew { ok: true, .. } => {
                log.last_renewed = Some(at);
                log.renewed_after_faults |= at >= h.params.faults_stop_ns;
            }
            StoreEvent::NodeLeaseRenew {
                ok: false,
                via,
                error,
            } => log.last_failure = Some((via.as_deref(), error.as_str())),
            StoreEvent::ApiserverWaiting { failing, .. } => log.last_waiting = Some(failing),
            _ => {}
        }
    }
    logs
}

struct Judge {
    faults_stop_ns: SimNanos,
    end_ns: SimNanos,
    /// The bound as every message quotes it, so a reader can tell how late "late" is.
    bound: String,
    out: Violations,
}

impl Judge {
    fn fire(&mut self, at_ns: SimNanos, what: String) {
        let message = format!("{what} ({})", self.bound);
        self.out.fire(at_ns, || message);
    }

    fn after_faults(&self, at: SimNanos) -> String {
        secs(at.saturating_sub(self.faults_stop_ns))
    }

    /// From `judge_at` to the end the node's route must lead to an apiserver; the first moment
    /// it does not is the violation.
    fn route(&mut self, who: &str, log: &NodeLog<'_>, judge_at: SimNanos) {
        let Some(&(_, last_server, last_ok)) = log.routes.last() else {
            return self.fire(judge_at, format!("{who} never routed to any server"));
        };
        let settled = log.routes.partition_point(|r| r.0 <= judge_at);
        // The route in force at judge_at (none yet counts as wrong), then every later change.
        let in_force = match settled.checked_sub(1) {
            Some(i) => (judge_at, log.routes[i].1, log.routes[i].2),
            None => (judge_at, None, false),
        };
        let later = log.routes[settled..].iter().copied();
        let Some((at, server, _)) = std::iter::once(in_force).chain(later).find(|r| !r.2) else {
            return;
        };
        let target = match server {
            Some(s) => format!("still routes to {s}, which runs no apiserver,"),
            None => "has no server to route to".to_string(),
        };
        let still = if !last_ok && last_server == server {
            format!(
                ", and still at the end of the run ({} after)",
                self.after_faults(self.end_ns)
            )
        } else {
            String::new()
        };
        let since = self.after_faults(at);
        self.fire(
            at,
            format!("{who} {target} {since} after faults stopped{still}"),
        );
    }

    /// A Ready node renewed its lease since faults stopped, recently enough to be inside grace.
    fn ready(&mut self, who: &str, log: &NodeLog<'_>, grace_ns: SimNanos) {
        let end = self.end_ns;
        let fresh = |at: SimNanos| end.saturating_sub(at) <= grace_ns;
        if log.renewed_after_faults && log.last_renewed.is_some_and(fresh) {
            return;
        }
        let mut what = match log.last_renewed {
            None => format!("{who} is NotReady at the end of the run: never renewed its lease"),
            Some(at) => format!(
                "{who} is NotReady at the end of the run: last renewed its lease at {} ({} before the end; grace {}{})",
                secs(at),
                secs(end.saturating_sub(at)),
                secs(grace_ns),
                if log.renewed_after_faults { "" } else { ", and not since faults stopped" }
            ),
        };
        // Where it is stuck is what tells a routing bug from a dead apiserver.
        if let Some((via, error)) = log.last_failure {
            what += &format!("; last failure via {}: {error}", via.unwrap_or("no server"));
        }
        if let Some(failing) = log.last_waiting {
            what += &format!(
                "; last waiting for the apiserver on [{}]",
                failing.join(", ")
            );
        }
        self.fire(end, what);
    }

    /// A node's load balancer follows the server lists: a server the lists dropped (it left)
    /// is no longer probed or routed to. Judged at every update, faults or not.
    fn load_balancers(&mut self, h: &History) {
        for (at, node, e) in h.store_events() {
            let StoreEvent::ServersUpdated { known, lb, .. } = e else {
                continue;
            };
            if let Some(stale) = lb.iter().find(|s| !known.contains(s)) {
                self.out.fire(at, || {
                    format!("node {node}'s load balancer still knows {stale} after the server lists dropped it (lists: {known:?}, load balancer: {lb:?})")
                });
            }
        }
    }

    /// The audit runs after the quiet period, so every member must answer at the leader's
    /// revision.
    fn members(&mut self, h: &History) {
        let p = &h.params;
        let has_members = p
            .node_roles
            .values()
            .any(|r| r != "agent" && r != "control-plane-only");
        if p.members_final.is_empty() && has_members {
            self.fire(self.end_ns, "no member answered the final audit".into());
        }
        let reachable = p.members_final.iter().filter(|m| m.reachable);
        let highest = reachable.map(|m| m.revision).max().unwrap_or(0);
        for m in &p.members_final {
            let (id, node) = (m.member_id, &m.node);
            if !m.reachable {
                let what = format!("member {id:x} on {node} did not answer the final audit");
                self.fire(self.end_ns, what);
            } else if m.revision < highest {
                let what = format!(
                    "member {id:x} on {node} is at revision {}, the highest is {highest}",
                    m.revision
                );
                self.fire(self.end_ns, what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::MemberFinal;

    /// Faults stop at 100 s, the bound is 45 s, the run ends at 200 s, grace 40 s.
    fn cluster() -> History {
        let mut h = history();
        h.params.node_roles = [
            ("etcd-1", "etcd-only"),
            ("server-1", "server"),
            ("etcd-2", "etcd-only"),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
        h.params.faults_stop_ns = 100 * S;
        h.params.rejoin_bound_ns = 45 * S;
        h.params.node_lease_grace_ns = 40 * S;
        h.params.end_ns = 200 * S;
        h.params.members_final = ["etcd-1", "server-1", "etcd-2"]
            .iter()
            .enumerate()
            .map(|(i, n)| MemberFinal {
                node: n.to_string(),
                member_id: i as u64 + 1,
                reachable: true,
                revision: 50,
                applied_index: 60,
                leader: 2,
            })
            .collect();
        for node in ["etcd-1", "server-1", "etcd-2"] {
            route(&mut h, 1.0, node, "server-1", true);
            renew(&mut h, 190.0, node, true);
        }
        h
    }

    fn route(h: &mut History, at_s: f64, node: &str, server: &str, apiserver: bool) {
        let event = StoreEvent::LbRoute {
            server: Some(server.into()),
            apiserver,
            reason: "test".into(),
        };
        store(h, at_s, node, event);
    }

    fn renew(h: &mut History, at_s: f64, node: &str, ok: bool) {
        let event = StoreEvent::NodeLeaseRenew {
            via: Some("etcd-1".into()),
            ok,
            error: if ok {
                String::new()
            } else {
                "404 page not found".into()
            },
        };
        store(h, at_s, node, event);
    }

    fn sorted(mut h: History) -> History {
        h.events.sort_by_key(|e| e.at_ns);
        h
    }

    #[test]
    fn a_recovered_cluster_passes() {
        let r = EtcdOnlyRejoin.check(&sorted(cluster()));
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn without_node_roles_nothing_is_judged() {
        let mut h = cluster();
        h.params.node_roles.clear();
        route(&mut h, 150.0, "etcd-2", "etcd-1", false);
        assert!(EtcdOnlyRejoin.check(&sorted(h)).passed());
    }

    #[test]
    fn stuck_before_the_deadline_but_recovered_passes() {
        let mut h = cluster();
        route(&mut h, 60.0, "etcd-2", "etcd-1", false);
        route(&mut h, 130.0, "etcd-2", "server-1", true);
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn stuck_on_an_etcd_only_server_after_the_bound_fires() {
        let mut h = cluster();
        route(&mut h, 60.0, "etcd-2", "etcd-1", false);
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert_fires(&r, "node etcd-2 (etcd-only) still routes to etcd-1, which runs no apiserver, 45.000s after faults stopped, and still at the end");
        assert_eq!(r.first().unwrap().at_ns, 145 * S);
        // Going back to it after the deadline fires at that moment.
        let mut h = cluster();
        route(&mut h, 170.0, "etcd-2", "etcd-1", false);
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert_fires(&r, "70.000s after faults stopped");
        assert_eq!(r.first().unwrap().at_ns, 170 * S);
    }

    #[test]
    fn a_node_that_never_routed_fires() {
        let mut h = cluster();
        h.params.node_roles.insert("agent-1".into(), "agent".into());
        renew(&mut h, 190.0, "agent-1", true);
        assert_fires(
            &EtcdOnlyRejoin.check(&sorted(h)),
            "node agent-1 (agent) never routed",
        );
    }

    #[test]
    fn a_node_not_ready_at_the_end_fires() {
        let mut h = cluster();
        h.events.retain(|e| e.node != "etcd-2" || e.at_ns < 150 * S);
        renew(&mut h, 120.0, "etcd-2", true);
        renew(&mut h, 180.0, "etcd-2", false);
        store(
            &mut h,
            181.0,
            "etcd-2",
            StoreEvent::ApiserverWaiting {
                via: Some("etcd-1".into()),
                failing: vec!["etcd".into(), "informer-sync".into()],
            },
        );
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert_fires(&r, "node etcd-2 (etcd-only) is NotReady at the end of the run: last renewed its lease at 120.000s (80.000s before the end; grace 40.000s); last failure via etcd-1: 404 page not found; last waiting for the apiserver on [etcd, informer-sync]");
        // Renewals only before faults stopped do not count either.
        let mut h = cluster();
        h.params.node_lease_grace_ns = 1_000 * S;
        h.events
            .retain(|e| e.node != "server-1" || e.at_ns < 150 * S);
        renew(&mut h, 90.0, "server-1", true);
        assert_fires(
            &EtcdOnlyRejoin.check(&sorted(h)),
            "node server-1 (server) is NotReady",
        );
    }

    #[test]
    fn a_lagging_or_silent_member_fires() {
        let mut h = cluster();
        h.params.members_final[2].revision = 47;
        assert_fires(
            &EtcdOnlyRejoin.check(&h),
            "member 3 on etcd-2 is at revision 47, the highest is 50",
        );
        let mut h = cluster();
        h.params.members_final[0].reachable = false;
        h.params.members_final[0].revision = 0;
        let r = EtcdOnlyRejoin.check(&h);
        assert_fires(&r, "member 1 on etcd-1 did not answer");
        assert_eq!(r.total, 1, "{:?}", r.violations);
        let mut h = cluster();
        h.params.members_final.clear();
        assert_fires(
            &EtcdOnlyRejoin.check(&h),
            "no member answered the final audit",
        );
    }

    #[test]
    fn a_load_balancer_keeping_a_server_the_lists_dropped_fires() {
        let update = |lb: &[&str]| StoreEvent::ServersUpdated {
            via: "server-1".into(),
            known: vec!["etcd-1".into(), "server-1".into()],
            lb: lb.iter().map(|s| s.to_string()).collect(),
        };
        // The load balancer follows the lists: etcd-2 left and is gone from both.
        let mut h = cluster();
        store(&mut h, 120.0, "server-1", update(&["etcd-1"]));
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert!(r.passed(), "{:?}", r.violations);
        // It still holds etcd-2 after the lists dropped it.
        let mut h = cluster();
        store(&mut h, 120.0, "server-1", update(&["etcd-1", "etcd-2"]));
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert_fires(
            &r,
            "node server-1's load balancer still knows etcd-2 after the server lists dropped it",
        );
        assert_eq!(r.first().unwrap().at_ns, 120 * S);
    }

    #[test]
    fn a_run_ending_before_the_bound_is_judged_at_its_end() {
        let mut h = cluster();
        h.params.end_ns = 130 * S;
        h.events.retain(|e| e.at_ns <= 20 * S);
        for node in ["etcd-1", "server-1", "etcd-2"] {
            renew(&mut h, 125.0, node, true);
        }
        route(&mut h, 60.0, "etcd-2", "etcd-1", false);
        let r = EtcdOnlyRejoin.check(&sorted(h));
        assert_fires(&r, "before the bound");
        assert_eq!(r.first().unwrap().at_ns, 130 * S);
    }
}

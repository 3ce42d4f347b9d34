//! The k3s client load balancer (`pkg/agent/loadbalancer`) as a pure state machine.
//!
//! It owns a node's server list, the default (join) server, the last health verdict per server
//! and the current route, and says which servers' connections to close. It must never do I/O,
//! read the clock or await anything: the node's tasks feed it probes and act on its answers.

use crate::design::LbVariant;
use std::collections::BTreeMap;

/// What one health check of one server found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub reachable: bool,
    pub apiserver: bool,
}

pub struct LoadBalancer {
    variant: LbVariant,
    default_server: String,
    /// Known servers other than the default, in the supervisor's order: the order of preference.
    others: Vec<String>,
    /// Whether each server's last probe passed; absent until its first probe.
    verdicts: BTreeMap<String, bool>,
    current: Option<String>,
    /// The route is the default because every other server was seen failing: the state the
    /// k3s-11311 design never leaves while the default answers.
    fell_back: bool,
}

impl LoadBalancer {
    /// `default_server` is the join target; `servers` the known server list (may or may not
    /// contain the default; keep list order, dedupe).
    pub fn new(default_server: &str, servers: &[String], variant: LbVariant) -> Self {
        let mut lb = LoadBalancer {
            variant,
            default_server: default_server.to_string(),
            others: Vec::new(),
            verdicts: BTreeMap::new(),
            // The node joined through the default server, so that is where it starts.
            current: (!default_server.is_empty()).then(|| default_server.to_string()),
            fell_back: false,
        };
        lb.others = lb.others_of(servers);
        if lb.current.is_none() {
            lb.current = lb.others.first().cloned();
        }
        lb
    }

    /// Replaces the server list (from the supervisor, or the persisted file). Returns servers
    /// whose open connections must be closed now (removed servers, incl. the current one if
    /// removed). The default server always stays known.
    pub fn set_servers(&mut self, servers: &[String]) -> Vec<String> {
        let next = self.others_of(servers);
        let removed: Vec<String> = self
            .others
            .iter()
            .filter(|s| !next.contains(s))
            .cloned()
            .collect();
        if next != self.others {
            crate::probe!("k3s.lb.server_list_updated");
        }
        if !removed.is_empty() {
            crate::probe!("k3s.lb.server_removed");
        }
        for s in &removed {
            // A server that comes back later must prove itself again.
            self.verdicts.remove(s);
        }
        self.others = next;
        let mut close = removed;
        self.reroute(&mut close);
        close
    }

    /// Records one health check. Returns the servers whose connections must be closed now.
    pub fn record(&mut self, server: &str, probe: Probe) -> Vec<String> {
        // A probe started before the server was removed can finish after: nothing to judge.
        if !self.knows(server) {
            return Vec::new();
        }
        let passes = if server == self.default_server && self.variant == LbVariant::K3s11311 {
            // The bug: the default server's supervisor answers the check even when no apiserver
            // runs behind it, so an etcd-only join target looks healthy.
            probe.reachable
        } else {
            probe.apiserver
        };
        if probe.reachable && !probe.apiserver {
            crate::probe!("k3s.lb.server_reachable_not_ready");
        }
        let before = self.verdicts.insert(server.to_string(), passes);
        let mut close = Vec::new();
        // Clients routed to a server that turned bad must redial, not hang on dead connections;
        // a server never probed yet counts as good, since the node joined through it.
        if !passes && before != Some(false) && self.current.as_deref() == Some(server) {
            close.push(server.to_string());
        }
        self.reroute(&mut close);
        close
    }

    /// The server new connections go to now, or None when none is known. Deterministic.
    pub fn route(&self) -> Option<String> {
        self.current.clone()
    }

    /// Every known server, default included, in a stable order: what gets persisted.
    pub fn servers(&self) -> Vec<String> {
        let default = (!self.default_server.is_empty()).then(|| self.default_server.clone());
        default
            .into_iter()
            .chain(self.others.iter().cloned())
            .collect()
    }

    pub fn default_server(&self) -> &str {
        &self.default_server
    }

    /// The servers it knows besides its default (join) server, which it always keeps.
    pub fn others(&self) -> &[String] {
        &self.others
    }

    /// Whether the last probe of `server` passed (false when never probed).
    pub fn healthy(&self, server: &str) -> bool {
        self.verdicts.get(server) == Some(&true)
    }

    /// `servers` without the default and without repeats, first occurrence wins.
    fn others_of(&self, servers: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in servers {
            if !s.is_empty() && *s != self.default_server && !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    fn knows(&self, server: &str) -> bool {
        (!server.is_empty() && server == self.default_server)
            || self.others.iter().any(|s| s == server)
    }

    /// Recomputes the route after a change and adds the default server to `close` on fail-back.
    fn reroute(&mut self, close: &mut Vec<String>) {
        let before = self.current.clone();
        self.current = self.next_route();
        if before.is_some() && self.current.is_some() && before != self.current {
            crate::probe!("k3s.lb.fail_over");
        }
        let on_default = self.current.as_deref() == Some(self.default_server.as_str());
        if !on_default {
            self.fell_back = false;
        } else if !self.others.is_empty()
            && self
                .others
                .iter()
                .all(|s| self.verdicts.get(s) == Some(&false))
        {
            if !self.fell_back {
                crate::probe!("k3s.lb.fell_back_to_default");
            }
            self.fell_back = true;
        }
        let was_default = before.as_deref() == Some(self.default_server.as_str());
        if was_default && !on_default && !close.contains(&self.default_server) {
            // Fail-back: long-lived clients (watches, the kubelet) would otherwise stay on the
            // default server forever, since only new connections follow the route.
            crate::probe!("k3s.lb.fail_back_from_default");
            close.push(self.default_server.clone());
        }
        assert!(
            self.current.as_deref().is_none_or(|s| self.knows(s)),
            "load balancer routes to unknown server {:?}",
            self.current
        );
    }

    fn next_route(&self) -> Option<String> {
        let passes = |s: &str| self.healthy(s);
        let current = self.current.as_deref().filter(|s| self.knows(s));
        let default = self.default_server.as_str();
        if self.variant == LbVariant::K3s11311
            && self.fell_back
            && current == Some(default)
            && passes(default)
        {
            return current.map(str::to_string);
        }
        // Stick with a preferred server while it passes: moving would drop its connections.
        if let Some(c) = current.filter(|c| *c != default && passes(c)) {
            return Some(c.to_string());
        }
        if let Some(s) = self.others.iter().find(|s| passes(s)) {
            return Some(s.clone());
        }
        if !default.is_empty() && passes(default) {
            return Some(default.to_string());
        }
        // Nothing passes: dialing will fail wherever we point, so avoid needless churn.
        crate::probe!("k3s.lb.no_server_passes");
        current
            .or(self.others.first().map(String::as_str))
            .or((!default.is_empty()).then_some(default))
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Probe = Probe {
        reachable: true,
        apiserver: true,
    };
    const DOWN: Probe = Probe {
        reachable: false,
        apiserver: false,
    };
    /// An etcd-only server: its supervisor answers, but no apiserver runs.
    const ETCD_ONLY: Probe = Probe {
        reachable: true,
        apiserver: false,
    };

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn lb(variant: LbVariant) -> LoadBalancer {
        LoadBalancer::new("s0", &names(&["s1", "s0", "s2", "s1"]), variant)
    }

    #[test]
    fn starts_on_the_default_and_keeps_list_order_deduped() {
        let lb = lb(LbVariant::Fixed);
        assert_eq!(lb.route().as_deref(), Some("s0"));
        assert_eq!(lb.servers(), names(&["s0", "s1", "s2"]));
        assert!(!lb.healthy("s1"));
    }

    #[test]
    fn fixed_fails_over_to_the_next_server_and_uses_default_only_when_all_fail() {
        let mut lb = lb(LbVariant::Fixed);
        for s in ["s0", "s1", "s2"] {
            lb.record(s, UP);
        }
        assert_eq!(lb.route().as_deref(), Some("s1"));
        // The routed server dies: its connections close and the next one takes over.
        assert_eq!(lb.record("s1", DOWN), names(&["s1"]));
        assert_eq!(lb.route().as_deref(), Some("s2"));
        assert!(lb.record("s2", DOWN).contains(&"s2".to_string()));
        assert_eq!(lb.route().as_deref(), Some("s0"));
    }

    #[test]
    fn fixed_fails_back_and_closes_the_default() {
        let mut lb = lb(LbVariant::Fixed);
        lb.record("s0", UP);
        lb.record("s1", DOWN);
        lb.record("s2", DOWN);
        assert_eq!(lb.route().as_deref(), Some("s0"));
        assert_eq!(lb.record("s2", UP), names(&["s0"]));
        assert_eq!(lb.route().as_deref(), Some("s2"));
        // Sticky: a more preferred server passing later does not move the route.
        assert!(lb.record("s1", UP).is_empty());
        assert_eq!(lb.route().as_deref(), Some("s2"));
    }

    #[test]
    fn nothing_passing_keeps_the_route() {
        let mut lb = lb(LbVariant::Fixed);
        lb.record("s1", UP);
        assert_eq!(lb.route().as_deref(), Some("s1"));
        lb.record("s0", DOWN);
        lb.record("s2", DOWN);
        assert_eq!(lb.record("s1", DOWN), names(&["s1"]));
        assert_eq!(lb.route().as_deref(), Some("s1"));
        // Already failing: no second close.
        assert!(lb.record("s1", DOWN).is_empty());
    }

    #[test]
    fn removed_servers_are_closed_and_forgotten() {
        let mut lb = lb(LbVariant::Fixed);
        lb.record("s1", UP);
        lb.record("s2", UP);
        assert_eq!(lb.route().as_deref(), Some("s1"));
        let close = lb.set_servers(&names(&["s2", "s3"]));
        assert_eq!(close, names(&["s1"]));
        assert_eq!(lb.route().as_deref(), Some("s2"));
        assert_eq!(lb.servers(), names(&["s0", "s2", "s3"]));
        assert!(!lb.healthy("s1"));
        // A late probe of a removed server changes nothing.
        assert!(lb.record("s1", UP).is_empty());
        // The default cannot be removed.
        lb.set_servers(&[]);
        assert_eq!(lb.servers(), names(&["s0"]));
        assert_eq!(lb.route().as_deref(), Some("s0"));
    }

    #[test]
    fn a_server_that_joined_is_probed_and_used_once_it_passes() {
        let mut lb = lb(LbVariant::Fixed);
        lb.record("s0", UP);
        lb.record("s1", DOWN);
        lb.record("s2", DOWN);
        assert_eq!(lb.route().as_deref(), Some("s0"));
        assert!(lb.set_servers(&names(&["s1", "s2", "s3"])).is_empty());
        assert_eq!(lb.servers(), names(&["s0", "s1", "s2", "s3"]));
        assert_eq!(
            lb.route().as_deref(),
            Some("s0"),
            "not before it passed a check"
        );
        assert_eq!(
            lb.record("s3", UP),
            names(&["s0"]),
            "fail back to the new server"
        );
        assert_eq!(lb.route().as_deref(), Some("s3"));
    }

    /// The k3s 11311 outage: joined through etcd-only s0, every control-plane server goes down,
    /// then comes back.
    fn outage(variant: LbVariant) -> LoadBalancer {
        let mut lb = lb(variant);
        lb.record("s0", ETCD_ONLY);
        lb.record("s1", UP);
        lb.record("s2", UP);
        assert_eq!(lb.route().as_deref(), Some("s1"));
        lb.record("s1", DOWN);
        lb.record("s2", DOWN);
        lb.record("s0", ETCD_ONLY);
        lb.record("s1", UP);
        lb.record("s2", UP);
        lb
    }

    #[test]
    fn k3s_11311_stays_on_an_etcd_only_default_after_the_outage() {
        let mut lb = outage(LbVariant::K3s11311);
        assert!(lb.healthy("s0"));
        assert_eq!(lb.route().as_deref(), Some("s0"));
        lb.record("s0", ETCD_ONLY);
        assert_eq!(lb.route().as_deref(), Some("s0"));
        // It leaves only once the default itself stops answering.
        assert_eq!(lb.record("s0", DOWN), names(&["s0"]));
        assert_eq!(lb.route().as_deref(), Some("s1"));
    }

    #[test]
    fn fixed_leaves_an_etcd_only_default_after_the_outage() {
        let lb = outage(LbVariant::Fixed);
        assert!(!lb.healthy("s0"));
        assert_eq!(lb.route().as_deref(), Some("s1"));
    }
}

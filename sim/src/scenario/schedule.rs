//! A fault schedule as data: every fault one run injects, as `faultline run --write-schedule`
//! writes it and `--schedule` (or a scenario's `[schedule]` table) replays it instead of drawing.
//!
//! Only the format and its checks live here (times finite, names allowed, nodes in the
//! topology); `faults::replay` turns it into what the world carries out. Compaction failures and
//! member crashes are named by where they happen (server, start, tick, batch), never by the
//! order in which the seed drew them, so a schedule survives edits and code changes.

use super::{Scenario, TopologyKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The seed it was drawn from: the run's seed when `--seed` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The fault rates the seed drew (swarm mix), for the report; replay draws nothing from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kills: Vec<Kill>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<Pause>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compaction_failures: Vec<CompactionFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_crashes: Vec<MemberCrash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership: Vec<MembershipChange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub partitions_per_min: f64,
    pub kills_per_min: f64,
    pub compact_failure_probability: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pauses_per_min: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Messages from every node of `from` to every node of `to` are dropped (both ways unless
/// `one_way`) from `start_s` for `duration_s` simulated seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The partition kind it was drawn as (`faults.partition_kinds`), for people.
    pub kind: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    #[serde(default)]
    pub one_way: bool,
    pub start_s: f64,
    pub duration_s: f64,
}

/// `nodes` go down together at `at_s` and come back after `downtime_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// The kill role it was drawn as (`faults.kill_roles`), for people.
    pub role: String,
    pub nodes: Vec<String>,
    pub at_s: f64,
    pub downtime_s: f64,
    /// etcd topology: the torn last write each node's disk gets when it restarts (a hex number
    /// choosing where the write is cut); a node not named loses its unsynced writes whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub torn_writes: BTreeMap<String, String>,
}

/// `node`'s tasks and timers stop at `at_s` for `duration_s` simulated seconds, then it goes on
/// as it was. A node down at `at_s` is not paused; a kill during the pause ends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// The pause role it was drawn as (`faults.pause_roles`), for people.
    pub role: String,
    pub node: String,
    pub at_s: f64,
    pub duration_s: f64,
}

/// The `batch`-th batch (from 1) of the `tick`-th tick (from 1) of `server`'s compactor in its
/// `start`-th start (1: before any restart) fails with `kind`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionFailure {
    pub server: String,
    pub start: u32,
    pub tick: u64,
    pub batch: u64,
    pub kind: String,
}

/// `member` dies the `occurrence`-th time (from 1) it reaches crash `point` in its `start`-th
/// start; its node restarts 3 s later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberCrash {
    pub member: String,
    pub start: u32,
    pub point: String,
    pub occurrence: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn_write: Option<String>,
}

/// A server joins (`join`, with `role` and `via`), leaves (`leave`), or is replaced (both).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipChange {
    pub at_s: f64,
    /// `join`, `leave` or `replace`.
    pub change: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// The joiner's role: `server` or `etcd-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The member the joiner joins through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

pub const COMPACTION_KINDS: &[&str] = &["database-locked", "timeout", "reply-lost"];
pub const CRASH_POINTS: &[&str] = &["compact-before-finished"];

impl Schedule {
    /// Whether it holds no fault at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many faults it holds (partitions, kills, pauses, compaction failures, member crashes
    /// and membership changes), as shrinking counts them.
    pub fn len(&self) -> usize {
        self.partitions.len()
            + self.kills.len()
            + self.pauses.len()
            + self.compaction_failures.len()
            + self.member_crashes.len()
            + self.membership.len()
    }

    /// The servers that join during the run.
    pub fn joiners(&self) -> impl Iterator<Item = &str> {
        self.membership.iter().filter_map(|m| m.join.as_deref())
    }
}

/// Every node a run of `s` has (servers that join under `schedule` included): the names a
/// schedule may use.
pub fn node_names(s: &Scenario, schedule: &Schedule) -> Vec<String> {
    let t = &s.topology;
    let mut out = Vec::new();
    let mut add = |prefix: &str, n: u32| out.extend((1..=n).map(|i| format!("{prefix}-{i}")));
    if t.kind == TopologyKind::Etcd {
        add("server", t.servers);
        add("etcd", t.etcd_only);
        add("cp", t.control_plane_only);
        add("agent", t.agents);
    } else {
        add("kine", t.servers);
    }
    add("client", t.clients);
    add("watcher", s.workload.watchers);
    add("controller", s.controllers.count);
    add("lease-client", s.workload.lease_clients);
    if t.kind == TopologyKind::Ha {
        out.push("db".into());
    }
    out.extend(schedule.joiners().map(String::from));
    out
}

type Problem = (String, String);

fn time_ok(field: String, t: f64) -> Result<(), Problem> {
    if t.is_finite() && t >= 0.0 {
        Ok(())
    } else {
        Err((
            field,
            format!("{t} is not a time: seconds, finite, 0 or more"),
        ))
    }
}

fn one_of(field: String, v: &str, allowed: &[&str]) -> Result<(), Problem> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err((
            field,
            format!("unknown value `{v}`; allowed: {}", allowed.join(", ")),
        ))
    }
}

fn tear_ok(field: String, tear: &str) -> Result<(), Problem> {
    u64::from_str_radix(tear, 16).map(|_| ()).map_err(|_| {
        (
            field,
            format!("`{tear}` is not a torn write: a hex number such as \"9f3a0c\""),
        )
    })
}

/// Checks `schedule` against the run it is for. `at` prefixes every field (`schedule.` for a
/// scenario's own table, empty for a schedule file).
pub fn validate(schedule: &Schedule, s: &Scenario, at: &str) -> Result<(), Problem> {
    let names = node_names(s, schedule);
    let known = |field: String, n: &str| -> Result<(), Problem> {
        if names.iter().any(|k| k == n) {
            Ok(())
        } else {
            Err((
                field,
                format!(
                    "`{n}` is not a node of scenario `{}`; its nodes: {}",
                    s.name,
                    names.join(", ")
                ),
            ))
        }
    };
    for (i, p) in schedule.partitions.iter().enumerate() {
        let f = |name: &str| format!("{at}partitions[{i}].{name}");
        time_ok(f("start_s"), p.start_s)?;
        time_ok(f("duration_s"), p.duration_s)?;
        for (side, nodes) in [("from", &p.from), ("to", &p.to)] {
            if nodes.is_empty() {
                return Err((f(side), "names no node".into()));
            }
            for n in nodes {
                known(f(side), n)?;
            }
        }
    }
    for (i, k) in schedule.kills.iter().enumerate() {
        let f = |name: &str| format!("{at}kills[{i}].{name}");
        time_ok(f("at_s"), k.at_s)?;
        time_ok(f("downtime_s"), k.downtime_s)?;
        if k.nodes.is_empty() {
            return Err((f("nodes"), "names no node".into()));
        }
        for n in &k.nodes {
            known(f("nodes"), n)?;
        }
        for (n, tear) in &k.torn_writes {
            if !k.nodes.contains(n) {
                return Err((
                    f("torn_writes"),
                    format!("`{n}` is not one of this kill's nodes"),
                ));
            }
            tear_ok(f("torn_writes"), tear)?;
        }
    }
    for (i, p) in schedule.pauses.iter().enumerate() {
        let f = |name: &str| format!("{at}pauses[{i}].{name}");
        time_ok(f("at_s"), p.at_s)?;
        time_ok(f("duration_s"), p.duration_s)?;
        known(f("node"), &p.node)?;
    }
    for (i, c) in schedule.compaction_failures.iter().enumerate() {
        let f = |name: &str| format!("{at}compaction_failures[{i}].{name}");
        known(f("server"), &c.server)?;
        one_of(f("kind"), &c.kind, COMPACTION_KINDS)?;
        for (name, v) in [
            ("start", c.start as u64),
            ("tick", c.tick),
            ("batch", c.batch),
        ] {
            if v == 0 {
                return Err((f(name), "counts from 1".into()));
            }
        }
    }
    for (i, c) in schedule.member_crashes.iter().enumerate() {
        let f = |name: &str| format!("{at}member_crashes[{i}].{name}");
        known(f("member"), &c.member)?;
        one_of(f("point"), &c.point, CRASH_POINTS)?;
        if c.start == 0 || c.occurrence == 0 {
            return Err((f("start"), "start and occurrence count from 1".into()));
        }
        if let Some(t) = &c.torn_write {
            tear_ok(f("torn_write"), t)?;
        }
    }
    if !schedule.membership.is_empty() && s.topology.kind != TopologyKind::Etcd {
        return Err((
            format!("{at}membership"),
            "servers join and leave only in an etcd topology".into(),
        ));
    }
    for (i, m) in schedule.membership.iter().enumerate() {
        let f = |name: &str| format!("{at}membership[{i}].{name}");
        time_ok(f("at_s"), m.at_s)?;
        one_of(f("change"), &m.change, &["join", "leave", "replace"])?;
        let joins = m.change != "leave";
        let leaves = m.change != "join";
        if joins != m.join.is_some() || leaves != m.leave.is_some() {
            return Err((
                f("change"),
                "a join names `join`, `role` and `via`; a leave names `leave`; a replace all four"
                    .into(),
            ));
        }
        if joins {
            let role = m.role.as_deref().unwrap_or("");
            one_of(f("role"), role, &["server", "etcd-only"])?;
            known(f("via"), m.via.as_deref().unwrap_or(""))?;
        }
        if let Some(l) = &m.leave {
            known(f("leave"), l)?;
        }
    }
    Ok(())
}

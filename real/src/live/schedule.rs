//! A live run's faults as data: drawn from a seed, written as TOML, read back and replayed
//! (`--schedule`): the same faults at the same offsets from the run's start. The run itself is
//! not deterministic (real processes, real time); the schedule is.
//!
//! The tables and their fields are the simulator's (`sim/src/scenario/schedule.rs`):
//! `[[partitions]]` (`kind`, `from`, `to`, `one_way`, `start_s`, `duration_s`), `[[kills]]`
//! (`role`, `nodes`, `at_s`, `downtime_s`) and `[[pauses]]` (`role`, `node`, `at_s`,
//! `duration_s`), with offsets in real seconds; nodes are `n1`..`nN` and clients `c1`..`cM`.
//! Live mode adds `[compaction]` (`interval_s`, `edge_every`): the compactor's rhythm, which a
//! replay keeps.
//!
//! Partition kinds: `symmetric` (one member cut off from the other members, both ways),
//! `one-way` (one member's messages to the others lost, or theirs to it), `minority` (a
//! minority of members cut off from the other members and from every client, both ways),
//! `clients` (every client cut off from one member, both ways).

use super::input::{self, InputError};
use super::network::Endpoint;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const PARTITION_KINDS: [&str; 4] = ["symmetric", "one-way", "minority", "clients"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The rates the seed drew from, for people; replay draws nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kills: Vec<Kill>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<Pause>,
    /// The compactor's rhythm, as the apiserver compacts (and an operator at a delete's
    /// revision); a replay keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Compaction>,
}

/// A Compact through the etcd API every `interval_s` seconds from the run's start; every
/// `edge_every`-th at a delete's revision (0: never).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compaction {
    pub interval_s: f64,
    #[serde(default)]
    pub edge_every: u32,
}

/// Faults per minute of run, for the draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub partitions_per_min: f64,
    pub kills_per_min: f64,
    pub pauses_per_min: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            partitions_per_min: 4.0,
            kills_per_min: 2.0,
            pauses_per_min: 2.0,
        }
    }
}

/// Bytes from every endpoint of `from` to every endpoint of `to` are held (both ways unless
/// `one_way`) from `start_s` for `duration_s` seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub kind: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    #[serde(default)]
    pub one_way: bool,
    pub start_s: f64,
    pub duration_s: f64,
}

/// `nodes` are SIGKILLed together at `at_s` and started again on their data folders after
/// `downtime_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    pub role: String,
    pub nodes: Vec<String>,
    pub at_s: f64,
    pub downtime_s: f64,
}

/// `node` is SIGSTOPped at `at_s` and SIGCONTed `duration_s` later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub role: String,
    pub node: String,
    pub at_s: f64,
    pub duration_s: f64,
}

/// The names of a run's endpoints: nodes `n1`.., clients `c1`...
pub fn endpoint(name: &str, nodes: usize, clients: usize) -> Option<Endpoint> {
    let (kind, n) = name.split_at(1.min(name.len()));
    let i: usize = n.parse().ok().filter(|&i| i >= 1)?;
    match kind {
        "n" if i <= nodes => Some(Endpoint::Member(i - 1)),
        "c" if i <= clients => Some(Endpoint::Client(i - 1)),
        _ => None,
    }
}

/// The name of an endpoint, as schedules write it.
pub fn name(e: Endpoint) -> String {
    match e {
        Endpoint::Member(i) => format!("n{}", i + 1),
        Endpoint::Client(i) => format!("c{}", i + 1),
        Endpoint::Unknown => "unknown".to_string(),
    }
}

impl Partition {
    /// The directed links it cuts.
    pub fn links(&self, nodes: usize, clients: usize) -> Vec<(Endpoint, Endpoint)> {
        let resolve = |names: &[String]| -> Vec<Endpoint> {
            names
                .iter()
                .filter_map(|n| endpoint(n, nodes, clients))
                .collect()
        };
        let (from, to) = (resolve(&self.from), resolve(&self.to));
        let mut links = Vec::new();
        for &f in &from {
            for &t in &to {
                links.push((f, t));
                if !self.one_way {
                    links.push((t, f));
                }
            }
        }
        links
    }
}

/// A draw in `[lo, hi)` seconds, to the millisecond so the file reads back exactly.
fn seconds(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    (rng.gen_range(lo..hi) * 1000.0).round() / 1000.0
}

/// Offsets of a Poisson process of `per_min` in `[1, end)` seconds.
fn arrivals(rng: &mut StdRng, per_min: f64, end: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if per_min <= 0.0 {
        return out;
    }
    let mut t = 1.0;
    loop {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        t += -u.ln() * 60.0 / per_min;
        if t >= end {
            return out;
        }
        out.push((t * 1000.0).round() / 1000.0);
    }
}

impl Schedule {
    /// Faults for a run of `duration_s` seconds against `nodes` nodes and `clients` clients,
    /// drawn from `seed`. Every fault ends a second before the run does. Process faults (kills,
    /// pauses) never overlap one another, so at most one node is down or stopped at a time;
    /// partitions may overlap anything.
    pub fn draw(seed: u64, mix: &Mix, nodes: usize, clients: usize, duration_s: f64) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let end = (duration_s - 1.0).max(1.0);
        let members: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let client_names: Vec<String> = (1..=clients).map(|i| format!("c{i}")).collect();
        let mut schedule = Schedule {
            seed: Some(seed),
            mix: Some(mix.clone()),
            ..Schedule::default()
        };
        let kinds: Vec<&str> = PARTITION_KINDS
            .into_iter()
            .filter(|k| match *k {
                "clients" => clients > 0,
                _ => nodes >= 2,
            })
            .collect();
        for start in arrivals(&mut rng, mix.partitions_per_min, end - 1.0) {
            let Some(&kind) = kinds.choose(&mut rng) else {
                break;
            };
            let duration = seconds(&mut rng, 2.0, 8.0).min(end - start);
            let mut shuffled = members.clone();
            shuffled.shuffle(&mut rng);
            let (from, to, one_way) = match kind {
                "symmetric" => (shuffled[..1].to_vec(), shuffled[1..].to_vec(), false),
                "one-way" if rng.gen_bool(0.5) => {
                    (shuffled[..1].to_vec(), shuffled[1..].to_vec(), true)
                }
                "one-way" => (shuffled[1..].to_vec(), shuffled[..1].to_vec(), true),
                "minority" => {
                    let k = ((nodes - 1) / 2).max(1);
                    let mut to = shuffled[k..].to_vec();
                    to.extend(client_names.iter().cloned());
                    (shuffled[..k].to_vec(), to, false)
                }
                _ => (client_names.clone(), shuffled[..1].to_vec(), false),
            };
            schedule.partitions.push(Partition {
                kind: kind.to_string(),
                from,
                to,
                one_way,
                start_s: start,
                duration_s: duration,
            });
        }
        // Kills and pauses drawn on one timeline, each starting after the previous one ended.
        let mut process = Vec::new();
        process.extend(
            arrivals(&mut rng, mix.kills_per_min, end - 1.0)
                .into_iter()
                .map(|t| (t, true)),
        );
        process.extend(
            arrivals(&mut rng, mix.pauses_per_min, end - 1.0)
                .into_iter()
                .map(|t| (t, false)),
        );
        process.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut free_at = 0.0;
        for (at, kill) in process {
            if at < free_at {
                continue;
            }
            let length = seconds(&mut rng, 1.0, 5.0).min(end - at);
            let node = members[rng.gen_range(0..nodes)].clone();
            if kill {
                schedule.kills.push(Kill {
                    role: "member".to_string(),
                    nodes: vec![node],
                    at_s: at,
                    downtime_s: length,
                });
            } else {
                schedule.pauses.push(Pause {
                    role: "member".to_string(),
                    node,
                    at_s: at,
                    duration_s: length,
                });
            }
            // A second for the node to come back before the next process fault.
            free_at = at + length + 1.0;
        }
        schedule
    }

    /// The schedule as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a schedule serializes")
    }

    /// Writes it to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml())
    }

    /// Reads the schedule at `path` and checks it against a run of `nodes` nodes and `clients`
    /// clients: names known, times finite and not negative, partition kinds known.
    pub fn load(path: &Path, nodes: usize, clients: usize) -> Result<Schedule, InputError> {
        let text = input::read(path)?;
        Schedule::parse(path, &text, nodes, clients)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        nodes: usize,
        clients: usize,
    ) -> Result<Schedule, InputError> {
        let schedule: Schedule = input::parse(path, text)?;
        // The line of the n-th `[[table]]` header, for errors in its fields.
        let header_line = |table: &str, n: usize| -> usize {
            let header = format!("[[{table}]]");
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.trim() == header)
                .nth(n)
                .map_or(1, |(i, _)| i + 1)
        };
        let bad = |table: &str, n: usize, field: &str, message: String| {
            InputError::new(
                path,
                header_line(table, n),
                format!("{table}[{n}].{field}"),
                message,
            )
        };
        let known = |table: &str, n: usize, field: &str, names: &[String]| match names
            .iter()
            .find(|x| endpoint(x, nodes, clients).is_none())
        {
            Some(x) => Err(bad(
                table,
                n,
                field,
                format!(
                    "unknown {x:?}; this run has nodes n1..n{nodes} and clients c1..c{clients}"
                ),
            )),
            None => Ok(()),
        };
        let time = |table: &str, n: usize, field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(
                    table,
                    n,
                    field,
                    format!("{v}; must be a finite number of seconds, 0 or more"),
                ))
            }
        };
        if let Some(c) = &schedule.compaction {
            if !(c.interval_s.is_finite() && c.interval_s > 0.0) {
                let line = text
                    .lines()
                    .position(|l| l.trim() == "[compaction]")
                    .map_or(1, |i| i + 1);
                return Err(InputError::new(
                    path,
                    line,
                    "compaction.interval_s",
                    format!("{}; must be a positive number of seconds", c.interval_s),
                ));
            }
        }
        for (n, p) in schedule.partitions.iter().enumerate() {
            if !PARTITION_KINDS.contains(&p.kind.as_str()) {
                return Err(bad(
                    "partitions",
                    n,
                    "kind",
                    format!("{:?}; allowed: {}", p.kind, PARTITION_KINDS.join(", ")),
                ));
            }
            known("partitions", n, "from", &p.from)?;
            known("partitions", n, "to", &p.to)?;
            time("partitions", n, "start_s", p.start_s)?;
            time("partitions", n, "duration_s", p.duration_s)?;
        }
        for (n, k) in schedule.kills.iter().enumerate() {
            known("kills", n, "nodes", &k.nodes)?;
            if let Some(c) = k.nodes.iter().find(|x| x.starts_with('c')) {
                return Err(bad(
                    "kills",
                    n,
                    "nodes",
                    format!("{c:?} is a client; only nodes are killed"),
                ));
            }
            time("kills", n, "at_s", k.at_s)?;
            time("kills", n, "downtime_s", k.downtime_s)?;
        }
        for (n, p) in schedule.pauses.iter().enumerate() {
            known("pauses", n, "node", std::slice::from_ref(&p.node))?;
            if p.node.starts_with('c') {
                return Err(bad(
                    "pauses",
                    n,
                    "node",
                    format!("{:?} is a client; only nodes are paused", p.node),
                ));
            }
            time("pauses", n, "at_s", p.at_s)?;
            time("pauses", n, "duration_s", p.duration_s)?;
        }
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_schedule_reads_back_the_same() {
        let mix = Mix {
            partitions_per_min: 6.0,
            kills_per_min: 6.0,
            pauses_per_min: 6.0,
        };
        let s = Schedule::draw(7, &mix, 3, 2, 120.0);
        assert!(
            !s.partitions.is_empty() && !s.kills.is_empty() && !s.pauses.is_empty(),
            "{s:?}"
        );
        let back = Schedule::parse(Path::new("s.toml"), &s.to_toml(), 3, 2).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            Schedule::draw(7, &mix, 3, 2, 120.0),
            s,
            "same seed, same faults"
        );
        assert_ne!(Schedule::draw(8, &mix, 3, 2, 120.0), s);
    }

    #[test]
    fn process_faults_never_overlap_and_end_before_the_run() {
        for seed in 0..50 {
            let s = Schedule::draw(seed, &Mix::default(), 3, 1, 60.0);
            let mut spans: Vec<(f64, f64)> = s
                .kills
                .iter()
                .map(|k| (k.at_s, k.at_s + k.downtime_s))
                .collect();
            spans.extend(s.pauses.iter().map(|p| (p.at_s, p.at_s + p.duration_s)));
            spans.sort_by(|a, b| a.0.total_cmp(&b.0));
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "seed {seed}: {w:?}");
            }
            assert!(spans.iter().all(|s| s.1 <= 59.0 + 1e-9), "seed {seed}");
            assert!(s
                .partitions
                .iter()
                .all(|p| p.start_s + p.duration_s <= 59.0 + 1e-9));
        }
    }

    #[test]
    fn a_single_node_gets_only_client_partitions() {
        let s = Schedule::draw(
            3,
            &Mix {
                partitions_per_min: 20.0,
                ..Mix::default()
            },
            1,
            1,
            60.0,
        );
        assert!(!s.partitions.is_empty());
        assert!(s.partitions.iter().all(|p| p.kind == "clients"));
    }

    #[test]
    fn links_follow_direction() {
        let p = Partition {
            kind: "one-way".into(),
            from: vec!["n1".into()],
            to: vec!["n2".into(), "c1".into()],
            one_way: true,
            start_s: 0.0,
            duration_s: 1.0,
        };
        assert_eq!(
            p.links(3, 1),
            [
                (Endpoint::Member(0), Endpoint::Member(1)),
                (Endpoint::Member(0), Endpoint::Client(0))
            ]
        );
    }

    #[test]
    fn an_unknown_node_names_its_table_line_and_field() {
        let text = "seed = 1\n\n[[kills]]\nrole = \"member\"\nnodes = [\"n1\"]\nat_s = 1.0\ndowntime_s = 1.0\n\n[[kills]]\nrole = \"member\"\nnodes = [\"n9\"]\nat_s = 3.0\ndowntime_s = 1.0\n";
        let e = Schedule::parse(Path::new("s.toml"), text, 3, 1).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (9, "kills[1].nodes"), "{e}");
        let e = Schedule::parse(
            Path::new("s.toml"),
            "[[pauses]]\nrole = \"m\"\nnode = \"n1\"\nat_s = 1.0\n",
            3,
            1,
        )
        .unwrap_err();
        assert_eq!(e.field, "duration_s", "{e}");
    }
}

//! Scenario files: what cluster to build, what load to drive and which faults to draw.
//!
//! A scenario is TOML. Every table rejects unknown fields so a misspelt key is an error that
//! names the file, line and field, never a silently ignored setting. Loading validates ranges
//! too; nothing downstream needs to re-check them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; results go to `<out>/<name>/seed-<N>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds of workload with faults.
    pub duration_s: u64,
    /// Simulated seconds of workload without faults at the end, so liveness can be judged.
    pub quiet_s: u64,
    pub topology: Topology,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub kine: Kine,
    #[serde(default)]
    pub network: Network,
    pub workload: Workload,
    #[serde(default)]
    pub faults: Faults,
    /// Design selections, area = variant (for example `compactor = "kine-357"`).
    #[serde(default)]
    pub design: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyKind {
    /// One kine server with its SQLite database on the same node.
    Single,
    /// Several kine servers sharing one database node over the network.
    Ha,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub kind: TopologyKind,
    /// Kine servers (1 for single; 1 to 5 for ha).
    pub servers: u32,
    /// Client nodes driving the workload.
    pub clients: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite` (ids visible in commit order). `mysql-like` is reserved for the watch issue.
    pub dialect: String,
    /// Simulated time one database transaction takes, drawn per transaction.
    pub latency_ms: [u64; 2],
}

impl Default for Database {
    fn default() -> Self {
        Database {
            dialect: "sqlite".into(),
            latency_ms: [1, 3],
        }
    }
}

/// kine's compactor settings (SEMANTICS.md section 2), with kine's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kine {
    pub compact_interval_s: u64,
    /// Up to this percentage of the interval is added to each wait, drawn per tick.
    pub compact_interval_jitter_pct: u64,
    pub compact_min_retain: i64,
    pub compact_batch_revisions: i64,
    pub compact_timeout_ms: u64,
    /// Deadline of one server-to-database call.
    pub db_call_timeout_ms: u64,
}

impl Default for Kine {
    fn default() -> Self {
        Kine {
            compact_interval_s: 300,
            compact_interval_jitter_pct: 0,
            compact_min_retain: 1000,
            compact_batch_revisions: 1000,
            compact_timeout_ms: 5000,
            db_call_timeout_ms: 2000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// One-way message latency range.
    pub latency_ms: [u64; 2],
}

impl Default for Network {
    fn default() -> Self {
        Network { latency_ms: [1, 5] }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Kubernetes resource kinds, the `<resource>` in `/registry/<resource>/<ns>/<name>`.
    pub resources: Vec<String>,
    pub namespaces: u32,
    /// Distinct object names per resource and namespace.
    pub names: u32,
    /// Operations per second issued by each client (one at a time, Poisson-spaced).
    pub ops_per_s: f64,
    /// Relative weights of each operation kind.
    #[serde(default)]
    pub mix: Mix,
    /// `limit` of paginated List requests.
    pub list_limit: i64,
    /// Client deadline of one request.
    pub request_timeout_ms: u64,
    /// Bytes of value per object.
    #[serde(default = "default_value_bytes")]
    pub value_bytes: usize,
    /// Watcher nodes, each holding a watch on every object (with prev_kv and progress requests),
    /// resuming from its last revision after any break.
    #[serde(default)]
    pub watchers: u32,
}

fn default_value_bytes() -> usize {
    64
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub create: f64,
    pub update: f64,
    pub delete: f64,
    pub get: f64,
    pub list: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            create: 3.0,
            update: 4.0,
            delete: 1.0,
            get: 1.0,
            list: 1.0,
        }
    }
}

/// Fault rates and ranges; the seed draws the actual schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Draw a different fault mix per seed: each fault family is switched on or off, and each
    /// rate scaled, by the seed.
    pub swarm: bool,
    /// Network partitions started per simulated minute.
    pub partitions_per_min: f64,
    pub partition_duration_s: [u64; 2],
    /// Probability that a partition is one-way.
    pub one_way_probability: f64,
    /// Which links partitions cut: any of `server-database`, `client-server`, `server-server`,
    /// `isolate-node`.
    pub partition_kinds: Vec<String>,
    /// Node kills per simulated minute; each killed node restarts after a drawn downtime.
    pub kills_per_min: f64,
    pub kill_downtime_s: [u64; 2],
    /// Which roles may be killed: any of `server`, `database`, `client`.
    pub kill_roles: Vec<String>,
    /// Probability that one compaction batch fails.
    pub compact_failure_probability: f64,
    /// Which compaction failures to inject: any of `database-locked`, `timeout`, `reply-lost`.
    pub compact_failure_kinds: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            swarm: false,
            partitions_per_min: 0.0,
            partition_duration_s: [5, 30],
            one_way_probability: 0.0,
            partition_kinds: vec![],
            kills_per_min: 0.0,
            kill_downtime_s: [1, 10],
            kill_roles: vec![],
            compact_failure_probability: 0.0,
            compact_failure_kinds: vec![],
        }
    }
}

/// A scenario that cannot be used, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line where the dotted `field` is written (its key, or the nearest enclosing table).
fn line_of(text: &str, field: &str) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 1;
    };
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut line = 1;
    for part in field.split('.') {
        let Some((key, item)) = table.get_key_value(part) else {
            break;
        };
        if let Some(span) = key.span().or_else(|| item.span()) {
            line = line_at(text, span.start);
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    line
}

/// Reads, parses and validates a scenario file.
pub fn load(path: &str) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates scenario `text`; `path` only names it in errors.
pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let de = toml::Deserializer::new(text);
    let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| line_at(text, s.start))
            .unwrap_or_else(|| line_of(text, &field));
        ScenarioError::Invalid {
            path: path.to_string(),
            line,
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: inner.message().trim().to_string(),
        }
    })?;
    validate(&scenario).map_err(|(field, message)| ScenarioError::Invalid {
        path: path.to_string(),
        line: line_of(text, &field),
        field,
        message,
    })?;
    Ok(scenario)
}

type Problem = (String, String);

fn check(ok: bool, field: &str, message: impl Into<String>) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err((field.to_string(), message.into()))
    }
}

fn range_ok(field: &str, r: [u64; 2]) -> Result<(), Problem> {
    check(
        r[0] <= r[1],
        field,
        format!(
            "range [{}, {}] has its minimum above its maximum",
            r[0], r[1]
        ),
    )
}

fn probability(field: &str, p: f64) -> Result<(), Problem> {
    check(
        (0.0..=1.0).contains(&p),
        field,
        format!("{p} is not a probability between 0 and 1"),
    )
}

fn subset(field: &str, values: &[String], allowed: &[&str]) -> Result<(), Problem> {
    for v in values {
        check(
            allowed.contains(&v.as_str()),
            field,
            format!("unknown value `{v}`; allowed: {}", allowed.join(", ")),
        )?;
    }
    Ok(())
}

/// Range and consistency checks serde cannot express. Returns the dotted field and the problem.
fn validate(s: &Scenario) -> Result<(), Problem> {
    check(!s.name.trim().is_empty(), "name", "must not be empty")?;
    check(
        s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "name",
        "only letters, digits, '-' and '_' (it names a results folder)",
    )?;
    check(s.duration_s > 0, "duration_s", "must be at least 1 second")?;
    let t = &s.topology;
    match t.kind {
        TopologyKind::Single => check(
            t.servers == 1,
            "topology.servers",
            "a single topology has exactly 1 server",
        )?,
        TopologyKind::Ha => check(
            (1..=5).contains(&t.servers),
            "topology.servers",
            "an ha topology has 1 to 5 servers",
        )?,
    }
    check(t.clients >= 1, "topology.clients", "at least 1 client")?;
    check(
        s.database.dialect == "sqlite",
        "database.dialect",
        format!("unknown dialect `{}`; allowed: sqlite", s.database.dialect),
    )?;
    range_ok("database.latency_ms", s.database.latency_ms)?;
    range_ok("network.latency_ms", s.network.latency_ms)?;
    let k = &s.kine;
    check(
        k.compact_interval_jitter_pct <= 100,
        "kine.compact_interval_jitter_pct",
        "a percentage from 0 to 100",
    )?;
    check(
        k.compact_min_retain >= 0,
        "kine.compact_min_retain",
        "must not be negative",
    )?;
    check(
        k.compact_batch_revisions >= store::kine::compactor::MIN_BATCH_REVISIONS,
        "kine.compact_batch_revisions",
        format!(
            "kine's minimum is {}",
            store::kine::compactor::MIN_BATCH_REVISIONS
        ),
    )?;
    check(
        k.compact_timeout_ms > 0,
        "kine.compact_timeout_ms",
        "must be positive",
    )?;
    check(
        k.db_call_timeout_ms > 0,
        "kine.db_call_timeout_ms",
        "must be positive",
    )?;
    let w = &s.workload;
    check(
        !w.resources.is_empty(),
        "workload.resources",
        "name at least one resource",
    )?;
    check(
        w.namespaces >= 1 && w.names >= 1,
        "workload.names",
        "at least one namespace and one name",
    )?;
    check(w.ops_per_s > 0.0, "workload.ops_per_s", "must be positive")?;
    check(
        w.list_limit >= 1,
        "workload.list_limit",
        "must be at least 1",
    )?;
    check(
        w.request_timeout_ms > 0,
        "workload.request_timeout_ms",
        "must be positive",
    )?;
    let m = &w.mix;
    let weights = [m.create, m.update, m.delete, m.get, m.list];
    check(
        weights.iter().all(|x| *x >= 0.0),
        "workload.mix",
        "weights must not be negative",
    )?;
    check(
        weights.iter().sum::<f64>() > 0.0,
        "workload.mix",
        "at least one weight must be positive",
    )?;
    let f = &s.faults;
    check(
        f.partitions_per_min >= 0.0,
        "faults.partitions_per_min",
        "must not be negative",
    )?;
    check(
        f.kills_per_min >= 0.0,
        "faults.kills_per_min",
        "must not be negative",
    )?;
    range_ok("faults.partition_duration_s", f.partition_duration_s)?;
    range_ok("faults.kill_downtime_s", f.kill_downtime_s)?;
    probability("faults.one_way_probability", f.one_way_probability)?;
    probability(
        "faults.compact_failure_probability",
        f.compact_failure_probability,
    )?;
    subset(
        "faults.partition_kinds",
        &f.partition_kinds,
        &[
            "server-database",
            "client-server",
            "server-server",
            "isolate-node",
        ],
    )?;
    subset(
        "faults.kill_roles",
        &f.kill_roles,
        &["server", "database", "client"],
    )?;
    subset(
        "faults.compact_failure_kinds",
        &f.compact_failure_kinds,
        &["database-locked", "timeout", "reply-lost"],
    )?;
    let mut design = store::design::Design::default();
    for (area, variant) in &s.design {
        design
            .set(area, variant)
            .map_err(|e| (format!("design.{area}"), e.to_string()))?;
    }
    Ok(())
}

impl Scenario {
    /// The scenario's own `[design]` selections.
    pub fn design(&self) -> store::design::Design {
        let mut d = store::design::Design::default();
        for (area, variant) in &self.design {
            d.set(area, variant).expect("validated when loaded");
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "t"
duration_s = 10
quiet_s = 5

[topology]
kind = "single"
servers = 1
clients = 1

[workload]
resources = ["pods"]
namespaces = 1
names = 2
ops_per_s = 1.0
list_limit = 5
request_timeout_ms = 1000

[faults]
kills_per_min = 1.0
kill_downtime_s = [1, 2]
"#;

    #[test]
    fn a_good_scenario_loads() {
        let s = parse("good.toml", GOOD).unwrap();
        assert_eq!(s.topology.clients, 1);
        assert_eq!(s.kine.compact_min_retain, 1000, "kine's default");
    }

    #[test]
    fn a_misspelt_field_names_file_line_and_field() {
        let text = GOOD.replace("kills_per_min = 1.0", "kills_per_mi = 1.0");
        let e = parse("bad.toml", &text).unwrap_err().to_string();
        assert!(e.starts_with("bad.toml:19: faults.kills_per_mi:"), "{e}");
        assert!(e.contains("kills_per_mi"), "{e}");
    }

    #[test]
    fn a_reversed_range_names_its_field_and_line() {
        let text = GOOD.replace("kill_downtime_s = [1, 2]", "kill_downtime_s = [5, 2]");
        let e = parse("bad.toml", &text).unwrap_err().to_string();
        assert!(e.starts_with("bad.toml:20: faults.kill_downtime_s:"), "{e}");
    }

    #[test]
    fn a_wrong_type_and_an_unknown_design_are_reported() {
        let text = GOOD.replace("clients = 1", "clients = \"one\"");
        let e = parse("bad.toml", &text).unwrap_err().to_string();
        assert!(e.starts_with("bad.toml:8: topology.clients:"), "{e}");
        let text = format!("{GOOD}\n[design]\ncompactor = \"kine-999\"\n");
        let e = parse("bad.toml", &text).unwrap_err().to_string();
        assert!(
            e.contains("design.compactor") && e.contains("fixed, kine-357, kine-414"),
            "{e}"
        );
    }
}

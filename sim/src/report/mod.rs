//! What a run leaves behind: `report.json`, `trace.log`, `history.json.gz`, and the summary a person
//! reads in the terminal.
//!
//! Runs after the simulation has ended; it only formats and writes what the run produced. The
//! one-line JSON result is also what a campaign's parent process reads from each child.

pub mod metrics;
pub mod plot;

use crate::checkers::{CheckReport, Verdict};
use crate::faults::FaultMix;
use crate::history::trace::Trace;
use crate::history::{History, OpResult, Outcome};
use crate::scenario::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything one seed produced.
pub struct RunOutput {
    pub history: History,
    pub trace: Trace,
    /// Simulated nanoseconds the run covered.
    pub sim_ns: u64,
    /// Injected faults by kind (see `faults::KINDS`).
    pub faults_injected: BTreeMap<String, u64>,
    /// The fault rates in force (the scenario's, or this seed's swarm draw).
    pub fault_mix: FaultMix,
    /// Every fault the run injected, as a schedule that replays it.
    pub schedule: Schedule,
}

/// The first violation of a failed check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FirstViolation {
    pub at_s: f64,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckSummary {
    pub name: String,
    /// `pass`, `fail`, or `n/a` when the run gave the check nothing to judge.
    pub status: String,
    /// Why the check had nothing to judge (with `n/a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How much the check judged, by what it counts (`reads`, `pages`, `events`, ...).
    #[serde(default)]
    pub judged: BTreeMap<String, u64>,
    pub violations: usize,
    /// The earliest violations in full (the first is `first_violation`); the rest are counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earliest_violations: Vec<FirstViolation>,
    pub first_violation: Option<FirstViolation>,
}

impl CheckSummary {
    /// "56 pages, 1234 reads": what the check judged.
    pub fn judged_text(&self) -> String {
        self.judged
            .iter()
            .map(|(what, n)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpCounts {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub by_outcome: BTreeMap<String, u64>,
}

/// Everything `report.json` holds; also the child's result line in a campaign.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub scenario_path: String,
    pub seed: u64,
    pub design: String,
    /// `pass`, `fail` (a check failed) or `panic` (the run itself died).
    pub status: String,
    pub trace_hash: String,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    pub peak_rss_mib: f64,
    pub operations: OpCounts,
    pub faults_injected: BTreeMap<String, u64>,
    pub fault_mix: serde_json::Value,
    pub checks: Vec<CheckSummary>,
    /// Latency and lag percentiles (see `metrics`).
    #[serde(default)]
    pub histograms: crate::report::metrics::Metrics,
    pub panic: Option<String>,
    pub repro: String,
    pub results_dir: String,
    /// Hits of every declared code probe in this run (`store::probe`), zeros included.
    #[serde(default)]
    pub probes: BTreeMap<String, u64>,
    /// Set for a live run (`faultline live`): real processes, real time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveRun>,
}

/// What a live run adds to its report: the target, the faults as they really happened, and the
/// tolerances its checks allowed for real clocks and scheduling.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LiveRun {
    pub target: String,
    pub target_path: String,
    pub nodes: usize,
    /// The schedule file the run drew (or replayed): `--schedule` replays it.
    pub schedule: String,
    /// Every fault, with when it was planned, started and ended (seconds from the run's start).
    pub faults: Vec<String>,
    /// Where the checks could not be as strict as in the simulator, and by how much.
    pub tolerances: Vec<String>,
    /// Per check, the rules a live history cannot feed (they need the store's own events).
    #[serde(default)]
    pub unjudged: BTreeMap<String, Vec<String>>,
    /// Violations put down to a bug the target's release is known to have, one line per bug
    /// (name, how many, what it is, where it is reported, where it was fixed).
    #[serde(default)]
    pub known_bugs: Vec<String>,
    /// Violations no known bug of the target explains (those past the kept earliest included).
    #[serde(default)]
    pub unexplained: usize,
}

impl Report {
    pub fn failed_checks(&self) -> impl Iterator<Item = &CheckSummary> {
        self.checks.iter().filter(|c| c.status == "fail")
    }
}

/// The hits of every declared code probe since the last `store::probe::reset`.
pub fn probe_hits() -> BTreeMap<String, u64> {
    store::probe::hits()
        .into_iter()
        .map(|(name, n)| (name.to_string(), n))
        .collect()
}

/// The exact command that replays this seed.
pub fn repro_command(scenario_path: &str, seed: u64, design: &[String]) -> String {
    let mut cmd = format!("faultline repro {scenario_path} --seed {seed}");
    for d in design {
        cmd.push_str(&format!(" --design {d}"));
    }
    cmd
}

/// Where a seed's files go.
pub fn seed_dir(out: &Path, scenario: &str, seed: u64) -> PathBuf {
    out.join(scenario).join(format!("seed-{seed}"))
}

pub fn count_ops(h: &History) -> OpCounts {
    let mut c = OpCounts::default();
    for o in &h.ops {
        c.total += 1;
        let kind = o.request.kind();
        let outcome = match &o.outcome {
            Outcome::Ok {
                result: OpResult::Write {
                    succeeded: false, ..
                },
                ..
            } => "compare-failed",
            Outcome::Ok { .. } => "ok",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        };
        *c.by_kind.entry(kind.into()).or_default() += 1;
        *c.by_outcome.entry(outcome.into()).or_default() += 1;
    }
    c
}

pub fn summarize_checks(reports: &[CheckReport]) -> Vec<CheckSummary> {
    let shown = |v: &crate::checkers::Violation| FirstViolation {
        at_s: v.at_ns as f64 / 1e9,
        message: v.message.clone(),
    };
    reports
        .iter()
        .map(|r| {
            let verdict = r.verdict();
            CheckSummary {
                name: r.check.to_string(),
                status: verdict.label().into(),
                reason: match verdict {
                    Verdict::NotApplicable(reason) => Some(reason),
                    _ => None,
                },
                judged: r
                    .judged
                    .iter()
                    .map(|(what, n)| (what.to_string(), *n))
                    .collect(),
                violations: r.total,
                earliest_violations: r.violations.iter().map(shown).collect(),
                first_violation: r.first().map(shown),
            }
        })
        .collect()
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    usage.ru_maxrss as f64 / 1024.0
}

/// Writes report.json into `dir`, and with `run` its full artifacts: trace.log and
/// history.json.gz (the recorded history, gzipped: tens of MB of JSON for a long run).
pub fn write(dir: &Path, report: &Report, run: Option<(&History, &Trace)>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )
    .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    if let Some((history, trace)) = run {
        std::fs::write(dir.join("trace.log"), trace.text())?;
        let file = std::fs::File::create(dir.join("history.json.gz"))?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        // serde_json writes many tiny pieces; the encoder must see them in large chunks.
        let mut json = std::io::BufWriter::with_capacity(1 << 16, &mut gz);
        serde_json::to_writer(&mut json, history)?;
        json.flush()?;
        drop(json);
        gz.finish()?.flush()?;
    }
    Ok(())
}

/// Reads a history back from the `history.json.gz` a run wrote.
pub fn read_history(path: &Path) -> anyhow::Result<History> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    serde_json::from_reader(reader).with_context(|| format!("reading {}", path.display()))
}

/// `s` with XML's special characters escaped, for JUnit reports.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                out.push_str(&format!("&#{};", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// The human summary of one run.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let verdict = match report.status.as_str() {
        "pass" => "PASS",
        "fail" => "FAIL",
        _ => "PANIC",
    };
    if let Some(live) = &report.live {
        s += &format!(
            "{verdict} {} seed {} LIVE against {} ({} node{})\n",
            report.scenario,
            report.seed,
            live.target,
            live.nodes,
            if live.nodes == 1 { "" } else { "s" }
        );
        s += &format!(
            "  real time    {:.1} s (not reproducible: real processes; the schedule is)\n",
            report.wall_seconds
        );
    } else {
        s += &format!(
            "{verdict} {} seed {} design {}\n",
            report.scenario, report.seed, report.design
        );
        s += &format!(
            "  trace hash   {}\n",
            &report.trace_hash[..report.trace_hash.len().min(16)]
        );
        let speed = if report.wall_seconds > 0.0 {
            report.sim_seconds / report.wall_seconds
        } else {
            0.0
        };
        s += &format!(
            "  simulated    {:.1} s in {:.2} s wall ({:.0}x), peak {:.0} MiB\n",
            report.sim_seconds, report.wall_seconds, speed, report.peak_rss_mib
        );
    }
    let outcomes: Vec<String> = report
        .operations
        .by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    s += &format!(
        "  operations   {} ({})\n",
        report.operations.total,
        outcomes.join(", ")
    );
    let faults: Vec<String> = report
        .faults_injected
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    s += &format!(
        "  faults       {}\n",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    if let Some(p) = &report.panic {
        s += &format!("  panic        {p}\n");
    }
    if report.live.is_none() {
        let hit = report.probes.values().filter(|n| **n > 0).count();
        s += &format!(
            "  probes       {hit} of {} hit (report.json: probes)\n",
            report.probes.len()
        );
    }
    if !report.histograms.is_empty() {
        s += &crate::report::metrics::render_table(&report.histograms);
    }
    s += "  checks\n";
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        match (&c.first_violation, &c.reason) {
            (Some(v), _) => {
                s += &format!(
                    "    FAIL {:<width$}  {} violation{} in {}; first at {:.3}s: {}\n",
                    c.name,
                    c.violations,
                    if c.violations == 1 { "" } else { "s" },
                    c.judged_text(),
                    v.at_s,
                    v.message
                )
            }
            (None, Some(reason)) => s += &format!("    n/a  {:<width$}  {reason}\n", c.name),
            (None, None) => s += &format!("    PASS {:<width$}  {}\n", c.name, c.judged_text()),
        }
    }
    if let Some(live) = &report.live {
        for k in &live.known_bugs {
            s += &format!("  known bug    {k}\n");
        }
        if report.status != "pass" {
            s += &format!(
                "  unexplained  {} violation{} no known bug of the target explains\n",
                live.unexplained,
                if live.unexplained == 1 { "" } else { "s" }
            );
        }
        for t in &live.tolerances {
            s += &format!("  tolerance    {t}\n");
        }
        for (check, rules) in &live.unjudged {
            for r in rules {
                s += &format!("  unjudged     {check}: {r}\n");
            }
        }
    }
    s += &format!("  results      {}\n", report.results_dir);
    if report.status != "pass" {
        s += &format!("  reproduce    {}\n", report.repro);
    }
    s
}

//! `faultline fuzz`: a campaign over seeds, reported for people and for CI.
//!
//! Writes `summary.json` (the campaign's identity, per-check tallies, one failure entry per
//! failed check of each failed seed, and every seed's record) and `junit.xml` (one test case per
//! seed, failures carrying check, message and repro command), also when interrupted, for the
//! seeds that finished. A campaign can run as one of N shards (`--shard K/N`, or Kubernetes'
//! `JOB_COMPLETION_INDEX` with `--shards N`); `faultline merge` combines the shards' reports.

use crate::commands::campaign::{
    binary_id, campaign, default_jobs, interrupt_flag, CampaignConfig, SeedRecord, Seeds, Shard,
};
use crate::run::{resolve, InputError, Keep};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Scenario files (TOML).
    #[arg(required = true)]
    pub scenarios: Vec<String>,
    #[arg(long, default_value = "1..100")]
    pub seeds: Seeds,
    /// Child processes at once (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long = "design", value_name = "AREA=VARIANT")]
    pub design: Vec<String>,
    /// Results folder (default: results/fuzz-<design>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Wall-clock seconds after which a seed counts as hung and is killed.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// What each seed's folder keeps: everything, everything only for failing seeds (passing
    /// seeds keep report.json), or only failing seeds' report.json.
    #[arg(long, value_enum, default_value_t = Keep::Failed)]
    pub keep: Keep,
    /// Run only the K-th of N disjoint slices of the scenarios x seeds (K counts from 0).
    #[arg(long, value_name = "K/N", conflicts_with = "shards")]
    pub shard: Option<Shard>,
    /// Shard count for a Kubernetes Indexed Job: this process runs shard JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// Shrink each new failure (the first seed of each scenario and failing check) into
    /// `<out>/shrunk/`.
    #[arg(long)]
    pub shrink: bool,
    /// Exit 1 naming every declared code probe that no seed hit.
    #[arg(long)]
    pub require_probes: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Failure {
    pub scenario: String,
    pub seed: u64,
    pub check: String,
    pub message: String,
    pub repro: String,
}

/// One check across a campaign: how many seeds it passed, failed or had nothing to judge in,
/// and how much it judged in all.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct CheckTally {
    pub pass: usize,
    pub fail: usize,
    #[serde(rename = "n/a")]
    pub not_applicable: usize,
    /// Why it had nothing to judge, with the number of seeds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_applicable_reasons: BTreeMap<String, usize>,
    pub judged: BTreeMap<String, u64>,
}

/// One code probe across a campaign: its hits in all, and how many runs hit it.
#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq)]
pub struct ProbeTally {
    pub hits: u64,
    pub seeds: usize,
}

/// Every declared code probe, not hit yet.
pub fn declared_probes() -> BTreeMap<String, ProbeTally> {
    store::probe::PROBES
        .iter()
        .map(|(name, _)| (name.to_string(), ProbeTally::default()))
        .collect()
}

/// Every declared probe's hits and seeds over `records`.
pub fn tally_probes(records: &[SeedRecord]) -> BTreeMap<String, ProbeTally> {
    let mut out = declared_probes();
    for (name, n) in records.iter().flat_map(|r| &r.probes) {
        let t = out.entry(name.clone()).or_default();
        t.hits += n;
        t.seeds += 1;
    }
    out
}

/// What `summary.json` holds. The identity fields (binary, scenarios, seed range, design,
/// shard) are what `merge` checks before it combines shards.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Summary {
    /// The faultline binary that ran the campaign (a hash of its file).
    pub binary: String,
    pub scenarios: Vec<String>,
    pub scenario_paths: Vec<String>,
    /// The seed range asked for (inclusive); `seeds` is how many runs finished.
    pub seed_range: String,
    /// The `--design` selections, and the resolved design's name.
    pub design_selections: Vec<String>,
    pub design: String,
    /// Set when this summary covers one shard of the campaign.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Set on a merged summary: the shards it combines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_shards: Vec<u64>,
    /// Runs the campaign (or this shard) was to make.
    pub planned: usize,
    pub seeds: usize,
    pub passed: usize,
    pub failed_seeds: usize,
    pub failing_seeds_by_check: BTreeMap<String, usize>,
    /// Per check, over the runs that finished.
    pub checks: BTreeMap<String, CheckTally>,
    /// Per declared code probe, over the runs that finished: hits and the runs that hit it.
    #[serde(default)]
    pub probes: BTreeMap<String, ProbeTally>,
    pub interrupted: bool,
    pub wall_seconds: f64,
    pub failures: Vec<Failure>,
    /// Every finished run, in scenario and seed order.
    pub records: Vec<SeedRecord>,
}

impl Summary {
    /// Fills the figures that follow from `records` (and the record list itself, sorted).
    pub fn with_records(mut self, mut records: Vec<SeedRecord>) -> Self {
        records.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
        self.seeds = records.len();
        self.passed = records.iter().filter(|r| r.failures.is_empty()).count();
        self.failed_seeds = self.seeds - self.passed;
        self.checks = tally(&records);
        self.failing_seeds_by_check.clear();
        self.failures.clear();
        for r in &records {
            for (check, message) in &r.failures {
                *self
                    .failing_seeds_by_check
                    .entry(check.clone())
                    .or_default() += 1;
                self.failures.push(Failure {
                    scenario: r.scenario.clone(),
                    seed: r.seed,
                    check: check.clone(),
                    message: message.clone(),
                    repro: r.repro.clone(),
                });
            }
        }
        self.records = records;
        self
    }
}

/// JUnit XML: one testsuite per scenario, one testcase per seed.
pub fn junit(records: &[SeedRecord], design: &str) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&SeedRecord>> = BTreeMap::new();
    for r in records {
        by_scenario.entry(&r.scenario).or_default().push(r);
    }
    let failures = records.iter().filter(|r| !r.failures.is_empty()).count();
    let time: f64 = records.iter().map(|r| r.wall_seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"faultline fuzz ({})\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">\n",
        crate::report::xml_escape(design),
        records.len()
    );
    for (scenario, rs) in by_scenario {
        let f = rs.iter().filter(|r| !r.failures.is_empty()).count();
        let t: f64 = rs.iter().map(|r| r.wall_seconds).sum();
        x += &format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"0\" time=\"{t:.3}\">\n",
            crate::report::xml_escape(&format!("{scenario} [{design}]")),
            rs.len()
        );
        for r in rs {
            let name = format!("seed-{}", r.seed);
            let class = crate::report::xml_escape(&format!("faultline.{scenario}"));
            x += &format!(
                "    <testcase classname=\"{class}\" name=\"{name}\" time=\"{:.3}\">\n",
                r.wall_seconds
            );
            for (check, message) in &r.failures {
                x += &format!(
                    "      <failure type=\"{}\" message=\"{}\">{}\nreproduce: {}</failure>\n",
                    crate::report::xml_escape(check),
                    crate::report::xml_escape(&format!("{check}: {message}")),
                    crate::report::xml_escape(message),
                    crate::report::xml_escape(&r.repro)
                );
            }
            if !r.checks.is_empty() {
                x += &format!(
                    "      <system-out>{}</system-out>\n",
                    crate::report::xml_escape(&verdict_lines(r))
                );
            }
            x += "    </testcase>\n";
        }
        x += "  </testsuite>\n";
    }
    x += "</testsuites>\n";
    x
}

pub fn tally(records: &[SeedRecord]) -> BTreeMap<String, CheckTally> {
    let mut out: BTreeMap<String, CheckTally> = BTreeMap::new();
    for c in records.iter().flat_map(|r| &r.checks) {
        let t = out.entry(c.name.clone()).or_default();
        match c.status.as_str() {
            "fail" => t.fail += 1,
            "n/a" => {
                t.not_applicable += 1;
                let reason = c.reason.clone().unwrap_or_default();
                *t.not_applicable_reasons.entry(reason).or_default() += 1;
            }
            _ => t.pass += 1,
        }
        for (what, n) in &c.judged {
            *t.judged.entry(what.clone()).or_default() += n;
        }
    }
    out
}

/// One line per check for a seed's JUnit output: verdict, what it judged, or why it had nothing.
fn verdict_lines(r: &SeedRecord) -> String {
    r.checks
        .iter()
        .map(|c| match (c.status.as_str(), &c.reason) {
            ("n/a", Some(reason)) => format!("n/a  {}: {reason}\n", c.name),
            (status, _) => format!("{status} {}: {}\n", c.name, c.judged_text()),
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<(), InputError> {
    std::fs::write(path, text).map_err(|e| InputError(format!("writing {}: {e}", path.display())))
}

/// Progress for a person at a terminal (a bar) or for a CI log (a plain line every 30 s).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    failed: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} seeds, {msg} [{elapsed} < {eta}]",
                )
                .expect("a valid template"),
            );
            b
        });
        Progress {
            bar,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn println(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn seed_done(&mut self, failed: bool) {
        self.done += 1;
        self.failed += u64::from(failed);
        if let Some(b) = &self.bar {
            b.set_message(format!("{} failing", self.failed));
            b.inc(1);
            return;
        }
        if self.last_line.elapsed() >= Duration::from_secs(30) || self.done == self.total {
            self.last_line = Instant::now();
            let minutes = self.started.elapsed().as_secs_f64() / 60.0;
            let rate = self.done as f64 / minutes.max(1e-9);
            let left = (self.total - self.done) as f64 / rate.max(1e-9);
            eprintln!(
                "progress: {}/{} seeds, {} failing, {rate:.1} seeds/min, about {left:.0} min left",
                self.done, self.total, self.failed
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The shard this process runs: `--shard K/N`, or `JOB_COMPLETION_INDEX` with `--shards N`.
fn chosen_shard(args: &FuzzArgs) -> Result<Option<Shard>, InputError> {
    if let Some(s) = args.shard {
        return Ok(Some(s));
    }
    let Some(count) = args.shards else {
        return Ok(None);
    };
    let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
        InputError(
            "--shards N needs the JOB_COMPLETION_INDEX environment variable (set by a Kubernetes Indexed Job); otherwise give --shard K/N".into(),
        )
    })?;
    format!("{index}/{count}")
        .parse::<Shard>()
        .map(Some)
        .map_err(|e| {
            InputError(format!(
                "JOB_COMPLETION_INDEX={index} with --shards {count}: {e}"
            ))
        })
}

pub fn fuzz(args: &FuzzArgs) -> Result<ExitCode, InputError> {
    let mut design_name = String::from("fixed");
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        let (scenario, design) = resolve(s, &args.design)?;
        design_name = design.to_string();
        scenarios.push((s.clone(), scenario.name));
    }
    let shard = chosen_shard(args)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/fuzz-{design_name}")));
    std::fs::create_dir_all(&out)
        .map_err(|e| InputError(format!("creating {}: {e}", out.display())))?;
    let all_runs = scenarios.len() * args.seeds.count() as usize;
    let planned = (0..all_runs)
        .filter(|i| shard.is_none_or(|s| s.owns(*i)))
        .count();
    let stop = interrupt_flag();
    let started = Instant::now();
    let mut progress = Progress::new(planned as u64);
    if let Some(s) = shard {
        progress.println(format!(
            "shard {s}: {planned} of the campaign's {all_runs} runs"
        ));
    }
    let cfg = CampaignConfig {
        design: &args.design,
        jobs: args.jobs.unwrap_or_else(default_jobs),
        out: &out,
        timeout: Duration::from_secs(args.timeout_s),
        stop: &stop,
        keep: args.keep,
        shard,
    };
    let records = campaign(&scenarios, &args.seeds, &cfg, |r| {
        if !r.failures.is_empty() {
            let checks: Vec<&str> = r.failures.iter().map(|(c, _)| c.as_str()).collect();
            progress.println(format!(
                "FAIL {} seed {}: {} -> {}",
                r.scenario,
                r.seed,
                checks.join(", "),
                r.repro
            ));
        }
        progress.seed_done(!r.failures.is_empty());
    });
    progress.finish();
    let summary = Summary {
        binary: binary_id(),
        scenarios: scenarios.iter().map(|(_, n)| n.clone()).collect(),
        scenario_paths: scenarios.iter().map(|(p, _)| p.clone()).collect(),
        seed_range: args.seeds.to_string(),
        design_selections: args.design.clone(),
        design: design_name,
        shard,
        merged_shards: vec![],
        planned,
        seeds: 0,
        passed: 0,
        failed_seeds: 0,
        failing_seeds_by_check: BTreeMap::new(),
        checks: BTreeMap::new(),
        probes: tally_probes(&records),
        interrupted: stop.load(Ordering::Relaxed),
        wall_seconds: started.elapsed().as_secs_f64(),
        failures: vec![],
        records: vec![],
    }
    .with_records(records);
    write_reports(&out, &summary)?;
    if args.shrink && !stop.load(Ordering::Relaxed) {
        shrink_failures(args, &summary, &out, &stop)?;
    }
    Ok(exit_with_probes(&summary, args.require_probes))
}

/// Shrinks the first failing seed of each (scenario, first failing check).
fn shrink_failures(
    args: &FuzzArgs,
    summary: &Summary,
    out: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), InputError> {
    let mut seen = std::collections::BTreeSet::new();
    for r in &summary.records {
        let Some((check, _)) = r.failures.first() else {
            continue;
        };
        if stop.load(Ordering::Relaxed) || !seen.insert((r.scenario.clone(), check.clone())) {
            continue;
        }
        let i = summary.scenarios.iter().position(|s| *s == r.scenario);
        let Some(path) = i.map(|i| summary.scenario_paths[i].clone()) else {
            continue;
        };
        let shrink_args = crate::commands::shrink::ShrinkArgs {
            scenario: path,
            seed: r.seed,
            design: args.design.clone(),
            check: Some(check.clone()),
            out: out.join("shrunk"),
            jobs: args.jobs,
            timeout_s: args.timeout_s,
        };
        if let Err(e) = crate::commands::shrink::shrink_seed(&shrink_args, stop) {
            eprintln!("faultline: shrinking {} seed {}: {e}", r.scenario, r.seed);
        }
    }
    Ok(())
}

/// 1 when a seed failed or runs are missing (interrupted, or shards absent), else 0.
pub fn exit_code(summary: &Summary) -> ExitCode {
    if summary.failed_seeds > 0 || summary.interrupted || summary.seeds < summary.planned {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The declared probes no run of the campaign hit, in name order, except those no simulated
/// scenario can reach (`store::probe::SCENARIO_UNREACHABLE`: only store tests reach them).
pub fn unhit_probes(summary: &Summary) -> Vec<&str> {
    summary
        .probes
        .iter()
        .filter(|(name, t)| t.seeds == 0 && store::probe::scenario_unreachable(name).is_none())
        .map(|(name, _)| name.as_str())
        .collect()
}

/// `exit_code`, and with `require_probes` also 1 when a declared probe a scenario can reach went
/// unhit (named).
pub fn exit_with_probes(summary: &Summary, require_probes: bool) -> ExitCode {
    let unhit = unhit_probes(summary);
    if require_probes && !unhit.is_empty() {
        let required = summary
            .probes
            .keys()
            .filter(|name| store::probe::scenario_unreachable(name).is_none())
            .count();
        eprintln!(
            "faultline: --require-probes: {} of {} code probes hit by no seed: {}",
            unhit.len(),
            required,
            unhit.join(", ")
        );
        return ExitCode::from(1);
    }
    exit_code(summary)
}

/// The coverage table: every declared probe with its hits and the runs that hit it, the
/// never-hit ones first, then the rarest; last, the probes only store tests reach, marked so.
pub fn coverage_table(summary: &Summary) -> String {
    let meanings: BTreeMap<&str, &str> = store::probe::PROBES.iter().copied().collect();
    let mut rows: Vec<(&String, &ProbeTally, Option<&str>)> = summary
        .probes
        .iter()
        .map(|(name, t)| (name, t, store::probe::scenario_unreachable(name)))
        .collect();
    rows.sort_by_key(|(name, t, only)| (only.is_some(), t.seeds, t.hits, *name));
    let width = rows.iter().map(|(n, ..)| n.len()).max().unwrap_or(5).max(5);
    let hit = rows.iter().filter(|(_, t, _)| t.seeds > 0).count();
    let store_only = rows.iter().filter(|(.., only)| only.is_some()).count();
    let never = rows
        .iter()
        .filter(|(_, t, only)| t.seeds == 0 && only.is_none())
        .count();
    let mut s = format!(
        "code probes: {} of {} hit over {} runs, {} reachable only by store tests ({} never)\n  \
         {:<width$} {:>10} {:>6}  meaning\n",
        hit,
        rows.len(),
        summary.seeds,
        store_only,
        never,
        "probe",
        "hits",
        "seeds",
    );
    for (name, t, only) in rows {
        let meaning = meanings
            .get(name.as_str())
            .copied()
            .unwrap_or("(not declared in this binary)");
        let line = match only {
            Some(why) => format!("{meaning} [store test only: {why}]"),
            None if t.seeds == 0 => format!("NEVER {meaning}"),
            None => meaning.to_string(),
        };
        s += &format!("  {name:<width$} {:>10} {:>6}  {line}\n", t.hits, t.seeds);
    }
    s
}

/// Writes summary.json, junit.xml and the outcomes plot into `out`, and prints the coverage
/// table and the one-line result. Shared by `fuzz` and `merge`.
pub fn write_reports(out: &Path, summary: &Summary) -> Result<(), InputError> {
    write(
        &out.join("summary.json"),
        &(serde_json::to_string_pretty(summary).expect("serialises") + "\n"),
    )?;
    write(
        &out.join("junit.xml"),
        &junit(&summary.records, &summary.design),
    )?;
    let outcomes: Vec<crate::report::plot::SeedOutcome<'_>> = summary
        .records
        .iter()
        .map(|r| {
            (
                r.scenario.as_str(),
                r.seed,
                r.failures.iter().map(|(c, _)| c.as_str()).collect(),
            )
        })
        .collect();
    let title = format!("outcomes across seeds ({})", summary.design);
    if let Err(e) = crate::report::plot::outcomes(
        &outcomes,
        &title,
        &out.join("outcomes.png"),
        &out.join("outcomes.svg"),
    ) {
        eprintln!("faultline: outcomes plot not written: {e:#}");
    }
    let checks: Vec<String> = summary
        .failing_seeds_by_check
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let missing = summary.planned.saturating_sub(summary.seeds);
    if !summary.probes.is_empty() {
        eprint!("{}", coverage_table(summary));
    }
    eprintln!(
        "{} seeds of {} ({} over seeds {}{}), {} passed, {} failed{}{}{} in {:.1}s; reports: {}/summary.json, junit.xml, outcomes.png",
        summary.seeds,
        summary.planned,
        summary.scenarios.join(", "),
        summary.seed_range,
        match summary.shard {
            Some(s) => format!(", shard {s}"),
            None => String::new(),
        },
        summary.passed,
        summary.failed_seeds,
        if checks.is_empty() {
            String::new()
        } else {
            format!(" ({})", checks.join(", "))
        },
        if summary.interrupted {
            ", interrupted"
        } else {
            ""
        },
        if missing > 0 {
            format!(", {missing} not run")
        } else {
            String::new()
        },
        summary.wall_seconds,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64, failures: Vec<(&str, &str)>) -> SeedRecord {
        SeedRecord {
            scenario: "x".into(),
            seed,
            wall_seconds: 1.5,
            failures: failures
                .into_iter()
                .map(|(c, m)| (c.into(), m.into()))
                .collect(),
            checks: vec![
                summary("watch", "n/a", Some("no client held an etcd watch"), &[]),
                summary("linearizable", "pass", None, &[("reads", 42)]),
            ],
            repro: format!("faultline repro scenarios/x.toml --seed {seed}"),
            probes: BTreeMap::new(),
        }
    }

    fn summary(
        name: &str,
        status: &str,
        reason: Option<&str>,
        judged: &[(&str, u64)],
    ) -> crate::report::CheckSummary {
        crate::report::CheckSummary {
            name: name.into(),
            status: status.into(),
            reason: reason.map(String::from),
            judged: judged.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            violations: 0,
            earliest_violations: vec![],
            first_violation: None,
        }
    }

    /// A summary of one run that hit every declared probe except `unhit`.
    fn probed_summary(unhit: &[&str]) -> Summary {
        let mut r = record(1, vec![]);
        r.probes = store::probe::PROBES
            .iter()
            .filter(|(name, _)| !unhit.contains(name))
            .map(|(name, _)| (name.to_string(), 1))
            .collect();
        let probes = tally_probes(std::slice::from_ref(&r));
        Summary {
            binary: "b".into(),
            scenarios: vec!["x".into()],
            scenario_paths: vec!["scenarios/x.toml".into()],
            seed_range: "1..1".into(),
            design_selections: vec![],
            design: "fixed".into(),
            shard: None,
            merged_shards: vec![],
            planned: 1,
            seeds: 0,
            passed: 0,
            failed_seeds: 0,
            failing_seeds_by_check: BTreeMap::new(),
            checks: BTreeMap::new(),
            probes,
            interrupted: false,
            wall_seconds: 1.0,
            failures: vec![],
            records: vec![],
        }
        .with_records(vec![r])
    }

    #[test]
    fn an_unhit_probe_only_store_tests_reach_does_not_fail_require_probes() {
        let only: Vec<&str> = store::probe::SCENARIO_UNREACHABLE
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert!(!only.is_empty());
        let s = probed_summary(&only);
        assert!(unhit_probes(&s).is_empty());
        assert_eq!(exit_with_probes(&s, true), ExitCode::SUCCESS);
        // Their tallies stay in the summary like any probe's.
        assert!(only.iter().all(|n| s.probes[*n] == ProbeTally::default()));
        let table = coverage_table(&s);
        let declared = store::probe::PROBES.len();
        assert!(
            table.starts_with(&format!(
                "code probes: {} of {declared} hit over 1 runs, {} reachable only by store tests (0 never)",
                declared - only.len(),
                only.len()
            )),
            "{table}"
        );
        assert!(!table.contains("NEVER"), "{table}");
        let rows: Vec<&str> = table.lines().skip(2).collect();
        let last = &rows[rows.len() - only.len()..];
        for name in &only {
            assert!(
                last.iter()
                    .any(|l| l.contains(name) && l.contains("[store test only: ")),
                "{name} not listed last and marked: {table}"
            );
        }
    }

    #[test]
    fn any_other_unhit_probe_still_fails_require_probes() {
        let mut unhit: Vec<&str> = store::probe::SCENARIO_UNREACHABLE
            .iter()
            .map(|(n, _)| *n)
            .collect();
        unhit.push("watch.cancelled_by_client");
        let s = probed_summary(&unhit);
        assert_eq!(unhit_probes(&s), vec!["watch.cancelled_by_client"]);
        assert_eq!(exit_with_probes(&s, true), ExitCode::from(1));
        assert_eq!(exit_with_probes(&s, false), ExitCode::SUCCESS);
        let table = coverage_table(&s);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert!(
            rows[0].contains("watch.cancelled_by_client") && rows[0].contains("NEVER"),
            "{table}"
        );
        assert!(table.contains("(1 never)"), "{table}");
    }

    #[test]
    fn a_check_with_nothing_to_judge_is_counted_as_not_applicable_never_as_a_pass() {
        let records = [record(1, vec![]), record(2, vec![])];
        let t = tally(&records);
        assert_eq!((t["watch"].pass, t["watch"].not_applicable), (0, 2));
        assert_eq!(
            t["watch"].not_applicable_reasons["no client held an etcd watch"],
            2
        );
        assert_eq!(
            (t["linearizable"].pass, t["linearizable"].judged["reads"]),
            (2, 84)
        );
        let x = junit(&records, "fixed");
        assert!(
            x.contains("n/a  watch: no client held an etcd watch"),
            "{x}"
        );
        assert!(x.contains("pass linearizable: 42 reads"), "{x}");
    }

    #[test]
    fn junit_has_a_case_per_seed_and_escapes_messages() {
        let x = junit(
            &[
                record(1, vec![]),
                record(2, vec![("compactor-continuity", "a < b & \"c\"")]),
            ],
            "fixed",
        );
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 2);
        assert!(x.contains("a &lt; b &amp; &quot;c&quot;"), "{x}");
        assert!(
            x.contains("reproduce: faultline repro scenarios/x.toml --seed 2"),
            "{x}"
        );
        assert!(
            !x.contains("a < b"),
            "raw markup must not leak into the XML"
        );
    }
}

//! `faultline fuzz`: a campaign over seeds, reported for people and for CI.
//!
//! Writes `summary.json` (one failure entry per failed check of each failed seed) and
//! `junit.xml` (one test case per seed, failures carrying check, message and repro command),
//! also when interrupted, for the seeds that finished.

use crate::commands::campaign::{
    campaign, default_jobs, interrupt_flag, CampaignConfig, SeedRecord, Seeds,
};
use crate::run::{resolve, InputError};
use serde::Serialize;
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
}

#[derive(Serialize)]
struct Failure<'a> {
    scenario: &'a str,
    seed: u64,
    check: &'a str,
    message: &'a str,
    repro: &'a str,
}

/// One check across a campaign: how many seeds it passed, failed or had nothing to judge in,
/// and how much it judged in all.
#[derive(Serialize, Default)]
struct CheckTally {
    pass: usize,
    fail: usize,
    #[serde(rename = "n/a")]
    not_applicable: usize,
    /// Why it had nothing to judge, with the number of seeds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    not_applicable_reasons: BTreeMap<String, usize>,
    judged: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Summary<'a> {
    scenarios: Vec<String>,
    /// The seed range asked for (inclusive); `seeds` is how many of them finished.
    seed_range: String,
    seeds: usize,
    design: String,
    passed: usize,
    failed_seeds: usize,
    failing_seeds_by_check: BTreeMap<&'a str, usize>,
    /// Per check, over the seeds that finished.
    checks: BTreeMap<String, CheckTally>,
    interrupted: bool,
    wall_seconds: f64,
    failures: Vec<Failure<'a>>,
}

fn xml_escape(s: &str) -> String {
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
        xml_escape(design),
        records.len()
    );
    for (scenario, rs) in by_scenario {
        let f = rs.iter().filter(|r| !r.failures.is_empty()).count();
        let t: f64 = rs.iter().map(|r| r.wall_seconds).sum();
        x += &format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"0\" time=\"{t:.3}\">\n",
            xml_escape(&format!("{scenario} [{design}]")),
            rs.len()
        );
        for r in rs {
            let name = format!("seed-{}", r.seed);
            let class = xml_escape(&format!("faultline.{scenario}"));
            x += &format!(
                "    <testcase classname=\"{class}\" name=\"{name}\" time=\"{:.3}\">\n",
                r.wall_seconds
            );
            for (check, message) in &r.failures {
                x += &format!(
                    "      <failure type=\"{}\" message=\"{}\">{}\nreproduce: {}</failure>\n",
                    xml_escape(check),
                    xml_escape(&format!("{check}: {message}")),
                    xml_escape(message),
                    xml_escape(&r.repro)
                );
            }
            if !r.checks.is_empty() {
                x += &format!(
                    "      <system-out>{}</system-out>\n",
                    xml_escape(&verdict_lines(r))
                );
            }
            x += "    </testcase>\n";
        }
        x += "  </testsuite>\n";
    }
    x += "</testsuites>\n";
    x
}

fn tally(records: &[SeedRecord]) -> BTreeMap<String, CheckTally> {
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

pub fn fuzz(args: &FuzzArgs) -> Result<ExitCode, InputError> {
    let mut design_name = String::from("fixed");
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        let (scenario, design) = resolve(s, &args.design)?;
        design_name = design.to_string();
        scenarios.push((s.clone(), scenario.name));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/fuzz-{design_name}")));
    std::fs::create_dir_all(&out)
        .map_err(|e| InputError(format!("creating {}: {e}", out.display())))?;
    let total = scenarios.len() as u64 * args.seeds.count();
    let stop = interrupt_flag();
    let started = Instant::now();
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
    let mut failed = 0;
    let cfg = CampaignConfig {
        design: &args.design,
        jobs: args.jobs.unwrap_or_else(default_jobs),
        out: &out,
        timeout: Duration::from_secs(args.timeout_s),
        stop: &stop,
    };
    let records = campaign(&scenarios, &args.seeds, &cfg, |r| {
        if !r.failures.is_empty() {
            failed += 1;
            let checks: Vec<&str> = r.failures.iter().map(|(c, _)| c.as_str()).collect();
            let line = format!(
                "FAIL {} seed {}: {} -> {}",
                r.scenario,
                r.seed,
                checks.join(", "),
                r.repro
            );
            match &bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!("{failed} failed"));
            b.inc(1);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut summary = Summary {
        scenarios: scenarios.iter().map(|(_, n)| n.clone()).collect(),
        seed_range: format!("{}..{}", args.seeds.first, args.seeds.last),
        seeds: records.len(),
        design: design_name.clone(),
        passed: records.iter().filter(|r| r.failures.is_empty()).count(),
        failed_seeds: records.iter().filter(|r| !r.failures.is_empty()).count(),
        failing_seeds_by_check: BTreeMap::new(),
        checks: tally(&records),
        interrupted: stop.load(Ordering::Relaxed),
        wall_seconds: started.elapsed().as_secs_f64(),
        failures: vec![],
    };
    for r in &records {
        for (check, message) in &r.failures {
            *summary.failing_seeds_by_check.entry(check).or_default() += 1;
            summary.failures.push(Failure {
                scenario: &r.scenario,
                seed: r.seed,
                check,
                message,
                repro: &r.repro,
            });
        }
    }
    write(
        &out.join("summary.json"),
        &(serde_json::to_string_pretty(&summary).expect("serialises") + "\n"),
    )?;
    write(&out.join("junit.xml"), &junit(&records, &design_name))?;
    let outcomes: Vec<crate::report::plot::SeedOutcome<'_>> = records
        .iter()
        .map(|r| {
            (
                r.scenario.as_str(),
                r.seed,
                r.failures.iter().map(|(c, _)| c.as_str()).collect(),
            )
        })
        .collect();
    let title = format!("outcomes across seeds ({design_name})");
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
    eprintln!(
        "{} seeds, {} passed, {} failed{}{} in {:.1}s; reports: {}/summary.json, junit.xml, outcomes.png",
        summary.seeds,
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
        summary.wall_seconds,
        out.display()
    );
    Ok(if summary.failed_seeds > 0 || summary.interrupted {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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

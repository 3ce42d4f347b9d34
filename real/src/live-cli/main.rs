//! `faultline-live` (what `faultline live` runs): a scenario's workload against real processes
//! under real faults, judged by the simulator's checkers. One run per seed; `--runs N` runs
//! seeds `seed..seed+N` one after another and writes a campaign summary.
//!
//! Exit codes as everywhere in faultline: 0 every check held, 1 a check failed (or a run could
//! not be carried out), 2 usage or input error (a bad scenario, target or schedule file, a
//! program the target names that is not installed).

use clap::Parser;
use faultline::report::{self, Report};
use faultline_real::live::run::{self, Plan};
use faultline_real::live::{Schedule, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "faultline live",
    bin_name = "faultline live",
    about = "Run a scenario's workload against real processes under real faults, judged by the simulator's checkers"
)]
struct Args {
    /// The scenario whose workload, fault rates and durations the run takes.
    #[arg(default_value = "scenarios/live/etcd.toml")]
    scenario: String,
    /// The target file: how to start the nodes (targets/*.toml).
    #[arg(long, default_value = "targets/etcd-3.toml")]
    target: PathBuf,
    /// The seed the fault schedule is drawn from (the first, with --runs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs one after another, seeds seed.. seed+runs-1; writes summary.json and junit.xml.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// The fault period in seconds (default: the scenario's duration_s).
    #[arg(long)]
    duration_s: Option<f64>,
    /// The quiet period after it, every node up and every link healed (default: the
    /// scenario's quiet_s).
    #[arg(long)]
    quiet_s: Option<f64>,
    /// Replay this schedule file instead of drawing faults from the seed.
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// Where reports go: <out>/<target>/seed-<n>/.
    #[arg(long, default_value = "results/live")]
    out: PathBuf,
    /// What `{bin_dir}` in a target means (default: this program's folder, where
    /// faultline-store is built).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the nodes' data folders and logs of passing runs too.
    #[arg(long)]
    keep_data: bool,
    /// Seconds between the compactor's ticks (default: the scenario's etcd.compact_interval_s).
    #[arg(long)]
    compact_interval_s: Option<f64>,
    /// Every N-th compactor tick compacts at a delete's revision, as an operator would (0: never).
    #[arg(long, default_value_t = 2)]
    compact_edge_every: u32,
    /// Judge recorded live runs again (their seed folders) with this build's checks, rewriting
    /// their reports; runs nothing.
    #[arg(long, num_args = 1.., value_name = "SEED_DIR")]
    rejudge: Vec<PathBuf>,
}

fn positive(flag: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{flag} {v}: must be a positive number of seconds"))
    }
}

fn plan(args: &Args) -> Result<Plan, String> {
    let scenario = faultline::scenario::load(&args.scenario).map_err(|e| e.to_string())?;
    let target = Target::load(&args.target).map_err(|e| e.to_string())?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    if let Some(missing) = target.missing_program(&bin_dir) {
        return Err(format!(
            "{}: command[0]: {} is not installed{}",
            target.path.display(),
            missing.display(),
            if missing.starts_with("/usr/bin/etcd") {
                " (Debian's etcd 3.4: apt-get install etcd-server etcd-client)"
            } else {
                " (make real-build builds faultline-store)"
            }
        ));
    }
    if args.runs == 0 {
        return Err("--runs 0: give at least 1".into());
    }
    let duration_s = positive(
        "--duration-s",
        args.duration_s.unwrap_or(scenario.duration_s as f64),
    )?;
    let quiet_s = match args.quiet_s {
        Some(q) if !(q.is_finite() && q >= 0.0) => {
            return Err(format!("--quiet-s {q}: must be 0 or more seconds"))
        }
        Some(q) => q,
        None => scenario.quiet_s as f64,
    };
    let compact_interval_s = positive(
        "--compact-interval-s",
        args.compact_interval_s
            .unwrap_or(scenario.etcd.compact_interval_s as f64),
    )?;
    let clients = scenario.topology.clients as usize
        + scenario.workload.watchers as usize
        + scenario.workload.lease_clients as usize
        + 1;
    let schedule = match &args.schedule {
        Some(path) => {
            let s = Schedule::load(path, target.nodes, clients).map_err(|e| e.to_string())?;
            Some((path.clone(), s))
        }
        None => None,
    };
    Ok(Plan {
        scenario_path: args.scenario.clone(),
        scenario,
        target,
        duration_s,
        quiet_s,
        schedule,
        bin_dir,
        out: args.out.clone(),
        keep_data: args.keep_data,
        compact_interval: Duration::from_secs_f64(compact_interval_s),
        compact_edge_every: args.compact_edge_every,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.rejudge.is_empty() {
        return rejudge(&args.rejudge);
    }
    let plan = match plan(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultline live: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut reports: Vec<Report> = Vec::new();
    let mut broken = Vec::new();
    for seed in args.seed..args.seed + args.runs {
        eprintln!(
            "live run: {} against {} ({} nodes), seed {seed}, {:.0} s of faults + {:.0} s quiet",
            plan.scenario.name, plan.target.name, plan.target.nodes, plan.duration_s, plan.quiet_s
        );
        match runtime.block_on(run::run(&plan, seed)) {
            Ok(r) => {
                print!("{}", report::render(&r));
                reports.push(r);
            }
            Err(e) => {
                eprintln!("faultline live: seed {seed}: the run could not be carried out: {e:#}");
                broken.push((seed, format!("{e:#}")));
            }
        }
    }
    if args.runs > 1 {
        let dir = plan.out.join(&plan.target.name);
        if let Err(e) = write_campaign(&dir, &plan, &args, &reports, &broken) {
            eprintln!("faultline live: campaign reports not written: {e:#}");
        }
    }
    let failed = reports.iter().filter(|r| r.status != "pass").count() + broken.len();
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn rejudge(dirs: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for dir in dirs {
        match run::rejudge(dir) {
            Ok(r) => {
                print!("{}", report::render(&r));
                failed |= r.status != "pass";
            }
            Err(e) => {
                eprintln!("faultline live: {}: {e:#}", dir.display());
                return ExitCode::from(2);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// summary.json and junit.xml for a campaign of live runs, naming the seeds, scenario and
/// target they cover.
fn write_campaign(
    dir: &std::path::Path,
    plan: &Plan,
    args: &Args,
    reports: &[Report],
    broken: &[(u64, String)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let seeds = format!("{}..{}", args.seed, args.seed + args.runs - 1);
    let runs: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "seed": r.seed,
                "status": r.status,
                "real_seconds": r.wall_seconds,
                "failed_checks": r.failed_checks().map(|c| serde_json::json!({
                    "check": c.name,
                    "violations": c.violations,
                    "first": c.first_violation.as_ref().map(|v| &v.message),
                })).collect::<Vec<_>>(),
                "results_dir": r.results_dir,
                "repro": r.repro,
            })
        })
        .chain(broken.iter().map(|(seed, e)| {
            serde_json::json!({ "seed": seed, "status": "not carried out", "error": e })
        }))
        .collect();
    let passed = reports.iter().filter(|r| r.status == "pass").count();
    let summary = serde_json::json!({
        "scenario": plan.scenario.name,
        "scenario_path": plan.scenario_path,
        "target": plan.target.name,
        "target_path": plan.target.path.display().to_string(),
        "seeds": seeds,
        "runs": args.runs,
        "passed": passed,
        "failed": reports.len() - passed,
        "not_carried_out": broken.len(),
        "fault_seconds": plan.duration_s,
        "quiet_seconds": plan.quiet_s,
        "tolerances": run::TOLERANCES,
        "records": runs,
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    x += &format!(
        "  <testsuite name=\"live {} {}\" tests=\"{}\" failures=\"{}\">\n",
        report::xml_escape(&plan.scenario.name),
        report::xml_escape(&plan.target.name),
        reports.len() + broken.len(),
        reports.len() - passed + broken.len()
    );
    for r in reports {
        x += &format!(
            "    <testcase classname=\"live.{}\" name=\"seed {}\" time=\"{:.1}\">",
            report::xml_escape(&plan.target.name),
            r.seed,
            r.wall_seconds
        );
        let failures: Vec<String> = r
            .failed_checks()
            .map(|c| {
                format!(
                    "{}: {}",
                    c.name,
                    c.first_violation
                        .as_ref()
                        .map_or("", |v| v.message.as_str())
                )
            })
            .collect();
        if failures.is_empty() {
            x += "</testcase>\n";
        } else {
            x += &format!(
                "\n      <failure message=\"{}\">{}\nreproduce: {}</failure>\n    </testcase>\n",
                report::xml_escape(&failures.join("; ")),
                report::xml_escape(&failures.join("\n")),
                report::xml_escape(&r.repro)
            );
        }
    }
    for (seed, e) in broken {
        x += &format!(
            "    <testcase classname=\"live.{}\" name=\"seed {seed}\"><error message=\"{}\"/></testcase>\n",
            report::xml_escape(&plan.target.name),
            report::xml_escape(e)
        );
    }
    x += "  </testsuite>\n</testsuites>\n";
    std::fs::write(dir.join("junit.xml"), x)?;
    eprintln!(
        "{} live runs of {} against {} (seeds {seeds}): {passed} passed, {} failed, {} not carried out; reports: {}/summary.json, junit.xml",
        args.runs,
        plan.scenario.name,
        plan.target.name,
        reports.len() - passed,
        broken.len(),
        dir.display()
    );
    Ok(())
}

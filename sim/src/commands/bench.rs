//! `faultline bench`: simulated seconds per wall second, seeds per minute and peak memory per
//! seed, one seed at a time so the figures are for one core; with `--checker`, how long one
//! checker takes over a generated history. A benchmark, not a test.

use crate::commands::campaign::{run_child, ChildOutcome, Seeds};
use crate::run::{resolve, InputError};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Scenario files (default: every scenarios/*.toml).
    pub scenarios: Vec<String>,
    #[arg(long, default_value = "1..3")]
    pub seeds: Seeds,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Time this checker alone over a generated valid history instead (only `linearizable`).
    #[arg(long)]
    pub checker: Option<String>,
    /// Client operations in the generated history (with `--checker`).
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: usize,
}

#[derive(Serialize)]
struct BenchRow {
    scenario: String,
    seeds: u64,
    sim_seconds: f64,
    wall_seconds: f64,
    sim_s_per_wall_s: f64,
    seeds_per_minute: f64,
    peak_rss_mib: f64,
}

pub fn bench(args: &BenchArgs) -> Result<ExitCode, InputError> {
    if let Some(name) = &args.checker {
        return bench_checker(name, args.ops);
    }
    let mut scenarios = args.scenarios.clone();
    if scenarios.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir("scenarios")
            .map_err(|e| InputError(format!("scenarios/: {e}")))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| p.display().to_string())
            .collect();
        found.sort();
        scenarios = found;
    }
    let stop = AtomicBool::new(false);
    let mut rows = Vec::new();
    for s in &scenarios {
        let (scenario, _) = resolve(s, &[])?;
        let mut row = BenchRow {
            scenario: scenario.name.clone(),
            seeds: 0,
            sim_seconds: 0.0,
            wall_seconds: 0.0,
            sim_s_per_wall_s: 0.0,
            seeds_per_minute: 0.0,
            peak_rss_mib: 0.0,
        };
        for seed in args.seeds.iter() {
            // One seed at a time: the figures are for one core.
            let started = Instant::now();
            let outcome = run_child(
                s,
                seed,
                &[],
                &args.out.join("bench"),
                Duration::from_secs(1800),
                &stop,
            );
            let wall = started.elapsed().as_secs_f64();
            if let ChildOutcome::Done(r) = outcome {
                row.seeds += 1;
                row.sim_seconds += r.sim_seconds;
                row.wall_seconds += wall;
                row.peak_rss_mib = row.peak_rss_mib.max(r.peak_rss_mib);
            }
        }
        if row.wall_seconds > 0.0 {
            row.sim_s_per_wall_s = row.sim_seconds / row.wall_seconds;
            row.seeds_per_minute = row.seeds as f64 * 60.0 / row.wall_seconds;
        }
        rows.push(row);
    }
    println!(
        "{:<28} {:>5} {:>14} {:>12} {:>14}",
        "scenario", "seeds", "sim s/wall s", "seeds/min", "peak MiB/seed"
    );
    for r in &rows {
        println!(
            "{:<28} {:>5} {:>14.0} {:>12.1} {:>14.0}",
            r.scenario, r.seeds, r.sim_s_per_wall_s, r.seeds_per_minute, r.peak_rss_mib
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| InputError(e.to_string()))?;
    let path = args.out.join("bench.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&rows).expect("serialises") + "\n",
    )
    .map_err(|e| InputError(e.to_string()))?;
    println!("written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Generates a valid history of `ops` operations and times one check of it, on this thread.
fn bench_checker(name: &str, ops: usize) -> Result<ExitCode, InputError> {
    use crate::checkers::{Checker, Linearizable};
    if name != "linearizable" {
        return Err(InputError(format!(
            "--checker {name}: only `linearizable` has a generated history to time"
        )));
    }
    let started = Instant::now();
    let history = crate::checkers::linearizable::generate::history(ops, 1);
    let generated = started.elapsed().as_secs_f64();
    let (started, cpu_started) = (Instant::now(), cpu_seconds());
    let report = Linearizable.check(&history);
    let (checked, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu_started);
    let amounts: Vec<String> = report
        .judged
        .iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    println!(
        "linearizable: {} operations generated in {generated:.2} s, checked in {checked:.2} s ({cpu:.2} s of CPU, one thread) judging {}; {}",
        history.ops.len(),
        amounts.join(", "),
        match report.first() {
            None => "no violation".to_string(),
            Some(v) => format!("{} violations, first: {}", report.total, v.message),
        }
    );
    Ok(if report.first().is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// CPU time this process has used: on a shared machine, the figure wall time cannot give.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

//! `faultline bench`: simulated seconds per wall second, seeds per minute and peak memory per
//! seed, one seed at a time so the figures are for one core. A benchmark, not a test.

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
                crate::run::Keep::Failed,
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

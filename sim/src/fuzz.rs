//! Campaigns: many seeds, each in its own child process under a wall-clock watchdog.
//!
//! `fuzz` writes `summary.json` with one entry per failed check of each failed seed; a seed that
//! panics, hangs or crashes is a failed seed, never a crashed campaign. `determinism` runs each
//! seed twice and compares trace hashes; `bench` measures speed and memory one seed at a time.
//! This runs outside the simulation: OS threads and files are fine here.

use crate::report::Report;
use crate::{resolve, InputError, RESULT_PREFIX};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An inclusive seed range, written `A..B` (or a single seed `A`).
#[derive(Clone, Debug)]
pub struct Seeds {
    pub first: u64,
    pub last: u64,
}

impl std::str::FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a seed range; write A..B (inclusive) or a single seed");
        let (a, b) = match s.split_once("..") {
            Some((a, b)) => (a, b.trim_start_matches('=')),
            None => (s, s),
        };
        let first: u64 = a.trim().parse().map_err(|_| bad())?;
        let last: u64 = b.trim().parse().map_err(|_| bad())?;
        if last < first {
            return Err(format!("seed range {s} is empty: {last} < {first}"));
        }
        Ok(Seeds { first, last })
    }
}

impl Seeds {
    fn iter(&self) -> impl Iterator<Item = u64> {
        self.first..=self.last
    }
    fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

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

#[derive(clap::Args)]
pub struct DeterminismArgs {
    pub scenario: String,
    #[arg(long, default_value = "1..10")]
    pub seeds: Seeds,
    #[arg(long = "design", value_name = "AREA=VARIANT")]
    pub design: Vec<String>,
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long, default_value = "results/determinism")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Scenario files (default: every scenarios/*.toml).
    pub scenarios: Vec<String>,
    #[arg(long, default_value = "1..3")]
    pub seeds: Seeds,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

/// How one child run ended.
enum ChildOutcome {
    Done(Box<Report>),
    /// No result line: crashed, killed by a signal, or hung and killed by the watchdog.
    Died(String),
}

/// Runs `faultline run ... --json-line` for one seed, killing it after `timeout`.
fn run_child(
    scenario: &str,
    seed: u64,
    design: &[String],
    out: &Path,
    timeout: Duration,
    stop: &AtomicBool,
) -> ChildOutcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return ChildOutcome::Died(format!("cannot find own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(scenario)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--out")
        .arg(out)
        .arg("--json-line");
    for d in design {
        cmd.arg("--design").arg(d);
    }
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return ChildOutcome::Died(format!("cannot start child: {e}")),
    };
    // Drain the pipes on their own threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (out_text, err_text) = std::thread::scope(|s| {
        let o = s.spawn(move || {
            let mut t = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut t);
            t
        });
        let e = s.spawn(move || {
            let mut t = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut t);
            t
        });
        let started = Instant::now();
        let mut verdict = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && status.code() != Some(1) {
                        verdict = Some(format!("child exited with {status}"));
                    }
                    break;
                }
                Ok(None) if started.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    verdict = Some(format!(
                        "hung: still running after {} s of wall time, killed",
                        timeout.as_secs()
                    ));
                    break;
                }
                Ok(None) if stop.load(Ordering::Relaxed) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    verdict = Some("interrupted".into());
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    verdict = Some(format!("cannot wait for child: {e}"));
                    break;
                }
            }
        }
        let out = o.join().unwrap_or_default();
        let err = e.join().unwrap_or_default();
        (
            out,
            verdict.map(|v| format!("{v}; stderr: {}", err.lines().last().unwrap_or(""))),
        )
    });
    if let Some(line) = out_text.lines().find(|l| l.starts_with(RESULT_PREFIX)) {
        if let Ok(report) = serde_json::from_str::<Report>(&line[RESULT_PREFIX.len()..]) {
            return ChildOutcome::Done(Box::new(report));
        }
    }
    ChildOutcome::Died(err_text.unwrap_or_else(|| "child printed no result".into()))
}

/// Runs every job on `jobs` workers; `each` sees every finished job in completion order.
fn run_pool<J: Send, R: Send>(
    jobs: Vec<J>,
    workers: usize,
    work: impl Fn(&J) -> R + Sync,
    mut each: impl FnMut(&J, R),
) {
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<J>>());
    let (tx, rx) = std::sync::mpsc::channel::<(J, R)>();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (queue, work) = (&queue, &work);
            s.spawn(move || loop {
                let Some(job) = queue.lock().expect("queue lock poisoned").pop_front() else {
                    return;
                };
                let r = work(&job);
                if tx.send((job, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for (job, r) in rx {
            each(&job, r);
        }
    });
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Stops launching seeds on Ctrl-C; reports still get written for those that finished.
fn interrupt_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed));
    stop
}

#[derive(Serialize)]
struct Failure {
    scenario: String,
    seed: u64,
    check: String,
    message: String,
    repro: String,
}

#[derive(Serialize)]
struct Summary {
    scenarios: Vec<String>,
    seeds: u64,
    design: String,
    passed: u64,
    failed_seeds: u64,
    failing_seeds_by_check: BTreeMap<String, u64>,
    interrupted: bool,
    wall_seconds: f64,
    failures: Vec<Failure>,
}

pub fn fuzz(args: &FuzzArgs) -> Result<ExitCode, InputError> {
    let mut design_name = String::from("fixed");
    let mut names = Vec::new();
    for s in &args.scenarios {
        let (scenario, design) = resolve(s, &args.design)?;
        design_name = design.to_string();
        names.push(scenario.name);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/fuzz-{design_name}")));
    let jobs: Vec<(String, u64)> = args
        .scenarios
        .iter()
        .flat_map(|s| args.seeds.iter().map(move |seed| (s.clone(), seed)))
        .collect();
    let total = jobs.len() as u64;
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
    let timeout = Duration::from_secs(args.timeout_s);
    let mut summary = Summary {
        scenarios: names,
        seeds: 0,
        design: design_name,
        passed: 0,
        failed_seeds: 0,
        failing_seeds_by_check: BTreeMap::new(),
        interrupted: false,
        wall_seconds: 0.0,
        failures: vec![],
    };
    let workers = args.jobs.unwrap_or_else(default_jobs);
    run_pool(
        jobs,
        workers,
        |(scenario, seed)| {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            Some(run_child(
                scenario,
                *seed,
                &args.design,
                &out,
                timeout,
                &stop,
            ))
        },
        |(scenario, seed), outcome| {
            let Some(outcome) = outcome else { return };
            if matches!(&outcome, ChildOutcome::Died(m) if m.starts_with("interrupted")) {
                return;
            }
            summary.seeds += 1;
            let repro = crate::report::repro_command(scenario, *seed, &args.design);
            let mut failed: Vec<(String, String)> = Vec::new();
            let mut name = scenario.clone();
            match outcome {
                ChildOutcome::Done(r) => {
                    name = r.scenario.clone();
                    if let Some(p) = &r.panic {
                        failed.push(("panic".into(), p.clone()));
                    }
                    for c in r.failed_checks() {
                        let m = c
                            .first_violation
                            .as_ref()
                            .map(|v| format!("at {:.3}s: {}", v.at_s, v.message))
                            .unwrap_or_default();
                        failed.push((c.name.clone(), m));
                    }
                }
                ChildOutcome::Died(m) => {
                    let check = if m.starts_with("hung") {
                        "hang"
                    } else {
                        "crash"
                    };
                    failed.push((check.into(), m));
                }
            }
            if failed.is_empty() {
                summary.passed += 1;
            } else {
                summary.failed_seeds += 1;
                let line = format!(
                    "FAIL {name} seed {seed}: {} -> {repro}",
                    failed
                        .iter()
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
                for (check, message) in failed {
                    *summary
                        .failing_seeds_by_check
                        .entry(check.clone())
                        .or_default() += 1;
                    summary.failures.push(Failure {
                        scenario: name.clone(),
                        seed: *seed,
                        check,
                        message,
                        repro: repro.clone(),
                    });
                }
            }
            if let Some(b) = &bar {
                b.set_message(format!("{} failed", summary.failed_seeds));
                b.inc(1);
            }
        },
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    summary.interrupted = stop.load(Ordering::Relaxed);
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary
        .failures
        .sort_by(|a, b| (&a.scenario, a.seed, &a.check).cmp(&(&b.scenario, b.seed, &b.check)));
    std::fs::create_dir_all(&out)
        .map_err(|e| InputError(format!("creating {}: {e}", out.display())))?;
    let path = out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).expect("serialises") + "\n",
    )
    .map_err(|e| InputError(format!("writing {}: {e}", path.display())))?;
    let checks: Vec<String> = summary
        .failing_seeds_by_check
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!(
        "{} seeds, {} passed, {} failed{}{} in {:.1}s; summary: {}",
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
        path.display()
    );
    Ok(if summary.failed_seeds > 0 || summary.interrupted {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn determinism(args: &DeterminismArgs) -> Result<ExitCode, InputError> {
    resolve(&args.scenario, &args.design)?;
    let stop = interrupt_flag();
    let timeout = Duration::from_secs(600);
    let jobs: Vec<(u64, &'static str)> = args
        .seeds
        .iter()
        .flat_map(|s| [(s, "a"), (s, "b")])
        .collect();
    let mut hashes: BTreeMap<u64, BTreeMap<&'static str, Result<Report, String>>> = BTreeMap::new();
    run_pool(
        jobs,
        args.jobs.unwrap_or_else(default_jobs),
        |(seed, side)| {
            run_child(
                &args.scenario,
                *seed,
                &args.design,
                &args.out.join(side),
                timeout,
                &stop,
            )
        },
        |(seed, side), outcome| {
            let r = match outcome {
                ChildOutcome::Done(r) => Ok(*r),
                ChildOutcome::Died(m) => Err(m),
            };
            hashes.entry(*seed).or_default().insert(side, r);
        },
    );
    let mut mismatches = 0;
    for (seed, sides) in &hashes {
        let (Some(a), Some(b)) = (sides.get("a"), sides.get("b")) else {
            continue;
        };
        match (a, b) {
            (Ok(a), Ok(b)) if a.trace_hash == b.trace_hash && !a.trace_hash.is_empty() => {
                println!("seed {seed}: same trace hash {}", &a.trace_hash[..16]);
            }
            (Ok(a), Ok(b)) => {
                mismatches += 1;
                println!(
                    "seed {seed}: DIFFERENT trace hashes {} and {}",
                    a.trace_hash, b.trace_hash
                );
                if let Some(line) =
                    first_difference(Path::new(&a.results_dir), Path::new(&b.results_dir))
                {
                    println!("  first difference: {line}");
                }
            }
            (a, b) => {
                mismatches += 1;
                println!(
                    "seed {seed}: a run failed to finish: {:?} / {:?}",
                    a.as_ref().err(),
                    b.as_ref().err()
                );
            }
        }
    }
    println!("{} seeds, {} not reproducible", hashes.len(), mismatches);
    Ok(
        if mismatches > 0 || hashes.len() as u64 != args.seeds.count() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn first_difference(a: &Path, b: &Path) -> Option<String> {
    let ta = std::fs::read_to_string(a.join("trace.log")).ok()?;
    let tb = std::fs::read_to_string(b.join("trace.log")).ok()?;
    for (i, (la, lb)) in ta.lines().zip(tb.lines()).enumerate() {
        if la != lb {
            return Some(format!("line {}:\n    {la}\n    {lb}", i + 1));
        }
    }
    Some(format!(
        "one trace is a prefix of the other ({} vs {} lines)",
        ta.lines().count(),
        tb.lines().count()
    ))
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

//! `faultline shrink`: from a failing seed, the smallest run found that fails the same check.
//!
//! The seed's faults are written as a schedule, then cut down in steps, each candidate a
//! scenario file with its `[schedule]` run in a child process under the campaign's watchdog,
//! `--jobs` at once: no faults at all, only those before the first violation, delta debugging
//! over the rest, faults moved to earlier node starts and earlier in time, a shorter fault period
//! and quiet period, fewer clients, watchers, controllers and servers. A candidate is kept when it fails the same check and, for a variant, the fixed
//! design passes every check on it. The result is a scenario file that `faultline run` takes as
//! it is.

use crate::commands::campaign::{
    default_jobs, interrupt_flag, run_child_with, run_pool, ChildOutcome,
};
use crate::commands::candidates::{earlier_in_time, earlier_starts, fewer_nodes, with_schedule};
use crate::commands::ddmin::{ddmin, items, prune, schedule_of};
use crate::report::Report;
use crate::run::{resolve, InputError, Keep};
use crate::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct ShrinkArgs {
    /// Scenario file (TOML).
    pub scenario: String,
    #[arg(long)]
    pub seed: u64,
    #[arg(long = "design", value_name = "AREA=VARIANT")]
    pub design: Vec<String>,
    /// The check the smaller run must fail (default: the first check the seed fails).
    #[arg(long, value_name = "NAME")]
    pub check: Option<String>,
    /// Where the shrunk scenario goes (default: results/shrink).
    #[arg(long, default_value = "results/shrink")]
    pub out: PathBuf,
    /// Candidates run at once (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Wall-clock seconds after which a candidate counts as hung and is killed.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

/// What a shrink ended with.
pub struct Shrunk {
    pub check: String,
    pub runs: usize,
    pub wall_seconds: f64,
    pub trace_hash: String,
}

struct Search<'a> {
    seed: u64,
    check: String,
    /// `--design AREA=fixed` for every variant being shrunk.
    fixed: Vec<String>,
    dir: PathBuf,
    jobs: usize,
    timeout: Duration,
    stop: &'a AtomicBool,
    runs: AtomicUsize,
    files: AtomicUsize,
}

impl Search<'_> {
    fn fails(&self, report: &Report) -> bool {
        report.failed_checks().any(|c| c.name == self.check)
            || (self.check == "panic" && report.panic.is_some())
    }

    /// Runs every candidate (at most `jobs` at once); the index of the first that fails the
    /// check, with its report.
    fn first_failing(&self, candidates: &[Scenario]) -> Option<(usize, Box<Report>)> {
        let mut jobs = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let text = toml::to_string(c).expect("a scenario serialises");
            // A candidate its own loader refuses (a topology too small) is not a failing run.
            if crate::scenario::parse("candidate", &text).is_err() {
                continue;
            }
            let n = self.files.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("candidates/c-{n}.toml"));
            if std::fs::write(&path, text).is_ok() {
                jobs.push((i, path));
            }
        }
        let mut failing: Vec<(usize, PathBuf, Box<Report>)> = Vec::new();
        let runs_dir = self.dir.join("candidates/runs");
        run_pool(
            jobs,
            self.jobs,
            |(_, path)| {
                if self.stop.load(Ordering::Relaxed) {
                    return None;
                }
                let outcome = run_child_with(
                    &path.display().to_string(),
                    self.seed,
                    &[],
                    &runs_dir,
                    &[],
                    self.timeout,
                    self.stop,
                    Keep::None,
                );
                Some(outcome)
            },
            |(i, path), outcome| {
                let Some(outcome) = outcome else { return };
                self.runs.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    ChildOutcome::Done(r) if self.fails(&r) => failing.push((*i, path.clone(), r)),
                    _ => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            },
        );
        failing.sort_by_key(|(i, _, _)| *i);
        let mut found = None;
        for (i, path, r) in failing {
            if found.is_none() && self.fixed_passes(&path) {
                found = Some((i, r));
            }
            let _ = std::fs::remove_file(path);
        }
        found
    }

    /// Whether the candidate passes every check with the fixed design in place of the variant
    /// (always, when no variant is being shrunk): a run too short or too small to judge must
    /// not pass for the variant's failure.
    fn fixed_passes(&self, path: &Path) -> bool {
        if self.fixed.is_empty() || self.stop.load(Ordering::Relaxed) {
            return true;
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let outcome = run_child_with(
            &path.display().to_string(),
            self.seed,
            &self.fixed,
            &self.dir.join("candidates/runs"),
            &[],
            self.timeout,
            self.stop,
            Keep::None,
        );
        matches!(outcome, ChildOutcome::Done(r) if r.status == "pass")
    }
}

fn seconds(s: &Scenario) -> u64 {
    s.duration_s + s.quiet_s
}

fn faults(s: &Scenario) -> usize {
    s.schedule.as_ref().map_or(0, |s| s.len())
}

pub fn shrink(args: &ShrinkArgs) -> Result<ExitCode, InputError> {
    let stop = interrupt_flag();
    match shrink_seed(args, &stop)? {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => Ok(ExitCode::from(2)),
    }
}

/// Shrinks one failing seed; `None` when the seed does not fail (the reason is printed).
pub fn shrink_seed(args: &ShrinkArgs, stop: &AtomicBool) -> Result<Option<Shrunk>, InputError> {
    let started = Instant::now();
    let (mut scenario, design) = resolve(&args.scenario, &args.design)?;
    // Named for the scenario, seed and variant, so shrinking two variants on one seed keeps both.
    let stem = match design.selections().join("-").replace('=', "-") {
        d if d.is_empty() => format!("{}-seed-{}", scenario.name, args.seed),
        d => format!("{}-seed-{}-{d}", scenario.name, args.seed),
    };
    let dir = args.out.join(&stem);
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|e| InputError(format!("{}: {e}", d.display())))
    };
    mkdir(&dir.join("candidates"))?;
    let schedule_file = dir.join("original-schedule.toml");
    let first = run_child_with(
        &args.scenario,
        args.seed,
        &args.design,
        &dir.join("candidates/runs"),
        &[
            "--write-schedule".to_string(),
            schedule_file.display().to_string(),
        ],
        Duration::from_secs(args.timeout_s),
        stop,
        Keep::None,
    );
    let report = match first {
        ChildOutcome::Done(r) => r,
        ChildOutcome::Died(why) => {
            return Err(InputError(format!(
                "{} seed {}: the run died ({why}); a run that dies writes no schedule to shrink",
                args.scenario, args.seed
            )))
        }
    };
    let check = match (&args.check, report.failed_checks().next()) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c.name.clone(),
        (None, None) if report.panic.is_some() => "panic".into(),
        (None, None) => String::new(),
    };
    let fixed = design
        .selections()
        .iter()
        .filter_map(|sel| sel.split_once('='))
        .filter(|(area, _)| !area.contains('.'))
        .map(|(area, _)| format!("{area}=fixed"))
        .collect();
    let search = Search {
        seed: args.seed,
        check,
        fixed,
        dir: dir.clone(),
        jobs: args.jobs.unwrap_or_else(default_jobs).max(1),
        timeout: Duration::from_secs(args.timeout_s),
        stop,
        runs: AtomicUsize::new(1),
        files: AtomicUsize::new(0),
    };
    if search.check.is_empty() || !search.fails(&report) {
        eprintln!(
            "faultline: {} seed {} ({}) does not fail{}: nothing to shrink",
            args.scenario,
            args.seed,
            design,
            args.check
                .as_ref()
                .map(|c| format!(" check {c}"))
                .unwrap_or_default()
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(&schedule_file)
        .map_err(|e| InputError(format!("{}: {e}", schedule_file.display())))?;
    let original: crate::scenario::Schedule = toml::from_str(&text)
        .map_err(|e| InputError(format!("{}: {e}", schedule_file.display())))?;
    // The design goes into the scenario, so the written file fails as it is.
    for sel in design.selections() {
        if let Some((area, variant)) = sel.split_once('=') {
            scenario.design.insert(area.into(), variant.into());
        }
    }
    scenario.schedule = Some(original.clone());
    let before = (faults(&scenario), seconds(&scenario));
    let mut best = scenario.clone();
    let mut best_hash = report.trace_hash.clone();
    let progress = |what: &str, best: &Scenario, search: &Search<'_>| {
        eprintln!(
            "  {what:<28} {} faults, {} s ({} runs, {:.0} s)",
            faults(best),
            seconds(best),
            search.runs.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    };
    eprintln!(
        "shrinking {} seed {} ({design}), failing {}: {} faults, {} s",
        args.scenario, args.seed, search.check, before.0, before.1
    );

    // 1. No faults at all; else only those before the first violation.
    let violation_s = report
        .checks
        .iter()
        .find(|c| c.name == search.check)
        .and_then(|c| c.first_violation.as_ref())
        .map(|v| v.at_s);
    let mut quick = vec![with_schedule(&best, schedule_of(&original, &[]))];
    if let Some(at) = violation_s {
        let mut early = original.clone();
        early.partitions.retain(|p| p.start_s < at);
        early.kills.retain(|k| k.at_s < at);
        early.pauses.retain(|p| p.at_s < at);
        early.membership.retain(|m| m.at_s < at);
        quick.push(with_schedule(&best, early));
    }
    if let Some((i, r)) = search.first_failing(&quick) {
        best = quick.swap_remove(i);
        best_hash = r.trace_hash;
    }
    progress("first cut", &best, &search);

    // 2. Delta debugging over the faults left. Compaction failures and member crashes name the
    // node start they happen in, so kills can look needed only because they make that start
    // exist: moved to an earlier start, they may need no kill, and ddmin runs again.
    loop {
        let base = best.schedule.clone().unwrap_or_default();
        let all = items(&base);
        if all.len() > 1 {
            let mut last_hash = None;
            let kept = ddmin(all, search.jobs, |group| {
                let candidates: Vec<Scenario> = group
                    .iter()
                    .map(|items| with_schedule(&best, schedule_of(&base, items)))
                    .collect();
                let (i, r) = search.first_failing(&candidates)?;
                last_hash = Some(r.trace_hash.clone());
                Some(i)
            });
            // The last candidate that failed is the one ddmin kept.
            if let Some(hash) = last_hash {
                best = with_schedule(&best, schedule_of(&base, &kept));
                best_hash = hash;
            }
        }
        let earlier = earlier_starts(&best);
        match search.first_failing(&earlier) {
            Some((i, r)) => {
                best = earlier[i].clone();
                best_hash = r.trace_hash;
            }
            None => break,
        }
    }
    progress("delta debugging", &best, &search);

    // 3. The timed faults moved earlier together (a late cause makes a long run), then a
    // shorter fault period, then a shorter quiet period: several lengths side by side,
    // the shortest that still fails kept, until the step is small.
    let shifted = earlier_in_time(&best, search.jobs.max(2));
    if let Some((i, r)) = search.first_failing(&shifted) {
        best = shifted[i].clone();
        best_hash = r.trace_hash;
    }
    for quiet in [false, true] {
        loop {
            let current = if quiet { best.quiet_s } else { best.duration_s };
            let floor = if quiet { 0 } else { 1 };
            if current <= floor + 5 {
                break;
            }
            let n = search.jobs.max(2) as u64;
            let lengths: Vec<u64> = (1..=n)
                .map(|k| floor + (current - floor) * k / (n + 1))
                .filter(|l| *l < current)
                .collect();
            let candidates: Vec<Scenario> = lengths
                .iter()
                .map(|&l| {
                    let mut c = best.clone();
                    if quiet {
                        c.quiet_s = l;
                    } else {
                        c.duration_s = l;
                    }
                    prune(&mut c);
                    c
                })
                .collect();
            match search.first_failing(&candidates) {
                Some((i, r)) => {
                    best = candidates[i].clone();
                    best_hash = r.trace_hash;
                }
                None => break,
            }
        }
    }
    progress("shorter periods", &best, &search);

    // 4. Fewer clients, watchers, controllers and servers, one at a time.
    while let Some((i, r)) = search.first_failing(&fewer_nodes(&best)) {
        best = fewer_nodes(&best).swap_remove(i);
        best_hash = r.trace_hash;
    }
    progress("fewer nodes", &best, &search);

    // The result: a scenario named for where it came from, its schedule inside.
    best.name = format!("{stem}-shrunk");
    best.description = format!(
        "shrunk from {} seed {} ({}): fails {}",
        args.scenario, args.seed, design, search.check
    );
    let file = args.out.join(format!("{stem}.toml"));
    let after = (faults(&best), seconds(&best));
    let header = format!(
        "# Written by faultline shrink: {} seed {} ({}) fails check {}.\n\
         # {} faults, {} s -> {} faults, {} s. Replay: faultline run {}\n",
        args.scenario,
        args.seed,
        design,
        search.check,
        before.0,
        before.1,
        after.0,
        after.1,
        file.display()
    );
    let text = header + &toml::to_string(&best).expect("a scenario serialises");
    std::fs::write(&file, text).map_err(|e| InputError(format!("{}: {e}", file.display())))?;
    let _ = std::fs::remove_dir_all(dir.join("candidates"));
    let shrunk = Shrunk {
        check: search.check.clone(),
        runs: search.runs.load(Ordering::Relaxed),
        wall_seconds: started.elapsed().as_secs_f64(),
        trace_hash: best_hash,
    };
    println!(
        "{} seed {} ({}) fails {}: {} faults, {} s → {} faults, {} s; {} runs in {:.0} s",
        scenario.name,
        args.seed,
        design,
        shrunk.check,
        before.0,
        before.1,
        after.0,
        after.1,
        shrunk.runs,
        shrunk.wall_seconds
    );
    println!("  written    {}", file.display());
    println!("  trace hash {}", &shrunk.trace_hash);
    println!("  replay     faultline run {}", file.display());
    Ok(Some(shrunk))
}

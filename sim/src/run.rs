//! One seed in this process: resolve the scenario and design, simulate, check, write the seed's
//! folder and print its summary (or the one-line result a campaign's parent reads).
//!
//! A panic inside the run is caught and becomes that seed's `panic` report; input errors come
//! back as `InputError` (exit code 2).

use crate::report::{self, plot, Report};
use crate::{checkers, report::metrics, scenario, world};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::design::Design;

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Scenario file (TOML).
    pub scenario: String,
    /// The seed (default: the seed its schedule was drawn from, else 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replay the faults of this schedule file instead of drawing them from the seed.
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Write every fault the run injected to FILE as a schedule (TOML) that replays it.
    #[arg(long, value_name = "FILE")]
    pub write_schedule: Option<PathBuf>,
    /// Design variant, AREA=VARIANT (repeatable); overrides the scenario's [design].
    #[arg(long = "design", value_name = "AREA=VARIANT")]
    pub design: Vec<String>,
    /// Results folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Print the result as one JSON line (used by campaigns' child processes).
    #[arg(long, hide = true)]
    pub json_line: bool,
    /// Which files the seed's folder keeps (campaigns pass their `--keep`).
    #[arg(long, value_enum, default_value_t = Keep::All, hide = true)]
    pub keep: Keep,
}

/// What a seed leaves in its folder. A campaign of thousands of seeds keeps the full artifacts
/// (trace, history, timeline) only where a person will read them: the failing seeds.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Keep {
    /// Every seed keeps report.json, trace.log, history.json.gz and the timeline plot.
    All,
    /// Failing seeds keep everything; passing seeds keep report.json only.
    #[default]
    Failed,
    /// Failing seeds keep report.json only; passing seeds keep nothing.
    None,
}

impl Keep {
    /// The flag's value, as a child's command line spells it.
    pub fn as_arg(self) -> &'static str {
        match self {
            Keep::All => "all",
            Keep::Failed => "failed",
            Keep::None => "none",
        }
    }

    /// (report.json, the full artifacts) for a seed that passed or not.
    fn files(self, passed: bool) -> (bool, bool) {
        match (self, passed) {
            (Keep::All, _) | (Keep::Failed, false) => (true, true),
            (Keep::Failed, true) | (Keep::None, false) => (true, false),
            (Keep::None, true) => (false, false),
        }
    }
}

/// Marks the child's result line among anything else it prints.
pub const RESULT_PREFIX: &str = "FAULTLINE-RESULT ";

/// An input or usage error: exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Loads the scenario and resolves its design with the command line's overrides.
pub fn resolve(
    scenario_path: &str,
    design: &[String],
) -> Result<(scenario::Scenario, Design), InputError> {
    resolve_with(scenario_path, design, None)
}

/// `resolve`, with the faults of `schedule` (a file) in place of the scenario's own.
pub fn resolve_with(
    scenario_path: &str,
    design: &[String],
    schedule: Option<&Path>,
) -> Result<(scenario::Scenario, Design), InputError> {
    let mut scenario = scenario::load(scenario_path).map_err(|e| InputError(e.to_string()))?;
    if let Some(path) = schedule {
        let s = scenario::load_schedule(&path.display().to_string(), &scenario)
            .map_err(|e| InputError(e.to_string()))?;
        scenario.schedule = Some(s);
    }
    let mut d = scenario.design();
    for sel in design {
        d.apply(sel)
            .map_err(|e| InputError(format!("--design {sel}: {e}")))?;
    }
    Ok((scenario, d))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Runs one seed in this process and writes its folder. A panic inside the run becomes a
/// `panic` report for that seed.
pub fn run_one(args: &RunArgs) -> Result<Report, InputError> {
    let (scenario, design) = resolve_with(&args.scenario, &args.design, args.schedule.as_deref())?;
    let seed = args
        .seed
        .or(scenario.schedule.as_ref().and_then(|s| s.seed))
        .unwrap_or(1);
    let dir = report::seed_dir(&args.out, &scenario.name, seed);
    let started = std::time::Instant::now();
    // Quiet hook: the report carries the panic; only its location is kept from the hook, since
    // the payload caught below no longer knows where it came from. The last one wins: a panic
    // the store catches itself (an etcd member halting on raft-rs's fatal error) comes first.
    let location = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = location.clone();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let (Some(l), Ok(mut slot)) = (info.location(), seen.lock()) {
            *slot = Some(l.to_string());
        }
    }));
    // The probe counters are process-wide: zeroed here, so this run's counts are its own.
    store::probe::reset();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world::run_seed(&scenario, seed, &design)
    }));
    let probes = report::probe_hits();
    std::panic::set_hook(previous_hook);
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut repro = report::repro_command(&args.scenario, seed, &design.selections());
    if let Some(path) = &args.schedule {
        repro.push_str(&format!(" --schedule {}", path.display()));
    }
    let mut report = Report {
        scenario: scenario.name.clone(),
        scenario_path: args.scenario.clone(),
        seed,
        design: design.to_string(),
        status: "pass".into(),
        trace_hash: String::new(),
        sim_seconds: 0.0,
        wall_seconds,
        peak_rss_mib: report::peak_rss_mib(),
        operations: Default::default(),
        faults_injected: Default::default(),
        fault_mix: serde_json::Value::Null,
        checks: vec![],
        histograms: Default::default(),
        panic: None,
        repro,
        results_dir: dir.display().to_string(),
        probes,
        live: None,
    };
    let run = match outcome {
        Ok(run) => run,
        Err(payload) => {
            report.status = "panic".into();
            let message = panic_message(payload.as_ref());
            let at = location.lock().ok().and_then(|l| l.clone());
            report.panic = Some(match at {
                Some(at) => format!("panicked at {at}: {message}"),
                None => message,
            });
            if args.keep.files(false).0 {
                report::write(&dir, &report, None).map_err(|e| InputError(format!("{e:#}")))?;
            }
            return Ok(report);
        }
    };
    if let Some(path) = &args.write_schedule {
        write_schedule(path, &scenario.name, &run.schedule)?;
    }
    let checks: Vec<_> = checkers::all()
        .iter()
        .map(|c| c.check(&run.history))
        .collect();
    report.trace_hash = run.trace.hash();
    report.sim_seconds = run.sim_ns as f64 / 1e9;
    report.operations = report::count_ops(&run.history);
    report.faults_injected = run.faults_injected.clone();
    report.fault_mix = serde_json::to_value(&run.fault_mix).unwrap_or_default();
    report.checks = report::summarize_checks(&checks);
    report.histograms = metrics::compute(&run.history);
    if report.failed_checks().next().is_some() {
        report.status = "fail".into();
    }
    let (keep_report, keep_artifacts) = args.keep.files(report.status == "pass");
    if !keep_report {
        return Ok(report);
    }
    let artifacts = keep_artifacts.then_some((&run.history, &run.trace));
    report::write(&dir, &report, artifacts).map_err(|e| InputError(format!("{e:#}")))?;
    if !keep_artifacts {
        return Ok(report);
    }
    let marks: Vec<plot::Marker> = checks
        .iter()
        .filter_map(|c| {
            c.first()
                .map(|v| (c.check.to_string(), v.at_ns, v.message.clone()))
        })
        .collect();
    let title = format!("{} seed {} ({})", scenario.name, seed, design);
    if let Err(e) = plot::timeline(
        &run.history,
        &title,
        &marks,
        scenario.schedule.is_some(),
        &dir.join("timeline.png"),
        &dir.join("timeline.svg"),
    ) {
        // A plot is a convenience; its failure must not hide the run's verdict.
        eprintln!("faultline: timeline plot not written: {e:#}");
    }
    Ok(report)
}

/// Writes `schedule` as a TOML schedule file, with a header saying how to replay it.
pub fn write_schedule(
    path: &Path,
    scenario: &str,
    schedule: &scenario::Schedule,
) -> Result<(), InputError> {
    let body = toml::to_string(schedule)
        .map_err(|e| InputError(format!("{}: cannot write schedule: {e}", path.display())))?;
    let text = format!(
        "# faultline fault schedule: {} faults of scenario {scenario}, seed {}.\n\
         # Replay: faultline run <scenario.toml> --schedule {}\n{body}",
        schedule.len(),
        schedule.seed.unwrap_or(1),
        path.display()
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| InputError(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(path, text).map_err(|e| InputError(format!("{}: {e}", path.display())))
}

pub fn exit_for(report: &Report) -> ExitCode {
    if report.status == "pass" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn cmd_run(args: &RunArgs, full_trace: bool) -> Result<ExitCode, InputError> {
    let report = run_one(args)?;
    if args.json_line {
        println!(
            "{RESULT_PREFIX}{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
        return Ok(exit_for(&report));
    }
    if full_trace {
        let trace = Path::new(&report.results_dir).join("trace.log");
        if let Ok(text) = std::fs::read_to_string(&trace) {
            print!("{text}");
        }
    }
    print!("{}", report::render(&report));
    Ok(exit_for(&report))
}

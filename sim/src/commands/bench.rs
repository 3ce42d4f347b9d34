//! `faultline bench`: per scenario, simulated seconds per wall second, seeds per minute per core,
//! peak memory, and where a run's time goes (the store, or the simulator, workload, recording and
//! checkers around it). Each seed runs alone in its own process, so the figures are for one core.
//! With `--baseline BIN` a previous build runs the same scenarios and seeds in the same session,
//! alternating with this one, so the machine's noise falls on both alike. With `--checker`, how
//! long one checker takes over a generated history. A benchmark, not a test.

use crate::commands::campaign::Seeds;
use crate::run::{resolve, InputError, RESULT_PREFIX};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Scenario files (default: every scenarios/*.toml).
    pub scenarios: Vec<String>,
    #[arg(long, default_value = "1..3")]
    pub seeds: Seeds,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// A previous faultline binary to measure side by side on the same scenarios and seeds.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Skip the profile (one seed per scenario under `perf record`) that splits a run's time
    /// between the store and everything around it.
    #[arg(long)]
    pub no_profile: bool,
    /// Time this checker alone over a generated valid history instead (only `linearizable`).
    #[arg(long)]
    pub checker: Option<String>,
    /// Client operations in the generated history (with `--checker`).
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: usize,
}

/// One seed, run in its own process.
struct Timed {
    wall_s: f64,
    /// User and system CPU time of the child: on a shared machine, steadier than wall time.
    cpu_s: f64,
    peak_rss_mib: f64,
    sim_s: f64,
    trace_hash: String,
}

#[derive(Serialize, Default, Clone)]
struct Figures {
    seeds: u64,
    sim_seconds: f64,
    wall_seconds: f64,
    cpu_seconds: f64,
    sim_s_per_wall_s: f64,
    /// 60 / CPU seconds per seed: a seed runs on one core.
    seeds_per_minute_per_core: f64,
    peak_rss_mib: f64,
    /// Seeds whose run failed to start or finish (not counted above).
    errors: Vec<String>,
}

impl Figures {
    fn add(&mut self, t: &Timed) {
        self.seeds += 1;
        self.sim_seconds += t.sim_s;
        self.wall_seconds += t.wall_s;
        self.cpu_seconds += t.cpu_s;
        self.peak_rss_mib = self.peak_rss_mib.max(t.peak_rss_mib);
    }

    fn finish(&mut self) {
        if self.wall_seconds > 0.0 {
            self.sim_s_per_wall_s = self.sim_seconds / self.wall_seconds;
        }
        if self.cpu_seconds > 0.0 {
            self.seeds_per_minute_per_core = self.seeds as f64 * 60.0 / self.cpu_seconds;
        }
    }
}

#[derive(Serialize)]
struct BenchRow {
    scenario: String,
    seeds: String,
    this: Figures,
    baseline: Option<Figures>,
    /// This build's seeds per minute per core over the baseline's.
    speedup: Option<f64>,
    /// Seeds whose trace hash differs between the two builds.
    trace_hashes_differ: Option<u64>,
    /// Share of one profiled seed's samples by where they were taken.
    profile: Option<BTreeMap<String, f64>>,
    profile_note: Option<String>,
}

pub fn bench(args: &BenchArgs) -> Result<ExitCode, InputError> {
    if let Some(name) = &args.checker {
        return bench_checker(name, args.ops);
    }
    let scenarios = scenario_files(&args.scenarios)?;
    let this = std::env::current_exe()
        .map_err(|e| InputError(format!("cannot find own executable: {e}")))?;
    if let Some(b) = &args.baseline {
        if !b.is_file() {
            return Err(InputError(format!(
                "--baseline {}: no such file (give a faultline binary, e.g. a copy of an older target/campaign/faultline)",
                b.display()
            )));
        }
    }
    let perf = !args.no_profile && perf_available();
    let work = args.out.join("bench");
    let mut rows = Vec::new();
    for s in &scenarios {
        let (scenario, _) = resolve(s, &[])?;
        let mut mine = Figures::default();
        let mut theirs = args.baseline.as_ref().map(|_| Figures::default());
        let mut differ = 0;
        for (i, seed) in args.seeds.iter().enumerate() {
            // Alternate which build goes first, so neither always meets a warmer machine.
            let mut order: Vec<(bool, &Path)> = vec![(true, this.as_path())];
            if let Some(b) = &args.baseline {
                order.push((false, b.as_path()));
                if i % 2 == 1 {
                    order.reverse();
                }
            }
            let mut hashes = Vec::new();
            for (is_this, exe) in order {
                let figures = if is_this {
                    &mut mine
                } else {
                    theirs.as_mut().expect("a baseline")
                };
                match time_seed(exe, s, seed, &work, None) {
                    Ok(t) => {
                        figures.add(&t);
                        hashes.push(t.trace_hash);
                    }
                    Err(e) => figures.errors.push(format!("seed {seed}: {e}")),
                }
            }
            if hashes.len() == 2 && hashes[0] != hashes[1] {
                differ += 1;
            }
        }
        mine.finish();
        if let Some(t) = theirs.as_mut() {
            t.finish();
        }
        let speedup = theirs
            .as_ref()
            .filter(|t| t.seeds_per_minute_per_core > 0.0)
            .map(|t| mine.seeds_per_minute_per_core / t.seeds_per_minute_per_core);
        let (profile, profile_note) = if perf {
            let seed = args.seeds.iter().next().unwrap_or(1);
            match profile_seed(&this, s, seed, &work) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e)),
            }
        } else if args.no_profile {
            (None, Some("not profiled (--no-profile)".into()))
        } else {
            (None, Some("not profiled: `perf` is not installed".into()))
        };
        eprintln!(
            "bench: {} measured ({} of {})",
            scenario.name,
            rows.len() + 1,
            scenarios.len()
        );
        rows.push(BenchRow {
            scenario: scenario.name.clone(),
            seeds: args.seeds.to_string(),
            this: mine,
            baseline: theirs,
            speedup,
            trace_hashes_differ: args.baseline.as_ref().map(|_| differ),
            profile,
            profile_note,
        });
    }
    print_table(&rows, args);
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

fn scenario_files(given: &[String]) -> Result<Vec<String>, InputError> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let mut found: Vec<String> = std::fs::read_dir("scenarios")
        .map_err(|e| InputError(format!("scenarios/: {e}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    found.sort();
    Ok(found)
}

fn print_table(rows: &[BenchRow], args: &BenchArgs) {
    println!(
        "seeds {} per scenario, each alone in its own process; seeds/min/core = 60 / CPU seconds per seed",
        args.seeds
    );
    println!(
        "{:<26} {:>12} {:>15} {:>9} {:>11}  baseline",
        "scenario", "sim s/wall s", "seeds/min/core", "peak MiB", "outside %"
    );
    for r in rows {
        let outside = r
            .profile
            .as_ref()
            .map(|p| format!("{:.0}", 100.0 - p.get("store").copied().unwrap_or(0.0)))
            .unwrap_or_else(|| "n/a".into());
        let base = match (&r.baseline, r.speedup) {
            (Some(b), Some(x)) => format!(
                "{:.1} seeds/min/core, {:.0} MiB: {x:.2}x; {} of {} trace hashes differ",
                b.seeds_per_minute_per_core,
                b.peak_rss_mib,
                r.trace_hashes_differ.unwrap_or(0),
                b.seeds
            ),
            (Some(b), None) => format!("did not run: {}", b.errors.join("; ")),
            (None, _) => String::new(),
        };
        println!(
            "{:<26} {:>12.0} {:>15.1} {:>9.0} {:>11}  {}",
            r.scenario,
            r.this.sim_s_per_wall_s,
            r.this.seeds_per_minute_per_core,
            r.this.peak_rss_mib,
            outside,
            base
        );
        for e in &r.this.errors {
            println!("    error: {e}");
        }
    }
    if rows.iter().any(|r| r.profile.is_some()) {
        let seed = args.seeds.iter().next().unwrap_or(1);
        println!(
            "where the time goes (perf samples of seed {seed}; `outside` is everything but the store):"
        );
        for r in rows {
            match (&r.profile, &r.profile_note) {
                (Some(p), _) => {
                    let parts: Vec<String> =
                        p.iter().map(|(k, v)| format!("{k} {v:.0}%")).collect();
                    println!("  {:<24} {}", r.scenario, parts.join(", "));
                }
                (None, Some(n)) => println!("  {:<24} {n}", r.scenario),
                (None, None) => {}
            }
        }
    } else if let Some(n) = rows.iter().find_map(|r| r.profile_note.as_ref()) {
        println!("outside %: n/a, {n}");
    }
}

/// Runs one seed as a campaign does and measures it from outside.
fn time_seed(
    exe: &Path,
    scenario: &str,
    seed: u64,
    out: &Path,
    wrap: Option<&[String]>,
) -> Result<Timed, String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        scenario.into(),
        "--seed".into(),
        seed.to_string(),
        "--out".into(),
        out.display().to_string(),
        "--json-line".into(),
    ];
    // What a campaign of that build does with a passing seed: builds that can, keep only its
    // report.
    if supports_keep(exe) {
        args.extend(["--keep".into(), "failed".into()]);
    }
    let mut cmd = match wrap {
        Some(w) => {
            let mut c = Command::new(&w[0]);
            c.args(&w[1..]).arg(exe).args(&args);
            c
        }
        None => {
            let mut c = Command::new(exe);
            c.args(&args);
            c
        }
    };
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut text = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut text);
    let (status, usage) = wait_with_usage(child.id() as libc::pid_t)?;
    let wall_s = started.elapsed().as_secs_f64();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) <= 1) {
        return Err(format!("exited abnormally (wait status {status})"));
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or("printed no result line")?;
    let report: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("unreadable result line: {e}"))?;
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok(Timed {
        wall_s,
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        sim_s: report["sim_seconds"].as_f64().unwrap_or(0.0),
        trace_hash: report["trace_hash"].as_str().unwrap_or("").to_string(),
    })
}

/// Reaps a child and returns its wait status and resource usage.
fn wait_with_usage(pid: libc::pid_t) -> Result<(i32, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: wait4 writes only into the status and rusage we pass; the child is ours and not
    // yet reaped (std's Child never waited on it).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        return Err(format!(
            "cannot wait for child: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((status, usage))
}

/// Older builds know no `--keep` (their campaigns kept every file): clap refuses the flag.
fn supports_keep(exe: &Path) -> bool {
    Command::new(exe)
        .args(["run", "--keep", "failed", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn perf_available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs one seed under `perf record` with call stacks and splits its samples by where they
/// were taken (see [`Place::of`]).
fn profile_seed(
    exe: &Path,
    scenario: &str,
    seed: u64,
    out: &Path,
) -> Result<BTreeMap<String, f64>, String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let data = out.join(format!("perf-{}.data", std::process::id()));
    let wrap: Vec<String> = [
        "perf",
        "record",
        "--quiet",
        "-F",
        "250",
        "--call-graph",
        "dwarf,16384",
        "-o",
        &data.display().to_string(),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    time_seed(exe, scenario, seed, out, Some(&wrap)).map_err(|e| format!("perf record: {e}"))?;
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    let _ = std::fs::remove_file(&data);
    let text = String::from_utf8_lossy(&script.stdout);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut total = 0u64;
    for sample in text.split("\n\n") {
        let frames: Vec<&str> = sample.lines().filter_map(symbol).collect();
        if frames.is_empty() {
            continue;
        }
        total += 1;
        *counts.entry(Place::of(&frames).name()).or_default() += 1;
    }
    if total == 0 {
        return Err("perf recorded no samples (perf_event_paranoid?)".into());
    }
    Ok(counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), 100.0 * v as f64 / total as f64))
        .collect())
}

/// The symbol of one `perf script -F ip,sym` frame line (`<address> <symbol>`).
fn symbol(line: &str) -> Option<&str> {
    let line = line.trim();
    let (_, sym) = line.split_once(char::is_whitespace)?;
    Some(sym.trim())
}

/// Where a sample was taken, from its frames (innermost first). Needs whole stacks: a stack cut
/// short by perf's copy limit may miss the frame that names its owner.
#[derive(Debug, PartialEq)]
enum Place {
    /// The store under test (`src/`): kine, SQLite under it, etcd members, raft, the facade.
    Store,
    /// Clients of the store: the workload, controllers, watchers.
    Workload,
    /// The recorded history and the reports written from it.
    Recording,
    Checkers,
    /// madsim's executor, timers and network, the world and its faults.
    Simulator,
}

impl Place {
    fn of(frames: &[&str]) -> Place {
        let in_crate = |f: &str, krate: &str| {
            let f = f.trim_start_matches('<');
            f.strip_prefix(krate)
                .is_some_and(|rest| rest.starts_with("::"))
        };
        if frames.iter().any(|f| in_crate(f, "faultline::checkers")) {
            return Place::Checkers;
        }
        if frames
            .iter()
            .any(|f| in_crate(f, "faultline::history") || in_crate(f, "faultline::report"))
        {
            return Place::Recording;
        }
        // The innermost frame that names an owner decides: madsim's own code (timers, the
        // network, the executor) is the simulator even when the store called it; the store's
        // generated gRPC code serves both sides, so it only counts when nothing else names one.
        let mut generated = false;
        for f in frames {
            if in_crate(f, "madsim") || in_crate(f, "naive_timer") {
                return Place::Simulator;
            }
            if in_crate(f, "store::proto") {
                generated = true;
                continue;
            }
            if in_crate(f, "store") {
                return Place::Store;
            }
            if in_crate(f, "faultline::clients") {
                return Place::Workload;
            }
            if in_crate(f, "faultline") {
                return Place::Simulator;
            }
        }
        if generated {
            Place::Store
        } else {
            Place::Simulator
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Place::Store => "store",
            Place::Workload => "workload",
            Place::Recording => "recording and reports",
            Place::Checkers => "checkers",
            Place::Simulator => "simulator",
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_belongs_to_whoever_owns_its_task() {
        // A server task running SQLite.
        let server = [
            "sqlite3VdbeExec",
            "store::kine::sql::Log::list",
            "<store::server::EtcdApi as store::proto::etcdserverpb::kv_server::Kv>::range::{{closure}}",
            "madsim::sim::task::Executor::block_on",
        ];
        assert_eq!(Place::of(&server), Place::Store);
        // A client task inside the store's generated gRPC client is still the workload.
        let client = [
            "prost::encoding::encode_varint",
            "store::proto::etcdserverpb::kv_client::KvClient<T>::txn::{{closure}}",
            "faultline::clients::workload::Client::execute::{{closure}}",
            "madsim::sim::task::Executor::block_on",
        ];
        assert_eq!(Place::of(&client), Place::Workload);
        // The store reporting an event into the recorder is recording.
        let record = [
            "faultline::history::recorder::Recorder::event",
            "store::kine::database::Database::record_insert",
            "madsim::sim::task::Executor::block_on",
        ];
        assert_eq!(Place::of(&record), Place::Recording);
        let check = [
            "core::slice::memchr",
            "<faultline::checkers::watch::WatchChecker as faultline::checkers::Checker>::check",
            "faultline::run::run_one",
        ];
        assert_eq!(Place::of(&check), Place::Checkers);
        assert_eq!(
            Place::of(&[
                "naive_timer::Timer::expire",
                "madsim::sim::task::Executor::block_on"
            ]),
            Place::Simulator
        );
        // A crate whose name merely starts like the store's is not the store.
        assert_eq!(Place::of(&["storekeeper::run"]), Place::Simulator);
    }

    #[test]
    fn frame_lines_give_their_symbol() {
        assert_eq!(
            symbol("\t          af9816 madsim::sim::time::TimeHandle::add_timer_at"),
            Some("madsim::sim::time::TimeHandle::add_timer_at")
        );
        assert_eq!(symbol("   "), None);
    }
}

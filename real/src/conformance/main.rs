//! faultline-conformance: holds faultline's store against real etcd 3.4, operation by operation.
//!
//! For each seed it starts etcd (Debian's etcd-server, on a loopback port with a temporary data
//! folder) and faultline-store, generates a sequence of etcd requests, sends each to etcd, to
//! faultline's etcd member MVCC (called directly) and to faultline-store over gRPC, and compares
//! every response field by field: the MVCC must match exactly, faultline-store modulo the named
//! allowances of `allowances.rs`. Runs outside the simulator only; it never touches `sim/`.

mod allowances;
mod answer;
mod diff;
mod generate;
mod grpc;
mod lease;
mod model;
mod ops;
mod processes;
mod run;

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const DEFAULT_OPS: u64 = 40;
const INSTALL: &str = "install Debian's etcd 3.4 with `sudo apt-get install etcd-server etcd-client` \
                       (as root: `apt-get install -y etcd-server etcd-client`), or pass --etcd PATH";

#[derive(Parser)]
#[command(
    name = "faultline-conformance",
    version,
    about = "Differential conformance suite: faultline's etcd MVCC and faultline-store against real etcd 3.4"
)]
struct Cli {
    /// Seeds to run, inclusive (for example 1..200).
    #[arg(long, value_name = "A..B", default_value = "1..20", value_parser = seed_range, conflicts_with = "seed")]
    seeds: (u64, u64),
    /// Run exactly this seed (a replay).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Operations per sequence.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_OPS, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    ops: u64,
    /// Sequences run at once, each with its own etcd and faultline-store.
    #[arg(long, value_name = "J", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=16))]
    jobs: u64,
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long, value_name = "PATH")]
    etcd: Option<PathBuf>,
    /// The faultline-store binary (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Where temporary data folders go (default: /dev/shm when writable, else the system's
    /// temporary folder).
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Print every operation and the three answers.
    #[arg(long)]
    verbose: bool,
    /// List the allowances (name, side, reason, source) and exit.
    #[arg(long)]
    list_allowances: bool,
}

fn seed_range(s: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("allowed: A..B, whole numbers with A <= B (for example 1..200); got {s:?}");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The version line of `etcd --version` ("3.4.23"), or why there is none.
fn etcd_version(etcd: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", etcd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("{} --version printed no etcd version", etcd.display()))
}

fn print_allowances() {
    println!("allowances (differences from etcd 3.4 the suite accepts; anything else is a bug):");
    for a in allowances::ALLOWANCES {
        println!(
            "  {} ({})\n    why: {}\n    source: {}",
            a.name,
            a.pair.side(),
            a.reason,
            a.source
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list_allowances {
        print_allowances();
        return ExitCode::SUCCESS;
    }
    let etcd = match cli.etcd.clone().or_else(|| find_on_path("etcd")) {
        Some(p) if p.is_file() => p,
        other => {
            let looked = other.map_or("`etcd` on PATH".into(), |p| p.display().to_string());
            eprintln!("faultline-conformance: ******** etcd NOT FOUND ({looked}) ********");
            eprintln!("faultline-conformance: the suite compares against real etcd 3.4 and cannot run without it;");
            eprintln!("faultline-conformance: {INSTALL}.");
            return ExitCode::from(2);
        }
    };
    let etcd_version = match etcd_version(&etcd) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "faultline-conformance: --etcd {}: {e:#}; {INSTALL}",
                etcd.display()
            );
            return ExitCode::from(2);
        }
    };
    if !etcd_version.starts_with("3.4.") {
        eprintln!("faultline-conformance: warning: etcd {etcd_version} is not 3.4; the allowances describe etcd 3.4");
    }
    let store = cli.store.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("faultline-store")))
            .unwrap_or_else(|| "faultline-store".into())
    });
    if !store.is_file() {
        eprintln!(
            "faultline-conformance: --store {}: no faultline-store binary there; build it with `make conformance` (or pass --store PATH)",
            store.display()
        );
        return ExitCode::from(2);
    }
    let root_base = cli.data_root.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() && std::fs::metadata(&shm).is_ok_and(|m| !m.permissions().readonly()) {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let root = root_base.join(format!("faultline-conformance-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!(
            "faultline-conformance: --data-root {}: {e}",
            root_base.display()
        );
        return ExitCode::from(2);
    }
    let (first, last) = match cli.seed {
        Some(s) => (s, s),
        None => cli.seeds,
    };
    let mut replay = std::env::args()
        .next()
        .unwrap_or_else(|| "faultline-conformance".into());
    if cli.ops != DEFAULT_OPS {
        replay.push_str(&format!(" --ops {}", cli.ops));
    }
    if let Some(p) = &cli.etcd {
        replay.push_str(&format!(" --etcd {}", p.display()));
    }
    replay.push_str(" --verbose");
    let cfg = Arc::new(run::Config {
        etcd: etcd.clone(),
        etcd_version: etcd_version.clone(),
        store,
        root: root.clone(),
        ops: cli.ops as usize,
        verbose: cli.verbose,
        replay,
    });
    eprintln!(
        "faultline-conformance: seeds {first}..{last}, {} operations each, against etcd {etcd_version} ({})",
        cli.ops,
        etcd.display()
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = runtime.block_on(run_all(cfg, first, last, cli.jobs as usize));
    let _ = std::fs::remove_dir_all(&root);
    eprintln!(
        "faultline-conformance: {} s in all",
        started.elapsed().as_secs()
    );
    code
}

async fn run_all(cfg: Arc<run::Config>, first: u64, last: u64, jobs: usize) -> ExitCode {
    let gate = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = Vec::new();
    for seed in first..=last {
        let (cfg, gate) = (cfg.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            (seed, run::run_seed(seed, &cfg).await)
        }));
    }
    let total = last - first + 1;
    let (mut failed, mut broken, mut ops) = (Vec::new(), Vec::new(), 0);
    let mut used: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (done, task) in tasks.into_iter().enumerate() {
        let (seed, result) = task.await.expect("a seed's task does not panic");
        match result {
            Ok(report) => {
                ops += report.ops;
                for (name, n) in report.used {
                    *used.entry(name).or_default() += n;
                }
                if cfg.verbose {
                    print!("{}", report.transcript);
                }
                if !report.mismatches.is_empty() {
                    println!("MISMATCH {}", report.mismatches.join("\n"));
                    failed.push(seed);
                }
            }
            Err(e) => {
                eprintln!("faultline-conformance: seed {seed} could not run: {e:#}");
                broken.push(seed);
            }
        }
        if (done + 1) % 25 == 0 && done + 1 < total as usize {
            eprintln!("faultline-conformance: {} of {total} seeds done", done + 1);
        }
    }
    println!(
        "{} seeds, {ops} operations: {} matched etcd {}, {} mismatched{}",
        total,
        total as usize - failed.len() - broken.len(),
        cfg.etcd_version,
        failed.len(),
        if broken.is_empty() {
            String::new()
        } else {
            format!(", {} could not run ({broken:?})", broken.len())
        }
    );
    if !failed.is_empty() {
        println!("mismatched seeds: {failed:?}");
    }
    let used_list: Vec<String> = allowances::ALLOWANCES
        .iter()
        .map(|a| format!("{} {}", a.name, used.get(a.name).copied().unwrap_or(0)))
        .collect();
    println!("allowances used (times): {}", used_list.join(", "));
    if !broken.is_empty() {
        ExitCode::from(2)
    } else if !failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

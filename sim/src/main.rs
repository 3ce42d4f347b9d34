//! The `faultline` binary's command line, and nothing else.
//!
//! Exit codes: 0 every check held, 1 a check failed (or a seed panicked or hung), 2 usage or
//! input error. One seed in this process is `run`; campaigns of child processes are `commands`;
//! the simulation itself is `world`.

/// The process's allocator: allocation addresses reach nothing the simulation orders by, so the
/// choice leaves every trace as it is; it only makes allocating cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use faultline::commands::{bench, determinism, fuzz, list, merge, shrink, validate};
use faultline::run::{cmd_run, RunArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Deterministic fault-injection simulator for etcd-compatible storage backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed of a scenario, check it and write its report.
    Run(RunArgs),
    /// Replay one seed exactly, printing its full trace.
    Repro(RunArgs),
    /// Run many seeds, each in its own process, and write summary.json.
    Fuzz(fuzz::FuzzArgs),
    /// From a failing seed, the smallest run found that fails the same check.
    Shrink(shrink::ShrinkArgs),
    /// Combine the reports of a sharded campaign's shards into one.
    Merge(merge::MergeArgs),
    /// Run each seed twice in separate processes and compare trace hashes.
    Determinism(determinism::DeterminismArgs),
    /// Measure simulated seconds per wall second, seeds per minute and peak memory.
    Bench(bench::BenchArgs),
    /// Run the fixed design and every variant on its targeted scenario; write the table.
    Validate(validate::ValidateArgs),
    /// List scenarios, checks, fault kinds, code probes and design variants.
    List,
    /// Run a scenario's workload against real processes (targets/*.toml) under real faults,
    /// judged by the same checkers: runs faultline-live from the real build (make real-build).
    #[command(disable_help_flag = true)]
    Live {
        /// faultline-live's arguments (`faultline live --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // `faultline list | head` should end quietly when the reader goes away, as other tools do,
    // not panic on a closed stdout.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(&args, false),
        Command::Repro(args) => cmd_run(&args, true),
        Command::Fuzz(args) => fuzz::fuzz(&args),
        Command::Shrink(args) => shrink::shrink(&args),
        Command::Merge(args) => merge::merge(&args),
        Command::Determinism(args) => determinism::determinism(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Validate(args) => validate::validate(&args),
        Command::List => Ok(list::cmd_list()),
        Command::Live { args } => return live(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultline: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where the real build's `faultline-live` is: `FAULTLINE_LIVE`, beside this program, or in the
/// real build's folder of the current directory.
fn live_program() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FAULTLINE_LIVE") {
        return Some(p.into());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("faultline-live")));
    beside
        .into_iter()
        .chain([std::path::PathBuf::from(
            "target/real/release/faultline-live",
        )])
        .find(|p| p.is_file())
}

/// `faultline live`: live mode runs real processes and sockets, which this simulator build
/// cannot, so it hands over to the real build's program with the same arguments.
fn live(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Some(program) = live_program() else {
        eprintln!(
            "faultline live: faultline-live not found (beside this program, in target/real/release/, or FAULTLINE_LIVE); build it with `make real-build`"
        );
        return ExitCode::from(2);
    };
    let error = std::process::Command::new(&program).args(args).exec();
    eprintln!("faultline live: cannot run {}: {error}", program.display());
    ExitCode::from(2)
}

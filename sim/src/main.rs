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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultline: {e}");
            ExitCode::from(2)
        }
    }
}

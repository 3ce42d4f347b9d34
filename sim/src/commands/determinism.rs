//! `faultline determinism`: each seed twice in separate processes, trace hashes compared.

use crate::commands::campaign::{
    default_jobs, interrupt_flag, run_child, run_pool, ChildOutcome, Seeds,
};
use crate::report::Report;
use crate::run::{resolve, InputError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
                crate::run::Keep::All,
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

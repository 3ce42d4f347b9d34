//! `faultline merge`: one campaign's report from the reports of its shards.
//!
//! Reads each shard's `summary.json`, refuses (exit 2) shards of different binaries, scenarios,
//! seed ranges, designs or shard counts, and shards given twice; writes the combined
//! `summary.json`, `junit.xml` and outcomes plot. Missing shards are reported, and the merged
//! campaign then counts as incomplete (exit 1).

use crate::commands::fuzz::{declared_probes, exit_with_probes, write_reports, Summary};
use crate::run::InputError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Result folders of the shards (each holding the summary.json `fuzz --shard` wrote).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged summary.json, junit.xml and outcomes plot go.
    #[arg(long)]
    pub out: PathBuf,
    /// Exit 1 naming every declared code probe that no seed of any shard hit.
    #[arg(long)]
    pub require_probes: bool,
}

fn read_summary(dir: &Path) -> Result<Summary, InputError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| InputError(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        InputError(format!(
            "{}: not a faultline fuzz summary ({e}); was it written by this version?",
            path.display()
        ))
    })
}

/// The fields every shard of one campaign must share, named for the refusal message.
fn identity(s: &Summary) -> Vec<(&'static str, String)> {
    vec![
        ("binary", s.binary.clone()),
        ("scenarios", s.scenarios.join(", ")),
        ("seed range", s.seed_range.clone()),
        ("design", s.design.clone()),
        (
            "shard count",
            s.shard.map(|x| x.count.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Combines shard summaries; an `Err` is a refusal that says why.
pub fn combine(shards: Vec<(PathBuf, Summary)>) -> Result<(Summary, Vec<u64>), InputError> {
    let mut by_index: BTreeMap<u64, (PathBuf, Summary)> = BTreeMap::new();
    let (first_dir, first) = shards
        .first()
        .cloned()
        .ok_or_else(|| InputError("no shard folders given".into()))?;
    let Some(first_shard) = first.shard else {
        return Err(InputError(format!(
            "{}: not a shard (its campaign ran without --shard or --shards)",
            first_dir.display()
        )));
    };
    for (dir, s) in shards {
        let Some(shard) = s.shard else {
            return Err(InputError(format!(
                "{}: not a shard (its campaign ran without --shard or --shards)",
                dir.display()
            )));
        };
        for ((what, a), (_, b)) in identity(&first).into_iter().zip(identity(&s)) {
            if a != b {
                return Err(InputError(format!(
                    "refusing to merge: {} has {what} `{b}` but {} has `{a}`; shards of one campaign share binary, scenarios, seed range, design and shard count",
                    dir.display(),
                    first_dir.display()
                )));
            }
        }
        if let Some((other, _)) = by_index.get(&shard.index) {
            return Err(InputError(format!(
                "refusing to merge: shard {shard} is given twice ({} and {})",
                other.display(),
                dir.display()
            )));
        }
        by_index.insert(shard.index, (dir, s));
    }
    let missing: Vec<u64> = (0..first_shard.count)
        .filter(|i| !by_index.contains_key(i))
        .collect();
    let runs = first.scenarios.len() as u64 * seeds_in(&first.seed_range);
    // Shards hold disjoint runs: hits and hitting runs add up.
    let mut probes = declared_probes();
    for (name, t) in by_index.values().flat_map(|(_, s)| &s.probes) {
        let sum = probes.entry(name.clone()).or_default();
        sum.hits += t.hits;
        sum.seeds += t.seeds;
    }
    let merged = Summary {
        probes,
        shard: None,
        merged_shards: by_index.keys().copied().collect(),
        planned: runs as usize,
        interrupted: by_index.values().any(|(_, s)| s.interrupted),
        // Shards run side by side: the campaign took as long as its slowest shard.
        wall_seconds: by_index
            .values()
            .map(|(_, s)| s.wall_seconds)
            .fold(0.0, f64::max),
        ..first.clone()
    };
    let records = by_index
        .into_values()
        .flat_map(|(_, s)| s.records)
        .collect();
    Ok((merged.with_records(records), missing))
}

fn seeds_in(range: &str) -> u64 {
    range
        .parse::<crate::commands::campaign::Seeds>()
        .map(|s| s.count())
        .unwrap_or(0)
}

pub fn merge(args: &MergeArgs) -> Result<ExitCode, InputError> {
    let mut shards = Vec::new();
    for dir in &args.dirs {
        shards.push((dir.clone(), read_summary(dir)?));
    }
    let count = shards
        .first()
        .and_then(|(_, s)| s.shard)
        .map(|s| s.count)
        .unwrap_or(0);
    let (merged, missing) = combine(shards)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| InputError(format!("creating {}: {e}", args.out.display())))?;
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|i| format!("{i}/{count}")).collect();
        eprintln!(
            "faultline merge: shard{} {} missing: {} of {} runs are not in the merged report",
            if missing.len() == 1 { "" } else { "s" },
            names.join(", "),
            merged.planned - merged.seeds,
            merged.planned
        );
    }
    write_reports(&args.out, &merged)?;
    Ok(exit_with_probes(&merged, args.require_probes))
}

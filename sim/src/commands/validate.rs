//! `faultline validate`: the design-validation view. The fixed design and every known-broken
//! variant run on the variant's targeted scenario over the same seeds; the table shows which
//! checker caught what, how often, and how soon. Writes `validation.md` and `validation.json`.

use crate::commands::campaign::{
    campaign, default_jobs, interrupt_flag, CampaignConfig, SeedRecord, Seeds,
};
use crate::run::{resolve, InputError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use store::design::VARIANTS;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Seeds for every variant and for the fixed design.
    #[arg(long, default_value = "1..20")]
    pub seeds: Seeds,
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where validation.md and validation.json go (seed folders under <out>/validation/).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

#[derive(Serialize)]
struct Row {
    variant: String,
    scenario: String,
    checker_expected: String,
    /// Every checker that fired, with the number of seeds it fired on.
    checkers_fired: BTreeMap<String, usize>,
    seeds_run: usize,
    seeds_failing: usize,
    first_failing_seed: Option<u64>,
    /// Seeds on which the expected checker fired.
    caught_seeds: usize,
    caught: bool,
    fixed_clean_seeds: usize,
    fixed_seeds_run: usize,
}

fn fired(records: &[SeedRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let mut seen: Vec<&str> = r.failures.iter().map(|(c, _)| c.as_str()).collect();
        seen.dedup();
        for c in seen {
            *out.entry(c.to_string()).or_default() += 1;
        }
    }
    out
}

pub fn validate(args: &ValidateArgs) -> Result<ExitCode, InputError> {
    let stop = interrupt_flag();
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    let timeout = Duration::from_secs(args.timeout_s);
    let base = args.out.join("validation");
    let mut fixed: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut rows = Vec::new();
    for v in VARIANTS.iter().filter(|v| !v.caught_by.is_empty()) {
        let path = format!("scenarios/{}.toml", v.scenario);
        let (scenario, _) = resolve(&path, &[])?;
        let scenarios = [(path.clone(), scenario.name.clone())];
        if !fixed.contains_key(&path) {
            eprintln!("fixed design on {} ...", scenario.name);
            let out = base.join("fixed");
            let cfg = CampaignConfig {
                design: &[],
                jobs,
                out: &out,
                timeout,
                stop: &stop,
                keep: crate::run::Keep::Failed,
                shard: None,
            };
            let records = campaign(&scenarios, &args.seeds, &cfg, |_| {});
            let clean = records.iter().filter(|r| r.failures.is_empty()).count();
            fixed.insert(path.clone(), (clean, records.len()));
        }
        let selection = format!("{}={}", v.area, v.name);
        eprintln!("{selection} on {} ...", scenario.name);
        let out = base.join(&selection);
        let design = std::slice::from_ref(&selection);
        let cfg = CampaignConfig {
            design,
            jobs,
            out: &out,
            timeout,
            stop: &stop,
            keep: crate::run::Keep::Failed,
            shard: None,
        };
        let records = campaign(&scenarios, &args.seeds, &cfg, |_| {});
        let checkers_fired = fired(&records);
        let caught_seeds = checkers_fired.get(v.caught_by).copied().unwrap_or(0);
        let (fixed_clean_seeds, fixed_seeds_run) = fixed[&path];
        rows.push(Row {
            variant: selection,
            scenario: scenario.name.clone(),
            checker_expected: v.caught_by.to_string(),
            seeds_run: records.len(),
            seeds_failing: records.iter().filter(|r| !r.failures.is_empty()).count(),
            first_failing_seed: records
                .iter()
                .find(|r| !r.failures.is_empty())
                .map(|r| r.seed),
            caught: !records.is_empty() && caught_seeds * 2 >= records.len(),
            caught_seeds,
            checkers_fired,
            fixed_clean_seeds,
            fixed_seeds_run,
        });
    }
    let mut md = String::from("# Design validation\n\n");
    md += &format!(
        "Seeds {}..{} for every variant and for the fixed design on its scenario. A variant is caught when its expected checker fires on at least half the seeds.\n\n",
        args.seeds.first, args.seeds.last
    );
    md += "| variant | scenario | checker expected | checkers that fired (seeds) | seeds run | seeds failing | first failing seed | caught | fixed design clean seeds |\n";
    md += "|---|---|---|---|---|---|---|---|---|\n";
    for r in &rows {
        let fired: Vec<String> = r
            .checkers_fired
            .iter()
            .map(|(c, n)| format!("{c} ({n})"))
            .collect();
        md += &format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            r.variant,
            r.scenario,
            r.checker_expected,
            if fired.is_empty() {
                "none".into()
            } else {
                fired.join(", ")
            },
            r.seeds_run,
            r.seeds_failing,
            r.first_failing_seed
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            if r.caught { "yes" } else { "**no**" },
            r.fixed_clean_seeds,
            r.fixed_seeds_run
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| InputError(e.to_string()))?;
    let md_path = args.out.join("validation.md");
    let json_path = args.out.join("validation.json");
    std::fs::write(&md_path, &md)
        .map_err(|e| InputError(format!("writing {}: {e}", md_path.display())))?;
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&rows).expect("serialises") + "\n",
    )
    .map_err(|e| InputError(format!("writing {}: {e}", json_path.display())))?;
    print!("{md}");
    println!(
        "\nwritten to {} and {}",
        md_path.display(),
        json_path.display()
    );
    let all_good = rows
        .iter()
        .all(|r| r.caught && r.fixed_clean_seeds == r.fixed_seeds_run);
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

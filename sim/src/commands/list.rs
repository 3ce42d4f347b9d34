//! `faultline list`: scenarios, checks, fault kinds, code probes and design variants, each with its
//! meaning.

use crate::{checkers, faults, scenario};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn cmd_list() -> ExitCode {
    println!("Scenarios (scenarios/*.toml):");
    let mut paths: Vec<PathBuf> = std::fs::read_dir("scenarios")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    paths.sort();
    for p in paths {
        let path = p.display().to_string();
        match scenario::load(&path) {
            Ok(s) => println!("  {:<28} {}", path, s.description),
            Err(e) => println!("  {path:<28} (invalid: {e})"),
        }
    }
    println!("\nChecks:");
    for c in checkers::all() {
        println!("  {:<22} {}", c.name(), c.meaning());
    }
    println!("\nFault kinds:");
    for (name, meaning) in faults::KINDS {
        println!("  {name:<26} {meaning}");
    }
    println!("\nCode probes (counted per run in report.json; fuzz --require-probes):");
    for (name, meaning) in store::probe::PROBES {
        println!("  {name:<48} {meaning}");
    }
    println!("\nDesign variants (--design AREA=VARIANT):");
    for v in store::design::VARIANTS {
        let caught = if v.caught_by.is_empty() {
            String::new()
        } else {
            format!(" [caught by {} on {}]", v.caught_by, v.scenario)
        };
        println!(
            "  {:<22} {}{caught}",
            format!("{}={}", v.area, v.name),
            v.meaning
        );
    }
    ExitCode::SUCCESS
}

//! The regression corpus: every catalog variant has a shrunk failing run in
//! `scenarios/regressions/`, which still fails the check the catalog names for it, and passes
//! every check with the fixed design on the same schedule.

mod common;

use common::faultline;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variant (`area=variant`) to the check that must catch it, from `faultline list`.
fn catalog() -> BTreeMap<String, String> {
    let o = faultline(&["list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .filter_map(|l| {
            let variant = l.split_whitespace().next()?;
            let (_, rest) = l.split_once("[caught by ")?;
            let check = rest.split_whitespace().next()?;
            Some((variant.to_string(), check.to_string()))
        })
        .collect()
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("../scenarios/regressions")
        .expect("scenarios/regressions exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// The `[design]` selections a corpus file holds.
fn design_of(file: &Path) -> Vec<String> {
    let doc: toml::Table = std::fs::read_to_string(file).unwrap().parse().unwrap();
    let design = doc.get("design").and_then(|d| d.as_table()).cloned();
    design
        .unwrap_or_default()
        .iter()
        .map(|(area, v)| format!("{area}={}", v.as_str().unwrap_or_default()))
        .collect()
}

fn report(file: &Path, design: &[String], out: &Path) -> serde_json::Value {
    let mut args = vec![
        "run".to_string(),
        file.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--json-line".into(),
        "--keep".into(),
        "none".into(),
    ];
    for d in design {
        args.extend(["--design".to_string(), d.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = faultline(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAULTLINE-RESULT "))
        .unwrap_or_else(|| panic!("{}: {}", file.display(), String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap()
}

fn failed_checks(r: &serde_json::Value) -> Vec<String> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_variant_fails_its_check_on_its_shrunk_run_and_the_fixed_design_passes() {
    let catalog = catalog();
    assert!(
        catalog.len() >= 10,
        "the catalog from `faultline list`: {catalog:?}"
    );
    let files = corpus();
    let covered: Vec<String> = files.iter().flat_map(|f| design_of(f)).collect();
    for variant in catalog.keys() {
        assert!(
            covered.contains(variant),
            "no shrunk run of {variant} in scenarios/regressions/ (see README: Regression corpus)"
        );
    }
    let out = std::env::temp_dir().join(format!("faultline-regressions-{}", std::process::id()));
    let problems: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| {
                let (catalog, out) = (&catalog, &out);
                s.spawn(move || {
                    let design = design_of(file);
                    let mut problems = Vec::new();
                    let r = report(file, &[], out);
                    let failed = failed_checks(&r);
                    for d in &design {
                        let check = &catalog[d];
                        if !failed.contains(check) {
                            problems.push(format!(
                                "{}: {d} no longer fails {check} (failed: {failed:?})",
                                file.display()
                            ));
                        }
                    }
                    let fixed: Vec<String> = design
                        .iter()
                        .map(|d| format!("{}=fixed", d.split_once('=').unwrap().0))
                        .collect();
                    let r = report(file, &fixed, out);
                    if r["status"] != "pass" {
                        problems.push(format!(
                            "{}: the fixed design fails {:?} {}",
                            file.display(),
                            failed_checks(&r),
                            r["panic"]
                        ));
                    }
                    problems
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

//! The nightly campaign's deployment files: the Kubernetes manifests against the Kubernetes
//! schemas (kubernetes-validate), the GitHub Actions workflow against its schema
//! (check-jsonschema) and linter (zizmor), and the shard counts they hard-code against each
//! other. Each validator is also shown a broken copy, so a validator that accepts anything
//! cannot pass this test.
//!
//! The validators come from PyPI (`pip install kubernetes-validate check-jsonschema zizmor`).
//! Without them the validation is not run and `make test` says so; with
//! `FAULTLINE_REQUIRE_VALIDATORS=1` (as `.ci/run` sets) a missing validator fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a validator; `None` when it is not installed (and that is allowed).
fn validator(program: &str, args: &[&str]) -> Option<(bool, String)> {
    match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(o) => Some((
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )),
        Err(_) => {
            let required = std::env::var("FAULTLINE_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{program} is not installed: pip install kubernetes-validate check-jsonschema zizmor"
            );
            eprintln!("NOT RUN: {program} is not installed (pip install {program})");
            None
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let files = [
        "deploy/kubernetes/results-pvc.yaml",
        "deploy/kubernetes/fuzz-job.yaml",
        "deploy/kubernetes/merge-job.yaml",
    ];
    let mut args = vec!["--strict"];
    args.extend(files);
    let Some((ok, text)) = validator("kubernetes-validate", &args) else {
        return;
    };
    assert!(ok, "{text}");
    // The same Job with a field the schema does not know must fail.
    let broken = scratch("k8s").join("job.yaml");
    std::fs::write(
        &broken,
        read("deploy/kubernetes/fuzz-job.yaml").replace("parallelism: 8", "paralelism: 8"),
    )
    .unwrap();
    let (ok, text) = validator(
        "kubernetes-validate",
        &["--strict", broken.to_str().unwrap()],
    )
    .unwrap();
    assert!(!ok, "a misspelt field passed: {text}");
}

#[test]
fn the_nightly_workflow_passes_its_schema_and_linter() {
    let wf = ".github/workflows/nightly.yml";
    if let Some((ok, text)) = validator(
        "check-jsonschema",
        &["--builtin-schema", "vendor.github-workflows", wf],
    ) {
        assert!(ok, "{text}");
        let broken = scratch("wf").join("nightly.yml");
        std::fs::write(&broken, read(wf).replace("runs-on:", "runs_on:")).unwrap();
        let (ok, text) = validator(
            "check-jsonschema",
            &[
                "--builtin-schema",
                "vendor.github-workflows",
                broken.to_str().unwrap(),
            ],
        )
        .unwrap();
        assert!(!ok, "a misspelt key passed: {text}");
    }
    if let Some((ok, text)) = validator(
        "zizmor",
        &["--offline", "--config", ".github/zizmor.yml", wf],
    ) {
        assert!(ok, "{text}");
        let broken = scratch("zizmor").join("nightly.yml");
        std::fs::write(
            &broken,
            read(wf).replace("          persist-credentials: false\n", ""),
        )
        .unwrap();
        let (ok, text) = validator(
            "zizmor",
            &[
                "--offline",
                "--config",
                ".github/zizmor.yml",
                broken.to_str().unwrap(),
            ],
        )
        .unwrap();
        assert!(!ok, "a checkout that keeps its credentials passed: {text}");
    }
}

/// The number after `key` on the first line (comments skipped) that holds it.
fn number_after(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("{key} missing"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    let digits: String = rest
        .trim_start_matches([' ', '"'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in: {line}"))
}

#[test]
fn shard_counts_agree_within_each_deployment() {
    let job = read("deploy/kubernetes/fuzz-job.yaml");
    let n = number_after(&job, "completions:");
    assert_eq!(number_after(&job, "parallelism:"), n);
    assert_eq!(
        number_after(&job, "--shards"),
        n,
        "--shards must equal completions"
    );
    let wf = read(".github/workflows/nightly.yml");
    let shards = number_after(&wf, "SHARDS:");
    let matrix = wf
        .lines()
        .find(|l| l.trim_start().starts_with("shard: ["))
        .expect("a shard matrix");
    let listed: Vec<u64> = matrix
        .split(['[', ']', ','])
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    assert_eq!(listed, (0..shards).collect::<Vec<_>>(), "{matrix}");
    // Every flag the deployments pass exists in this binary.
    let help = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["fuzz", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--shards",
        "--shard",
        "--seeds",
        "--jobs",
        "--out",
        "--require-probes",
    ] {
        assert!(help.contains(flag), "{flag} missing from fuzz --help");
    }
    // Both deployments judge the merged campaign's code probes too.
    let merge_help = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["merge", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&merge_help.stdout).contains("--require-probes"));
    for file in [
        ".github/workflows/nightly.yml",
        "deploy/kubernetes/merge-job.yaml",
    ] {
        let text = read(file);
        let merge = text
            .lines()
            .find(|l| l.contains("faultline merge"))
            .unwrap_or_else(|| panic!("{file}: no faultline merge"));
        assert!(merge.contains("--require-probes"), "{file}: {merge}");
    }
}

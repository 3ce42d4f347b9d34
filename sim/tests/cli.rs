//! The `faultline` binary as a user meets it: determinism across processes, exit codes, input
//! errors that name what is wrong, and campaign reports of the documented shape.

mod common;

use common::faultline;
use std::path::{Path, PathBuf};

const TINY: &str = "tests/fixtures/tiny.toml";
const TINY_ETCD: &str = "tests/fixtures/tiny-etcd.toml";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs one seed in its own process and returns its report.
fn run_report(seed: u64, out: &Path, design: Option<&str>) -> serde_json::Value {
    run_scenario(TINY, seed, out, design)
}

fn run_scenario(scenario: &str, seed: u64, out: &Path, design: Option<&str>) -> serde_json::Value {
    let seed = seed.to_string();
    let mut args = vec![
        "run",
        scenario,
        "--seed",
        &seed,
        "--out",
        out.to_str().unwrap(),
        "--json-line",
    ];
    if let Some(d) = design {
        args.extend(["--design", d]);
    }
    let o = faultline(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAULTLINE-RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "no result line; stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

#[test]
fn the_same_seed_in_two_processes_gives_the_same_trace_and_another_seed_does_not() {
    let out = scratch("determinism");
    let a = run_report(3, &out.join("a"), None);
    let b = run_report(3, &out.join("b"), None);
    let c = run_report(4, &out.join("c"), None);
    let hash = |r: &serde_json::Value| r["trace_hash"].as_str().unwrap().to_string();
    assert_eq!(hash(&a).len(), 64);
    assert_eq!(hash(&a), hash(&b), "seed 3 twice");
    assert_ne!(hash(&a), hash(&c), "seeds 3 and 4");
    let trace_a = std::fs::read_to_string(out.join("a/tiny/seed-3/trace.log")).unwrap();
    let trace_b = std::fs::read_to_string(out.join("b/tiny/seed-3/trace.log")).unwrap();
    assert!(
        trace_a.lines().count() > 1000,
        "a real run leaves a real trace"
    );
    assert_eq!(trace_a, trace_b);
}

/// The etcd topology adds raft timers, many waiters on one member's progress and crashes at
/// failpoints: all of it must replay exactly too.
#[test]
fn an_etcd_topology_seed_replays_exactly_in_another_process() {
    let out = scratch("determinism-etcd");
    let a = run_scenario(TINY_ETCD, 5, &out.join("a"), None);
    let b = run_scenario(TINY_ETCD, 5, &out.join("b"), None);
    let hash = |r: &serde_json::Value| r["trace_hash"].as_str().unwrap().to_string();
    assert_eq!(a["status"], "pass", "{a}");
    let trace_a = std::fs::read_to_string(out.join("a/tiny-etcd/seed-5/trace.log")).unwrap();
    let trace_b = std::fs::read_to_string(out.join("b/tiny-etcd/seed-5/trace.log")).unwrap();
    for needle in [
        "member_started",
        "node_killed",
        "watch#",
        "member_compaction",
        "lb_route",
    ] {
        assert!(trace_a.contains(needle), "the run exercises {needle}");
    }
    assert_eq!(trace_a, trace_b);
    assert_eq!(hash(&a), hash(&b));
}

#[test]
fn run_exits_0_when_checks_hold_and_1_with_a_repro_line_when_one_fails() {
    let out = scratch("exit");
    let o = faultline(&["run", TINY, "--seed", "2", "--out", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("PASS compactor-continuity") && text.contains("trace hash"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("tiny/seed-2/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["status"], "pass");
    assert!(report["operations"]["total"].as_u64().unwrap() > 100);

    let o = faultline(&[
        "run",
        TINY,
        "--seed",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--design",
        "compactor=kine-357",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL compactor-continuity"), "{text}");
    assert!(
        text.contains(
            "faultline repro tests/fixtures/tiny.toml --seed 2 --design compactor=kine-357"
        ),
        "{text}"
    );
}

#[test]
fn a_misspelt_scenario_field_exits_2_naming_file_line_and_field() {
    let o = faultline(&["run", "tests/fixtures/misspelt.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "tests/fixtures/misspelt.toml:19: faults.compact_failure_probabilty: unknown field"
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_design_value_exits_2_listing_the_allowed_ones() {
    let o = faultline(&["run", TINY, "--design", "compactor=kine-999"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("allowed: fixed, kine-357, kine-414"), "{err}");
    let o = faultline(&["fuzz", TINY, "--seeds", "9..3"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an empty seed range is a usage error"
    );
}

#[test]
fn fuzz_writes_a_summary_with_one_failure_per_failed_check() {
    let out = scratch("fuzz");
    let o = faultline(&[
        "fuzz",
        TINY,
        "--seeds",
        "1..3",
        "--jobs",
        "2",
        "--design",
        "compactor=kine-357",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["scenarios"], serde_json::json!(["tiny"]));
    assert_eq!(summary["seeds"], 3);
    let failures = summary["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    for f in failures {
        assert_eq!(f["scenario"], "tiny");
        assert_eq!(f["check"], "compactor-continuity");
        assert!(f["message"].as_str().unwrap().contains("kine-1"));
        assert!(f["repro"]
            .as_str()
            .unwrap()
            .starts_with("faultline repro tests/fixtures/tiny.toml --seed "));
    }
    let o = faultline(&[
        "fuzz",
        TINY,
        "--seeds",
        "1..2",
        "--out",
        out.join("fixed").to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn list_names_checks_faults_and_variants() {
    let o = faultline(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "revision-monotonic",
        "compactor-continuity",
        "compact-reply-lost",
        "compactor=kine-414",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

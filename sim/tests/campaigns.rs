//! Campaigns as CI and Kubernetes run them: shards merged equal the unsharded campaign, merge
//! refuses what does not belong together, passing seeds leave only their report, and a
//! campaign stopped with SIGTERM writes its summary and leaves no seed running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SOMETIMES: &str = "tests/fixtures/tiny-sometimes.toml";

fn faultline(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// A seed record without its wall time, which differs between any two runs.
fn records(s: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = s["records"].as_array().unwrap().clone();
    for r in &mut out {
        r.as_object_mut().unwrap().remove("wall_seconds");
    }
    out
}

fn fuzz_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "fuzz",
        SOMETIMES,
        "--seeds",
        "1..8",
        "--jobs",
        "2",
        "--design",
        "compactor=kine-357",
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn four_shards_merged_equal_the_unsharded_campaign() {
    let base = scratch("shards");
    let whole = base.join("whole");
    let o = faultline(&fuzz_args(whole.to_str().unwrap(), &[]), &[]);
    assert_eq!(o.status.code(), Some(1), "kine-357 fails some seeds");
    let whole_summary = summary(&whole);
    let failed = whole_summary["failed_seeds"].as_u64().unwrap();
    assert!(
        failed > 0 && failed < 8,
        "the fixture fails some seeds, not all: {failed}"
    );

    let mut dirs = Vec::new();
    for k in 0..4 {
        let dir = base.join(format!("shard-{k}"));
        let o = faultline(
            &fuzz_args(dir.to_str().unwrap(), &["--shards", "4"]),
            &[("JOB_COMPLETION_INDEX", k.to_string())],
        );
        assert!(matches!(o.status.code(), Some(0 | 1)));
        let s = summary(&dir);
        assert_eq!(s["shard"], serde_json::json!({"index": k, "count": 4}));
        assert_eq!(s["planned"], 2);
        dirs.push(dir.to_str().unwrap().to_string());
    }
    let merged = base.join("merged");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = faultline(&args, &[]);
    assert_eq!(o.status.code(), Some(1), "the merged campaign has failures");
    let m = summary(&merged);
    for field in [
        "seeds",
        "planned",
        "passed",
        "failed_seeds",
        "failing_seeds_by_check",
        "failures",
        "checks",
        "binary",
        "seed_range",
        "scenarios",
    ] {
        assert_eq!(m[field], whole_summary[field], "{field}");
    }
    assert_eq!(records(&m), records(&whole_summary));
    assert_eq!(m["merged_shards"], serde_json::json!([0, 1, 2, 3]));
    // Probe tallies: the campaign's are the sums of its seeds' report.json counts, and the
    // merged shards' equal the campaign's.
    assert_eq!(m["probes"], whole_summary["probes"], "merged probe tallies");
    let tallies = whole_summary["probes"].as_object().unwrap();
    assert!(tallies.len() >= 60, "{} probes declared", tallies.len());
    let mut expected: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for r in whole_summary["records"].as_array().unwrap() {
        let report = whole.join(format!("tiny-sometimes/seed-{}/report.json", r["seed"]));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let probes = report["probes"].as_object().unwrap();
        assert_eq!(
            probes.len(),
            tallies.len(),
            "every declared probe, zeros too"
        );
        for (name, n) in probes {
            let e = expected.entry(name.clone()).or_default();
            e.0 += n.as_u64().unwrap();
            e.1 += u64::from(n.as_u64().unwrap() > 0);
        }
    }
    for (name, t) in tallies {
        assert_eq!(
            (t["hits"].as_u64().unwrap(), t["seeds"].as_u64().unwrap()),
            expected[name],
            "{name}"
        );
    }
    assert!(
        expected.values().any(|(hits, _)| *hits > 0),
        "the runs hit some probes"
    );
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 8);
    assert!(merged.join("outcomes.png").exists());

    // Passing seeds keep only report.json; failing seeds keep everything (default --keep).
    for r in whole_summary["records"].as_array().unwrap() {
        let dir = whole.join(format!("tiny-sometimes/seed-{}", r["seed"]));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        if r["failures"].as_array().unwrap().is_empty() {
            assert_eq!(files, vec!["report.json"], "{}", dir.display());
        } else {
            for f in [
                "history.json.gz",
                "report.json",
                "timeline.png",
                "trace.log",
            ] {
                assert!(files.contains(&f.to_string()), "{f} in {}", dir.display());
            }
        }
    }

    // A missing shard: merged, reported, and the campaign counts as incomplete.
    let partial = base.join("partial");
    let o = faultline(
        &[
            "merge",
            &dirs[0],
            &dirs[2],
            &dirs[3],
            "--out",
            partial.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("shard 1/4 missing: 2 of 8 runs"), "{err}");
    // The same shard twice, and a shard of another campaign, are refused.
    let o = faultline(
        &[
            "merge",
            &dirs[0],
            &dirs[0],
            "--out",
            partial.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("shard 0/4 is given twice"));
    let mut other = summary(Path::new(&dirs[1]));
    other["seed_range"] = "1..9".into();
    let forged = base.join("other");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(forged.join("summary.json"), other.to_string()).unwrap();
    let o = faultline(
        &[
            "merge",
            &dirs[0],
            forged.to_str().unwrap(),
            "--out",
            partial.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("has seed range `1..9` but"), "{err}");
}

#[test]
fn a_shard_index_out_of_range_is_a_usage_error() {
    let out = scratch("bad-shard");
    let o = faultline(
        &fuzz_args(out.to_str().unwrap(), &["--shards", "4"]),
        &[("JOB_COMPLETION_INDEX", "4".into())],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 <= K < N"));
    let o = faultline(&fuzz_args(out.to_str().unwrap(), &["--shard", "2/2"]), &[]);
    assert_eq!(o.status.code(), Some(2));
}

/// Processes whose command line mentions `needle` (our children carry their --out folder).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn sigterm_writes_the_summary_of_finished_seeds_and_leaves_no_seed_running() {
    let out = scratch("sigterm");
    let out_s = out.to_str().unwrap().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "fuzz",
            "tests/fixtures/tiny.toml",
            "--seeds",
            "1..400",
            "--jobs",
            "2",
            "--out",
            &out_s,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first seeds to finish, then stop the campaign as Kubernetes stops a pod.
    let started = std::time::Instant::now();
    while !out.join("tiny").exists() || std::fs::read_dir(out.join("tiny")).unwrap().count() < 3 {
        assert!(started.elapsed().as_secs() < 120, "no seed finished");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "an interrupted campaign is not clean"
    );
    let s = summary(&out);
    assert_eq!(s["interrupted"], true);
    let done = s["seeds"].as_u64().unwrap();
    assert!((1..400).contains(&done), "{done}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = processes_mentioning(&out_s);
    assert!(
        left.is_empty(),
        "seed processes outlived the campaign: {left:?}"
    );
}

/// The probes a summary says no seed hit, in name order.
fn unhit(s: &serde_json::Value) -> Vec<String> {
    s["probes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t["seeds"] == 0)
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn require_probes_names_every_probe_no_seed_hit_and_passes_once_all_are_hit() {
    let base = scratch("require-probes");
    let shard = base.join("shard");
    let o = faultline(
        &[
            "fuzz",
            "tests/fixtures/tiny.toml",
            "--seeds",
            "1..2",
            "--jobs",
            "1",
            "--shard",
            "0/1",
            "--require-probes",
            "--out",
            shard.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let s = summary(&shard);
    assert_eq!(s["failed_seeds"], 0, "{err}");
    // Probes only store tests reach are never required (probe::SCENARIO_UNREACHABLE).
    let missing: Vec<String> = unhit(&s)
        .into_iter()
        .filter(|p| store::probe::scenario_unreachable(p).is_none())
        .collect();
    // A kine-only run cannot reach the etcd member's probes.
    assert!(
        missing.iter().any(|p| p.starts_with("etcd.")),
        "{missing:?}"
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "unhit probes fail the campaign: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("--require-probes:"))
        .unwrap_or_else(|| panic!("no --require-probes line in: {err}"));
    let named: Vec<String> = line
        .rsplit_once(": ")
        .unwrap()
        .1
        .split(", ")
        .map(String::from)
        .collect();
    assert_eq!(named, missing, "{line}");
    // The coverage table lists the never-hit probes first.
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("code probes:"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(table.len(), s["probes"].as_object().unwrap().len(), "{err}");
    assert!(
        table[..missing.len()].iter().all(|l| l.contains("NEVER")),
        "{err}"
    );
    assert!(
        !table[missing.len()..].iter().any(|l| l.contains("NEVER")),
        "{err}"
    );

    // merge: the same verdict from the shard, and none once every probe was hit.
    let merged = base.join("merged");
    let merge = |dir: &Path| {
        faultline(
            &[
                "merge",
                dir.to_str().unwrap(),
                "--require-probes",
                "--out",
                merged.to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = merge(&shard);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(summary(&merged)["probes"], s["probes"]);
    let mut all_hit = s.clone();
    for t in all_hit["probes"].as_object_mut().unwrap().values_mut() {
        t["hits"] = 1.into();
        t["seeds"] = 1.into();
    }
    let forged = base.join("all-hit");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(forged.join("summary.json"), all_hit.to_string()).unwrap();
    let o = merge(&forged);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

//! Fault schedules as files: a seed's schedule, written by one process and replayed by another,
//! gives the seed's own trace; a malformed schedule is an input error naming file, line, field.

mod common;

use common::faultline;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-sched-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One run in its own process; returns its report.
fn run(scenario: &str, extra: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec![
        "run",
        scenario,
        "--out",
        out.to_str().unwrap(),
        "--json-line",
        "--keep",
        "none",
    ];
    args.extend(extra);
    let o = faultline(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAULTLINE-RESULT "))
        .unwrap_or_else(|| panic!("no result; stderr: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap()
}

/// Writes the seed's schedule, replays it in a second process; returns (hashes, fault count).
fn write_then_replay(scenario: &str, seed: u64, design: Option<&str>, dir: &Path) -> usize {
    let file = dir.join(format!(
        "{}-{seed}.toml",
        Path::new(scenario).file_stem().unwrap().to_str().unwrap()
    ));
    let seed = seed.to_string();
    let mut base = vec!["--seed", &seed];
    if let Some(d) = design {
        base.extend(["--design", d]);
    }
    let mut write = base.clone();
    write.extend(["--write-schedule", file.to_str().unwrap()]);
    let drawn = run(scenario, &write, dir);
    let mut replay = base.clone();
    replay.extend(["--schedule", file.to_str().unwrap()]);
    let replayed = run(scenario, &replay, dir);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        drawn["trace_hash"], replayed["trace_hash"],
        "{scenario} seed {seed}: the replayed schedule gives another run\n{text}"
    );
    assert_eq!(drawn["status"], replayed["status"]);
    text.lines().filter(|l| l.starts_with("[[")).count()
}

#[test]
fn a_written_schedule_replays_the_seeds_own_trace_in_every_scenario() {
    let dir = scratch("every");
    let mut scenarios: Vec<String> = std::fs::read_dir("../scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 9, "{scenarios:?}");
    // One seed per scenario (a different one each) keeps this fast; the full check
    // (20 seeds of every scenario) is run by hand, see README.
    let faults: usize = std::thread::scope(|s| {
        let handles: Vec<_> = scenarios
            .iter()
            .enumerate()
            .map(|(i, sc)| {
                let dir = &dir;
                s.spawn(move || write_then_replay(sc, 2 + i as u64, None, dir))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(
        faults > 50,
        "the schedules hold faults of every family ({faults})"
    );
}

#[test]
fn several_seeds_of_the_tiny_scenarios_replay_and_a_variant_still_fails() {
    let dir = scratch("tiny");
    for seed in 1..=3 {
        write_then_replay("tests/fixtures/tiny.toml", seed, None, &dir);
        write_then_replay("tests/fixtures/tiny-etcd.toml", seed, None, &dir);
    }
    write_then_replay(
        "tests/fixtures/tiny.toml",
        2,
        Some("compactor=kine-357"),
        &dir,
    );
    let text = std::fs::read_to_string(dir.join("tiny-2.toml")).unwrap();
    for family in ["[[kills]]", "[[compaction_failures]]", "[mix]"] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    let etcd = std::fs::read_to_string(dir.join("tiny-etcd-1.toml")).unwrap();
    assert!(etcd.contains("[[kills]]"), "{etcd}");
}

#[test]
fn a_schedule_with_pauses_round_trips_and_replays_the_seeds_own_trace() {
    let dir = scratch("pauses");
    let mut pauses = 0;
    for seed in 1..=3 {
        write_then_replay("tests/fixtures/tiny-pauses.toml", seed, None, &dir);
        let text = std::fs::read_to_string(dir.join(format!("tiny-pauses-{seed}.toml"))).unwrap();
        pauses += text.matches("[[pauses]]").count();
        assert!(
            text.contains("pauses_per_min = 8.0"),
            "the mix records the rate:\n{text}"
        );
    }
    assert!(
        pauses >= 20,
        "about 12 pauses per seed expected, got {pauses} in 3 seeds"
    );
}

#[test]
fn an_edited_schedule_replays_only_what_it_holds() {
    let dir = scratch("edited");
    let file = dir.join("s.toml");
    run(
        "tests/fixtures/tiny.toml",
        &["--seed", "2", "--write-schedule", file.to_str().unwrap()],
        &dir,
    );
    // Keep the header and the mix only: a run with no faults at all.
    let text = std::fs::read_to_string(&file).unwrap();
    let head: String = text
        .split("\n[[")
        .next()
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, head).unwrap();
    let r = run(
        "tests/fixtures/tiny.toml",
        &["--schedule", file.to_str().unwrap()],
        &dir,
    );
    assert_eq!(r["seed"], 2, "the seed comes from the schedule");
    assert_eq!(r["faults_injected"], serde_json::json!({}), "{r}");
}

#[test]
fn a_malformed_schedule_exits_2_naming_file_line_and_field() {
    let dir = scratch("malformed");
    let file = dir.join("s.toml");
    let cases = [
        (
            "[[kills]]\nrole = \"server\"\nnodes = [\"kine-1\"]\nat_s = 3.0\ndowntim_s = 1.0\n",
            ":5: kills[0].downtim_s: unknown field",
        ),
        (
            "[[kills]]\nrole = \"server\"\nnodes = [\"kine-1\"]\nat_s = 3.0\ndowntime_s = 1.0\n\
             \n[[kills]]\nrole = \"server\"\nnodes = [\"kine-7\"]\nat_s = 9.0\ndowntime_s = 1.0\n",
            ":9: kills[1].nodes: `kine-7` is not a node",
        ),
        (
            "[[compaction_failures]]\nserver = \"kine-1\"\nstart = 1\ntick = 2\nbatch = 1\n\
             kind = \"slow\"\n",
            ":6: compaction_failures[0].kind: unknown value `slow`",
        ),
        (
            "[[pauses]]\nrole = \"server\"\nnode = \"kine-9\"\nat_s = 3.0\nduration_s = 1.0\n",
            ":3: pauses[0].node: `kine-9` is not a node",
        ),
        (
            "[[pauses]]\nrole = \"server\"\nnode = \"kine-1\"\nat_s = 3.0\nduration_s = -1.0\n",
            ":5: pauses[0].duration_s: -1 is not a time",
        ),
        ("[[partitions]\n", ":1: not valid TOML"),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let o = faultline(&[
            "run",
            "tests/fixtures/tiny.toml",
            "--schedule",
            file.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}{expected}", file.display())),
            "expected `{expected}` in: {err}"
        );
    }
}

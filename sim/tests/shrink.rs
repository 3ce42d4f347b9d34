//! `faultline shrink` as a user meets it: a failing seed comes back as a smaller scenario file
//! that fails the same check when run as it is, with the trace hash shrink printed; a seed that
//! does not fail exits 2.

mod common;

use common::faultline;

#[test]
fn a_failing_seed_shrinks_to_a_smaller_scenario_that_fails_the_same_check() {
    let out = std::env::temp_dir().join(format!("faultline-shrink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = faultline(&[
        "shrink",
        "tests/fixtures/tiny.toml",
        "--seed",
        "2",
        "--design",
        "compactor=kine-357",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // "tiny seed 2 (compactor=kine-357) fails compactor-continuity: 9 faults, 130 s → 1 faults, ..."
    let line = text.lines().next().unwrap();
    assert!(line.contains("fails compactor-continuity"), "{text}");
    let counts: Vec<u64> = line
        .split_once("continuity: ")
        .unwrap()
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(counts[2] < counts[0], "fewer faults: {line}");
    assert!(counts[3] <= counts[1], "no longer: {line}");
    let file = out.join("tiny-seed-2-compactor-kine-357.toml");
    let hash = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("trace hash"))
        .unwrap()
        .trim()
        .to_string();
    let run = |design: &[&str]| {
        let mut args = vec![
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(design);
        faultline(&args)
    };
    let o = run(&[]);
    let summary = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{summary}");
    assert!(summary.contains("FAIL compactor-continuity"), "{summary}");
    assert!(
        summary.contains(&format!("trace hash   {}", &hash[..16])),
        "the same run in another process: {hash}\n{summary}"
    );
    let o = run(&["--design", "compactor=fixed"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_seed_that_does_not_fail_exits_2() {
    let out = std::env::temp_dir().join(format!("faultline-shrink-pass-{}", std::process::id()));
    let o = faultline(&[
        "shrink",
        "tests/fixtures/tiny.toml",
        "--seed",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not fail"), "{err}");
}

//! The conformance suite as `make test` and a user run it: a short seed range against real etcd
//! 3.4 must pass, and its command line must refuse what it cannot do, loudly.
//!
//! Needs Debian's etcd-server: without it the seed run fails and says how to install it. The
//! range comes from FAULTLINE_CONFORMANCE_SEEDS (default 1..10); `make conformance` runs 200.

use std::process::{Command, Output};

const SUITE: &str = env!("CARGO_BIN_EXE_faultline-conformance");
const STORE: &str = env!("CARGO_BIN_EXE_faultline-store");

fn suite(args: &[&str]) -> Output {
    Command::new(SUITE)
        .args(["--store", STORE])
        .args(args)
        .output()
        .expect("the suite runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_short_seed_range_matches_etcd() {
    let seeds = std::env::var("FAULTLINE_CONFORMANCE_SEEDS").unwrap_or_else(|_| "1..10".into());
    let out = suite(&["--seeds", &seeds]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "faultline-conformance --seeds {seeds} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 mismatched"), "{stdout}");
    assert!(stdout.contains("allowances used (times): "), "{stdout}");
}

#[test]
fn a_missing_etcd_is_an_input_error_that_says_how_to_install_it() {
    let out = suite(&["--seed", "1", "--etcd", "/nonexistent/etcd"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("etcd NOT FOUND"), "{stderr}");
    assert!(stderr.contains("apt-get install"), "{stderr}");
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    for (args, flag) in [
        (&["--seeds", "5..1"][..], "--seeds"),
        (&["--seeds", "1-5"][..], "--seeds"),
        (&["--ops", "0"][..], "--ops"),
        (&["--seed", "1", "--seeds", "1..2"][..], "--seed"),
    ] {
        let out = suite(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn the_allowances_are_named_and_sourced() {
    let out = suite(&["--list-allowances"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for name in [
        "watch-at-compact-revision",
        "kine-version",
        "compact-rev-key-row",
        "kine-prev-kv-kept",
        "kine-delete-at-compact-revision",
        "kine-sort-by-version",
        "kine-range-delete",
        "progress-before-watch-start",
        "kine-progress-before-watch-start",
        "lease-ttl-clock",
        "kine-lease-ttl-clock",
        "kine-prev-kv-lease",
    ] {
        assert!(
            stdout.contains(&format!("  {name} (")),
            "{name} missing:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("    source: ").count(), 12, "{stdout}");
}

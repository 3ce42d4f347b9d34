//! Lease clients end to end: a run with `lease_clients` grants, attaches, keeps alive, revokes
//! and probes leases, records each in its trace, replays exactly, and is judged by the `lease`
//! check. What the store does with the leases is the check's business (its unit tests judge
//! both ways); this only holds the workload to doing its part.

mod common;

use common::faultline;

const TINY_LEASES: &str = "tests/fixtures/tiny-leases.toml";

fn run(seed: &str, out: &std::path::Path) -> serde_json::Value {
    let o = faultline(&[
        "run",
        TINY_LEASES,
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
        "--json-line",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAULTLINE-RESULT "))
        .unwrap_or_else(|| panic!("no result line: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap()
}

#[test]
fn lease_clients_use_every_lease_call_and_the_run_replays_exactly() {
    let out = std::env::temp_dir().join(format!("faultline-leases-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let a = run("2", &out.join("a"));
    let b = run("2", &out.join("b"));
    assert_eq!(a["trace_hash"], b["trace_hash"], "seed 2 twice");
    let trace = std::fs::read_to_string(out.join("a/tiny-leases/seed-2/trace.log")).unwrap();
    for call in [
        "lease grant ttl=",
        "lease attach ",
        "lease keep-alive ",
        "lease revoke ",
        "lease read ",
        "lease time-to-live ",
    ] {
        let n = trace.lines().filter(|l| l.contains(call)).count();
        assert!(n >= 2, "{n} lines with `{call}` in the trace");
    }
    let lease = a["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lease")
        .unwrap_or_else(|| panic!("no lease check in {a}"));
    assert_ne!(lease["status"], "n/a", "{lease}");
    let _ = std::fs::remove_dir_all(&out);
}

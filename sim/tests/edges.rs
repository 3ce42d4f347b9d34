//! The workload's edges end to end: with `edge_keys`, `edge_reads`, `empty_values` and
//! `large_values` set, a run writes keys exactly at the end of the watchers' range and of the
//! lists' ranges (so the stores' range-end handling runs, as its code probes say), empty values
//! and values at etcd's request limit, and reads with limit 1, limit equal to the count and at
//! exactly the compact revision; the fixed design passes every check on it.

mod common;

use common::faultline;
use std::io::Read;

const TINY_EDGES: &str = "tests/fixtures/tiny-edges.toml";

#[test]
fn the_workload_draws_keys_values_and_read_options_at_their_edges() {
    let out = std::env::temp_dir().join(format!("faultline-edges-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = faultline(&[
        "run",
        TINY_EDGES,
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json-line",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAULTLINE-RESULT "))
        .unwrap_or_else(|| panic!("no result line: {}", String::from_utf8_lossy(&o.stderr)));
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    let dir = out.join("tiny-edges/seed-1");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for probe in [
        "watch.kine.event_at_range_end",
        "kine.range.at_compact_revision",
    ] {
        let hits = report["probes"][probe].as_u64().unwrap_or(0);
        assert!(hits > 0, "probe {probe} not hit: {}", report["probes"]);
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("history.json.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let history: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ops = history["ops"].as_array().unwrap();
    let ok = |o: &serde_json::Value| o["outcome"]["status"] == "ok";
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| {
        ops.iter().filter(|o| ok(o) && f(&o["request"])).count()
    };
    let write = |r: &serde_json::Value| r["op"] == "create" || r["op"] == "update";
    let at = |key: &'static str| move |r: &serde_json::Value| write(r) && r["key"] == key;
    assert!(
        count(&at("/registry0")) > 0,
        "no write at the watchers' range end"
    );
    assert!(
        count(&at("/registry/pods0")) > 0,
        "no write at the lists' range end"
    );
    assert!(
        count(&at("/registry/pods/ns-0/obj-0000\0")) > 0,
        "no write just after an object"
    );
    assert!(
        count(&|r| write(r) && r["value"] == "") > 0,
        "no empty value written"
    );
    assert!(
        count(&|r| write(r) && r["value"].as_str().is_some_and(|v| v.len() > 1_500_000)) > 0,
        "no value at the request limit written"
    );
    let list = |r: &serde_json::Value| r["op"] == "list";
    assert!(
        count(&|r| list(r) && r["limit"] == 1 && r["count_only"] != true) > 0,
        "no list with limit 1"
    );
    // A list whose limit equals the count the count-only read before it gave, at its revision.
    let of = |client: &str| -> Vec<&serde_json::Value> {
        ops.iter().filter(|o| o["client"] == client).collect()
    };
    let limit_is_count = ["client-1", "client-2"].iter().any(|c| {
        of(c).windows(3).any(|w| {
            let counted = &w[0]["outcome"]["result"]["count"];
            ok(w[0])
                && w[0]["request"]["count_only"] == true
                && ok(w[2])
                && w[2]["request"]["limit"] == *counted
                && counted.as_i64().is_some_and(|c| c > 0)
                && w[2]["outcome"]["result"]["more"] == false
        })
    });
    assert!(limit_is_count, "no list with limit equal to the count");
    assert_eq!(result["status"], "pass", "{result}");
    let _ = std::fs::remove_dir_all(&out);
}

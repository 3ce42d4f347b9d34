//! A real client library's features against etcd 3.4 and then faultline-store: the npm `etcd3`
//! client (pinned in real/clients/etcd3/package-lock.json) drives sorted and filtered ranges,
//! transactions, leases (revoke, expiry, keep-alive, the `lost` event, time-to-live), locks,
//! elections and watches, as applications use them (real/clients/etcd3/features.mjs).
//!
//! Each feature judges its own outcome by etcd's answers; the test requires every feature to
//! hold on etcd (so the expectations are etcd's) and then on faultline-store with the same
//! details. Needs Node.js, the installed package (`npm ci --prefix real/clients/etcd3`) and
//! etcd 3.4: without them it fails, loudly, saying what to install.

#[path = "../src/conformance/processes.rs"]
#[allow(dead_code)]
mod processes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/etcd3")
}

fn on_path(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("\n\n******** {name} NOT FOUND on PATH ********\n{install}\n\n"))
}

/// Runs every feature against `addr`; the outcome of each, by name.
fn features(node: &Path, addr: &str) -> BTreeMap<String, (bool, String)> {
    let out = Command::new(node)
        .current_dir(client_dir())
        .arg("features.mjs")
        .arg(format!("http://{addr}"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("features.mjs printed {line:?}: {e}"));
        outcomes.insert(
            v["feature"].as_str().expect("a feature name").to_string(),
            (v["ok"].as_bool() == Some(true), v["detail"].to_string()),
        );
    }
    assert!(
        !outcomes.is_empty(),
        "features.mjs ran no feature (exit {:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    outcomes
}

fn failures(outcomes: &BTreeMap<String, (bool, String)>) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, (ok, _))| !ok)
        .map(|(name, (_, detail))| format!("  {name}: {detail}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_etcd3_client_library_works_on_faultline_store_as_on_etcd() {
    let node = on_path(
        "node",
        "this test needs Node.js 20 (`sudo apt-get install nodejs npm`)",
    );
    assert!(
        client_dir()
            .join("node_modules/etcd3/package.json")
            .is_file(),
        "\n\n******** the npm etcd3 package is NOT INSTALLED ********\n\
         run `npm ci --prefix real/clients/etcd3` (bash .ci/run does), then this test again\n\n"
    );
    let install = "this test needs etcd 3.4: `sudo apt-get install etcd-server etcd-client`";
    let etcd_binary = on_path("etcd", install);
    let root = std::env::temp_dir().join(format!("faultline-etcd3-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();

    let etcd = processes::start_etcd(&etcd_binary, &root, "etcd3")
        .await
        .expect("etcd starts");
    let addr = etcd.addr.clone();
    let node_ = node.clone();
    let on_etcd = tokio::task::spawn_blocking(move || features(&node_, &addr))
        .await
        .unwrap();
    drop(etcd);
    let broken = failures(&on_etcd);
    assert!(
        broken.is_empty(),
        "the features' expectations do not hold on etcd 3.4 itself:\n{}",
        broken.join("\n")
    );

    let store = processes::start_store(
        Path::new(env!("CARGO_BIN_EXE_faultline-store")),
        &root,
        "etcd3",
    )
    .await
    .expect("faultline-store starts");
    let addr = store.addr.clone();
    let on_store = tokio::task::spawn_blocking(move || features(&node, &addr))
        .await
        .unwrap();
    drop(store);
    let _ = std::fs::remove_dir_all(&root);

    let mut differences = failures(&on_store);
    for (name, (_, etcd_detail)) in &on_etcd {
        match on_store.get(name) {
            None => differences.push(format!("  {name}: not run on faultline-store")),
            Some((true, detail)) if detail != etcd_detail => differences.push(format!(
                "  {name}: faultline-store {detail}, etcd {etcd_detail}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        differences.is_empty(),
        "the etcd3 client's features that differ on faultline-store:\n{}",
        differences.join("\n")
    );
}

//! etcd's own client against faultline-store: the commands a user types (put, get with
//! --prefix/--limit/--rev/--keys-only/--from-key, del, the apiserver's guarded txns, watch from a
//! revision with --prev-kv, compact, endpoint status), each answer checked.
//!
//! The same script runs against real etcd 3.4 first and must give the same expected answers
//! there, so every expectation is etcd's; faultline-store differs in one documented place only
//! (kine's compact_rev_key row in `get "" --from-key`). Needs Debian's etcd-server and
//! etcd-client: without them this test fails, loudly, saying how to install them.

#[path = "../src/conformance/processes.rs"]
#[allow(dead_code)]
mod processes;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str =
    "this test needs etcd 3.4 and etcdctl: `sudo apt-get install etcd-server etcd-client` \
                       (Debian/Ubuntu; as root without sudo), then run it again";

fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("\n\n******** {name} NOT FOUND on PATH ********\n{INSTALL}\n\n"))
}

struct Etcdctl {
    binary: PathBuf,
    endpoint: String,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Etcdctl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(&self.binary)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "--command-timeout", "5s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that does not end by itself (watch) until its output (stdout, then
    /// stderr) holds `until`; returns (stdout, stderr).
    fn run_until(&self, args: &[&str], until: &str) -> (String, String) {
        let mut child = Command::new(&self.binary)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs");
        let (tx, rx) = std::sync::mpsc::channel();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for (which, mut pipe) in pipes.into_iter().enumerate() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 || tx.send((which, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
        }
        let mut seen = [Vec::new(), Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = |seen: &[Vec<u8>; 2]| {
            (
                String::from_utf8_lossy(&seen[0]).into_owned(),
                String::from_utf8_lossy(&seen[1]).into_owned(),
            )
        };
        while Instant::now() < deadline {
            let (out, err) = text(&seen);
            if out.contains(until) || err.contains(until) {
                break;
            }
            if let Ok((which, chunk)) = rx.recv_timeout(Duration::from_millis(100)) {
                seen[which].extend(chunk);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        text(&seen)
    }
}

fn lines(text: &[&str]) -> String {
    text.iter().map(|l| format!("{l}\n")).collect()
}

/// The `-w fields` lines that describe data (not the server's identity, not kine's version).
fn data_fields(text: &str) -> String {
    text.lines()
        .filter(|l| {
            [
                "\"Revision\"",
                "\"Key\"",
                "\"CreateRevision\"",
                "\"ModRevision\"",
                "\"Value\"",
                "\"More\"",
                "\"Count\"",
            ]
            .iter()
            .any(|f| l.starts_with(f))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

const WATCHED: &[&str] = &[
    "PUT",
    "/registry/pods/default/a",
    "v1",
    "PUT",
    "/registry/pods/default/b",
    "v1",
    "PUT",
    "/registry/pods/default/a",
    "v1",
    "/registry/pods/default/a",
    "v2",
    "PUT",
    "/registry/pods/default/c",
    "v1",
    "DELETE",
    "/registry/pods/default/c",
    "v1",
    "/registry/pods/default/c",
    "",
    "DELETE",
    "/registry/pods/default/b",
    "v1",
    "/registry/pods/default/b",
    "",
];

/// The script; `kine` says which answers to expect where kine differs on purpose.
fn script(ctl: &Etcdctl, kine: bool) {
    let check = |what: &str, got: &Output, want: &str| {
        assert!(got.ok, "{what}: etcdctl failed: {}", got.stderr);
        assert_eq!(got.stdout, want, "{what}");
    };
    for (key, value) in [("a", "v1"), ("b", "v1"), ("a", "v2")] {
        let key = format!("/registry/pods/default/{key}");
        check("put", &ctl.run(&["put", &key, value], None), "OK\n");
    }
    check(
        "get --prefix",
        &ctl.run(&["get", "/registry/pods/", "--prefix"], None),
        &lines(&[
            "/registry/pods/default/a",
            "v2",
            "/registry/pods/default/b",
            "v1",
        ]),
    );
    check(
        "get --prefix --limit 1",
        &ctl.run(
            &["get", "/registry/pods/", "--prefix", "--limit", "1"],
            None,
        ),
        &lines(&["/registry/pods/default/a", "v2"]),
    );
    check(
        "get --sort-by=CREATE --order=DESCEND --limit 1",
        &ctl.run(
            &[
                "get",
                "/registry/pods/",
                "--prefix",
                "--sort-by=CREATE",
                "--order=DESCEND",
                "--limit",
                "1",
            ],
            None,
        ),
        &lines(&["/registry/pods/default/b", "v1"]),
    );
    check(
        "get --keys-only",
        &ctl.run(&["get", "/registry/pods/", "--prefix", "--keys-only"], None),
        &lines(&[
            "/registry/pods/default/a",
            "",
            "/registry/pods/default/b",
            "",
        ]),
    );
    check(
        "get --rev 2",
        &ctl.run(&["get", "/registry/pods/default/a", "--rev", "2"], None),
        &lines(&["/registry/pods/default/a", "v1"]),
    );
    let fields = ctl.run(&["get", "/registry/pods/default/a", "-w", "fields"], None);
    assert!(fields.ok, "get -w fields: {}", fields.stderr);
    assert_eq!(
        data_fields(&fields.stdout),
        lines(&[
            "\"Revision\" : 4",
            "\"Key\" : \"/registry/pods/default/a\"",
            "\"CreateRevision\" : 2",
            "\"ModRevision\" : 4",
            "\"Value\" : \"v2\"",
            "\"More\" : false",
            "\"Count\" : 1",
        ]),
        "get -w fields: revisions as etcd counts them"
    );
    let mut all = vec![
        "/registry/pods/default/a",
        "",
        "/registry/pods/default/b",
        "",
    ];
    if kine {
        // kine's bookkeeping row (allowance compact-rev-key-row).
        all.extend(["compact_rev_key", ""]);
    }
    check(
        "get \"\" --from-key",
        &ctl.run(&["get", "", "--from-key", "--keys-only"], None),
        &lines(&all),
    );
    // The apiserver's shapes: create if absent, update at a known mod revision, delete at one.
    let txn = |key: &str, mod_revision: &str, then: &str| {
        format!("mod(\"{key}\") = \"{mod_revision}\"\n\n{then}\n\nget {key}\n\n")
    };
    let c = "/registry/pods/default/c";
    let a = "/registry/pods/default/a";
    check(
        "txn create",
        &ctl.run(&["txn"], Some(&txn(c, "0", &format!("put {c} v1")))),
        &lines(&["SUCCESS", "", "OK"]),
    );
    check(
        "txn update with a stale mod revision",
        &ctl.run(&["txn"], Some(&txn(a, "2", &format!("put {a} v3")))),
        &lines(&["FAILURE", "", a, "v2"]),
    );
    check(
        "txn delete at the current mod revision",
        &ctl.run(&["txn"], Some(&txn(c, "5", &format!("del {c}")))),
        &lines(&["SUCCESS", "", "1"]),
    );
    check(
        "del",
        &ctl.run(&["del", "/registry/pods/default/b"], None),
        "1\n",
    );
    let (watched, _) = ctl.run_until(
        &[
            "watch",
            "/registry/pods/",
            "--prefix",
            "--rev",
            "2",
            "--prev-kv",
        ],
        "DELETE\n/registry/pods/default/b\nv1\n/registry/pods/default/b\n\n",
    );
    assert_eq!(watched, lines(WATCHED), "watch --rev 2 --prev-kv");
    check(
        "compact",
        &ctl.run(&["compact", "5"], None),
        "compacted revision 5\n",
    );
    let compacted = ctl.run(&["get", a, "--rev", "3"], None);
    assert!(!compacted.ok, "a read below the compact revision fails");
    assert!(
        compacted
            .stderr
            .contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{}",
        compacted.stderr
    );
    let future = ctl.run(&["get", a, "--rev", "100"], None);
    assert!(!future.ok, "a read above the current revision fails");
    assert!(
        future
            .stderr
            .contains("Error: etcdserver: mvcc: required revision is a future revision"),
        "{}",
        future.stderr
    );
    check(
        "get at the compact revision",
        &ctl.run(&["get", "/registry/pods/", "--prefix", "--rev", "5"], None),
        &lines(&[
            "/registry/pods/default/a",
            "v2",
            "/registry/pods/default/b",
            "v1",
            c,
            "v1",
        ]),
    );
    let (_, cancelled) = ctl.run_until(&["watch", a, "--rev", "2"], "canceled");
    assert!(
        cancelled.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "a watch below the compact revision is cancelled: {cancelled}"
    );
    let status = ctl.run(&["endpoint", "status"], None);
    assert!(status.ok, "endpoint status: {}", status.stderr);
    assert!(
        status.stdout.starts_with(&format!("{}, ", ctl.endpoint)),
        "{}",
        status.stdout
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-etcdctl-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_answers_as_etcd_does() {
    let etcdctl = on_path("etcdctl");
    let etcd_binary = on_path("etcd");
    let root = scratch("servers");
    let etcd = processes::start_etcd(&etcd_binary, &root, "etcdctl")
        .await
        .expect("etcd starts");
    let ctl = |endpoint: &str| Etcdctl {
        binary: etcdctl.clone(),
        endpoint: endpoint.to_string(),
    };
    let on_etcd = ctl(&etcd.addr);
    tokio::task::spawn_blocking(move || script(&on_etcd, false))
        .await
        .expect("real etcd gives the script's expected answers");
    drop(etcd);
    let store = processes::start_store(
        Path::new(env!("CARGO_BIN_EXE_faultline-store")),
        &root,
        "etcdctl",
    )
    .await
    .expect("faultline-store starts");
    let on_store = ctl(&store.addr);
    tokio::task::spawn_blocking(move || script(&on_store, true))
        .await
        .expect("faultline-store gives etcd's answers");
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
}

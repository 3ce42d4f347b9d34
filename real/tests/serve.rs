//! faultline-store as a user runs it: durability across a kill, a clean Ctrl-C, the compactor's
//! flags taking effect, and usage errors that name the flag. Needs no etcd.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use store::proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest, RangeResponse};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_faultline-store");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Running {
    child: Child,
    addr: String,
    stderr: PathBuf,
}

impl Running {
    fn start(db: &Path, extra: &[&str]) -> Running {
        let stderr = db.with_extension("stderr");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address line, got {line:?}"))
            .to_string();
        Running {
            child,
            addr,
            stderr,
        }
    }

    async fn client(&self) -> KvClient<Channel> {
        KvClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let req = PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kv.put(req)
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

async fn prefix(kv: &mut KvClient<Channel>, revision: i64) -> Result<RangeResponse, tonic::Status> {
    let req = RangeRequest {
        key: b"/registry/".to_vec(),
        range_end: b"/registry0".to_vec(),
        revision,
        ..Default::default()
    };
    kv.range(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_killed_server_restarts_with_its_data_and_revision() {
    let dir = temp_dir("restart");
    let db = dir.join("store.db");
    let before = {
        let server = Running::start(&db, &[]);
        let mut kv = server.client().await;
        assert_eq!(put(&mut kv, "/registry/pods/a", "1").await, 2);
        assert_eq!(put(&mut kv, "/registry/pods/b", "1").await, 3);
        assert_eq!(put(&mut kv, "/registry/pods/a", "2").await, 4);
        let before = prefix(&mut kv, 0).await.unwrap();
        drop(server); // SIGKILL: no shutdown, no checkpoint
        before
    };
    let server = Running::start(&db, &[]);
    let mut kv = server.client().await;
    let after = prefix(&mut kv, 0).await.unwrap();
    assert_eq!(after.kvs, before.kvs, "the same keys and values");
    assert_eq!(after.header.unwrap().revision, 4, "the same revision");
    assert_eq!(
        prefix(&mut kv, 3).await.unwrap().kvs[0].value,
        b"1".to_vec(),
        "and the same history"
    );
    assert_eq!(put(&mut kv, "/registry/pods/c", "1").await, 5);
    assert!(
        server.log().contains("database at revision 4"),
        "{}",
        server.log()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn leases_and_their_keys_survive_a_kill_and_the_restart_renews_them() {
    use store::proto::etcdserverpb::{
        lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
        LeaseTimeToLiveRequest,
    };
    let dir = temp_dir("leases");
    let db = dir.join("store.db");
    let (id, revision) = {
        let server = Running::start(&db, &[]);
        let mut leases = LeaseClient::connect(format!("http://{}", server.addr))
            .await
            .unwrap();
        let granted = leases
            .lease_grant(LeaseGrantRequest { ttl: 3, id: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut kv = server.client().await;
        let req = PutRequest {
            key: b"/registry/leases/held".to_vec(),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        };
        let revision = kv
            .put(req)
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        drop(server); // SIGKILL
        (granted.id, revision)
    };
    // Down longer than the TTL: the restart renews the lease instead of expiring it at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = Running::start(&db, &[]);
    let mut leases = LeaseClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let ttl = |leases: &mut LeaseClient<Channel>| {
        let mut leases = leases.clone();
        async move {
            leases
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let alive = ttl(&mut leases).await;
    assert_eq!(alive.granted_ttl, 3);
    assert!(alive.ttl >= 1, "renewed at the restart: {alive:?}");
    assert_eq!(alive.keys, vec![b"/registry/leases/held".to_vec()]);
    let mut kv = server.client().await;
    assert_eq!(prefix(&mut kv, 0).await.unwrap().kvs.len(), 1);
    // Kept alive past its TTL, then left to expire: its key goes with it, in one new revision.
    let renew = futures::stream::iter(vec![LeaseKeepAliveRequest { id }; 1]);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut answers = leases
            .lease_keep_alive(renew.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answers.message().await.unwrap().unwrap().ttl, 3);
    }
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert_eq!(ttl(&mut leases).await.ttl, -1, "expired");
    let after = prefix(&mut kv, 0).await.unwrap();
    assert!(after.kvs.is_empty());
    assert_eq!(after.header.unwrap().revision, revision + 1);
    assert_eq!(
        leases
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_and_checkpoints_the_wal() {
    let dir = temp_dir("ctrl-c");
    let db = dir.join("store.db");
    let mut server = Running::start(&db, &[]);
    let mut kv = server.client().await;
    put(&mut kv, "/registry/pods/a", "1").await;
    assert!(
        dir.join("store.db-wal").exists(),
        "the database runs in WAL mode"
    );
    unsafe { libc::kill(server.child.id() as i32, libc::SIGINT) };
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}: {}", server.log());
    let log = server.log();
    assert!(log.contains("interrupted (Ctrl-C), shutting down"), "{log}");
    assert!(log.contains("faultline-store: stopped"), "{log}");
    assert!(
        !dir.join("store.db-wal").exists(),
        "closing the database folds the WAL into the file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_compactor_flags_take_effect() {
    let dir = temp_dir("compactor");
    let db = dir.join("store.db");
    let server = Running::start(
        &db,
        &["--compact-interval-s", "1", "--compact-min-retain", "0"],
    );
    let mut kv = server.client().await;
    put(&mut kv, "/registry/pods/a", "1").await;
    put(&mut kv, "/registry/pods/a", "2").await;
    // The first tick targets the revision seen at start, the second the one seen at the first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match prefix(&mut kv, 2).await {
            Err(status) => {
                assert_eq!(
                    status.message(),
                    "etcdserver: mvcc: required revision has been compacted"
                );
                break;
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("nothing compacted within 10 s: {}", server.log()),
        }
    }
    assert!(
        server.log().contains("compacted to revision"),
        "{}",
        server.log()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn usage_error(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} must be a usage error");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let err = usage_error(&[
        "serve",
        "--db",
        ":memory:",
        "--compact-batch-revisions",
        "50",
    ]);
    assert!(err.contains("--compact-batch-revisions"), "{err}");
    assert!(err.contains("at least 100"), "{err}");
    let err = usage_error(&["serve"]);
    assert!(err.contains("--db"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = usage_error(&["serve", "--db", ":memory:", "--listen", &addr]);
    assert!(err.contains(&format!("--listen {addr}")), "{err}");
    let dir = temp_dir("not-a-db");
    let bogus = dir.join("bogus.db");
    std::fs::write(&bogus, vec![b'x'; 4096]).unwrap();
    let err = usage_error(&["serve", "--db", bogus.to_str().unwrap()]);
    assert!(err.contains("--db"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Real faults against real processes: link cuts that hang instead of refusing, a 3-member
//! etcd 3.4 behind faultline's proxies (a member cut off, stopped, killed and restarted), and
//! faultline-store killed and restarted on its SQLite file. Needs /usr/bin/etcd (Debian's
//! etcd-server) for the etcd tests: without it they print a banner saying they were skipped,
//! and fail instead when FAULTLINE_REQUIRE_ETCD=1.

use faultline_real::live::runner::{self, FaultRecord};
use faultline_real::live::schedule::{Compaction, Kill, Partition, Pause, Schedule};
use faultline_real::live::{Cluster, Endpoint, Network, Target};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use store::proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

const ETCD: &str = "/usr/bin/etcd";

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_faultline-store"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target(name: &str) -> Target {
    Target::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../targets/{name}.toml")))
        .unwrap()
}

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// False (after a banner nobody can miss) when etcd is not installed; a failure instead when
/// FAULTLINE_REQUIRE_ETCD=1.
fn have_etcd(test: &str) -> bool {
    if Path::new(ETCD).is_file() {
        return true;
    }
    let banner = format!(
        "\n\n******** SKIPPED {test}: {ETCD} NOT FOUND ********\n\
         install Debian's etcd 3.4 (`apt-get install etcd-server etcd-client`) to run it\n\n"
    );
    if std::env::var("FAULTLINE_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
        panic!("{banner}");
    }
    eprintln!("{banner}");
    false
}

async fn kv(addr: SocketAddr) -> KvClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    KvClient::new(channel)
}

/// Puts `key` through `addr`, retrying (each attempt 1 s) until `within` passes.
async fn put(addr: SocketAddr, key: &str, value: &str, within: Duration) -> anyhow::Result<i64> {
    let started = Instant::now();
    let mut client = kv(addr).await;
    loop {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(1), client.put(request)).await {
            Ok(Ok(r)) => return Ok(r.into_inner().header.map_or(0, |h| h.revision)),
            outcome if started.elapsed() > within => {
                anyhow::bail!("put {key} via {addr} not acknowledged in {within:?}: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The value of `key` read through `addr` (linearizable unless `serializable`), one attempt.
async fn get(
    addr: SocketAddr,
    key: &str,
    serializable: bool,
    wait: Duration,
) -> Option<Option<String>> {
    let mut client = kv(addr).await;
    let request = RangeRequest {
        key: key.into(),
        serializable,
        ..Default::default()
    };
    match tokio::time::timeout(wait, client.range(request)).await {
        Ok(Ok(r)) => Some(
            r.into_inner()
                .kvs
                .first()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        ),
        _ => None,
    }
}

/// Reads `key` through `addr` until it has `value`, for at most `within`.
async fn eventually(
    addr: SocketAddr,
    key: &str,
    value: &str,
    serializable: bool,
    within: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if get(addr, key, serializable, Duration::from_secs(1)).await
            == Some(Some(value.to_string()))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A backend that greets every connection with "hello" and sends back what it received, so
/// each direction through a proxy can be watched on its own.
async fn greeter() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                s.write_all(b"hello").await.unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn read_some(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// A cut link hangs (the connection is accepted, the bytes held), one direction at a time,
/// and healing delivers what was held.
#[tokio::test]
async fn a_cut_link_holds_bytes_per_direction_and_refuses_nothing() {
    let network = Network::new();
    let backend = greeter().await;
    let addr = network.client_proxy(0, 0, backend).await.unwrap();
    let (c, m) = (Endpoint::Client(0), Endpoint::Member(0));

    // Cut both ways: the connection is made (nothing refused) but the greeting does not come.
    network.cut(&[(c, m), (m, c)]);
    let mut s = TcpStream::connect(addr)
        .await
        .expect("a cut link still accepts");
    assert_eq!(read_some(&mut s, Duration::from_millis(500)).await, None);
    // Healing delivers the held greeting.
    network.heal(&[(c, m), (m, c)]);
    assert_eq!(
        read_some(&mut s, Duration::from_secs(2)).await.unwrap(),
        b"hello"
    );

    // One way, client to member: the client's bytes are held, nothing comes back.
    network.cut(&[(c, m)]);
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_some(&mut s, Duration::from_millis(500)).await, None);
    network.heal(&[(c, m)]);
    assert_eq!(
        read_some(&mut s, Duration::from_secs(2)).await.unwrap(),
        b"ping"
    );

    // One way, member to client: the echo reaches the backend but its answer is held.
    network.cut(&[(m, c)]);
    s.write_all(b"pong").await.unwrap();
    assert_eq!(read_some(&mut s, Duration::from_millis(500)).await, None);
    assert!(
        network.stats()[&(c, m)].bytes >= 8,
        "the backend got it: {:?}",
        network.stats()
    );
    network.heal(&[(m, c)]);
    assert_eq!(
        read_some(&mut s, Duration::from_secs(2)).await.unwrap(),
        b"pong"
    );

    // Overlapping cuts: one heal leaves the other in force.
    network.cut(&[(c, m)]);
    network.cut(&[(c, m)]);
    network.heal(&[(c, m)]);
    assert!(network.is_cut(c, m));
    network.heal(&[(c, m)]);
    assert!(!network.is_cut(c, m));
}

/// Three etcd members behind the proxies: every peer connection is attributed to its dialler;
/// a member cut off (both ways) from the other two cannot serve a linearizable read while the
/// other two still take writes; once healed it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_cut_off_hangs_and_catches_up() {
    if !have_etcd("etcd_member_cut_off_hangs_and_catches_up") {
        return;
    }
    let dir = run_dir("cut");
    let cluster = Cluster::start(&target("etcd-3"), &dir, &bin_dir())
        .await
        .unwrap();
    let addr: Vec<SocketAddr> =
        futures::future::join_all((0..3).map(|i| cluster.client_addr(0, i)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    put(addr[0], "before", "1", Duration::from_secs(10))
        .await
        .unwrap();
    // Every member has dialled every other through their proxies, each known by its process.
    let stats = cluster.network.stats();
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                let link = (Endpoint::Member(a), Endpoint::Member(b));
                assert!(
                    stats
                        .get(&link)
                        .is_some_and(|s| s.connections > 0 && s.bytes > 0),
                    "{link:?}: {stats:?}"
                );
            }
        }
    }
    assert!(
        !stats.keys().any(|(from, _)| *from == Endpoint::Unknown),
        "{stats:?}"
    );

    let cut = Partition {
        kind: "symmetric".into(),
        from: vec!["n1".into()],
        to: vec!["n2".into(), "n3".into()],
        one_way: false,
        start_s: 0.0,
        duration_s: 0.0,
    };
    let links = cut.links(3, 1);
    cluster.network.cut(&links);
    // The majority elects (or keeps) a leader and takes writes.
    put(addr[1], "during", "2", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(eventually(addr[2], "during", "2", false, Duration::from_secs(5)).await);
    // The cut member cannot confirm it is up to date: its linearizable read hangs.
    let started = Instant::now();
    assert_eq!(
        get(addr[0], "during", false, Duration::from_secs(3)).await,
        None
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it failed fast instead of hanging"
    );
    // It still answers from its own state, which lacks the write.
    assert_eq!(
        get(addr[0], "during", true, Duration::from_secs(2)).await,
        Some(None)
    );

    cluster.network.heal(&links);
    assert!(
        eventually(addr[0], "during", "2", false, Duration::from_secs(15)).await,
        "the healed member caught up"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stopped member answers nothing while the other two go on; resumed, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_paused_and_resumed() {
    if !have_etcd("etcd_member_paused_and_resumed") {
        return;
    }
    let dir = run_dir("pause");
    let cluster = Cluster::start(&target("etcd-3"), &dir, &bin_dir())
        .await
        .unwrap();
    let n1 = cluster.client_addr(0, 0).await.unwrap();
    let n3 = cluster.client_addr(0, 2).await.unwrap();
    assert!(cluster.pause(2));
    assert!(cluster.is_paused(2));
    put(n1, "k", "v", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        get(n3, "k", true, Duration::from_secs(2)).await,
        None,
        "a stopped process answers nothing"
    );
    assert!(cluster.resume(2));
    assert!(eventually(n3, "k", "v", true, Duration::from_secs(10)).await);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGKILL and restart on the same data folder: the member comes back and catches up; then
/// every member is killed at once and restarted, and the data is still there (from disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_kill_and_restart_keeps_the_data() {
    if !have_etcd("etcd_kill_and_restart_keeps_the_data") {
        return;
    }
    let dir = run_dir("kill");
    let cluster = Cluster::start(&target("etcd-3"), &dir, &bin_dir())
        .await
        .unwrap();
    let addr: Vec<SocketAddr> = (0..3).map(|i| cluster.direct_addr(i)).collect();
    put(addr[0], "a", "1", Duration::from_secs(10))
        .await
        .unwrap();
    let old_pid = cluster.pid(2).unwrap();
    assert!(cluster.kill(2));
    assert!(!cluster.is_running(2));
    put(addr[0], "b", "2", Duration::from_secs(10))
        .await
        .unwrap();
    cluster.restart(2).await.unwrap();
    assert_ne!(cluster.pid(2), Some(old_pid));
    assert_eq!(cluster.starts(2), 2);
    assert!(eventually(addr[2], "b", "2", true, Duration::from_secs(10)).await);
    for i in 0..3 {
        assert!(cluster.kill(i));
    }
    for i in 0..3 {
        cluster.respawn(i).unwrap();
    }
    for i in 0..3 {
        cluster.wait_ready(i).await.unwrap();
    }
    for (i, &addr) in addr.iter().enumerate() {
        assert!(
            eventually(addr, "a", "1", false, Duration::from_secs(10)).await,
            "n{} lost a",
            i + 1
        );
        assert!(
            eventually(addr, "b", "2", false, Duration::from_secs(5)).await,
            "n{} lost b",
            i + 1
        );
    }
    let log = std::fs::read_to_string(dir.join("n3/stderr.log")).unwrap();
    assert_eq!(
        log.matches("==== faultline: start").count(),
        3,
        "each start is marked in the log"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// faultline-store killed and restarted on its SQLite file keeps every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faultline_store_kill_keeps_acknowledged_writes() {
    let dir = run_dir("store-kill");
    let cluster = Cluster::start(&target("faultline-store"), &dir, &bin_dir())
        .await
        .unwrap();
    let addr = cluster.client_addr(0, 0).await.unwrap();
    let mut last = 0;
    for i in 0..50 {
        last = put(
            addr,
            &format!("k{i:02}"),
            &i.to_string(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    assert!(cluster.kill(0));
    cluster.restart(0).await.unwrap();
    let mut client = kv(addr).await;
    let all = client
        .range(RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.kvs.len(), 50);
    assert!(all.header.unwrap().revision >= last);
    assert!(dir.join("n1/data/store.db").is_file());
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A schedule written to a file and read back runs its faults at their offsets against
/// faultline-store: a kill with a downtime, a pause, clients cut off; each fault is logged
/// with when it really started and ended, and the server answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_replays_at_its_offsets() {
    let dir = run_dir("schedule");
    let cluster = Cluster::start(&target("faultline-store"), &dir, &bin_dir())
        .await
        .unwrap();
    let addr = cluster.client_addr(0, 0).await.unwrap();
    let schedule = Schedule {
        seed: None,
        mix: None,
        kills: vec![Kill {
            role: "member".into(),
            nodes: vec!["n1".into()],
            at_s: 0.3,
            downtime_s: 0.7,
        }],
        pauses: vec![Pause {
            role: "member".into(),
            node: "n1".into(),
            at_s: 3.0,
            duration_s: 1.0,
        }],
        partitions: vec![Partition {
            kind: "clients".into(),
            from: vec!["c1".into()],
            to: vec!["n1".into()],
            one_way: false,
            start_s: 4.5,
            duration_s: 1.0,
        }],
        // Carried through, not carried out: the runner leaves compactions to live runs.
        compaction: Some(Compaction {
            interval_s: 5.0,
            edge_every: 2,
        }),
    };
    let file = dir.join("schedule.toml");
    schedule.write(&file).unwrap();
    let replayed = Schedule::load(&file, 1, 1).unwrap();
    assert_eq!(replayed, schedule);

    let origin = tokio::time::Instant::now();
    let watcher = async {
        // Restarted at 1 s: answering again well before the pause at 3 s.
        tokio::time::sleep_until(origin + Duration::from_millis(1000)).await;
        let ready = cluster.wait_ready(0).await.map_err(|e| e.to_string());
        let ready_at = origin.elapsed();
        // During the pause (3 to 4 s) and the cut (4.5 to 5.5 s) nothing is answered.
        tokio::time::sleep_until(origin + Duration::from_millis(3300)).await;
        let paused = get(addr, "x", true, Duration::from_millis(500)).await;
        tokio::time::sleep_until(origin + Duration::from_millis(4800)).await;
        let cut = get(addr, "x", true, Duration::from_millis(500)).await;
        (ready, ready_at, paused, cut)
    };
    let mut lines = Vec::new();
    let (records, (ready, ready_at, paused, cut)) = tokio::join!(
        runner::run(
            &replayed,
            &cluster,
            1,
            |r: &FaultRecord, _: &runner::Happened| lines.push(r.to_string())
        ),
        watcher
    );
    assert_eq!(ready, Ok(()));
    assert!(
        ready_at < Duration::from_millis(3000),
        "restarted too slowly: {ready_at:?}"
    );
    assert_eq!((paused, cut), (None, None), "{lines:?}");
    assert_eq!(records.len(), 3);
    for r in &records {
        let end = r.ended.expect("every fault ended");
        assert!(
            r.started >= r.planned && r.started < r.planned + Duration::from_millis(300),
            "{r}"
        );
        assert!(end > r.started, "{r}");
        assert_eq!(r.note, None, "{r}");
    }
    assert_eq!(cluster.starts(0), 2, "killed once, restarted once");
    assert_eq!(
        lines.len(),
        6,
        "a line as each fault starts and ends: {lines:?}"
    );
    cluster.wait_ready(0).await.unwrap();
    assert!(put(addr, "after", "1", Duration::from_secs(5))
        .await
        .is_ok());
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node is killed when its cluster is dropped during a panic: no process outlives the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_leaves_no_process_behind() {
    let dir = run_dir("panic");
    let cluster = Cluster::start(&target("faultline-store"), &dir, &bin_dir())
        .await
        .unwrap();
    let pid = cluster.pid(0).unwrap();
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid));
    let outcome = std::thread::spawn(move || {
        let _owned = cluster;
        panic!("a test failing while it holds the cluster");
    })
    .join();
    assert!(outcome.is_err());
    assert!(!alive(pid), "faultline-store {pid} outlived the panic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A drawn schedule (partitions of every kind, a kill, a pause) against 3 etcd members while a
/// client writes through its links: every write acknowledged during the faults is there
/// afterwards on every member, and every peer connection was attributed to its member, the
/// restarted ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_under_a_drawn_schedule_keeps_acknowledged_writes() {
    if !have_etcd("etcd_under_a_drawn_schedule_keeps_acknowledged_writes") {
        return;
    }
    let mix = faultline_real::live::schedule::Mix {
        partitions_per_min: 20.0,
        kills_per_min: 8.0,
        pauses_per_min: 8.0,
    };
    // The first seed from 1 whose 12 s draw has a kill, a pause and a partition.
    let schedule = (1..)
        .map(|seed| Schedule::draw(seed, &mix, 3, 1, 12.0))
        .find(|s| !s.kills.is_empty() && !s.pauses.is_empty() && !s.partitions.is_empty())
        .unwrap();
    let dir = run_dir("drawn");
    let cluster = Cluster::start(&target("etcd-3"), &dir, &bin_dir())
        .await
        .unwrap();
    let addr: Vec<SocketAddr> =
        futures::future::join_all((0..3).map(|i| cluster.client_addr(0, i)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let writer = async {
        let started = Instant::now();
        let mut acked = Vec::new();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(11) {
            let key = format!("w{i:03}");
            let mut client = kv(addr[i % 3]).await;
            let request = PutRequest {
                key: key.clone().into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), client.put(request)).await
            {
                acked.push(key);
            }
            i += 1;
        }
        acked
    };
    let mut lines = Vec::new();
    let (records, acked) = tokio::join!(
        runner::run(
            &schedule,
            &cluster,
            1,
            |r: &FaultRecord, _: &runner::Happened| lines.push(r.to_string())
        ),
        writer
    );
    eprintln!("{}", lines.join("\n"));
    assert!(records.iter().all(|r| r.ended.is_some()), "{lines:?}");
    assert!(
        acked.len() >= 5,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for i in 0..3 {
        cluster.wait_ready(i).await.unwrap();
    }
    for (i, &member) in addr.iter().enumerate() {
        for key in &acked {
            assert!(
                eventually(member, key, "v", false, Duration::from_secs(10)).await,
                "n{} lacks acknowledged {key}",
                i + 1
            );
        }
    }
    let stats = cluster.network.stats();
    assert!(
        !stats.keys().any(|(from, _)| *from == Endpoint::Unknown),
        "{stats:?}"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

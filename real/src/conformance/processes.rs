//! The two servers of one sequence, as child processes: real etcd on a loopback port with a
//! temporary data folder, and faultline-store over an in-memory database.
//!
//! Each sequence gets fresh ones, so revisions start from 1 on every side and a seed replays on
//! its own. Both are killed and the folder removed when dropped, whatever happened. The etcdctl
//! test starts its servers with this file too.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};

/// How long a server may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(15);

pub struct Server {
    child: Child,
    pub addr: String,
    /// The folder holding the server's data and log; removed on drop.
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last lines of a server's log, to explain why it did not start.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// True when the server at `addr` answers a read.
async fn answers(addr: &str) -> bool {
    let Ok(mut kv) = KvClient::connect(format!("http://{addr}")).await else {
        return false;
    };
    let probe = RangeRequest {
        key: b"/".to_vec(),
        ..Default::default()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), kv.range(probe)).await,
        Ok(Ok(_))
    )
}

/// Waits until a key-value request on `addr` is answered.
async fn wait_ready(addr: &str, child: &mut Child, log: &Path, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start ({status}):\n{}", log_tail(log));
        }
        if answers(addr).await {
            return Ok(());
        }
        if started.elapsed() > START_DEADLINE {
            bail!(
                "{what} did not answer on {addr} within {} s:\n{}",
                START_DEADLINE.as_secs(),
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How often etcd is started again when another process took one of its ports meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Starts etcd on free loopback ports with a fresh data folder under `root`. A port is free
/// when picked but may be taken before etcd binds it (other servers start alongside), so a
/// start that fails on a taken port is tried again on new ones.
pub async fn start_etcd(binary: &Path, root: &Path, tag: &str) -> anyhow::Result<Server> {
    let mut attempt = 1;
    loop {
        match start_etcd_once(binary, root, tag).await {
            Err(e)
                if attempt < PORT_ATTEMPTS && format!("{e}").contains("address already in use") =>
            {
                attempt += 1;
            }
            started => return started,
        }
    }
}

async fn start_etcd_once(binary: &Path, root: &Path, tag: &str) -> anyhow::Result<Server> {
    let dir = root.join(format!("etcd-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (client, peer) = (free_port()?, free_port()?);
    let log_path = dir.join("etcd.log");
    let log = std::fs::File::create(&log_path)?;
    let peer_url = format!("http://127.0.0.1:{peer}");
    let client_url = format!("http://127.0.0.1:{client}");
    let child = Command::new(binary)
        .arg("--name=conformance")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=conformance={peer_url}"))
        .arg("--initial-cluster-state=new")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let mut server = Server {
        child,
        addr: format!("127.0.0.1:{client}"),
        dir,
    };
    wait_ready(&server.addr.clone(), &mut server.child, &log_path, "etcd").await?;
    Ok(server)
}

/// Starts faultline-store on a free loopback port over an in-memory database, with kine's
/// compactor off: the sequence's Compact requests are the only compactions.
pub async fn start_store(binary: &Path, root: &Path, tag: &str) -> anyhow::Result<Server> {
    start_store_with(binary, root, tag, |_| {
        ["--db", ":memory:", "--compact-interval-s", "0"]
            .map(String::from)
            .to_vec()
    })
    .await
}

/// Starts faultline-store on a free loopback port with the flags `flags` gives for its folder
/// (which holds its log, and is removed on drop).
pub async fn start_store_with(
    binary: &Path,
    root: &Path,
    tag: &str,
    flags: impl FnOnce(&Path) -> Vec<String>,
) -> anyhow::Result<Server> {
    let dir = root.join(format!("store-{tag}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_path = dir.join("faultline-store.log");
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(flags(&dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // The server prints "listening on ADDR" once it is bound.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        bail!(
            "faultline-store did not say where it listens (got {line:?}):\n{}",
            log_tail(&log_path)
        );
    };
    let mut server = Server {
        child,
        addr: addr.to_string(),
        dir,
    };
    wait_ready(
        &server.addr.clone(),
        &mut server.child,
        &log_path,
        "faultline-store",
    )
    .await?;
    Ok(server)
}

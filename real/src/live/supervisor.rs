//! The cluster supervisor: every node of a target as a child process on 127.0.0.1, each with
//! its own folder under the run folder, its peers reached through the network's proxies.
//!
//! It starts the nodes, waits until each answers a health probe on its client port (a
//! serializable Range, which a member answers without a quorum), and injects process faults:
//! SIGKILL and a restart on the same data folder, SIGSTOP and SIGCONT. Each node's stdout and
//! stderr are appended to `stdout.log` and `stderr.log` in its folder, with a line per start.
//! Dropping the cluster (a panic included) kills every node it started and waits for it, so no
//! process outlives the run.

use super::network::{Endpoint, Network};
use super::target::{Fill, Target};
use anyhow::{bail, Context};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};

/// One node's fixed placement: the same on every start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    /// Its folder: logs, and `data/` (the data folder).
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// Where its peers reach it (0 when the target has no peers).
    pub peer_proxy_port: u16,
    pub argv: Vec<String>,
}

#[derive(Default)]
struct Slot {
    child: Option<Child>,
    /// Starts so far (1 after the first).
    starts: u32,
    paused: bool,
}

pub struct Cluster {
    pub target: Target,
    pub run_dir: PathBuf,
    pub nodes: Vec<NodeSpec>,
    pub network: Arc<Network>,
    slots: Mutex<Vec<Slot>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
        for slot in slots.iter_mut() {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The last lines of a file, to say why a node did not start.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True when a serializable Range on `addr` is answered within a second.
pub async fn probe(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut kv = KvClient::connect(format!("http://{addr}")).await.ok()?;
        kv.range(RangeRequest {
            key: b"/".to_vec(),
            limit: 1,
            serializable: true,
            ..Default::default()
        })
        .await
        .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(_))
    )
}

impl Cluster {
    /// Starts every node of `target` under `run_dir` (made if missing) and waits until each
    /// answers. `bin_dir` fills `{bin_dir}`.
    pub async fn start(target: &Target, run_dir: &Path, bin_dir: &Path) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let network = Arc::new(Network::new());
        let has_peers = target.has_peers();
        let mut placed = Vec::new();
        for (i, name) in target.node_names().into_iter().enumerate() {
            let dir = run_dir.join(&name);
            let data_dir = dir.join("data");
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let peer_proxy_port = if has_peers {
                network.peer_proxy(i, loopback(peer_port)).await?
            } else {
                0
            };
            placed.push((name, dir, data_dir, client_port, peer_port, peer_proxy_port));
        }
        let fills: Vec<Fill> = placed
            .iter()
            .map(
                |(name, _, data_dir, client_port, peer_port, peer_proxy_port)| Fill {
                    name,
                    client_port: *client_port,
                    peer_port: *peer_port,
                    peer_proxy_port: *peer_proxy_port,
                    data_dir,
                    initial_cluster: "",
                    bin_dir,
                },
            )
            .collect();
        let initial_cluster = target.initial_cluster(&fills);
        let nodes = fills
            .iter()
            .zip(&placed)
            .map(|(fill, (name, dir, data_dir, ..))| NodeSpec {
                name: name.clone(),
                dir: dir.clone(),
                data_dir: data_dir.clone(),
                client_port: fill.client_port,
                peer_port: fill.peer_port,
                peer_proxy_port: fill.peer_proxy_port,
                argv: target.argv(&Fill {
                    initial_cluster: &initial_cluster,
                    ..fill.clone()
                }),
            })
            .collect::<Vec<_>>();
        let cluster = Cluster {
            target: target.clone(),
            run_dir: run_dir.to_path_buf(),
            slots: Mutex::new((0..nodes.len()).map(|_| Slot::default()).collect()),
            nodes,
            network,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        let waits = (0..cluster.nodes.len()).map(|i| cluster.wait_ready(i));
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(cluster)
    }

    /// Starts node `i` (again), on its ports and data folder.
    fn spawn(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let mut slots = self.slots.lock().unwrap();
        let slot = &mut slots[i];
        if slot.child.is_some() {
            bail!("{} is already running", node.name);
        }
        slot.starts += 1;
        let open = |file: &str| -> anyhow::Result<std::fs::File> {
            let path = node.dir.join(file);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(f, "==== faultline: start {} of {}", slot.starts, node.name)?;
            Ok(f)
        };
        let (stdout, stderr) = (open("stdout.log")?, open("stderr.log")?);
        let child = Command::new(&node.argv[0])
            .args(&node.argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot run {} for {}", node.argv[0], node.name))?;
        self.network.set_pid(i, child.id());
        slot.child = Some(child);
        slot.paused = false;
        Ok(())
    }

    /// Waits until node `i` answers its health probe, or fails with its stderr's last lines when
    /// it exits or the target's start timeout passes.
    pub async fn wait_ready(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let deadline = Duration::from_secs_f64(self.target.start_timeout_s);
        let started = Instant::now();
        loop {
            {
                let mut slots = self.slots.lock().unwrap();
                let Some(child) = slots[i].child.as_mut() else {
                    bail!("{} is not running", node.name);
                };
                if let Some(status) = child.try_wait()? {
                    slots[i].child = None;
                    bail!(
                        "{} exited at start ({status}); {}:\n{}",
                        node.name,
                        node.dir.join("stderr.log").display(),
                        tail(&node.dir.join("stderr.log"), 12)
                    );
                }
            }
            if probe(self.direct_addr(i)).await {
                return Ok(());
            }
            if started.elapsed() > deadline {
                bail!(
                    "{} did not answer on {} within {} s; {}:\n{}",
                    node.name,
                    self.direct_addr(i),
                    self.target.start_timeout_s,
                    node.dir.join("stderr.log").display(),
                    tail(&node.dir.join("stderr.log"), 12)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s own client address: no proxy, never cut (health probes, checks).
    pub fn direct_addr(&self, i: usize) -> SocketAddr {
        loopback(self.nodes[i].client_port)
    }

    /// The address client `client` reaches node `i` by: through its own proxy, which partitions
    /// between clients and members cut.
    pub async fn client_addr(&self, client: usize, i: usize) -> std::io::Result<SocketAddr> {
        self.network
            .client_proxy(client, i, self.direct_addr(i))
            .await
    }

    /// The index of the node named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.slots.lock().unwrap()[i].child.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.slots.lock().unwrap()[i].paused
    }

    /// How many times node `i` has been started.
    pub fn starts(&self, i: usize) -> u32 {
        self.slots.lock().unwrap()[i].starts
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.slots.lock().unwrap()[i].child.as_ref().map(Child::id)
    }

    /// SIGKILLs node `i` and reaps it; false when it was not running.
    pub fn kill(&self, i: usize) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let Some(mut child) = slots[i].child.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        slots[i].paused = false;
        true
    }

    /// Starts node `i` again on the same data folder and waits until it answers.
    pub async fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Starts node `i` again without waiting for it (the fault runner's restarts).
    pub fn respawn(&self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    fn signal(&self, i: usize, signal: libc::c_int, paused: bool) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let slot = &mut slots[i];
        let Some(child) = slot.child.as_ref() else {
            return false;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on a child we have not reaped yet: the pid is still ours.
        let sent = unsafe { libc::kill(pid, signal) } == 0;
        if sent {
            slot.paused = paused;
        }
        sent
    }

    /// SIGSTOPs node `i`; false when it was not running.
    pub fn pause(&self, i: usize) -> bool {
        self.signal(i, libc::SIGSTOP, true)
    }

    /// SIGCONTs node `i`; false when it was not running.
    pub fn resume(&self, i: usize) -> bool {
        self.signal(i, libc::SIGCONT, false)
    }

    /// The endpoint of node `i` in partitions.
    pub fn member(&self, i: usize) -> Endpoint {
        Endpoint::Member(i)
    }
}

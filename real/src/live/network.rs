//! Partitions that look real: every byte between members, and between clients and members,
//! goes through a TCP proxy on 127.0.0.1 that faultline controls.
//!
//! A cut stops forwarding in one direction of one link (from one endpoint to another) without
//! closing anything: the chunk a proxy has just read is held, it reads no more, the kernel's
//! buffers fill and the sender's writes block, as they do when a real network drops packets.
//! Connections opened during a cut are accepted and then carry nothing: they hang, nothing is
//! refused. Healing forwards what was held, in order.
//!
//! **Why one proxy per member, and how it knows the sender.** etcd derives each member's ID from
//! its advertised peer URLs (and the cluster ID from the member IDs), and after the first start
//! peers dial the URLs stored in the replicated membership, never the flags: every member must be
//! told the same URL for a peer. So member B has one proxy listener (its advertised peer URL),
//! dialled by A and by C alike. The proxy tells them apart by who owns the dialling socket: the
//! kernel's socket table (`/proc/net/tcp`) gives the inode of the socket whose local address is
//! the accepted connection's peer, and the member whose process holds that inode among its file
//! descriptors (`/proc/<pid>/fd`) is the dialler. Each connection between A and B then carries
//! A→B bytes one way and B→A bytes the other, whichever side dialled, so a one-way cut of A→B
//! holds exactly the bytes A's process sends to B's. A connection whose dialler is not a member
//! (an operator's etcdctl on a peer port) is an `Unknown` endpoint, never cut.
//!
//! Clients get a proxy per (client, member) pair, made on demand: its dialler is known.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// Node `i` of the target (0-based).
    Member(usize),
    /// Client `i` (0-based).
    Client(usize),
    /// A dialler the proxy could not attribute; never cut.
    Unknown,
}

/// The directed links cut now, each with how many partitions cut it (they may overlap).
type Cuts = BTreeMap<(Endpoint, Endpoint), u32>;

/// What the proxies have forwarded, for tests and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub connections: u64,
    pub bytes: u64,
}

pub struct Network {
    cuts: watch::Sender<Cuts>,
    /// The running process of each member, by pid, to attribute peer connections.
    pids: Arc<Mutex<BTreeMap<u32, usize>>>,
    stats: Arc<Mutex<BTreeMap<(Endpoint, Endpoint), LinkStats>>>,
    client_proxies: Mutex<BTreeMap<(usize, usize), SocketAddr>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Network {
    pub fn new() -> Network {
        Network {
            cuts: watch::Sender::new(Cuts::new()),
            pids: Arc::default(),
            stats: Arc::default(),
            client_proxies: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// Records that member `member` now runs as process `pid` (after each start).
    pub fn set_pid(&self, member: usize, pid: u32) {
        let mut pids = self.pids.lock().unwrap();
        pids.retain(|_, m| *m != member);
        pids.insert(pid, member);
    }

    /// A proxy in front of member `member`'s peer listener at `backend`; returns the port its
    /// peers must be told. Must be called inside a tokio runtime.
    pub async fn peer_proxy(&self, member: usize, backend: SocketAddr) -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let to = Endpoint::Member(member);
        let pids = self.pids.clone();
        let task = self.serve(listener, backend, to, move |peer, local| {
            let pids = pids.clone();
            async move {
                tokio::task::spawn_blocking(move || dialler(peer, local, &pids))
                    .await
                    .unwrap_or(Endpoint::Unknown)
            }
        });
        self.tasks.lock().unwrap().push(task);
        Ok(port)
    }

    /// The address client `client` uses to reach member `member`, whose client port is
    /// `backend`: a proxy made the first time it is asked for.
    pub async fn client_proxy(
        &self,
        client: usize,
        member: usize,
        backend: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.client_proxies.lock().unwrap().get(&(client, member)) {
            return Ok(*addr);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let from = Endpoint::Client(client);
        let task = self.serve(
            listener,
            backend,
            Endpoint::Member(member),
            move |_, _| async move { from },
        );
        self.tasks.lock().unwrap().push(task);
        self.client_proxies
            .lock()
            .unwrap()
            .insert((client, member), addr);
        Ok(addr)
    }

    fn serve<F, Fut>(
        &self,
        listener: TcpListener,
        backend: SocketAddr,
        to: Endpoint,
        identify: F,
    ) -> JoinHandle<()>
    where
        F: Fn(SocketAddr, SocketAddr) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Endpoint> + Send,
    {
        let cuts = self.cuts.subscribe();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let local = listener.local_addr().expect("bound");
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let from = identify(peer, local).await;
                stats
                    .lock()
                    .unwrap()
                    .entry((from, to))
                    .or_default()
                    .connections += 1;
                let (cuts, stats) = (cuts.clone(), stats.clone());
                connections.spawn(async move {
                    // The backend down (killed) refuses, as the process's own port would.
                    let Ok(outbound) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pump(in_read, out_write, (from, to), cuts.clone(), stats.clone()),
                        pump(out_read, in_write, (to, from), cuts, stats),
                    );
                });
            }
        })
    }

    /// Cuts every link in `links` (directed: from, to) until a matching `heal`.
    pub fn cut(&self, links: &[(Endpoint, Endpoint)]) {
        self.cuts.send_modify(|cuts| {
            for link in links {
                *cuts.entry(*link).or_default() += 1;
            }
        });
    }

    /// Undoes one `cut` of every link in `links`.
    pub fn heal(&self, links: &[(Endpoint, Endpoint)]) {
        self.cuts.send_modify(|cuts| {
            for link in links {
                if let Some(n) = cuts.get_mut(link) {
                    *n -= 1;
                    if *n == 0 {
                        cuts.remove(link);
                    }
                }
            }
        });
    }

    /// True while bytes from `from` to `to` are held.
    pub fn is_cut(&self, from: Endpoint, to: Endpoint) -> bool {
        self.cuts.borrow().contains_key(&(from, to))
    }

    /// What has gone through each directed link so far.
    pub fn stats(&self) -> BTreeMap<(Endpoint, Endpoint), LinkStats> {
        self.stats.lock().unwrap().clone()
    }
}

/// Forwards `src` to `dst`, holding each chunk while `link` is cut; ends (shutting `dst` down)
/// when `src` ends, once the link lets the end through.
async fn pump(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    link: (Endpoint, Endpoint),
    mut cuts: watch::Receiver<Cuts>,
    stats: Arc<Mutex<BTreeMap<(Endpoint, Endpoint), LinkStats>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = src.read(&mut buf).await.unwrap_or(0);
        if cuts.wait_for(|c| !c.contains_key(&link)).await.is_err() {
            return;
        }
        if n == 0 {
            let _ = dst.shutdown().await;
            return;
        }
        if dst.write_all(&buf[..n]).await.is_err() {
            return;
        }
        stats.lock().unwrap().entry(link).or_default().bytes += n as u64;
    }
}

/// The member whose process dialled the connection accepted at `local` from `peer`.
fn dialler(peer: SocketAddr, local: SocketAddr, pids: &Mutex<BTreeMap<u32, usize>>) -> Endpoint {
    let Some(inode) = socket_inode(peer, local) else {
        return Endpoint::Unknown;
    };
    let target = format!("socket:[{inode}]");
    let pids = pids.lock().unwrap().clone();
    for (pid, member) in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Endpoint::Member(member);
            }
        }
    }
    Endpoint::Unknown
}

/// The inode of the socket whose local address is `local` and remote address `remote`, from
/// the kernel's IPv4 TCP table.
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let matches = parse_proc_addr(f.get(1)?)? == local && parse_proc_addr(f.get(2)?)? == remote;
        matches.then(|| f.get(9)?.parse().ok()).flatten()
    })
}

/// `0100007F:1F90` (address as the kernel's native-endian u32, port big) to 127.0.0.1:8080.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(ip.to_ne_bytes()),
        port,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_addr("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
        }
    }

    /// This process's own outgoing socket is found by its local and remote addresses.
    #[tokio::test]
    async fn a_diallers_socket_is_found_among_its_descriptors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = TcpStream::connect(local).await.unwrap();
        let (_conn, peer) = listener.accept().await.unwrap();
        let pids = Mutex::new(BTreeMap::from([(std::process::id(), 7)]));
        let found = tokio::task::spawn_blocking(move || dialler(peer, local, &pids))
            .await
            .unwrap();
        assert_eq!(found, Endpoint::Member(7));
    }
}

//! Network partitions: cutting and healing directed links between nodes.
//!
//! Partitions may overlap, so each directed link carries a count of the partitions cutting it and
//! is restored only when the last one heals. Healing everything at the end of the fault period
//! resets every count.

use madsim::net::NetSim;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Links {
    cuts: Mutex<BTreeMap<(NodeId, NodeId), u32>>,
}

fn directed(from: &[NodeId], to: &[NodeId], one_way: bool) -> Vec<(NodeId, NodeId)> {
    let mut out = Vec::new();
    for &a in from {
        for &b in to {
            out.push((a, b));
            if !one_way {
                out.push((b, a));
            }
        }
    }
    out
}

impl Links {
    pub fn cut(&self, from: &[NodeId], to: &[NodeId], one_way: bool) {
        let net = NetSim::current();
        let mut cuts = self.cuts.lock().expect("links lock poisoned");
        for (a, b) in directed(from, to, one_way) {
            let n = cuts.entry((a, b)).or_insert(0);
            if *n == 0 {
                net.clog_link(a, b);
            }
            *n += 1;
        }
    }

    pub fn heal(&self, from: &[NodeId], to: &[NodeId], one_way: bool) {
        let net = NetSim::current();
        let mut cuts = self.cuts.lock().expect("links lock poisoned");
        for (a, b) in directed(from, to, one_way) {
            if let Some(n) = cuts.get_mut(&(a, b)) {
                *n -= 1;
                if *n == 0 {
                    cuts.remove(&(a, b));
                    net.unclog_link(a, b);
                }
            }
        }
    }

    /// Restores every link; returns how many were still cut.
    pub fn heal_all(&self) -> usize {
        let net = NetSim::current();
        let mut cuts = self.cuts.lock().expect("links lock poisoned");
        let n = cuts.len();
        for (a, b) in std::mem::take(&mut *cuts).into_keys() {
            net.unclog_link(a, b);
        }
        n
    }
}

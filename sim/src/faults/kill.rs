//! Node kills and restarts. A node is always killed before it is restarted, and a node already
//! down is not killed again; the registry knows which nodes are down.

use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct Lifecycle {
    down: Mutex<BTreeSet<NodeId>>,
}

impl Lifecycle {
    /// Kills `node` unless it is already down; returns whether it was killed.
    pub fn kill(&self, node: NodeId) -> bool {
        let mut down = self.down.lock().expect("lifecycle lock poisoned");
        if !down.insert(node) {
            return false;
        }
        Handle::current().kill(node);
        true
    }

    /// Restarts `node` if it is down; returns whether it was restarted.
    pub fn restart(&self, node: NodeId) -> bool {
        let mut down = self.down.lock().expect("lifecycle lock poisoned");
        if !down.remove(&node) {
            return false;
        }
        Handle::current().restart(node);
        true
    }

    /// Every node currently down.
    pub fn down(&self) -> Vec<NodeId> {
        self.down
            .lock()
            .expect("lifecycle lock poisoned")
            .iter()
            .copied()
            .collect()
    }
}

//! Node kills and restarts. A node is always killed before it is restarted, and a node already
//! down is not killed again; the registry knows which nodes are down. Membership changes hold
//! nodes down outside the fault schedule: a server created for a later join stays down until it
//! joins, and one that left stays down for good; no kill or restart touches a held node.
//!
//! Pauses (`pause.rs`) are kept here too, since they depend on the same state: only a node that
//! is up is paused, and a kill (or a membership hold) of a paused node first resumes it, in the
//! same instant, so madsim drops its parked tasks unrun and its next start is not paused.

use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct Lifecycle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    down: BTreeSet<NodeId>,
    /// Down because of membership (not joined yet, or left): never killed or restarted here.
    held: BTreeSet<NodeId>,
    /// Up but paused: its tasks are parked until [`Lifecycle::resume`] (or a kill).
    paused: BTreeSet<NodeId>,
}

impl Lifecycle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lifecycle lock poisoned")
    }

    /// Kills `node` unless it is already down; returns whether it was killed.
    pub fn kill(&self, node: NodeId) -> bool {
        let mut s = self.lock();
        if !s.down.insert(node) {
            return false;
        }
        if s.paused.remove(&node) {
            Handle::current().resume(node);
        }
        Handle::current().kill(node);
        true
    }

    /// Pauses `node` if it is up and not paused already; returns whether it was paused.
    pub fn pause(&self, node: NodeId) -> bool {
        let mut s = self.lock();
        if s.down.contains(&node) || !s.paused.insert(node) {
            return false;
        }
        Handle::current().pause(node);
        true
    }

    /// Resumes `node` if it is paused (a kill since its pause already ended it); returns
    /// whether it was resumed.
    pub fn resume(&self, node: NodeId) -> bool {
        let mut s = self.lock();
        if !s.paused.remove(&node) {
            return false;
        }
        Handle::current().resume(node);
        true
    }

    /// Every node currently paused.
    pub fn paused(&self) -> Vec<NodeId> {
        self.lock().paused.iter().copied().collect()
    }

    /// Restarts `node` if it is down (and not held); returns whether it was restarted.
    pub fn restart(&self, node: NodeId) -> bool {
        let mut s = self.lock();
        if s.held.contains(&node) || !s.down.remove(&node) {
            return false;
        }
        Handle::current().restart(node);
        true
    }

    /// Every node currently down that a restart may bring back (held nodes are not).
    pub fn down(&self) -> Vec<NodeId> {
        let s = self.lock();
        s.down.difference(&s.held).copied().collect()
    }

    /// Takes `node` down (killing it if it is up) and keeps it down until [`Lifecycle::admit`]:
    /// a server that has not joined yet, or one that left.
    pub fn hold(&self, node: NodeId) {
        let mut s = self.lock();
        if s.down.insert(node) {
            if s.paused.remove(&node) {
                Handle::current().resume(node);
            }
            Handle::current().kill(node);
        }
        s.held.insert(node);
    }

    /// Starts a held node: a server joining the cluster.
    pub fn admit(&self, node: NodeId) {
        let mut s = self.lock();
        assert!(s.held.remove(&node), "only a held node is admitted");
        assert!(s.down.remove(&node), "a held node is down");
        Handle::current().restart(node);
    }
}

//! Compaction failures at the store's driver boundary, drawn per batch from the seed.
//!
//! The store asks once per batch; this answers from its own seeded generator and stops answering
//! when the fault period ends. The order of questions is the simulation's deterministic order,
//! so the answers are too.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use store::faults::{CompactFault, FaultPoints};
use tokio::time::Instant;

pub struct CompactionFaults {
    rng: Mutex<StdRng>,
    probability: f64,
    kinds: Vec<CompactFault>,
    stop_at: Instant,
    /// etcd members: chance of dying at a crash point, and where to ask the world for the kill.
    member_crash_probability: f64,
    crashes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl CompactionFaults {
    pub fn new(seed: u64, probability: f64, kinds: &[String], stop_at: Instant) -> Self {
        let kinds = kinds
            .iter()
            .map(|k| match k.as_str() {
                "database-locked" => CompactFault::DatabaseLocked,
                "timeout" => CompactFault::Timeout,
                "reply-lost" => CompactFault::ReplyLost,
                other => unreachable!("scenario validation admits no compaction fault `{other}`"),
            })
            .collect();
        CompactionFaults {
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ super::COMPACTION_SALT)),
            probability,
            kinds,
            stop_at,
            member_crash_probability: 0.0,
            crashes: None,
        }
    }

    /// Lets members crash at their crash points with `probability`; each crash's member name is
    /// sent on `crashes` for the world to kill and restart its node.
    pub fn with_member_crashes(
        mut self,
        probability: f64,
        crashes: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Self {
        self.member_crash_probability = probability;
        self.crashes = Some(crashes);
        self
    }
}

impl FaultPoints for CompactionFaults {
    fn compact_batch(&self, _server: &str) -> Option<CompactFault> {
        if self.kinds.is_empty() || self.probability <= 0.0 || Instant::now() >= self.stop_at {
            return None;
        }
        let mut rng = self.rng.lock().expect("fault generator lock poisoned");
        if !rng.gen_bool(self.probability.min(1.0)) {
            return None;
        }
        Some(self.kinds[rng.gen_range(0..self.kinds.len())])
    }

    fn member_crash(&self, member: &str, _point: &str) -> bool {
        let Some(crashes) = &self.crashes else {
            return false;
        };
        if self.member_crash_probability <= 0.0 || Instant::now() >= self.stop_at {
            return false;
        }
        let mut rng = self.rng.lock().expect("fault generator lock poisoned");
        if !rng.gen_bool(self.member_crash_probability.min(1.0)) {
            return false;
        }
        crashes.send(member.to_string()).is_ok()
    }
}

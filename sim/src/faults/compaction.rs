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
        }
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
}

//! Compaction failures and member crash points at the store's fault points: drawn per batch from
//! the seed, or answered from a schedule's list; either way each one that fires is recorded.
//!
//! Drawn, the answers come from one seeded generator in the order the store asks (the
//! simulation's deterministic order) and stop when the fault period ends. A schedule names each
//! fault by where it happens: (server, start, tick, batch) for a batch, (member, start, point,
//! occurrence) for a crash, where `start` counts a node's starts from 1. Every node start gets its
//! own `NodeFaults`, which knows that number.

use crate::scenario::schedule::{CompactionFailure, MemberCrash, Schedule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use store::faults::{CompactFault, FaultPoints};
use tokio::time::Instant;

/// Where the answers come from.
enum Source {
    Drawn {
        rng: Box<Mutex<StdRng>>,
        probability: f64,
        kinds: Vec<CompactFault>,
        member_crash_probability: f64,
    },
    Scheduled {
        batches: BTreeMap<(String, u32, u64, u64), CompactFault>,
        crashes: Vec<MemberCrash>,
    },
}

pub struct CompactionFaults {
    source: Source,
    stop_at: Instant,
    /// Where a crashed member's name (and the crash's index in `crashed`) goes for the world to
    /// kill and restart its node.
    crashes: Option<tokio::sync::mpsc::UnboundedSender<(String, usize)>>,
    failed: Mutex<Vec<CompactionFailure>>,
    crashed: Mutex<Vec<MemberCrash>>,
}

pub fn fault_of(kind: &str) -> CompactFault {
    match kind {
        "database-locked" => CompactFault::DatabaseLocked,
        "timeout" => CompactFault::Timeout,
        "reply-lost" => CompactFault::ReplyLost,
        other => unreachable!("validation admits no compaction fault `{other}`"),
    }
}

fn kind_of(fault: CompactFault) -> &'static str {
    match fault {
        CompactFault::DatabaseLocked => "database-locked",
        CompactFault::Timeout => "timeout",
        CompactFault::ReplyLost => "reply-lost",
    }
}

impl CompactionFaults {
    fn with(source: Source, stop_at: Instant) -> Self {
        CompactionFaults {
            source,
            stop_at,
            crashes: None,
            failed: Mutex::default(),
            crashed: Mutex::default(),
        }
    }

    /// Draws from the seed: each batch fails with `probability`, each crash point is a crash
    /// with `member_crash_probability`.
    pub fn drawn(
        seed: u64,
        probability: f64,
        kinds: &[String],
        member_crash_probability: f64,
        stop_at: Instant,
    ) -> Self {
        let source = Source::Drawn {
            rng: Box::new(Mutex::new(StdRng::seed_from_u64(
                seed ^ super::COMPACTION_SALT,
            ))),
            probability,
            kinds: kinds.iter().map(|k| fault_of(k)).collect(),
            member_crash_probability,
        };
        Self::with(source, stop_at)
    }

    /// Answers from `schedule` only.
    pub fn scheduled(schedule: &Schedule, stop_at: Instant) -> Self {
        let batches = schedule
            .compaction_failures
            .iter()
            .map(|c| {
                let key = (c.server.clone(), c.start, c.tick, c.batch);
                (key, fault_of(&c.kind))
            })
            .collect();
        let crashes = schedule.member_crashes.clone();
        Self::with(Source::Scheduled { batches, crashes }, stop_at)
    }

    /// Sends each crash (member name, crash index) on `crashes` for the world to carry out.
    pub fn with_crashes(
        mut self,
        crashes: tokio::sync::mpsc::UnboundedSender<(String, usize)>,
    ) -> Self {
        self.crashes = Some(crashes);
        self
    }

    /// The fault points of one start (`start`, from 1) of a node.
    pub fn for_start(self: &Arc<Self>, start: u32) -> Arc<NodeFaults> {
        Arc::new(NodeFaults {
            shared: self.clone(),
            start,
            reached: Mutex::default(),
        })
    }

    /// Every compaction failure and member crash that fired, in order.
    pub fn fired(&self) -> (Vec<CompactionFailure>, Vec<MemberCrash>) {
        let failed = self.failed.lock().expect("fault log lock poisoned").clone();
        let crashed = self
            .crashed
            .lock()
            .expect("fault log lock poisoned")
            .clone();
        (failed, crashed)
    }

    fn compact_batch(
        &self,
        server: &str,
        start: u32,
        tick: u64,
        batch: u64,
    ) -> Option<CompactFault> {
        if Instant::now() >= self.stop_at {
            return None;
        }
        let fault = match &self.source {
            Source::Drawn {
                rng,
                probability,
                kinds,
                ..
            } => {
                if kinds.is_empty() || *probability <= 0.0 {
                    return None;
                }
                let mut rng = rng.lock().expect("fault generator lock poisoned");
                if !rng.gen_bool(probability.min(1.0)) {
                    return None;
                }
                kinds[rng.gen_range(0..kinds.len())]
            }
            Source::Scheduled { batches, .. } => {
                *batches.get(&(server.to_string(), start, tick, batch))?
            }
        };
        self.failed
            .lock()
            .expect("fault log lock poisoned")
            .push(CompactionFailure {
                server: server.into(),
                start,
                tick,
                batch,
                kind: kind_of(fault).into(),
            });
        Some(fault)
    }

    fn member_crash(&self, member: &str, start: u32, point: &str, occurrence: u32) -> bool {
        let Some(crashes) = &self.crashes else {
            return false;
        };
        if Instant::now() >= self.stop_at {
            return false;
        }
        let crash = MemberCrash {
            member: member.into(),
            start,
            point: point.into(),
            occurrence,
            torn_write: None,
        };
        let fires = match &self.source {
            Source::Drawn {
                rng,
                member_crash_probability,
                ..
            } => {
                *member_crash_probability > 0.0
                    && rng
                        .lock()
                        .expect("fault generator lock poisoned")
                        .gen_bool(member_crash_probability.min(1.0))
            }
            Source::Scheduled { crashes, .. } => crashes.iter().any(|c| {
                c.member == crash.member
                    && c.start == start
                    && c.point == crash.point
                    && c.occurrence == occurrence
            }),
        };
        if !fires {
            return false;
        }
        let mut crashed = self.crashed.lock().expect("fault log lock poisoned");
        crashed.push(crash);
        crashes
            .send((member.to_string(), crashed.len() - 1))
            .is_ok()
    }
}

/// One node start's fault points: the shared source, and which start this is.
pub struct NodeFaults {
    shared: Arc<CompactionFaults>,
    start: u32,
    /// How often each crash point was reached in this start.
    reached: Mutex<BTreeMap<String, u32>>,
}

impl FaultPoints for NodeFaults {
    fn compact_batch(&self, server: &str, tick: u64, batch: u64) -> Option<CompactFault> {
        self.shared.compact_batch(server, self.start, tick, batch)
    }

    fn member_crash(&self, member: &str, point: &str) -> bool {
        let occurrence = {
            let mut reached = self.reached.lock().expect("crash point lock poisoned");
            let n = reached.entry(point.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        self.shared
            .member_crash(member, self.start, point, occurrence)
    }
}

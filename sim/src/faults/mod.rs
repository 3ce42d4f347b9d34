//! Fault families the simulator injects, each drawn from the seed.
//!
//! `schedule` draws when partitions and kills happen, `network` and `kill` carry them out,
//! `membership` draws which servers join and leave (the world carries those out), and
//! `compaction` answers the store's fault points. Every draw comes from a generator seeded from
//! the run's seed, separate from the workload's, so a change in load does not move the faults.

pub mod compaction;
#[cfg(madsim)]
pub mod kill;
pub mod membership;
#[cfg(madsim)]
pub mod network;
pub mod pause;
pub mod replay;
pub mod schedule;

use crate::scenario::Faults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Every fault kind, with a one-line meaning, for `faultline list` and reports.
pub const KINDS: &[(&str, &str)] = &[
    (
        "partition",
        "symmetric network partition between two groups of nodes, healed after a drawn duration",
    ),
    (
        "partition-one-way",
        "messages from one group to another are dropped, the reverse direction still flows",
    ),
    (
        "kill",
        "a node is killed (in-flight transactions roll back) and restarted after a drawn downtime",
    ),
    (
        "server-join",
        "a new server with a fresh disk joins through a current member: member add, catch up",
    ),
    (
        "server-leave",
        "a server is stopped for good, its etcd member removed and its disk discarded",
    ),
    (
        "server-replace",
        "a server leaves and a new one (same role, new name, fresh disk) joins in its place",
    ),
    (
        "server-join-pair",
        "two new servers start at once, the second told to join through the first (refused until it caught up)",
    ),
    (
        "pause",
        "a node's tasks and timers stop (SIGSTOP, GC pause) while the cluster goes on; it resumes as it was",
    ),
    (
        "compact-database-locked",
        "a compaction batch fails with `database is locked` after its DELETE ran",
    ),
    (
        "compact-timeout",
        "a compaction batch outlives its transaction timeout and is cancelled",
    ),
    (
        "compact-reply-lost",
        "a compaction batch commits but its reply never reaches the server",
    ),
];

/// Salts that separate the generators drawn from one seed.
pub const SCHEDULE_SALT: u64 = 0x5ced_0001;
pub const SWARM_SALT: u64 = 0x5ced_0002;
pub const COMPACTION_SALT: u64 = 0x5ced_0003;
pub const MEMBERSHIP_SALT: u64 = 0x5ced_0004;
pub const PAUSE_SWARM_SALT: u64 = 0x5ced_0005;

/// The fault rates in force for one seed: the scenario's, or a swarm draw from them.
#[derive(Clone, Debug, Serialize)]
pub struct FaultMix {
    pub partitions_per_min: f64,
    pub kills_per_min: f64,
    pub compact_failure_probability: f64,
    pub pauses_per_min: f64,
}

/// Swarm testing: each family is switched on or off and its rate scaled by the seed, so a
/// campaign covers mixes no single setting would (at least one family stays on).
pub fn draw_mix(faults: &Faults, seed: u64) -> FaultMix {
    let base = FaultMix {
        partitions_per_min: faults.partitions_per_min,
        kills_per_min: faults.kills_per_min,
        compact_failure_probability: faults.compact_failure_probability,
        pauses_per_min: faults.pauses_per_min,
    };
    if !faults.swarm {
        return base;
    }
    // Pauses are switched and scaled by a generator of their own, so the other families' draws
    // are what they were before pauses existed.
    let mut pause_rng = StdRng::seed_from_u64(seed ^ PAUSE_SWARM_SALT);
    let pauses_per_min = if pause_rng.gen_bool(0.5) {
        base.pauses_per_min * pause_rng.gen_range(0.25..2.0)
    } else {
        0.0
    };
    let mut rng = StdRng::seed_from_u64(seed ^ SWARM_SALT);
    let mut on = [rng.gen_bool(0.5), rng.gen_bool(0.5), rng.gen_bool(0.5)];
    if on.iter().all(|o| !o) {
        on[rng.gen_range(0..3)] = true;
    }
    let mut scale = || rng.gen_range(0.25..2.0);
    FaultMix {
        partitions_per_min: if on[0] {
            base.partitions_per_min * scale()
        } else {
            0.0
        },
        kills_per_min: if on[1] {
            base.kills_per_min * scale()
        } else {
            0.0
        },
        compact_failure_probability: if on[2] {
            (base.compact_failure_probability * scale()).min(1.0)
        } else {
            0.0
        },
        pauses_per_min,
    }
}

//! The seeded generator of operation sequences.
//!
//! It draws Kubernetes-shaped traffic over a few resources, namespaces and names: guarded
//! creates, updates and deletes (mostly with the key's true mod revision, sometimes a stale one),
//! plain puts (prev_kv, ignore_value, ignore_lease) and deletes, range deletes where no key
//! lives, ranges (single key, prefix, from-key; limits, past, compacted and future revisions,
//! keys-only, count-only, every sort order and target, the four revision filters), requests
//! with an empty key, the same ranges inside a Txn, compactions (due, already compacted, future), watches
//! from now, a past revision, exactly the compact revision, a compacted one or the future
//! (sometimes filtering out puts or deletes), and progress requests. It reads the reference
//! model only to pick plausible revisions, so a seed gives the same sequence every time.

use crate::lease::ModelLeases;
use crate::ops::Op;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::etcd::mvcc::Mvcc;
use store::proto::etcdserverpb::range_request::SortTarget;
use store::proto::etcdserverpb::watch_create_request::FilterType;
use store::proto::etcdserverpb::{RangeRequest, WatchCreateRequest};

const RESOURCES: [&str; 2] = ["pods", "configmaps"];
const NAMESPACES: [&str; 2] = ["ns-0", "ns-1"];
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// A prefix no operation writes under: range deletes go there.
const UNUSED_PREFIX: &str = "/registry/secrets/";
/// Watches per sequence: enough to meet compaction, few enough to drain quickly.
pub const MAX_WATCHES: usize = 4;

pub struct Generator {
    rng: StdRng,
    written: u64,
    watches: usize,
}

/// The end of the range `[prefix, end)` that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("prefixes are not empty") += 1;
    end
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            written: 0,
            watches: 0,
        }
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.gen_range(0..from.len())]
    }

    fn key(&mut self) -> String {
        let (r, ns, n) = (
            self.pick(&RESOURCES),
            self.pick(&NAMESPACES),
            self.pick(&NAMES),
        );
        format!("/registry/{r}/{ns}/{n}")
    }

    fn value(&mut self) -> String {
        self.written += 1;
        format!("v{}", self.written)
    }

    /// A key, a prefix or a from-key range over the keys this generator writes.
    fn key_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.rng.gen_range(0..100) {
            0..=29 => (self.key().into_bytes(), vec![]),
            30..=49 => {
                let prefix = format!("/registry/{}/", self.pick(&RESOURCES));
                (prefix.clone().into_bytes(), prefix_end(&prefix))
            }
            50..=69 => {
                let prefix = format!(
                    "/registry/{}/{}/",
                    self.pick(&RESOURCES),
                    self.pick(&NAMESPACES)
                );
                (prefix.clone().into_bytes(), prefix_end(&prefix))
            }
            70..=84 => (b"/registry/".to_vec(), prefix_end("/registry/")),
            _ => (self.key().into_bytes(), vec![0]),
        }
    }

    /// A put, sometimes keeping the key's value or lease (on a key that may not exist), and
    /// now and then with a value that `ignore_value` forbids.
    fn put(&mut self) -> Op {
        let ignore_value = self.rng.gen_bool(0.12);
        let value = if !ignore_value || self.rng.gen_bool(0.2) {
            self.value()
        } else {
            String::new()
        };
        Op::Put {
            key: if self.rng.gen_bool(0.02) {
                String::new()
            } else {
                self.key()
            },
            value,
            prev_kv: self.rng.gen_bool(0.5),
            ignore_value,
            ignore_lease: self.rng.gen_bool(0.12),
        }
    }

    /// A range with every option etcd honours: limit, revision, keys-only, count-only, a sort
    /// (each order and target) and the four revision filters, alone and together.
    fn range(&mut self, model: &Mvcc) -> RangeRequest {
        let (mut key, range_end) = self.key_range();
        if self.rng.gen_bool(0.01) {
            key.clear();
        }
        let mut r = RangeRequest {
            key,
            range_end,
            limit: if self.rng.gen_bool(0.5) {
                self.rng.gen_range(1..=3)
            } else {
                0
            },
            revision: self.revision(model, 0),
            keys_only: self.rng.gen_bool(0.2),
            count_only: self.rng.gen_bool(0.15),
            ..Default::default()
        };
        if self.rng.gen_bool(0.4) {
            r.sort_order = self.rng.gen_range(0..=2);
            r.sort_target = self.rng.gen_range(0..=4);
            // etcd 3.4 sorts with Go's sort.Sort, which keeps equal elements in key order only
            // up to 12 of them: beyond that the order of equal versions is etcd's own.
            if r.sort_target == SortTarget::Version as i32 && self.sorted_beyond_12(model, &r) {
                r.sort_target = SortTarget::Mod as i32;
            }
        }
        if self.rng.gen_bool(0.3) {
            let current = model.current_revision();
            let mut bound = || {
                if self.rng.gen_bool(0.5) {
                    self.rng.gen_range(1..=current + 1)
                } else {
                    0
                }
            };
            r.min_mod_revision = bound();
            r.max_mod_revision = bound();
            r.min_create_revision = bound();
            r.max_create_revision = bound();
        }
        r
    }

    /// Whether etcd would sort more than 12 key-values for `r` (the whole range at its revision).
    fn sorted_beyond_12(&self, model: &Mvcc, r: &RangeRequest) -> bool {
        let whole = RangeRequest {
            count_only: true,
            limit: 0,
            ..r.clone()
        };
        model.range(&whole).is_ok_and(|a| a.count > 12)
    }

    /// The key's mod revision in the model, or (sometimes) a stale guess.
    fn expected_mod(&mut self, model: &Mvcc, key: &str) -> i64 {
        if self.rng.gen_bool(0.2) {
            return self.rng.gen_range(0..=model.current_revision());
        }
        model
            .range(&RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .ok()
            .and_then(|r| r.kvs.first().map(|kv| kv.mod_revision))
            .unwrap_or(0)
    }

    /// A revision to read or watch at: now, the past, exactly the compact revision, a compacted
    /// one, or the future.
    fn revision(&mut self, model: &Mvcc, none: i64) -> i64 {
        let (current, compact) = (model.current_revision(), model.compact_revision());
        loop {
            match self.rng.gen_range(0..100) {
                0..=39 => return none,
                40..=69 => return self.rng.gen_range(compact.max(1)..=current),
                70..=79 if compact > 0 => return compact,
                80..=89 if compact > 1 => return self.rng.gen_range(1..compact),
                90..=99 => return current + self.rng.gen_range(1..=2),
                _ => {}
            }
        }
    }

    /// The next operation, given the reference model's state and how many watches are open.
    pub fn next(&mut self, model: &Mvcc, leases: &ModelLeases) -> Op {
        let (current, compact) = (model.current_revision(), model.compact_revision());
        if self.rng.gen_range(0..100) < crate::lease::DRAWN_PERCENT {
            let (key, value) = (self.key(), self.value());
            return Op::Lease(crate::lease::draw(&mut self.rng, leases, model, key, value));
        }
        loop {
            let roll = self.rng.gen_range(0..100);
            return match roll {
                0..=15 => Op::Create {
                    key: self.key(),
                    value: self.value(),
                },
                16..=31 => {
                    let key = self.key();
                    Op::Update {
                        expected_mod: self.expected_mod(model, &key),
                        value: self.value(),
                        key,
                    }
                }
                32..=39 => {
                    let key = self.key();
                    Op::Delete {
                        expected_mod: self.expected_mod(model, &key),
                        key,
                    }
                }
                40..=43 => self.put(),
                44..=45 => Op::DeleteKey {
                    key: self.key(),
                    prev_kv: self.rng.gen_bool(0.5),
                },
                // A range delete where no key lives: etcd deletes nothing, faultline-store
                // refuses (kine cannot delete a range at one revision) and both stay equal.
                46 => Op::DeleteRange {
                    key: UNUSED_PREFIX.into(),
                    range_end: prefix_end(UNUSED_PREFIX),
                    prev_kv: self.rng.gen_bool(0.5),
                },
                47..=68 => Op::Range(self.range(model)),
                69..=73 => Op::TxnRange(self.range(model)),
                74..=80 => {
                    let revision = match self.rng.gen_range(0..10) {
                        0 if compact > 0 => self.rng.gen_range(compact.max(2) - 1..=compact),
                        1 => current + 1,
                        _ if current > compact => self.rng.gen_range(compact + 1..=current),
                        _ => continue,
                    };
                    Op::Compact { revision }
                }
                81..=91 if self.watches < MAX_WATCHES => {
                    let (key, range_end) = self.key_range();
                    let watch = self.watches;
                    self.watches += 1;
                    Op::Watch {
                        watch,
                        create: WatchCreateRequest {
                            key,
                            range_end,
                            start_revision: self.revision(model, 0),
                            prev_kv: self.rng.gen_bool(0.6),
                            filters: [FilterType::Noput, FilterType::Nodelete]
                                .into_iter()
                                .filter(|_| self.rng.gen_bool(0.15))
                                .map(|f| f as i32)
                                .collect(),
                            ..Default::default()
                        },
                    }
                }
                92..=99 if self.watches > 0 => Op::Progress {
                    watch: self.rng.gen_range(0..self.watches),
                },
                _ => continue,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::design::CompactionVariant;

    #[test]
    fn a_seed_gives_the_same_sequence() {
        let model = Mvcc::new(CompactionVariant::Fixed);
        let leases = ModelLeases::default();
        let run = |seed| {
            let mut g = Generator::new(seed);
            (0..50).map(|_| g.next(&model, &leases)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn prefix_ends_bound_the_prefix() {
        assert_eq!(prefix_end("/registry/"), b"/registry0".to_vec());
    }
}

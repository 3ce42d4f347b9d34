//! A valid history of any length, for the benchmark and for tests: clients whose requests overlap
//! in time against an in-memory store that is linearizable by construction (each request takes
//! effect at one instant inside its interval). It has what real runs have: guarded writes, gets,
//! paginated lists continued at the first page's revision, serializable and old-revision reads,
//! count-only and keys-only lists, writes of unknown outcome and revisions used by other writers.
//! Seeded: the same length and seed give the same history.

use crate::history::{
    History, HistoryParams, Kv, OpResult, Operation, Outcome, Request, TxnAnswer,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

const RESOURCES: [&str; 3] = ["configmaps", "leases", "pods"];
const SERVERS: [&str; 3] = ["server-1", "server-2", "server-3"];
const CLIENTS: usize = 8;
const NAMESPACES: usize = 3;
const NAMES: usize = 40;
const LIMIT: i64 = 50;
const MS: u64 = 1_000_000;
const TIMEOUT_NS: u64 = 3_000 * MS;

/// The store: every version of every key, by revision (`None`: deleted).
struct Store {
    keys: Vec<String>,
    versions: Vec<Vec<(i64, Option<Kv>)>>,
    revision: i64,
}

impl Store {
    fn at(&self, key: usize, rev: i64) -> Option<&Kv> {
        let v = &self.versions[key];
        let i = v.partition_point(|(r, _)| *r <= rev);
        i.checked_sub(1).and_then(|i| v[i].1.as_ref())
    }

    fn now(&self, key: usize) -> Option<&Kv> {
        self.at(key, self.revision)
    }

    /// Applies a put (`Some(value)`) or delete at a new revision; other writers (controllers,
    /// kubelets) sometimes take revisions in between.
    fn write(&mut self, key: usize, value: Option<String>, rng: &mut StdRng) -> i64 {
        if rng.gen_ratio(1, 5) {
            self.revision += rng.gen_range(1..=3);
        }
        self.revision += 1;
        let rev = self.revision;
        let kv = value.map(|value| {
            let (create_revision, version) = match self.now(key) {
                Some(p) => (p.create_revision, p.version + 1),
                None => (rev, 1),
            };
            Kv {
                key: self.keys[key].clone(),
                create_revision,
                mod_revision: rev,
                version,
                value,
            }
        });
        self.versions[key].push((rev, kv));
        rev
    }

    /// Live keys of `keys[span]` at `rev`: (the first `limit` of them, how many in all).
    fn list(
        &self,
        span: std::ops::Range<usize>,
        rev: i64,
        limit: i64,
        keys_only: bool,
    ) -> (Vec<Kv>, i64) {
        let mut kvs = vec![];
        let mut count = 0;
        for key in span {
            if let Some(kv) = self.at(key, rev) {
                count += 1;
                if limit == 0 || (kvs.len() as i64) < limit {
                    let mut kv = kv.clone();
                    if keys_only {
                        kv.value.clear();
                    }
                    kvs.push(kv);
                }
            }
        }
        (kvs, count)
    }
}

struct Client {
    name: String,
    server: usize,
    /// What this client last saw of each key: its mod revision, 0 when absent.
    known: BTreeMap<usize, i64>,
    seq: u64,
    /// A paginated list in progress: (resource, next start key, first page's revision).
    listing: Option<(usize, String, i64)>,
    /// The highest header revision this client saw from each server.
    seen_on: [i64; SERVERS.len()],
    /// When the request in flight was invoked and completes, and whether its answer is lost.
    invoke_ns: u64,
    complete_ns: u64,
    lost: bool,
}

/// A history of `ops` client operations (plus the final audit) on the etcd topology.
pub fn history(ops: usize, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keys: Vec<String> = RESOURCES
        .iter()
        .flat_map(|r| {
            (0..NAMESPACES).flat_map(move |ns| {
                (0..NAMES).map(move |n| format!("/registry/{r}/ns-{ns}/obj-{n:04}"))
            })
        })
        .collect();
    keys.sort();
    let mut store = Store {
        versions: vec![vec![]; keys.len()],
        keys,
        revision: 1,
    };
    let spans: Vec<std::ops::Range<usize>> = RESOURCES
        .iter()
        .map(|r| {
            let p = format!("/registry/{r}/");
            let lo = store.keys.partition_point(|k| *k < p);
            lo..lo
                + store.keys[lo..]
                    .iter()
                    .take_while(|k| k.starts_with(&p))
                    .count()
        })
        .collect();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|c| Client {
            name: format!("client-{}", c + 1),
            server: c % SERVERS.len(),
            known: BTreeMap::new(),
            seq: 0,
            listing: None,
            seen_on: [0; SERVERS.len()],
            invoke_ns: 0,
            complete_ns: 0,
            lost: false,
        })
        .collect();
    // Each request takes effect at one instant inside its interval: its linearization point.
    let mut queue: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for (c, client) in clients.iter_mut().enumerate() {
        let start = rng.gen_range(0..100 * MS);
        queue.push(Reverse((schedule(client, start, &mut rng), c)));
    }
    let mut out: Vec<Operation> = Vec::with_capacity(ops + 1);
    while out.len() < ops {
        let Reverse((_, c)) = queue.pop().expect("every client has a request queued");
        let (request, outcome) = step(&mut clients[c], &mut store, &spans, &mut rng);
        let client = &mut clients[c];
        out.push(Operation {
            id: 0,
            client: client.name.clone(),
            server: SERVERS[client.server].into(),
            invoke_ns: client.invoke_ns,
            complete_ns: client.complete_ns,
            request,
            outcome,
        });
        let next = client.complete_ns + exp_gap(&mut rng);
        queue.push(Reverse((schedule(client, next, &mut rng), c)));
    }
    let end = out.iter().map(|o| o.complete_ns).max().unwrap_or(0) + 10_000 * MS;
    let (kvs, count) = store.list(0..store.keys.len(), store.revision, 0, false);
    out.push(Operation {
        id: 0,
        client: "audit".into(),
        server: SERVERS[0].into(),
        invoke_ns: end,
        complete_ns: end + 5 * MS,
        request: Request::list_all("/registry/", "/registry0"),
        outcome: Outcome::Ok {
            header_revision: store.revision,
            result: OpResult::Read {
                kvs,
                more: false,
                count,
            },
        },
    });
    out.sort_by_key(|o| o.invoke_ns);
    for (i, o) in out.iter_mut().enumerate() {
        o.id = i as u64;
    }
    let final_read = out.iter().find(|o| o.client == "audit").map(|o| o.id);
    History {
        params: HistoryParams {
            servers: SERVERS.iter().map(|s| s.to_string()).collect(),
            end_ns: end + 5 * MS,
            final_read,
            topology: "etcd".into(),
            workload_prefixes: RESOURCES
                .iter()
                .map(|r| format!("/registry/{r}/"))
                .collect(),
            ..Default::default()
        },
        ops: out,
        ..Default::default()
    }
}

/// Poisson-spaced requests, about twenty a second per client.
fn exp_gap(rng: &mut StdRng) -> u64 {
    let u: f64 = rng.gen();
    (-(1.0 - u).ln() * 50.0 * MS as f64) as u64
}

/// Sets the client's next request interval from `invoke_ns`; returns its linearization point.
fn schedule(c: &mut Client, invoke_ns: u64, rng: &mut StdRng) -> u64 {
    let took = rng.gen_range(MS..20 * MS);
    c.lost = rng.gen_ratio(1, 100);
    c.invoke_ns = invoke_ns;
    c.complete_ns = invoke_ns + if c.lost { TIMEOUT_NS } else { took };
    invoke_ns + rng.gen_range(0..took)
}

fn step(
    c: &mut Client,
    s: &mut Store,
    spans: &[std::ops::Range<usize>],
    rng: &mut StdRng,
) -> (Request, Outcome) {
    if let Some((r, start, rev)) = c.listing.take() {
        return page(c, s, spans, r, start, rev);
    }
    // About the scenarios' mix: mostly writes, some gets, a few paginated lists.
    let x = rng.gen_range(0..1000);
    match x {
        0..=749 => write(c, s, rng),
        750..=939 => get(c, s, rng),
        940..=989 => {
            let r = rng.gen_range(0..RESOURCES.len());
            let start = format!("/registry/{}/", RESOURCES[r]);
            page(c, s, spans, r, start, 0)
        }
        _ => {
            // A count-only or keys-only list of one resource.
            let r = rng.gen_range(0..RESOURCES.len());
            let count_only = x % 2 == 0;
            let (kvs, count) = s.list(spans[r].clone(), s.revision, 0, !count_only);
            let request = Request::List {
                start: format!("/registry/{}/", RESOURCES[r]),
                end: format!("/registry/{}0", RESOURCES[r]),
                limit: 0,
                revision: 0,
                serializable: false,
                count_only,
                keys_only: !count_only,
            };
            let kvs = if count_only { vec![] } else { kvs };
            (
                request,
                answered(
                    c,
                    s.revision,
                    OpResult::Read {
                        kvs,
                        more: false,
                        count,
                    },
                ),
            )
        }
    }
}

fn answered(c: &mut Client, header_revision: i64, result: OpResult) -> Outcome {
    c.seen_on[c.server] = c.seen_on[c.server].max(header_revision);
    Outcome::Ok {
        header_revision,
        result,
    }
}

fn page(
    c: &mut Client,
    s: &Store,
    spans: &[std::ops::Range<usize>],
    r: usize,
    start: String,
    rev: i64,
) -> (Request, Outcome) {
    let span = &spans[r];
    let from = span.start + s.keys[span.clone()].partition_point(|k| *k < start);
    let at = if rev > 0 { rev } else { s.revision };
    let (kvs, count) = s.list(from..span.end, at, LIMIT, false);
    let more = count > LIMIT;
    for kv in &kvs {
        c.known.insert(
            s.keys.binary_search(&kv.key).expect("a key"),
            kv.mod_revision,
        );
    }
    if more {
        let last = &kvs.last().expect("a full page").key;
        c.listing = Some((r, format!("{last}\0"), at));
    }
    let request = Request::List {
        start,
        end: format!("/registry/{}0", RESOURCES[r]),
        limit: LIMIT,
        revision: rev,
        serializable: false,
        count_only: false,
        keys_only: false,
    };
    (
        request,
        answered(c, s.revision, OpResult::Read { kvs, more, count }),
    )
}

fn get(c: &mut Client, s: &Store, rng: &mut StdRng) -> (Request, Outcome) {
    let key = rng.gen_range(0..s.keys.len());
    let kind = rng.gen_range(0..10);
    let (revision, serializable, at, header) = match kind {
        // Served by a member that lags, but never behind what this client saw from it.
        0 => {
            let floor = c.seen_on[c.server].max(1);
            let at = rng.gen_range(floor.min(s.revision)..=s.revision);
            (0, true, at, at)
        }
        1 => {
            let at = (s.revision - rng.gen_range(0..100)).max(1);
            (at, false, at, s.revision)
        }
        _ => (0, false, s.revision, s.revision),
    };
    let kvs: Vec<Kv> = s.at(key, at).cloned().into_iter().collect();
    if revision == 0 && !serializable {
        c.known
            .insert(key, kvs.first().map_or(0, |kv| kv.mod_revision));
    }
    let count = kvs.len() as i64;
    let request = Request::Get {
        key: s.keys[key].clone(),
        revision,
        serializable,
    };
    (
        request,
        answered(
            c,
            header,
            OpResult::Read {
                kvs,
                more: false,
                count,
            },
        ),
    )
}

fn write(c: &mut Client, s: &mut Store, rng: &mut StdRng) -> (Request, Outcome) {
    c.seq += 1;
    let value = format!("{}-{}-{}", c.name, c.seq, "x".repeat(48));
    let live: Vec<usize> = c
        .known
        .iter()
        .filter(|(_, m)| **m > 0)
        .map(|(k, _)| *k)
        .collect();
    let kind = rng.gen_range(0..9);
    let request = if kind < 3 || live.is_empty() {
        let mut key = rng.gen_range(0..s.keys.len());
        for _ in 0..3 {
            if c.known.get(&key).copied().unwrap_or(0) == 0 {
                break;
            }
            key = rng.gen_range(0..s.keys.len());
        }
        Request::Create {
            key: s.keys[key].clone(),
            value,
        }
    } else {
        let key = live[rng.gen_range(0..live.len())];
        let expected_mod_revision = c.known[&key];
        if kind < 8 {
            Request::Update {
                key: s.keys[key].clone(),
                value,
                expected_mod_revision,
            }
        } else {
            Request::Delete {
                key: s.keys[key].clone(),
                expected_mod_revision,
            }
        }
    };
    let key = s
        .keys
        .binary_search(&request.write_key().expect("a write").to_string())
        .expect("a key");
    let current = s.now(key).cloned();
    let holds = match &request {
        Request::Create { .. } => current.is_none(),
        Request::Update {
            expected_mod_revision,
            ..
        }
        | Request::Delete {
            expected_mod_revision,
            ..
        } => current
            .as_ref()
            .is_some_and(|kv| kv.mod_revision == *expected_mod_revision),
        _ => unreachable!("a write"),
    };
    if c.lost {
        // The answer is lost; the write took effect or not, and the client learns nothing.
        if holds && rng.gen_bool(0.5) {
            let value = match &request {
                Request::Create { value, .. } | Request::Update { value, .. } => {
                    Some(value.clone())
                }
                _ => None,
            };
            s.write(key, value, rng);
        }
        c.server = (c.server + 1) % SERVERS.len();
        let outcome = Outcome::Unknown {
            error: "Unavailable: deadline exceeded".into(),
        };
        return (request, outcome);
    }
    if !holds {
        c.known
            .insert(key, current.as_ref().map_or(0, |kv| kv.mod_revision));
        let header = s.revision;
        return (
            request,
            answered(
                c,
                header,
                OpResult::Write {
                    succeeded: false,
                    responses: vec![TxnAnswer::Range {
                        kvs: current.is_some() as usize,
                        more: false,
                        count: current.is_some() as i64,
                    }],
                    current,
                },
            ),
        );
    }
    let value = match &request {
        Request::Create { value, .. } | Request::Update { value, .. } => Some(value.clone()),
        _ => None,
    };
    let deleting = value.is_none();
    let rev = s.write(key, value, rng);
    c.known.insert(key, if deleting { 0 } else { rev });
    (
        request,
        answered(
            c,
            rev,
            OpResult::Write {
                succeeded: true,
                current: None,
                responses: vec![if deleting {
                    TxnAnswer::Delete {
                        deleted: 1,
                        prev_kvs: 0,
                    }
                } else {
                    TxnAnswer::Put { prev_kv: false }
                }],
            },
        ),
    )
}

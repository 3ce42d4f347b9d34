//! The workload's key space as its writes built it: one timeline per key, ordered by revision.
//!
//! Acknowledged writes enter with their revision; a write of unknown outcome enters when some
//! answer shows its value, which names its revision. A version that only a delete of unknown
//! outcome could have removed is a suspect: answers that find its key absent date that delete.
//! Built from client operations alone, never from what the store says it committed.

use super::index::{prefetch, prefetch_all, prefix_end, ByRev, FixedHash, RevSet};
use super::lines::Lines;
use super::spec::{answer, covered, Spec};
use super::state::Window;
use crate::history::{Freshness, History, Kv, OpResult, Operation, Outcome, Request};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// What an answer showed of a key at a revision, kept to date a suspect delete: (key, revision,
/// when the answer's request began under the mysql-like allowance, the mod revision shown or
/// `None` for absent, the operation).
pub(super) type Note = (usize, i64, Option<u64>, Option<i64>, usize);

/// What a guarded write does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Create,
    Update { expected: i64 },
    Delete { expected: i64 },
}

impl Change {
    pub fn of(r: &Request) -> Option<Change> {
        match r {
            Request::Create { .. } => Some(Change::Create),
            Request::Update {
                expected_mod_revision,
                ..
            } => Some(Change::Update {
                expected: *expected_mod_revision,
            }),
            Request::Delete {
                expected_mod_revision,
                ..
            } => Some(Change::Delete {
                expected: *expected_mod_revision,
            }),
            _ => None,
        }
    }

    pub fn is_put(self) -> bool {
        !matches!(self, Change::Delete { .. })
    }

    /// The mod revision the write's compare asks for (0: the key must be absent).
    pub fn expected(self) -> i64 {
        match self {
            Change::Create => 0,
            Change::Update { expected } | Change::Delete { expected } => expected,
        }
    }
}

/// The value a write puts, if it puts one.
pub(super) fn value_of(r: &Request) -> Option<&str> {
    match r {
        Request::Create { value, .. } | Request::Update { value, .. } => Some(value),
        _ => None,
    }
}

/// One write that took effect, at its revision.
#[derive(Clone, Debug)]
pub(super) struct Event {
    pub rev: i64,
    /// Index into `History::ops`.
    pub op: usize,
    pub change: Change,
    /// Where in `Model::values` the value a put wrote lies (empty for a delete).
    value: (u32, u32),
    /// Puts: the key's create revision and etcd version after this write (0: not known).
    pub create_rev: i64,
    pub version: i64,
    /// The earliest time this write, or a later one on its key, is known to have committed: its
    /// acknowledgement or the completion of an answer that showed it. Only the mysql-like
    /// allowance reads it.
    pub known_by_ns: u64,
    /// For a write of unknown outcome: the first operation whose answer showed it.
    pub seen_by: Option<usize>,
    /// A put that a delete of unknown outcome may have removed (see `Suspect`).
    pub suspect: bool,
}

impl Event {
    /// What fills the room of a line before its writes enter; never read as a write.
    const BLANK: Event = Event {
        rev: 0,
        op: usize::MAX,
        change: Change::Create,
        value: (0, 0),
        create_rev: 0,
        version: 0,
        known_by_ns: 0,
        seen_by: None,
        suspect: false,
    };
}

/// A version that a delete of unknown outcome may have removed, and when answers say it went.
#[derive(Default, Debug)]
pub(super) struct Suspect {
    /// The deletes of unknown outcome that expected this version.
    pub deletes: Vec<usize>,
    /// The highest revision an answer showed this version at, and that operation.
    pub seen_live: Option<(i64, usize)>,
    /// The lowest revision an answer showed the key absent at while this version was its newest
    /// write, and that operation: one of `deletes` happened at or before it.
    pub seen_absent: Option<(i64, usize)>,
    /// When the first answer that found the key absent completed: one of `deletes` had
    /// committed by then. Only the mysql-like allowance reads it.
    pub absent_known_ns: Option<u64>,
}

/// Client operations by what the checker does with them (indices into `History::ops`).
#[derive(Default)]
pub(super) struct Ops {
    /// Reads that were answered.
    pub reads: Vec<usize>,
    /// Writes on workload keys that were answered, whether their compare held or not.
    pub answered_writes: Vec<usize>,
    /// Writes on workload keys whose outcome is unknown.
    pub unknown_writes: Vec<usize>,
}

pub(super) struct Model<'h> {
    pub ops: &'h [Operation],
    /// The workload's prefixes with their range ends (`[prefix, end)`).
    prefixes: Vec<(&'h str, String)>,
    /// Every workload key any write named, sorted: a key's index is its place here. Copied
    /// out of the history so that the keys every read is walked against sit together in cache.
    pub keys: Vec<Box<str>>,
    /// By op index: the key index of a write on a workload key (`u32::MAX` otherwise).
    key_of: Vec<u32>,
    /// Per key, the writes that took effect, by revision.
    pub lines: Lines,
    /// The values puts wrote, one after another in the order the writes entered: every read
    /// that shows a version compares its value with this copy. The history holds each in an
    /// allocation of its own among the answers; here the values current at a revision sit
    /// within a short stretch, which stays in cache while reads show them.
    values: String,
    /// Which write took effect at each revision.
    by_rev: ByRev,
    /// Per key, where the last search in `revs` ended: reads come roughly in revision order,
    /// so the next search usually ends there or within a step of it. Only speeds searches up.
    pub(super) cursor: Vec<Cell<Window>>,
    /// By (key, index of the put in its line).
    pub suspects: BTreeMap<(usize, usize), Suspect>,
    /// Keys with a create of unknown outcome that no answer showed: it may be live unseen.
    pub(super) maybe_created: Vec<bool>,
    /// kine over a mysql-like database: ids are fixed when an insert starts and become visible
    /// when it commits, so a read may miss a lower revision that was still committing.
    pub late_commits: bool,
    /// etcd keeps a per-key version counter and evaluates a Txn in one step; kine reports
    /// version 1 for every live key and compares, writes and reads in separate database calls.
    pub etcd: bool,
    /// Writes of unknown outcome decided either way.
    pub resolved: u64,
    /// Writes of unknown outcome that took effect and are in `lines`.
    resolved_ops: BTreeSet<usize>,
    /// By op index: what the apiserver facade promised of a request sent through it (`None`:
    /// the etcd API's; empty when no request went through the facade).
    pub facade: Vec<Option<Freshness>>,
    /// Versions no known write produced that an answer showed with an empty value, which names
    /// no write (many put one): (key, revision, the answer's op), resolved by reference.
    empty_shown: Vec<(usize, i64, usize)>,
}

impl<'h> Model<'h> {
    pub fn build(h: &'h History) -> (Model<'h>, Ops) {
        let mut m = Model {
            ops: &h.ops,
            prefixes: h
                .params
                .workload_prefixes
                .iter()
                .map(|p| (p.as_str(), prefix_end(p)))
                .collect(),
            keys: vec![],
            key_of: vec![],
            lines: Lines::with_room(&[], Event::BLANK),
            values: String::new(),
            by_rev: ByRev::Sparse(BTreeMap::new()),
            cursor: vec![],
            suspects: BTreeMap::new(),
            maybe_created: vec![],
            late_commits: h.params.topology != "etcd" && h.params.database_dialect == "mysql-like",
            etcd: h.params.topology == "etcd",
            resolved: 0,
            resolved_ops: BTreeSet::new(),
            facade: vec![],
            empty_shown: vec![],
        };
        // Sized for the whole history up front: the heap a long run leaves behind is fragmented,
        // and growing these a step at a time made the allocator search it again and again.
        let mut ops = Ops {
            reads: Vec::with_capacity(h.ops.len()),
            answered_writes: Vec::with_capacity(h.ops.len()),
            unknown_writes: vec![],
        };
        // Bytes of the values the writes on workload keys put, and how many writes each key has.
        let mut value_bytes = 0;
        // Each write's key, looked up once per write. A hash map with a fixed hasher: it is
        // only looked up, never iterated, so nothing depends on its order.
        // Sized for the hundreds of keys a workload names, so that neither grows as they come.
        let mut first_seen: HashMap<&str, u32, BuildHasherDefault<FixedHash>> =
            HashMap::with_capacity_and_hasher(1024, BuildHasherDefault::default());
        let mut named: Vec<&str> = Vec::with_capacity(1024);
        const NOT_OWNED: u32 = u32::MAX;
        m.key_of = vec![NOT_OWNED; h.ops.len()];
        for (i, o) in h.ops.iter().enumerate() {
            let Some(k) = o.request.write_key() else {
                if let Outcome::Ok {
                    result: OpResult::Read { .. },
                    ..
                } = o.outcome
                {
                    ops.reads.push(i);
                }
                continue;
            };
            let n = *first_seen.entry(k).or_insert_with(|| {
                if !m.owned(k) {
                    return NOT_OWNED;
                }
                named.push(k);
                named.len() as u32 - 1
            });
            m.key_of[i] = n;
            if n != NOT_OWNED {
                value_bytes += value_of(&o.request).map_or(0, str::len);
            }
            match o.outcome {
                _ if n == NOT_OWNED => {}
                Outcome::Ok { .. } => ops.answered_writes.push(i),
                Outcome::Unknown { .. } => ops.unknown_writes.push(i),
                Outcome::Failed { .. } => {}
            }
        }
        // Key indices follow key order, so a range of keys is a range of indices.
        let mut order: Vec<u32> = (0..named.len() as u32).collect();
        order.sort_unstable_by_key(|&n| named[n as usize]);
        let mut rank = vec![0u32; named.len()];
        for (r, &n) in order.iter().enumerate() {
            rank[n as usize] = r as u32;
        }
        for k in m.key_of.iter_mut().filter(|k| **k != NOT_OWNED) {
            *k = rank[*k as usize];
        }
        m.keys = order.iter().map(|&n| named[n as usize].into()).collect();
        // Each line holds at most its key's answered and unknown writes.
        let mut writes_per_key = vec![0usize; m.keys.len()];
        for &i in ops.answered_writes.iter().chain(&ops.unknown_writes) {
            writes_per_key[m.key_of(i)] += 1;
        }
        m.lines = Lines::with_room(&writes_per_key, Event::BLANK);
        m.values = String::with_capacity(value_bytes);
        m.maybe_created = vec![false; m.keys.len()];
        for &i in &ops.answered_writes {
            let o = &h.ops[i];
            if let Outcome::Ok {
                header_revision,
                result: OpResult::Write {
                    succeeded: true, ..
                },
            } = &o.outcome
            {
                m.push(i, *header_revision, o.complete_ns, None);
            }
        }
        m.sort_lines();
        m.resolve_by_value(h, &ops);
        m.sort_lines();
        m.resolve_by_reference(&ops);
        m.sort_lines();
        m.derive_versions();
        if m.late_commits {
            for key in 0..m.lines.len() {
                let mut earliest = u64::MAX;
                for e in m.lines[key].iter_mut().rev() {
                    earliest = earliest.min(e.known_by_ns);
                    e.known_by_ns = earliest;
                }
            }
        }
        m.find_suspects(h, &ops);
        m.reset_cursors();
        (m, ops)
    }

    fn push(&mut self, op: usize, rev: i64, known_by_ns: u64, seen_by: Option<usize>) {
        let e = self.event(op, rev, known_by_ns, seen_by);
        self.lines.push(self.key_of(op), e);
    }

    /// The write `op` as it took effect at `rev`, its value copied into `values`.
    fn event(&mut self, op: usize, rev: i64, known_by_ns: u64, seen_by: Option<usize>) -> Event {
        let o = &self.ops[op];
        let start = self.values.len();
        self.values.push_str(value_of(&o.request).unwrap_or(""));
        let offset = |n: usize| u32::try_from(n).expect("a history's written values fit in 4 GiB");
        Event {
            rev,
            op,
            change: Change::of(&o.request).expect("a write"),
            value: (offset(start), offset(self.values.len())),
            create_rev: 0,
            version: 0,
            known_by_ns,
            seen_by,
            suspect: false,
        }
    }

    /// Sorts every line by revision and indexes it.
    fn sort_lines(&mut self) {
        self.lines.sort();
        self.by_rev = ByRev::of(&self.lines);
        self.reset_cursors();
    }

    /// Puts every cursor before its key's first write. The windows they hold say whether a
    /// version is suspect, so they are reset again once the suspects are known.
    fn reset_cursors(&mut self) {
        self.cursor = (0..self.lines.len())
            .map(|key| Cell::new(self.window_at(key, 0)))
            .collect();
    }

    /// What the facade promised of op `op`'s answer, if it went through the facade.
    pub fn facade(&self, op: usize) -> Option<Freshness> {
        self.facade.get(op).copied().flatten()
    }

    pub fn owned(&self, key: &str) -> bool {
        self.prefixes.iter().any(|(p, _)| key.starts_with(p))
    }

    pub fn prefixes(&self) -> &[(&'h str, String)] {
        &self.prefixes
    }

    /// The key index of a write on a workload key.
    pub fn key_of(&self, write: usize) -> usize {
        let k = self.key_of[write];
        assert_ne!(k, u32::MAX, "op {write} is not a write on a workload key");
        k as usize
    }

    /// The index of the write at exactly `rev` in `key`'s line.
    pub fn at_rev(&self, key: usize, rev: i64) -> Option<usize> {
        match self.by_rev.get(rev) {
            Some((k, x)) if k == key => Some(x),
            // Another key's write at that revision, or a duplicate revision: search.
            Some(_) => self.lines.revs(key).binary_search(&rev).ok(),
            None => None,
        }
    }

    /// The value a put event wrote.
    pub fn value(&self, e: &Event) -> &str {
        &self.values[e.value.0 as usize..e.value.1 as usize]
    }

    /// Every key-value an answer showed: the kvs of reads and the `current` of refused writes.
    pub fn shown<'a>(&'a self, ops: &'a Ops) -> impl Iterator<Item = (usize, &'h Kv, bool)> + 'a {
        let h = self.ops;
        let reads = ops.reads.iter().enumerate().flat_map(move |(r, &i)| {
            // Each answer's key-values are an array of their own: start loading the ones a
            // few answers on, and the operations that hold them before that.
            if let Some(&ahead) = ops.reads.get(r + 8) {
                prefetch_all(&h[ahead]);
            }
            if let Some(Outcome::Ok {
                result: OpResult::Read { kvs, .. },
                ..
            }) = ops.reads.get(r + 4).map(|&a| &h[a].outcome)
            {
                prefetch(kvs.as_ptr().cast());
            }
            let keys_only = matches!(
                h[i].request,
                Request::List {
                    keys_only: true,
                    ..
                }
            );
            let kvs: &'h [Kv] = match &h[i].outcome {
                Outcome::Ok {
                    result: OpResult::Read { kvs, .. },
                    ..
                } => kvs,
                _ => &[],
            };
            kvs.iter().map(move |kv| (i, kv, keys_only))
        });
        let refused = ops
            .answered_writes
            .iter()
            .filter_map(move |&i| match &h[i].outcome {
                Outcome::Ok {
                    result:
                        OpResult::Write {
                            succeeded: false,
                            current: Some(kv),
                            ..
                        },
                    ..
                } => Some((i, kv, false)),
                _ => None,
            });
        reads.chain(refused)
    }

    /// A write of unknown outcome took effect if an answer shows its value: values are unique
    /// per write, so the value names the write and the answer's mod revision is its revision.
    fn resolve_by_value(&mut self, h: &'h History, ops: &Ops) {
        let unknown: BTreeMap<&str, usize> = ops
            .unknown_writes
            .iter()
            .filter_map(|&i| value_of(&h.ops[i].request).map(|v| (v, i)))
            .filter(|(v, _)| !v.is_empty())
            .collect();
        let acked = RevSet::of(&self.lines);
        // op -> (revision, earliest answer completion, that answer).
        let mut found: BTreeMap<usize, (i64, u64, usize)> = BTreeMap::new();
        let mut seen_at: Vec<(usize, usize, u64)> = vec![];
        let mut empty_shown = vec![];
        for (reader, kv, keys_only) in self.shown(ops) {
            let t = h.ops[reader].complete_ns;
            // Most answers show acknowledged writes: found by revision alone, without touching
            // the key or value. Whether the key matches is the reads' to judge.
            if self.late_commits {
                if let Some((key, x)) = self.by_rev.get(kv.mod_revision) {
                    seen_at.push((key, x, t));
                    continue;
                }
            } else if acked.contains(kv.mod_revision) {
                continue;
            }
            if !keys_only && kv.value.is_empty() {
                if let Some(key) = self.key_ix(&kv.key) {
                    empty_shown.push((key, kv.mod_revision, reader));
                }
                continue;
            }
            let Some(&w) = (!keys_only)
                .then(|| unknown.get(kv.value.as_str()))
                .flatten()
            else {
                continue;
            };
            if h.ops[w].request.write_key() != Some(kv.key.as_str()) {
                continue;
            }
            let f = found.entry(w).or_insert((kv.mod_revision, t, reader));
            if f.0 == kv.mod_revision && t < f.1 {
                (f.1, f.2) = (t, reader);
            }
        }
        self.empty_shown = empty_shown;
        for (key, x, t) in seen_at {
            let e = &mut self.lines[key][x];
            e.known_by_ns = e.known_by_ns.min(t);
        }
        self.resolved += found.len() as u64;
        for (w, (rev, t, reader)) in found {
            self.push(w, rev, t, Some(reader));
            self.resolved_ops.insert(w);
        }
    }

    /// A write of unknown outcome also took effect when a version no known write produced is
    /// referred to: shown without its value (a keys-only read), or expected by a guarded write
    /// that took effect. It is the first such write of the key, invoked before the reference
    /// was made, whose compare fits the state just below that revision.
    fn resolve_by_reference(&mut self, ops: &Ops) {
        let h = self.ops;
        let put_at = |line: &[Event], rev: i64| {
            line.binary_search_by_key(&rev, |e| e.rev)
                .is_ok_and(|x| line[x].change.is_put())
        };
        // (key, revision referred to, the operation that referred to it).
        let mut refs: Vec<(usize, i64, usize)> = std::mem::take(&mut self.empty_shown);
        refs.retain(|&(key, rev, _)| !put_at(&self.lines[key], rev));
        // Shown with an empty value: only a write of an empty value made them.
        let empty: BTreeSet<(usize, i64)> = refs.iter().map(|r| (r.0, r.1)).collect();
        let keys_only_reads = ops.reads.iter().filter(|&&i| {
            matches!(
                h[i].request,
                Request::List {
                    keys_only: true,
                    ..
                }
            )
        });
        for &reader in keys_only_reads {
            let Some(answer) = answer(&h[reader]) else {
                continue;
            };
            for kv in answer.kvs {
                // Most show a version a known write produced: found by revision, one compare.
                let known = self.by_rev.get(kv.mod_revision).is_some_and(|(key, x)| {
                    *self.keys[key] == *kv.key && self.lines[key][x].change.is_put()
                });
                if known {
                    continue;
                }
                if let Some(key) = self.key_ix(&kv.key) {
                    if !put_at(&self.lines[key], kv.mod_revision) {
                        refs.push((key, kv.mod_revision, reader));
                    }
                }
            }
        }
        for (key, line) in self.lines.iter().enumerate() {
            for e in line {
                let expected = e.change.expected();
                if expected > 0 && !put_at(line, expected) {
                    refs.push((key, expected, e.op));
                }
            }
        }
        if refs.is_empty() {
            return;
        }
        refs.sort_unstable();
        refs.dedup_by_key(|r| (r.0, r.1));
        let mut open: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &u in &ops.unknown_writes {
            if value_of(&h[u].request).is_some() && !self.resolved_ops.contains(&u) {
                open.entry(self.key_of(u)).or_default().push(u);
            }
        }
        for (key, rev, by) in refs {
            let Some(candidates) = open.get_mut(&key) else {
                continue;
            };
            let line = &self.lines[key];
            let at = line.partition_point(|e| e.rev < rev);
            let prev = at.checked_sub(1).map(|p| &line[p]);
            let fits = |u: usize| {
                let before_reference = h[u].invoke_ns < h[by].complete_ns;
                let value_fits =
                    !empty.contains(&(key, rev)) || value_of(&h[u].request) == Some("");
                before_reference
                    && value_fits
                    && match Change::of(&h[u].request).expect("a write") {
                        Change::Create => prev.is_none_or(|p| !p.change.is_put()),
                        c => prev.is_some_and(|p| p.change.is_put() && p.rev == c.expected()),
                    }
            };
            let Some(pos) = candidates.iter().position(|&u| fits(u)) else {
                continue;
            };
            let u = candidates.remove(pos);
            // In order, for the next reference to this key.
            let e = self.event(u, rev, h[by].complete_ns, Some(by));
            self.lines.insert(key, at, e);
            self.resolved_ops.insert(u);
            self.resolved += 1;
        }
    }

    pub fn key_ix(&self, key: &str) -> Option<usize> {
        self.keys.binary_search_by(|k| (**k).cmp(key)).ok()
    }

    /// Create revision and version of every put, from its predecessor in the chain.
    fn derive_versions(&mut self) {
        for key in 0..self.lines.len() {
            let line = &mut self.lines[key];
            for i in 0..line.len() {
                let (create_rev, version) = match line[i].change {
                    Change::Create => (line[i].rev, 1),
                    Change::Update { expected } => {
                        let prev = match i.checked_sub(1).map(|p| &line[p]) {
                            Some(p) if p.rev == expected && p.change.is_put() => Some(p),
                            _ => line[..i]
                                .binary_search_by_key(&expected, |p| p.rev)
                                .ok()
                                .map(|p| &line[p])
                                .filter(|p| p.change.is_put()),
                        };
                        prev.map(|p| (p.create_rev, p.version + (p.version > 0) as i64))
                            .unwrap_or((0, 0))
                    }
                    Change::Delete { .. } => (0, 0),
                };
                (line[i].create_rev, line[i].version) = (create_rev, version);
            }
        }
    }

    /// Decides what the chains decide about writes of unknown outcome no answer showed: a
    /// version has one successor, so once a known write replaced the version such a write
    /// expected, it did not happen; a delete with no known successor leaves its version suspect.
    fn find_suspects(&mut self, history: &History, ops: &Ops) {
        let h = self.ops;
        // Keys the final audit listed in full: a put of unknown outcome that no answer showed
        // did not happen there, for it would have been the key's last version and the audit
        // would have shown it (nobody could replace a version nobody saw).
        let audited = history
            .final_read()
            .and_then(|o| Some((Spec::of(&o.request)?, answer(o)?)))
            .filter(|(s, _)| !s.count_only && !s.keys_only)
            .map_or(0..0, |(s, a)| covered(self, &s, &a));
        for &u in &ops.unknown_writes {
            let o = &h[u];
            let key = self.key_of(u);
            if self.resolved_ops.contains(&u) {
                continue;
            }
            let change = Change::of(&o.request).expect("a write");
            if change == Change::Create {
                if audited.contains(&key) {
                    self.resolved += 1;
                } else {
                    self.maybe_created[key] = true;
                }
                continue;
            }
            let Some(x) = self.at_rev(key, change.expected()) else {
                continue;
            };
            let next = self.lines[key].get(x + 1).map(|e| e.change);
            let replaced = next.is_some_and(|n| n.expected() == change.expected());
            match change {
                Change::Delete { .. } if !replaced => {
                    self.suspects.entry((key, x)).or_default().deletes.push(u);
                    self.lines[key][x].suspect = true;
                }
                _ if next.is_some() || audited.contains(&key) => self.resolved += 1,
                _ => {}
            }
        }
    }
}

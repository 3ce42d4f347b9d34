//! linearizable: the key-value contract judged from the clients' side alone.
//!
//! Reads only client operations (requests, answers, invoke and complete times, unknown
//! outcomes) and the run's parameters, never the store's events, so it judges kine and etcd
//! alike and a store whose own log lies. Revisions order the writes, so no search is needed:
//! each workload key's writes form a chain by revision (`model`), every answer must be exactly
//! the state at the revision it was served at (`reads`, `writes`), and revisions must follow
//! real time (here). Near-linear: `faultline bench --checker linearizable` times a million.

mod explain;
mod facade;
pub mod generate;
mod index;
mod later;
mod lines;
mod model;
mod reads;
mod shape;
mod spec;
mod state;
mod writes;

use super::{CheckReport, Checker, Violations};
use crate::history::{History, OpResult, Outcome};
use explain::op_line;
use model::Model;
use spec::Spec;

pub struct Linearizable;

impl Checker for Linearizable {
    fn name(&self) -> &'static str {
        "linearizable"
    }

    fn meaning(&self) -> &'static str {
        "every read is exactly the state at its revision (kvs, count, more), revisions follow real time, guarded writes agree with the state they compared, unknown writes decided from later answers"
    }

    fn check(&self, h: &History) -> CheckReport {
        let mut out = Violations::new();
        // The facade's requests join the etcd API's, in invoke order.
        let merged = facade::merged(h);
        let (h, marks) = match &merged {
            Some((merged, marks)) => (merged, marks.clone()),
            None => (h, vec![]),
        };
        let (mut model, ops) = Model::build(h);
        model.facade = marks;
        let completed = Completed::of(h);
        // Answers are read once: what they say of a version a delete of unknown outcome may
        // have removed dates that delete, and is judged after every answer has been read.
        let mut later = later::Later {
            notes: later::create_notes(&model),
            claims: vec![],
        };
        let known_before = |ns| completed.before(ns).map_or(0, |(r, _)| r);
        let reads = reads::judge_reads(&model, &ops, known_before, &mut later, &mut out);
        facade::judge_freshness(&model, &mut out);
        writes::judge_responses(&model, &ops, &mut out);
        writes::judge_refused(
            &model,
            &ops,
            |ns| completed.before(ns).map_or(0, |(r, _)| r),
            &mut later,
            &mut out,
        );
        let mut notes = std::mem::take(&mut later.notes);
        notes.sort_by_key(|n| n.3.is_some()); // absent first: see `Model::note`
        for note in notes {
            model.note(note);
        }
        model.count_dated_deletes();
        later::judge_later(&model, later, &mut out);
        writes::judge_chains(&model, &mut out);
        writes::unique_revisions(&model, &mut out);
        real_time(&model, &completed, &mut out);
        serializable_never_goes_back(h, &mut out);
        let writes = model.lines.iter().map(|l| l.len() as u64).sum();
        CheckReport::judged(
            self.name(),
            out,
            vec![
                ("reads", reads),
                ("writes", writes),
                ("unknown writes", ops.unknown_writes.len() as u64),
                ("unknown writes resolved", model.resolved),
            ],
            "no client read or write completed on the workload's keys",
        )
    }
}

/// Answered operations by completion time, with the highest revision any had shown so far:
/// "what was known committed before time t".
struct Completed {
    times: Vec<u64>,
    /// (highest header revision among the first i+1 completions, the op that showed it).
    best: Vec<(i64, usize)>,
}

impl Completed {
    fn of(h: &History) -> Self {
        let mut done: Vec<(u64, i64, usize)> = Vec::with_capacity(h.ops.len());
        done.extend(
            h.ops
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.outcome.header_revision().map(|r| (o.complete_ns, r, i))),
        );
        // Nearly sorted already (operations come in invoke order): a stable sort finds the runs.
        done.sort_by_key(|&(t, _, i)| (t, i));
        let mut best = Vec::with_capacity(done.len());
        let mut top = (i64::MIN, usize::MAX);
        for &(_, r, i) in &done {
            if r > top.0 {
                top = (r, i);
            }
            best.push(top);
        }
        Completed {
            times: done.iter().map(|d| d.0).collect(),
            best,
        }
    }

    /// The highest revision shown by an operation that completed strictly before `ns`.
    fn before(&self, ns: u64) -> Option<(i64, usize)> {
        let i = self.times.partition_point(|t| *t < ns);
        i.checked_sub(1).map(|i| self.best[i])
    }

    /// How many operations completed strictly before `ns`, walking on from `from` (the count
    /// for an earlier time) when that is where it lies.
    fn count_before(&self, ns: u64, from: usize) -> usize {
        let t = &self.times;
        if from > t.len() || (from > 0 && t[from - 1] >= ns) {
            return t.partition_point(|x| *x < ns);
        }
        let mut i = from;
        while i < t.len() && t[i] < ns {
            i += 1;
        }
        i
    }
}

/// A linearizable read (and a write whose compare failed) is served at or above every revision
/// shown before it was invoked; a write that takes effect gets a revision above all of them. So
/// no write invoked after a read completed holds a revision at or below that read's header.
fn real_time(m: &Model, completed: &Completed, out: &mut Violations) {
    let h = m.ops;
    // Operations come in invoke order, so "completed before it was invoked" only grows.
    let mut done = 0;
    for (i, o) in h.iter().enumerate() {
        if !facade::judged_in_real_time(m, i) {
            continue;
        }
        let Outcome::Ok {
            header_revision: rev,
            result,
        } = &o.outcome
        else {
            continue;
        };
        done = completed.count_before(o.invoke_ns, done);
        let Some((prior, j)) = done.checked_sub(1).map(|d| completed.best[d]) else {
            continue;
        };
        let (stale, what) = match result {
            OpResult::Write {
                succeeded: true, ..
            } => (*rev <= prior, "took effect at revision"),
            OpResult::Write { .. } => (*rev < prior, "failed its compare at revision"),
            OpResult::Read { .. } if m.facade(i).is_some() => (
                *rev < prior,
                "through the apiserver, a consistent read, was answered at resourceVersion",
            ),
            OpResult::Read { .. } => {
                let serializable = Spec::of(&o.request).is_some_and(|s| s.serializable);
                (
                    *rev < prior && !serializable,
                    "was served with header revision",
                )
            }
        };
        if stale {
            out.fire(o.complete_ns, || {
                format!(
                    "{} {what} {rev}, although {} had completed showing revision {prior} before it was invoked",
                    op_line(o),
                    op_line(&h[j])
                )
            });
        }
    }
    // Writes of unknown outcome that answers showed took effect after they were invoked.
    for line in m.lines.iter() {
        for e in line.iter().filter(|e| e.seen_by.is_some()) {
            let o = &h[e.op];
            if let Some((prior, j)) = completed.before(o.invoke_ns).filter(|(p, _)| e.rev <= *p) {
                let reader = e.seen_by.expect("filtered on seen_by");
                out.fire(h[reader].complete_ns, || {
                    format!(
                        "{} took effect at revision {} (as op#{} showed), although {} had completed showing revision {prior} before it was invoked",
                        op_line(o),
                        e.rev,
                        h[reader].id,
                        op_line(&h[j])
                    )
                });
            }
        }
    }
}

/// A serializable read may be stale, but a client never sees one server go back: it is served
/// from that server's own state, which only moves forward. Reads after a client failed over to
/// another server may see an older one.
fn serializable_never_goes_back(h: &History, out: &mut Violations) {
    let (mut clients, mut servers) = (Names::default(), Names::default());
    // By client index, by server index: the highest header revision seen and the op.
    let mut seen: Vec<Vec<Option<(i64, usize)>>> = vec![];
    for (i, o) in h.ops.iter().enumerate() {
        // Each operation's names are allocations of their own: start loading those a few on.
        if let Some(ahead) = h.ops.get(i + 8) {
            index::prefetch(ahead.client.as_ptr());
            index::prefetch(ahead.server.as_ptr());
        }
        let Some(rev) = o.outcome.header_revision() else {
            continue;
        };
        let c = clients.index_of(&o.client);
        let s = servers.index_of(&o.server);
        if seen.len() <= c {
            seen.resize(c + 1, vec![]);
        }
        if seen[c].len() <= s {
            seen[c].resize(s + 1, None);
        }
        let serializable = Spec::of(&o.request).is_some_and(|s| s.serializable);
        match seen[c][s] {
            Some((prior, j)) if serializable && rev < prior => {
                out.fire(o.complete_ns, || {
                    format!(
                        "{} was served with header revision {rev}, although the same client had seen {prior} from the same server: {}",
                        op_line(o),
                        op_line(&h.ops[j])
                    )
                });
            }
            Some((prior, _)) if prior >= rev => {}
            _ => seen[c][s] = Some((rev, i)),
        }
    }
}

/// Clients and servers are few, named by their index in order of first appearance. A name is
/// found by its first fifteen bytes and its length packed in one integer: a million operations
/// cost a few integer compares each rather than two hashes of strings. Longer names that share
/// those also compare in full.
#[derive(Default)]
struct Names<'h>(Vec<(u128, &'h str)>);

impl<'h> Names<'h> {
    fn index_of(&mut self, name: &'h str) -> usize {
        let b = name.as_bytes();
        let mut w = [0u8; 16];
        let head = b.len().min(15);
        w[..head].copy_from_slice(&b[..head]);
        // Saturated: equal packs are two short names alike, or two long ones compared in full.
        w[15] = b.len().min(255) as u8;
        let packed = u128::from_le_bytes(w);
        let long = b.len() > 15;
        let found = self
            .0
            .iter()
            .position(|&(p, n)| p == packed && (!long || n == name));
        found.unwrap_or_else(|| {
            self.0.push((packed, name));
            self.0.len() - 1
        })
    }
}

#[cfg(test)]
mod tests;

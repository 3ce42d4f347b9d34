//! Reads against the model: each must return exactly the state at the revision it was served at
//! (its header, or the revision it asked for), over its range and limit: the right key-values,
//! every live key it covers, and `count` and `more` when its range lies inside one workload
//! prefix. A claim on a suspect version waits (`Later`) until every answer has been read.

use super::explain::{
    kv_line, op_line, printable, short, state_line, value_origin, write_line, writes_between,
};
use super::index::{prefetch, prefetch_all, prefetch_kv};
use super::later::{Claim, Later};
use super::model::{Model, Ops};
use super::shape::shape;
use super::spec::{answer, covered, scope, served_at, span, Answer, Scope, Spec};
use super::state::Vis;
use crate::checkers::Violations;
use crate::history::{Kv, Operation, Request};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Range;

/// Judges every answered read whose range meets the workload's prefixes, and the shape of every
/// other; returns how many of the first.
pub(super) fn judge_reads<'h>(
    m: &Model<'h>,
    ops: &Ops,
    known_before: impl Fn(u64) -> i64,
    later: &mut Later<'h>,
    out: &mut Violations,
) -> u64 {
    let mut judged = 0;
    let undated = undated_deletes(m, ops);
    for (r, &i) in ops.reads.iter().enumerate() {
        // The operation itself first, so that its answer's addresses are at hand when its
        // key-values are asked for.
        if let Some(&ahead) = ops.reads.get(r + 2 * LOOKAHEAD) {
            prefetch_all(&m.ops[ahead]);
        }
        if let Some(&ahead) = ops.reads.get(r + LOOKAHEAD) {
            prefetch_read(&m.ops[ahead]);
        }
        let o = &m.ops[i];
        let (Some(mut s), Some(a)) = (Spec::of(&o.request), answer(o)) else {
            continue;
        };
        s.facade = m.facade(i).is_some();
        let rev = match &o.request {
            Request::Get { key, .. } if s.facade => {
                match facade_get_served_at(m, &undated, o, key, &a, known_before(o.invoke_ns)) {
                    Some(rev) => rev,
                    None => continue,
                }
            }
            _ => served_at(&s, &a),
        };
        let scope = scope(m, &s);
        if scope == Scope::Outside {
            // No workload key is in its range: only its shape can be judged.
            if let Some(problem) = shape(&s, &a, rev, m.etcd, false) {
                out.fire(o.complete_ns, || {
                    format!("{} {}", op_line(o), problem.describe())
                });
            }
            continue;
        }
        judged += 1;
        judge_read(m, later, i, &s, scope, &a, rev, out);
    }
    judged
}

/// The revision a GET through the apiserver facade is judged at. Its answer names no revision
/// of its own, only the object's resourceVersion, and as a consistent read it was served at
/// some revision from `prior` (the highest known committed before it was sent) until it
/// completed. An object at resourceVersion R is right exactly when it is the key's state at
/// max(R, prior), for a version once replaced never returns. A 404 is judged at `prior`, or,
/// when the key was live then, at the first delete after it that was sent before the GET
/// completed. `None` (not judged) when a delete of unknown outcome whose compare expects the
/// version in question was sent before the GET completed (and, for a 404, no known delete
/// explains it): nothing dates that delete (it may
/// commit at any revision after `prior`, before or after the GET was served), so no revision
/// can be named for the GET, and judging it at one would date the delete there for every other
/// read (etcd-only-rejoin seed 95, kine-ha-partitions seed 27).
fn facade_get_served_at(
    m: &Model,
    undated: &UndatedDeletes,
    o: &Operation,
    key: &str,
    a: &Answer,
    prior: i64,
) -> Option<i64> {
    // A delete of unknown outcome that could still remove version `v`: its compare expects it.
    let undated_delete = |v: i64| {
        undated
            .get(&(key, v))
            .is_some_and(|&sent| sent < o.complete_ns)
    };
    if let Some(kv) = a.kvs.first() {
        return (!undated_delete(kv.mod_revision)).then_some(kv.mod_revision.max(prior));
    }
    let Some(k) = m.key_ix(key) else {
        return Some(prior);
    };
    let line = &m.lines[k];
    let at = line.partition_point(|e| e.rev <= prior);
    if at == 0 || !line[at - 1].change.is_put() {
        return Some(prior);
    }
    if let Some(e) = line[at..]
        .iter()
        .find(|e| !e.change.is_put() && m.ops[e.op].invoke_ns < o.complete_ns)
    {
        return Some(e.rev);
    }
    (!undated_delete(line[at - 1].rev)).then_some(prior)
}

/// Deletes of unknown outcome by (key, the mod revision their compare expects): when the first
/// was sent. Built once per check, so a facade GET looks its key up instead of every operation.
type UndatedDeletes<'h> = BTreeMap<(&'h str, i64), u64>;

fn undated_deletes<'h>(m: &Model<'h>, ops: &Ops) -> UndatedDeletes<'h> {
    let mut out = UndatedDeletes::new();
    for &u in &ops.unknown_writes {
        let w = &m.ops[u];
        if let Request::Delete {
            key,
            expected_mod_revision,
        } = &w.request
        {
            let sent = out
                .entry((key.as_str(), *expected_mod_revision))
                .or_insert(w.invoke_ns);
            *sent = (*sent).min(w.invoke_ns);
        }
    }
    out
}

/// How many answers, and key-values within one, ahead of the one judged to start loading.
const LOOKAHEAD: usize = 4;

/// Starts loading what judging a read touches first: its request's strings and the first
/// key-values of its answer.
fn prefetch_read(o: &Operation) {
    match &o.request {
        Request::Get { key, .. } => prefetch(key.as_ptr()),
        Request::List { start, end, .. } => {
            prefetch(start.as_ptr());
            prefetch(end.as_ptr());
        }
        _ => {}
    }
    if let Some(a) = answer(o) {
        a.kvs.iter().take(LOOKAHEAD).for_each(prefetch_kv);
    }
}

fn served_line(o: &Operation, s: &Spec, rev: i64) -> String {
    format!(
        "{}, served at revision {rev} ({}),",
        op_line(o),
        if s.revision > 0 {
            "the revision it asked for"
        } else if s.facade && matches!(o.request, Request::Get { .. }) {
            "a GET through the apiserver: the newest revision known committed before it was sent, or its object's resourceVersion if later"
        } else if s.facade {
            "the resourceVersion its list reported"
        } else {
            "its header's"
        }
    )
}

#[allow(clippy::too_many_arguments)]
fn judge_read<'h>(
    m: &Model<'h>,
    later: &mut Later<'h>,
    op: usize,
    s: &Spec,
    scope: Scope,
    a: &Answer<'h>,
    rev: i64,
    out: &mut Violations,
) {
    let o = &m.ops[op];
    let at = o.complete_ns;
    let began = m.late_commits.then_some(o.invoke_ns);
    // (The facade's resourceVersion rules are `facade::judge_freshness`'s.)
    if s.revision > a.header && !s.facade {
        out.fire(at, || {
            format!(
                "{} asked for revision {} but the store's revision was {} (its header): a future revision must be refused",
                op_line(o),
                s.revision,
                a.header
            )
        });
    }
    if let Some(problem) = shape(s, a, rev, m.etcd, scope == Scope::Inside) {
        out.fire(at, || format!("{} {}", op_line(o), problem.describe()));
        return;
    }
    // A count-only answer vouches for no key by name.
    let cover = if s.count_only { 0..0 } else { covered(m, s, a) };
    // Walk the answer and the modelled keys of the covered range together: one comparison per
    // key-value when the answer is right.
    let mut j = cover.start;
    for (n, kv) in a.kvs.iter().enumerate() {
        if let Some(ahead) = a.kvs.get(n + LOOKAHEAD) {
            prefetch_kv(ahead);
        }
        if scope != Scope::Inside && !m.owned(&kv.key) {
            continue;
        }
        let mut found = false;
        while j < cover.end {
            match (*m.keys[j]).cmp(kv.key.as_str()) {
                Ordering::Less => judge_absent(m, Some(later), op, s, rev, began, j, out),
                Ordering::Equal => {
                    judge_live(m, Some(later), op, s, rev, began, j, kv, out);
                    found = true;
                }
                Ordering::Greater => break,
            }
            j += 1;
            if found {
                break;
            }
        }
        if found {
            continue;
        }
        if let Some(prev) = n
            .checked_sub(1)
            .map(|p| &a.kvs[p])
            .filter(|p| p.key >= kv.key)
        {
            out.fire(at, || {
                format!(
                    "{} returned {} after {}: key-values must be in ascending key order, each once",
                    op_line(o),
                    printable(&kv.key),
                    printable(&prev.key)
                )
            });
            return;
        }
        out.fire(at, || {
            format!(
                "{} returned {} at {}, a key no client ever wrote",
                served_line(o, s, rev),
                printable(&kv.key),
                kv_line(kv, s.keys_only)
            )
        });
    }
    while j < cover.end {
        judge_absent(m, Some(later), op, s, rev, began, j, out);
        j += 1;
    }
    if scope == Scope::Inside {
        judge_count_and_more(m, Some(later), op, s, a, rev, began, out);
    }
}

/// A key-value a read returned must be the key's state at the read's revision, with the
/// value, create revision and (etcd) version its write gave it. With `later`, a claim on a
/// suspect version is noted and waits.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge_live<'h>(
    m: &Model<'h>,
    later: Option<&mut Later<'h>>,
    op: usize,
    s: &Spec,
    rev: i64,
    began: Option<u64>,
    key: usize,
    kv: &'h Kv,
    out: &mut Violations,
) {
    let o = &m.ops[op];
    let x = match m.plainly_newest(key, rev, kv.mod_revision) {
        Some(x) => x,
        None => {
            let v = m.visible(key, rev, began);
            if let Some(later) = later.filter(|_| m.sees_suspect(v)) {
                later
                    .notes
                    .push((key, rev, began, Some(kv.mod_revision), op));
                later.claims.push(Claim::Live { op, key, rev, kv });
                return;
            }
            match m.shows_live(v, kv.mod_revision) {
                Some(x) => x,
                None => return wrong_version(m, o, s, v, kv, out),
            }
        }
    };
    let e = &m.lines[key][x];
    let mut wrong = vec![];
    if !s.keys_only && kv.value != m.value(e) {
        wrong.push(format!(
            "value {} instead of {}",
            short(&kv.value),
            short(m.value(e))
        ));
    }
    // An object through the facade carries neither create revision nor version.
    if e.create_rev != 0 && kv.create_revision != e.create_rev && !s.facade {
        wrong.push(format!(
            "create revision {} instead of {}",
            kv.create_revision, e.create_rev
        ));
    }
    if m.etcd && e.version != 0 && kv.version != e.version && !s.facade {
        wrong.push(format!("version {} instead of {}", kv.version, e.version));
    }
    if !wrong.is_empty() {
        out.fire(o.complete_ns, || {
            format!(
                "{} returned {} at mod revision {} with {}; that version was written by {}",
                served_line(o, s, rev),
                printable(&m.keys[key]),
                kv.mod_revision,
                wrong.join(", "),
                write_line(m, e)
            )
        });
    }
}

/// A key-value that is not the key's state at the read's revision, and why.
fn wrong_version(m: &Model, o: &Operation, s: &Spec, v: Vis, kv: &Kv, out: &mut Violations) {
    let (key, rev, last) = (v.key, v.rev, v.last);
    out.fire(o.complete_ns, || {
        let why = match m.at_rev(key, kv.mod_revision) {
            Some(y) if !m.lines[key][y].change.is_put() => format!(
                "revision {} is the delete {}",
                kv.mod_revision,
                writes_between(m, key, y, y)
            ),
            Some(y) if y as isize > last => format!(
                "that version is newer than the revision served: {}",
                writes_between(m, key, y, y)
            ),
            Some(y) if y as isize == last => "an answer had already seen it deleted".into(),
            Some(y) => format!("missed {}", writes_between(m, key, y + 1, last as usize)),
            None => value_origin(m, &m.keys[key], kv, s.keys_only),
        };
        format!(
            "{} returned {} at {}; at revision {rev} it was {}: {why}",
            served_line(o, s, rev),
            printable(&m.keys[key]),
            kv_line(kv, s.keys_only),
            state_line(m, key, last, rev),
        )
    });
}

/// A live key in the range a read vouches for must be in its answer.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge_absent(
    m: &Model,
    later: Option<&mut Later>,
    op: usize,
    s: &Spec,
    rev: i64,
    began: Option<u64>,
    key: usize,
    out: &mut Violations,
) {
    let v = m.visible(key, rev, began);
    if let Some(later) = later.filter(|_| m.sees_suspect(v)) {
        later.notes.push((key, rev, began, None, op));
        later.claims.push(Claim::Absent { op, key, rev });
        return;
    }
    if m.may_be_absent(v) {
        return;
    }
    let o = &m.ops[op];
    out.fire(o.complete_ns, || {
        let last = v.last;
        let next = match m.lines[key].get(last as usize + 1) {
            Some(e) => format!(
                "; the next write to it is {}",
                super::explain::write_line(m, e)
            ),
            None => "; no later write changed it".into(),
        };
        format!(
            "{} did not return {}; at revision {rev} it was {}{next}",
            served_line(o, s, rev),
            printable(&m.keys[key]),
            state_line(m, key, last, rev),
        )
    });
}

/// How many keys of `keys[span]` the writes leave live at `rev`: (certainly, at most), or
/// `None` when a suspect version is visible and `waiting` says to wait for its dating.
fn live_count(
    m: &Model,
    span: Range<usize>,
    rev: i64,
    began: Option<u64>,
    waiting: bool,
) -> Option<(i64, i64)> {
    let (mut certain, mut most) = (0, 0);
    for key in span {
        let v = m.visible(key, rev, began);
        if waiting && m.sees_suspect(v) {
            return None;
        }
        match m.liveness(v) {
            (true, false) => (certain, most) = (certain + 1, most + 1),
            (true, true) => most += 1,
            _ => {}
        }
    }
    Some((certain, most))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn judge_count_and_more(
    m: &Model,
    later: Option<&mut Later>,
    op: usize,
    s: &Spec,
    a: &Answer,
    rev: i64,
    began: Option<u64>,
    out: &mut Violations,
) {
    let o = &m.ops[op];
    let at = o.complete_ns;
    if s.count_only || a.more {
        // The keys up to the last one returned are judged one by one, so the count only needs
        // the model for the rest of the range. Not under the mysql-like allowance: kine counts
        // in a query of its own after the page, and a write still committing when the read
        // began may land in between, so the count is judged on its own, against every state
        // the allowance admits.
        let all = span(m, s.start, s.end);
        let (head, rest) = if s.count_only || m.late_commits {
            (0, all)
        } else {
            let rest = covered(m, s, a).end.max(all.start)..all.end;
            (a.kvs.len() as i64, rest)
        };
        let Some((certain, most)) = live_count(m, rest, rev, began, later.is_some()) else {
            later
                .expect("only waits when told")
                .claims
                .push(Claim::Count { op });
            return;
        };
        let (certain, most) = (certain + head, most + head);
        if a.count < certain || a.count > most {
            out.fire(at, || {
                let live: Vec<String> = span(m, s.start, s.end)
                    .filter(|&k| m.liveness(m.visible(k, rev, began)).0)
                    .take(5)
                    .map(|k| printable(&m.keys[k]).to_string())
                    .collect();
                format!(
                    "{} returned count {}; at revision {rev} the writes leave {} live keys in its range ({}{})",
                    served_line(o, s, rev),
                    a.count,
                    if certain == most { format!("{certain}") } else { format!("{certain} to {most}") },
                    live.join(", "),
                    if most > 5 { ", ..." } else { "" }
                )
            });
        }
    } else if a.count != a.kvs.len() as i64 {
        out.fire(at, || {
            format!(
                "{} returned count {} with {} key-values and more=false: the count must be the number of keys in its range",
                served_line(o, s, rev),
                a.count,
                a.kvs.len()
            )
        });
    }
    if s.count_only {
        return;
    }
    let want_more = s.limit > 0 && a.count > s.limit;
    let full_page = !a.more || a.kvs.len() as i64 == s.limit;
    if a.more != want_more || !full_page {
        out.fire(at, || {
            format!(
                "{} returned more={} with {} key-values, count {} and limit {}: more must be true exactly when the limit cut the range",
                served_line(o, s, rev),
                a.more,
                a.kvs.len(),
                a.count,
                s.limit
            )
        });
    }
}

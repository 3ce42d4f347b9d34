//! Guarded writes against the model: a write that took effect found the state its compare asked
//! for just below its own revision; a write whose compare failed reports as `current` exactly
//! the key's state at its header revision, and that state really fails the compare; no two
//! writes share a revision; a Txn answers with exactly the responses of the branch it took.

use super::explain::{kv_line, op_line, printable, state_line, write_line};
use super::later::Later;
use super::model::{Change, Model, Ops};
use super::reads::{judge_absent, judge_live};
use super::shape::kv_shape;
use super::spec::Spec;
use crate::checkers::Violations;
use crate::history::{OpResult, Outcome, TxnAnswer};

/// When a write is known to have happened: its acknowledgement, or the answer that showed it.
fn known_at(m: &Model, e: &super::model::Event) -> u64 {
    match e.seen_by {
        Some(reader) => m.ops[reader].complete_ns,
        None => m.ops[e.op].complete_ns,
    }
}

/// Every write that took effect found its compare true at the revision before its own: a create
/// found the key absent, an update or delete found the version it expected. Guarded writes make
/// each key's history a chain, and this is what keeps a write of unknown outcome that did not
/// happen from being taken for one that did.
pub(super) fn judge_chains(m: &Model, out: &mut Violations) {
    for (key, line) in m.lines.iter().enumerate() {
        for (x, e) in line.iter().enumerate() {
            let prev = x.checked_sub(1).map(|p| &line[p]);
            if prev.is_some_and(|p| p.rev == e.rev) {
                continue; // two writes at one revision: `unique_revisions` says so
            }
            let before = e.rev - 1;
            let prev_live =
                prev.filter(|p| p.change.is_put() && !m.dated_delete(key, x - 1, before, None));
            let held = match e.change {
                Change::Create => prev_live.is_none(),
                Change::Update { expected } | Change::Delete { expected } => {
                    prev_live.is_some_and(|p| p.rev == expected)
                }
            };
            if held {
                continue;
            }
            out.fire(known_at(m, e), || {
                let wanted = match e.change {
                    Change::Create => "absent".to_string(),
                    c => format!("at mod revision {}", c.expected()),
                };
                let how = match e.seen_by {
                    Some(reader) => format!(" (as op#{} showed)", m.ops[reader].id),
                    None => String::new(),
                };
                format!(
                    "{} took effect at revision {}{how}; its compare needed {} {wanted} at revision {before}, but it was {}",
                    op_line(&m.ops[e.op]),
                    e.rev,
                    printable(&m.keys[key]),
                    state_line(m, key, x as isize - 1, before)
                )
            });
        }
    }
}

/// No two writes that took effect share a revision.
pub(super) fn unique_revisions(m: &Model, out: &mut Violations) {
    let mut all: Vec<(i64, usize, usize)> =
        Vec::with_capacity(m.lines.iter().map(<[_]>::len).sum());
    all.extend(
        m.lines
            .iter()
            .enumerate()
            .flat_map(|(k, line)| line.iter().enumerate().map(move |(x, e)| (e.rev, k, x))),
    );
    all.sort_unstable();
    for w in all.windows(2) {
        let ((r, k1, x1), (_, k2, x2)) = (w[0], w[1]);
        if w[0].0 != w[1].0 {
            continue;
        }
        let (a, b) = (&m.lines[k1][x1], &m.lines[k2][x2]);
        out.fire(known_at(m, a).max(known_at(m, b)), || {
            format!(
                "two writes took effect at revision {r}: {} to {} and {} to {}",
                write_line(m, a),
                printable(&m.keys[k1]),
                write_line(m, b),
                printable(&m.keys[k2])
            )
        });
    }
}

/// A write whose compare failed answers with the key as it stood at its header revision, and
/// that state must fail the compare. `known_before` gives the highest revision known committed
/// before an operation was invoked: kine compares and reads in separate steps, so a create
/// refused because its key was live may find it deleted by the time it reads `current`.
pub(super) fn judge_refused<'h>(
    m: &Model<'h>,
    ops: &Ops,
    known_before: impl Fn(u64) -> i64,
    later: &mut Later<'h>,
    out: &mut Violations,
) {
    for &i in &ops.answered_writes {
        let o = &m.ops[i];
        let Outcome::Ok {
            header_revision: rev,
            result:
                OpResult::Write {
                    succeeded: false,
                    current,
                    ..
                },
        } = &o.outcome
        else {
            continue;
        };
        let (rev, at) = (*rev, o.complete_ns);
        let name = o.request.write_key().expect("a write");
        let key = m.key_of(i);
        let began = m.late_commits.then_some(o.invoke_ns);
        // Judged as a read of its key at the header revision.
        let spec = Spec::key(name);
        match current {
            Some(kv) if kv.key != name => out.fire(at, || {
                format!(
                    "{} failed its compare and returned {} as the current state of {}",
                    op_line(o),
                    printable(&kv.key),
                    printable(name)
                )
            }),
            Some(kv) => judge_live(m, Some(later), i, &spec, rev, began, key, kv, out),
            None => judge_absent(m, Some(later), i, &spec, rev, began, key, out),
        }
        let expected = Change::of(&o.request).expect("a write").expected();
        let should_have_held = match (current, expected) {
            (Some(kv), e) => kv.mod_revision == e,
            (None, 0) => m.etcd || !live_since(m, key, known_before(o.invoke_ns), rev, began),
            (None, _) => false,
        };
        if should_have_held {
            out.fire(at, || {
                format!(
                    "{} failed its compare at revision {rev}, yet reported {} {}: exactly what it asked for{}",
                    op_line(o),
                    printable(name),
                    match current {
                        Some(kv) => kv_line(kv, false),
                        None => "absent".into(),
                    },
                    match current {
                        None => format!(
                            " (and nothing shows it live between revision {} and {rev})",
                            known_before(o.invoke_ns)
                        ),
                        Some(_) => String::new(),
                    }
                )
            });
        }
    }
}

/// Whether `key` may have been live, as a request begun at `began` saw it, at some revision in
/// `[from, to]` (under the mysql-like allowance, also before writes still committing then).
fn live_since(m: &Model, key: usize, from: i64, to: i64, began: Option<u64>) -> bool {
    let line = &m.lines[key];
    let v = m.visible(key, from, began);
    let after = (v.last + 1) as usize;
    let upto = line.partition_point(|e| e.rev <= to);
    (v.first.max(0)..=v.last).any(|x| line[x as usize].change.is_put())
        || line[after..upto.max(after)]
            .iter()
            .any(|e| e.change.is_put())
}

/// A guarded Txn answers with exactly the branch it took: when its compare held, one put (no
/// previous key-value, none was asked for) or one delete of exactly its one key; when it did
/// not, one range of that key (at most one key-value, counted, nothing cut), whose key-value is
/// `current` and has the shape a read's would at the header revision.
pub(super) fn judge_responses(m: &Model, ops: &Ops, out: &mut Violations) {
    for &i in &ops.answered_writes {
        let o = &m.ops[i];
        let Outcome::Ok {
            header_revision: rev,
            result:
                OpResult::Write {
                    succeeded,
                    current,
                    responses,
                },
        } = &o.outcome
        else {
            continue;
        };
        let deleting = matches!(Change::of(&o.request), Some(Change::Delete { .. }));
        let expected = match (*succeeded, deleting) {
            (true, false) => TxnAnswer::Put { prev_kv: false },
            (true, true) => TxnAnswer::Delete {
                deleted: 1,
                prev_kvs: 0,
            },
            (false, _) => {
                let n = current.is_some() as usize;
                TxnAnswer::Range {
                    kvs: n,
                    more: false,
                    count: n as i64,
                }
            }
        };
        let shape = current
            .as_ref()
            .and_then(|kv| kv_shape(kv, (*rev, true), m.etcd, false));
        if let Some(problem) = shape {
            out.fire(o.complete_ns, || {
                format!(
                    "{} failed its compare and {}",
                    op_line(o),
                    problem.describe()
                )
            });
        } else if !responses.is_empty() && responses[..] != [expected.clone()] {
            // (Empty: recorded before responses were kept.)
            out.fire(o.complete_ns, || {
                format!(
                    "{} {} and answered {responses:?}: the branch it took answers exactly {:?}",
                    op_line(o),
                    if *succeeded {
                        "took effect"
                    } else {
                        "failed its compare"
                    },
                    [expected]
                )
            });
        }
    }
}

//! Claims on versions a delete of unknown outcome may have removed wait here: every answer
//! that shows such a key, live or absent, dates that delete, so they are judged only once every
//! answer has been read.

use super::model::{Change, Model, Note};
use super::reads::{judge_absent, judge_count_and_more, judge_live};
use super::spec::{answer, served_at, Spec};
use crate::checkers::Violations;
use crate::history::Kv;

/// What waits for every answer to be read: evidence that dates suspect deletes, and the claims
/// on suspect versions it decides.
#[derive(Default)]
pub(super) struct Later<'h> {
    pub notes: Vec<Note>,
    pub claims: Vec<Claim<'h>>,
}

/// One thing an answer said, by operation index.
pub(super) enum Claim<'h> {
    Live {
        op: usize,
        key: usize,
        rev: i64,
        kv: &'h Kv,
    },
    Absent {
        op: usize,
        key: usize,
        rev: i64,
    },
    Count {
        op: usize,
    },
}

/// A create that took effect found its key absent just before its own revision: evidence that
/// the suspect version before it was deleted by then.
pub(super) fn create_notes(m: &Model) -> Vec<Note> {
    let mut notes = vec![];
    for (key, line) in m.lines.iter().enumerate() {
        for x in 1..line.len() {
            if line[x].change == Change::Create && line[x - 1].suspect {
                notes.push((key, line[x].rev - 1, None, None, line[x].op));
            }
        }
    }
    notes
}

/// Judges the claims that waited, now that every answer has dated the suspect deletes.
pub(super) fn judge_later(m: &Model, later: Later, out: &mut Violations) {
    for claim in later.claims {
        let op = match claim {
            Claim::Live { op, .. } | Claim::Absent { op, .. } | Claim::Count { op } => op,
        };
        let o = &m.ops[op];
        let mut s = Spec::of_op(o);
        s.facade = m.facade(op).is_some();
        let began = m.late_commits.then_some(o.invoke_ns);
        match claim {
            Claim::Live { key, rev, kv, .. } => {
                judge_live(m, None, op, &s, rev, began, key, kv, out)
            }
            Claim::Absent { key, rev, .. } => judge_absent(m, None, op, &s, rev, began, key, out),
            Claim::Count { .. } => {
                let a = answer(o).expect("an answered read");
                judge_count_and_more(m, None, op, &s, &a, served_at(&s, &a), began, out)
            }
        }
    }
}

//! What a read asked for and what it got: its range (etcd's range-end rules), limit, revision
//! and options; how the range meets the workload's prefixes; the modelled keys it vouches for.

use super::model::Model;
use crate::history::{Kv, OpResult, Operation, Outcome, Request};
use std::ops::Range;

/// etcd's range end: empty is one key, `\0` is every key from the start on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum End<'a> {
    Single,
    Unbounded,
    Before(&'a str),
}

/// What a read asked for.
pub(super) struct Spec<'a> {
    pub start: &'a str,
    pub end: End<'a>,
    pub limit: i64,
    pub revision: i64,
    pub serializable: bool,
    pub count_only: bool,
    pub keys_only: bool,
    /// Sent through the apiserver facade: its key-values carry no create revision or version.
    pub facade: bool,
}

impl<'a> Spec<'a> {
    /// A linearizable read of one key at the latest revision.
    pub fn key(key: &'a str) -> Spec<'a> {
        Spec {
            start: key,
            end: End::Single,
            limit: 0,
            revision: 0,
            serializable: false,
            count_only: false,
            keys_only: false,
            facade: false,
        }
    }

    /// A read's request; a write is judged as a read of its key where it answered with it.
    pub fn of_op(o: &'a Operation) -> Spec<'a> {
        Spec::of(&o.request)
            .unwrap_or_else(|| Spec::key(o.request.write_key().expect("a read or a write")))
    }

    pub fn of(r: &'a Request) -> Option<Spec<'a>> {
        match r {
            Request::Get {
                key,
                revision,
                serializable,
            } => Some(Spec {
                start: key,
                end: End::Single,
                limit: 0,
                revision: *revision,
                serializable: *serializable,
                count_only: false,
                keys_only: false,
                facade: false,
            }),
            Request::List {
                start,
                end,
                limit,
                revision,
                serializable,
                count_only,
                keys_only,
            } => Some(Spec {
                start,
                end: match end.as_str() {
                    "" => End::Single,
                    "\0" => End::Unbounded,
                    e => End::Before(e),
                },
                limit: *limit,
                revision: *revision,
                serializable: *serializable,
                count_only: *count_only,
                keys_only: *keys_only,
                facade: false,
            }),
            _ => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        match self.end {
            End::Single => key == self.start,
            End::Unbounded => key >= self.start,
            End::Before(e) => key >= self.start && key < e,
        }
    }
}

/// How a read's range meets the workload's prefixes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scope {
    /// No workload key can be in it.
    Outside,
    /// Inside one workload prefix: every key in it is modelled, so count and more are judged.
    Inside,
    /// Reaches beyond the workload's prefixes (the final audit over `/registry/`): keys others
    /// write count towards `count` and `more`, so only the workload's own keys are judged.
    Spans,
}

pub(super) fn scope(m: &Model, s: &Spec) -> Scope {
    let mut overlaps = false;
    for (p, end) in m.prefixes() {
        let (p, end) = (*p, end.as_str());
        let (inside, overlap) = match s.end {
            End::Single => (s.start.starts_with(p), s.start.starts_with(p)),
            End::Unbounded => (false, s.start < end),
            End::Before(e) => (s.start >= p && e <= end, s.start < end && p < e),
        };
        if inside {
            return Scope::Inside;
        }
        overlaps |= overlap;
    }
    if overlaps {
        Scope::Spans
    } else {
        Scope::Outside
    }
}

/// Indices of the modelled keys in `[start, end)`.
pub(super) fn span(m: &Model, start: &str, end: End) -> Range<usize> {
    let lo = m.keys.partition_point(|k| **k < *start);
    let hi = match end {
        End::Single => lo + (m.keys.get(lo).is_some_and(|k| **k == *start)) as usize,
        End::Unbounded => m.keys.len(),
        End::Before(e) => m.keys.partition_point(|k| **k < *e),
    };
    lo..hi.max(lo)
}

/// A read's answer.
pub(super) struct Answer<'h> {
    pub header: i64,
    pub kvs: &'h [Kv],
    pub more: bool,
    pub count: i64,
}

pub(super) fn answer(o: &Operation) -> Option<Answer<'_>> {
    match &o.outcome {
        Outcome::Ok {
            header_revision,
            result: OpResult::Read { kvs, more, count },
        } => Some(Answer {
            header: *header_revision,
            kvs,
            more: *more,
            count: *count,
        }),
        _ => None,
    }
}

/// The revision a read was served at: the one it asked for, else its header's.
pub(super) fn served_at(s: &Spec, a: &Answer) -> i64 {
    if s.revision > 0 {
        s.revision
    } else {
        a.header
    }
}

/// The modelled keys a read vouches for: its whole range, or with `more` only up to its last
/// key (the limit cut the rest).
pub(super) fn covered(m: &Model, s: &Spec, a: &Answer) -> Range<usize> {
    let all = span(m, s.start, s.end);
    if !a.more {
        return all;
    }
    let last = a.kvs.last().map(|kv| kv.key.as_str());
    let hi = last.map_or(all.start, |last| m.keys.partition_point(|k| **k <= *last));
    all.start..hi.clamp(all.start, all.end)
}

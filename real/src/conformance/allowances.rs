//! The named differences from etcd 3.4 the suite accepts, each with its reason and source.
//!
//! An allowance rewrites only the fields it names, only when its condition holds, and says when
//! it was used; every other field is still compared. The list is short on purpose: a difference
//! that is not here is a bug in the store.

use crate::answer::{Answer, WatchOutcome};
use crate::ops::Op;
use store::kine::sql::COMPACT_REV_KEY;
use store::kine::store::{RANGE_DELETE, SORT_BY_VERSION};
use store::proto::etcdserverpb::range_request::SortTarget;
use store::proto::etcdserverpb::{response_op, RangeRequest, RangeResponse};
use store::proto::mvccpb::event::EventType;
use store::proto::mvccpb::{Event, KeyValue};

/// Which faultline side an allowance applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// faultline's etcd member MVCC, called directly.
    Mvcc,
    /// faultline-store, the kine server, over gRPC.
    Kine,
}

impl Pair {
    /// The side's name in a report.
    pub fn side(self) -> &'static str {
        match self {
            Pair::Mvcc => "faultline etcd MVCC",
            Pair::Kine => "faultline-store (kine)",
        }
    }
}

pub struct Allowance {
    pub name: &'static str,
    pub pair: Pair,
    pub reason: &'static str,
    pub source: &'static str,
}

pub const WATCH_AT_COMPACT_REVISION: &str = "watch-at-compact-revision";
pub const KINE_VERSION: &str = "kine-version";
pub const COMPACT_REV_KEY_ROW: &str = "compact-rev-key-row";
pub const KINE_PREV_KV_KEPT: &str = "kine-prev-kv-kept";
pub const KINE_DELETE_AT_COMPACT_REVISION: &str = "kine-delete-at-compact-revision";
pub const PROGRESS_BEFORE_WATCH_START: &str = "progress-before-watch-start";
pub const KINE_PROGRESS_BEFORE_WATCH_START: &str = "kine-progress-before-watch-start";
pub const KINE_SORT_BY_VERSION: &str = "kine-sort-by-version";
pub const KINE_RANGE_DELETE: &str = "kine-range-delete";
pub const LEASE_TTL_CLOCK: &str = "lease-ttl-clock";
pub const KINE_LEASE_TTL_CLOCK: &str = "kine-lease-ttl-clock";
pub const KINE_PREV_KV_LEASE: &str = "kine-prev-kv-lease";
const LEASE_TTL_CLOCK_REASON: &str =
    "a live lease's remaining TTL is read off each side's clock a few milliseconds apart and \
     truncated to whole seconds, so it may differ by one second";

const PROGRESS_BEFORE_WATCH_START_REASON: &str =
    "a progress request on a stream whose watch starts beyond the current revision is deferred \
     until the store reaches that start, where etcd 3.4.23 answers at once with the current \
     revision, below the watch's start (a bookmark older than the watch; fixed in etcd \
     3.4.38/3.5.22)";
const PROGRESS_BEFORE_WATCH_START_SOURCE: &str =
    "etcd #20221 and #20229 (watchable_store.go progressIfSync: rev < w.startRev); \
     SEMANTICS.md section 1 (watch Bookmarkable)";

pub const ALLOWANCES: &[Allowance] = &[
    Allowance {
        name: WATCH_AT_COMPACT_REVISION,
        pair: Pair::Mvcc,
        reason: "a watch from exactly the compact revision, whose change there compaction removed \
                 (a delete's tombstone, or an update's previous version), is cancelled as \
                 compacted naming the next revision, where etcd 3.4.23 serves it and silently \
                 drops the DELETE (fixed in etcd 3.4.34/3.5.16) or the prev_kv; a watch from below \
                 names that next revision too",
        source:
            "etcd #18089 and #10681; SEMANTICS.md section 1 (watch Reliable, prev_kv correct); \
                 the watch=etcd-18089 variant models 3.4.23",
    },
    Allowance {
        name: KINE_VERSION,
        pair: Pair::Kine,
        reason: "kine keeps no per-key version counter: a live key's version is 1 (real kine \
                 reports 0), so only version 0 = absent means what it means in etcd",
        source:
            "src/kine/store.rs to_kv; kine pkg/server/kv.go toKV (Version never set by the SQL log)",
    },
    Allowance {
        name: COMPACT_REV_KEY_ROW,
        pair: Pair::Kine,
        reason: "kine's bookkeeping row compact_rev_key (created at revision 1, updated in place) \
                 is a key like any other to ranges and watches that cover it",
        source: "SEMANTICS.md section 2 (the compact_rev_key row); kine pkg/logstructured/sqllog",
    },
    Allowance {
        name: KINE_PREV_KV_KEPT,
        pair: Pair::Kine,
        reason: "kine's row carries its previous value (old_value), so the event at the compact \
                 revision of a watch opened there keeps its prev_kv; etcd reads prev_kv from the \
                 previous version, which compaction removed, and leaves it out",
        source: "SEMANTICS.md section 2 (old_value column); kine sqllog RowsToEvents; etcd #10681",
    },
    Allowance {
        name: KINE_DELETE_AT_COMPACT_REVISION,
        pair: Pair::Kine,
        reason: "a watch from exactly the compact revision gets the DELETE there: kine's \
                 compaction keeps a tombstone at the compact revision until the next compaction, \
                 as etcd does since its fix, where etcd 3.4.23 compacted the tombstone away and \
                 silently drops the DELETE",
        source: "etcd #18089 (fixed in 3.4.34/3.5.16); src/kine/sql.rs delete_compacted; \
                 SEMANTICS.md section 1 (watch Reliable)",
    },
    Allowance {
        name: KINE_SORT_BY_VERSION,
        pair: Pair::Kine,
        reason: "a Range sorted by version (sort_target VERSION, in either order, or with order \
                 NONE, which etcd sorts ascending) is refused with InvalidArgument naming the \
                 field: kine keeps no per-key version counter, so it cannot sort by one",
        source: "src/kine/store.rs SORT_BY_VERSION; etcd apply.go Range (kvSortByVersion)",
    },
    Allowance {
        name: KINE_RANGE_DELETE,
        pair: Pair::Kine,
        reason: "a DeleteRange with range_end is refused with InvalidArgument naming the field: \
                 kine's log writes one key per revision and cannot delete a range at one \
                 revision (the suite draws range deletes only where no key lives, so etcd \
                 deletes nothing and the stores stay equal)",
        source: "src/kine/store.rs RANGE_DELETE; kine pkg/server/delete.go",
    },
    Allowance {
        name: PROGRESS_BEFORE_WATCH_START,
        pair: Pair::Mvcc,
        reason: PROGRESS_BEFORE_WATCH_START_REASON,
        source: PROGRESS_BEFORE_WATCH_START_SOURCE,
    },
    Allowance {
        name: KINE_PROGRESS_BEFORE_WATCH_START,
        pair: Pair::Kine,
        reason: PROGRESS_BEFORE_WATCH_START_REASON,
        source: PROGRESS_BEFORE_WATCH_START_SOURCE,
    },
    Allowance {
        name: LEASE_TTL_CLOCK,
        pair: Pair::Mvcc,
        reason: LEASE_TTL_CLOCK_REASON,
        source: "etcd v3_server.go LeaseTimeToLive (Remaining().Seconds(), truncated)",
    },
    Allowance {
        name: KINE_LEASE_TTL_CLOCK,
        pair: Pair::Kine,
        reason: LEASE_TTL_CLOCK_REASON,
        source: "etcd v3_server.go LeaseTimeToLive; src/kine/lease.rs lease_time_to_live",
    },
    Allowance {
        name: KINE_PREV_KV_LEASE,
        pair: Pair::Kine,
        reason: "kine's row keeps the previous value (old_value) but not the previous lease, so \
                 a watch event's prev_kv has lease 0 where etcd names the previous version's lease",
        source: "src/server.rs event_of; SEMANTICS.md section 2 (kine's columns)",
    },
];

/// What an allowance may consult besides the two answers.
pub struct Context<'a> {
    pub op: &'a Op,
    /// For a watch's outcome: what etcd 3.4.23 serves in the model's place when the model
    /// refused the watch at its compact revision.
    pub as_3_4: Option<&'a Vec<Event>>,
    /// For a watch's outcome: the compact revision when the watch was opened.
    pub compact_at_open: i64,
    /// For a progress request: the start revision its stream's watch asked for (0 for none).
    pub progress_start: i64,
}

/// Applies the pair's allowances to `(etcd, other)` and names those that changed something.
pub fn apply(
    pair: Pair,
    cx: &Context<'_>,
    etcd: &mut Answer,
    other: &mut Answer,
) -> Vec<&'static str> {
    let mut used = Vec::new();
    match pair {
        Pair::Mvcc => {
            if watch_at_compact_revision(cx, etcd, other) {
                used.push(WATCH_AT_COMPACT_REVISION);
            }
            if progress_before_watch_start(cx, etcd, other) {
                used.push(PROGRESS_BEFORE_WATCH_START);
            }
            if crate::lease::ttl_within_a_second(etcd, other) {
                used.push(LEASE_TTL_CLOCK);
            }
        }
        Pair::Kine => {
            if compact_rev_key_row(cx.op, etcd, other) {
                used.push(COMPACT_REV_KEY_ROW);
            }
            if kine_refused(cx.op, etcd, other) {
                used.push(match cx.op {
                    Op::DeleteRange { .. } => KINE_RANGE_DELETE,
                    _ => KINE_SORT_BY_VERSION,
                });
            }
            if kine_delete_at_compact_revision(cx, etcd, other) {
                used.push(KINE_DELETE_AT_COMPACT_REVISION);
            }
            if kine_prev_kv_kept(cx, etcd, other) {
                used.push(KINE_PREV_KV_KEPT);
            }
            if kine_version(etcd, other) {
                used.push(KINE_VERSION);
            }
            if progress_before_watch_start(cx, etcd, other) {
                used.push(KINE_PROGRESS_BEFORE_WATCH_START);
            }
            if crate::lease::ttl_within_a_second(etcd, other) {
                used.push(KINE_LEASE_TTL_CLOCK);
            }
            if crate::lease::kine_prev_kv_lease(etcd, other) {
                used.push(KINE_PREV_KV_LEASE);
            }
        }
    }
    used
}

/// etcd answered a progress request below its stream's watch's start, which the other side
/// deferred until the store reaches that start and so left unanswered within the deadline.
fn progress_before_watch_start(cx: &Context<'_>, etcd: &mut Answer, other: &Answer) -> bool {
    let (Op::Progress { .. }, Answer::Progress(e)) = (cx.op, &*etcd) else {
        return false;
    };
    if *other != Answer::no_progress(crate::grpc::REQUEST_DEADLINE) {
        return false;
    }
    let below_start = e.header.as_ref().map_or(0, |h| h.revision) < cx.progress_start;
    if below_start {
        *etcd = other.clone();
    }
    below_start
}

/// The model refused a watch at the compact revision (its cancellation names the revision after
/// it) where etcd 3.4.23 served it as `as_3_4`, or cancelled it naming the compact revision.
fn watch_at_compact_revision(cx: &Context<'_>, etcd: &mut Answer, model: &Answer) -> bool {
    let (Answer::Watch(e), Answer::Watch(m)) = (&*etcd, model) else {
        return false;
    };
    let Some(refused) = &m.cancel else {
        return false;
    };
    let served_as_3_4 = e.cancel.is_none() && cx.as_3_4 == Some(&e.events);
    let cancelled_one_lower = e.events.is_empty()
        && m.events.is_empty()
        && e.cancel.as_ref().is_some_and(|c| {
            c.compact_revision + 1 == refused.compact_revision && c.reason == refused.reason
        });
    if served_as_3_4 || cancelled_one_lower {
        *etcd = model.clone();
        return true;
    }
    false
}

fn key_values(a: &mut Answer) -> Vec<&mut KeyValue> {
    fn of_range(r: &mut RangeResponse) -> Vec<&mut KeyValue> {
        r.kvs.iter_mut().collect()
    }
    let mut out = Vec::new();
    match a {
        Answer::Range(r) => out.extend(of_range(r)),
        Answer::Put(p) => out.extend(p.prev_kv.as_mut()),
        Answer::Delete(d) => out.extend(d.prev_kvs.iter_mut()),
        Answer::Txn(t) => {
            for r in &mut t.responses {
                match &mut r.response {
                    Some(response_op::Response::ResponseRange(r)) => out.extend(of_range(r)),
                    Some(response_op::Response::ResponsePut(p)) => out.extend(p.prev_kv.as_mut()),
                    Some(response_op::Response::ResponseDeleteRange(d)) => {
                        out.extend(d.prev_kvs.iter_mut())
                    }
                    _ => {}
                }
            }
        }
        Answer::Watch(o) => {
            for e in &mut o.events {
                out.extend(e.kv.as_mut());
                out.extend(e.prev_kv.as_mut());
            }
        }
        _ => {}
    }
    out
}

/// Versions compare as "exists or not" on both sides.
fn kine_version(etcd: &mut Answer, kine: &mut Answer) -> bool {
    let mut changed = false;
    for kv in key_values(etcd).into_iter().chain(key_values(kine)) {
        let exists = kv.version.min(1);
        changed |= kv.version != exists;
        kv.version = exists;
    }
    changed
}

/// A watch opened at the compact revision: etcd left out the prev_kv of the event there; kine's
/// (from its row) goes too. Every other event's prev_kv is still compared.
/// A watch's two outcomes, when it was opened at exactly the compact revision (returned first).
fn opened_at_compact<'a>(
    cx: &Context<'_>,
    etcd: &'a Answer,
    kine: &'a mut Answer,
) -> Option<(i64, &'a WatchOutcome, &'a mut WatchOutcome)> {
    let (Op::Watch { create, .. }, Answer::Watch(e), Answer::Watch(k)) = (cx.op, etcd, kine) else {
        return None;
    };
    let at = create.start_revision;
    (at != 0 && at == cx.compact_at_open).then_some((at, e, k))
}

/// kine delivered a DELETE at the compact revision its watch opened at, which etcd 3.4.23 had
/// compacted away and so left out: the event is taken out of kine's answer, and only that one.
fn kine_delete_at_compact_revision(cx: &Context<'_>, etcd: &Answer, kine: &mut Answer) -> bool {
    let Some((at, e, k)) = opened_at_compact(cx, etcd, kine) else {
        return false;
    };
    let etcd_has = |key: &[u8]| {
        e.events
            .iter()
            .filter_map(|x| x.kv.as_ref())
            .any(|kv| kv.mod_revision == at && kv.key == key)
    };
    let before = k.events.len();
    k.events.retain(|ev| {
        let dropped_by_3_4 = ev.r#type == EventType::Delete as i32
            && ev
                .kv
                .as_ref()
                .is_some_and(|kv| kv.mod_revision == at && !etcd_has(&kv.key));
        !dropped_by_3_4
    });
    k.events.len() != before
}

fn kine_prev_kv_kept(cx: &Context<'_>, etcd: &Answer, kine: &mut Answer) -> bool {
    let Some((at, e, k)) = opened_at_compact(cx, etcd, kine) else {
        return false;
    };
    let dropped: Vec<&Vec<u8>> = e
        .events
        .iter()
        .filter_map(|e| e.kv.as_ref())
        .filter(|kv| kv.mod_revision == at)
        .map(|kv| &kv.key)
        .collect();
    let mut changed = false;
    for ev in &mut k.events {
        let at_compact = ev
            .kv
            .as_ref()
            .is_some_and(|kv| kv.mod_revision == at && dropped.contains(&&kv.key));
        let etcd_has_none = e.events.iter().any(|x| {
            x.kv.as_ref().map(|kv| (kv.mod_revision, &kv.key))
                == ev.kv.as_ref().map(|kv| (kv.mod_revision, &kv.key))
                && x.prev_kv.is_none()
        });
        if at_compact && etcd_has_none && ev.prev_kv.is_some() {
            ev.prev_kv = None;
            changed = true;
        }
    }
    changed
}

fn covers_compact_rev_key(key: &[u8], range_end: &[u8]) -> bool {
    let k = COMPACT_REV_KEY.as_bytes();
    match range_end {
        [] => key == k,
        [0] => key <= k,
        end => key <= k && k < end,
    }
}

/// kine's bookkeeping row as ranges read it: created at revision 1 and updated in place.
fn compact_rev_key_kv() -> KeyValue {
    KeyValue {
        key: COMPACT_REV_KEY.into(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        value: vec![],
        lease: 0,
    }
}

/// Takes kine's bookkeeping row out of a range or a watch that covers it, as if it did not exist.
///
/// A range counts the row. When the row passes the range's revision filters it also takes a
/// place in kine's sorted list: shown within the limit, it pushed out the last key-value etcd
/// shows (which is then left out of etcd's side, that one only); shown or not, kine's `more`
/// may count it, and so says "more" where etcd, with exactly `limit` key-values, does not.
fn compact_rev_key_row(op: &Op, etcd: &mut Answer, kine: &mut Answer) -> bool {
    let is_row = |kv: &Option<KeyValue>| {
        kv.as_ref()
            .is_some_and(|kv| kv.key == COMPACT_REV_KEY.as_bytes())
    };
    if let (Op::Watch { .. }, Answer::Watch(o)) = (op, &mut *kine) {
        if o.events.iter().any(|e| is_row(&e.kv)) {
            o.events.retain(|e| !is_row(&e.kv));
            return true;
        }
        return false;
    }
    let Some((req, k)) = range_of(op, kine) else {
        return false;
    };
    if !covers_compact_rev_key(&req.key, &req.range_end) {
        return false;
    }
    let shown = k.kvs.iter().any(|kv| kv.key == COMPACT_REV_KEY.as_bytes());
    let full = req.limit > 0 && k.kvs.len() as i64 == req.limit;
    k.kvs.retain(|kv| kv.key != COMPACT_REV_KEY.as_bytes());
    k.count -= 1;
    let Some((_, e)) = range_of(op, etcd) else {
        return true;
    };
    let takes_a_place =
        !req.count_only && store::kv_rules::passes_filters(req, &compact_rev_key_kv());
    if takes_a_place {
        let etcd_full = req.limit > 0 && e.kvs.len() as i64 == req.limit;
        if shown && full && etcd_full {
            e.kvs.pop();
        }
        if k.more && !e.more && etcd_full {
            k.more = false;
        }
    }
    true
}

/// A range operation's request and the range response in its answer (a Txn's only one).
fn range_of<'a>(
    op: &'a Op,
    a: &'a mut Answer,
) -> Option<(&'a RangeRequest, &'a mut RangeResponse)> {
    match (op, a) {
        (Op::Range(req), Answer::Range(r)) => Some((req, r)),
        (Op::TxnRange(req), Answer::Txn(t)) => match t.responses.first_mut()?.response.as_mut()? {
            response_op::Response::ResponseRange(r) => Some((req, r)),
            _ => None,
        },
        _ => None,
    }
}

/// kine refused, naming the field, what etcd served: a sort by version, or a range delete
/// (only where etcd deleted nothing, so both stores still hold the same keys).
fn kine_refused(op: &Op, etcd: &mut Answer, kine: &Answer) -> bool {
    let expected = match (op, &*etcd) {
        (Op::Range(r) | Op::TxnRange(r), _)
            if store::kv_rules::sort_order(r)
                .is_some_and(|(target, _)| target == SortTarget::Version) =>
        {
            SORT_BY_VERSION
        }
        (Op::DeleteRange { .. }, Answer::Delete(d)) if d.deleted == 0 => RANGE_DELETE,
        _ => return false,
    };
    let refused = Answer::Error {
        code: "InvalidArgument".into(),
        message: expected.into(),
    };
    if *kine != refused {
        return false;
    }
    *etcd = refused;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Cancel;
    use crate::diff::diff;
    use store::proto::etcdserverpb::{RangeRequest, ResponseHeader, WatchCreateRequest};

    fn kv(key: &str, create: i64, modified: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modified,
            version,
            value: b"v".to_vec(),
            lease: 0,
        }
    }

    fn range(kvs: Vec<KeyValue>, count: i64, more: bool) -> Answer {
        Answer::Range(RangeResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            kvs,
            count,
            more,
        })
    }

    fn same(
        pair: Pair,
        cx: &Context<'_>,
        etcd: &Answer,
        other: &Answer,
    ) -> (bool, Vec<&'static str>) {
        let (mut e, mut o) = (etcd.clone(), other.clone());
        let used = apply(pair, cx, &mut e, &mut o);
        (diff(&e.fields(), &o.fields()).is_empty(), used)
    }

    fn get(key: &str, range_end: &[u8], limit: i64) -> Op {
        Op::Range(RangeRequest {
            key: key.into(),
            range_end: range_end.to_vec(),
            limit,
            ..Default::default()
        })
    }

    #[test]
    fn kine_version_hides_the_counter_but_not_the_revisions() {
        let op = get("/registry/pods/", b"/registry/pods0", 0);
        let cx = Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 0,
            progress_start: 0,
        };
        let etcd = range(vec![kv("/registry/pods/a", 2, 5, 3)], 1, false);
        let kine = range(vec![kv("/registry/pods/a", 2, 5, 1)], 1, false);
        assert_eq!(
            same(Pair::Kine, &cx, &etcd, &kine),
            (true, vec![KINE_VERSION])
        );
        let wrong_mod = range(vec![kv("/registry/pods/a", 2, 4, 1)], 1, false);
        assert!(!same(Pair::Kine, &cx, &etcd, &wrong_mod).0);
        assert!(
            !same(Pair::Mvcc, &cx, &etcd, &kine).0,
            "the etcd MVCC must count versions exactly"
        );
    }

    #[test]
    fn compact_rev_key_row_leaves_ranges_that_cover_it_as_etcd_answers() {
        let op = get("/registry/pods/ns-0/b", &[0], 2);
        let cx = Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 0,
            progress_start: 0,
        };
        let a = kv("/registry/pods/ns-0/b", 2, 2, 1);
        let b = kv("/registry/pods/ns-1/a", 3, 3, 1);
        let row = kv(COMPACT_REV_KEY, 1, 1, 1);
        // Two real keys under a limit of two: etcd says no more; kine's row made it three.
        let etcd = range(vec![a.clone(), b.clone()], 2, false);
        let kine = range(vec![a.clone(), b.clone()], 3, true);
        assert_eq!(
            same(Pair::Kine, &cx, &etcd, &kine),
            (true, vec![COMPACT_REV_KEY_ROW])
        );
        let op_all = get("/registry/", &[0], 0);
        let cx_all = Context {
            op: &op_all,
            as_3_4: None,
            compact_at_open: 0,
            progress_start: 0,
        };
        let etcd_all = range(vec![a.clone()], 1, false);
        let kine_all = range(vec![a.clone(), row], 2, false);
        assert!(same(Pair::Kine, &cx_all, &etcd_all, &kine_all).0);
        // A range that does not reach the row keeps its count as it is.
        let prefix = get("/registry/pods/", b"/registry/pods0", 0);
        let cx_prefix = Context {
            op: &prefix,
            as_3_4: None,
            compact_at_open: 0,
            progress_start: 0,
        };
        let (equal, used) = same(
            Pair::Kine,
            &cx_prefix,
            &range(vec![a.clone()], 1, false),
            &range(vec![a], 2, false),
        );
        assert!(!equal && used.is_empty());
    }

    /// The context of a watch `op` opened when the compact revision was `compact`.
    fn opened(op: &Op, compact: i64) -> Context<'_> {
        Context {
            op,
            as_3_4: None,
            compact_at_open: compact,
            progress_start: 0,
        }
    }

    fn watch_op() -> Op {
        Op::Watch {
            watch: 0,
            create: WatchCreateRequest {
                key: b"/registry/".to_vec(),
                range_end: b"/registry0".to_vec(),
                start_revision: 5,
                ..Default::default()
            },
        }
    }

    fn put_event(key: &str, rev: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(kv(key, rev, rev, 1)),
            prev_kv: None,
        }
    }

    #[test]
    fn kine_prev_kv_kept_only_at_the_compact_revision_the_watch_opened_at() {
        let op = watch_op(); // from revision 5
        let with_prev = |rev| Event {
            prev_kv: Some(kv("/registry/pods/a", 2, rev - 1, 1)),
            ..put_event("/registry/pods/a", rev)
        };
        let etcd = Answer::Watch(WatchOutcome {
            events: vec![put_event("/registry/pods/a", 5), with_prev(6)],
            cancel: None,
        });
        let kine = Answer::Watch(WatchOutcome {
            events: vec![with_prev(5), with_prev(6)],
            cancel: None,
        });
        let at = |compact| opened(&op, compact);
        assert_eq!(
            same(Pair::Kine, &at(5), &etcd, &kine),
            (true, vec![KINE_PREV_KV_KEPT])
        );
        assert!(
            !same(Pair::Kine, &at(4), &etcd, &kine).0,
            "above the compact revision etcd has the previous version: prev_kv must match"
        );
        let missing_later = Answer::Watch(WatchOutcome {
            events: vec![with_prev(5), put_event("/registry/pods/a", 6)],
            cancel: None,
        });
        assert!(
            !same(Pair::Kine, &at(5), &etcd, &missing_later).0,
            "a later event's prev_kv is still compared"
        );
    }

    #[test]
    fn kine_delete_at_compact_revision_only_at_the_revision_the_watch_opened_at() {
        let op = watch_op(); // from revision 5
        let delete = |rev| Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv("/registry/pods/a", 0, rev, 0)),
            prev_kv: None,
        };
        let etcd = Answer::Watch(WatchOutcome {
            events: vec![put_event("/registry/pods/b", 6)],
            cancel: None,
        });
        let kine = Answer::Watch(WatchOutcome {
            events: vec![delete(5), put_event("/registry/pods/b", 6)],
            cancel: None,
        });
        let at = |compact| opened(&op, compact);
        assert_eq!(
            same(Pair::Kine, &at(5), &etcd, &kine),
            (true, vec![KINE_DELETE_AT_COMPACT_REVISION])
        );
        assert!(
            !same(Pair::Kine, &at(4), &etcd, &kine).0,
            "above the compact revision etcd has the DELETE too: it must match"
        );
        let later_delete = Answer::Watch(WatchOutcome {
            events: vec![delete(5), put_event("/registry/pods/b", 6), delete(7)],
            cancel: None,
        });
        assert!(
            !same(Pair::Kine, &at(5), &etcd, &later_delete).0,
            "a DELETE after the compact revision is still compared"
        );
    }

    #[test]
    fn watch_at_compact_revision_needs_the_model_to_have_refused_and_etcd_to_serve_as_3_4() {
        let op = watch_op();
        let later = vec![put_event("/registry/pods/a", 6)];
        let refused = Answer::Watch(WatchOutcome {
            events: vec![],
            cancel: Some(Cancel {
                compact_revision: 6,
                reason: "r".into(),
            }),
        });
        let served = Answer::Watch(WatchOutcome {
            events: later.clone(),
            cancel: None,
        });
        let cx = Context {
            op: &op,
            as_3_4: Some(&later),
            compact_at_open: 5,
            progress_start: 0,
        };
        assert_eq!(
            same(Pair::Mvcc, &cx, &served, &refused),
            (true, vec![WATCH_AT_COMPACT_REVISION])
        );
        // etcd serving anything else than the 3.4 behaviour is still a difference.
        let other = Answer::Watch(WatchOutcome {
            events: vec![put_event("/registry/pods/b", 7)],
            cancel: None,
        });
        assert!(!same(Pair::Mvcc, &cx, &other, &refused).0);
        // Cancelled below the compact revision: etcd names the compact revision, one lower.
        let cancelled = |at| {
            Answer::Watch(WatchOutcome {
                events: vec![],
                cancel: Some(Cancel {
                    compact_revision: at,
                    reason: "r".into(),
                }),
            })
        };
        let none = Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 5,
            progress_start: 0,
        };
        assert!(same(Pair::Mvcc, &none, &cancelled(5), &refused).0);
        assert!(!same(Pair::Mvcc, &none, &cancelled(4), &refused).0);
        assert!(
            !same(Pair::Kine, &cx, &served, &refused).0,
            "only the MVCC pair has this allowance"
        );
    }

    #[test]
    fn progress_before_watch_start_hides_only_an_answer_below_the_start() {
        let op = Op::Progress { watch: 0 };
        let at = |progress_start| Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 0,
            progress_start,
        };
        let etcd = Answer::Progress(store::server::progress_notification(Some(ResponseHeader {
            revision: 7,
            ..Default::default()
        })));
        let deferred = Answer::no_progress(crate::grpc::REQUEST_DEADLINE);
        for pair in [Pair::Mvcc, Pair::Kine] {
            let (hidden, used) = same(pair, &at(9), &etcd, &deferred);
            assert!(hidden && used.len() == 1, "{pair:?}: {used:?}");
            assert!(
                !same(pair, &at(7), &etcd, &deferred).0,
                "{pair:?}: a watch starting at or below the revision is answered at once"
            );
            let closed = Answer::Silent("the watch stream is closed".into());
            assert!(
                !same(pair, &at(9), &etcd, &closed).0,
                "{pair:?}: only a deferral"
            );
        }
    }

    fn refusal(message: &str) -> Answer {
        Answer::Error {
            code: "InvalidArgument".into(),
            message: message.into(),
        }
    }

    fn plain(op: &Op) -> Context<'_> {
        Context {
            op,
            as_3_4: None,
            compact_at_open: 0,
            progress_start: 0,
        }
    }

    #[test]
    fn kine_sort_by_version_hides_only_that_refusal_of_a_sort_by_version() {
        let by = |target: SortTarget| {
            Op::Range(RangeRequest {
                key: b"/registry/".to_vec(),
                range_end: b"/registry0".to_vec(),
                sort_target: target as i32,
                ..Default::default()
            })
        };
        let etcd = range(vec![kv("/registry/pods/a", 2, 5, 3)], 1, false);
        let refused = refusal(SORT_BY_VERSION);
        let version = by(SortTarget::Version);
        assert_eq!(
            same(Pair::Kine, &plain(&version), &etcd, &refused),
            (true, vec![KINE_SORT_BY_VERSION])
        );
        let by_mod = by(SortTarget::Mod);
        assert!(
            !same(Pair::Kine, &plain(&by_mod), &etcd, &refused).0,
            "a sort by mod revision must be served"
        );
        assert!(
            !same(Pair::Mvcc, &plain(&version), &etcd, &refused).0,
            "the etcd MVCC sorts by version"
        );
        let other = refusal("kine: something else");
        assert!(!same(Pair::Kine, &plain(&version), &etcd, &other).0);
    }

    #[test]
    fn kine_range_delete_hides_the_refusal_only_where_etcd_deleted_nothing() {
        let op = Op::DeleteRange {
            key: "/registry/secrets/".into(),
            range_end: b"/registry/secrets0".to_vec(),
            prev_kv: false,
        };
        let deleted = |n| {
            Answer::Delete(store::proto::etcdserverpb::DeleteRangeResponse {
                header: None,
                deleted: n,
                prev_kvs: vec![],
            })
        };
        let refused = refusal(RANGE_DELETE);
        assert_eq!(
            same(Pair::Kine, &plain(&op), &deleted(0), &refused),
            (true, vec![KINE_RANGE_DELETE])
        );
        assert!(!same(Pair::Kine, &plain(&op), &deleted(2), &refused).0);
    }

    #[test]
    fn compact_rev_key_row_first_in_a_sort_pushes_out_etcds_last_key_value() {
        use store::proto::etcdserverpb::range_request::SortOrder;
        let op = Op::Range(RangeRequest {
            key: b"/registry/pods/ns-0/a".to_vec(),
            range_end: vec![0],
            limit: 2,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..Default::default()
        });
        let (b, c) = (
            kv("/registry/pods/ns-0/b", 3, 3, 1),
            kv("/registry/pods/ns-0/c", 4, 4, 1),
        );
        let row = kv(COMPACT_REV_KEY, 1, 1, 1);
        // Descending by key the row comes first and takes one of the two places.
        let etcd = range(vec![c.clone(), b.clone()], 3, true);
        let kine = range(vec![row.clone(), c.clone()], 4, true);
        assert_eq!(
            same(Pair::Kine, &plain(&op), &etcd, &kine),
            (true, vec![COMPACT_REV_KEY_ROW])
        );
        let wrong = range(vec![row.clone(), b.clone()], 4, true);
        assert!(
            !same(Pair::Kine, &plain(&op), &etcd, &wrong).0,
            "what kine shows besides the row must still be etcd's first key-values"
        );
        // Exactly two real keys: etcd says no more, kine's row made three.
        let etcd_two = range(vec![c.clone(), b.clone()], 2, false);
        let kine_two = range(vec![row, c], 3, true);
        assert!(same(Pair::Kine, &plain(&op), &etcd_two, &kine_two).0);
    }

    #[test]
    fn compact_rev_key_row_is_taken_out_of_a_txns_range_too() {
        let req = RangeRequest {
            key: b"/registry/pods/ns-0/b".to_vec(),
            range_end: vec![0],
            ..Default::default()
        };
        let op = Op::TxnRange(req);
        let in_txn = |kvs: Vec<KeyValue>, count| {
            let Answer::Range(r) = range(kvs, count, false) else {
                unreachable!()
            };
            Answer::Txn(store::proto::etcdserverpb::TxnResponse {
                header: None,
                succeeded: true,
                responses: vec![store::proto::etcdserverpb::ResponseOp {
                    response: Some(response_op::Response::ResponseRange(r)),
                }],
            })
        };
        let b = kv("/registry/pods/ns-0/b", 2, 2, 1);
        let row = kv(COMPACT_REV_KEY, 1, 1, 1);
        let etcd = in_txn(vec![b.clone()], 1);
        let kine = in_txn(vec![b.clone(), row], 2);
        assert_eq!(
            same(Pair::Kine, &plain(&op), &etcd, &kine),
            (true, vec![COMPACT_REV_KEY_ROW])
        );
        assert!(!same(Pair::Kine, &plain(&op), &etcd, &in_txn(vec![], 1)).0);
    }
}

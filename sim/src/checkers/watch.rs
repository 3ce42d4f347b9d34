//! watch: every watch session against the committed log (etcd's watch guarantees).
//!
//! Ordered and Unique (revisions strictly increase), Atomic (a revision's events arrive in one
//! response), events match committed rows (key, delete flag, create revision, prev_kv) and the
//! watched range, Reliable (no committed row skipped up to what the session covered),
//! Bookmarkable (a progress notification at R comes after every row up to R), and cancellation
//! with a compact revision exactly when the start revision was compacted.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::clients::watcher::CANCELLED_BY_CLIENT;
use crate::history::{
    CompactionRequest, History, Kv, OpResult, Outcome, Request, SimNanos, WatchEventRecord,
    WatchSession,
};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub struct WatchChecker;

/// A committed row as the database reported it.
struct Committed<'a> {
    key: &'a str,
    deleted: bool,
    created: bool,
    create_revision: i64,
    prev_revision: i64,
}

/// The committed rows by revision. One change per revision, except in live mode, where etcd's
/// lease revoke or expiry deletes every key of a lease at one revision.
type Rows<'a> = BTreeMap<i64, Vec<Committed<'a>>>;

/// The row of `key` at `rev`, else the revision's first (whose key then differs).
fn row_for<'r, 'a>(rows: &'r Rows<'a>, rev: i64, key: &str) -> Option<&'r Committed<'a>> {
    let at = rows.get(&rev)?;
    at.iter().find(|r| r.key == key).or(at.first())
}

fn committed_rows(h: &History) -> Rows<'_> {
    let mut rows = BTreeMap::new();
    for (_, _, e) in h.store_events() {
        if let StoreEvent::DbInsert {
            id,
            key,
            created,
            deleted,
            create_revision,
            prev_revision,
        } = e
        {
            // Fill rows exist only to close gaps in the id sequence; watchers never see them.
            if !store::kine::watch::is_fill(key)
                && key.as_str() != store::kine::sql::COMPACT_REV_KEY
            {
                rows.insert(
                    *id,
                    vec![Committed {
                        key,
                        deleted: *deleted,
                        created: *created,
                        create_revision: *create_revision,
                        prev_revision: *prev_revision,
                    }],
                );
            }
        }
    }
    rows
}

/// Live mode: the committed rows rebuilt from what clients saw, since the store's own log is
/// unknown. Every acknowledged successful write is a row (its create revision resolved through
/// the chain of earlier rows by the revision it compared); a revision no write reports takes the
/// first watch event seen there for each key (a lease's keys go at one revision), and a write's
/// row whose create revision the chain cannot name takes its first event's. A watcher then
/// disagrees with an acknowledged write or with the first watcher that reported a revision, and
/// skips only rows someone reported.
fn live_rows(h: &History) -> Rows<'_> {
    let mut rows: Rows<'_> = BTreeMap::new();
    // Rows whose create revision is still unknown (0 until resolved).
    for o in &h.ops {
        let Outcome::Ok {
            header_revision: rev,
            result: OpResult::Write {
                succeeded: true, ..
            },
        } = &o.outcome
        else {
            continue;
        };
        let row = match &o.request {
            Request::Create { key, .. } => Committed {
                key,
                deleted: false,
                created: true,
                create_revision: *rev,
                prev_revision: 0,
            },
            Request::Update {
                key,
                expected_mod_revision: expected,
                ..
            } => Committed {
                key,
                deleted: false,
                // Compared as absent: the put created the key.
                created: *expected == 0,
                create_revision: if *expected == 0 { *rev } else { 0 },
                prev_revision: *expected,
            },
            // A delete guarded on absence deletes nothing and makes no revision.
            Request::Delete {
                key,
                expected_mod_revision: expected,
            } if *expected > 0 => Committed {
                key,
                deleted: true,
                created: false,
                create_revision: 0,
                prev_revision: *expected,
            },
            _ => continue,
        };
        // Two writes acknowledged at one revision are revision-monotonic's to report.
        rows.entry(*rev).or_insert(vec![row]);
    }
    // The first event seen at each revision for each key, and the first prev_kv seen there (an
    // etcd event whose previous version was compacted comes without one).
    type First<'h, T> = BTreeMap<(i64, &'h str), (u64, &'h T)>;
    let mut first: First<'_, WatchEventRecord> = BTreeMap::new();
    let mut first_prev: First<'_, Kv> = BTreeMap::new();
    for w in &h.watches {
        for e in &w.events {
            let at = (e.mod_revision, e.key.as_str());
            if first.get(&at).is_none_or(|(t, _)| e.at_ns < *t) {
                first.insert(at, (e.at_ns, e));
            }
            if let Some(p) = &e.prev_kv {
                if first_prev.get(&at).is_none_or(|(t, _)| e.at_ns < *t) {
                    first_prev.insert(at, (e.at_ns, p));
                }
            }
        }
    }
    let written: std::collections::BTreeSet<i64> = rows.keys().copied().collect();
    for ((rev, key), (_, e)) in &first {
        // A guarded write changes one key: its revision holds nothing else.
        if written.contains(rev)
            || store::kine::watch::is_fill(key)
            || *key == store::kine::sql::COMPACT_REV_KEY
        {
            continue;
        }
        let created = !e.deleted && e.create_revision == e.mod_revision;
        rows.entry(*rev).or_default().push(Committed {
            key,
            deleted: e.deleted,
            created,
            create_revision: if e.deleted { 0 } else { e.create_revision },
            prev_revision: if created {
                0
            } else {
                first_prev
                    .get(&(*rev, *key))
                    .map_or(0, |(_, p)| p.mod_revision)
            },
        });
    }
    // Create revisions in revision order: through the chain first, else the first event's (a
    // PUT's own, or a DELETE's prev_kv's).
    let revs: Vec<i64> = rows.keys().copied().collect();
    for rev in revs {
        for i in 0..rows[&rev].len() {
            let row = &rows[&rev][i];
            if row.create_revision != 0 || row.created {
                continue;
            }
            let (key, prev) = (row.key, row.prev_revision);
            let chained = rows
                .get(&prev)
                .and_then(|at| at.iter().find(|p| p.key == key))
                .map(|p| if p.created { prev } else { p.create_revision });
            let seen = first.get(&(rev, key)).and_then(|(_, e)| {
                if e.deleted {
                    e.prev_kv.as_ref().map(|p| p.create_revision)
                } else {
                    Some(e.create_revision)
                }
            });
            let resolved = chained.filter(|c| *c != 0).or(seen).unwrap_or(0);
            if let Some(r) = rows.get_mut(&rev) {
                r[i].create_revision = resolved;
            }
        }
    }
    rows
}

/// Live mode: the Compact requests clients sent, the only compactions known.
struct LiveCompactions<'h> {
    requests: &'h [CompactionRequest],
    /// Whether they are every compaction the store made (etcd compacts only when asked; a kine
    /// store runs its own compactor, which no client sees).
    complete: bool,
}

impl LiveCompactions<'_> {
    /// An upper bound of the compact revision any server held at `at`: the highest revision a
    /// Compact request sent before `at` asked for (0: none was sent).
    fn upper_bound(&self, at: SimNanos) -> i64 {
        self.requests
            .iter()
            .filter(|c| c.invoke_ns < at)
            .map(|c| c.revision)
            .max()
            .unwrap_or(0)
    }

    /// A Compact request to exactly `revision` sent before `at`.
    fn to_exactly(&self, revision: i64, at: SimNanos) -> Option<&CompactionRequest> {
        self.requests
            .iter()
            .find(|c| c.revision == revision && c.invoke_ns < at)
    }
}

/// The rules the watch check leaves unjudged in live mode.
fn live_unjudged(complete: bool) -> Vec<String> {
    let mut rules = vec![
        "served below the compact revision instead of cancelled: needs a lower bound on the serving member's compact revision, which no client knows (a follower applies a compaction late)".to_string(),
        "events against the store's own log: rows are rebuilt from acknowledged writes and the first watcher's report of a revision no write reports, so a revision nobody reported is not owed, and the first report of one stands for its row".to_string(),
    ];
    if !complete {
        rules.push("cancelled as compacted although the start was not compacted: the store runs its own compactor, which is not observable from outside".to_string());
    }
    rules
}

fn in_range(w: &WatchSession, key: &str) -> bool {
    key >= w.start_key.as_str() && key < w.end_key.as_str()
}

fn check_session<'h>(
    w: &'h WatchSession,
    rows: &Rows<'_>,
    db: &DbTimeline,
    etcd: bool,
    live: Option<&LiveCompactions<'_>>,
    seen: &mut Sightings<'h>,
    out: &mut Violations,
) {
    let name = format!("watch#{} of {} on {}", w.id, w.client, w.server);
    // Cancellation for compaction: exactly when the start revision was no longer available.
    // Judged at the request's invocation, not at the answer's arrival: a compaction between the
    // two may have come after the server registered the watch and served its first events,
    // which etcd does (only a watch still unsynced when its start is compacted is cancelled).
    let compact_at_open = db.compact_at_on(w.invoked_ns, &w.server);
    match (live, &w.end) {
        (None, _) | (_, None) => {}
        // Live mode knows only the compactions clients asked for: the highest one sent before
        // the cancel arrived bounds the compact revision from above.
        (Some(lc), Some(end)) if lc.complete && end.compact_revision > 0 => {
            let bound = lc.upper_bound(end.at_ns);
            let edge_lost = lc.to_exactly(w.start_revision, end.at_ns).is_some()
                && rows
                    .get(&w.start_revision)
                    .is_none_or(|at| at.iter().any(|r| !r.created));
            if w.start_revision >= bound && !edge_lost {
                out.fire(end.at_ns, || format!(
                    "{name} was cancelled as compacted at {} although its start {} was at or above {bound}, the highest revision any Compact request sent before the cancel asked for",
                    end.compact_revision, w.start_revision
                ));
            }
        }
        (Some(_), Some(_)) => {}
    }
    if let Some(end) = w.end.as_ref().filter(|_| live.is_none()) {
        let compact = db.compact_at_on(end.at_ns, &w.server);
        // Starting exactly at the compact revision is fine only if that revision's change was a
        // creation: a delete's tombstone and an update's previous version are compacted away,
        // so the event could not be delivered whole.
        let edge_lost = w.start_revision == compact
            && rows
                .get(&compact)
                .is_some_and(|at| at.iter().any(|r| !r.created));
        if end.compact_revision > 0 && w.start_revision >= compact && !edge_lost {
            out.fire(end.at_ns, || format!(
                    "{name} was cancelled as compacted at {} although its start {} was at or above the compact revision {compact}",
                    end.compact_revision, w.start_revision
                ));
        }
    }
    // Nothing is owed after a client's cancel was answered, and nothing may come.
    if let Some(end) = w.end.as_ref().filter(|e| e.reason == CANCELLED_BY_CLIENT) {
        if let Some(e) = w.events.iter().find(|e| e.at_ns > end.at_ns) {
            out.fire(e.at_ns, || {
                format!(
                    "{name} delivered revision {} after its client's cancel was answered at {}",
                    e.mod_revision,
                    secs(end.at_ns)
                )
            });
        }
    }
    // Unjudged in live mode: nothing bounds the serving member's compact revision from below.
    if live.is_none()
        && w.start_revision > 0
        && w.start_revision < compact_at_open
        && !w.events.is_empty()
    {
        out.fire(w.events[0].at_ns, || format!(
                "{name} started at revision {} below the compact revision {compact_at_open} (reached before the watch was requested at {}) and was served instead of cancelled",
                w.start_revision, secs(w.invoked_ns)
            ));
    }
    let mut last: Option<(i64, u64)> = None;
    let mut delivered: BTreeMap<i64, u64> = BTreeMap::new();
    // By key too, for the revisions that changed several keys (live mode only).
    let mut delivered_keys: BTreeMap<(i64, &str), u64> = BTreeMap::new();
    for (n, e) in w.events.iter().enumerate() {
        // Another key of a revision that changed several: atomic if in the same response.
        let sibling = last.is_some_and(|(rev, _)| rev == e.mod_revision)
            && !delivered_keys.contains_key(&(e.mod_revision, e.key.as_str()))
            && rows
                .get(&e.mod_revision)
                .is_some_and(|at| at.len() > 1 && at.iter().any(|r| r.key == e.key));
        if let Some((rev, response)) = last {
            if e.mod_revision <= rev && !sibling {
                out.fire(e.at_ns, || format!("{name} delivered revision {} after {rev}: events must be ordered and unique", e.mod_revision));
            } else if e.mod_revision == rev && e.response != response {
                out.fire(e.at_ns, || format!("{name} split revision {rev} across responses: events of one revision are atomic"));
            }
        }
        last = Some((e.mod_revision, e.response));
        delivered.insert(e.mod_revision, e.at_ns);
        delivered_keys.insert((e.mod_revision, e.key.as_str()), e.at_ns);
        if !in_range(w, &e.key) {
            out.fire(e.at_ns, || {
                format!(
                    "{name} delivered {} at {}, outside its range [{}, {})",
                    e.key, e.mod_revision, w.start_key, w.end_key
                )
            });
        }
        if e.mod_revision < w.start_revision {
            out.fire(e.at_ns, || {
                format!(
                    "{name} delivered revision {} below its start revision {}",
                    e.mod_revision, w.start_revision
                )
            });
        }
        let Some(row) = row_for(rows, e.mod_revision, &e.key) else {
            out.fire(e.at_ns, || {
                format!(
                    "{name} delivered an event at revision {} for {} that was never committed",
                    e.mod_revision, e.key
                )
            });
            continue;
        };
        // etcd omits a prev_kv it can no longer read: one at or below a compaction that may
        // have run before the event was sent (documented for WatchCreateRequest.prev_kv).
        let prev_compacted = live.is_some_and(|lc| lc.upper_bound(e.at_ns) >= e.mod_revision);
        let wrong = event_fields(e, row, rows, etcd, prev_compacted, seen, (w.id, n));
        if !wrong.is_empty() {
            out.fire(e.at_ns, || {
                format!(
                    "{name}: event at revision {} has {}",
                    e.mod_revision,
                    wrong.join(", ")
                )
            });
        }
    }
    // Reliable and Bookmarkable: every in-range row from the start up to what the session
    // covered (its last event or progress) arrived, and arrived before the progress covering it.
    let covered = w
        .events
        .iter()
        .map(|e| e.mod_revision)
        .chain(w.progress.iter().map(|p| p.1))
        .max()
        .unwrap_or(0);
    let first_progress = |id: i64| w.progress.iter().find(|p| p.1 >= id).map(|p| p.0);
    let from = w.start_revision.max(1);
    if covered < from {
        return;
    }
    let rows_in_range = rows
        .range(from..=covered)
        .flat_map(|(id, at)| at.iter().map(move |r| (id, r, at.len() > 1)))
        .filter(|(_, r, _)| in_range(w, r.key));
    for (id, row, several) in rows_in_range {
        let got = if several {
            delivered_keys.get(&(*id, row.key))
        } else {
            delivered.get(id)
        };
        match (got, first_progress(*id)) {
            (None, progress) => {
                let pattern = live
                    .filter(|_| row.deleted && *id == w.start_revision)
                    .and_then(|lc| lc.to_exactly(*id, w.opened_ns))
                    .map(|c| format!(
                        " (the pattern of etcd #18089: a watch created at exactly the compact revision {id}, asked for by compaction#{} at {}, misses the DELETE at {id} because the compaction removed its tombstone)",
                        c.id, secs(c.invoke_ns)
                    ))
                    .unwrap_or_else(|| {
                        // Only a progress notification says the session covered this row, and
                        // it came before the session sent anything past it: etcd 3.4 answered
                        // the request ahead of a catching-up watch, which then ended (cancelled
                        // as compacted, say) before sending the row.
                        let ahead = progress.filter(|p| {
                            live.is_some()
                                && etcd
                                && !w.events.iter().any(|e| e.mod_revision > *id && e.at_ns <= *p)
                        });
                        match (ahead, &w.end) {
                            (Some(p), Some(end)) => format!(
                                " (the pattern of etcd #15220: the progress notification at {} was answered before the watch sent revision {id}, and the watch ended at {}{} without sending it)",
                                secs(p),
                                secs(end.at_ns),
                                if end.compact_revision > 0 {
                                    format!(", cancelled as compacted at {}", end.compact_revision)
                                } else {
                                    String::new()
                                }
                            ),
                            _ => String::new(),
                        }
                    });
                let partial = if several && delivered.contains_key(id) {
                    format!(" and delivered other keys of revision {id}: watchers disagree on what it changed, or this one missed part of it")
                } else {
                    String::new()
                };
                out.fire(progress.or_else(|| w.events.last().map(|e| e.at_ns)).unwrap_or(w.opened_ns), || format!("{name} skipped revision {id} ({}) although it reported progress up to {covered}{pattern}{partial}", row.key));
                return;
            }
            (Some(at), Some(p)) if *at > p => {
                // etcd 3.4 before the fix answers a progress request at once, ahead of the
                // events a catching-up watch still has to send.
                let pattern = if live.is_some() && etcd {
                    " (the pattern of etcd #15220: a requested progress notification is not held back until the watch has sent its pending events)"
                } else {
                    ""
                };
                out.fire(p, || format!("{name} sent a progress notification covering revision {id} at {} before delivering it at {}{pattern}", secs(p), secs(*at)));
                return;
            }
            _ => {}
        }
    }
}

/// Where a version of a key was seen first.
#[derive(Clone, Copy)]
enum Seen {
    /// The acknowledged write that made it (op id): its value only.
    Write(u64),
    /// An event of a watch session (session id, event index), or a prev_kv on one.
    Event(u64, usize),
    PrevKv(u64, usize),
    /// The final audit read (op id).
    Audit(u64),
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Write(op) => write!(f, "the write that made it (op#{op})"),
            Seen::Event(w, n) => write!(f, "event {n} of watch#{w}"),
            Seen::PrevKv(w, n) => write!(f, "the prev_kv of event {n} of watch#{w}"),
            Seen::Audit(op) => write!(f, "the final audit read (op#{op})"),
        }
    }
}

/// What one version of a key showed where it was first seen: its value, and its create
/// revision and version where first shown (a write's acknowledgement says neither).
struct Sighting<'h> {
    value: (&'h str, Seen),
    create_version: Option<((i64, i64), Seen)>,
}

/// Every sight of a version, by (key, mod revision): a version never changes, so every event,
/// prev_kv and read that shows it must agree with the first.
type Sightings<'h> = BTreeMap<(&'h str, i64), Sighting<'h>>;

/// The versions known before any watch event is read: what acknowledged writes put, and what
/// the final audit read found.
fn sightings(h: &History) -> Sightings<'_> {
    let mut seen = Sightings::new();
    for o in &h.ops {
        if let (
            Request::Create { key, value } | Request::Update { key, value, .. },
            Outcome::Ok {
                header_revision,
                result: OpResult::Write {
                    succeeded: true, ..
                },
            },
        ) = (&o.request, &o.outcome)
        {
            seen.insert(
                (key.as_str(), *header_revision),
                Sighting {
                    value: (value, Seen::Write(o.id)),
                    create_version: None,
                },
            );
        }
    }
    if let Some(Outcome::Ok {
        result: OpResult::Read { kvs, .. },
        ..
    }) = h.final_read().map(|o| &o.outcome)
    {
        let id = h.params.final_read.unwrap_or_default();
        for kv in kvs {
            seen.entry((kv.key.as_str(), kv.mod_revision))
                .or_insert(Sighting {
                    value: (&kv.value, Seen::Audit(id)),
                    create_version: Some(((kv.create_revision, kv.version), Seen::Audit(id))),
                });
        }
    }
    seen
}

/// What differs between a sight of a version and the first one; records it when it is the first.
fn against<'h>(
    seen: &mut Sightings<'h>,
    (key, rev): (&'h str, i64),
    (value, create, version): (&'h str, i64, i64),
    by: Seen,
) -> Option<String> {
    let first = seen.entry((key, rev)).or_insert(Sighting {
        value: (value, by),
        create_version: None,
    });
    let fields = *first.create_version.get_or_insert(((create, version), by));
    let mut wrong = vec![];
    if first.value.0 != value {
        wrong.push(format!(
            "{} shows value {}",
            first.value.1,
            short(first.value.0)
        ));
    }
    if fields.0 != (create, version) {
        let ((c, v), by) = fields;
        wrong.push(format!("{by} shows create revision {c} and version {v}"));
    }
    (!wrong.is_empty()).then(|| wrong.join(", and "))
}

fn short(v: &str) -> String {
    if v.len() <= 24 {
        return format!("{v:?}");
    }
    let cut = (0..=24).rev().find(|i| v.is_char_boundary(*i)).unwrap_or(0);
    format!("{:?}... ({} bytes)", &v[..cut], v.len())
}

/// What is wrong with the fields of event `at` of a session against its committed row: key,
/// kind, create revision, version, value, and prev_kv exactly the key's previous version.
fn event_fields<'h>(
    e: &'h WatchEventRecord,
    row: &Committed<'_>,
    rows: &Rows<'_>,
    etcd: bool,
    prev_compacted: bool,
    seen: &mut Sightings<'h>,
    at: (u64, usize),
) -> Vec<String> {
    let mut wrong = Vec::new();
    if row.key != e.key {
        wrong.push(format!("key {} (committed {})", e.key, row.key));
    }
    if row.deleted != e.deleted {
        wrong.push(format!(
            "{} (committed as a {})",
            if e.deleted { "DELETE" } else { "PUT" },
            if row.deleted { "delete" } else { "put" }
        ));
    }
    let prev = e.prev_kv.as_ref();
    if e.deleted {
        if e.create_revision != 0 || e.version != 0 || !e.value.is_empty() {
            wrong.push(format!(
                "a DELETE whose key-value carries create revision {}, version {} and value {} (a tombstone carries only its key and revision)",
                e.create_revision,
                e.version,
                short(&e.value)
            ));
        }
    } else {
        let expected = if row.created {
            e.mod_revision
        } else {
            row.create_revision
        };
        if e.create_revision != expected {
            wrong.push(format!(
                "create revision {} (expected {expected}: {})",
                e.create_revision,
                if row.created {
                    "a creation"
                } else {
                    "a modification"
                }
            ));
        }
        // etcd counts a key's writes since its creation; kine reports 1 for every live key.
        let version = match (etcd, row.created, prev) {
            (false, _, _) | (true, true, _) => Some(1),
            (true, false, Some(p)) => Some(p.version + 1),
            (true, false, None) => None,
        };
        if version.is_some_and(|v| v != e.version) {
            wrong.push(format!(
                "version {} (expected {}: {})",
                e.version,
                version.unwrap_or_default(),
                match (etcd, row.created) {
                    (false, _) => "kine reports 1 for every live key",
                    (true, true) => "a creation",
                    (true, false) => "one more than its prev_kv's",
                }
            ));
        }
        let key = (e.key.as_str(), e.mod_revision);
        let fields = (e.value.as_str(), e.create_revision, e.version);
        if let Some(d) = against(seen, key, fields, Seen::Event(at.0, at.1)) {
            wrong.push(format!(
                "value {}, create revision {} and version {}, though {d}",
                short(&e.value),
                e.create_revision,
                e.version
            ));
        }
    }
    let expected_prev = (!row.created && row.prev_revision > 0).then_some(row.prev_revision);
    let excused = prev.is_none() && prev_compacted;
    if prev.map(|p| p.mod_revision) != expected_prev && !excused {
        wrong.push(format!(
            "prev_kv at {:?} (expected {:?})",
            prev.map(|p| p.mod_revision),
            expected_prev
        ));
    } else if let Some(p) = prev {
        // The committed row of the previous version says what its create revision was.
        let prev_create = row_for(rows, p.mod_revision, &p.key).map(|r| {
            if r.created {
                p.mod_revision
            } else {
                r.create_revision
            }
        });
        let version_ok = if etcd { p.version >= 1 } else { p.version == 1 };
        if p.key != e.key || prev_create.is_some_and(|c| c != p.create_revision) || !version_ok {
            wrong.push(format!(
                "a prev_kv of {} with create revision {} and version {} (expected {}, create revision {}, version {})",
                p.key,
                p.create_revision,
                p.version,
                e.key,
                prev_create.map_or("as committed".into(), |c| c.to_string()),
                if etcd { "at least 1" } else { "1" }
            ));
        }
        let key = (e.key.as_str(), p.mod_revision);
        let fields = (p.value.as_str(), p.create_revision, p.version);
        if let Some(d) = against(seen, key, fields, Seen::PrevKv(at.0, at.1)) {
            wrong.push(format!(
                "a prev_kv with value {}, create revision {} and version {}, though {d}",
                short(&p.value),
                p.create_revision,
                p.version
            ));
        }
    }
    wrong
}

impl Checker for WatchChecker {
    fn name(&self) -> &'static str {
        "watch"
    }

    fn meaning(&self) -> &'static str {
        "watch events are ordered, unique, atomic, reliable against the committed log, bookmarkable, with correct prev_kv and create flags, and compacted starts are cancelled"
    }

    fn check(&self, h: &History) -> CheckReport {
        let live = h.params.live.then(|| LiveCompactions {
            requests: &h.compactions,
            complete: h.params.topology == "etcd",
        });
        let rows = match live {
            Some(_) => live_rows(h),
            None => committed_rows(h),
        };
        let db = DbTimeline::of(h);
        let etcd = h.params.topology == "etcd";
        let mut seen = sightings(h);
        let mut out = Violations::new();
        for w in &h.watches {
            check_session(w, &rows, &db, etcd, live.as_ref(), &mut seen, &mut out);
        }
        let events: usize = h.watches.iter().map(|w| w.events.len()).sum();
        let progress: usize = h.watches.iter().map(|w| w.progress.len()).sum();
        CheckReport::judged(
            self.name(),
            out,
            vec![
                ("sessions", h.watches.len() as u64),
                ("events", events as u64),
                ("progress notifications", progress as u64),
            ],
            "no client held an etcd watch in this run",
        )
        .with_unjudged(live.map_or(vec![], |lc| live_unjudged(lc.complete)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::{Kv, WatchEventRecord, WatchSessionEnd};

    /// Rows 2..=6: creates of /r/a (2) and /r/b (3), an update of /r/a (4), /x (5), a delete of /r/b (6).
    fn log() -> History {
        let mut h = history();
        let mut row = |id: i64, key: &str, created: bool, deleted: bool, create: i64, prev: i64| {
            store(
                &mut h,
                id as f64,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: key.into(),
                    created,
                    deleted,
                    create_revision: create,
                    prev_revision: prev,
                },
            );
        };
        row(2, "/r/a", true, false, 2, 0);
        row(3, "/r/b", true, false, 3, 0);
        row(4, "/r/a", false, false, 2, 2);
        row(5, "/x", true, false, 5, 0);
        row(6, "/r/b", false, true, 3, 3);
        h
    }

    fn ev(
        at: f64,
        response: u64,
        key: &str,
        rev: i64,
        create: i64,
        prev: Option<i64>,
        deleted: bool,
    ) -> WatchEventRecord {
        WatchEventRecord {
            at_ns: (at * 1e9) as u64,
            response,
            key: key.into(),
            deleted,
            mod_revision: rev,
            create_revision: create,
            version: (!deleted) as i64,
            value: if deleted {
                String::new()
            } else {
                format!("{key}@{rev}")
            },
            // Every previous version in the log is its key's creation.
            prev_kv: prev.map(|p| Kv {
                key: key.into(),
                create_revision: p,
                mod_revision: p,
                version: 1,
                value: format!("{key}@{p}"),
            }),
        }
    }

    fn session(events: Vec<WatchEventRecord>, progress: Vec<(f64, i64)>) -> WatchSession {
        WatchSession {
            id: 0,
            client: "watcher-1".into(),
            server: "kine-1".into(),
            start_key: "/r/".into(),
            end_key: "/r0".into(),
            start_revision: 2,
            invoked_ns: S,
            opened_ns: S,
            events,
            progress: progress
                .into_iter()
                .map(|(t, r)| ((t * 1e9) as u64, r))
                .collect(),
            end: None,
        }
    }

    fn good_events() -> Vec<WatchEventRecord> {
        vec![
            ev(10.0, 1, "/r/a", 2, 2, None, false),
            ev(10.0, 1, "/r/b", 3, 3, None, false),
            ev(11.0, 2, "/r/a", 4, 2, Some(2), false),
            ev(12.0, 3, "/r/b", 6, 0, Some(3), true),
        ]
    }

    fn check(h: &History) -> CheckReport {
        WatchChecker.check(h)
    }

    #[test]
    fn a_faithful_session_passes() {
        let mut h = log();
        h.watches.push(session(good_events(), vec![(13.0, 6)]));
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_skipped_revision_fires() {
        let mut h = log();
        let mut events = good_events();
        events.remove(2);
        h.watches.push(session(events, vec![]));
        assert_fires(&check(&h), "skipped revision 4");
    }

    #[test]
    fn a_repeated_event_fires() {
        let mut h = log();
        let mut events = good_events();
        events.insert(2, ev(10.5, 9, "/r/b", 3, 3, None, false));
        h.watches.push(session(events, vec![]));
        assert_fires(&check(&h), "after 3: events must be ordered and unique");
    }

    #[test]
    fn a_progress_before_its_rows_fires() {
        let mut h = log();
        h.watches.push(session(good_events(), vec![(10.5, 6)]));
        assert_fires(&check(&h), "before delivering it");
    }

    #[test]
    fn a_wrong_prev_kv_or_create_flag_fires() {
        let mut h = log();
        let mut events = good_events();
        events[2] = ev(11.0, 2, "/r/a", 4, 4, None, false);
        h.watches.push(session(events, vec![]));
        assert_fires(
            &check(&h),
            "create revision 4 (expected 2: a modification), prev_kv at None (expected Some(2))",
        );
    }

    #[test]
    fn an_out_of_range_event_fires() {
        let mut h = log();
        let mut events = good_events();
        events.insert(3, ev(11.5, 5, "/x", 5, 5, None, false));
        h.watches.push(session(events, vec![]));
        assert_fires(&check(&h), "outside its range");
    }

    #[test]
    fn a_session_its_client_cancelled_owes_nothing_after_the_answer_and_gets_nothing() {
        let mut h = log();
        let mut w = session(good_events()[..2].to_vec(), vec![]);
        w.end = Some(WatchSessionEnd {
            at_ns: 10 * S + S / 2,
            compact_revision: 0,
            reason: CANCELLED_BY_CLIENT.into(),
        });
        h.watches.push(w.clone());
        let r = check(&h);
        assert!(
            r.passed(),
            "rows 4 and 6 came after the cancel: {:?}",
            r.violations
        );
        w.events = good_events();
        h.watches[0] = w;
        assert_fires(
            &check(&h),
            "delivered revision 4 after its client's cancel was answered",
        );
    }

    #[test]
    fn compaction_cancellation_must_match_the_compact_revision() {
        let mut h = log();
        db_compact(&mut h, 20.0, (0, 4), true, (6, 5));
        let mut late = session(vec![], vec![]);
        late.start_revision = 3;
        late.opened_ns = 30 * S;
        late.end = Some(WatchSessionEnd {
            at_ns: 30 * S,
            compact_revision: 4,
            reason: "compacted".into(),
        });
        h.watches.push(late.clone());
        assert!(
            check(&h).passed(),
            "start 3 below compact 4 must be cancelled"
        );
        late.start_revision = 5;
        h.watches[0] = late;
        assert_fires(&check(&h), "was cancelled as compacted");
    }

    #[test]
    fn a_compacted_start_served_fires_only_when_compacted_before_the_request() {
        let mut h = log();
        db_compact(&mut h, 20.0, (0, 4), true, (6, 5));
        let mut w = session(good_events(), vec![]);
        w.invoked_ns = 21 * S;
        w.opened_ns = 21 * S;
        h.watches.push(w.clone());
        assert_fires(&check(&h), "was served instead of cancelled");
        // Requested before the compaction, answered after it: the server may have served it
        // while its start was still available.
        w.invoked_ns = 19 * S;
        h.watches[0] = w;
        assert!(check(&h).passed(), "{:?}", check(&h).violations);
    }

    #[test]
    fn a_put_carries_its_version_and_a_delete_only_its_key_and_revision() {
        let mut h = log();
        let mut events = good_events();
        events[2].version = 2;
        h.watches.push(session(events, vec![]));
        assert_fires(
            &check(&h),
            "event at revision 4 has version 2 (expected 1: kine reports 1 for every live key)",
        );
        let mut h = log();
        let mut events = good_events();
        events[3].value = "/r/b@3".into();
        h.watches.push(session(events, vec![]));
        assert_fires(
            &check(&h),
            "a DELETE whose key-value carries create revision 0, version 0 and value \"/r/b@3\"",
        );
        // etcd counts writes since the creation: the update at 4 is the key's version 2.
        let mut h = log();
        h.params.topology = "etcd".into();
        h.watches.push(session(good_events(), vec![]));
        assert_fires(
            &check(&h),
            "version 1 (expected 2: one more than its prev_kv's)",
        );
        h.watches[0].events[2].version = 2;
        assert!(check(&h).passed(), "{:?}", check(&h).violations);
    }

    #[test]
    fn a_prev_kv_is_exactly_the_previous_version() {
        let mut h = log();
        let mut events = good_events();
        events[2].prev_kv.as_mut().unwrap().value = "stale".into();
        h.watches.push(session(events, vec![]));
        assert_fires(
            &check(&h),
            "a prev_kv with value \"stale\", create revision 2 and version 1, though event 0 of watch#0 shows value \"/r/a@2\"",
        );
        let mut h = log();
        let mut events = good_events();
        events[3].prev_kv.as_mut().unwrap().create_revision = 2;
        h.watches.push(session(events, vec![]));
        assert_fires(&check(&h), "a prev_kv of /r/b with create revision 2 and version 1 (expected /r/b, create revision 3");
    }

    #[test]
    fn an_event_shows_the_value_its_write_put() {
        let mut h = log();
        let put = |value: &str| Request::Create {
            key: "/r/a".into(),
            value: value.into(),
        };
        op(&mut h, "c1", 1.0, 1.5, put("/r/a@2"), write_ok(2));
        h.watches.push(session(good_events(), vec![]));
        assert!(check(&h).passed(), "{:?}", check(&h).violations);
        h.ops[0].request = put("other");
        assert_fires(
            &check(&h),
            "event at revision 2 has value \"/r/a@2\", create revision 2 and version 1, though the write that made it (op#0) shows value \"other\"",
        );
    }
}

#[cfg(test)]
mod live_tests {
    //! Live mode: no store events; rows come from acknowledged writes and watch events, and
    //! compactions from the Compact requests clients sent.
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::{CompactionRequest, Kv, WatchEventRecord, WatchSessionEnd};

    fn put(key: &str, rev: i64) -> Request {
        Request::Create {
            key: key.into(),
            value: format!("{key}@{rev}"),
        }
    }

    /// The log of `tests::log` as an etcd client saw it: creates of /r/a (2) and /r/b (3), an
    /// update of /r/a (4), /x (5), a delete of /r/b (6); no store event.
    fn live_log() -> History {
        let mut h = history();
        h.params.live = true;
        h.params.topology = "etcd".into();
        op(&mut h, "c1", 1.5, 2.0, put("/r/a", 2), write_ok(2));
        op(&mut h, "c1", 2.5, 3.0, put("/r/b", 3), write_ok(3));
        let update = Request::Update {
            key: "/r/a".into(),
            value: "/r/a@4".into(),
            expected_mod_revision: 2,
        };
        op(&mut h, "c1", 3.5, 4.0, update, write_ok(4));
        op(&mut h, "c2", 4.5, 5.0, put("/x", 5), write_ok(5));
        op(&mut h, "c1", 5.5, 6.0, delete("/r/b", 3), write_ok(6));
        h
    }

    fn ev(
        at: f64,
        response: u64,
        key: &str,
        rev: i64,
        create: i64,
        prev: Option<(i64, i64)>,
        deleted: bool,
    ) -> WatchEventRecord {
        WatchEventRecord {
            at_ns: (at * 1e9) as u64,
            response,
            key: key.into(),
            deleted,
            mod_revision: rev,
            create_revision: if deleted { 0 } else { create },
            version: (!deleted) as i64,
            value: if deleted {
                String::new()
            } else {
                format!("{key}@{rev}")
            },
            prev_kv: prev.map(|(p, v)| Kv {
                key: key.into(),
                create_revision: create,
                mod_revision: p,
                version: v,
                value: format!("{key}@{p}"),
            }),
        }
    }

    /// What an etcd watcher of /r/ from revision 2 receives (versions as etcd counts them).
    fn good_events() -> Vec<WatchEventRecord> {
        let mut update = ev(11.0, 2, "/r/a", 4, 2, Some((2, 1)), false);
        update.version = 2;
        vec![
            ev(10.0, 1, "/r/a", 2, 2, None, false),
            ev(10.0, 1, "/r/b", 3, 3, None, false),
            update,
            ev(12.0, 3, "/r/b", 6, 3, Some((3, 1)), true),
        ]
    }

    fn session(id: u64, start: i64, at: f64, events: Vec<WatchEventRecord>) -> WatchSession {
        WatchSession {
            id,
            client: format!("watcher-{id}"),
            server: "etcd-1".into(),
            start_key: "/r/".into(),
            end_key: "/r0".into(),
            start_revision: start,
            invoked_ns: (at * 1e9) as u64,
            opened_ns: (at * 1e9) as u64,
            events,
            progress: vec![],
            end: None,
        }
    }

    fn compacted(w: &mut WatchSession, at: f64, compact: i64) {
        w.end = Some(WatchSessionEnd {
            at_ns: (at * 1e9) as u64,
            compact_revision: compact,
            reason: "compacted".into(),
        });
    }

    fn compaction(h: &mut History, at: f64, revision: i64) {
        h.compactions.push(CompactionRequest {
            id: h.compactions.len() as u64,
            client: "compactor".into(),
            server: "etcd-1".into(),
            invoke_ns: (at * 1e9) as u64,
            complete_ns: (at * 1e9) as u64 + S / 100,
            revision,
            outcome: "ok".into(),
        });
    }

    fn check(h: &History) -> CheckReport {
        WatchChecker.check(h)
    }

    fn assert_passes(h: &History) {
        let r = check(h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_watcher_that_agrees_with_every_acknowledged_write_passes_and_the_unjudged_are_named() {
        let mut h = live_log();
        let mut w = session(0, 2, 1.0, good_events());
        w.progress = vec![(13 * S, 6)];
        h.watches.push(w);
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        assert!(
            r.unjudged.iter().any(|u| u.starts_with("served below")),
            "{:?}",
            r.unjudged
        );
        // etcd compacts only when asked: the cancel rule is judged.
        assert!(!r.unjudged.iter().any(|u| u.starts_with("cancelled")));
    }

    #[test]
    fn a_watcher_that_skips_or_contradicts_an_acknowledged_write_fires() {
        let mut h = live_log();
        let mut events = good_events();
        events.remove(2);
        h.watches.push(session(0, 2, 1.0, events));
        assert_fires(&check(&h), "skipped revision 4 (/r/a)");
        let mut h = live_log();
        let mut events = good_events();
        events[3].deleted = false;
        events[3].create_revision = 3;
        events[3].version = 2;
        events[3].value = "/r/b@6".into();
        h.watches.push(session(0, 2, 1.0, events));
        assert_fires(&check(&h), "PUT (committed as a delete)");
    }

    #[test]
    fn two_watchers_that_disagree_about_a_revision_no_write_reports_fire() {
        // No write is known: the first watcher's report of each revision stands for its row.
        let mut h = live_log();
        h.ops.clear();
        h.watches.push(session(0, 2, 1.0, good_events()));
        let mut other = good_events();
        for e in &mut other {
            e.at_ns += S / 2;
        }
        h.watches.push(session(1, 2, 1.0, other.clone()));
        assert_passes(&h);
        // The second watcher shows another key at revision 4: neither is known to be right,
        // and each skipped what the other reported.
        let mut wrong = other.clone();
        wrong[2] = ev(11.5, 2, "/r/c", 4, 4, None, false);
        h.watches[1].events = wrong;
        let r = check(&h);
        assert_fires(&r, "watch#0 of watcher-0 on etcd-1 skipped revision 4 (/r/c) although it reported progress up to 6 and delivered other keys of revision 4: watchers disagree on what it changed");
        assert_eq!(r.total, 2, "{:?}", r.violations);
        // When a write reports revision 4, the watcher that contradicts it is wrong.
        let mut known = h.clone();
        known.ops = live_log().ops;
        assert_fires(
            &check(&known),
            "watch#1 of watcher-1 on etcd-1: event at revision 4 has key /r/c (committed /r/a)",
        );
        // The second watcher skips revision 4, which the first one reported.
        other.remove(2);
        h.watches[1].events = other;
        assert_fires(
            &check(&h),
            "watch#1 of watcher-1 on etcd-1 skipped revision 4",
        );
    }

    #[test]
    fn a_write_row_without_a_create_revision_takes_the_first_events() {
        // The update's chain is broken (its create is not acknowledged): the event says 2.
        let mut h = live_log();
        h.ops.remove(0);
        h.watches.push(session(0, 2, 1.0, good_events()));
        assert_passes(&h);
        let mut late = good_events();
        late[2].create_revision = 3;
        for e in &mut late {
            e.at_ns += S / 2;
        }
        h.watches.push(session(1, 2, 1.0, late));
        assert_fires(&check(&h), "watch#1 of watcher-1 on etcd-1: event at revision 4 has create revision 3 (expected 2: a modification)");
    }

    #[test]
    fn a_cancel_for_compaction_is_judged_against_the_compactions_sent_before_it() {
        let mut h = live_log();
        compaction(&mut h, 20.0, 4);
        // Sent after the cancel: it does not count.
        compaction(&mut h, 25.0, 6);
        let mut w = session(0, 3, 21.0, vec![]);
        compacted(&mut w, 21.0, 4);
        h.watches.push(w);
        assert_passes(&h);
        h.watches[0].start_revision = 5;
        assert_fires(
            &check(&h),
            "was cancelled as compacted at 4 although its start 5 was at or above 4, the highest revision any Compact request sent before the cancel asked for",
        );
        // Exactly at the compact revision: the update's previous version is gone, a cancel is
        // allowed; a creation's is not.
        h.watches[0].start_revision = 4;
        assert_passes(&h);
        h.compactions[0].revision = 3;
        h.watches[0].start_revision = 3;
        assert_fires(&check(&h), "its start 3 was at or above 3");
        // faultline-store compacts on its own: the rule is left unjudged, and named.
        h.params.topology = "single".into();
        let r = check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        assert!(r
            .unjudged
            .iter()
            .any(|u| u.starts_with("cancelled as compacted")));
    }

    #[test]
    fn a_resume_at_exactly_the_compact_revision_passes_when_it_delivers_everything() {
        let mut h = live_log();
        compaction(&mut h, 20.0, 4);
        let mut first = session(0, 1, 19.0, vec![]);
        compacted(&mut first, 21.0, 4);
        h.watches.push(first);
        // Resumed at 4: the update at 4 comes without a prev_kv (its previous version, at 2,
        // was compacted away), the delete at 6 with one.
        let mut update = ev(22.0, 1, "/r/a", 4, 2, None, false);
        update.version = 2;
        let mut resumed = session(
            1,
            4,
            21.5,
            vec![update, ev(22.0, 1, "/r/b", 6, 3, Some((3, 1)), true)],
        );
        resumed.progress = vec![(23 * S, 6)];
        h.watches.push(resumed);
        assert_passes(&h);
        // Without the compaction the prev_kv is owed.
        h.compactions.clear();
        h.watches[0].end = None;
        assert_fires(&check(&h), "prev_kv at None (expected Some(2))");
    }

    #[test]
    fn a_lease_whose_keys_go_at_one_revision_is_owed_whole_and_in_one_response() {
        // A lease's two keys, put by a lease client and deleted by its expiry at 8: no
        // workload operation reports either.
        let mut h = live_log();
        op(&mut h, "c1", 8.5, 9.0, put("/r/c", 9), write_ok(9));
        let lease_events = |at: f64, response: u64| {
            vec![
                ev(at, response, "/r/l1", 7, 7, None, false),
                ev(at, response, "/r/l2", 7, 7, None, false),
                ev(at + 1.0, response + 1, "/r/l1", 8, 7, Some((7, 1)), true),
                ev(at + 1.0, response + 1, "/r/l2", 8, 7, Some((7, 1)), true),
                ev(at + 2.0, response + 2, "/r/c", 9, 9, None, false),
            ]
        };
        let whole = |at: f64| {
            let mut events = good_events();
            events.extend(lease_events(at, 4));
            events
        };
        h.watches.push(session(0, 2, 1.0, whole(13.0)));
        h.watches.push(session(1, 2, 1.0, whole(13.5)));
        assert_passes(&h);
        // The second watcher misses one key of the expiry.
        let mut partial = whole(13.5);
        partial.remove(7);
        h.watches[1].events = partial;
        assert_fires(
            &check(&h),
            "watch#1 of watcher-1 on etcd-1 skipped revision 8 (/r/l2)",
        );
        // It gets both, in two responses.
        let mut split = whole(13.5);
        split[7].response = 99;
        h.watches[1].events = split;
        assert_fires(
            &check(&h),
            "watch#1 of watcher-1 on etcd-1 split revision 8 across responses",
        );
        // Or one of them twice.
        let mut twice = whole(13.5);
        let again = twice[6].clone();
        twice.insert(7, again);
        h.watches[1].events = twice;
        assert_fires(
            &check(&h),
            "delivered revision 8 after 8: events must be ordered and unique",
        );
    }

    #[test]
    fn a_progress_answered_before_a_compacted_cancel_is_named_as_etcd_15220_on_etcd() {
        let mut h = live_log();
        compaction(&mut h, 7.0, 5);
        // Started at 2 after the compaction at 5: a progress at 6 comes first, then the cancel.
        let mut w = session(0, 2, 8.0, vec![]);
        w.progress = vec![(8 * S + S / 10, 6)];
        w.end = Some(WatchSessionEnd {
            at_ns: 8 * S + S / 5,
            compact_revision: 5,
            reason: String::new(),
        });
        h.watches.push(w);
        assert_fires(&check(&h), "skipped revision 2 (/r/a) although it reported progress up to 6 (the pattern of etcd #15220: the progress notification at 8.100s was answered before the watch sent revision 2, and the watch ended at 8.200s, cancelled as compacted at 5 without sending it)");
        // Without the progress, the cancel alone is right.
        h.watches[0].progress.clear();
        assert_passes(&h);
        // A session that sent a later revision before the progress skipped the row for real:
        // no bug of etcd's is named for that.
        let mut later = session(1, 2, 8.0, vec![ev(8.05, 1, "/r/b", 3, 3, None, false)]);
        later.progress = vec![(8 * S + S / 10, 6)];
        h.watches.push(later);
        let r = check(&h);
        let v = r
            .violations
            .iter()
            .find(|v| v.message.contains("watch#1"))
            .expect("the skip fires");
        assert!(!v.message.contains("#15220"), "{}", v.message);
    }

    #[test]
    fn a_progress_notification_ahead_of_the_events_it_covers_is_named_as_etcd_15220_on_etcd() {
        let mut h = live_log();
        let mut w = session(0, 2, 1.0, good_events());
        w.progress = vec![(10 * S + S / 2, 6)];
        h.watches.push(w);
        assert_fires(&check(&h), "sent a progress notification covering revision 4 at 10.500s before delivering it at 11.000s (the pattern of etcd #15220: ");
        // In its place, it passes.
        h.watches[0].progress = vec![(13 * S, 6)];
        assert_passes(&h);
        // faultline-store has no such bug to name.
        h.params.topology = "single".into();
        h.watches[0].progress = vec![(10 * S + S / 2, 6)];
        let r = check(&h);
        assert!(
            r.first()
                .is_some_and(|v| v.message.ends_with("before delivering it at 11.000s")),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn the_delete_at_a_compact_revision_a_watch_starts_at_is_owed_as_etcd_18089_misses_it() {
        let mut h = live_log();
        op(&mut h, "c1", 6.5, 7.0, put("/r/c", 7), write_ok(7));
        compaction(&mut h, 20.0, 6);
        let mut first = session(0, 5, 19.0, vec![]);
        compacted(&mut first, 21.0, 6);
        h.watches.push(first);
        // Resumed at exactly 6, the compact revision: the DELETE at 6 never arrives.
        h.watches.push(session(
            1,
            6,
            21.5,
            vec![ev(22.0, 1, "/r/c", 7, 7, None, false)],
        ));
        let r = check(&h);
        assert_fires(&r, "watch#1 of watcher-1 on etcd-1 skipped revision 6 (/r/b) although it reported progress up to 7 (the pattern of etcd #18089: a watch created at exactly the compact revision 6, asked for by compaction#0 at 20.000s, misses the DELETE at 6");
        // Delivered, it passes.
        h.watches[1]
            .events
            .insert(0, ev(22.0, 1, "/r/b", 6, 3, Some((3, 1)), true));
        assert_passes(&h);
    }
}

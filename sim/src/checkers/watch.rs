//! watch: every watch session against the committed log (etcd's watch guarantees).
//!
//! Ordered and Unique (revisions strictly increase), Atomic (a revision's events arrive in one
//! response), events match committed rows (key, delete flag, create revision, prev_kv) and the
//! watched range, Reliable (no committed row skipped up to what the session covered),
//! Bookmarkable (a progress notification at R comes after every row up to R), and cancellation
//! with a compact revision exactly when the start revision was compacted.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::clients::watcher::CANCELLED_BY_CLIENT;
use crate::history::{History, OpResult, Outcome, Request, WatchEventRecord, WatchSession};
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

fn committed_rows(h: &History) -> BTreeMap<i64, Committed<'_>> {
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
                    Committed {
                        key,
                        deleted: *deleted,
                        created: *created,
                        create_revision: *create_revision,
                        prev_revision: *prev_revision,
                    },
                );
            }
        }
    }
    rows
}

fn in_range(w: &WatchSession, key: &str) -> bool {
    key >= w.start_key.as_str() && key < w.end_key.as_str()
}

fn check_session<'h>(
    w: &'h WatchSession,
    rows: &BTreeMap<i64, Committed<'_>>,
    db: &DbTimeline,
    etcd: bool,
    seen: &mut Sightings<'h>,
    out: &mut Violations,
) {
    let name = format!("watch#{} of {} on {}", w.id, w.client, w.server);
    // Cancellation for compaction: exactly when the start revision was no longer available.
    // Judged at the request's invocation, not at the answer's arrival: a compaction between the
    // two may have come after the server registered the watch and served its first events,
    // which etcd does (only a watch still unsynced when its start is compacted is cancelled).
    let compact_at_open = db.compact_at_on(w.invoked_ns, &w.server);
    if let Some(end) = &w.end {
        let compact = db.compact_at_on(end.at_ns, &w.server);
        // Starting exactly at the compact revision is fine only if that revision's change was a
        // creation: a delete's tombstone and an update's previous version are compacted away,
        // so the event could not be delivered whole.
        let edge_lost =
            w.start_revision == compact && rows.get(&compact).is_some_and(|r| !r.created);
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
    if w.start_revision > 0 && w.start_revision < compact_at_open && !w.events.is_empty() {
        out.fire(w.events[0].at_ns, || format!(
                "{name} started at revision {} below the compact revision {compact_at_open} (reached before the watch was requested at {}) and was served instead of cancelled",
                w.start_revision, secs(w.invoked_ns)
            ));
    }
    let mut last: Option<(i64, u64)> = None;
    let mut delivered: BTreeMap<i64, u64> = BTreeMap::new();
    for (n, e) in w.events.iter().enumerate() {
        if let Some((rev, response)) = last {
            if e.mod_revision <= rev {
                out.fire(e.at_ns, || format!("{name} delivered revision {} after {rev}: events must be ordered and unique", e.mod_revision));
            } else if e.mod_revision == rev && e.response != response {
                out.fire(e.at_ns, || format!("{name} split revision {rev} across responses: events of one revision are atomic"));
            }
        }
        last = Some((e.mod_revision, e.response));
        delivered.insert(e.mod_revision, e.at_ns);
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
        let Some(row) = rows.get(&e.mod_revision) else {
            out.fire(e.at_ns, || {
                format!(
                    "{name} delivered an event at revision {} for {} that was never committed",
                    e.mod_revision, e.key
                )
            });
            continue;
        };
        let wrong = event_fields(e, row, rows, etcd, seen, (w.id, n));
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
    for (id, row) in rows.range(from..=covered) {
        if !in_range(w, row.key) {
            continue;
        }
        match (delivered.get(id), first_progress(*id)) {
            (None, progress) => {
                out.fire(progress.or_else(|| w.events.last().map(|e| e.at_ns)).unwrap_or(w.opened_ns), || format!("{name} skipped revision {id} ({}) although it reported progress up to {covered}", row.key));
                return;
            }
            (Some(at), Some(p)) if *at > p => {
                out.fire(p, || format!("{name} sent a progress notification covering revision {id} at {} before delivering it at {}", secs(p), secs(*at)));
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
    rows: &BTreeMap<i64, Committed<'_>>,
    etcd: bool,
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
    if prev.map(|p| p.mod_revision) != expected_prev {
        wrong.push(format!(
            "prev_kv at {:?} (expected {:?})",
            prev.map(|p| p.mod_revision),
            expected_prev
        ));
    } else if let Some(p) = prev {
        // The committed row of the previous version says what its create revision was.
        let prev_create = rows.get(&p.mod_revision).map(|r| {
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
        let rows = committed_rows(h);
        let db = DbTimeline::of(h);
        let etcd = h.params.topology == "etcd";
        let mut seen = sightings(h);
        let mut out = Violations::new();
        for w in &h.watches {
            check_session(w, &rows, &db, etcd, &mut seen, &mut out);
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

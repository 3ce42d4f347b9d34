//! watch: every watch session against the committed log (etcd's watch guarantees).
//!
//! Ordered and Unique (revisions strictly increase), Atomic (a revision's events arrive in one
//! response), events match committed rows (key, delete flag, create revision, prev_kv) and the
//! watched range, Reliable (no committed row skipped up to what the session covered),
//! Bookmarkable (a progress notification at R comes after every row up to R), and cancellation
//! with a compact revision exactly when the start revision was compacted.

use super::{secs, CheckReport, Checker, DbTimeline, Violations};
use crate::history::{History, WatchSession};
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

fn check_session(
    w: &WatchSession,
    rows: &BTreeMap<i64, Committed<'_>>,
    db: &DbTimeline,
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
    if w.start_revision > 0 && w.start_revision < compact_at_open && !w.events.is_empty() {
        out.fire(w.events[0].at_ns, || format!(
                "{name} started at revision {} below the compact revision {compact_at_open} (reached before the watch was requested at {}) and was served instead of cancelled",
                w.start_revision, secs(w.invoked_ns)
            ));
    }
    let mut last: Option<(i64, u64)> = None;
    let mut delivered: BTreeMap<i64, u64> = BTreeMap::new();
    for e in &w.events {
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
        if !e.deleted {
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
        }
        let expected_prev = (!row.created && row.prev_revision > 0).then_some(row.prev_revision);
        if e.prev_mod_revision != expected_prev {
            wrong.push(format!(
                "prev_kv at {:?} (expected {:?})",
                e.prev_mod_revision, expected_prev
            ));
        }
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
        let mut out = Violations::new();
        for w in &h.watches {
            check_session(w, &rows, &db, &mut out);
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
    use crate::history::{WatchEventRecord, WatchSessionEnd};

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
            prev_mod_revision: prev,
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
}

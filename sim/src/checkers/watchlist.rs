//! watchlist: apiserver WATCH and WatchList streams against the committed log.
//!
//! A request the apiserver must refuse is refused with the right code (406 for a WatchList that
//! accepts only Table, before any validation; 422 for the invalid parameter combinations), and
//! a valid one is served. A served WatchList sends ADDED events for exactly the objects live at
//! its initial-events-end bookmark's revision, exactly one such bookmark, at or after the
//! requested revision (or the revision current when the request began), and after it only newer
//! events. Every served stream's events after its start are strictly ordered, of the right
//! type, and none is missing up to the last revision the stream reached.

use super::{CheckReport, Checker, Violations};
use crate::history::{ApiWatch, History, SimNanos};
use std::collections::BTreeMap;
use store::apiserver::{resource_prefix, EventType, WatchRequest};
use store::observe::StoreEvent;

pub struct WatchList;

/// A committed row: (id, key, created, deleted, commit time).
type Committed<'a> = Vec<(i64, &'a str, bool, bool, SimNanos)>;

/// The status the apiserver must answer `req` with, if it must refuse it.
pub fn required_refusal(req: &WatchRequest) -> Option<u16> {
    let table_only = !req.accept.is_empty() && req.accept.iter().all(|a| a.contains("as=Table"));
    if req.send_initial_events && table_only {
        return Some(406);
    }
    let not_older = req.resource_version_match.as_deref() == Some("NotOlderThan");
    let invalid = (req.send_initial_events && !not_older)
        || (req.resource_version_match.is_some() && !req.send_initial_events)
        || req.continue_token.is_some()
        || (!req.send_initial_events && req.resource_version.is_none());
    invalid.then_some(422)
}

impl Checker for WatchList {
    fn name(&self) -> &'static str {
        "watchlist"
    }

    fn meaning(&self) -> &'static str {
        "apiserver watches: 406/422 exactly when required; a WatchList's initial ADDED events are the state at its one initial-events-end bookmark (at or after the requested revision), then only newer events, ordered and none missing"
    }

    fn check(&self, h: &History) -> CheckReport {
        if h.params.live {
            return CheckReport::not_applicable(
                self.name(),
                "live run: no apiserver facade serves WATCH or WatchList, and the rows the store committed are unknown from outside",
            );
        }
        let mut committed: Committed<'_> = Vec::new();
        for (at, _, e) in h.store_events() {
            if let StoreEvent::DbInsert {
                id,
                key,
                created,
                deleted,
                ..
            } = e
            {
                committed.push((*id, key.as_str(), *created, *deleted, at));
            }
        }
        committed.sort();
        let mut out = Violations::new();
        for w in &h.api_watches {
            check_watch(w, &committed, &mut out);
        }
        let events: usize = h.api_watches.iter().map(|w| w.events.len()).sum();
        CheckReport::judged(
            self.name(),
            out,
            vec![
                ("streams", h.api_watches.len() as u64),
                ("events", events as u64),
            ],
            "no apiserver WATCH or WatchList stream in this run",
        )
    }
}

fn check_watch(w: &ApiWatch, committed: &Committed<'_>, out: &mut Violations) {
    let mut fire = |at_ns: SimNanos, what: String| {
        out.fire(at_ns, || {
            format!("api-watch#{} of {} on {}: {what}", w.id, w.client, w.server)
        })
    };
    let refused = w
        .end
        .as_ref()
        .and_then(|e| e.code)
        .filter(|_| w.events.is_empty());
    let served = !w.events.is_empty();
    match (required_refusal(&w.request), refused) {
        (Some(code), Some(got)) if code == got => return,
        (Some(406), _) if served => {
            fire(
                w.events[0].at_ns,
                "a WatchList accepting only the Table format was served instead of refused with 406 Not Acceptable".into(),
            );
            return;
        }
        (Some(code), _) if served => {
            fire(
                w.events[0].at_ns,
                format!("an invalid watch request was served instead of refused with {code}"),
            );
            return;
        }
        (Some(code), Some(got)) => {
            fire(
                w.end.as_ref().map_or(w.opened_ns, |e| e.at_ns),
                format!("refused with {got}, expected {code}"),
            );
            return;
        }
        (None, Some(got @ (406 | 422))) => {
            fire(
                w.end.as_ref().map_or(w.opened_ns, |e| e.at_ns),
                format!("a valid request was refused with {got}"),
            );
            return;
        }
        _ => {}
    }
    if !served {
        return;
    }
    let prefix = resource_prefix(&w.request.resource);
    let in_range = |k: &str| k.starts_with(&prefix);
    // Where ordinary events start: after the initial-events-end bookmark, or after the
    // requested resourceVersion.
    let mut start = w.request.resource_version.unwrap_or(0);
    let mut events = &w.events[..];
    if w.request.send_initial_events {
        let ends: Vec<usize> = w
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.initial_events_end)
            .map(|(i, _)| i)
            .collect();
        if ends.len() > 1 {
            fire(
                w.events[ends[1]].at_ns,
                format!("{} initial-events-end bookmarks", ends.len()),
            );
        }
        let Some(&end) = ends.first() else {
            // The stream broke before the initial events ended: nothing more to judge.
            if let Some(e) = w.events.iter().find(|e| e.kind != EventType::Added) {
                fire(
                    e.at_ns,
                    format!("{:?} event before the initial-events-end bookmark", e.kind),
                );
            }
            return;
        };
        let mark = &w.events[end];
        let b = mark.resource_version;
        if mark.kind != EventType::Bookmark {
            fire(
                mark.at_ns,
                "the initial-events-end annotation is on a non-bookmark event".into(),
            );
        }
        let required = match w.request.resource_version {
            Some(rv) if rv > 0 => rv,
            // The revision current when the request began.
            _ => committed
                .iter()
                .filter(|c| c.4 <= w.opened_ns)
                .map(|c| c.0)
                .max()
                .unwrap_or(0),
        };
        if b < required {
            fire(
                mark.at_ns,
                format!(
                    "the initial-events-end bookmark is at {b}, older than the required {required}"
                ),
            );
        }
        // The state at b: latest committed row per key with id <= b.
        let mut state: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
        for (id, key, _, deleted, at) in committed {
            if *id <= b && *at <= mark.at_ns && in_range(key) {
                state.insert(key, (*id, *deleted));
            }
        }
        let expected: BTreeMap<&str, i64> = state
            .into_iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(k, (id, _))| (k, id))
            .collect();
        let mut got: BTreeMap<&str, i64> = BTreeMap::new();
        for e in &w.events[..end] {
            if e.kind != EventType::Added {
                fire(
                    e.at_ns,
                    format!("{:?} event among the initial events", e.kind),
                );
            }
            if got.insert(e.key.as_str(), e.resource_version).is_some() {
                fire(e.at_ns, format!("initial events repeat {}", e.key));
            }
        }
        if got != expected {
            let missing = expected.iter().find(|(k, v)| got.get(*k) != Some(v));
            let extra = got.iter().find(|(k, v)| expected.get(*k) != Some(v));
            fire(
                mark.at_ns,
                format!(
                    "initial events hold {} objects, the state at {b} has {}{}{}",
                    got.len(),
                    expected.len(),
                    missing
                        .map(|(k, v)| format!("; missing {k} at {v}"))
                        .unwrap_or_default(),
                    extra
                        .map(|(k, v)| format!("; unexpected {k} at {v}"))
                        .unwrap_or_default()
                ),
            );
        }
        start = b;
        events = &w.events[end + 1..];
    }
    // After the start: strictly newer, ordered, of the right type, none missing.
    let mut last = start;
    let mut delivered: Vec<i64> = Vec::new();
    for e in events {
        if e.initial_events_end {
            continue;
        }
        if e.resource_version < last
            || (e.kind != EventType::Bookmark && e.resource_version == last)
        {
            fire(
                e.at_ns,
                format!(
                    "{:?} {} at {} after {last}: not newer",
                    e.kind, e.key, e.resource_version
                ),
            );
        }
        last = last.max(e.resource_version);
        if e.kind == EventType::Bookmark {
            continue;
        }
        delivered.push(e.resource_version);
        match committed.binary_search_by_key(&e.resource_version, |c| c.0) {
            Ok(i) => {
                let (_, key, created, deleted, _) = committed[i];
                let kind = if deleted {
                    EventType::Deleted
                } else if created {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                if key != e.key || kind != e.kind {
                    fire(
                        e.at_ns,
                        format!(
                            "{:?} {} at {}, but the log has {kind:?} {key} there",
                            e.kind, e.key, e.resource_version
                        ),
                    );
                }
            }
            Err(_) => fire(
                e.at_ns,
                format!(
                    "{:?} {} at {}: no such committed row",
                    e.kind, e.key, e.resource_version
                ),
            ),
        }
    }
    let missing = committed
        .iter()
        .filter(|c| c.0 > start && c.0 <= last && in_range(c.1))
        .find(|c| delivered.binary_search(&c.0).is_err());
    if let Some((id, key, ..)) = missing {
        fire(
            w.events.last().map_or(w.opened_ns, |e| e.at_ns),
            format!("skipped {key} at {id} although the stream reached {last}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::{ApiWatchEnd, ApiWatchEvent};
    use store::apiserver::{ACCEPT_JSON, ACCEPT_TABLE};

    /// widgets a (2), b (3), a modified (4), b deleted (5), c (6).
    fn log() -> History {
        let mut h = history();
        for (id, key, created, deleted) in [
            (2, "/registry/widgets/ns/a", true, false),
            (3, "/registry/widgets/ns/b", true, false),
            (4, "/registry/widgets/ns/a", false, false),
            (5, "/registry/widgets/ns/b", false, true),
            (6, "/registry/widgets/ns/c", true, false),
        ] {
            store(
                &mut h,
                id as f64,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: key.into(),
                    created,
                    deleted,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
        h
    }

    fn watch_list(rv: Option<i64>, accept: &str) -> WatchRequest {
        WatchRequest {
            resource: "widgets".into(),
            resource_version: rv,
            send_initial_events: true,
            resource_version_match: Some("NotOlderThan".into()),
            allow_watch_bookmarks: true,
            accept: vec![accept.into()],
            ..Default::default()
        }
    }

    fn ev(kind: EventType, key: &str, rv: i64, end: bool) -> ApiWatchEvent {
        ApiWatchEvent {
            at_ns: 10_000_000_000,
            kind,
            key: if key.is_empty() {
                String::new()
            } else {
                format!("/registry/widgets/ns/{key}")
            },
            resource_version: rv,
            initial_events_end: end,
        }
    }

    fn session(
        h: &mut History,
        request: WatchRequest,
        events: Vec<ApiWatchEvent>,
        refused: Option<u16>,
    ) {
        let id = h.api_watches.len() as u64;
        h.api_watches.push(ApiWatch {
            id,
            client: "controller-1".into(),
            server: "kine-1".into(),
            request,
            opened_ns: 4_500_000_000,
            events,
            end: refused.map(|code| ApiWatchEnd {
                at_ns: 4_600_000_000,
                code: Some(code),
                reason: "refused".into(),
            }),
        });
    }

    #[test]
    fn a_correct_watch_list_and_refusals_pass() {
        let mut h = log();
        // Opened at 4.5 s: state at 4 is a@4, b@3.
        session(
            &mut h,
            watch_list(None, ACCEPT_JSON),
            vec![
                ev(EventType::Added, "a", 4, false),
                ev(EventType::Added, "b", 3, false),
                ev(EventType::Bookmark, "", 4, true),
                ev(EventType::Deleted, "b", 5, false),
                ev(EventType::Added, "c", 6, false),
                ev(EventType::Bookmark, "", 6, false),
            ],
            None,
        );
        session(&mut h, watch_list(None, ACCEPT_TABLE), vec![], Some(406));
        let mut bad = watch_list(Some(3), ACCEPT_JSON);
        bad.resource_version_match = None;
        session(&mut h, bad, vec![], Some(422));
        let r = WatchList.check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_table_only_watch_list_that_is_served_fires() {
        let mut h = log();
        session(
            &mut h,
            watch_list(Some(6), ACCEPT_TABLE),
            vec![ev(EventType::Added, "a", 4, false)],
            None,
        );
        assert_fires(&WatchList.check(&h), "instead of refused with 406");
    }

    #[test]
    fn wrong_initial_state_early_bookmark_or_a_skipped_event_fire() {
        let mut h = log();
        session(
            &mut h,
            watch_list(Some(4), ACCEPT_JSON),
            vec![
                ev(EventType::Added, "a", 4, false),
                ev(EventType::Bookmark, "", 4, true),
            ],
            None,
        );
        assert_fires(&WatchList.check(&h), "missing /registry/widgets/ns/b at 3");
        let mut h = log();
        session(
            &mut h,
            watch_list(Some(5), ACCEPT_JSON),
            vec![
                ev(EventType::Added, "a", 4, false),
                ev(EventType::Added, "b", 3, false),
                ev(EventType::Bookmark, "", 4, true),
            ],
            None,
        );
        assert_fires(&WatchList.check(&h), "older than the required 5");
        let mut h = log();
        session(
            &mut h,
            WatchRequest {
                resource: "widgets".into(),
                resource_version: Some(4),
                allow_watch_bookmarks: true,
                ..Default::default()
            },
            vec![ev(EventType::Added, "c", 6, false)],
            None,
        );
        assert_fires(&WatchList.check(&h), "skipped /registry/widgets/ns/b at 5");
    }
}

//! list-continuation: every page of a List is exactly what the store held at its revision.
//!
//! The state at revision R is rebuilt from the rows the database committed. A page must hold
//! the first `limit` live keys of `[start, end)` at R in ascending key order, say `more` exactly
//! when keys remain, and count every key from its start key on. Pages continued at the first
//! page's revision therefore neither repeat nor skip a key.

use super::{CheckReport, Checker, DbTimeline, Violations};
use crate::history::{ChunkedList, History, OpResult, Outcome, PageAnswer, Request, SimNanos};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub struct ListContinuation;

/// Every committed row per key: (revision, deleted, commit time), ascending by revision.
type KeyRows<'a> = BTreeMap<&'a str, Vec<(i64, bool, SimNanos)>>;

fn key_histories(h: &History) -> KeyRows<'_> {
    let mut keys: KeyRows<'_> = BTreeMap::new();
    for (at, _, e) in h.store_events() {
        if let StoreEvent::DbInsert {
            id, key, deleted, ..
        } = e
        {
            keys.entry(key.as_str())
                .or_default()
                .push((*id, *deleted, at));
        }
    }
    for rows in keys.values_mut() {
        rows.sort();
    }
    keys
}

/// Live keys of `[start, end)` at revision `at` among the rows committed by `by_ns`, ascending,
/// with their mod revisions. (With a mysql-like database a row can commit after a higher id
/// already has, so what revision `at` holds depends on when it is read.)
fn state_at<'a>(
    keys: &KeyRows<'a>,
    start: &str,
    end: &str,
    at: i64,
    by_ns: SimNanos,
) -> Vec<(&'a str, i64)> {
    keys.range::<str, _>((
        std::ops::Bound::Included(start),
        std::ops::Bound::Excluded(end),
    ))
    .filter_map(|(k, rows)| {
        let last = rows
            .iter()
            .rev()
            .find(|(id, _, t)| *id <= at && *t <= by_ns)?;
        (!last.1).then_some((*k, last.0))
    })
    .collect()
}

/// What is wrong with one answered page (its rows and `more`) against the state `expected` it
/// should show.
fn judge_page(
    expected: &[(&str, i64)],
    at: i64,
    limit: i64,
    (got, more): (&[(&str, i64)], bool),
) -> Vec<String> {
    let page_len = if limit > 0 {
        (limit as usize).min(expected.len())
    } else {
        expected.len()
    };
    let page = &expected[..page_len];
    let mut problems = Vec::new();
    if let Some(w) = got.windows(2).find(|w| w[0].0 >= w[1].0) {
        problems.push(format!("keys out of order ({} then {})", w[0].0, w[1].0));
    }
    if got != page {
        let missing = page.iter().find(|p| !got.contains(p));
        let extra = got.iter().find(|g| !page.contains(g));
        problems.push(format!(
            "{} keys where the state at {at} gives {}{}{}",
            got.len(),
            page.len(),
            missing
                .map(|m| format!("; missing {} (rev {})", m.0, m.1))
                .unwrap_or_default(),
            extra
                .map(|x| format!("; unexpected {} (rev {})", x.0, x.1))
                .unwrap_or_default(),
        ));
    }
    let should_have_more = limit > 0 && expected.len() > page_len;
    if more != should_have_more {
        problems.push(format!("more = {more}, expected {should_have_more}"));
    }
    problems
}

/// What is wrong with a page's count against the state `expected` at its revision.
fn judge_count(expected: &[(&str, i64)], count: i64) -> Option<String> {
    (count != expected.len() as i64).then(|| {
        format!(
            "count {count}, but {} keys lie from the start key on",
            expected.len()
        )
    })
}

impl Checker for ListContinuation {
    fn name(&self) -> &'static str {
        "list-continuation"
    }

    fn meaning(&self) -> &'static str {
        "each List page (etcd or apiserver) holds exactly the first keys of its range at its revision, ascending, with correct more/count/remainingItemCount and tokens; a 410 comes only for a compacted revision, with an rv=-1 token, and the list continues at a newer revision without repeats"
    }

    fn check(&self, h: &History) -> CheckReport {
        if h.params.live {
            return CheckReport::not_applicable(
                self.name(),
                "live run: pages are judged against the rows the store committed, which are unknown from outside (linearizable judges every List answer against the writes), and there is no apiserver facade",
            );
        }
        let keys = key_histories(h);
        let mut commits: Vec<SimNanos> = keys.values().flatten().map(|r| r.2).collect();
        commits.sort_unstable();
        let mut out = Violations::new();
        let mut pages = 0;
        for o in &h.ops {
            let Request::List {
                start,
                end,
                limit,
                revision,
                count_only: false,
                keys_only: false,
                ..
            } = &o.request
            else {
                continue;
            };
            let Outcome::Ok {
                header_revision,
                result: OpResult::Read { kvs, more, count },
            } = &o.outcome
            else {
                continue;
            };
            let at = if *revision > 0 {
                *revision
            } else {
                *header_revision
            };
            pages += 1;
            if !out.wants(o.complete_ns) {
                // Judged only to be counted: the report already holds earlier violations.
                let window = instants(&commits, o.invoke_ns, o.complete_ns);
                let state = |by| state_at(&keys, start, end, at, by);
                let got: Vec<(&str, i64)> = kvs
                    .iter()
                    .map(|kv| (kv.key.as_str(), kv.mod_revision))
                    .collect();
                let bad = !at_some_instant(&window, |by| {
                    judge_page(&state(by), at, *limit, (&got, *more))
                })
                .is_empty()
                    || !at_some_instant(&window, |by| {
                        judge_count(&state(by), *count).into_iter().collect()
                    })
                    .is_empty();
                if bad {
                    out.fire(o.complete_ns, String::new);
                }
                continue;
            }
            let got: Vec<(&str, i64)> = kvs
                .iter()
                .map(|kv| (kv.key.as_str(), kv.mod_revision))
                .collect();
            // The read ran between invoke and completion: its rows (with `more`) must match the
            // state as of one commit in that window. kine counts in a second query, which may
            // see a later instant of the same window.
            let window = instants(&commits, o.invoke_ns, o.complete_ns);
            let state = |by| state_at(&keys, start, end, at, by);
            let mut problems = at_some_instant(&window, |by| {
                judge_page(&state(by), at, *limit, (&got, *more))
            });
            problems.extend(at_some_instant(&window, |by| {
                judge_count(&state(by), *count).into_iter().collect()
            }));
            if !problems.is_empty() {
                out.fire(o.complete_ns, || {
                    format!(
                        "op#{} by {}: list of [{}, {}) limit {limit} at revision {at}: {}",
                        o.id,
                        o.client,
                        start.escape_debug(),
                        end.escape_debug(),
                        problems.join("; ")
                    )
                });
            }
        }
        let db = DbTimeline::of(h);
        let mut api_pages = 0;
        for list in &h.lists {
            api_pages += list.pages.len() as u64;
            check_chunked(list, &keys, &commits, &db, &mut out);
        }
        CheckReport::judged(
            self.name(),
            out,
            vec![("etcd pages", pages), ("apiserver pages", api_pages)],
            "no list page was answered in this run",
        )
    }
}

/// Instants a read between `invoke` and `complete` may have run at: each commit in between, and
/// the ends.
fn instants(commits: &[SimNanos], invoke: SimNanos, complete: SimNanos) -> Vec<SimNanos> {
    let mut out = vec![complete, invoke];
    let from = commits.partition_point(|t| *t <= invoke);
    let to = commits.partition_point(|t| *t <= complete);
    out.extend(commits[from..to].iter().copied());
    out
}

/// The problems `judge` finds at the first instant, unless some instant finds none.
fn at_some_instant(instants: &[SimNanos], judge: impl Fn(SimNanos) -> Vec<String>) -> Vec<String> {
    let mut first = None;
    for &by in instants {
        let problems = judge(by);
        if problems.is_empty() {
            return problems;
        }
        first.get_or_insert(problems);
    }
    first.unwrap_or_default()
}

/// One chunked LIST through the apiserver: each page against the state at its resource
/// version from its token's start key, `remainingItemCount`, the tokens it hands out, the 410
/// path, and the conformance flow's window and totals.
fn check_chunked(
    list: &ChunkedList,
    keys: &KeyRows<'_>,
    commits: &[SimNanos],
    db: &DbTimeline,
    out: &mut Violations,
) {
    let first_token = list.pages.iter().find_map(|p| p.continue_token.as_deref());
    // The list's key prefix: what the first page's start was (a namespace or the resource).
    let prefix = match list.pages.iter().find_map(|p| match &p.answer {
        PageAnswer::Page { items, .. } if p.continue_token.is_none() => items.first().cloned(),
        _ => None,
    }) {
        Some((key, _)) if list.conformance_window_ns.is_some() => {
            key.rsplit_once('/').map(|(ns, _)| format!("{ns}/"))
        }
        _ => Some(store::apiserver::resource_prefix(&list.resource)),
    };
    let Some(prefix) = prefix else { return };
    let end = String::from_utf8_lossy(&store::apiserver::prefix_end(&prefix)).into_owned();
    let mut fire = |at_ns: SimNanos, what: String| {
        out.fire(at_ns, || {
            format!(
                "list#{} by {} ({} limit {}): {what}",
                list.id, list.client, list.resource, list.limit
            )
        })
    };
    // The rv of the pages before the latest 410, which the next page's revision must differ from.
    let mut expired_rv: Option<i64> = None;
    let mut got_410_at: Option<SimNanos> = None;
    let mut first_page_at: Option<SimNanos> = None;
    let mut seen: Vec<String> = Vec::new();
    for (n, page) in list.pages.iter().enumerate() {
        let n = n + 1;
        let (start, token_rv) = match &page.continue_token {
            None => (prefix.clone(), None),
            Some(t) => match store::apiserver::decode_continue(&prefix, t) {
                Ok((start, rv)) => (start, Some(rv)),
                Err(e) => {
                    fire(
                        page.complete_ns,
                        format!("page {n} sent an unreadable token: {e}"),
                    );
                    continue;
                }
            },
        };
        match &page.answer {
            PageAnswer::Page {
                items,
                resource_version: rv,
                continue_token,
                remaining_item_count,
            } => {
                if token_rv.is_none() {
                    first_page_at.get_or_insert(page.complete_ns);
                }
                match token_rv {
                    Some(t) if t > 0 && *rv != t => fire(
                        page.complete_ns,
                        format!("page {n} came at resource version {rv}, not its token's {t}"),
                    ),
                    Some(-1) => {
                        if expired_rv.is_some_and(|old| *rv <= old) {
                            fire(
                                page.complete_ns,
                                format!(
                                    "page {n}, continued after 410 Expired, came at resource version {rv}, not newer than the expired {}",
                                    expired_rv.unwrap_or(0)
                                ),
                            );
                        }
                        expired_rv = None;
                    }
                    _ => {}
                }
                let got: Vec<(&str, i64)> = items.iter().map(|(k, r)| (k.as_str(), *r)).collect();
                let more = continue_token.is_some();
                let window = instants(commits, page.invoke_ns, page.complete_ns);
                let state = |by| state_at(keys, &start, &end, *rv, by);
                let problems = at_some_instant(&window, |by| {
                    judge_page(&state(by), *rv, list.limit, (&got, more))
                });
                if !problems.is_empty() {
                    fire(
                        page.complete_ns,
                        format!(
                            "page {n} from {} at {rv}: {}",
                            start.escape_debug(),
                            problems.join("; ")
                        ),
                    );
                }
                // remainingItemCount: the items after this page, present exactly with a token.
                let remaining = at_some_instant(&window, |by| {
                    let after = state(by).len().saturating_sub(got.len()) as i64;
                    let ok = match remaining_item_count {
                        Some(r) => more && *r == after,
                        None => !more,
                    };
                    if ok {
                        vec![]
                    } else {
                        vec![format!("{after} items follow")]
                    }
                });
                if let Some(why) = remaining.first() {
                    fire(
                        page.complete_ns,
                        format!(
                            "page {n} at {rv}: remainingItemCount {remaining_item_count:?} does not count the items after it ({why})"
                        ),
                    );
                }
                if let (Some(t), Some(last)) = (continue_token, items.last()) {
                    match store::apiserver::decode_continue(&prefix, t) {
                        Ok((next, trv)) if next == format!("{}\0", last.0) && trv == *rv => {}
                        other => fire(
                            page.complete_ns,
                            format!(
                                "page {n} handed out a token for {other:?}, not for after {} at {rv}",
                                last.0
                            ),
                        ),
                    }
                }
                // Pages of one list, however continued, never repeat a key.
                if list.conformance_window_ns.is_none()
                    || got_410_at.is_some()
                    || token_rv.is_none()
                {
                    for (k, _) in items {
                        if seen.last().is_some_and(|l| l >= k) {
                            fire(
                                page.complete_ns,
                                format!("page {n} repeats or goes back to {k}"),
                            );
                            break;
                        }
                        seen.push(k.clone());
                    }
                }
            }
            PageAnswer::Status {
                code: 410,
                continue_token,
                ..
            } => {
                got_410_at.get_or_insert(page.complete_ns);
                let Some(rv) = token_rv else {
                    fire(
                        page.complete_ns,
                        format!("page {n}: 410 Expired for a first page"),
                    );
                    continue;
                };
                let compacted = db.compact_at_any(page.complete_ns);
                if rv >= compacted || rv < 0 {
                    fire(
                        page.complete_ns,
                        format!(
                            "page {n}: 410 Expired for resource version {rv}, but the compact revision was {compacted}"
                        ),
                    );
                }
                expired_rv = Some(rv);
                match continue_token
                    .as_deref()
                    .map(|t| store::apiserver::decode_continue(&prefix, t))
                {
                    Some(Ok((next, -1))) if next == start => {}
                    other => fire(
                        page.complete_ns,
                        format!(
                            "page {n}: the 410's token should continue from {} at rv -1, got {other:?}",
                            start.escape_debug()
                        ),
                    ),
                }
            }
            PageAnswer::Status { code, reason, .. } if *code < 500 => fire(
                page.complete_ns,
                format!("page {n} with a well-formed token refused: {code} {reason}"),
            ),
            _ => {}
        }
    }
    let Some(window) = list.conformance_window_ns else {
        return;
    };
    match (first_page_at, got_410_at) {
        (Some(first), None) if list.abandoned.is_some() => fire(
            first + window,
            format!(
                "no 410 Expired arrived within the {} s window: page 2 was retried {} times with the first page's token{} (compact revision by then: {})",
                window / 1_000_000_000,
                list.pages.len().saturating_sub(1),
                first_token
                    .and_then(|t| store::apiserver::decode_continue(&prefix, t).ok())
                    .map(|(_, rv)| format!(" at resource version {rv}"))
                    .unwrap_or_default(),
                db.compact_at_any(first + window)
            ),
        ),
        (Some(first), Some(at)) if at > first + window => fire(
            at,
            format!("the 410 Expired came {} s after the first page, past the window", (at - first) / 1_000_000_000),
        ),
        _ => {}
    }
    if let (Some(total), None, Some(_)) = (list.expected_total, &list.abandoned, got_410_at) {
        if seen.len() != total {
            fire(
                list.pages.last().map_or(0, |p| p.complete_ns),
                format!("the pages hold {} objects in all, not {total}", seen.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;

    /// /r/a at 2, /r/b at 3, /r/c at 4, /r/b deleted at 5.
    fn log() -> History {
        let mut h = history();
        for (id, key, deleted) in [
            (2, "/r/a", false),
            (3, "/r/b", false),
            (4, "/r/c", false),
            (5, "/r/b", true),
        ] {
            store(
                &mut h,
                id as f64,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: key.into(),
                    created: !deleted,
                    deleted,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
        h
    }

    /// Records a List op answered with `kvs` and (more, count).
    fn list(
        h: &mut History,
        start: &str,
        (limit, revision): (i64, i64),
        header: i64,
        kvs: Vec<(&str, i64)>,
        (more, count): (bool, i64),
    ) {
        let mut outcome = read_ok(header, kvs);
        if let Outcome::Ok {
            result: OpResult::Read {
                more: m, count: c, ..
            },
            ..
        } = &mut outcome
        {
            *m = more;
            *c = count;
        }
        let req = Request::List {
            start: start.into(),
            end: "/r0".into(),
            limit,
            revision,
            serializable: false,
            count_only: false,
            keys_only: false,
        };
        op(h, "c1", 10.0, 10.1, req, outcome);
    }

    #[test]
    fn exact_pages_pass() {
        let mut h = log();
        list(
            &mut h,
            "/r/",
            (2, 0),
            4,
            vec![("/r/a", 2), ("/r/b", 3)],
            (true, 3),
        );
        list(&mut h, "/r/b\0", (2, 4), 6, vec![("/r/c", 4)], (false, 1));
        list(
            &mut h,
            "/r/",
            (0, 0),
            5,
            vec![("/r/a", 2), ("/r/c", 4)],
            (false, 2),
        );
        let r = ListContinuation.check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_repeated_key_on_the_next_page_fires() {
        let mut h = log();
        list(
            &mut h,
            "/r/b\0",
            (2, 4),
            6,
            vec![("/r/b", 3), ("/r/c", 4)],
            (false, 2),
        );
        assert_fires(&ListContinuation.check(&h), "unexpected /r/b");
    }

    #[test]
    fn pages_sorted_by_revision_or_counting_the_whole_prefix_fire() {
        let mut h = log();
        list(
            &mut h,
            "/r/",
            (0, 4),
            6,
            vec![("/r/c", 4), ("/r/a", 2), ("/r/b", 3)],
            (false, 3),
        );
        assert_fires(&ListContinuation.check(&h), "keys out of order");
        let mut h = log();
        list(&mut h, "/r/b\0", (2, 4), 6, vec![("/r/c", 4)], (false, 3));
        assert_fires(
            &ListContinuation.check(&h),
            "count 3, but 1 keys lie from the start key on",
        );
    }

    #[test]
    fn a_row_committing_after_a_higher_id_counts_only_once_committed() {
        // mysql-like: id 7 commits at 9 s, id 6 only at 11 s.
        let mut h = log();
        for (id, key, at) in [(7, "/r/e", 9.0), (6, "/r/d", 11.0)] {
            store(
                &mut h,
                at,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: key.into(),
                    created: true,
                    deleted: false,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
        // Read at 10 s: revision 7 without /r/d is what the database held then.
        list(
            &mut h,
            "/r/",
            (0, 0),
            7,
            vec![("/r/a", 2), ("/r/c", 4), ("/r/e", 7)],
            (false, 3),
        );
        let r = ListContinuation.check(&h);
        assert!(r.passed(), "{:?}", r.violations);
        // The same answer after 11 s misses a committed row.
        let req = h.ops[0].request.clone();
        let outcome = h.ops[0].outcome.clone();
        op(&mut h, "c2", 12.0, 12.1, req, outcome);
        assert_fires(&ListContinuation.check(&h), "missing /r/d (rev 6)");
    }

    use crate::history::ListPage;

    const SEED: &str = "/registry/widgets/seed/";

    /// seed/a..d at 2..5, an unrelated row at 6, compacted to 6 at 8 s.
    fn seeded() -> History {
        let mut h = history();
        for (id, key) in [
            (2, "a"),
            (3, "b"),
            (4, "c"),
            (5, "d"),
            (6, "/registry/leases/x"),
        ] {
            let key = if key.starts_with('/') {
                key.to_string()
            } else {
                format!("{SEED}{key}")
            };
            store(
                &mut h,
                id as f64,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key,
                    created: true,
                    deleted: false,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
        db_compact(&mut h, 8.0, (0, 6), true, (6, 6));
        h
    }

    fn page(at_s: f64, token: Option<String>, answer: PageAnswer) -> ListPage {
        ListPage {
            server: "kine-1".into(),
            invoke_ns: (at_s * 1e9) as u64,
            complete_ns: (at_s * 1e9) as u64 + 1_000_000,
            continue_token: token,
            answer,
        }
    }

    fn items(keys: &[(&str, i64)]) -> Vec<(String, i64)> {
        keys.iter()
            .map(|(k, r)| (format!("{SEED}{k}"), *r))
            .collect()
    }

    fn token(last: &str, rv: i64) -> String {
        store::apiserver::encode_continue(SEED, &format!("{SEED}{last}"), rv)
    }

    /// The conformance flow: page 1 at 5, page 2 expired after the compaction, the rest at
    /// `rest_rv` holding `rest`.
    fn conformance(expired_at_s: f64, rest_rv: i64, rest: &[(&str, i64)]) -> History {
        let mut h = seeded();
        h.lists.push(ChunkedList {
            id: 0,
            client: "controller-1".into(),
            resource: "widgets".into(),
            limit: 2,
            conformance_window_ns: Some(600_000_000_000),
            expected_total: Some(4),
            pages: vec![
                page(
                    5.5,
                    None,
                    PageAnswer::Page {
                        items: items(&[("a", 2), ("b", 3)]),
                        resource_version: 5,
                        continue_token: Some(token("b", 5)),
                        remaining_item_count: Some(2),
                    },
                ),
                page(
                    expired_at_s,
                    Some(token("b", 5)),
                    PageAnswer::Status {
                        code: 410,
                        reason: "Expired".into(),
                        continue_token: Some(token("b", -1)),
                    },
                ),
                page(
                    9.5,
                    Some(token("b", -1)),
                    PageAnswer::Page {
                        items: items(rest),
                        resource_version: rest_rv,
                        continue_token: None,
                        remaining_item_count: None,
                    },
                ),
            ],
            abandoned: None,
        });
        h
    }

    #[test]
    fn a_list_continued_through_410_at_a_new_revision_passes() {
        let h = conformance(9.0, 6, &[("c", 4), ("d", 5)]);
        let r = ListContinuation.check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_410_before_compaction_a_stale_revision_or_a_repeat_fire() {
        let h = conformance(7.0, 6, &[("c", 4), ("d", 5)]);
        assert_fires(
            &ListContinuation.check(&h),
            "but the compact revision was 0",
        );
        let h = conformance(9.0, 5, &[("c", 4), ("d", 5)]);
        assert_fires(&ListContinuation.check(&h), "not newer than the expired 5");
        let h = conformance(9.0, 6, &[("b", 3), ("c", 4)]);
        assert_fires(
            &ListContinuation.check(&h),
            "unexpected /registry/widgets/seed/b",
        );
    }

    /// On the etcd topology the apiserver's etcd client may reach any member: a 410 is right
    /// once some member applied a compaction past the token's revision, wrong before.
    #[test]
    fn an_etcd_410_is_judged_against_the_members_compactions() {
        let mut h = conformance(9.0, 6, &[("c", 4), ("d", 5)]);
        h.events.retain(|e| {
            !matches!(
                e.kind,
                crate::history::EventKind::Store {
                    event: StoreEvent::DbCompact { .. }
                }
            )
        });
        assert_fires(
            &ListContinuation.check(&h),
            "but the compact revision was 0",
        );
        store(
            &mut h,
            8.0,
            "server-2",
            StoreEvent::MemberCompaction {
                revision: 6,
                phase: "scheduled".into(),
            },
        );
        let r = ListContinuation.check(&h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn a_conformance_run_without_410_in_its_window_fires() {
        let mut h = conformance(9.0, 6, &[("c", 4), ("d", 5)]);
        let list = &mut h.lists[0];
        list.pages.truncate(1);
        list.abandoned = Some("no 410 Expired within 600 s".into());
        assert_fires(
            &ListContinuation.check(&h),
            "no 410 Expired arrived within the 600 s window",
        );
    }
}

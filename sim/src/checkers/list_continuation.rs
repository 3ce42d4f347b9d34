//! list-continuation: every page of a List is exactly what the store held at its revision.
//!
//! The state at revision R is rebuilt from the rows the database committed. A page must hold
//! the first `limit` live keys of `[start, end)` at R in ascending key order, say `more` exactly
//! when keys remain, and count every key from its start key on. Pages continued at the first
//! page's revision therefore neither repeat nor skip a key.

use super::{CheckReport, Checker, Violation};
use crate::history::{History, OpResult, Outcome, Request};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub struct ListContinuation;

/// Every committed row per key: (revision, deleted), ascending.
fn key_histories(h: &History) -> BTreeMap<&str, Vec<(i64, bool)>> {
    let mut keys: BTreeMap<&str, Vec<(i64, bool)>> = BTreeMap::new();
    for (_, _, e) in h.store_events() {
        if let StoreEvent::DbInsert {
            id, key, deleted, ..
        } = e
        {
            keys.entry(key.as_str()).or_default().push((*id, *deleted));
        }
    }
    for rows in keys.values_mut() {
        rows.sort();
    }
    keys
}

/// Live keys of `[start, end)` at revision `at`, ascending, with their mod revisions.
fn state_at<'a>(
    keys: &BTreeMap<&'a str, Vec<(i64, bool)>>,
    start: &str,
    end: &str,
    at: i64,
) -> Vec<(&'a str, i64)> {
    keys.range::<str, _>((
        std::ops::Bound::Included(start),
        std::ops::Bound::Excluded(end),
    ))
    .filter_map(|(k, rows)| {
        let i = rows.partition_point(|(id, _)| *id <= at);
        (i > 0 && !rows[i - 1].1).then(|| (*k, rows[i - 1].0))
    })
    .collect()
}

impl Checker for ListContinuation {
    fn name(&self) -> &'static str {
        "list-continuation"
    }

    fn meaning(&self) -> &'static str {
        "each List page holds exactly the first keys of its range at its revision, ascending, with correct more and count, so continued pages neither repeat nor skip"
    }

    fn check(&self, h: &History) -> CheckReport {
        let keys = key_histories(h);
        let mut out = Vec::new();
        for o in &h.ops {
            let Request::List {
                start,
                end,
                limit,
                revision,
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
            let expected = state_at(&keys, start, end, at);
            let page_len = if *limit > 0 {
                (*limit as usize).min(expected.len())
            } else {
                expected.len()
            };
            let page = &expected[..page_len];
            let got: Vec<(&str, i64)> = kvs
                .iter()
                .map(|kv| (kv.key.as_str(), kv.mod_revision))
                .collect();
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
            let should_have_more = *limit > 0 && expected.len() > page_len;
            if *more != should_have_more {
                problems.push(format!("more = {more}, expected {should_have_more}"));
            }
            if *count != expected.len() as i64 {
                problems.push(format!(
                    "count {count}, but {} keys lie from the start key on",
                    expected.len()
                ));
            }
            if !problems.is_empty() {
                out.push(Violation {
                    at_ns: o.complete_ns,
                    message: format!(
                        "op#{} by {}: list of [{}, {}) limit {limit} at revision {at}: {}",
                        o.id,
                        o.client,
                        start.escape_debug(),
                        end.escape_debug(),
                        problems.join("; ")
                    ),
                });
            }
        }
        CheckReport::new(self.name(), out)
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
}

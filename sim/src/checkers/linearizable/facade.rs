//! The apiserver facade's answers, judged as the etcd API's are. Controllers' requests are
//! recorded as operations on their `/registry` keys (`History::api_ops`) and merged with the
//! etcd API's by invoke time, so the same per-key chains judge both: their writes join the
//! chains, each GET and LIST page must be exactly the state at the revision it was served at.
//! Here, what Kubernetes promises of a read's revision (SEMANTICS.md section 3): a consistent
//! read at least as new as every write acknowledged before it was sent (judged with the etcd
//! API's in `real_time`), `NotOlderThan` R at R or above, `Exact` R at R; "0" (any) and pages
//! continued from a token (the list-continuation check's) are not judged for freshness.

use super::explain::op_line;
use super::model::Model;
use crate::checkers::Violations;
use crate::history::{Freshness, History, Operation, Outcome, Request};

/// A history whose operations are the etcd API's and the facade's merged by invoke time (the
/// etcd API's first on ties), and what the facade promised of each of its own; `None` when no
/// request went through the facade.
pub(super) fn merged(h: &History) -> Option<(History, Vec<Option<Freshness>>)> {
    if h.api_ops.is_empty() {
        return None;
    }
    let mut all: Vec<(u64, usize, Option<Freshness>, &Operation)> =
        Vec::with_capacity(h.ops.len() + h.api_ops.len());
    all.extend(h.ops.iter().map(|o| (o.invoke_ns, 0, None, o)));
    all.extend(
        h.api_ops
            .iter()
            .map(|a| (a.op.invoke_ns, 1, Some(a.read), &a.op)),
    );
    // Stable: each list is in invoke order already.
    all.sort_by_key(|&(t, from, _, _)| (t, from));
    let marks = all.iter().map(|a| a.2).collect();
    let ops = all.into_iter().map(|a| a.3.clone()).collect();
    let merged = History {
        params: h.params.clone(),
        ops,
        ..Default::default()
    };
    Some((merged, marks))
}

/// Whether `real_time` holds op `i` to "at least as new as everything known before it": the
/// etcd API's operations, the facade's writes, and its consistent LISTs (a GET carries no
/// revision of its own: `reads` judges it at the newest one known before it).
pub(super) fn judged_in_real_time(m: &Model, i: usize) -> bool {
    match m.facade(i) {
        None | Some(Freshness::Write) => true,
        Some(Freshness::Consistent) => matches!(m.ops[i].request, Request::List { .. }),
        Some(_) => false,
    }
}

/// `NotOlderThan` R answered below R, and `Exact` R answered at another revision.
pub(super) fn judge_freshness(m: &Model, out: &mut Violations) {
    for (i, o) in m.ops.iter().enumerate() {
        let Some(read) = m.facade(i) else { continue };
        let Outcome::Ok {
            header_revision: rv,
            ..
        } = o.outcome
        else {
            continue;
        };
        let wrong = match read {
            Freshness::NotOlderThan { rv: want } if rv < want => {
                format!("resourceVersionMatch=NotOlderThan {want}, but answered at resourceVersion {rv}, older")
            }
            Freshness::Exact { rv: want } if rv != want => {
                format!("resourceVersionMatch=Exact {want}, but answered at resourceVersion {rv}")
            }
            _ => continue,
        };
        out.fire(o.complete_ns, || {
            format!("{} through the apiserver asked for {wrong}", op_line(o))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::Linearizable;
    use crate::checkers::testutil::{history, S};
    use crate::checkers::{CheckReport, Checker};
    use crate::history::{
        ApiOperation, Freshness, History, Kv, OpResult, Operation, Outcome, Request,
    };

    const WIDGETS: &str = "/registry/widgets/";
    const END: &str = "/registry/widgets0";

    fn key(n: u32) -> String {
        format!("/registry/widgets/ns/w-{n}")
    }

    /// An etcd-topology history with the widgets prefix modelled.
    fn base() -> History {
        let mut h = history();
        h.params.topology = "etcd".into();
        h.params.workload_prefixes = vec![WIDGETS.into()];
        h
    }

    fn op(id: usize, at: (f64, f64), request: Request, outcome: Outcome) -> Operation {
        Operation {
            id: id as u64,
            client: "c".into(),
            server: "server-1".into(),
            invoke_ns: (at.0 * S as f64) as u64,
            complete_ns: (at.1 * S as f64) as u64,
            request,
            outcome,
        }
    }

    /// An operation through the etcd API.
    fn etcd(h: &mut History, at: (f64, f64), request: Request, outcome: Outcome) {
        let id = h.ops.len() + h.api_ops.len();
        h.ops.push(op(id, at, request, outcome));
    }

    /// A request through the apiserver facade.
    fn api(h: &mut History, at: (f64, f64), request: Request, outcome: Outcome, read: Freshness) {
        let id = h.ops.len() + h.api_ops.len();
        h.api_ops.push(ApiOperation {
            op: op(id, at, request, outcome),
            read,
        });
    }

    fn wrote(rev: i64) -> Outcome {
        Outcome::Ok {
            header_revision: rev,
            result: OpResult::Write {
                succeeded: true,
                current: None,
                responses: vec![],
            },
        }
    }

    fn create(k: u32, value: &str) -> Request {
        Request::Create {
            key: key(k),
            value: value.into(),
        }
    }

    /// An object as the facade returns it: no create revision, no version.
    fn object(k: u32, rv: i64, value: &str) -> Kv {
        Kv {
            key: key(k),
            create_revision: 0,
            mod_revision: rv,
            version: 0,
            value: value.into(),
        }
    }

    fn list(revision: i64) -> Request {
        Request::List {
            start: WIDGETS.into(),
            end: END.into(),
            limit: 0,
            revision,
            serializable: false,
            count_only: false,
            keys_only: false,
        }
    }

    fn page(rv: i64, items: Vec<Kv>) -> Outcome {
        let count = items.len() as i64;
        Outcome::Ok {
            header_revision: rv,
            result: OpResult::Read {
                kvs: items,
                more: false,
                count,
            },
        }
    }

    fn get(k: u32) -> Request {
        Request::Get {
            key: key(k),
            revision: 0,
            serializable: false,
        }
    }

    /// w-0 created at 2 through the etcd API, w-1 at 3 through the facade, both acknowledged
    /// by 4 s.
    fn written() -> History {
        let mut h = base();
        etcd(&mut h, (1.0, 2.0), create(0, "a"), wrote(2));
        api(
            &mut h,
            (3.0, 4.0),
            create(1, "b"),
            wrote(3),
            Freshness::Write,
        );
        h
    }

    fn check(h: &History) -> CheckReport {
        Linearizable.check(h)
    }

    fn fires(h: &History, needle: &str) {
        let r = check(h);
        assert!(
            r.violations.iter().any(|v| v.message.contains(needle)),
            "no violation mentions {needle:?}: {:#?}",
            r.violations
        );
    }

    fn passes(h: &History) {
        let r = check(h);
        assert!(r.passed(), "{:#?}", r.violations);
    }

    /// The state at 2 (w-0 only) and at 3 (both).
    fn at_2() -> Vec<Kv> {
        vec![object(0, 2, "a")]
    }

    fn at_3() -> Vec<Kv> {
        vec![object(0, 2, "a"), object(1, 3, "b")]
    }

    #[test]
    fn a_consistent_list_older_than_an_acknowledged_write_fires() {
        let mut h = written();
        api(
            &mut h,
            (5.0, 6.0),
            list(0),
            page(2, at_2()),
            Freshness::Consistent,
        );
        fires(&h, "a consistent read, was answered at resourceVersion 2");
        let mut h = written();
        api(
            &mut h,
            (5.0, 6.0),
            list(0),
            page(3, at_3()),
            Freshness::Consistent,
        );
        passes(&h);
        // A write acknowledged at the etcd API counts as much as one at the facade.
        let mut h = written();
        etcd(&mut h, (4.5, 4.8), create(2, "c"), wrote(4));
        api(
            &mut h,
            (5.0, 6.0),
            list(0),
            page(3, at_3()),
            Freshness::Consistent,
        );
        fires(&h, "a consistent read, was answered at resourceVersion 3");
    }

    #[test]
    fn a_page_must_hold_the_state_at_its_resource_version() {
        let mut h = written();
        api(&mut h, (5.0, 6.0), list(0), page(3, at_2()), Freshness::Any);
        fires(&h, "did not return /registry/widgets/ns/w-1");
        let mut h = written();
        let wrong = vec![object(0, 2, "a"), object(1, 3, "not b")];
        api(
            &mut h,
            (5.0, 6.0),
            list(0),
            page(3, wrong),
            Freshness::Consistent,
        );
        fires(&h, "value not b instead of b");
    }

    #[test]
    fn not_older_than_below_its_resource_version_fires() {
        let mut h = written();
        let read = Freshness::NotOlderThan { rv: 3 };
        api(&mut h, (5.0, 6.0), list(0), page(2, at_2()), read);
        fires(&h, "NotOlderThan 3, but answered at resourceVersion 2");
        let mut h = written();
        api(&mut h, (5.0, 6.0), list(0), page(3, at_3()), read);
        passes(&h);
        // Not older than 2 may be served at 2 even after 3 was acknowledged.
        let mut h = written();
        let read = Freshness::NotOlderThan { rv: 2 };
        api(&mut h, (5.0, 6.0), list(0), page(2, at_2()), read);
        passes(&h);
    }

    #[test]
    fn exact_at_another_revision_fires() {
        let mut h = written();
        let read = Freshness::Exact { rv: 2 };
        api(&mut h, (5.0, 6.0), list(2), page(3, at_2()), read);
        fires(&h, "Exact 2, but answered at resourceVersion 3");
        let mut h = written();
        api(&mut h, (5.0, 6.0), list(2), page(2, at_2()), read);
        passes(&h);
        // At 2, but holding what 3 holds.
        let mut h = written();
        api(&mut h, (5.0, 6.0), list(2), page(2, at_3()), read);
        fires(&h, "that version is newer than the revision served");
    }

    #[test]
    fn any_and_continued_pages_may_be_stale() {
        let mut h = written();
        api(&mut h, (5.0, 6.0), list(0), page(2, at_2()), Freshness::Any);
        passes(&h);
        let mut h = written();
        let read = Freshness::Continue { rv: 2 };
        api(&mut h, (5.0, 6.0), list(0), page(2, at_2()), read);
        passes(&h);
    }

    fn object_at(rv: i64, value: &str) -> Outcome {
        page(rv, vec![object(0, rv, value)])
    }

    fn not_found() -> Outcome {
        page(0, vec![])
    }

    /// w-0 created at 2 (etcd API), updated at 3 through the facade, acknowledged by 4 s.
    fn updated() -> History {
        let mut h = base();
        etcd(&mut h, (1.0, 2.0), create(0, "a"), wrote(2));
        let update = Request::Update {
            key: key(0),
            value: "a2".into(),
            expected_mod_revision: 2,
        };
        api(&mut h, (3.0, 4.0), update, wrote(3), Freshness::Write);
        h
    }

    #[test]
    fn a_get_older_than_an_acknowledged_write_fires() {
        let mut h = updated();
        api(
            &mut h,
            (5.0, 6.0),
            get(0),
            object_at(2, "a"),
            Freshness::Consistent,
        );
        fires(&h, "missed op#1");
        let mut h = updated();
        api(
            &mut h,
            (5.0, 6.0),
            get(0),
            object_at(3, "a2"),
            Freshness::Consistent,
        );
        passes(&h);
        // Sent before the update was acknowledged: either version.
        let mut h = updated();
        api(
            &mut h,
            (3.5, 6.0),
            get(0),
            object_at(2, "a"),
            Freshness::Consistent,
        );
        passes(&h);
    }

    #[test]
    fn a_get_not_found_needs_the_key_absent() {
        let mut h = updated();
        api(
            &mut h,
            (5.0, 6.0),
            get(0),
            not_found(),
            Freshness::Consistent,
        );
        fires(&h, "did not return /registry/widgets/ns/w-0");
        // Deleted at 4, sent before the GET completed.
        let mut h = updated();
        let delete = Request::Delete {
            key: key(0),
            expected_mod_revision: 3,
        };
        api(&mut h, (5.5, 7.0), delete, wrote(4), Freshness::Write);
        api(
            &mut h,
            (5.0, 6.0),
            get(0),
            not_found(),
            Freshness::Consistent,
        );
        h.api_ops.sort_by_key(|a| a.op.invoke_ns);
        passes(&h);
    }

    /// A 404 that only a delete of unknown outcome explains names no revision: that delete may
    /// commit after a LIST that still shows the key (kine-ha-partitions seed 27).
    #[test]
    fn a_get_not_found_after_an_undated_delete_leaves_the_delete_undated() {
        let mut h = updated();
        etcd(&mut h, (4.2, 4.4), create(1, "b"), wrote(4));
        let delete = Request::Delete {
            key: key(0),
            expected_mod_revision: 3,
        };
        let lost = Outcome::Unknown {
            error: "RPC timeout".into(),
        };
        api(&mut h, (4.5, 8.0), delete, lost, Freshness::Write);
        api(
            &mut h,
            (6.0, 7.0),
            get(0),
            not_found(),
            Freshness::Consistent,
        );
        let both = vec![object(0, 3, "a2"), object(1, 4, "b")];
        api(
            &mut h,
            (6.5, 7.5),
            list(0),
            page(4, both),
            Freshness::Consistent,
        );
        passes(&h);
    }

    #[test]
    fn a_facade_write_joins_the_chain() {
        let mut h = updated();
        // Expects the version the facade's update replaced.
        let stale = Request::Update {
            key: key(0),
            value: "a3".into(),
            expected_mod_revision: 2,
        };
        etcd(&mut h, (5.0, 6.0), stale, wrote(4));
        fires(
            &h,
            "its compare needed /registry/widgets/ns/w-0 at mod revision 2",
        );
    }
}

//! Checkers: each reads a recorded `History` and reports the properties it found broken.
//!
//! A checker never reaches into the cluster and never trusts the store's own opinion of what is
//! correct: it recomputes what must hold from what clients saw and what the database committed.
//! Violations carry the simulated time of the bad event and an explanation in domain terms.

mod compactor_continuity;
mod etcd_only_rejoin;
mod lease;
pub mod linearizable;
mod list_continuation;
mod member_durability;
mod rejoin_liveness;
mod revision_monotonic;
mod routing;
mod watch;
mod watchlist;

use crate::history::{History, SimNanos};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

pub use compactor_continuity::CompactorContinuity;
pub use etcd_only_rejoin::EtcdOnlyRejoin;
pub use lease::LeaseCheck;
pub use linearizable::Linearizable;
pub use list_continuation::ListContinuation;
pub use revision_monotonic::RevisionMonotonic;
pub use watch::WatchChecker;
pub use watchlist::WatchList;

/// Reports keep the earliest violations in full and only count the rest, so a broken design
/// costs about what a clean one does.
pub const MAX_VIOLATIONS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub at_ns: SimNanos,
    pub message: String,
}

/// Where a checker reports what it found broken. It keeps the `MAX_VIOLATIONS` earliest (by
/// simulated time) in full and counts every one; a message is only built when it is kept, so a
/// check that fires on every page of a long run stays cheap.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    /// The earliest violations, sorted by time (ties in the order reported).
    kept: Vec<Violation>,
    total: usize,
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a violation at `at_ns` would be kept in full: callers may skip building an
    /// expensive explanation when it would not.
    pub fn wants(&self, at_ns: SimNanos) -> bool {
        self.kept.len() < MAX_VIOLATIONS || self.kept.last().is_some_and(|v| at_ns < v.at_ns)
    }

    /// Records one violation; `message` runs only when the violation is kept in full.
    pub fn fire(&mut self, at_ns: SimNanos, message: impl FnOnce() -> String) {
        self.total += 1;
        if !self.wants(at_ns) {
            return;
        }
        let i = self.kept.partition_point(|v| v.at_ns <= at_ns);
        self.kept.insert(
            i,
            Violation {
                at_ns,
                message: message(),
            },
        );
        self.kept.truncate(MAX_VIOLATIONS);
    }

    /// The violations kept in full, earliest first.
    #[cfg(test)]
    pub fn kept(&self) -> &[Violation] {
        &self.kept
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod violations_tests {
    use super::*;

    #[test]
    fn only_the_earliest_are_kept_in_full_and_every_one_is_counted() {
        let mut v = Violations::new();
        let mut built = 0;
        // Reported late first, then early: the early ones must displace the late ones.
        for at in (0..1000u64).rev() {
            v.fire(at, || {
                built += 1;
                format!("v{at}")
            });
        }
        assert_eq!(v.total, 1000);
        let kept: Vec<u64> = v.kept().iter().map(|x| x.at_ns).collect();
        assert_eq!(kept, (0..MAX_VIOLATIONS as u64).collect::<Vec<_>>());
        // In time order, messages past the cap are never built.
        let mut w = Violations::new();
        let mut built_in_order = 0;
        for at in 0..100_000u64 {
            w.fire(at, || {
                built_in_order += 1;
                String::new()
            });
        }
        assert_eq!((w.total, built_in_order), (100_000, MAX_VIOLATIONS));
        assert!(!w.wants(500) && w.wants(3));
        assert!(built >= MAX_VIOLATIONS);
    }

    #[test]
    fn a_check_that_judged_nothing_is_not_applicable_never_a_pass() {
        let idle = CheckReport::judged("x", Violations::new(), vec![("reads", 0)], "no reads");
        assert_eq!(idle.verdict(), Verdict::NotApplicable("no reads".into()));
        let busy = CheckReport::judged("x", Violations::new(), vec![("reads", 3)], "no reads");
        assert_eq!(busy.verdict(), Verdict::Pass);
        let mut found = Violations::new();
        found.fire(5, || "bad".into());
        let failed = CheckReport::judged("x", found, vec![("reads", 0)], "no reads");
        assert_eq!(failed.verdict(), Verdict::Fail);
    }
}

#[cfg(test)]
mod live_tests {
    use super::testutil::*;
    use super::*;
    use crate::history::{OpResult, Outcome};

    #[test]
    fn the_checks_that_read_only_store_events_say_live_mode_and_the_others_judge() {
        let mut h = history();
        h.params.live = true;
        h.params.topology = "etcd".into();
        h.params.workload_prefixes = vec!["/".into()];
        op(&mut h, "c1", 1.0, 1.1, create("/a"), write_ok(2));
        let mut read = read_ok(2, vec![("/a", 2)]);
        if let Outcome::Ok {
            result: OpResult::Read { kvs, .. },
            ..
        } = &mut read
        {
            kvs[0].value = "v".into();
        }
        op(&mut h, "c1", 1.2, 1.3, list_all(), read);
        // Parameters that would make the rejoin check judge a simulated run.
        h.params
            .node_roles
            .insert("server-1".into(), "server".into());
        for c in all() {
            let r = c.check(&h);
            let v = r.verdict();
            match c.name() {
                "compactor-continuity" | "list-continuation" | "watchlist" | "etcd-only-rejoin" => {
                    assert!(
                        matches!(&v, Verdict::NotApplicable(why) if why.starts_with("live run: ")),
                        "{}: {v:?}",
                        c.name()
                    )
                }
                "revision-monotonic" | "linearizable" => {
                    assert_eq!(v, Verdict::Pass, "{}: {:?}", c.name(), r.violations)
                }
                // No watch session or lease client in this history.
                _ => assert!(
                    matches!(v, Verdict::NotApplicable(_)),
                    "{}: {v:?}",
                    c.name()
                ),
            }
        }
        // The same history in the simulator: list-continuation judges the page against the
        // (absent) commits and fires, which live mode must not.
        h.params.live = false;
        h.params.node_roles.clear();
        assert!(!ListContinuation.check(&h).passed());
    }

    /// A simulated run's history as live mode would record it: no store events, no facade lists
    /// or watches, compactions only as the requests a compactor sent (here: when members
    /// scheduled them or the database committed them). The facade's operations stay: they are
    /// what clients saw of the workload prefixes they write, which linearizable needs.
    fn as_live(mut h: History) -> History {
        use crate::history::{CompactionRequest, EventKind};
        let mut asked: Vec<(SimNanos, i64)> = vec![];
        for (at, _, e) in h.store_events() {
            match e {
                StoreEvent::MemberCompaction { revision, phase } if phase == "scheduled" => {
                    asked.push((at, *revision))
                }
                StoreEvent::DbCompact {
                    committed: true,
                    stored_after,
                    ..
                } => asked.push((at, *stored_after)),
                _ => {}
            }
        }
        asked.dedup_by_key(|a| a.1);
        h.compactions = asked
            .into_iter()
            .enumerate()
            .map(|(i, (at, revision))| CompactionRequest {
                id: i as u64,
                client: "compactor".into(),
                server: "server-1".into(),
                invoke_ns: at,
                complete_ns: at,
                revision,
                outcome: "ok".into(),
            })
            .collect();
        h.events
            .retain(|e| !matches!(e.kind, EventKind::Store { .. }));
        h.lists.clear();
        h.api_watches.clear();
        h.params.node_roles.clear();
        h.params.live = true;
        h
    }

    /// `FAULTLINE_LIVE_REPLAY=results/<scenario>/seed-N/history.json.gz cargo test --release -p
    /// faultline --lib replay -- --ignored --nocapture`: a passing simulated run, judged as live
    /// mode would, raises no alarm.
    #[test]
    #[ignore]
    fn replay_a_simulated_history_as_live() {
        let path = std::env::var("FAULTLINE_LIVE_REPLAY").expect("FAULTLINE_LIVE_REPLAY");
        let h = crate::report::read_history(std::path::Path::new(&path)).expect("a history");
        let h = as_live(h);
        let mut failed = vec![];
        for c in all() {
            let r = c.check(&h);
            println!(
                "{:<22} {:?} {:?} unjudged {}",
                c.name(),
                r.verdict(),
                r.judged,
                r.unjudged.len()
            );
            if let Some(v) = r.first() {
                println!("    {} at {}", v.message, secs(v.at_ns));
                failed.push(c.name());
            }
        }
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn unjudged_rules_are_kept_by_the_report() {
        let r = CheckReport::judged("x", Violations::new(), vec![("reads", 1)], "idle")
            .with_unjudged(["a rule"]);
        assert_eq!(
            (r.verdict(), r.unjudged),
            (Verdict::Pass, vec!["a rule".to_string()])
        );
    }
}

/// A check's verdict on one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The run gave the check nothing to judge; the reason says why.
    NotApplicable(String),
}

impl Verdict {
    /// `pass`, `fail` or `n/a`, as reports write it.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotApplicable(_) => "n/a",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub check: &'static str,
    /// The earliest violations, sorted by time; empty when the property held.
    pub violations: Vec<Violation>,
    /// How many violations were found in all.
    pub total: usize,
    /// How much the check judged, by what it counts (`reads`, `pages`, `watch events`, ...).
    pub judged: Vec<(&'static str, u64)>,
    /// Set when the run gave the check nothing to judge.
    pub not_applicable: Option<String>,
    /// The check's rules this run could not judge, each with why (live mode: the store's own
    /// events are unknown); empty when every rule applied.
    pub unjudged: Vec<String>,
}

impl CheckReport {
    /// The report of a check that judged `judged`. When every amount is zero and nothing fired,
    /// the verdict is `n/a` with `idle_reason`, never a pass.
    pub fn judged(
        check: &'static str,
        found: Violations,
        judged: Vec<(&'static str, u64)>,
        idle_reason: &str,
    ) -> Self {
        let idle = judged.iter().all(|(_, n)| *n == 0) && found.is_empty();
        CheckReport {
            check,
            total: found.total,
            violations: found.kept,
            judged,
            not_applicable: idle.then(|| idle_reason.to_string()),
            unjudged: vec![],
        }
    }

    /// The same report, naming rules the run could not judge (printed with the verdict).
    pub fn with_unjudged<S: Into<String>>(mut self, rules: impl IntoIterator<Item = S>) -> Self {
        self.unjudged.extend(rules.into_iter().map(Into::into));
        self
    }

    /// The report of a check that does not apply to this run at all.
    pub fn not_applicable(check: &'static str, reason: impl Into<String>) -> Self {
        CheckReport {
            check,
            violations: vec![],
            total: 0,
            judged: vec![],
            not_applicable: Some(reason.into()),
            unjudged: vec![],
        }
    }

    pub fn verdict(&self) -> Verdict {
        match (&self.not_applicable, self.violations.is_empty()) {
            (_, false) => Verdict::Fail,
            (Some(reason), true) => Verdict::NotApplicable(reason.clone()),
            (None, true) => Verdict::Pass,
        }
    }

    /// No violation (a pass, or nothing to judge).
    #[cfg(test)]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn first(&self) -> Option<&Violation> {
        self.violations.first()
    }
}

pub trait Checker {
    fn name(&self) -> &'static str;
    fn meaning(&self) -> &'static str;
    fn check(&self, history: &History) -> CheckReport;
}

pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(RevisionMonotonic),
        Box::new(Linearizable),
        Box::new(CompactorContinuity),
        Box::new(ListContinuation),
        Box::new(WatchChecker),
        Box::new(WatchList),
        Box::new(EtcdOnlyRejoin),
        Box::new(LeaseCheck),
    ]
}

/// Seconds with millisecond precision, for messages.
pub fn secs(ns: SimNanos) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// The database's commits in time order: the highest revision assigned so far and the stored
/// compact revision after each committed compaction. Shared by checkers that need "what was
/// current at time t".
pub struct DbTimeline {
    /// (time, highest id so far), one entry per insert.
    inserts: Vec<(SimNanos, i64)>,
    /// (time, stored compact revision after a committed compaction).
    compactions: Vec<(SimNanos, i64)>,
    /// etcd members: each member's own compact revision over time (a member applies a
    /// compaction when it applies that log entry, so lagging members compact later).
    member_compactions: BTreeMap<String, Vec<(SimNanos, i64)>>,
}

impl DbTimeline {
    pub fn of(history: &History) -> Self {
        let mut inserts = Vec::new();
        let mut compactions = Vec::new();
        let mut member_compactions: BTreeMap<String, Vec<(SimNanos, i64)>> = BTreeMap::new();
        let mut highest = 0;
        for (at, node, e) in history.store_events() {
            match e {
                StoreEvent::DbInsert { id, .. } => {
                    highest = highest.max(*id);
                    inserts.push((at, highest));
                }
                StoreEvent::DbCompact {
                    committed: true,
                    stored_after,
                    ..
                } => compactions.push((at, *stored_after)),
                StoreEvent::MemberCompaction { revision, phase } if phase == "scheduled" => {
                    let line = member_compactions.entry(node.to_string()).or_default();
                    // A member replaying its log re-applies old compactions: keep the maximum.
                    let top = line.last().map(|(_, r)| *r).unwrap_or(0).max(*revision);
                    line.push((at, top));
                }
                _ => {}
            }
        }
        DbTimeline {
            inserts,
            compactions,
            member_compactions,
        }
    }

    /// The compact revision `server` answered by at `at`: its own, for an etcd member, else the
    /// database's.
    pub fn compact_at_on(&self, at: SimNanos, server: &str) -> i64 {
        match self.member_compactions.get(server) {
            Some(line) => {
                let i = line.partition_point(|(t, _)| *t <= at);
                i.checked_sub(1).map(|i| line[i].1).unwrap_or(0)
            }
            None => self.compact_at(at),
        }
    }

    /// The highest compact revision any server had reached at `at`: the database's, or the most
    /// advanced etcd member's (a request through an apiserver may reach any member).
    pub fn compact_at_any(&self, at: SimNanos) -> i64 {
        self.member_compactions
            .keys()
            .map(|m| self.compact_at_on(at, m))
            .fold(self.compact_at(at), i64::max)
    }

    /// The highest revision committed at or before `at`.
    pub fn current_at(&self, at: SimNanos) -> i64 {
        let i = self.inserts.partition_point(|(t, _)| *t <= at);
        if i == 0 {
            0
        } else {
            self.inserts[i - 1].1
        }
    }

    /// The stored compact revision at or before `at`.
    pub fn compact_at(&self, at: SimNanos) -> i64 {
        let i = self.compactions.partition_point(|(t, _)| *t <= at);
        if i == 0 {
            0
        } else {
            self.compactions[i - 1].1
        }
    }

    /// Every value the stored compact revision took at or before `at` (0 included).
    pub fn compact_values_until(&self, at: SimNanos) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(0).chain(
            self.compactions
                .iter()
                .take_while(move |(t, _)| *t <= at)
                .map(|(_, r)| *r),
        )
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small builders for hand-made histories.
    use crate::history::*;
    use store::observe::StoreEvent;

    pub const S: u64 = 1_000_000_000;

    /// Asserts that `r` fired and that its first violation mentions `needle`.
    pub fn assert_fires(r: &crate::checkers::CheckReport, needle: &str) {
        let first = r
            .first()
            .unwrap_or_else(|| panic!("{} did not fire", r.check));
        assert!(
            first.message.contains(needle),
            "{} fired with: {}",
            r.check,
            first.message
        );
    }

    /// The database's record of one compaction transaction.
    pub fn db_compact(
        h: &mut History,
        at_s: f64,
        stored: (i64, i64),
        committed: bool,
        rows: (i64, i64),
    ) {
        store(
            h,
            at_s,
            "db",
            StoreEvent::DbCompact {
                from: stored.0,
                to: stored.1,
                committed,
                deleted_rows: rows.0 - rows.1,
                rows_before: rows.0,
                rows_after: rows.1,
                stored_before: stored.0,
                stored_after: if committed { stored.1 } else { stored.0 },
            },
        );
    }

    pub fn history() -> History {
        History {
            params: HistoryParams {
                servers: vec!["kine-1".into()],
                compact_interval_ms: 30_000,
                compact_interval_jitter_pct: 0,
                compact_min_retain: 10,
                compact_batch_revisions: 100,
                compact_timeout_ms: 5_000,
                faults_stop_ns: 1_000 * S,
                end_ns: 1_000 * S,
                final_read: None,
                ..Default::default()
            },
            ops: vec![],
            events: vec![],
            watches: vec![],
            lists: vec![],
            api_watches: vec![],
            leases: vec![],
            api_ops: vec![],
            compactions: vec![],
        }
    }

    pub fn store(h: &mut History, at_s: f64, node: &str, event: StoreEvent) {
        h.events.push(WorldEvent {
            at_ns: (at_s * 1e9) as u64,
            node: node.into(),
            kind: EventKind::Store { event },
        });
    }

    /// Inserts rows `from..=to` at `at_s`, one key each.
    pub fn inserts(h: &mut History, at_s: f64, from: i64, to: i64) {
        for id in from..=to {
            store(
                h,
                at_s,
                "db",
                StoreEvent::DbInsert {
                    id,
                    key: format!("/k{id}"),
                    created: true,
                    deleted: false,
                    create_revision: id,
                    prev_revision: 0,
                },
            );
        }
    }

    pub fn op(
        h: &mut History,
        client: &str,
        invoke_s: f64,
        complete_s: f64,
        request: Request,
        outcome: Outcome,
    ) -> u64 {
        let id = h.ops.len() as u64;
        h.ops.push(Operation {
            id,
            client: client.into(),
            server: "kine-1".into(),
            invoke_ns: (invoke_s * 1e9) as u64,
            complete_ns: (complete_s * 1e9) as u64,
            request,
            outcome,
        });
        id
    }

    pub fn write_ok(rev: i64) -> Outcome {
        Outcome::Ok {
            header_revision: rev,
            result: OpResult::Write {
                succeeded: true,
                current: None,
                responses: vec![],
            },
        }
    }

    pub fn read_ok(rev: i64, kvs: Vec<(&str, i64)>) -> Outcome {
        Outcome::Ok {
            header_revision: rev,
            result: OpResult::Read {
                count: kvs.len() as i64,
                more: false,
                kvs: kvs
                    .into_iter()
                    .map(|(k, m)| Kv {
                        key: k.into(),
                        create_revision: m,
                        mod_revision: m,
                        version: 1,
                        value: String::new(),
                    })
                    .collect(),
            },
        }
    }

    pub fn create(key: &str) -> Request {
        Request::Create {
            key: key.into(),
            value: "v".into(),
        }
    }

    pub fn update(key: &str, expected: i64) -> Request {
        Request::Update {
            key: key.into(),
            value: "v".into(),
            expected_mod_revision: expected,
        }
    }

    pub fn delete(key: &str, expected: i64) -> Request {
        Request::Delete {
            key: key.into(),
            expected_mod_revision: expected,
        }
    }

    pub fn list_all() -> Request {
        Request::list_all("/", "0")
    }
}

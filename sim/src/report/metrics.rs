//! Latency and lag histograms of one run, from its history (hdrhistogram).
//!
//! Client latency per operation kind as the clients saw it, and compaction lag (current minus
//! stored compact revision, sampled each simulated second). Summaries go into report.json and
//! the run's summary table. Reads only the history; never part of the trace hash.

use crate::history::{History, Outcome};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use store::observe::StoreEvent;

/// Percentiles of one histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub unit: String,
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Every histogram of a run, by name (`latency.get`, `compaction_lag`, ...). Topologies with
/// rejoins or watches add their own names.
pub type Metrics = BTreeMap<String, Summary>;

fn summarize(h: &Histogram<u64>, unit: &str, scale: f64) -> Summary {
    let q = |p: f64| h.value_at_quantile(p) as f64 / scale;
    Summary {
        unit: unit.into(),
        count: h.len(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max() as f64 / scale,
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

/// Computes the run's histograms.
pub fn compute(history: &History) -> Metrics {
    let mut latency: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    for o in &history.ops {
        // An operation its client never saw complete (client killed, run ended) has no latency.
        if matches!(&o.outcome, Outcome::Unknown { error } if error == "never completed") {
            continue;
        }
        let kind = o.request.kind();
        let micros = o.complete_ns.saturating_sub(o.invoke_ns) / 1_000;
        latency
            .entry(kind)
            .or_insert_with(new_histogram)
            .record(micros)
            .expect("auto-resizing histogram accepts any value");
    }
    let mut out = Metrics::new();
    for (kind, h) in latency {
        out.insert(format!("latency.{kind}"), summarize(&h, "ms", 1_000.0));
    }
    let lag = compaction_lag(history);
    if !lag.is_empty() {
        out.insert("compaction_lag".into(), summarize(&lag, "revisions", 1.0));
    }
    let delay = watch_delay(history);
    if !delay.is_empty() {
        out.insert(
            "watch_delivery_delay".into(),
            summarize(&delay, "ms", 1_000.0),
        );
    }
    out
}

/// Time from a row's commit to its arrival at each watcher that received it (replayed history
/// included, which is why the tail can be long).
fn watch_delay(history: &History) -> Histogram<u64> {
    let mut committed_at: BTreeMap<i64, u64> = BTreeMap::new();
    for (at, _, e) in history.store_events() {
        if let StoreEvent::DbInsert { id, .. } = e {
            committed_at.insert(*id, at);
        }
    }
    let mut h = new_histogram();
    for w in &history.watches {
        for e in &w.events {
            if let Some(at) = committed_at.get(&e.mod_revision) {
                h.record(e.at_ns.saturating_sub(*at) / 1_000)
                    .expect("auto-resizing");
            }
        }
    }
    h
}

/// Current minus stored compact revision, once per simulated second.
fn compaction_lag(history: &History) -> Histogram<u64> {
    let mut h = new_histogram();
    let (mut current, mut compact) = (0i64, 0i64);
    let mut next_sample = 0u64;
    let second = 1_000_000_000;
    let mut sample_until = |at: u64, current: i64, compact: i64, h: &mut Histogram<u64>| {
        while next_sample <= at {
            if current > 0 {
                h.record((current - compact).max(0) as u64)
                    .expect("auto-resizing");
            }
            next_sample += second;
        }
    };
    for (at, _, e) in history.store_events() {
        // Samples before this event see the state before it.
        if at > 0 {
            sample_until(at - 1, current, compact, &mut h);
        }
        match e {
            StoreEvent::DbInsert { id, .. } => current = current.max(*id),
            StoreEvent::DbCompact {
                committed: true,
                stored_after,
                ..
            } => compact = *stored_after,
            _ => {}
        }
    }
    sample_until(history.params.end_ns, current, compact, &mut h);
    h
}

/// An aligned table for the terminal.
pub fn render_table(m: &Metrics) -> String {
    let mut s = format!(
        "  {:<18} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  unit\n",
        "histogram", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, v) in m {
        s += &format!(
            "  {:<18} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}\n",
            name, v.count, v.p50, v.p90, v.p99, v.p999, v.max, v.unit
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::EventKind;

    #[test]
    fn latencies_are_per_kind_in_milliseconds() {
        let mut h = history();
        for i in 0..100 {
            // 1 ms .. 100 ms
            let d = (i + 1) as f64 / 1000.0;
            op(&mut h, "c1", 1.0, 1.0 + d, create("/a"), write_ok(2));
        }
        op(&mut h, "c1", 5.0, 5.5, list_all(), read_ok(3, vec![]));
        op(
            &mut h,
            "c1",
            6.0,
            900.0,
            list_all(),
            Outcome::Unknown {
                error: "never completed".into(),
            },
        );
        let m = compute(&h);
        let c = &m["latency.create"];
        assert_eq!(c.count, 100);
        assert!((c.p50 - 50.0).abs() < 0.5, "{c:?}");
        assert!((c.max - 100.0).abs() < 0.5, "{c:?}");
        assert_eq!(
            m["latency.list"].count, 1,
            "a never-completed operation has no latency"
        );
        assert!(render_table(&m).contains("latency.create"));
    }

    #[test]
    fn compaction_lag_is_sampled_each_second() {
        let mut h = history();
        h.params.end_ns = 10 * S;
        inserts(&mut h, 0.5, 1, 100); // current 100 from 0.5 s
        h.events.push(crate::history::WorldEvent {
            at_ns: 5 * S + 500_000_000,
            node: "db".into(),
            kind: EventKind::Store {
                event: StoreEvent::DbCompact {
                    from: 0,
                    to: 90,
                    committed: true,
                    deleted_rows: 0,
                    rows_before: 0,
                    rows_after: 0,
                    stored_before: 0,
                    stored_after: 90,
                },
            },
        });
        let lag = &compute(&h)["compaction_lag"];
        // Samples at 1..=5 s see lag 100, at 6..=10 s lag 10 (none at 0 s: nothing written yet).
        assert_eq!(lag.count, 10, "{lag:?}");
        assert_eq!(lag.max, 100.0);
        assert_eq!(lag.p50, 10.0);
    }
}

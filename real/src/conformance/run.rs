//! One seed: a fresh etcd and faultline-store, one generated sequence sent to etcd, to
//! faultline's etcd MVCC and to faultline-store, and every answer compared with etcd's.
//!
//! The sequence stops at its first mismatch (later answers would only repeat it); the report
//! names the seed, the operation, both answers field by field and the command that replays it.

use crate::allowances::{self, Context, Pair};
use crate::answer::Answer;
use crate::diff::diff;
use crate::generate::Generator;
use crate::grpc::GrpcSide;
use crate::model::Model;
use crate::ops::Op;
use crate::processes::{start_etcd, start_store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// etcd 3.4 catches a watcher up with history every 100 ms, and nothing tells a client when it
/// has (3.4.23's progress notification may come first); before a compaction or the final
/// gathering the suite waits this long, then until etcd delivered what the model expects.
/// faultline-store says so itself: it answers a progress request only once caught up.
const ETCD_SYNC: Duration = Duration::from_millis(400);

pub struct Config {
    pub etcd: PathBuf,
    pub etcd_version: String,
    pub store: PathBuf,
    pub root: PathBuf,
    pub ops: usize,
    pub verbose: bool,
    /// The command that replays one seed, without `--seed N`.
    pub replay: String,
}

#[derive(Default)]
pub struct SeedReport {
    pub ops: usize,
    /// Rendered mismatches (empty when the seed passed).
    pub mismatches: Vec<String>,
    pub used: BTreeMap<&'static str, usize>,
    /// What `--verbose` asked to see.
    pub transcript: String,
}

/// The three answers to one operation (or one watch's whole delivery).
struct Answers {
    etcd: Answer,
    mvcc: Answer,
    kine: Answer,
}

fn summary(a: &Answer) -> String {
    a.fields()
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl SeedReport {
    /// Compares both faultline sides with etcd under their allowances; records and returns
    /// whether they matched. `what` names the operation in the report.
    fn check(&mut self, cfg: &Config, cx: &Context<'_>, a: &Answers, what: String) -> bool {
        if cfg.verbose {
            self.transcript.push_str(&format!(
                "{what}\n  etcd:  {}\n  mvcc:  {}\n  kine:  {}\n",
                summary(&a.etcd),
                summary(&a.mvcc),
                summary(&a.kine)
            ));
        }
        let etcd_label = format!("etcd {}", cfg.etcd_version);
        let mut found = String::new();
        for (pair, other) in [(Pair::Mvcc, &a.mvcc), (Pair::Kine, &a.kine)] {
            let (mut e, mut o) = (a.etcd.clone(), other.clone());
            for name in allowances::apply(pair, cx, &mut e, &mut o) {
                *self.used.entry(name).or_default() += 1;
            }
            let d = diff(&e.fields(), &o.fields());
            if !d.is_empty() {
                found.push_str(&format!(
                    "  {} differs from {etcd_label}:\n{}",
                    pair.side(),
                    d.render(&etcd_label, pair.side(), "    ")
                ));
            }
        }
        if found.is_empty() {
            return true;
        }
        self.mismatches.push(format!("{what}\n{found}"));
        false
    }
}

/// Waits until etcd's watchers have caught up with history, as far as the model can tell.
async fn etcd_caught_up(model: &Model, etcd: &GrpcSide, ids: impl Iterator<Item = &usize>) {
    tokio::time::sleep(ETCD_SYNC).await;
    for &id in ids {
        let (events, cancelled) = model.expected(id);
        etcd.wait_delivered(id, events, cancelled).await;
    }
}

pub async fn run_seed(seed: u64, cfg: &Config) -> anyhow::Result<SeedReport> {
    let tag = format!("{}-{seed}", std::process::id());
    let (etcd, store) = tokio::try_join!(
        start_etcd(&cfg.etcd, &cfg.root, &tag),
        start_store(&cfg.store, &cfg.root, &tag)
    )?;
    let mut etcd_side = GrpcSide::connect(&etcd.addr).await?;
    let mut kine_side = GrpcSide::connect(&store.addr).await?;
    let mut model = Model::new();
    let mut generator = Generator::new(seed);
    let mut report = SeedReport::default();
    // A watch opened on history that etcd may not have caught up with yet.
    let mut catching_up = false;
    let mut watches = BTreeMap::new();
    let mut matched = true;
    for i in 1..=cfg.ops {
        let op = generator.next(&model.mvcc, &model.leases);
        if matches!(op, Op::Compact { .. }) && catching_up {
            etcd_caught_up(&model, &etcd_side, watches.keys()).await;
            catching_up = false;
        }
        let current = model.mvcc.current_revision();
        let mvcc = model.apply(&op);
        let (etcd, kine) = tokio::join!(etcd_side.apply(&op), kine_side.apply(&op));
        // Lease IDs compared by the grant that made them (each side chooses its own).
        let (etcd, mvcc, kine) = (
            etcd_side.leases.named(etcd),
            model.leases.grants.named(mvcc),
            kine_side.leases.named(kine),
        );
        if let Op::Watch { watch, create } = &op {
            watches.insert(*watch, op.clone());
            if (1..=current).contains(&create.start_revision) {
                catching_up = true;
                tokio::join!(etcd_side.fence(*watch), kine_side.fence(*watch));
            }
        }
        report.ops = i;
        let progress_start = match &op {
            Op::Progress { watch } => model.progress_start(*watch),
            _ => 0,
        };
        let cx = Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 0,
            progress_start,
        };
        let what = format!("seed {seed}, operation {i} of {}: {op}", cfg.ops);
        matched = report.check(cfg, &cx, &Answers { etcd, mvcc, kine }, what);
        if !matched {
            break;
        }
    }
    if matched && !watches.is_empty() {
        // What every watch delivered, once etcd and faultline-store have caught up.
        etcd_caught_up(&model, &etcd_side, watches.keys()).await;
        for &id in watches.keys() {
            tokio::join!(etcd_side.fence(id), kine_side.fence(id));
        }
        for (&id, op) in &watches {
            let (mvcc, as_3_4, compact_at_open) = model.outcome(id);
            let as_3_4 = as_3_4.map(|events| model.leases.grants.named_events(events));
            let answers = Answers {
                etcd: etcd_side.leases.named(etcd_side.outcome(id)),
                mvcc: model.leases.grants.named(mvcc),
                kine: kine_side.leases.named(kine_side.outcome(id)),
            };
            let cx = Context {
                op,
                as_3_4: as_3_4.as_ref(),
                compact_at_open,
                progress_start: 0,
            };
            let what =
                format!("seed {seed}, what watch#{id} delivered by the end of the sequence:");
            if !report.check(cfg, &cx, &answers, what) {
                break;
            }
        }
    }
    if let Some(last) = report.mismatches.last_mut() {
        last.push_str(&format!("  replay: {} --seed {seed}\n", cfg.replay));
    }
    drop((etcd, store));
    Ok(report)
}

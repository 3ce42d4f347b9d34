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

/// etcd 3.4 catches a watcher up with history every 100 ms; waiting longer than that before a
/// compaction or the final gathering means it has caught up (faultline-store says so itself).
const ETCD_SYNC: Duration = Duration::from_millis(300);

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

struct Labels {
    etcd: String,
}

impl Labels {
    fn other(pair: Pair) -> &'static str {
        match pair {
            Pair::Mvcc => "faultline etcd MVCC",
            Pair::Kine => "faultline-store (kine)",
        }
    }
}

fn compare(
    pair: Pair,
    cx: &Context<'_>,
    etcd: &Answer,
    other: &Answer,
    labels: &Labels,
    report: &mut SeedReport,
) -> Option<String> {
    let (mut e, mut o) = (etcd.clone(), other.clone());
    for name in allowances::apply(pair, cx, &mut e, &mut o) {
        *report.used.entry(name).or_default() += 1;
    }
    let d = diff(&e.fields(), &o.fields());
    (!d.is_empty()).then(|| {
        format!(
            "  {} differs from {}:\n{}",
            Labels::other(pair),
            labels.etcd,
            d.render(&labels.etcd, Labels::other(pair), "    ")
        )
    })
}

fn summary(a: &Answer) -> String {
    a.fields()
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run_seed(seed: u64, cfg: &Config) -> anyhow::Result<SeedReport> {
    let tag = format!("{}-{seed}", std::process::id());
    let (etcd, store) = tokio::try_join!(
        start_etcd(&cfg.etcd, &cfg.root, &tag),
        start_store(&cfg.store, &cfg.root, &tag)
    )?;
    let mut etcd_side = GrpcSide::connect(&etcd.addr).await?;
    let mut kine_side = GrpcSide::connect(&store.addr).await?;
    let labels = Labels {
        etcd: format!("etcd {}", cfg.etcd_version),
    };
    let mut model = Model::new();
    let mut generator = Generator::new(seed);
    let mut report = SeedReport::default();
    // A watch opened on history that etcd may not have caught up with yet.
    let mut catching_up = false;
    let mut failed_at = None;
    let mut watches = BTreeMap::new();
    for i in 1..=cfg.ops {
        let op = generator.next(&model.mvcc);
        if let Op::Watch { watch, .. } = &op {
            watches.insert(*watch, op.clone());
        }
        if matches!(op, Op::Compact { .. }) && catching_up {
            tokio::time::sleep(ETCD_SYNC).await;
            catching_up = false;
        }
        let current = model.mvcc.current_revision();
        let m = model.apply(&op);
        let (e, k) = tokio::join!(etcd_side.apply(&op), kine_side.apply(&op));
        if let Op::Watch { watch, create } = &op {
            if (1..=current).contains(&create.start_revision) {
                catching_up = true;
                tokio::join!(etcd_side.fence(*watch), kine_side.fence(*watch));
            }
        }
        report.ops = i;
        if cfg.verbose {
            report.transcript.push_str(&format!(
                "#{i} {op}\n  etcd:  {}\n  mvcc:  {}\n  kine:  {}\n",
                summary(&e),
                summary(&m),
                summary(&k)
            ));
        }
        let cx = Context {
            op: &op,
            as_3_4: None,
            compact_at_open: 0,
        };
        let found: Vec<String> = [
            compare(Pair::Mvcc, &cx, &e, &m, &labels, &mut report),
            compare(Pair::Kine, &cx, &e, &k, &labels, &mut report),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !found.is_empty() {
            report.mismatches.push(format!(
                "seed {seed}, operation {i} of {}: {op}\n{}",
                cfg.ops,
                found.join("")
            ));
            failed_at = Some(i);
            break;
        }
    }
    if failed_at.is_none() {
        let sides = (&etcd_side, &kine_side);
        gather_watches(seed, cfg, &model, &watches, sides, &labels, &mut report).await;
    }
    if !report.mismatches.is_empty() {
        let last = report.mismatches.pop().expect("not empty");
        report
            .mismatches
            .push(format!("{last}  replay: {} --seed {seed}\n", cfg.replay));
    }
    drop((etcd, store));
    Ok(report)
}

/// Compares what every watch delivered, once etcd and faultline-store have caught up.
async fn gather_watches(
    seed: u64,
    cfg: &Config,
    model: &Model,
    watches: &BTreeMap<usize, Op>,
    (etcd, kine): (&GrpcSide, &GrpcSide),
    labels: &Labels,
    report: &mut SeedReport,
) {
    let ids = model.watch_ids();
    if ids.is_empty() {
        return;
    }
    tokio::time::sleep(ETCD_SYNC).await;
    for &id in &ids {
        tokio::join!(etcd.fence(id), kine.fence(id));
    }
    for id in ids {
        let (m, as_3_4, compact_at_open) = model.outcome(id);
        let (e, k) = (etcd.outcome(id), kine.outcome(id));
        let op = &watches[&id];
        if cfg.verbose {
            report.transcript.push_str(&format!(
                "watch#{id} delivered\n  etcd:  {}\n  mvcc:  {}\n  kine:  {}\n",
                summary(&e),
                summary(&m),
                summary(&k)
            ));
        }
        let found: Vec<String> = [
            compare(
                Pair::Mvcc,
                &Context {
                    op,
                    as_3_4: as_3_4.as_ref(),
                    compact_at_open,
                },
                &e,
                &m,
                labels,
                report,
            ),
            compare(
                Pair::Kine,
                &Context {
                    op,
                    as_3_4: None,
                    compact_at_open,
                },
                &e,
                &k,
                labels,
                report,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !found.is_empty() {
            report.mismatches.push(format!(
                "seed {seed}, what watch#{id} delivered by the end of the sequence:\n{}",
                found.join("")
            ));
            return;
        }
    }
}

//! One live run: a scenario's workload against a target's real processes under a fault schedule,
//! recorded with real monotonic time and judged by the simulator's own checkers.
//!
//! The pieces are the simulator's (`faultline::clients`, `history`, `checkers`, `report`), built
//! here without `--cfg madsim`; what is live mode's own is the cluster (real processes behind
//! proxies), the fault runner and the few parameters a real run cannot share with a simulated one
//! (no store events, so `HistoryParams::live`).
//!
//! Time line: faults during `duration_s` (the scenario's, or `--duration-s`), then `quiet_s`
//! with every node up and every link healed while the clients go on; then the clients stop, and
//! a final audit read lists the watched range.

use super::runner::{self, FaultRecord, Happened};
use super::schedule::{Compaction, Mix, Schedule};
use super::{known, Cluster, Target};
use faultline::checkers::{self, CheckReport};
use faultline::clients::compactor::{run_compactor, CompactorConfig};
use faultline::clients::etcd_call;
use faultline::clients::leases::{run_lease_client, LeaseClientConfig};
use faultline::clients::watcher::{run_watcher, WatcherConfig};
use faultline::clients::workload::{owned_prefixes, run_client, ClientConfig};
use faultline::history::recorder::Recorder;
use faultline::history::trace::Trace;
use faultline::history::{EventKind, History, HistoryParams};
use faultline::report::{self, metrics, plot, LiveRun, Report};
use faultline::scenario::Scenario;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// What one live run needs besides its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario_path: String,
    pub scenario: Scenario,
    pub target: Target,
    /// The fault period; the scenario's `duration_s` unless overridden.
    pub duration_s: f64,
    pub quiet_s: f64,
    /// Replayed instead of drawn.
    pub schedule: Option<(PathBuf, Schedule)>,
    /// Where `{bin_dir}` points (faultline-store's folder).
    pub bin_dir: PathBuf,
    /// Reports go to `<out>/<target>/seed-<n>/`.
    pub out: PathBuf,
    /// Keep the nodes' data folders and logs of a passing run (a failing run keeps them always).
    pub keep_data: bool,
    /// Apiserver-style compactions this often (an operator's at a delete every `edge_every`-th).
    pub compact_interval: Duration,
    pub compact_edge_every: u32,
}

/// How far real clocks and scheduling make a live run's judgement looser than a simulated one's;
/// printed in every live report.
pub const TOLERANCES: [&str; 3] = [
    "invoke and completion times are this process's monotonic clock, read around each gRPC call: an operation's real effect lies somewhere between them, as in the simulator, but the interval also holds the client's own scheduling delay",
    "compactions are known only from the compactor's requests: a watch cancelled as compacted is judged against every compaction invoked before the cancel arrived (an upper bound), never against when a member applied it",
    "revisions no client saw (unknown-outcome writes never read back, the compactor's compact_rev_key Txns, lease expiries) are gaps the checks cannot judge",
];

/// The names clients go by, in the order of their endpoints (`c1`.. in schedules).
fn client_names(s: &Scenario) -> Vec<String> {
    let w = &s.workload;
    let mut names = Vec::new();
    names.extend((1..=s.topology.clients).map(|i| format!("client-{i}")));
    names.extend((1..=w.watchers).map(|i| format!("watcher-{i}")));
    names.extend((1..=w.lease_clients).map(|i| format!("lease-client-{i}")));
    names.push("compactor".to_string());
    names
}

/// The fault rates a seed draws from: the scenario's.
pub fn mix(s: &Scenario) -> Mix {
    Mix {
        partitions_per_min: s.faults.partitions_per_min,
        kills_per_min: s.faults.kills_per_min,
        pauses_per_min: s.faults.pauses_per_min,
    }
}

/// Where a run's report goes.
pub fn run_dir(plan: &Plan, seed: u64) -> PathBuf {
    plan.out
        .join(&plan.target.name)
        .join(format!("seed-{seed}"))
}

/// Runs `plan` once with `seed` inside the current tokio runtime and writes its report; an error
/// is a run that could not be carried out (a node that would not start), not a failed check.
pub async fn run(plan: &Plan, seed: u64) -> anyhow::Result<Report> {
    let dir = run_dir(plan, seed);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let started = std::time::Instant::now();
    let cluster = Cluster::start(&plan.target, &dir.join("nodes"), &plan.bin_dir).await?;
    let names = client_names(&plan.scenario);
    let nodes = cluster.nodes.len();
    let mut schedule = match &plan.schedule {
        Some((_, s)) => s.clone(),
        None => Schedule::draw(
            seed,
            &mix(&plan.scenario),
            nodes,
            names.len(),
            plan.duration_s,
        ),
    };
    // A replayed schedule keeps its compactions; a drawn one writes the plan's down.
    let compaction = schedule
        .compaction
        .get_or_insert(Compaction {
            interval_s: plan.compact_interval.as_secs_f64(),
            edge_every: plan.compact_edge_every,
        })
        .clone();
    let schedule_path = dir.join("schedule.toml");
    schedule.write(&schedule_path)?;

    // Every client reaches every node through its own proxy.
    let mut servers: Vec<Vec<(String, SocketAddr)>> = Vec::new();
    for c in 0..names.len() {
        let mut list = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            list.push((node.name.clone(), cluster.client_addr(c, i).await?));
        }
        servers.push(list);
    }
    let recorder = Recorder::new();
    for node in &cluster.nodes {
        recorder.event(&node.name, EventKind::NodeStarted);
    }
    let origin = Instant::now();
    let faults_stop = origin + Duration::from_secs_f64(plan.duration_s);
    let stop_at = faults_stop + Duration::from_secs_f64(plan.quiet_s);
    let w = &plan.scenario.workload;
    let timeout = Duration::from_millis(w.request_timeout_ms);
    let mut tasks = Vec::new();
    let mut next = 0;
    for i in 1..=plan.scenario.topology.clients {
        let c = next;
        next += 1;
        let pinned = (i <= w.pinned_clients).then_some((i as usize - 1) % nodes);
        let cfg = ClientConfig {
            name: names[c].clone(),
            servers: servers[c].clone(),
            pinned,
            workload: w.clone(),
            stop_at,
        };
        tasks.push(tokio::spawn(run_client(cfg, recorder.clone())));
    }
    for _ in 0..w.watchers {
        let c = next;
        next += 1;
        let cfg = WatcherConfig {
            name: names[c].clone(),
            servers: servers[c].clone(),
            stop_at,
            timeout,
            compacted_starts: w.compacted_starts,
            future_starts: w.future_starts,
        };
        tasks.push(tokio::spawn(run_watcher(cfg, recorder.clone())));
    }
    for _ in 0..w.lease_clients {
        let c = next;
        next += 1;
        let cfg = LeaseClientConfig {
            name: names[c].clone(),
            servers: servers[c].clone(),
            ttls_s: w.lease_ttls_s.clone(),
            keys: w.lease_keys,
            timeout,
            stop_at,
        };
        tasks.push(tokio::spawn(run_lease_client(cfg, recorder.clone())));
    }
    let compactor = CompactorConfig {
        name: names[next].clone(),
        servers: servers[next].clone(),
        interval: Duration::from_secs_f64(compaction.interval_s),
        edge_every: compaction.edge_every,
        timeout,
        stop_at,
    };
    tasks.push(tokio::spawn(run_compactor(compactor, recorder.clone())));

    let log_recorder = recorder.clone();
    let records = runner::run(&schedule, &cluster, names.len(), |r, happened| {
        eprintln!("  fault  {r}");
        record_fault(&log_recorder, happened);
    })
    .await;
    tokio::time::sleep_until(faults_stop).await;
    // Whatever a fault left behind (a restart that failed) is put right before the quiet period.
    for i in 0..nodes {
        if !cluster.is_running(i) {
            if let Err(e) = cluster.restart(i).await {
                eprintln!("  {} did not come back: {e:#}", cluster.nodes[i].name);
            }
            recorder.event(&cluster.nodes[i].name, EventKind::NodeRestarted);
        }
    }
    recorder.event("world", EventKind::FaultsStopped);
    let faults_stop_ns = recorder.now_ns();
    for t in tasks {
        let _ = t.await;
    }
    let final_read = final_audit(&cluster, &recorder, timeout).await;
    let params = HistoryParams {
        servers: cluster.nodes.iter().map(|n| n.name.clone()).collect(),
        compact_interval_ms: (compaction.interval_s * 1000.0) as u64,
        faults_stop_ns,
        end_ns: recorder.now_ns(),
        final_read,
        topology: match plan.target.semantics.as_str() {
            "kine" => "single".to_string(),
            _ => "etcd".to_string(),
        },
        workload_prefixes: owned_prefixes(w),
        live: true,
        ..Default::default()
    };
    let (history, trace) = recorder.finish(params);
    let mut report = Report {
        scenario: plan.scenario.name.clone(),
        scenario_path: plan.scenario_path.clone(),
        seed,
        design: format!("live {}", plan.target.name),
        status: String::new(),
        trace_hash: trace.hash(),
        sim_seconds: started.elapsed().as_secs_f64(),
        wall_seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: report::peak_rss_mib(),
        operations: report::count_ops(&history),
        faults_injected: count_faults(&records),
        fault_mix: serde_json::to_value(mix(&plan.scenario)).unwrap_or_default(),
        checks: vec![],
        histograms: metrics::compute(&history),
        panic: None,
        repro: format!(
            "faultline live {} --target {} --seed {seed} --schedule {}",
            plan.scenario_path,
            plan.target.path.display(),
            schedule_path.display()
        ),
        results_dir: dir.display().to_string(),
        probes: BTreeMap::new(),
        live: Some(LiveRun {
            target: plan.target.name.clone(),
            target_path: plan.target.path.display().to_string(),
            nodes,
            schedule: schedule_path.display().to_string(),
            faults: records.iter().map(FaultRecord::to_string).collect(),
            tolerances: TOLERANCES.iter().map(|t| t.to_string()).collect(),
            ..LiveRun::default()
        }),
    };
    let checks = judge(&history, &plan.target, &mut report);
    drop(cluster);
    write(&dir, &report, &history, &trace, &checks)?;
    if report.status == "pass" && !plan.keep_data {
        let _ = std::fs::remove_dir_all(dir.join("nodes"));
    }
    Ok(report)
}

fn write(
    dir: &Path,
    report: &Report,
    history: &History,
    trace: &Trace,
    checks: &[CheckReport],
) -> anyhow::Result<()> {
    report::write(dir, report, Some((history, trace)))?;
    plot_timeline(dir, report, history, checks);
    Ok(())
}

/// The timeline plot, with each failed check's first violation marked.
fn plot_timeline(dir: &Path, report: &Report, history: &History, checks: &[CheckReport]) {
    let marks: Vec<plot::Marker> = checks
        .iter()
        .filter_map(|c| {
            c.first()
                .map(|v| (c.check.to_string(), v.at_ns, v.message.clone()))
        })
        .collect();
    let title = format!(
        "{} seed {} live against {}",
        report.scenario,
        report.seed,
        report.live.as_ref().map_or("", |l| l.target.as_str())
    );
    if let Err(e) = plot::timeline(
        history,
        &title,
        &marks,
        false,
        &dir.join("timeline.png"),
        &dir.join("timeline.svg"),
    ) {
        eprintln!("faultline: timeline plot not written: {e:#}");
    }
}

/// Runs every check over `history` and fills in `report`'s verdicts: checks, status, the rules
/// left unjudged, and which violations known bugs of `target` explain.
fn judge(history: &History, target: &Target, report: &mut Report) -> Vec<CheckReport> {
    let checks: Vec<CheckReport> = checkers::all().iter().map(|c| c.check(history)).collect();
    report.checks = report::summarize_checks(&checks);
    report.status = if checks.iter().any(|c| !c.violations.is_empty()) {
        "fail"
    } else {
        "pass"
    }
    .into();
    if let Some(live) = report.live.as_mut() {
        live.unjudged = checks
            .iter()
            .filter(|c| !c.unjudged.is_empty())
            .map(|c| (c.check.to_string(), c.unjudged.clone()))
            .collect();
    }
    explain(target, &checks, report);
    checks
}

/// Judges a live run's recorded history again with this build's checks (after a checker
/// changed, say) and rewrites its report and plot; the target file named in the report says
/// which known bugs may explain a violation.
pub fn rejudge(dir: &Path) -> anyhow::Result<Report> {
    use anyhow::Context;
    let path = dir.join("report.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut report: Report =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let target_path = report
        .live
        .as_ref()
        .map(|l| PathBuf::from(&l.target_path))
        .with_context(|| format!("{} is not a live run's report", path.display()))?;
    let target = Target::load(&target_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let history = report::read_history(&dir.join("history.json.gz"))?;
    let checks = judge(&history, &target, &mut report);
    report::write(dir, &report, None)?;
    plot_timeline(dir, &report, &history, &checks);
    Ok(report)
}

/// Puts each kept violation down to a known bug of the target where one matches; every other
/// one, and every violation past the kept earliest, counts as unexplained.
fn explain(target: &Target, checks: &[CheckReport], report: &mut Report) {
    let mut by_bug: BTreeMap<&'static str, (usize, &'static known::KnownBug)> = BTreeMap::new();
    let mut unexplained = 0;
    for c in checks {
        let mut matched = 0;
        for v in &c.violations {
            if let Some(bug) = known::classify(&target.known_bugs, c.check, &v.message) {
                by_bug.entry(bug.name).or_insert((0, bug)).0 += 1;
                matched += 1;
            }
        }
        unexplained += c.total - matched;
    }
    let Some(live) = report.live.as_mut() else {
        return;
    };
    live.unexplained = unexplained;
    live.known_bugs = by_bug
        .values()
        .map(|(n, b)| {
            format!(
                "{} ({n} violation{} of {}): {}; {}, fixed in {}",
                b.marker,
                if *n == 1 { "" } else { "s" },
                b.check,
                b.what,
                b.upstream,
                b.fixed_in
            )
        })
        .collect();
}

/// A fault as the history's world events say it.
fn record_fault(recorder: &Recorder, happened: &Happened) {
    match happened {
        Happened::PartitionStarted { from, to, one_way } => recorder.event(
            "world",
            EventKind::PartitionStarted {
                from: from.clone(),
                to: to.clone(),
                one_way: *one_way,
            },
        ),
        Happened::PartitionHealed { from, to, one_way } => recorder.event(
            "world",
            EventKind::PartitionHealed {
                from: from.clone(),
                to: to.clone(),
                one_way: *one_way,
            },
        ),
        Happened::Killed(nodes) => {
            for n in nodes {
                recorder.event(n, EventKind::NodeKilled);
            }
        }
        Happened::Restarted(nodes) => {
            for n in nodes {
                recorder.event(n, EventKind::NodeRestarted);
            }
        }
        Happened::Paused(n) => recorder.event(n, EventKind::NodePaused),
        Happened::Resumed(n) => recorder.event(n, EventKind::NodeResumed),
    }
}

fn count_faults(records: &[FaultRecord]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        let kind = r.fault.split_whitespace().next().unwrap_or("fault");
        let kind = match (kind, r.fault.contains(" -> ")) {
            ("partition", true) => "partition-one-way",
            (k, _) => k,
        };
        *out.entry(kind.to_string()).or_insert(0) += 1;
    }
    out
}

/// The final audit read, on the nodes' own addresses (no proxy, nothing cut).
async fn final_audit(cluster: &Cluster, recorder: &Recorder, timeout: Duration) -> Option<u64> {
    let direct: Vec<(String, SocketAddr)> = (0..cluster.nodes.len())
        .map(|i| (cluster.nodes[i].name.clone(), cluster.direct_addr(i)))
        .collect();
    etcd_call::audit_read(&direct, recorder, timeout).await
}

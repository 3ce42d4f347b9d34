//! Running seeds in child processes: one process per seed, a wall-clock watchdog, a worker
//! pool, and the campaign loop shared by fuzz, validate, determinism and bench.
//!
//! A seed that panics, hangs or crashes is a failed seed with its number, never a crashed
//! campaign. This runs outside the simulation: OS threads, files and the wall clock are fine.

use crate::report::Report;
use crate::run::{Keep, RESULT_PREFIX};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An inclusive seed range, written `A..B` (or a single seed `A`).
#[derive(Clone, Debug)]
pub struct Seeds {
    pub first: u64,
    pub last: u64,
}

impl std::str::FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a seed range; write A..B (inclusive) or a single seed");
        let (a, b) = match s.split_once("..") {
            Some((a, b)) => (a, b.trim_start_matches('=')),
            None => (s, s),
        };
        let first: u64 = a.trim().parse().map_err(|_| bad())?;
        let last: u64 = b.trim().parse().map_err(|_| bad())?;
        if last < first {
            return Err(format!("seed range {s} is empty: {last} < {first}"));
        }
        Ok(Seeds { first, last })
    }
}

impl Seeds {
    pub fn iter(&self) -> impl Iterator<Item = u64> {
        self.first..=self.last
    }
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

impl std::fmt::Display for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

/// One of `count` disjoint slices of a campaign, written `K/N` with `K` counted from 0 (as
/// Kubernetes' `JOB_COMPLETION_INDEX` and CI matrices count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a shard; write K/N with 0 <= K < N (K counts from 0)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the `position`-th run of the campaign (scenario by scenario, seed by seed) is
    /// this shard's. Dealing runs round-robin gives every shard its share of each scenario, so
    /// slow scenarios do not pile up on one shard.
    pub fn owns(&self, position: usize) -> bool {
        position as u64 % self.count == self.index
    }
}

/// How one child run ended.
pub enum ChildOutcome {
    Done(Box<Report>),
    /// No result line: crashed, killed by a signal, or hung and killed by the watchdog.
    Died(String),
}

/// Runs `faultline run ... --json-line` for one seed, killing it after `timeout` or when `stop`
/// is set. The child dies with this process, whatever kills it.
pub fn run_child(
    scenario: &str,
    seed: u64,
    design: &[String],
    out: &Path,
    timeout: Duration,
    stop: &AtomicBool,
    keep: Keep,
) -> ChildOutcome {
    run_child_with(scenario, seed, design, out, &[], timeout, stop, keep)
}

/// `run_child` with more arguments for `faultline run` (`extra`, for example a schedule).
#[allow(clippy::too_many_arguments)]
pub fn run_child_with(
    scenario: &str,
    seed: u64,
    design: &[String],
    out: &Path,
    extra: &[String],
    timeout: Duration,
    stop: &AtomicBool,
    keep: Keep,
) -> ChildOutcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return ChildOutcome::Died(format!("cannot find own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(scenario)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--out")
        .arg(out)
        .arg("--json-line")
        .arg("--keep")
        .arg(keep.as_arg())
        .args(extra);
    for d in design {
        cmd.arg("--design").arg(d);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe. With it, a campaign killed outright (SIGKILL, OOM) leaves no seed
    // running behind it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return ChildOutcome::Died(format!("cannot start child: {e}")),
    };
    // Drain the pipes on their own threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (out_text, err_text) = std::thread::scope(|s| {
        let o = s.spawn(move || {
            let mut t = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut t);
            t
        });
        let e = s.spawn(move || {
            let mut t = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut t);
            t
        });
        let started = Instant::now();
        let mut verdict = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && status.code() != Some(1) {
                        verdict = Some(format!("child exited with {status}"));
                    }
                    break;
                }
                Ok(None) if started.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    verdict = Some(format!(
                        "hung: still running after {} s of wall time, killed",
                        timeout.as_secs()
                    ));
                    break;
                }
                Ok(None) if stop.load(Ordering::Relaxed) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    verdict = Some("interrupted".into());
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    verdict = Some(format!("cannot wait for child: {e}"));
                    break;
                }
            }
        }
        let out = o.join().unwrap_or_default();
        let err = e.join().unwrap_or_default();
        // The last line of stderr is where a crash says why (a panic outside the run, an abort).
        let last_err = err.lines().rev().find(|l| !l.trim().is_empty());
        let verdict = verdict.map(|v| match last_err {
            Some(line) => format!("{v}; stderr: {line}"),
            None => v,
        });
        (out, verdict)
    });
    if let Some(line) = out_text.lines().find(|l| l.starts_with(RESULT_PREFIX)) {
        if let Ok(report) = serde_json::from_str::<Report>(&line[RESULT_PREFIX.len()..]) {
            return ChildOutcome::Done(Box::new(report));
        }
    }
    ChildOutcome::Died(err_text.unwrap_or_else(|| "child printed no result".into()))
}

/// Runs every job on `jobs` workers; `each` sees every finished job in completion order.
pub fn run_pool<J: Send, R: Send>(
    jobs: Vec<J>,
    workers: usize,
    work: impl Fn(&J) -> R + Sync,
    mut each: impl FnMut(&J, R),
) {
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<J>>());
    let (tx, rx) = std::sync::mpsc::channel::<(J, R)>();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (queue, work) = (&queue, &work);
            s.spawn(move || loop {
                let Some(job) = queue.lock().expect("queue lock poisoned").pop_front() else {
                    return;
                };
                let r = work(&job);
                if tx.send((job, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for (job, r) in rx {
            each(&job, r);
        }
    });
}

/// Identifies the faultline binary that runs a campaign: the first 16 hex digits of the SHA-256
/// of its executable. Shards of one campaign must agree on it.
pub fn binary_id() -> String {
    use sha2::Digest;
    let Ok(bytes) = std::env::current_exe().and_then(std::fs::read) else {
        return "unknown".into();
    };
    let digest = sha2::Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Stops launching seeds on Ctrl-C, SIGTERM (a pod being stopped) or SIGHUP; running seeds are
/// killed and reports still get written for those that finished.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed));
    stop
}

/// What one seed of a campaign came to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeedRecord {
    pub scenario: String,
    pub seed: u64,
    pub wall_seconds: f64,
    /// (check, message) per failed check; `panic`, `hang` or `crash` when the run itself died.
    pub failures: Vec<(String, String)>,
    /// Every check's verdict and what it judged (empty when the run died).
    pub checks: Vec<crate::report::CheckSummary>,
    pub repro: String,
    /// The code probes this run hit, with their hits (probes it missed are left out). Tallied
    /// into the summary's `probes`; not written per record (each seed's report.json has them).
    #[serde(skip)]
    pub probes: BTreeMap<String, u64>,
}

/// How a campaign runs its seeds.
pub struct CampaignConfig<'a> {
    pub design: &'a [String],
    pub jobs: usize,
    pub out: &'a Path,
    pub timeout: Duration,
    pub stop: &'a AtomicBool,
    /// What each seed's folder keeps.
    pub keep: Keep,
    /// Run only this slice of the campaign.
    pub shard: Option<Shard>,
}

/// Runs every (scenario path, name) for every seed on `cfg.jobs` workers; `each` sees each
/// record as it finishes (for progress). Seeds not started before an interrupt are left out.
pub fn campaign(
    scenarios: &[(String, String)],
    seeds: &Seeds,
    cfg: &CampaignConfig<'_>,
    mut each: impl FnMut(&SeedRecord),
) -> Vec<SeedRecord> {
    let CampaignConfig {
        design,
        jobs,
        out,
        timeout,
        stop,
        keep,
        shard,
    } = *cfg;
    let work: Vec<(String, String, u64)> = scenarios
        .iter()
        .flat_map(|(path, name)| seeds.iter().map(move |s| (path.clone(), name.clone(), s)))
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| s.owns(*i)))
        .map(|(_, run)| run)
        .collect();
    let mut records = Vec::new();
    run_pool(
        work,
        jobs,
        |(path, _, seed)| {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let started = Instant::now();
            let outcome = run_child(path, *seed, design, out, timeout, stop, keep);
            Some((outcome, started.elapsed().as_secs_f64()))
        },
        |(path, name, seed), result| {
            let Some((outcome, wall_seconds)) = result else {
                return;
            };
            let mut failures = Vec::new();
            let mut checks = Vec::new();
            let mut probes = BTreeMap::new();
            match outcome {
                ChildOutcome::Done(r) => {
                    checks = r.checks.clone();
                    probes = r
                        .probes
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(p, n)| (p.clone(), *n))
                        .collect();
                    if let Some(p) = &r.panic {
                        failures.push(("panic".to_string(), p.clone()));
                    }
                    for c in r.failed_checks() {
                        let m = c
                            .first_violation
                            .as_ref()
                            .map(|v| format!("at {:.3}s: {}", v.at_s, v.message))
                            .unwrap_or_default();
                        failures.push((c.name.clone(), m));
                    }
                }
                // On Ctrl-C the terminal signals the children too: a child that died then was
                // interrupted, not crashed.
                ChildOutcome::Died(_) if stop.load(Ordering::Relaxed) => return,
                ChildOutcome::Died(m) => {
                    let check = if m.starts_with("hung") {
                        "hang"
                    } else {
                        "crash"
                    };
                    failures.push((check.to_string(), m));
                }
            }
            let record = SeedRecord {
                scenario: name.clone(),
                seed: *seed,
                wall_seconds,
                failures,
                checks,
                repro: crate::report::repro_command(path, *seed, design),
                probes,
            };
            each(&record);
            records.push(record);
        },
    );
    records.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    records
}

#[cfg(test)]
mod tests {
    use super::{Seeds, Shard};

    #[test]
    fn shards_deal_every_run_to_exactly_one_shard() {
        let shards: Vec<Shard> = (0..4).map(|k| format!("{k}/4").parse().unwrap()).collect();
        for position in 0..103 {
            let owners = shards.iter().filter(|s| s.owns(position)).count();
            assert_eq!(owners, 1, "run {position}");
        }
        let counts: Vec<usize> = shards
            .iter()
            .map(|s| (0..103).filter(|p| s.owns(*p)).count())
            .collect();
        assert_eq!(counts, vec![26, 26, 26, 25]);
        assert!("4/4".parse::<Shard>().unwrap_err().contains("0 <= K < N"));
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn seed_ranges_are_inclusive_and_checked() {
        let s: Seeds = "1..200".parse().unwrap();
        assert_eq!((s.first, s.last, s.count()), (1, 200, 200));
        let one: Seeds = "7".parse().unwrap();
        assert_eq!(one.to_string(), "7..7");
        assert_eq!(one.count(), 1);
        assert!("9..3".parse::<Seeds>().is_err());
        assert!("a..b".parse::<Seeds>().unwrap_err().contains("A..B"));
    }
}

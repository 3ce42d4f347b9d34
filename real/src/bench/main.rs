//! faultline-serve-bench: the same concurrent load against etcd 3.4 and faultline-store, in one
//! run on this machine, side by side.
//!
//! Each side is started fresh (etcd with its defaults and a data folder, faultline-store over a
//! SQLite file with its defaults, so both make every acknowledged write durable), then N clients,
//! each on its own connection, put a small value and get the same key back, over and over, for a
//! fixed time after a warm-up. Prints requests per second and latency percentiles per side and
//! writes them as JSON. A benchmark, never a test: its figures depend on the machine.

#[path = "../conformance/processes.rs"]
#[allow(dead_code)]
mod processes;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use store::proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "faultline-serve-bench",
    version,
    about = "Concurrent put/get load against etcd 3.4 and faultline-store, side by side"
)]
struct Cli {
    /// Concurrent clients, each on its own connection.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Measured seconds per side (after the warm-up).
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Seconds of load before measuring, per side.
    #[arg(long, value_name = "S", default_value_t = 2)]
    warmup_s: u64,
    /// Bytes in each value.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    value_bytes: u64,
    /// Rounds: each round runs etcd then faultline-store (alternating, since the machine is noisy).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long, value_name = "PATH")]
    etcd: Option<PathBuf>,
    /// The faultline-store binary (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Where the two data folders go (default: the system's temporary folder, on disk).
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Where the JSON figures are written.
    #[arg(long, value_name = "PATH", default_value = "results/bench-serve.json")]
    out: PathBuf,
}

/// What one client measured.
struct Measured {
    put: Histogram<u64>,
    get: Histogram<u64>,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn client(
    addr: String,
    id: u64,
    value: Vec<u8>,
    warmup: Instant,
    end: Instant,
) -> Result<Measured> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("client {id} cannot connect to {addr}"))?;
    let mut kv = KvClient::new(channel);
    let mut m = Measured {
        put: histogram(),
        get: histogram(),
        errors: 0,
    };
    let mut i = 0u64;
    loop {
        let key = format!("/bench/{id}/{}", i % 100).into_bytes();
        i += 1;
        let started = Instant::now();
        if started >= end {
            return Ok(m);
        }
        let put = kv
            .put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await;
        let between = Instant::now();
        let get = kv
            .range(RangeRequest {
                key,
                ..Default::default()
            })
            .await;
        let done = Instant::now();
        if started < warmup {
            continue;
        }
        let micros = |d: Duration| d.as_micros().clamp(1, 60_000_000) as u64;
        match put {
            Ok(_) => m.put.record(micros(between - started))?,
            Err(_) => m.errors += 1,
        }
        match get {
            Ok(_) => m.get.record(micros(done - between))?,
            Err(_) => m.errors += 1,
        }
    }
}

/// Runs the load against one started server; the side's figures as JSON.
async fn load(cli: &Cli, side: &str, addr: &str) -> Result<serde_json::Value> {
    let value = vec![b'v'; cli.value_bytes as usize];
    let warmup = Instant::now() + Duration::from_secs(cli.warmup_s);
    let end = warmup + Duration::from_secs(cli.seconds);
    let tasks: Vec<_> = (0..cli.clients)
        .map(|id| tokio::spawn(client(addr.to_string(), id, value.clone(), warmup, end)))
        .collect();
    let (mut put, mut get, mut errors) = (histogram(), histogram(), 0);
    for task in tasks {
        let m = task.await??;
        put.add(&m.put)?;
        get.add(&m.get)?;
        errors += m.errors;
    }
    let requests = put.len() + get.len();
    let rate = requests as f64 / cli.seconds as f64;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{side:<16} {rate:>10.0} req/s   put p50 {:>7.2} ms  p99 {:>7.2} ms   get p50 {:>7.2} ms  p99 {:>7.2} ms   errors {errors}",
        ms(&put, 0.5),
        ms(&put, 0.99),
        ms(&get, 0.5),
        ms(&get, 0.99),
    );
    Ok(json!({
        "side": side,
        "requests_per_s": rate,
        "requests": requests,
        "errors": errors,
        "put_ms": {"p50": ms(&put, 0.5), "p99": ms(&put, 0.99), "max": put.max() as f64 / 1000.0},
        "get_ms": {"p50": ms(&get, 0.5), "p99": ms(&get, 0.99), "max": get.max() as f64 / 1000.0},
    }))
}

fn find_etcd(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.etcd {
        return Ok(p.clone());
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file()))
        .context("etcd NOT FOUND on PATH: install Debian's etcd 3.4 (`sudo apt-get install etcd-server etcd-client`) or pass --etcd PATH")
}

fn store_binary(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.store {
        return Ok(p.clone());
    }
    let here = std::env::current_exe()?;
    let beside = here.with_file_name("faultline-store");
    if !beside.is_file() {
        bail!(
            "no faultline-store next to {} (build it, or pass --store PATH)",
            here.display()
        );
    }
    Ok(beside)
}

async fn bench(cli: Cli) -> Result<()> {
    let etcd = find_etcd(&cli)?;
    let store = store_binary(&cli)?;
    let root = cli
        .data_root
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("faultline-serve-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    println!(
        "{} clients, put then get of the same key ({} B values), {} s measured after {} s warm-up, {} round(s); data under {}",
        cli.clients, cli.value_bytes, cli.seconds, cli.warmup_s, cli.rounds, root.display()
    );
    let mut sides = Vec::new();
    for round in 1..=cli.rounds {
        let tag = format!("bench-{round}");
        let server = processes::start_etcd(&etcd, &root, &tag).await?;
        sides.push(load(&cli, "etcd 3.4", &server.addr).await?);
        drop(server);
        let server = processes::start_store_with(&store, &root, &tag, |dir: &Path| {
            vec!["--db".into(), dir.join("store.db").display().to_string()]
        })
        .await?;
        sides.push(load(&cli, "faultline-store", &server.addr).await?);
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&root);
    let rate = |name: &str| {
        let r: Vec<f64> = sides
            .iter()
            .filter(|s| s["side"] == name)
            .map(|s| s["requests_per_s"].as_f64().unwrap_or(0.0))
            .collect();
        r.iter().sum::<f64>() / r.len() as f64
    };
    let ratio = rate("faultline-store") / rate("etcd 3.4");
    println!("faultline-store / etcd 3.4: {ratio:.2}x requests per second");
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = json!({
        "clients": cli.clients,
        "seconds": cli.seconds,
        "value_bytes": cli.value_bytes,
        "rounds": cli.rounds,
        "sides": sides,
        "store_over_etcd": ratio,
    });
    std::fs::write(&cli.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", cli.out.display()))?;
    println!("written {}", cli.out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(bench(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultline-serve-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

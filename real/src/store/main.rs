//! faultline-store: the kine store of `src/`, served for real.
//!
//! The same store code the simulator runs, built without `--cfg madsim`: real tokio and tonic on a
//! TCP port, and SQLite in a file (WAL mode), so a restart keeps the data and the revision. This
//! program owns only the command line, the database file and the process's life (Ctrl-C); it
//! never holds store logic of its own.

mod database;
mod log;
mod tls;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use store::design::Design;
use store::faults::NoFaults;
use store::kine::compactor::{CompactorConfig, MIN_BATCH_REVISIONS};
use store::kine::driver::{Driver, Latency, SharedDatabase};
use store::node::{start_kine, KineSetup};

/// How long open watch streams may hold up a shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "faultline-store",
    version,
    about = "faultline's kine store (etcd v3 API over SQLite), served for real"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the etcd v3 API (KV, Watch with progress requests, Lease, Maintenance Status) over
    /// kine's log in a SQLite file, until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// The SQLite file holding kine's table (created if missing; WAL mode), or `:memory:`.
    #[arg(long, value_name = "PATH")]
    db: String,
    /// Seconds between compactor ticks; 0 disables kine's compactor (Compact requests still work).
    #[arg(long, value_name = "S", default_value_t = 300)]
    compact_interval_s: u64,
    /// Revisions per compaction batch, each one transaction (at least 100, kine's minimum).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = batch_revisions)]
    compact_batch_revisions: i64,
    /// The newest revisions the compactor never compacts (0 or more).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = min_retain)]
    compact_min_retain: i64,
    /// How long one compaction batch may take before it is cancelled.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    compact_timeout_ms: u64,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

fn batch_revisions(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= MIN_BATCH_REVISIONS => Ok(n),
        _ => Err(format!(
            "allowed: a whole number of revisions, at least {MIN_BATCH_REVISIONS} (kine's minimum batch)"
        )),
    }
}

fn min_retain(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err("allowed: a whole number of revisions, 0 or more".into()),
    }
}

fn main() -> ExitCode {
    // clap exits 2 on a usage error, naming the flag and what it allows.
    let Command::Serve(args) = Cli::parse().command;
    // Certificates are read before the database is touched: a bad flag leaves no file behind.
    let tls = match args.tls.server_config() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("faultline-store: {e:#}");
            return ExitCode::from(2);
        }
    };
    let db = match database::open(&args.db) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("faultline-store: --db {}: {e:#}", args.db);
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = runtime.block_on(serve(args, tls, db.clone()));
    // Dropping the runtime drops the poller and compactor; an interrupted compaction batch is
    // one SQLite transaction and never half-applied.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match Arc::try_unwrap(db) {
        // Closing the last connection checkpoints the WAL into the database file.
        Ok(db) => drop(db),
        Err(_) => eprintln!("faultline-store: the database is still in use; SQLite will recover its WAL on the next start"),
    }
    eprintln!("faultline-store: stopped");
    code
}

async fn serve(args: ServeArgs, tls: Option<tls::Tls>, db: SharedDatabase) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "faultline-store: --listen {}: cannot listen there: {e}",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let compactor = CompactorConfig {
        interval: Duration::from_secs(args.compact_interval_s),
        jitter_pct: 0,
        min_retain: args.compact_min_retain,
        batch_revisions: args.compact_batch_revisions,
        timeout: Duration::from_millis(args.compact_timeout_ms),
        variant: Default::default(),
    };
    let setup = KineSetup {
        name: "faultline-store".into(),
        member_id: 1,
        db_call_timeout: Duration::from_secs(10),
        compactor,
        design: Design::default(),
        observer: Arc::new(log::Log),
        faults: Arc::new(NoFaults),
    };
    let driver = Driver::Local {
        db,
        latency: Latency {
            min_ms: 0,
            max_ms: 0,
        },
    };
    let mut builder = tonic::transport::Server::builder();
    let scheme = match &tls {
        Some(tls) => {
            builder = match builder.tls_config(tls.config.clone()) {
                Ok(builder) => builder,
                Err(e) => {
                    eprintln!("faultline-store: TLS: {e}");
                    return ExitCode::from(2);
                }
            };
            "https"
        }
        None => "http",
    };
    let api = start_kine(driver, setup).await;
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .expect("a bound listener accepts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(api.router_on(builder).serve_with_incoming_shutdown(
        incoming,
        async {
            let _ = stopped.await;
        },
    ));
    let compaction = if args.compact_interval_s == 0 {
        "compactor off".to_string()
    } else {
        format!(
            "compactor every {} s, batches of {} revisions, keeping the newest {}",
            args.compact_interval_s, args.compact_batch_revisions, args.compact_min_retain
        )
    };
    let security = tls
        .as_ref()
        .map_or("plain text".to_string(), |t| t.describe());
    eprintln!(
        "faultline-store: serving the etcd v3 API (KV, Watch, Lease, Maintenance) on {scheme}://{addr}, {security}, database {} ({compaction}); Ctrl-C stops",
        args.db
    );
    // Tests and scripts read the address from this line on stdout.
    println!("listening on {addr}");
    tokio::select! {
        biased;
        signal = shutdown_signal() => eprintln!("faultline-store: {signal}, shutting down"),
        ended = &mut server => {
            eprintln!("faultline-store: the server stopped by itself: {ended:?}");
            return ExitCode::from(1);
        }
    }
    let _ = stop.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        eprintln!(
            "faultline-store: watch streams still open after {} s are cut",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    ExitCode::SUCCESS
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM and names which came.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be caught");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

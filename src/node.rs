//! Node entry points: what runs on a kine server node and on a database node.
//!
//! Each function is a node's whole life: it starts, serves, and runs until the node is killed.
//! A restart calls it again; everything that must survive (the database) is passed in, and
//! everything else is rebuilt. Startup waits for the database, bounded by the node's lifetime.
//! [`start_kine`] is the part the real server binary shares with the simulator's nodes.

use crate::design::Design;
use crate::faults::SharedFaults;
use crate::kine::compactor::{Compactor, CompactorConfig};
use crate::kine::database::{DbRequest, DbResponse};
use crate::kine::driver::{serve_database, Driver, Latency, SharedDatabase};
use crate::kine::store::KineStore;
use crate::kine::watch::{poll, WatchHub};
use crate::observe::{SharedObserver, StoreEvent};
use crate::server::EtcdApi;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a kine server finds its database.
#[derive(Clone)]
pub enum DatabaseLocation {
    /// On this node (single topology).
    Local {
        db: SharedDatabase,
        latency: Latency,
    },
    /// On a database node over the network (HA topology).
    Remote { addr: SocketAddr },
}

#[derive(Clone)]
pub struct KineServerConfig {
    pub name: String,
    pub member_id: u64,
    pub listen: SocketAddr,
    pub database: DatabaseLocation,
    pub db_call_timeout: Duration,
    pub compactor: CompactorConfig,
    /// Where the apiserver facade serves requests and watch streams, when this server runs one.
    pub apiserver: Option<(SocketAddr, SocketAddr)>,
}

/// What a kine server needs besides its database, wherever it runs.
pub struct KineSetup {
    pub name: String,
    pub member_id: u64,
    pub db_call_timeout: Duration,
    pub compactor: CompactorConfig,
    pub design: Design,
    pub observer: SharedObserver,
    pub faults: SharedFaults,
}

/// Starts a kine server's work on its database: waits until the schema and compact marker
/// exist, then starts the compactor (unless its interval is zero) and the watch poller. Returns
/// the etcd API, ready to be served.
pub async fn start_kine(driver: Driver, setup: KineSetup) -> EtcdApi {
    let store = Arc::new(
        KineStore::new(driver, setup.db_call_timeout, setup.member_id)
            .with_list_variant(setup.design.list),
    );
    // kine cannot serve before its schema and compact marker exist; retry each second, as k3s
    // restarts kine until the database answers.
    let (current, compact) = loop {
        match store.call(DbRequest::Startup).await {
            Ok(DbResponse::Started {
                current,
                compact,
                leases,
            }) => {
                if leases > 0 {
                    store.leases_in_use();
                }
                break (current, compact);
            }
            Ok(other) => unreachable!("Startup answered {other:?}"),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    setup.observer.record(StoreEvent::ServerStarted {
        current_revision: current,
        compact_revision: compact,
    });
    let mut compactor_config = setup.compactor;
    compactor_config.variant = setup.design.compactor;
    if !compactor_config.interval.is_zero() {
        let compactor = Compactor {
            store: store.clone(),
            config: compactor_config,
            server: setup.name,
            observer: setup.observer,
            faults: setup.faults,
        };
        tokio::spawn(compactor.run());
    }
    let hub = Arc::new(WatchHub::default());
    tokio::spawn(poll(store.clone(), hub.clone(), setup.design.watch));
    EtcdApi { store, hub }
}

/// Runs a kine server node of the simulation: connect to the database, start the kine server,
/// the apiserver facade when configured, and serve the etcd API. Simulator only: the facade's
/// watch streams ride madsim's in-memory connections.
#[cfg(madsim)]
pub async fn run_kine_server(
    config: KineServerConfig,
    design: Design,
    observer: SharedObserver,
    faults: SharedFaults,
) {
    let driver = match &config.database {
        DatabaseLocation::Local { db, latency } => Driver::Local {
            db: db.clone(),
            latency: *latency,
        },
        DatabaseLocation::Remote { addr } => Driver::remote(*addr)
            .await
            .expect("a server can always bind an ephemeral endpoint"),
    };
    let watchlist = design.watchlist;
    let apiserver = design.apiserver;
    let setup = KineSetup {
        name: config.name.clone(),
        member_id: config.member_id,
        db_call_timeout: config.db_call_timeout,
        compactor: config.compactor.clone(),
        design,
        observer,
        faults,
    };
    let api = start_kine(driver, setup).await;
    if let Some((api_addr, watch_addr)) = config.apiserver {
        use crate::apiserver::{serve_api, ApiServer, Backend};
        let facade = Arc::new(ApiServer {
            backend: Backend::Kine {
                store: api.store.clone(),
                hub: api.hub.clone(),
            },
            watchlist,
            consistent_lists: crate::apiserver::ConsistentLists::new(apiserver),
        });
        tokio::spawn(serve_api(facade, api_addr, watch_addr));
    }
    api.router()
        .serve(config.listen)
        .await
        .expect("the etcd API serves until the node is killed");
}

/// Runs the shared database node of the HA topology.
pub async fn run_database_node(
    db: SharedDatabase,
    listen: SocketAddr,
    latency: Latency,
    call_timeout: Duration,
    observer: SharedObserver,
) {
    {
        let mut guard = db.lock().expect("database lock poisoned");
        guard.set_observer(observer);
        guard
            .announce()
            .expect("the database reopens its committed data");
    }
    serve_database(db, listen, latency, call_timeout).await;
}

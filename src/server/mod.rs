//! The node server: opens storage, starts Raft, serves the public gRPC API (Kv,
//! Cluster) and the internal Raft service, and shuts all of it down cleanly.
//!
//! [`run_node`] takes already-bound listeners and a shutdown future, so callers (the
//! CLI, tests) own ports and signals. Shutdown stops accepting requests, stops Raft,
//! and syncs storage before returning.

pub mod auth;
pub mod binlog;
pub mod cluster;
pub mod core;
pub mod freshness;
pub mod health;
pub mod kv;
pub mod layer;
pub mod metrics;
pub mod placement;
pub mod ratelimit;
pub mod read_batch;
pub mod snapshots;
pub mod status;
pub mod sync_linger;
pub mod validate;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::hlc::{Hlc, SystemClock, Timestamp};
use crate::pb::v1 as pb;
use crate::raft::network::Network;
use crate::raft::service::RaftService;
use crate::raft::{openraft_config, MeridianRaft, NodeInfo};
use crate::storage::state_machine::DedupLimits;
use crate::storage::{LogStore, StateMachine, Store};

use self::core::NodeCore;
use self::validate::Limits;

/// How long shutdown waits for in-flight requests before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive interval the server uses towards clients.
pub const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Max concurrent HTTP/2 streams per client connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage could not be opened (including a data dir of another node).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The server failed.
    #[error("server: {0}")]
    Serve(String),
    /// Bootstrap failed.
    #[error("bootstrap: {0}")]
    Bootstrap(Error),
    /// TLS material, tokens file or metrics endpoint unusable (operator input).
    #[error("{0}")]
    Security(String),
}

impl StartError {
    /// Whether the failure is the operator's input (config or data dir): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StartError::Config(_)
                | StartError::Security(_)
                | StartError::Storage(crate::storage::StorageError::IdentityMismatch { .. })
        )
    }
}

async fn build_core(
    cfg: NodeConfig,
) -> Result<(Arc<NodeCore>, MeridianRaft, Store, LogStore), StartError> {
    cfg.validate()?;
    let store = Store::open(&cfg.data_dir, &cfg.cluster_name, cfg.id)?;
    let clock = Arc::new(SystemClock::new());
    let hlc = Hlc::new(cfg.id, clock.clone(), cfg.max_clock_offset(), Timestamp::ZERO);
    let mut log_store = LogStore::open(&store)?;
    let had_state = {
        use openraft::storage::RaftLogStorage;
        log_store
            .get_log_state()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .last_log_id
            .is_some()
    };
    let dedup = DedupLimits {
        window_ns: cfg.dedup_window_secs.saturating_mul(1_000_000_000),
        max_entries: cfg.dedup_max_entries,
    };
    let retention = crate::storage::binlog::RetentionLimits {
        max_events: cfg.binlog.retention_events,
        max_age_ns: cfg.binlog.retention_age_secs.saturating_mul(1_000_000_000),
    };
    let sm = StateMachine::open(&store, hlc.clone(), dedup)?.with_binlog_retention(retention);
    let reader = sm.reader();
    let dedup_stats = sm.dedup_stats();
    let routes = cfg.routes.iter().filter_map(|r| Some((r.id, r.raft_addr.clone()?))).collect();
    let tls =
        crate::tls::NodeTls::load(&cfg.tls).map_err(|e| StartError::Security(e.to_string()))?;
    let network = Network::new(
        cfg.cluster_name.clone(),
        hlc.clone(),
        cfg.raft.snapshot_chunk_bytes as usize,
        routes,
        tls,
    );
    let rcfg = openraft_config(&cfg).map_err(|e| StartError::Raft(e.to_string()))?;
    let raft = MeridianRaft::new(cfg.id, rcfg, network.clone(), log_store.clone(), sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let limits = Limits { max_key_bytes: cfg.max_key_bytes, max_value_bytes: cfg.max_value_bytes };
    let contact = Arc::new(crate::raft::service::LeaderContact::default());
    let core = NodeCore {
        id: cfg.id,
        config: cfg,
        raft: raft.clone(),
        reader,
        hlc,
        clock,
        limits,
        had_state,
        contact,
        network,
        dedup_stats,
        freshness: Arc::default(),
        reads: Default::default(),
    };
    Ok((Arc::new(core), raft, store, log_store))
}

async fn bootstrap(core: &NodeCore) -> Result<(), StartError> {
    let cfg = &core.config;
    if !cfg.bootstrap {
        return Ok(());
    }
    let members: BTreeMap<u64, NodeInfo> = cfg
        .peers
        .iter()
        .map(|p| {
            (
                p.id,
                NodeInfo {
                    api_addr: p.api_addr.clone(),
                    raft_addr: p.raft_addr.clone(),
                    region: p.region.clone(),
                },
            )
        })
        .collect();
    let done = cluster::initialize(core, members).await.map_err(StartError::Bootstrap)?;
    if done {
        tracing::info!(members = cfg.peers.len(), "bootstrapped a new cluster");
    }
    Ok(())
}

/// The request layer of the public API from `[auth]`, `[tls]` and `[limits]`.
/// Accepted connections with Nagle's algorithm off. The builder's `tcp_nodelay` only
/// applies to listeners tonic binds itself; with our own listener every response's
/// trailers (a separate small write after the data) waited for the client's delayed
/// ACK, ~40 ms, whenever a client had one request in flight.
fn no_delay(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn api_layer(cfg: &NodeConfig) -> Result<layer::ApiLayer, StartError> {
    let principals = match &cfg.auth.tokens_file {
        Some(path) => {
            Some(auth::Principals::load(path).map_err(|e| StartError::Security(e.to_string()))?)
        }
        None => None,
    };
    Ok(layer::ApiLayer::new(layer::LayerState {
        principals,
        require_client_cert: cfg.tls.require_client_cert,
        limiter: ratelimit::ClientLimiter::new(&cfg.limits),
    }))
}

/// Run a node on the given listeners until `shutdown` resolves.
pub async fn run_node(
    cfg: NodeConfig,
    api: TcpListener,
    raft_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (core, raft, store, log_store) = build_core(cfg).await?;
    let api_layer = api_layer(&core.config)?;
    if let Some(addr) = core.config.metrics_addr {
        metrics::install_exporter(addr).map_err(StartError::Security)?;
    }
    let tls = core.network.tls().cloned();
    let raft_svc = RaftService::new(
        raft.clone(),
        core.id,
        core.config.cluster_name.clone(),
        core.hlc.clone(),
        store.snapshot_dir(),
        core.contact.clone(),
    );
    let max = crate::raft::network::PEER_MAX_MESSAGE_BYTES;
    let api_max = kv::API_MAX_MESSAGE_BYTES;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut raft_builder = tonic::transport::Server::builder();
    let mut api_builder = tonic::transport::Server::builder();
    if let Some(t) = &tls {
        let tls_err = |e: tonic::transport::Error| StartError::Security(format!("tls: {e}"));
        raft_builder = raft_builder.tls_config(t.peer_server()).map_err(tls_err)?;
        api_builder = api_builder.tls_config(t.api_server()).map_err(tls_err)?;
    }
    let raft_server = raft_builder
        .add_service(
            pb::raft_server::RaftServer::new(raft_svc)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(no_delay(raft_listener), stopped(stop_rx.clone()));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts "" as SERVING; nothing is known yet, so say NOT_SERVING until
    // the health task has evaluated the node.
    for service in ["", "meridian.v1.Kv"] {
        health_reporter.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
    }
    // Reflection in both versions: v1 for current tools, v1alpha for older clients
    // (grpcurl before 1.9, Python's grpcio-reflection).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("meridian.v1.Kv")
            .with_service_name("meridian.v1.Cluster")
            .with_service_name("meridian.v1.Binlog")
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| StartError::Serve(format!("reflection: {e}")))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| StartError::Serve(format!("reflection: {e}")))?;
    let api_server = api_builder
        .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(api_layer)
        .add_service(
            pb::kv_server::KvServer::new(kv::KvService::new(core.clone()))
                .max_decoding_message_size(api_max)
                .max_encoding_message_size(api_max),
        )
        .add_service(pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(
            core.clone(),
        )))
        .add_service(
            pb::binlog_server::BinlogServer::new(binlog::BinlogService::new(core.clone()))
                .max_encoding_message_size(api_max),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(no_delay(api), stopped(stop_rx.clone()));
    let raft_task = tokio::spawn(raft_server);
    let api_task = tokio::spawn(api_server);
    let health_task = tokio::spawn(health::run(core.clone(), health_reporter, stop_rx.clone()));
    let freshness_task = tokio::spawn(freshness::run(core.clone(), stop_rx.clone()));
    let placement_task = tokio::spawn(placement::run(core.clone(), stop_rx.clone()));
    let linger_task = tokio::spawn(sync_linger::run(
        raft.clone(),
        log_store.clone(),
        Duration::from_micros(core.config.raft.leader_sync_linger_us),
        stop_rx.clone(),
    ));
    let snapshot_task =
        tokio::spawn(snapshots::run(core.clone(), store.clone(), log_store, stop_rx.clone()));
    let metrics_task = tokio::spawn(metrics::run_raft_metrics(
        raft.clone(),
        core.id,
        core.config.region.clone(),
        stop_rx.clone(),
    ));
    tracing::info!(
        id = core.id,
        region = %core.config.region,
        api = %core.config.api_addr,
        raft = %core.config.raft_addr,
        tls = tls.is_some(),
        auth = core.config.auth.tokens_file.is_some(),
        metrics = ?core.config.metrics_addr,
        "node started"
    );
    bootstrap(&core).await?;
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, api_task).await;
    let _ = health_task.await;
    let _ = freshness_task.await;
    let _ = placement_task.await;
    let _ = snapshot_task.await;
    let _ = linger_task.await;
    let _ = metrics_task.await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, raft_task).await;
    store.sync()?;
    tracing::info!("stopped");
    Ok(())
}

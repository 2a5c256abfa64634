//! `kess daemon`: opens the store, serves gRPC and HTTP, and drains on SIGTERM.
//!
//! Shutdown: on SIGTERM or SIGINT the daemon turns not-ready (health NOT_SERVING, /readyz 503),
//! stops accepting connections, lets in-flight streams finish for up to the grace period, and
//! exits 0. Pushes still running after the grace period are dropped, which deletes their temp
//! files, so nothing partial survives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::config::DaemonConfig;
use crate::grpc::{AdminApi, ShuffleApi};
use crate::http::{self, Readiness};
use crate::metrics::{GRPC, SPARK};
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::shuffle_service_server::ShuffleServiceServer;
use crate::spark::body_pipe::PipePool;
use crate::spark::{self, connection::SparkContext, server::SparkListenerConfig};
use crate::store::{now_ms, Store, StoreConfig};
use crate::tcp::{CongestionPolicy, PeerLocator, Peers};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A started daemon: its bound addresses, and a handle to stop it.
pub struct RunningDaemon {
    pub spark_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: Arc<Store>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningDaemon {
    /// Starts draining and waits until the daemon has stopped.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }

    /// Waits for SIGTERM or SIGINT, then shuts down.
    pub async fn run_until_signal(self) -> Result<(), BoxError> {
        wait_for_signal().await?;
        tracing::info!("signal received; draining");
        self.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Sets up a listener's congestion control (`src/tcp/`), logs it and exports it.
fn congestion_policy(
    name: &'static str,
    listener: &TcpListener,
    config: &DaemonConfig,
    locator: &Arc<PeerLocator>,
) -> Result<Arc<CongestionPolicy>, BoxError> {
    let policy = CongestionPolicy::configure(
        listener,
        config.tcp_congestion.as_deref(),
        config.local_congestion(),
        Arc::clone(locator),
    )
    .map_err(|e| format!("{name} listener: {e}"))?;
    tracing::info!(
        listener = name,
        local = %policy.local,
        remote = %policy.remote,
        local_peers = ?config.local_peers,
        "TCP congestion control for connections from this node and from others"
    );
    for (peers, algorithm) in [
        (Peers::Local, &policy.local),
        (Peers::Remote, &policy.remote),
    ] {
        crate::metrics::tcp_congestion_control(name, peers.label(), algorithm.clone());
    }
    Ok(Arc::new(policy))
}

/// Opens the store, binds every listener and starts serving.
pub async fn start(
    config: DaemonConfig,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<RunningDaemon, BoxError> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.fsync = config.fsync;
    store_config.min_free_bytes = config.min_free_bytes.as_u64();
    store_config.index_cache_bytes = config.index_cache_bytes.as_u64() as usize;
    store_config.max_open_files = config.max_open_files;
    let store = tokio::task::spawn_blocking(move || Store::open(store_config)).await??;

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("binding gRPC address {}: {e}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("binding HTTP address {}: {e}", config.http_addr))?;
    let spark_listener = TcpListener::bind(config.spark_addr)
        .await
        .map_err(|e| format!("binding Spark address {}: {e}", config.spark_addr))?;
    let locator = Arc::new(PeerLocator::new(config.local_peers));
    let spark_policy = congestion_policy(SPARK, &spark_listener, &config, &locator)?;
    let grpc_policy = congestion_policy(GRPC, &grpc_listener, &config, &locator)?;
    let spark_addr = spark_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // HTTP stays up until gRPC has drained, so /readyz reports 503 during the drain.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let readiness = Readiness::default();

    let max_message = config.max_message_bytes.as_u64() as usize;
    let shuffle = ShuffleServiceServer::new(ShuffleApi::new(
        Arc::clone(&store),
        config.fetch_chunk_bytes.as_u64() as usize,
        max_message,
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let admin =
        AdminServiceServer::new(AdminApi::new(Arc::clone(&store), config.node_name.clone()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ShuffleServiceServer<ShuffleApi>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let incoming = TcpListenerStream::new(grpc_listener).map(move |conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
            if let (Ok(peer), Ok(local)) = (s.peer_addr(), s.local_addr()) {
                let reason = grpc_policy.on_accept(s, peer, local);
                crate::metrics::tcp_connection(GRPC, reason);
            }
        })
    });
    let grpc_server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(shuffle)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, signalled(shutdown_rx.clone()));

    let scrape_store = Arc::clone(&store);
    let on_scrape = Arc::new(move || {
        if let Ok(free) = scrape_store.disk_free() {
            crate::metrics::disk_free(free);
        }
    });
    let http_server = axum::serve(
        http_listener,
        http::router(metrics, readiness.clone(), on_scrape),
    )
    .with_graceful_shutdown(signalled(http_stop_rx));

    let spark_ctx = Arc::new(SparkContext::new(
        Arc::clone(&store),
        config.spark_allowed_roots.clone(),
        config
            .spark_secret()
            .map_err(|e| format!("reading the Spark auth secret: {e}"))?,
    ));
    let spark_server = spark::server::serve(
        spark_listener,
        spark_ctx,
        SparkListenerConfig {
            max_connections: config.spark_max_connections,
            idle_timeout: config.spark_idle_timeout,
            max_frame_bytes: config.spark_max_frame_bytes.as_u64(),
            pipes: PipePool::new(config.spark_pipe_bytes.as_u64()),
            congestion: spark_policy,
        },
        shutdown_rx.clone(),
    );
    tokio::spawn(crate::memory::trim_when_idle(shutdown_rx.clone()));
    if !config.app_idle_ttl.is_zero() {
        tokio::spawn(expire_idle_apps(
            Arc::clone(&store),
            config.app_idle_ttl,
            shutdown_rx.clone(),
        ));
    }

    let grace = config.grace_period;
    let ready = readiness.clone();
    let mut drain_rx = shutdown_rx.clone();
    let done = tokio::spawn(async move {
        let http_task = tokio::spawn(async move {
            if let Err(e) = http_server.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let grpc_task = tokio::spawn(async move {
            if let Err(e) = grpc_server.await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let spark_task = tokio::spawn(spark_server);
        let _ = drain_rx.wait_for(|stop| *stop).await;
        ready.set(false);
        health_reporter
            .set_not_serving::<ShuffleServiceServer<ShuffleApi>>()
            .await;
        let drained = async {
            let _ = grpc_task.await;
            let _ = spark_task.await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(grace = ?grace, "grace period over with streams still open; exiting anyway");
        }
        let _ = http_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    });

    readiness.set(true);
    tracing::info!(
        grpc = %grpc_addr,
        spark = %spark_addr,
        http = %http_addr,
        data_dir = %config.data_dir.display(),
        fsync = config.fsync,
        "kess daemon ready"
    );
    Ok(RunningDaemon {
        spark_addr,
        grpc_addr,
        http_addr,
        store,
        shutdown: shutdown_tx,
        done,
    })
}

/// Removes applications idle for longer than `ttl`, for applications no controller cleans up
/// (Spark sends no "application ended" message).
async fn expire_idle_apps(store: Arc<Store>, ttl: Duration, mut shutdown: watch::Receiver<bool>) {
    let period = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let cutoff = now_ms() - ttl.as_millis() as i64;
        for app in store.idle_apps(cutoff) {
            let store = Arc::clone(&store);
            let id = app.clone();
            match tokio::task::spawn_blocking(move || store.remove_app(&id)).await {
                Ok(Ok(report)) => {
                    crate::metrics::app_expired();
                    tracing::info!(app = %app, ttl = ?ttl, bytes_freed = report.bytes_freed, "removed an idle application");
                }
                Ok(Err(e)) => {
                    tracing::warn!(app = %app, error = %e, "could not remove an idle application")
                }
                Err(e) => {
                    tracing::warn!(app = %app, error = %e, "idle-application removal task failed")
                }
            }
        }
    }
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

pub(crate) async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

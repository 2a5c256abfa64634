//! The Spark shuffle-service listener (port 7337): accepts connections up to a limit, decodes
//! frames with `SparkFrameCodec` (a whole frame before parsing, bounded size), and writes each
//! request's replies in order, block bodies straight from memory maps. A malformed frame closes
//! that connection only.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::codec::FramedRead;

use super::connection::{Reply, SparkConnection, SparkContext};
use super::frame::SparkFrameCodec;
use crate::metrics;

#[derive(Debug, Clone)]
pub struct SparkListenerConfig {
    pub max_connections: usize,
    /// Connections idle this long are closed (Spark's `spark.shuffle.io.connectionTimeout`).
    pub idle_timeout: Duration,
    /// Largest request frame accepted.
    pub max_frame_bytes: u64,
}

/// Accepts connections until `shutdown` turns true, then waits for the open ones to finish
/// their streams and close.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SparkContext>,
    config: SparkListenerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Spark listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "Spark connection limit reached; refusing");
            metrics::error(metrics::SPARK, "connection_limit");
            drop(socket);
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let config = config.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            metrics::spark_connections(1.0);
            if let Err(e) = handle(socket, peer.to_string(), ctx, &config, shutdown).await {
                tracing::debug!(%peer, error = %e, "Spark connection ended with an I/O error");
            }
            metrics::spark_connections(-1.0);
        });
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn handle(
    socket: TcpStream,
    peer: String,
    ctx: Arc<SparkContext>,
    config: &SparkListenerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let codec = SparkFrameCodec::new().with_max_frame_length(config.max_frame_bytes);
    let mut frames = FramedRead::new(read, codec);
    let mut out = BufWriter::with_capacity(64 << 10, write);
    let mut conn = SparkConnection::new(ctx, peer.clone());
    loop {
        let draining = *shutdown.borrow();
        if draining && !conn.has_open_streams() {
            break;
        }
        let next = tokio::select! {
            r = tokio::time::timeout(config.idle_timeout, frames.next()) => r,
            _ = shutdown.changed(), if !draining => continue,
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(%peer, "closing idle Spark connection");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // Framing is lost: answer nothing and close this connection only.
                tracing::warn!(%peer, error = %e, "malformed Spark frame; closing the connection");
                metrics::error(metrics::SPARK, "malformed_frame");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        for reply in conn.handle(frame) {
            match reply {
                Reply::Frame(f) => {
                    let mut buf = bytes::BytesMut::new();
                    if let Err(e) = f.encode(&mut buf) {
                        tracing::error!(%peer, error = %e, "could not encode a reply; closing");
                        return Ok(());
                    }
                    out.write_all(&buf).await?;
                }
                Reply::WithBody { header, body } => {
                    out.write_all(&header).await?;
                    // Large bodies bypass the buffer: written from the map to the socket.
                    out.write_all(&body).await?;
                }
            }
        }
        // Pipelined requests already buffered are answered before one flush.
        if frames.read_buffer().is_empty() || conn.close {
            out.flush().await?;
        }
        if conn.close {
            break;
        }
    }
    out.flush().await?;
    out.shutdown().await
}

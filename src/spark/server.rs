//! The Spark shuffle-service listener (port 7337): accepts connections up to a limit, decodes
//! frames with `SparkFrameCodec` (a whole frame before parsing, bounded size), and writes each
//! request's replies in order. Block bodies go from the page cache to the socket without a copy:
//! through a pipe lent from the listener's budget (`body_pipe`), so the bodies of pipelined
//! requests leave in one splice per batch, or with sendfile when no pipe is free; small ones are
//! copied into the write buffer instead, so pipelined tiny blocks leave in a few large writes
//! rather than one syscall each. A body not in the page cache is
//! read or sent from the blocking pool, so waiting for the disk stalls its own connection, not
//! every connection of a runtime thread. A malformed frame closes that connection only.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{self, MsgFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::codec::FramedRead;

use super::body_pipe::{BodyPipe, PipePool, PooledPipe};
use super::connection::{Reply, SparkConnection, SparkContext};
use super::frame::SparkFrameCodec;
use crate::metrics;
use crate::store::FileSegment;
use crate::tcp::CongestionPolicy;

/// Linux's MSG_MORE (`<sys/socket.h>`), which nix does not name.
const MSG_MORE: MsgFlags = MsgFlags::from_bits_retain(0x8000);

/// Bodies up to this size are copied into the write buffer; larger ones are sent with sendfile.
const INLINE_BODY_MAX: u64 = 16 << 10;

#[derive(Debug, Clone)]
pub struct SparkListenerConfig {
    pub max_connections: usize,
    /// Connections idle this long are closed (Spark's `spark.shuffle.io.connectionTimeout`).
    pub idle_timeout: Duration,
    /// Largest request frame accepted.
    pub max_frame_bytes: u64,
    /// Which congestion control each connection gets.
    pub congestion: Arc<CongestionPolicy>,
    /// Where connections borrow a pipe for a batch of block bodies.
    pub pipes: Arc<PipePool>,
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
        if let Ok(local) = socket.local_addr() {
            let reason = config.congestion.on_accept(&socket, peer, local);
            metrics::tcp_connection(metrics::SPARK, reason);
        }
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
    let mut out = Outbox::new(write, Arc::clone(&config.pipes));
    let mut conn = SparkConnection::new(ctx, peer.clone());
    // Whether the read buffer holds the whole next request (pipelined chunk requests).
    let mut next_buffered = false;
    loop {
        let draining = *shutdown.borrow();
        if draining && !conn.has_open_streams() {
            break;
        }
        // A request already buffered whole is taken without arming the idle timer (pipelined
        // chunk requests: one timer per block showed in profiles).
        let next = if next_buffered {
            Ok(frames.next().await)
        } else {
            tokio::select! {
                r = tokio::time::timeout(config.idle_timeout, frames.next()) => r,
                _ = shutdown.changed(), if !draining => continue,
            }
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
        next_buffered = frames.decoder().holds_whole_frame(frames.read_buffer());
        for reply in conn.handle(frame) {
            match reply {
                Reply::Frame(f) => {
                    let mut buf = bytes::BytesMut::new();
                    if let Err(e) = f.encode(&mut buf) {
                        tracing::error!(%peer, error = %e, "could not encode a reply; closing");
                        return Ok(());
                    }
                    out.push(&buf).await?;
                }
                Reply::WithBody { header, body } => {
                    if body.len() <= INLINE_BODY_MAX {
                        // Header and body go into the buffer together; a failed read leaves
                        // neither, so the connection can close cleanly and Spark retries.
                        if let Err(e) = out.append_inline(&header, &body).await {
                            tracing::warn!(%peer, error = %e, "could not read a block; closing");
                            metrics::error(metrics::SPARK, "read_failure");
                            return Ok(());
                        }
                        out.flush_if_full().await?;
                    } else {
                        out.push(&header).await?;
                        out.send_file(&body).await?;
                    }
                }
            }
        }
        // Pipelined requests already buffered are answered before one flush; a request only
        // partly here does not hold back the replies before it.
        if !next_buffered || conn.close {
            out.flush(false).await?;
        }
        if conn.close {
            break;
        }
    }
    out.flush(false).await?;
    out.writer.shutdown().await
}

/// The write side of a connection: replies are gathered in one buffer and leave in few
/// syscalls. A cached body goes into a pipe borrowed for the batch, behind the buffered bytes
/// (its frame header, and whatever small replies precede it); the pipe goes to the socket when
/// it is full or the batch ends. Without a pipe (or for a body on disk), the buffered bytes are
/// sent with MSG_MORE and the body with sendfile, so header and body still share TCP segments.
struct Outbox {
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    pipes: Arc<PipePool>,
    /// Borrowed at the batch's first cached body, given back when the batch is out.
    pipe: Option<PooledPipe>,
}

impl Outbox {
    const FLUSH_AT: usize = 64 << 10;

    fn new(writer: OwnedWriteHalf, pipes: Arc<PipePool>) -> Self {
        Self {
            writer,
            buf: Vec::with_capacity(Self::FLUSH_AT + INLINE_BODY_MAX as usize),
            pipes,
            pipe: None,
        }
    }

    async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.flush_if_full().await
    }

    /// Buffers a frame header and its (small) body read from the file (on the blocking pool if
    /// it is not in the page cache); on a read error the buffer is left as it was.
    async fn append_inline(&mut self, header: &[u8], body: &FileSegment) -> std::io::Result<()> {
        let mark = self.buf.len();
        self.buf.extend_from_slice(header);
        let read = if body.is_cached() {
            body.read_into(&mut self.buf)
        } else {
            metrics::spark_uncached_block();
            let segment = body.clone();
            let mut bytes = Vec::new();
            tokio::task::spawn_blocking(move || segment.read_into(&mut bytes).map(|()| bytes))
                .await
                .map_err(std::io::Error::other)
                .flatten()
                .map(|bytes| self.buf.extend_from_slice(&bytes))
        };
        read.inspect_err(|_| self.buf.truncate(mark))
    }

    async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Sends everything buffered (the pipe first); `more` tells the kernel more data follows at
    /// once. Without more, the batch is over and the pipe goes back to the pool.
    async fn flush(&mut self, more: bool) -> std::io::Result<()> {
        if let Some(pipe) = self.pipe.as_mut() {
            drain(self.writer.as_ref(), pipe, more || !self.buf.is_empty()).await?;
            if !more {
                self.pipe = None;
            }
        }
        let flags = if more {
            MSG_MORE | MsgFlags::MSG_NOSIGNAL
        } else {
            MsgFlags::MSG_NOSIGNAL
        };
        let socket: &TcpStream = self.writer.as_ref();
        let mut at = 0;
        while at < self.buf.len() {
            let pending = &self.buf[at..];
            let sent = socket
                .async_io(Interest::WRITABLE, || {
                    socket::send(socket.as_raw_fd(), pending, flags).map_err(std::io::Error::from)
                })
                .await?;
            if sent == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            at += sent;
        }
        self.buf.clear();
        Ok(())
    }

    async fn send_file(&mut self, body: &FileSegment) -> std::io::Result<()> {
        if !body.is_cached() {
            metrics::spark_uncached_block();
            self.flush(true).await?;
            return send_file_from_disk(self.writer.as_ref(), body).await;
        }
        if self.pipe.is_none() {
            self.pipe = self.pipes.take();
        }
        match self.pipe.as_mut() {
            Some(pipe) => pipe_body(self.writer.as_ref(), pipe, &mut self.buf, body).await,
            None => {
                self.flush(true).await?;
                send_file(self.writer.as_ref(), body).await
            }
        }
    }
}

/// Puts `buffered` (then cleared) and `body` into the pipe, emptying it into the socket whenever
/// it is full.
async fn pipe_body(
    socket: &TcpStream,
    pipe: &mut BodyPipe,
    buffered: &mut Vec<u8>,
    body: &FileSegment,
) -> std::io::Result<()> {
    let mut at = 0;
    while at < buffered.len() {
        match pipe.write(&buffered[at..])? {
            0 => drain(socket, pipe, true).await?,
            n => at += n,
        }
    }
    buffered.clear();
    let end = body.offset() + body.len();
    let mut offset = body.offset() as i64;
    while (offset as u64) < end {
        let count = (end - offset as u64).min(1 << 30) as usize;
        match pipe.splice_from(body.fd(), &mut offset, count) {
            Ok(0) => drain(socket, pipe, true).await?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(file_cut_short()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splices everything in the pipe to the socket, waiting for room as needed.
async fn drain(socket: &TcpStream, pipe: &mut BodyPipe, more: bool) -> std::io::Result<()> {
    while pipe.pending() > 0 {
        let sent = socket
            .async_io(Interest::WRITABLE, || pipe.splice_to(socket, more))
            .await?;
        if sent == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// Sends a file segment to the socket with sendfile(2), waiting for writability as needed. A
/// file that became shorter than its segment ends the connection (the frame cannot be finished).
async fn send_file(socket: &TcpStream, body: &FileSegment) -> std::io::Result<()> {
    let end = body.offset() + body.len();
    let mut offset = body.offset() as i64;
    while (offset as u64) < end {
        let count = (end - offset as u64).min(1 << 30) as usize;
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(socket.as_fd(), body.fd(), Some(&mut offset), count)
                    .map_err(std::io::Error::from)
            })
            .await?;
        if sent == 0 {
            return Err(file_cut_short());
        }
    }
    Ok(())
}

/// `send_file` for a segment not in the page cache: each sendfile runs on the blocking pool, so
/// waiting for the disk stalls this connection only, not every connection of a runtime thread.
/// The call gets its own duplicate of the socket, so a connection dropped meanwhile cannot leave
/// it writing to a descriptor number reused by something else.
async fn send_file_from_disk(socket: &TcpStream, body: &FileSegment) -> std::io::Result<()> {
    let end = body.offset() + body.len();
    let mut offset = body.offset();
    while offset < end {
        socket.writable().await?;
        let out = socket.as_fd().try_clone_to_owned()?;
        let segment = body.clone();
        let count = (end - offset).min(1 << 30) as usize;
        let (sent, at) = tokio::task::spawn_blocking(move || {
            let mut at = offset as i64;
            let sent = nix::sys::sendfile::sendfile(&out, segment.fd(), Some(&mut at), count);
            (sent, at as u64)
        })
        .await
        .map_err(std::io::Error::other)?;
        match sent {
            Ok(0) => return Err(file_cut_short()),
            Ok(_) => offset = at,
            // The socket's buffer is full: clear tokio's readiness so `writable` waits for room.
            Err(nix::errno::Errno::EAGAIN) => {
                let _ = socket.try_io(Interest::WRITABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn file_cut_short() -> std::io::Error {
    metrics::error(metrics::SPARK, "read_failure");
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "file shorter than its index says",
    )
}

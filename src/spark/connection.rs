//! One Spark client connection: authentication, RPC dispatch (Spark's `ExternalBlockHandler`),
//! the streams it opened, and the chunks they serve. Socket I/O lives in `server.rs`; this type
//! turns each decoded frame into the replies to send, in order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::block_id::OpenBlocksPlan;
use super::frame::{self, SparkFrame, StreamChunkId};
use super::hash;
use super::message::{
    BlockTransferMessage, BlocksRemoved, CorruptionCause, DiagnoseCorruption, ExecutorShuffleInfo,
    FetchShuffleBlocks, LocalDirsForExecutors, StreamHandle,
};
use super::rpc_payload::RpcPayload;
use super::sasl::{DigestMd5Server, SaslNonce};
use crate::ids::{AppId, ExecutorId};
use crate::metrics;
use crate::registry::SparkExecutorInfo;
use crate::store::{FileSegment, Store};

/// What the Spark listener is configured with, shared by every connection.
pub struct SparkContext {
    pub store: Arc<Store>,
    /// `RegisterExecutor` local dirs must lie under one of these.
    pub allowed_roots: Vec<std::path::PathBuf>,
    /// When set, clients must authenticate with SASL DIGEST-MD5 using this secret.
    pub auth_secret: Option<String>,
    next_stream_id: AtomicI64,
    served: metrics::ServedCounters,
}

impl SparkContext {
    pub fn new(
        store: Arc<Store>,
        allowed_roots: Vec<std::path::PathBuf>,
        auth_secret: Option<String>,
    ) -> Self {
        // Spark starts stream ids at a random multiple of 1000; any start works for clients.
        let start = i64::from(rand::random::<u32>() >> 1) * 1000;
        Self {
            store,
            allowed_roots,
            auth_secret,
            next_stream_id: AtomicI64::new(start),
            served: metrics::ServedCounters::new(metrics::SPARK),
        }
    }
}

/// One reply, in the order it must be written.
pub enum Reply {
    Frame(SparkFrame),
    /// A frame header followed by a body sent straight from the file it lives in.
    WithBody {
        header: BytesMut,
        body: FileSegment,
    },
}

enum Auth {
    Off,
    Pending(Option<DigestMd5Server>),
    Done(String),
}

/// One chunk of an open stream, resolved when the client asks for it (as Spark opens files
/// lazily), so a StreamHandle is answered before any file is read.
enum Chunk {
    ShuffleRange {
        exec: String,
        shuffle: i32,
        map: i64,
        start: i32,
        end: i32,
    },
    Rdd {
        exec: String,
        name: String,
    },
    Refused(String),
}

struct OpenStream {
    /// Shared with each chunk served, without a copy per chunk.
    app: Arc<str>,
    chunks: Vec<Chunk>,
    next: usize,
    opened: Instant,
}

pub struct SparkConnection {
    ctx: Arc<SparkContext>,
    peer: String,
    auth: Auth,
    streams: HashMap<i64, OpenStream>,
    /// Set when the connection must be closed after the pending replies.
    pub close: bool,
}

/// Spark's readable failure texts are what its clients log and show; keep them specific.
type RpcResult = Result<Bytes, String>;

impl SparkConnection {
    pub fn new(ctx: Arc<SparkContext>, peer: String) -> Self {
        let auth = if ctx.auth_secret.is_some() {
            Auth::Pending(None)
        } else {
            Auth::Off
        };
        Self {
            ctx,
            peer,
            auth,
            streams: HashMap::new(),
            close: false,
        }
    }

    /// True while a stream still has chunks to serve (drain waits for these).
    pub fn has_open_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Handles one request frame and returns its replies.
    pub fn handle(&mut self, frame: SparkFrame) -> Vec<Reply> {
        match frame {
            SparkFrame::RpcRequest { request_id, body } => {
                let reply = match self.rpc(body) {
                    Ok(body) => SparkFrame::RpcResponse { request_id, body },
                    Err(error) => {
                        metrics::error(metrics::SPARK, "rpc_failure");
                        tracing::warn!(peer = %self.peer, error = %error, "Spark RPC failed");
                        SparkFrame::RpcFailure { request_id, error }
                    }
                };
                vec![Reply::Frame(reply)]
            }
            SparkFrame::OneWayMessage { body } => {
                if let Err(error) = self.rpc(body) {
                    tracing::warn!(peer = %self.peer, error = %error, "Spark one-way message failed");
                }
                Vec::new()
            }
            SparkFrame::ChunkFetchRequest { stream_chunk_id } => {
                vec![match self.next_chunk(stream_chunk_id) {
                    Ok(body) => {
                        let mut header = BytesMut::new();
                        match frame::encode_chunk_fetch_success_header(
                            &mut header,
                            stream_chunk_id,
                            body.len(),
                        ) {
                            Ok(()) => Reply::WithBody { header, body },
                            Err(e) => {
                                chunk_failure(stream_chunk_id, format!("{e}; fetch it as a stream"))
                            }
                        }
                    }
                    Err(error) => chunk_failure(stream_chunk_id, error),
                }]
            }
            SparkFrame::StreamRequest { stream_id } => {
                let served = StreamChunkId::parse_stream_request_id(&stream_id)
                    .map_err(|e| e.to_string())
                    .and_then(|id| self.next_chunk(id));
                vec![match served {
                    Ok(body) => {
                        let mut header = BytesMut::new();
                        match frame::encode_stream_response_header(
                            &mut header,
                            &stream_id,
                            body.len(),
                        ) {
                            Ok(()) => Reply::WithBody { header, body },
                            Err(e) => stream_failure(stream_id, e.to_string()),
                        }
                    }
                    Err(error) => stream_failure(stream_id, error),
                }]
            }
            SparkFrame::MergedBlockMetaRequest { request_id, .. } => {
                vec![Reply::Frame(SparkFrame::RpcFailure {
                    request_id,
                    error: "Cannot handle shuffle block merge: push-based shuffle is not supported by kess".into(),
                })]
            }
            SparkFrame::UploadStream { request_id, .. } => {
                vec![Reply::Frame(SparkFrame::RpcFailure {
                    request_id,
                    error:
                        "Unexpected message: UploadStream is not supported by the shuffle service"
                            .into(),
                })]
            }
            other => {
                // A server never receives responses; the peer is not speaking the protocol.
                tracing::warn!(peer = %self.peer, message = other.message_type().name(), "unexpected frame from a client; closing");
                metrics::error(metrics::SPARK, "unexpected_frame");
                self.close = true;
                Vec::new()
            }
        }
    }

    fn rpc(&mut self, body: Bytes) -> RpcResult {
        let payload = RpcPayload::decode(body).map_err(|e| e.to_string())?;
        let message = match (&mut self.auth, payload) {
            (Auth::Pending(server), RpcPayload::Sasl(sasl)) => {
                let secret = self.ctx.auth_secret.as_deref().unwrap_or_default();
                let server =
                    server.get_or_insert_with(|| DigestMd5Server::new(secret, SaslNonce::random()));
                return match server.evaluate(&sasl.token) {
                    Ok(token) => {
                        if server.is_complete() {
                            tracing::info!(peer = %self.peer, app = %sasl.app_id, "Spark client authenticated");
                            self.auth = Auth::Done(sasl.app_id);
                        }
                        Ok(Bytes::from(token))
                    }
                    Err(e) => {
                        metrics::error(metrics::SPARK, "auth_failed");
                        self.close = true;
                        Err(format!(
                            "SASL authentication of app {} failed: {e}",
                            sasl.app_id
                        ))
                    }
                };
            }
            (Auth::Pending(_), _) => {
                metrics::error(metrics::SPARK, "auth_required");
                return Err("Expected SaslMessage, received something else (maybe your client does not have SASL enabled?)".into());
            }
            (_, RpcPayload::BlockTransfer(m)) => m,
            (_, RpcPayload::Sasl(_)) | (_, RpcPayload::Auth(_)) => {
                return Err("authentication message received, but authentication is not enabled on this shuffle service (or already complete)".into());
            }
        };
        self.dispatch(message)
    }

    /// With authentication on, every request must be for the authenticated application.
    fn authorize(&self, app: &str) -> Result<(), String> {
        match &self.auth {
            Auth::Done(client) if client != app => {
                metrics::error(metrics::SPARK, "unauthorized");
                Err(format!(
                    "Client for {client} not authorized for application {app}."
                ))
            }
            _ => Ok(()),
        }
    }

    fn dispatch(&mut self, message: BlockTransferMessage) -> RpcResult {
        match message {
            BlockTransferMessage::RegisterExecutor(m) => {
                self.authorize(&m.app_id)?;
                self.register(&m.app_id, &m.exec_id, m.executor_info)?;
                Ok(Bytes::new())
            }
            BlockTransferMessage::FetchShuffleBlocks(m) => {
                self.authorize(&m.app_id)?;
                let chunks = fetch_chunks(&m)?;
                self.open_stream(m.app_id, chunks)
            }
            BlockTransferMessage::OpenBlocks(m) => {
                self.authorize(&m.app_id)?;
                let plan =
                    OpenBlocksPlan::from_block_ids(&m.block_ids).map_err(|e| e.to_string())?;
                let chunks = match plan {
                    OpenBlocksPlan::ShuffleBlocks { shuffle_id, blocks } => blocks
                        .iter()
                        .map(|b| Chunk::ShuffleRange {
                            exec: m.exec_id.clone(),
                            shuffle: shuffle_id,
                            map: i64::from(b.map_id),
                            start: b.reduce_id,
                            end: b.reduce_id.saturating_add(1),
                        })
                        .collect(),
                    OpenBlocksPlan::RddBlocks { blocks } => blocks
                        .iter()
                        .map(|b| Chunk::Rdd {
                            exec: m.exec_id.clone(),
                            name: hash::rdd_file_name(b.rdd_id, b.split_index),
                        })
                        .collect(),
                    OpenBlocksPlan::MergedShuffleChunks { chunks, .. } => chunks
                        .iter()
                        .map(|_| Chunk::Refused("Cannot handle shuffle block merge: push-based shuffle is not supported by kess".into()))
                        .collect(),
                };
                self.open_stream(m.app_id, chunks)
            }
            BlockTransferMessage::FetchShuffleBlockChunks(m) => {
                self.authorize(&m.app_id)?;
                let n: usize = m.chunk_ids.iter().map(Vec::len).sum();
                let chunks = (0..n)
                    .map(|_| Chunk::Refused("Cannot handle shuffle block merge: push-based shuffle is not supported by kess".into()))
                    .collect();
                self.open_stream(m.app_id, chunks)
            }
            BlockTransferMessage::GetLocalDirsForExecutors(m) => {
                self.authorize(&m.app_id)?;
                let mut dirs = Vec::with_capacity(m.exec_ids.len());
                for exec in &m.exec_ids {
                    let info = self.executor(&m.app_id, exec)?;
                    dirs.push((exec.clone(), info.local_dirs.clone()));
                }
                encode(BlockTransferMessage::LocalDirsForExecutors(
                    LocalDirsForExecutors::from_dirs(dirs),
                ))
            }
            BlockTransferMessage::RemoveBlocks(m) => {
                self.authorize(&m.app_id)?;
                let info = self.executor(&m.app_id, &m.exec_id)?;
                let mut removed = 0;
                for name in &m.block_ids {
                    match self.ctx.store.spark_file_path(&info, name) {
                        Ok(path) => {
                            self.ctx.store.forget_file(&path);
                            match std::fs::remove_file(&path) {
                                Ok(()) => removed += 1,
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    tracing::warn!(path = %path.display(), error = %e, "could not remove block file")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(block = %name, error = %e, "refusing to remove block")
                        }
                    }
                }
                metrics::spark_blocks_removed(removed as u64);
                tracing::info!(app = %m.app_id, executor = %m.exec_id, asked = m.block_ids.len(), removed, "Spark RemoveBlocks");
                encode(BlockTransferMessage::BlocksRemoved(BlocksRemoved {
                    num_removed_blocks: removed,
                }))
            }
            BlockTransferMessage::DiagnoseCorruption(m) => {
                self.authorize(&m.app_id)?;
                let cause = self.diagnose(&m);
                metrics::corruption_diagnosis(cause.name());
                tracing::warn!(app = %m.app_id, exec = %m.exec_id, shuffle = m.shuffle_id, map = m.map_id, reduce = m.reduce_id, cause = cause.name(), "diagnosed a corrupted block");
                encode(BlockTransferMessage::CorruptionCause(cause))
            }
            BlockTransferMessage::FinalizeShuffleMerge(m) => {
                self.authorize(&m.app_id)?;
                Err("Cannot handle shuffle block merge: push-based shuffle is not supported by kess".into())
            }
            BlockTransferMessage::RemoveShuffleMerge(m) => {
                self.authorize(&m.app_id)?;
                Err("Cannot handle merged shuffle remove: push-based shuffle is not supported by kess".into())
            }
            other => Err(format!(
                "Unexpected message: {} is not handled by the shuffle service",
                other.message_type().name()
            )),
        }
    }

    fn register(&self, app: &str, exec: &str, info: ExecutorShuffleInfo) -> Result<(), String> {
        let app_id = AppId::parse(app).map_err(|e| e.to_string())?;
        let exec_id = ExecutorId::parse(exec).map_err(|e| e.to_string())?;
        if info.local_dirs.is_empty() || info.sub_dirs_per_local_dir <= 0 {
            return Err(format!(
                "RegisterExecutor for {app}/{exec}: needs at least one local dir and a positive subDirsPerLocalDir"
            ));
        }
        for dir in &info.local_dirs {
            if !self.is_allowed(Path::new(dir)) {
                metrics::error(metrics::SPARK, "dir_not_allowed");
                return Err(format!(
                    "RegisterExecutor for {app}/{exec}: local dir {dir} is not under an allowed root ({}); set --spark-allowed-roots",
                    self.ctx.allowed_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let spark = SparkExecutorInfo {
            local_dirs: info.local_dirs,
            sub_dirs_per_local_dir: info.sub_dirs_per_local_dir,
            shuffle_manager: info.shuffle_manager,
        };
        self.ctx
            .store
            .register_spark_executor(&app_id, &exec_id, spark)
            .map_err(|e| e.to_string())?;
        metrics::spark_registration();
        tracing::info!(app, exec, peer = %self.peer, "Spark executor registered");
        Ok(())
    }

    /// An absolute path without `..`, under an allowed root.
    fn is_allowed(&self, dir: &Path) -> bool {
        dir.is_absolute()
            && !dir
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            && self
                .ctx
                .allowed_roots
                .iter()
                .any(|root| dir.starts_with(root))
    }

    fn executor(&self, app: &str, exec: &str) -> Result<Arc<SparkExecutorInfo>, String> {
        self.ctx
            .store
            .spark_executor(app, exec)
            .ok_or_else(|| format!("Executor is not registered (appId={app}, execId={exec})"))
    }

    fn open_stream(&mut self, app: String, chunks: Vec<Chunk>) -> RpcResult {
        if let Ok(id) = AppId::parse(&app) {
            self.ctx.store.touch(&id);
        }
        let stream_id = self.ctx.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let num_chunks = i32::try_from(chunks.len()).map_err(|_| "too many blocks".to_string())?;
        if num_chunks > 0 {
            self.streams.insert(
                stream_id,
                OpenStream {
                    app: app.into(),
                    chunks,
                    next: 0,
                    opened: Instant::now(),
                },
            );
            metrics::spark_open_streams(1.0);
        }
        encode(BlockTransferMessage::StreamHandle(StreamHandle {
            stream_id,
            num_chunks,
        }))
    }

    /// Serves the next chunk of a stream; chunks must be asked for in order, as in Spark.
    fn next_chunk(&mut self, id: StreamChunkId) -> Result<FileSegment, String> {
        let stream = self.streams.get_mut(&id.stream_id).ok_or_else(|| {
            format!(
                "Requested chunk not available since streamId {} is closed",
                id.stream_id
            )
        })?;
        let index = usize::try_from(id.chunk_index).unwrap_or(usize::MAX);
        if index >= stream.chunks.len() {
            return Err(format!(
                "Requested chunk index beyond end {}",
                id.chunk_index
            ));
        }
        if index != stream.next {
            return Err(format!(
                "Received out-of-order chunk index {} (expected {})",
                id.chunk_index, stream.next
            ));
        }
        stream.next += 1;
        let app = Arc::clone(&stream.app);
        let opened = stream.opened;
        let done = stream.next == stream.chunks.len();
        let chunk = std::mem::replace(&mut stream.chunks[index], Chunk::Refused(String::new()));
        if done {
            self.streams.remove(&id.stream_id);
            metrics::spark_open_streams(-1.0);
            metrics::fetch_latency(metrics::SPARK, opened.elapsed());
        }
        let served = self.read_chunk(&app, chunk);
        match &served {
            Ok(body) => {
                self.ctx.served.bytes(body.len());
                self.ctx.served.block();
            }
            Err(e) => {
                metrics::error(metrics::SPARK, "chunk_failure");
                tracing::warn!(peer = %self.peer, app = &*app, stream = id.stream_id, chunk = id.chunk_index, error = %e, "Spark chunk not served");
            }
        }
        served
    }

    fn read_chunk(&self, app: &str, chunk: Chunk) -> Result<FileSegment, String> {
        match chunk {
            Chunk::ShuffleRange {
                exec,
                shuffle,
                map,
                start,
                end,
            } => {
                let info = self.executor(app, &exec)?;
                self.ctx
                    .store
                    .read_spark_range(&info, shuffle, map, start, end)
                    .map_err(|e| {
                        format!("shuffle_{shuffle}_{map}_{start} of app {app} executor {exec}: {e}")
                    })
            }
            Chunk::Rdd { exec, name } => {
                let info = self.executor(app, &exec)?;
                match self.ctx.store.read_spark_file(&info, &name) {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err(format!(
                        "Chunk was not found: {name} of app {app} executor {exec}"
                    )),
                    Err(e) => Err(format!("{name} of app {app} executor {exec}: {e}")),
                }
            }
            Chunk::Refused(reason) => Err(reason),
        }
    }

    /// Spark's corruption diagnosis: compare the checksum file, the bytes on disk, and the
    /// reader's checksum. Always answered (never a failure), as Spark does.
    fn diagnose(&self, m: &DiagnoseCorruption) -> CorruptionCause {
        let algorithm = m.algorithm.as_str();
        if algorithm != "ADLER32" && algorithm != "CRC32" {
            return CorruptionCause::UnsupportedChecksumAlgorithm;
        }
        let diagnose = || -> Option<CorruptionCause> {
            let info = self.executor(&m.app_id, &m.exec_id).ok()?;
            let name = hash::shuffle_checksum_file_name(m.shuffle_id, m.map_id, algorithm);
            let path = self.ctx.store.spark_file_path(&info, &name).ok()?;
            let sums = std::fs::read(path).ok()?;
            let at = usize::try_from(m.reduce_id).ok()? * 8;
            let stored = i64::from_be_bytes(sums.get(at..at + 8)?.try_into().ok()?);
            let segment = self
                .ctx
                .store
                .read_spark_range(
                    &info,
                    m.shuffle_id,
                    m.map_id,
                    m.reduce_id,
                    m.reduce_id.checked_add(1)?,
                )
                .ok()?;
            let mut data = Vec::new();
            segment.read_into(&mut data).ok()?;
            let actual = i64::from(match algorithm {
                "CRC32" => crc32fast::hash(&data),
                _ => adler32(&data),
            });
            Some(if actual != stored {
                CorruptionCause::DiskIssue
            } else if m.checksum != stored {
                CorruptionCause::NetworkIssue
            } else {
                CorruptionCause::ChecksumVerifyPass
            })
        };
        diagnose().unwrap_or(CorruptionCause::UnknownIssue)
    }
}

impl Drop for SparkConnection {
    fn drop(&mut self) {
        if !self.streams.is_empty() {
            metrics::spark_open_streams(-(self.streams.len() as f64));
        }
    }
}

/// Checks a FetchShuffleBlocks request and lists its chunks: map-major, one per reduce id, or
/// one per map for a batch (`[start, end)`).
fn fetch_chunks(m: &FetchShuffleBlocks) -> Result<Vec<Chunk>, String> {
    if m.map_ids.len() != m.reduce_ids.len() {
        return Err(format!(
            "FetchShuffleBlocks: {} mapIds but {} reduceId lists",
            m.map_ids.len(),
            m.reduce_ids.len()
        ));
    }
    let mut chunks = Vec::new();
    for (map, reduces) in m.map_ids.iter().zip(&m.reduce_ids) {
        if m.batch_fetch_enabled {
            let [start, end] = reduces.as_slice() else {
                return Err(format!(
                    "FetchShuffleBlocks: a batch fetch of map {map} must give [start, end), got {reduces:?}"
                ));
            };
            chunks.push(Chunk::ShuffleRange {
                exec: m.exec_id.clone(),
                shuffle: m.shuffle_id,
                map: *map,
                start: *start,
                end: *end,
            });
        } else {
            chunks.extend(reduces.iter().map(|r| Chunk::ShuffleRange {
                exec: m.exec_id.clone(),
                shuffle: m.shuffle_id,
                map: *map,
                start: *r,
                end: r.saturating_add(1),
            }));
        }
    }
    Ok(chunks)
}

fn encode(message: BlockTransferMessage) -> RpcResult {
    message.to_bytes().map_err(|e| e.to_string())
}

fn chunk_failure(stream_chunk_id: StreamChunkId, error: String) -> Reply {
    Reply::Frame(SparkFrame::ChunkFetchFailure {
        stream_chunk_id,
        error,
    })
}

fn stream_failure(stream_id: String, error: String) -> Reply {
    Reply::Frame(SparkFrame::StreamFailure { stream_id, error })
}

/// Adler-32 as `java.util.zip.Adler32` computes it (Spark's default shuffle checksum).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest run before the sums can overflow u32.
    for block in data.chunks(5552) {
        for &byte in block {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_zlib() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xffu8; 100_000];
        // Reference from zlib.adler32(b"\xff" * 100000).
        assert_eq!(adler32(&big), 0x149a_302c);
    }
}

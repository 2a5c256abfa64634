//! ShuffleService: executors register, push map outputs and fetch blocks.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::chunk::{StreamFault, UnreadData};
use super::status::{blocking, invalid_argument, to_status};
use super::{ChunkFields, FetchedChunk};
use crate::ids::{AppId, ExecutorId};
use crate::metrics::{self, ActiveStream};
use crate::proto::push_map_output_request::Item;
use crate::proto::shuffle_service_server::ShuffleService;
use crate::proto::{
    FetchBlocksRequest, PushMapOutputRequest, PushMapOutputResponse, RegisterExecutorRequest,
    RegisterExecutorResponse, UnregisterExecutorRequest, UnregisterExecutorResponse,
};
use crate::store::{OpenBlock, PartitionCursor, PushRequest, Store};

/// Most block ranges one fetch request may name.
pub const MAX_BLOCKS_PER_FETCH: usize = 16_384;

pub struct ShuffleApi {
    store: Arc<Store>,
    default_chunk_bytes: usize,
    max_chunk_bytes: usize,
}

impl ShuffleApi {
    /// `max_message_bytes` bounds the chunks sent, so they fit the limits clients use.
    pub fn new(store: Arc<Store>, default_chunk_bytes: usize, max_message_bytes: usize) -> Self {
        // Leave room for the other fields of a FetchedChunk.
        let max_chunk_bytes = max_message_bytes.saturating_sub(1024).max(4096);
        Self {
            store,
            default_chunk_bytes: default_chunk_bytes.clamp(4096, max_chunk_bytes),
            max_chunk_bytes,
        }
    }
}

fn parse_ids(app: &str, exec: &str) -> Result<(AppId, ExecutorId), Status> {
    let app = AppId::parse(app).map_err(|e| to_status(e.into()))?;
    let exec = ExecutorId::parse(exec).map_err(|e| to_status(e.into()))?;
    Ok((app, exec))
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchedChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ShuffleService for ShuffleApi {
    async fn register_executor(
        &self,
        request: Request<RegisterExecutorRequest>,
    ) -> Result<Response<RegisterExecutorResponse>, Status> {
        let req = request.into_inner();
        let (app, exec) = parse_ids(&req.app_id, &req.executor_id)?;
        let (store, a, e) = (Arc::clone(&self.store), app.clone(), exec.clone());
        let newly = blocking("registration", move || store.register_executor(&a, &e)).await?;
        tracing::info!(app = %app, executor = %exec, newly, "executor registered");
        Ok(Response::new(RegisterExecutorResponse {
            newly_registered: newly,
        }))
    }

    async fn unregister_executor(
        &self,
        request: Request<UnregisterExecutorRequest>,
    ) -> Result<Response<UnregisterExecutorResponse>, Status> {
        let req = request.into_inner();
        let (app, exec) = parse_ids(&req.app_id, &req.executor_id)?;
        let (store, a, e) = (Arc::clone(&self.store), app.clone(), exec.clone());
        let was = blocking("unregistration", move || store.unregister_executor(&a, &e)).await?;
        tracing::info!(app = %app, executor = %exec, was_registered = was, "executor unregistered");
        Ok(Response::new(UnregisterExecutorResponse {
            was_registered: was,
        }))
    }

    async fn push_map_output(
        &self,
        request: Request<Streaming<PushMapOutputRequest>>,
    ) -> Result<Response<PushMapOutputResponse>, Status> {
        let _active = ActiveStream::start(metrics::GRPC, "push");
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(PushMapOutputRequest {
                item: Some(Item::Header(h)),
            }) => h,
            _ => return Err(invalid_argument("a push must start with a PushHeader")),
        };
        let (app, executor) = parse_ids(&header.app_id, &header.executor_id)?;
        let mut pending = self
            .store
            .begin_push(PushRequest {
                app,
                executor,
                shuffle: header.shuffle_id,
                map: header.map_id,
                attempt: header.attempt,
                num_partitions: header.num_partitions,
            })
            .map_err(to_status)?;
        // A transport error or cancellation returns early here; dropping `pending` deletes
        // everything written so far.
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Data(d)) => {
                    metrics::bytes_received(metrics::GRPC, d.data.len() as u64);
                    // Page-cache writes are short but blocking; keep them off the async path.
                    tokio::task::block_in_place(|| pending.write(d.partition, &d.data))
                        .map_err(to_status)?;
                }
                Some(Item::Commit(c)) => {
                    let outcome = tokio::task::block_in_place(|| {
                        pending.commit(&c.partition_lengths, &c.partition_crc32s)
                    })
                    .map_err(to_status)?;
                    return Ok(Response::new(PushMapOutputResponse {
                        committed: outcome.committed,
                        committed_attempt: outcome.committed_attempt,
                        bytes: outcome.bytes,
                        partition_lengths: outcome.partition_lengths,
                        partition_crc32s: outcome.partition_crc32s,
                    }));
                }
                Some(Item::Header(_)) => {
                    return Err(invalid_argument(format!(
                        "{}: a push carries exactly one PushHeader",
                        pending.key()
                    )))
                }
                None => return Err(invalid_argument("empty push message")),
            }
        }
        Err(invalid_argument(format!(
            "{}: the stream ended without a PushCommit; nothing was kept",
            pending.key()
        )))
    }

    type FetchBlocksStream = FetchStream;

    async fn fetch_blocks(
        &self,
        request: Request<FetchBlocksRequest>,
    ) -> Result<Response<Self::FetchBlocksStream>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let app = AppId::parse(&req.app_id).map_err(|e| to_status(e.into()))?;
        if req.blocks.is_empty() || req.blocks.len() > MAX_BLOCKS_PER_FETCH {
            return Err(invalid_argument(format!(
                "a fetch names 1 to {MAX_BLOCKS_PER_FETCH} blocks, got {}",
                req.blocks.len()
            )));
        }
        let chunk_bytes = match req.max_chunk_bytes as usize {
            0 => self.default_chunk_bytes,
            n => n.clamp(1, self.max_chunk_bytes),
        };
        // Open every block before answering, so unknown ids and bad ranges are the call's
        // status rather than an error in the middle of the stream.
        let blocks = req
            .blocks
            .iter()
            .map(|b| {
                self.store.open_block(
                    &app,
                    b.shuffle_id,
                    b.map_id,
                    b.start_partition,
                    b.end_partition,
                )
            })
            .map(|b| b.map(Arc::new))
            .collect::<Result<std::collections::VecDeque<_>, _>>()
            .map_err(to_status)?;
        let chunks = ChunkIter {
            blocks,
            chunk_bytes,
            started,
            block_index: 0,
            current: None,
            fault: Arc::default(),
            done: false,
            _active: ActiveStream::start(metrics::GRPC, "fetch"),
        };
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// Every partition of every block as chunks, produced when the connection asks for the next
/// one, with their data still on disk: the codec reads it straight into the encode buffer and
/// checks each partition's CRC32 as it goes. No task or queue stands between the file and the
/// encoder, and memory stays bounded by HTTP/2 flow control. A corrupt partition's final chunk
/// is never sent: the stream ends with DATA_LOSS instead. Dropped when the client goes away.
struct ChunkIter {
    /// Blocks not yet sent; each is released once its last chunk is encoded.
    blocks: std::collections::VecDeque<Arc<OpenBlock>>,
    chunk_bytes: usize,
    started: Instant,
    block_index: usize,
    /// The partition being sent.
    current: Option<PartitionCursor>,
    /// A read that failed in the encoder; the stream ends with it.
    fault: Arc<StreamFault>,
    done: bool,
    _active: ActiveStream,
}

impl ChunkIter {
    /// Moves to the next partition; `None` when every block is sent.
    fn next_partition(&mut self) -> Option<Result<(), Status>> {
        loop {
            let block = self.blocks.front()?;
            let next = match &self.current {
                Some(cursor) => cursor.partition() + 1,
                None => block.partitions().start,
            };
            if next >= block.partitions().end {
                self.current = None;
                self.blocks.pop_front();
                self.block_index += 1;
                continue;
            }
            match block.cursor(next) {
                Ok(cursor) => {
                    self.current = Some(cursor);
                    return Some(Ok(()));
                }
                Err(e) => return Some(Err(to_status(e))),
            }
        }
    }

    /// The next chunk of the current partition, if it has one left.
    fn next_chunk(&mut self) -> Option<FetchedChunk> {
        let cursor = self.current.as_mut()?;
        let block = self.blocks.front()?;
        let range = cursor.next_chunk(self.chunk_bytes)?;
        let fields = ChunkFields {
            block_index: self.block_index as u32,
            partition: range.partition,
            offset: range.offset,
            data: Bytes::new(),
            partition_length: cursor.len(),
            partition_crc32: cursor.crc32(),
            last: range.completes,
        };
        let data = UnreadData {
            block: Arc::clone(block),
            range,
            fault: Arc::clone(&self.fault),
        };
        Some(FetchedChunk::unread(fields, data))
    }
}

impl Iterator for ChunkIter {
    type Item = Result<FetchedChunk, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(status) = self.fault.take() {
            self.done = true;
            return Some(Err(status));
        }
        loop {
            if let Some(chunk) = self.next_chunk() {
                return Some(Ok(chunk));
            }
            match self.next_partition() {
                Some(Ok(())) => continue,
                Some(Err(status)) => {
                    self.done = true;
                    return Some(Err(status));
                }
                None => {
                    self.done = true;
                    metrics::fetch_latency(metrics::GRPC, self.started.elapsed());
                    return None;
                }
            }
        }
    }
}

//! The benchmark's Spark client: speaks Spark's shuffle protocol with kess's own codec, the way
//! an executor's `OneForOneBlockFetcher` does (one FetchShuffleBlocks RPC, then every
//! ChunkFetchRequest pipelined). The same client measures kess and Spark's Java service.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::daemon::BoxError;
use crate::spark::frame::{SparkFrame, SparkFrameCodec, StreamChunkId};
use crate::spark::message::{
    BlockTransferMessage, ExecutorShuffleInfo, FetchShuffleBlocks, RegisterExecutor,
};

pub const SORT_SHUFFLE_MANAGER: &str = "org.apache.spark.shuffle.sort.SortShuffleManager";

/// One connection to a shuffle service.
pub struct SparkClient {
    framed: Framed<TcpStream, SparkFrameCodec>,
    next_request_id: i64,
}

impl SparkClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self, BoxError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Self {
            framed: Framed::new(socket, SparkFrameCodec::client(256 << 20)),
            next_request_id: 1,
        })
    }

    async fn recv(&mut self) -> Result<SparkFrame, BoxError> {
        match self.framed.next().await {
            Some(frame) => Ok(frame?),
            None => Err("the shuffle service closed the connection".into()),
        }
    }

    async fn rpc(&mut self, message: BlockTransferMessage) -> Result<Bytes, BoxError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.framed
            .send(SparkFrame::RpcRequest {
                request_id,
                body: message.to_bytes()?,
            })
            .await?;
        match self.recv().await? {
            SparkFrame::RpcResponse {
                request_id: id,
                body,
            } if id == request_id => Ok(body),
            SparkFrame::RpcFailure { error, .. } => Err(format!("RPC failed: {error}").into()),
            other => Err(format!("unexpected reply {:?}", other.message_type()).into()),
        }
    }

    /// Registers `exec` of `app` with its local dirs (64 subdirs each, sort shuffle manager).
    pub async fn register(
        &mut self,
        app: &str,
        exec: &str,
        local_dirs: Vec<String>,
    ) -> Result<(), BoxError> {
        self.rpc(BlockTransferMessage::RegisterExecutor(RegisterExecutor {
            app_id: app.into(),
            exec_id: exec.into(),
            executor_info: ExecutorShuffleInfo {
                local_dirs,
                sub_dirs_per_local_dir: 64,
                shuffle_manager: SORT_SHUFFLE_MANAGER.into(),
            },
        }))
        .await
        .map(drop)
    }

    /// Fetches reduce partition `reduce` of every map in `maps` (one chunk per block) and
    /// returns the bytes received.
    pub async fn fetch_blocks(
        &mut self,
        app: &str,
        exec: &str,
        shuffle: i32,
        maps: &[i64],
        reduce: i32,
    ) -> Result<u64, BoxError> {
        let body = self
            .rpc(BlockTransferMessage::FetchShuffleBlocks(
                FetchShuffleBlocks {
                    app_id: app.into(),
                    exec_id: exec.into(),
                    shuffle_id: shuffle,
                    map_ids: maps.to_vec(),
                    reduce_ids: vec![vec![reduce]; maps.len()],
                    batch_fetch_enabled: false,
                },
            ))
            .await?;
        let BlockTransferMessage::StreamHandle(handle) = BlockTransferMessage::decode(body)? else {
            return Err("FetchShuffleBlocks was not answered with a StreamHandle".into());
        };
        self.fetch_chunks(handle.stream_id, handle.num_chunks).await
    }

    /// Pipelines every chunk request, then reads the replies in order.
    async fn fetch_chunks(&mut self, stream_id: i64, num_chunks: i32) -> Result<u64, BoxError> {
        for chunk_index in 0..num_chunks {
            self.framed
                .feed(SparkFrame::ChunkFetchRequest {
                    stream_chunk_id: StreamChunkId {
                        stream_id,
                        chunk_index,
                    },
                })
                .await?;
        }
        self.framed.flush().await?;
        let mut bytes = 0u64;
        for _ in 0..num_chunks {
            match self.recv().await? {
                SparkFrame::ChunkFetchSuccess { body, .. } => bytes += body.len() as u64,
                SparkFrame::ChunkFetchFailure { error, .. } => {
                    return Err(format!("chunk fetch failed: {error}").into())
                }
                other => return Err(format!("unexpected reply {:?}", other.message_type()).into()),
            }
        }
        Ok(bytes)
    }
}

//! The benchmark's Spark client: speaks Spark's shuffle protocol with kess's own codec, the way
//! an executor's `OneForOneBlockFetcher` does (one FetchShuffleBlocks RPC, then every
//! ChunkFetchRequest pipelined). The same client measures kess and Spark's Java service.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::Decoder;

use crate::daemon::BoxError;
use crate::spark::frame::{MessageType, SparkFrame, SparkFrameCodec, StreamChunkId};
use crate::spark::message::{
    BlockTransferMessage, ExecutorShuffleInfo, FetchShuffleBlocks, RegisterExecutor,
};

pub const SORT_SHUFFLE_MANAGER: &str = "org.apache.spark.shuffle.sort.SortShuffleManager";

/// One connection to a shuffle service. Chunk bodies are dropped where they land, in the read
/// buffer, so the client copies each byte once (out of the socket), as the sendfile
/// reference's reader does, and the figures are the server's.
pub struct SparkClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    codec: SparkFrameCodec,
    next_request_id: i64,
}

impl SparkClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self, BoxError> {
        let socket = super::dial::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (read, writer) = socket.into_split();
        Ok(Self {
            reader: BufReader::with_capacity(256 << 10, read),
            writer,
            codec: SparkFrameCodec::client(256 << 20),
            next_request_id: 1,
        })
    }

    async fn send(&mut self, frames: &[SparkFrame]) -> Result<(), BoxError> {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf)?;
        }
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// Reads one frame; a ChunkFetchSuccess body is read and dropped, its length returned.
    async fn recv(&mut self) -> Result<Received, BoxError> {
        let frame_len = self.reader.read_u64().await?;
        let message_type = self.reader.read_u8().await?;
        if message_type == MessageType::ChunkFetchSuccess.id() {
            let _stream_id = self.reader.read_i64().await?;
            let _chunk_index = self.reader.read_i32().await?;
            let body = frame_len
                .checked_sub(21)
                .ok_or("ChunkFetchSuccess frame shorter than its header")?;
            let mut left = body;
            while left > 0 {
                let buffered = self.reader.fill_buf().await?.len();
                if buffered == 0 {
                    return Err("the shuffle service closed the connection mid-chunk".into());
                }
                let dropped = buffered.min(left as usize);
                self.reader.consume(dropped);
                left -= dropped as u64;
            }
            return Ok(Received::Chunk(body));
        }
        let rest = frame_len
            .checked_sub(9)
            .filter(|n| *n <= 64 << 20)
            .ok_or("bad frame length")? as usize;
        let mut buf = BytesMut::with_capacity(9 + rest);
        buf.extend_from_slice(&frame_len.to_be_bytes());
        buf.extend_from_slice(&[message_type]);
        buf.resize(9 + rest, 0);
        self.reader.read_exact(&mut buf[9..]).await?;
        match self.codec.decode(&mut buf)? {
            Some(frame) => Ok(Received::Frame(frame)),
            None => Err("incomplete frame".into()),
        }
    }

    async fn rpc(&mut self, message: BlockTransferMessage) -> Result<Bytes, BoxError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&[SparkFrame::RpcRequest {
            request_id,
            body: message.to_bytes()?,
        }])
        .await?;
        match self.recv().await? {
            Received::Frame(SparkFrame::RpcResponse {
                request_id: id,
                body,
            }) if id == request_id => Ok(body),
            Received::Frame(SparkFrame::RpcFailure { error, .. }) => {
                Err(format!("RPC failed: {error}").into())
            }
            _ => Err("unexpected reply to an RPC".into()),
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
        let requests: Vec<SparkFrame> = (0..num_chunks)
            .map(|chunk_index| SparkFrame::ChunkFetchRequest {
                stream_chunk_id: StreamChunkId {
                    stream_id,
                    chunk_index,
                },
            })
            .collect();
        self.send(&requests).await?;
        let mut bytes = 0u64;
        for _ in 0..num_chunks {
            match self.recv().await? {
                Received::Chunk(len) => bytes += len,
                Received::Frame(SparkFrame::ChunkFetchFailure { error, .. }) => {
                    return Err(format!("chunk fetch failed: {error}").into())
                }
                Received::Frame(other) => {
                    return Err(format!("unexpected reply {:?}", other.message_type()).into())
                }
            }
        }
        Ok(bytes)
    }
}

enum Received {
    Frame(SparkFrame),
    /// A ChunkFetchSuccess whose body (this many bytes) was read and dropped.
    Chunk(u64),
}

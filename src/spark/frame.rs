//! Spark's transport framing (`network-common`): the 13 message types and a
//! `tokio_util` codec for them.
//!
//! ```text
//! +--------------------+-----------+------------------------+--------------------------------+
//! | frameLength: int64 | type: u8  | header (type-specific) | body (only for in-frame types) |
//! +--------------------+-----------+------------------------+--------------------------------+
//! ```
//!
//! `frameLength` counts its own 8 bytes, the type byte, the header and any
//! in-frame body. In-frame bodies have no explicit length: they are the rest
//! of the frame. StreamResponse and UploadStream bodies are *out of frame*:
//! `byteCount`/`bodyByteCount` raw bytes follow the frame and are not counted
//! in `frameLength`.
//!
//! A server must not copy block data through this codec: it sends
//! ChunkFetchSuccess and StreamResponse with [`encode_chunk_fetch_success_header`]
//! / [`encode_stream_response_header`] and then writes the body itself (for
//! example with sendfile or from a memory map).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::{DecodeError, EncodeError, FrameError, StreamChunkIdParseError};
use super::primitives::{put_byte_array, put_string, string_len, WireReader};

/// Size of the frameLength field.
pub const LENGTH_FIELD_LEN: usize = 8;

/// Largest frameLength Spark's `TransportFrameDecoder` accepts:
/// it requires `frameLength - 8 < Integer.MAX_VALUE`.
pub const SPARK_MAX_FRAME_LENGTH: u64 = LENGTH_FIELD_LEN as u64 + (i32::MAX as u64 - 1);

/// Default limit for a server receiving requests. Requests are small (the
/// largest real one is a RegisterExecutor of a few hundred bytes), so a tight
/// limit protects memory without affecting Spark clients.
pub const DEFAULT_SERVER_MAX_FRAME_LENGTH: u64 = 16 * 1024 * 1024;

/// Bytes before a ChunkFetchSuccess body: length, type, StreamChunkId.
pub const CHUNK_FETCH_SUCCESS_HEADER_LEN: usize = LENGTH_FIELD_LEN + 1 + STREAM_CHUNK_ID_LEN;

const STREAM_CHUNK_ID_LEN: usize = 12;

/// Most the decoder reserves ahead of bytes actually received. A peer can
/// announce a large frame in 8 bytes; reserving all of it at once would let
/// idle connections pin memory. Beyond this the buffer grows as data arrives.
pub const MAX_UPFRONT_RESERVE: usize = 4 * 1024 * 1024;

/// Reserves room for `missing` more bytes, up to [`MAX_UPFRONT_RESERVE`].
fn reserve_for(src: &mut BytesMut, missing: usize) {
    src.reserve(missing.min(MAX_UPFRONT_RESERVE));
}

/// The transport message type byte (`Message.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    ChunkFetchRequest = 0,
    ChunkFetchSuccess = 1,
    ChunkFetchFailure = 2,
    RpcRequest = 3,
    RpcResponse = 4,
    RpcFailure = 5,
    StreamRequest = 6,
    StreamResponse = 7,
    StreamFailure = 8,
    OneWayMessage = 9,
    UploadStream = 10,
    MergedBlockMetaRequest = 11,
    MergedBlockMetaSuccess = 12,
}

impl MessageType {
    /// The type for a wire id, or `None` for unknown ids (including Spark's
    /// internal `User` type -1, which never appears on the wire).
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::ChunkFetchRequest,
            1 => Self::ChunkFetchSuccess,
            2 => Self::ChunkFetchFailure,
            3 => Self::RpcRequest,
            4 => Self::RpcResponse,
            5 => Self::RpcFailure,
            6 => Self::StreamRequest,
            7 => Self::StreamResponse,
            8 => Self::StreamFailure,
            9 => Self::OneWayMessage,
            10 => Self::UploadStream,
            11 => Self::MergedBlockMetaRequest,
            12 => Self::MergedBlockMetaSuccess,
            _ => return None,
        })
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Spark's class name, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChunkFetchRequest => "ChunkFetchRequest",
            Self::ChunkFetchSuccess => "ChunkFetchSuccess",
            Self::ChunkFetchFailure => "ChunkFetchFailure",
            Self::RpcRequest => "RpcRequest",
            Self::RpcResponse => "RpcResponse",
            Self::RpcFailure => "RpcFailure",
            Self::StreamRequest => "StreamRequest",
            Self::StreamResponse => "StreamResponse",
            Self::StreamFailure => "StreamFailure",
            Self::OneWayMessage => "OneWayMessage",
            Self::UploadStream => "UploadStream",
            Self::MergedBlockMetaRequest => "MergedBlockMetaRequest",
            Self::MergedBlockMetaSuccess => "MergedBlockMetaSuccess",
        }
    }

    /// Whether raw body bytes follow the frame (StreamResponse, UploadStream).
    pub fn has_out_of_frame_body(self) -> bool {
        matches!(self, Self::StreamResponse | Self::UploadStream)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one chunk of a registered stream (int64 streamId, int32 chunkIndex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamChunkId {
    pub stream_id: i64,
    pub chunk_index: i32,
}

impl StreamChunkId {
    /// The `"<streamId>_<chunkIndex>"` string a StreamRequest carries
    /// (Spark's `OneForOneStreamManager.genStreamChunkId`).
    pub fn to_stream_request_id(self) -> String {
        format!("{}_{}", self.stream_id, self.chunk_index)
    }

    /// Parses a StreamRequest's `"<streamId>_<chunkIndex>"` like Spark's
    /// `OneForOneStreamManager.parseStreamChunkId` (split on `_`, Java number
    /// parsing, which accepts a leading sign).
    pub fn parse_stream_request_id(input: &str) -> Result<Self, StreamChunkIdParseError> {
        let error = || StreamChunkIdParseError {
            input: input.to_owned(),
        };
        let (stream, chunk) = input.split_once('_').ok_or_else(error)?;
        if chunk.contains('_') {
            return Err(error());
        }
        Ok(Self {
            stream_id: stream.parse().map_err(|_| error())?,
            chunk_index: chunk.parse().map_err(|_| error())?,
        })
    }

    fn read(r: &mut WireReader) -> Result<Self, DecodeError> {
        Ok(Self {
            stream_id: r.i64("streamChunkId.streamId")?,
            chunk_index: r.i32("streamChunkId.chunkIndex")?,
        })
    }

    fn write(self, dst: &mut BytesMut) {
        dst.put_i64(self.stream_id);
        dst.put_i32(self.chunk_index);
    }
}

/// Where the out-of-frame body of a StreamResponse or UploadStream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfFrameBody {
    /// Not held in memory. On decode, the codec skipped the bytes
    /// ([`OutOfFrameBodyPolicy::Discard`]). On encode, only the frame is
    /// written and the caller writes the announced number of bytes itself.
    Detached,
    /// The whole body, in memory.
    Attached(Bytes),
}

/// What the decoder does with out-of-frame bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfFrameBodyPolicy {
    /// Yield the frame as soon as its header is complete, then silently skip
    /// the body bytes before decoding the next frame. This is what a server
    /// wants: it only refuses UploadStream and must keep framing in sync.
    Discard,
    /// Wait for the whole body and yield it attached to the frame; bodies
    /// larger than `max_len` are an error. Meant for test clients.
    Collect { max_len: usize },
}

/// One transport message.
///
/// Error strings (`*Failure`) are Java stack traces when they come from Spark;
/// any human-readable text works in the other direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparkFrame {
    /// Client asks for one chunk of a stream.
    ChunkFetchRequest { stream_chunk_id: StreamChunkId },
    /// The chunk's bytes, in-frame.
    ChunkFetchSuccess {
        stream_chunk_id: StreamChunkId,
        body: Bytes,
    },
    /// The chunk could not be served.
    ChunkFetchFailure {
        stream_chunk_id: StreamChunkId,
        error: String,
    },
    /// An RPC; the body is a BlockTransferMessage, SaslMessage or AuthMessage.
    /// The header's int32 body size is redundant and ignored on decode, as in
    /// Spark; it is written as `body.len()` on encode.
    RpcRequest { request_id: i64, body: Bytes },
    /// Successful RPC reply (body may be empty).
    RpcResponse { request_id: i64, body: Bytes },
    /// Failed RPC.
    RpcFailure { request_id: i64, error: String },
    /// Client asks for a whole chunk as a stream; `stream_id` is
    /// `"<streamId>_<chunkIndex>"` (see [`StreamChunkId::parse_stream_request_id`]).
    StreamRequest { stream_id: String },
    /// Stream header; `byte_count` raw bytes follow the frame.
    StreamResponse {
        stream_id: String,
        byte_count: i64,
        body: OutOfFrameBody,
    },
    /// The stream could not be served.
    StreamFailure { stream_id: String, error: String },
    /// RPC without reply. The header's int32 body size is redundant.
    OneWayMessage { body: Bytes },
    /// Push-based shuffle / block replication upload; `body_byte_count` raw
    /// bytes follow the frame. `meta` is a BlockTransferMessage.
    UploadStream {
        request_id: i64,
        meta: Bytes,
        body_byte_count: i64,
        body: OutOfFrameBody,
    },
    /// Push-based shuffle: ask for a merged block's chunk bitmaps.
    MergedBlockMetaRequest {
        request_id: i64,
        app_id: String,
        shuffle_id: i32,
        shuffle_merge_id: i32,
        reduce_id: i32,
    },
    /// Push-based shuffle: `num_chunks` serialized RoaringBitmaps, in-frame.
    MergedBlockMetaSuccess {
        request_id: i64,
        num_chunks: i32,
        body: Bytes,
    },
}

impl SparkFrame {
    /// The message type of this frame.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::ChunkFetchRequest { .. } => MessageType::ChunkFetchRequest,
            Self::ChunkFetchSuccess { .. } => MessageType::ChunkFetchSuccess,
            Self::ChunkFetchFailure { .. } => MessageType::ChunkFetchFailure,
            Self::RpcRequest { .. } => MessageType::RpcRequest,
            Self::RpcResponse { .. } => MessageType::RpcResponse,
            Self::RpcFailure { .. } => MessageType::RpcFailure,
            Self::StreamRequest { .. } => MessageType::StreamRequest,
            Self::StreamResponse { .. } => MessageType::StreamResponse,
            Self::StreamFailure { .. } => MessageType::StreamFailure,
            Self::OneWayMessage { .. } => MessageType::OneWayMessage,
            Self::UploadStream { .. } => MessageType::UploadStream,
            Self::MergedBlockMetaRequest { .. } => MessageType::MergedBlockMetaRequest,
            Self::MergedBlockMetaSuccess { .. } => MessageType::MergedBlockMetaSuccess,
        }
    }

    /// Length of the type byte, header and in-frame body (frameLength - 8).
    fn frame_content_len(&self) -> usize {
        match self {
            Self::ChunkFetchRequest { .. } => 1 + STREAM_CHUNK_ID_LEN,
            Self::ChunkFetchSuccess { body, .. } => 1 + STREAM_CHUNK_ID_LEN + body.len(),
            Self::ChunkFetchFailure { error, .. } => 1 + STREAM_CHUNK_ID_LEN + string_len(error),
            Self::RpcRequest { body, .. } | Self::RpcResponse { body, .. } => {
                1 + 8 + 4 + body.len()
            }
            Self::RpcFailure { error, .. } => 1 + 8 + string_len(error),
            Self::StreamRequest { stream_id } => 1 + string_len(stream_id),
            Self::StreamResponse { stream_id, .. } => 1 + string_len(stream_id) + 8,
            Self::StreamFailure { stream_id, error } => {
                1 + string_len(stream_id) + string_len(error)
            }
            Self::OneWayMessage { body } => 1 + 4 + body.len(),
            Self::UploadStream { meta, .. } => 1 + 8 + 4 + meta.len() + 8,
            Self::MergedBlockMetaRequest { app_id, .. } => 1 + 8 + string_len(app_id) + 12,
            Self::MergedBlockMetaSuccess { body, .. } => 1 + 8 + 4 + body.len(),
        }
    }

    /// Appends the whole frame (and an attached out-of-frame body) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let message_type = self.message_type();
        let name = message_type.name();
        let frame_length = checked_frame_length(message_type, self.frame_content_len() as u64)?;
        let attached_len = match self {
            Self::StreamResponse {
                byte_count, body, ..
            } => check_out_of_frame_body(name, *byte_count, body)?,
            Self::UploadStream {
                body_byte_count,
                body,
                ..
            } => check_out_of_frame_body(name, *body_byte_count, body)?,
            _ => 0,
        };
        dst.reserve(frame_length as usize + attached_len);
        dst.put_u64(frame_length);
        dst.put_u8(message_type.id());
        match self {
            Self::ChunkFetchRequest { stream_chunk_id } => stream_chunk_id.write(dst),
            Self::ChunkFetchSuccess {
                stream_chunk_id,
                body,
            } => {
                stream_chunk_id.write(dst);
                dst.put_slice(body);
            }
            Self::ChunkFetchFailure {
                stream_chunk_id,
                error,
            } => {
                stream_chunk_id.write(dst);
                put_string(dst, name, "errorString", error)?;
            }
            Self::RpcRequest { request_id, body } | Self::RpcResponse { request_id, body } => {
                dst.put_i64(*request_id);
                put_redundant_body_size(dst, name, body.len())?;
                dst.put_slice(body);
            }
            Self::RpcFailure { request_id, error } => {
                dst.put_i64(*request_id);
                put_string(dst, name, "errorString", error)?;
            }
            Self::StreamRequest { stream_id } => put_string(dst, name, "streamId", stream_id)?,
            Self::StreamResponse {
                stream_id,
                byte_count,
                body,
            } => {
                put_string(dst, name, "streamId", stream_id)?;
                dst.put_i64(*byte_count);
                if let OutOfFrameBody::Attached(bytes) = body {
                    dst.put_slice(bytes);
                }
            }
            Self::StreamFailure { stream_id, error } => {
                put_string(dst, name, "streamId", stream_id)?;
                put_string(dst, name, "error", error)?;
            }
            Self::OneWayMessage { body } => {
                put_redundant_body_size(dst, name, body.len())?;
                dst.put_slice(body);
            }
            Self::UploadStream {
                request_id,
                meta,
                body_byte_count,
                body,
            } => {
                dst.put_i64(*request_id);
                put_byte_array(dst, name, "meta", meta)?;
                dst.put_i64(*body_byte_count);
                if let OutOfFrameBody::Attached(bytes) = body {
                    dst.put_slice(bytes);
                }
            }
            Self::MergedBlockMetaRequest {
                request_id,
                app_id,
                shuffle_id,
                shuffle_merge_id,
                reduce_id,
            } => {
                dst.put_i64(*request_id);
                put_string(dst, name, "appId", app_id)?;
                dst.put_i32(*shuffle_id);
                dst.put_i32(*shuffle_merge_id);
                dst.put_i32(*reduce_id);
            }
            Self::MergedBlockMetaSuccess {
                request_id,
                num_chunks,
                body,
            } => {
                dst.put_i64(*request_id);
                dst.put_i32(*num_chunks);
                dst.put_slice(body);
            }
        }
        Ok(())
    }

    /// Parses one complete frame's content (type byte onwards, without the
    /// length field). Out-of-frame bodies are returned `Detached`.
    fn decode_content(frame_length: i64, mut content: Bytes) -> Result<Self, FrameError> {
        // The caller guarantees frameLength > 8, so the type byte is present;
        // checked anyway so that no input can panic.
        if content.is_empty() {
            return Err(FrameError::FrameTooShort { frame_length });
        }
        let type_id = content.get_u8();
        let message_type = MessageType::from_id(type_id).ok_or(FrameError::UnknownMessageType {
            type_id,
            frame_length,
        })?;
        let mut r = WireReader::new(content, message_type.name());
        let frame = match message_type {
            MessageType::ChunkFetchRequest => Self::ChunkFetchRequest {
                stream_chunk_id: StreamChunkId::read(&mut r)?,
            },
            MessageType::ChunkFetchSuccess => Self::ChunkFetchSuccess {
                stream_chunk_id: StreamChunkId::read(&mut r)?,
                body: r.rest(),
            },
            MessageType::ChunkFetchFailure => Self::ChunkFetchFailure {
                stream_chunk_id: StreamChunkId::read(&mut r)?,
                error: r.string("errorString")?,
            },
            MessageType::RpcRequest => {
                let request_id = r.i64("requestId")?;
                r.i32("bodySize")?;
                Self::RpcRequest {
                    request_id,
                    body: r.rest(),
                }
            }
            MessageType::RpcResponse => {
                let request_id = r.i64("requestId")?;
                r.i32("bodySize")?;
                Self::RpcResponse {
                    request_id,
                    body: r.rest(),
                }
            }
            MessageType::RpcFailure => Self::RpcFailure {
                request_id: r.i64("requestId")?,
                error: r.string("errorString")?,
            },
            MessageType::StreamRequest => Self::StreamRequest {
                stream_id: r.string("streamId")?,
            },
            MessageType::StreamResponse => Self::StreamResponse {
                stream_id: r.string("streamId")?,
                byte_count: r.i64("byteCount")?,
                body: OutOfFrameBody::Detached,
            },
            MessageType::StreamFailure => Self::StreamFailure {
                stream_id: r.string("streamId")?,
                error: r.string("error")?,
            },
            MessageType::OneWayMessage => {
                r.i32("bodySize")?;
                Self::OneWayMessage { body: r.rest() }
            }
            MessageType::UploadStream => Self::UploadStream {
                request_id: r.i64("requestId")?,
                meta: r.byte_array("meta")?,
                body_byte_count: r.i64("bodyByteCount")?,
                body: OutOfFrameBody::Detached,
            },
            MessageType::MergedBlockMetaRequest => Self::MergedBlockMetaRequest {
                request_id: r.i64("requestId")?,
                app_id: r.string("appId")?,
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
                reduce_id: r.i32("reduceId")?,
            },
            MessageType::MergedBlockMetaSuccess => Self::MergedBlockMetaSuccess {
                request_id: r.i64("requestId")?,
                num_chunks: r.i32("numChunks")?,
                body: r.rest(),
            },
        };
        Ok(frame)
    }

    /// Announced out-of-frame body length, if this frame type has one.
    fn out_of_frame_len(&self) -> Option<i64> {
        match self {
            Self::StreamResponse { byte_count, .. } => Some(*byte_count),
            Self::UploadStream {
                body_byte_count, ..
            } => Some(*body_byte_count),
            _ => None,
        }
    }

    fn attach_out_of_frame_body(&mut self, bytes: Bytes) {
        match self {
            Self::StreamResponse { body, .. } | Self::UploadStream { body, .. } => {
                *body = OutOfFrameBody::Attached(bytes)
            }
            _ => {}
        }
    }
}

/// Spark writes a redundant int32 copy of the body size in RpcRequest,
/// RpcResponse and OneWayMessage headers.
fn put_redundant_body_size(
    dst: &mut BytesMut,
    message: &'static str,
    len: usize,
) -> Result<(), EncodeError> {
    let size = i32::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        message,
        field: "body",
        len,
    })?;
    dst.put_i32(size);
    Ok(())
}

/// frameLength for `content_len` bytes after the length field, if Spark's
/// decoder would accept it.
fn checked_frame_length(message_type: MessageType, content_len: u64) -> Result<u64, EncodeError> {
    let frame_length = content_len.saturating_add(LENGTH_FIELD_LEN as u64);
    if frame_length > SPARK_MAX_FRAME_LENGTH {
        return Err(EncodeError::FrameTooLarge {
            message_type: message_type.name(),
            frame_length,
            max: SPARK_MAX_FRAME_LENGTH,
        });
    }
    Ok(frame_length)
}

/// Validates an out-of-frame body against its announced length; returns the
/// number of attached bytes to write.
fn check_out_of_frame_body(
    message_type: &'static str,
    declared: i64,
    body: &OutOfFrameBody,
) -> Result<usize, EncodeError> {
    if declared < 0 {
        return Err(EncodeError::NegativeBodyLength {
            message_type,
            length: declared,
        });
    }
    match body {
        OutOfFrameBody::Detached => Ok(0),
        OutOfFrameBody::Attached(bytes) if bytes.len() as u64 == declared as u64 => Ok(bytes.len()),
        OutOfFrameBody::Attached(bytes) => Err(EncodeError::BodyLengthMismatch {
            message_type,
            declared,
            attached: bytes.len(),
        }),
    }
}

/// Writes the 21-byte ChunkFetchSuccess frame header for a body of
/// `body_len` bytes that the caller sends right after it (zero-copy serving).
///
/// Fails if the frame would exceed Spark's limit: such a block can only be
/// served as a StreamResponse.
pub fn encode_chunk_fetch_success_header(
    dst: &mut BytesMut,
    stream_chunk_id: StreamChunkId,
    body_len: u64,
) -> Result<(), EncodeError> {
    let content_len = (1 + STREAM_CHUNK_ID_LEN as u64).saturating_add(body_len);
    let frame_length = checked_frame_length(MessageType::ChunkFetchSuccess, content_len)?;
    dst.reserve(CHUNK_FETCH_SUCCESS_HEADER_LEN);
    dst.put_u64(frame_length);
    dst.put_u8(MessageType::ChunkFetchSuccess.id());
    stream_chunk_id.write(dst);
    Ok(())
}

/// Writes a complete StreamResponse frame announcing `byte_count` raw bytes
/// that the caller sends right after it. The frame itself never counts the
/// body, so any size (including ≥ 2 GiB) is allowed up to `i64::MAX`.
pub fn encode_stream_response_header(
    dst: &mut BytesMut,
    stream_id: &str,
    byte_count: u64,
) -> Result<(), EncodeError> {
    let byte_count = i64::try_from(byte_count).map_err(|_| EncodeError::ValueOutOfRange {
        message: "StreamResponse",
        field: "byteCount",
        value: byte_count,
    })?;
    SparkFrame::StreamResponse {
        stream_id: stream_id.to_owned(),
        byte_count,
        body: OutOfFrameBody::Detached,
    }
    .encode(dst)
}

/// Decoder progress between calls.
#[derive(Debug)]
enum DecoderState {
    /// Next bytes are a frame's length field.
    AwaitingFrame,
    /// Dropping the rest of an out-of-frame body.
    SkippingBody { remaining: u64 },
    /// Waiting for `len` out-of-frame body bytes to attach to `frame`.
    CollectingBody { frame: SparkFrame, len: usize },
}

/// `tokio_util` codec for Spark transport frames.
///
/// The decoder only parses once a whole frame is buffered (it reads the
/// 8-byte length, reserves room — at most [`MAX_UPFRONT_RESERVE`] ahead —
/// and returns `Ok(None)` until then), enforces
/// the frame length limits, and splits in-frame bodies off the read buffer
/// without copying.
#[derive(Debug)]
pub struct SparkFrameCodec {
    max_frame_length: u64,
    out_of_frame_policy: OutOfFrameBodyPolicy,
    state: DecoderState,
}

impl Default for SparkFrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl SparkFrameCodec {
    /// Server configuration: frames up to [`DEFAULT_SERVER_MAX_FRAME_LENGTH`],
    /// out-of-frame bodies discarded.
    pub fn new() -> Self {
        Self {
            max_frame_length: DEFAULT_SERVER_MAX_FRAME_LENGTH,
            out_of_frame_policy: OutOfFrameBodyPolicy::Discard,
            state: DecoderState::AwaitingFrame,
        }
    }

    /// Client configuration: Spark's own frame limit (chunks can be up to
    /// 2 GiB) and StreamResponse bodies collected up to `max_stream_body` bytes.
    pub fn client(max_stream_body: usize) -> Self {
        Self::new()
            .with_max_frame_length(SPARK_MAX_FRAME_LENGTH)
            .with_out_of_frame_policy(OutOfFrameBodyPolicy::Collect {
                max_len: max_stream_body,
            })
    }

    /// Sets the largest accepted frameLength (including its 8 bytes). Values
    /// above [`SPARK_MAX_FRAME_LENGTH`] are clamped to it.
    pub fn with_max_frame_length(mut self, max_frame_length: u64) -> Self {
        self.max_frame_length = max_frame_length.min(SPARK_MAX_FRAME_LENGTH);
        self
    }

    /// Sets what happens to StreamResponse / UploadStream bodies.
    pub fn with_out_of_frame_policy(mut self, policy: OutOfFrameBodyPolicy) -> Self {
        self.out_of_frame_policy = policy;
        self
    }

    /// The largest accepted frameLength.
    pub fn max_frame_length(&self) -> u64 {
        self.max_frame_length
    }

    /// Whether `src` already holds the whole next frame, so decoding it will not wait for the
    /// network. The server answers such pipelined requests before flushing its replies.
    pub fn holds_whole_frame(&self, src: &[u8]) -> bool {
        if !matches!(self.state, DecoderState::AwaitingFrame) {
            return false;
        }
        let Some(length_field) = src.first_chunk::<LENGTH_FIELD_LEN>() else {
            return false;
        };
        // A bad length is "whole" too: decoding it fails at once rather than waiting.
        u64::try_from(i64::from_be_bytes(*length_field)).map_or(true, |len| len <= src.len() as u64)
    }

    /// Handles a frame whose header announces an out-of-frame body: either
    /// yields it now and skips the body, or waits to collect the body.
    fn start_out_of_frame_body(
        &mut self,
        frame: SparkFrame,
        announced: i64,
        src: &mut BytesMut,
    ) -> Result<Option<SparkFrame>, FrameError> {
        let message_type = frame.message_type().name();
        let len =
            u64::try_from(announced).map_err(|_| FrameError::NegativeOutOfFrameBodyLength {
                message_type,
                length: announced,
            })?;
        match self.out_of_frame_policy {
            OutOfFrameBodyPolicy::Discard => {
                if len > 0 {
                    self.state = DecoderState::SkippingBody { remaining: len };
                }
                Ok(Some(frame))
            }
            OutOfFrameBodyPolicy::Collect { max_len } => {
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= max_len)
                    .ok_or(FrameError::OutOfFrameBodyTooLarge {
                        message_type,
                        length: announced,
                        max: max_len,
                    })?;
                self.state = DecoderState::CollectingBody { frame, len };
                self.decode_pending(src)
            }
        }
    }

    /// Makes progress on a pending out-of-frame body. Returns `Ok(None)` when
    /// more bytes are needed.
    fn decode_pending(&mut self, src: &mut BytesMut) -> Result<Option<SparkFrame>, FrameError> {
        match std::mem::replace(&mut self.state, DecoderState::AwaitingFrame) {
            DecoderState::AwaitingFrame => Ok(None),
            DecoderState::SkippingBody { remaining } => {
                let skip = remaining.min(src.len() as u64);
                src.advance(skip as usize);
                if remaining > skip {
                    self.state = DecoderState::SkippingBody {
                        remaining: remaining - skip,
                    };
                }
                Ok(None)
            }
            DecoderState::CollectingBody { mut frame, len } => {
                if src.len() < len {
                    reserve_for(src, len - src.len());
                    self.state = DecoderState::CollectingBody { frame, len };
                    return Ok(None);
                }
                frame.attach_out_of_frame_body(src.split_to(len).freeze());
                Ok(Some(frame))
            }
        }
    }
}

impl Decoder for SparkFrameCodec {
    type Item = SparkFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<SparkFrame>, FrameError> {
        if !matches!(self.state, DecoderState::AwaitingFrame) {
            if let Some(frame) = self.decode_pending(src)? {
                return Ok(Some(frame));
            }
            if !matches!(self.state, DecoderState::AwaitingFrame) {
                return Ok(None);
            }
        }
        if src.len() < LENGTH_FIELD_LEN {
            src.reserve(LENGTH_FIELD_LEN - src.len());
            return Ok(None);
        }
        let mut length_field = [0u8; LENGTH_FIELD_LEN];
        length_field.copy_from_slice(&src[..LENGTH_FIELD_LEN]);
        let frame_length = i64::from_be_bytes(length_field);
        if frame_length <= LENGTH_FIELD_LEN as i64 {
            return Err(FrameError::FrameTooShort { frame_length });
        }
        let too_large = FrameError::FrameTooLarge {
            frame_length,
            max: self.max_frame_length,
        };
        if frame_length as u64 > self.max_frame_length {
            return Err(too_large);
        }
        let frame_len = usize::try_from(frame_length).map_err(|_| too_large)?;
        if src.len() < frame_len {
            reserve_for(src, frame_len - src.len());
            return Ok(None);
        }
        let mut frame_bytes = src.split_to(frame_len).freeze();
        frame_bytes.advance(LENGTH_FIELD_LEN);
        let frame = SparkFrame::decode_content(frame_length, frame_bytes)?;
        match frame.out_of_frame_len() {
            Some(announced) => self.start_out_of_frame_body(frame, announced, src),
            None => Ok(Some(frame)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<SparkFrame>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let detail = match &self.state {
            DecoderState::AwaitingFrame if src.is_empty() => return Ok(None),
            DecoderState::AwaitingFrame => {
                let expected = if src.len() >= LENGTH_FIELD_LEN {
                    let mut length_field = [0u8; LENGTH_FIELD_LEN];
                    length_field.copy_from_slice(&src[..LENGTH_FIELD_LEN]);
                    format!("a frame of {} bytes", i64::from_be_bytes(length_field))
                } else {
                    format!("an {LENGTH_FIELD_LEN}-byte length field")
                };
                format!("{} bytes buffered, expected {expected}", src.len())
            }
            DecoderState::SkippingBody { remaining } => {
                format!("{remaining} out-of-frame body bytes still to skip")
            }
            DecoderState::CollectingBody { frame, len } => format!(
                "{} of {len} out-of-frame body bytes of {} received",
                src.len(),
                frame.message_type()
            ),
        };
        Err(FrameError::TruncatedAtEof { detail })
    }
}

impl Encoder<SparkFrame> for SparkFrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: SparkFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: &SparkFrame) -> BytesMut {
        let mut dst = BytesMut::new();
        frame.encode(&mut dst).unwrap();
        dst
    }

    fn chunk_request() -> SparkFrame {
        SparkFrame::ChunkFetchRequest {
            stream_chunk_id: StreamChunkId {
                stream_id: 1_600_738_694_001,
                chunk_index: 0,
            },
        }
    }

    #[test]
    fn message_type_ids_round_trip() {
        for id in 0..=12u8 {
            assert_eq!(MessageType::from_id(id).map(MessageType::id), Some(id));
        }
        assert_eq!(MessageType::from_id(13), None);
        assert_eq!(MessageType::from_id(0xff), None);
    }

    #[test]
    fn chunk_fetch_request_is_21_bytes() {
        assert_eq!(encode(&chunk_request()).len(), 21);
    }

    #[test]
    fn holds_whole_frame_only_once_every_byte_of_the_next_frame_is_buffered() {
        let bytes = encode(&chunk_request());
        let codec = SparkFrameCodec::new();
        for cut in 0..bytes.len() {
            assert!(!codec.holds_whole_frame(&bytes[..cut]), "{cut} bytes");
        }
        assert!(codec.holds_whole_frame(&bytes));
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes[..3]);
        assert!(codec.holds_whole_frame(&two));
        // A negative length cannot wait for more bytes: decoding fails at once.
        assert!(codec.holds_whole_frame(&(-1i64).to_be_bytes()));
    }

    #[test]
    fn decoder_waits_for_whole_frame_byte_by_byte() {
        let bytes = encode(&SparkFrame::RpcRequest {
            request_id: 7,
            body: Bytes::from_static(b"\x03hello"),
        });
        let mut codec = SparkFrameCodec::new();
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            buf.put_u8(*byte);
            let decoded = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(decoded.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(
                    decoded,
                    Some(SparkFrame::RpcRequest {
                        request_id: 7,
                        body: Bytes::from_static(b"\x03hello")
                    })
                );
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn decoder_reserves_room_for_announced_frame() {
        let bytes = encode(&SparkFrame::OneWayMessage {
            body: Bytes::from(vec![1u8; 4000]),
        });
        let mut buf = BytesMut::from(&bytes[..10]);
        assert!(SparkFrameCodec::new().decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= bytes.len());
    }

    #[test]
    fn upfront_reservation_is_capped() {
        let mut buf = BytesMut::new();
        buf.put_i64(SPARK_MAX_FRAME_LENGTH as i64);
        buf.put_u8(1);
        let mut codec = SparkFrameCodec::client(0);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 2 * MAX_UPFRONT_RESERVE);
    }

    #[test]
    fn pipelined_frames_decode_in_order() {
        let mut buf = encode(&chunk_request());
        buf.extend_from_slice(&encode(&SparkFrame::StreamRequest {
            stream_id: "5_1".into(),
        }));
        let mut codec = SparkFrameCodec::new();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(chunk_request()));
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(SparkFrame::StreamRequest {
                stream_id: "5_1".into()
            })
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    fn length_only(frame_length: i64) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i64(frame_length);
        buf
    }

    #[test]
    fn rejects_non_positive_frame_lengths() {
        for frame_length in [i64::MIN, -1, 0, 8] {
            let err = SparkFrameCodec::new()
                .decode(&mut length_only(frame_length))
                .unwrap_err();
            assert!(
                matches!(err, FrameError::FrameTooShort { frame_length: l } if l == frame_length),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_frames_above_limit() {
        let max = DEFAULT_SERVER_MAX_FRAME_LENGTH as i64;
        let err = SparkFrameCodec::new()
            .decode(&mut length_only(max + 1))
            .unwrap_err();
        assert!(
            matches!(err, FrameError::FrameTooLarge { frame_length, .. } if frame_length == max + 1)
        );
        assert!(err.to_string().contains("Too large frame"));
        let err = SparkFrameCodec::new()
            .with_max_frame_length(u64::MAX)
            .decode(&mut length_only(i64::MAX))
            .unwrap_err();
        assert!(
            matches!(err, FrameError::FrameTooLarge { max, .. } if max == SPARK_MAX_FRAME_LENGTH)
        );
        // exactly at the limit is accepted (and waits for the bytes)
        let mut codec = SparkFrameCodec::new().with_max_frame_length(100);
        assert!(codec.decode(&mut length_only(100)).unwrap().is_none());
    }

    #[test]
    fn rejects_unknown_type_byte() {
        let mut buf = length_only(9);
        buf.put_u8(42);
        let err = SparkFrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::UnknownMessageType {
                type_id: 42,
                frame_length: 9
            }
        ));
        assert!(err.to_string().contains("Unknown message type: 42"));
    }

    #[test]
    fn truncated_header_inside_frame_is_malformed() {
        // RpcRequest frame claiming 13 bytes: type + 4 bytes (requestId needs 8)
        let mut buf = length_only(13);
        buf.put_u8(3);
        buf.put_u32(0);
        let err = SparkFrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Malformed(DecodeError::Truncated {
                    message: "RpcRequest",
                    field: "requestId",
                    needed: 8,
                    remaining: 4
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_string_length_in_failure_is_malformed() {
        let mut buf = length_only(8 + 1 + 8 + 4);
        buf.put_u8(5);
        buf.put_i64(1);
        buf.put_i32(-7);
        let err = SparkFrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Malformed(DecodeError::NegativeLength {
                message: "RpcFailure",
                field: "errorString",
                length: -7
            })
        ));
    }

    fn upload_stream(body_len: usize) -> (SparkFrame, Bytes) {
        let body = Bytes::from(vec![0xabu8; body_len]);
        let frame = SparkFrame::UploadStream {
            request_id: 9,
            meta: Bytes::from_static(b"\x0cmeta"),
            body_byte_count: body_len as i64,
            body: OutOfFrameBody::Attached(body.clone()),
        };
        (frame, body)
    }

    #[test]
    fn server_discards_upload_stream_body_and_resumes_framing() {
        let (frame, _) = upload_stream(1000);
        let mut wire = encode(&frame);
        wire.extend_from_slice(&encode(&chunk_request()));
        let mut codec = SparkFrameCodec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(37) {
            buf.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(
            decoded,
            vec![
                SparkFrame::UploadStream {
                    request_id: 9,
                    meta: Bytes::from_static(b"\x0cmeta"),
                    body_byte_count: 1000,
                    body: OutOfFrameBody::Detached,
                },
                chunk_request()
            ]
        );
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn client_collects_stream_response_body() {
        let body = Bytes::from_static(b"0123456789");
        let frame = SparkFrame::StreamResponse {
            stream_id: "1_0".into(),
            byte_count: 10,
            body: OutOfFrameBody::Attached(body),
        };
        let wire = encode(&frame);
        let mut codec = SparkFrameCodec::client(1024);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    }

    #[test]
    fn collect_limit_is_enforced() {
        let (frame, _) = upload_stream(100);
        let mut buf = encode(&frame);
        let err = SparkFrameCodec::client(99).decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::OutOfFrameBodyTooLarge {
                message_type: "UploadStream",
                length: 100,
                max: 99
            }
        ));
    }

    #[test]
    fn negative_out_of_frame_length_is_rejected() {
        let mut buf = encode(&SparkFrame::StreamResponse {
            stream_id: "1_0".into(),
            byte_count: 0,
            body: OutOfFrameBody::Detached,
        });
        let len = buf.len();
        buf[len - 8..].copy_from_slice(&(-5i64).to_be_bytes());
        let err = SparkFrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::NegativeOutOfFrameBodyLength {
                message_type: "StreamResponse",
                length: -5
            }
        ));
    }

    #[test]
    fn eof_mid_frame_or_body_is_an_error() {
        let wire = encode(&chunk_request());
        let mut buf = BytesMut::from(&wire[..5]);
        assert!(matches!(
            SparkFrameCodec::new().decode_eof(&mut buf),
            Err(FrameError::TruncatedAtEof { .. })
        ));
        let (frame, _) = upload_stream(50);
        let wire = encode(&frame);
        let mut buf = BytesMut::from(&wire[..wire.len() - 10]);
        let mut codec = SparkFrameCodec::new();
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            err.to_string().contains("10 out-of-frame body bytes"),
            "{err}"
        );
    }

    #[test]
    fn header_only_encoders_match_full_encoding() {
        let id = StreamChunkId {
            stream_id: 42,
            chunk_index: 3,
        };
        let body = Bytes::from_static(b"block bytes");
        let full = encode(&SparkFrame::ChunkFetchSuccess {
            stream_chunk_id: id,
            body: body.clone(),
        });
        let mut header = BytesMut::new();
        encode_chunk_fetch_success_header(&mut header, id, body.len() as u64).unwrap();
        assert_eq!(header.len(), CHUNK_FETCH_SUCCESS_HEADER_LEN);
        header.extend_from_slice(&body);
        assert_eq!(header, full);

        let full = encode(&SparkFrame::StreamResponse {
            stream_id: "42_3".into(),
            byte_count: body.len() as i64,
            body: OutOfFrameBody::Attached(body.clone()),
        });
        let mut header = BytesMut::new();
        encode_stream_response_header(&mut header, "42_3", body.len() as u64).unwrap();
        header.extend_from_slice(&body);
        assert_eq!(header, full);
    }

    #[test]
    fn oversized_chunk_header_is_refused() {
        let id = StreamChunkId {
            stream_id: 1,
            chunk_index: 0,
        };
        let mut dst = BytesMut::new();
        let largest = SPARK_MAX_FRAME_LENGTH - CHUNK_FETCH_SUCCESS_HEADER_LEN as u64;
        encode_chunk_fetch_success_header(&mut dst, id, largest).unwrap();
        assert!(matches!(
            encode_chunk_fetch_success_header(&mut dst, id, largest + 1),
            Err(EncodeError::FrameTooLarge { .. })
        ));
        // a StreamResponse header can announce more than 2 GiB
        encode_stream_response_header(&mut dst, "1_0", 5 << 30).unwrap();
    }

    #[test]
    fn attached_body_must_match_announced_length() {
        let frame = SparkFrame::StreamResponse {
            stream_id: "1_0".into(),
            byte_count: 3,
            body: OutOfFrameBody::Attached(Bytes::from_static(b"ab")),
        };
        assert!(matches!(
            frame.encode(&mut BytesMut::new()),
            Err(EncodeError::BodyLengthMismatch {
                declared: 3,
                attached: 2,
                ..
            })
        ));
    }

    #[test]
    fn stream_request_ids_parse_like_spark() {
        let id = StreamChunkId::parse_stream_request_id("1600738694059_0").unwrap();
        assert_eq!(
            id,
            StreamChunkId {
                stream_id: 1_600_738_694_059,
                chunk_index: 0
            }
        );
        assert_eq!(id.to_stream_request_id(), "1600738694059_0");
        for bad in ["", "1", "1_", "_1", "1_2_3", "x_1", "1_99999999999"] {
            assert!(
                StreamChunkId::parse_stream_request_id(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn all_frame_types_round_trip() {
        let frames = vec![
            chunk_request(),
            SparkFrame::ChunkFetchSuccess {
                stream_chunk_id: StreamChunkId {
                    stream_id: -1,
                    chunk_index: i32::MAX,
                },
                body: Bytes::new(),
            },
            SparkFrame::ChunkFetchFailure {
                stream_chunk_id: StreamChunkId {
                    stream_id: 1,
                    chunk_index: 2,
                },
                error: "Chunk was not found".into(),
            },
            SparkFrame::RpcResponse {
                request_id: 1,
                body: Bytes::new(),
            },
            SparkFrame::RpcFailure {
                request_id: 2,
                error: "é".into(),
            },
            SparkFrame::StreamFailure {
                stream_id: "1_0".into(),
                error: "boom".into(),
            },
            SparkFrame::OneWayMessage { body: Bytes::new() },
            SparkFrame::MergedBlockMetaRequest {
                request_id: 4242,
                app_id: "app".into(),
                shuffle_id: 1,
                shuffle_merge_id: 2,
                reduce_id: 3,
            },
            SparkFrame::MergedBlockMetaSuccess {
                request_id: 5,
                num_chunks: 1,
                body: Bytes::from_static(&[0x3a, 0x30, 0, 0, 0, 0, 0, 0]),
            },
        ];
        for frame in frames {
            let mut buf = encode(&frame);
            let decoded = SparkFrameCodec::new().decode(&mut buf).unwrap();
            assert_eq!(decoded.as_ref(), Some(&frame));
            assert!(buf.is_empty());
        }
    }
}

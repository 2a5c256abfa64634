//! BlockTransferMessage: the shuffle-service RPC payloads (`network-shuffle`
//! `protocol/*.java`) carried in RpcRequest / RpcResponse / OneWayMessage
//! bodies and UploadStream metadata.
//!
//! A message is one type byte (0..=19) followed by its fields in Spark's
//! primitive encodings (see [`super::primitives`]); its length comes from the
//! enclosing frame. Decoding then re-encoding any message Spark produced
//! gives back the same bytes.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::primitives::{
    put_byte_array, put_i32_array, put_i32_array_array, put_i64_array, put_string,
    put_string_array, WireReader,
};
use super::roaring::portable_serialized_len;

/// The BlockTransferMessage type byte (`BlockTransferMessage.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlockTransferMessageType {
    OpenBlocks = 0,
    UploadBlock = 1,
    RegisterExecutor = 2,
    StreamHandle = 3,
    RegisterDriver = 4,
    ShuffleServiceHeartbeat = 5,
    UploadBlockStream = 6,
    RemoveBlocks = 7,
    BlocksRemoved = 8,
    FetchShuffleBlocks = 9,
    GetLocalDirsForExecutors = 10,
    LocalDirsForExecutors = 11,
    PushBlockStream = 12,
    FinalizeShuffleMerge = 13,
    MergeStatuses = 14,
    FetchShuffleBlockChunks = 15,
    DiagnoseCorruption = 16,
    CorruptionCause = 17,
    BlockPushReturnCode = 18,
    RemoveShuffleMerge = 19,
}

impl BlockTransferMessageType {
    /// The type for a wire id, `None` outside 0..=19.
    pub fn from_id(id: u8) -> Option<Self> {
        use BlockTransferMessageType::*;
        Some(match id {
            0 => OpenBlocks,
            1 => UploadBlock,
            2 => RegisterExecutor,
            3 => StreamHandle,
            4 => RegisterDriver,
            5 => ShuffleServiceHeartbeat,
            6 => UploadBlockStream,
            7 => RemoveBlocks,
            8 => BlocksRemoved,
            9 => FetchShuffleBlocks,
            10 => GetLocalDirsForExecutors,
            11 => LocalDirsForExecutors,
            12 => PushBlockStream,
            13 => FinalizeShuffleMerge,
            14 => MergeStatuses,
            15 => FetchShuffleBlockChunks,
            16 => DiagnoseCorruption,
            17 => CorruptionCause,
            18 => BlockPushReturnCode,
            19 => RemoveShuffleMerge,
            _ => return None,
        })
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Spark's class name.
    pub fn name(self) -> &'static str {
        use BlockTransferMessageType::*;
        match self {
            OpenBlocks => "OpenBlocks",
            UploadBlock => "UploadBlock",
            RegisterExecutor => "RegisterExecutor",
            StreamHandle => "StreamHandle",
            RegisterDriver => "RegisterDriver",
            ShuffleServiceHeartbeat => "ShuffleServiceHeartbeat",
            UploadBlockStream => "UploadBlockStream",
            RemoveBlocks => "RemoveBlocks",
            BlocksRemoved => "BlocksRemoved",
            FetchShuffleBlocks => "FetchShuffleBlocks",
            GetLocalDirsForExecutors => "GetLocalDirsForExecutors",
            LocalDirsForExecutors => "LocalDirsForExecutors",
            PushBlockStream => "PushBlockStream",
            FinalizeShuffleMerge => "FinalizeShuffleMerge",
            MergeStatuses => "MergeStatuses",
            FetchShuffleBlockChunks => "FetchShuffleBlockChunks",
            DiagnoseCorruption => "DiagnoseCorruption",
            CorruptionCause => "CorruptionCause",
            BlockPushReturnCode => "BlockPushReturnCode",
            RemoveShuffleMerge => "RemoveShuffleMerge",
        }
    }
}

impl fmt::Display for BlockTransferMessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Client → ESS: open a stream over named blocks (old fetch protocol, RDD
/// blocks, push-merged chunks). See [`super::block_id::OpenBlocksPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBlocks {
    pub app_id: String,
    pub exec_id: String,
    pub block_ids: Vec<String>,
}

/// Executor → executor block upload; the ESS refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadBlock {
    pub app_id: String,
    pub exec_id: String,
    pub block_id: String,
    pub metadata: Bytes,
    pub block_data: Bytes,
}

/// Where an executor keeps its block files (embedded in RegisterExecutor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorShuffleInfo {
    /// Absolute `blockmgr-<uuid>` dirs, as seen by the executor, in order.
    pub local_dirs: Vec<String>,
    /// `spark.diskStore.subDirectories` (64 by default).
    pub sub_dirs_per_local_dir: i32,
    /// Shuffle manager class name; Spark's ESS does not validate it.
    pub shuffle_manager: String,
}

/// Executor → ESS at start-up; answered with an empty RpcResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterExecutor {
    pub app_id: String,
    pub exec_id: String,
    pub executor_info: ExecutorShuffleInfo,
}

/// ESS → client: the stream opened for OpenBlocks / FetchShuffleBlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHandle {
    pub stream_id: i64,
    pub num_chunks: i32,
}

/// Mesos only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDriver {
    pub app_id: String,
    pub heartbeat_timeout_ms: i64,
}

/// Mesos only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleServiceHeartbeat {
    pub app_id: String,
}

/// UploadStream metadata for executor → executor uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadBlockStream {
    pub block_id: String,
    pub metadata: Bytes,
}

/// Driver → ESS: delete these files (block ids are used as file names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveBlocks {
    pub app_id: String,
    pub exec_id: String,
    pub block_ids: Vec<String>,
}

/// ESS → driver: number of files actually deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlocksRemoved {
    pub num_removed_blocks: i32,
}

/// Client → ESS: the main shuffle fetch request (new protocol).
///
/// `reduce_ids[i]` belongs to `map_ids[i]`. Without batch fetch it lists
/// reduce ids; with batch fetch it is exactly `[start, end)`. Spark only
/// asserts (with assertions disabled) that both lists have the same length,
/// so decoding does not check it either: the handler must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchShuffleBlocks {
    pub app_id: String,
    pub exec_id: String,
    pub shuffle_id: i32,
    /// Map task attempt ids (file names use them).
    pub map_ids: Vec<i64>,
    pub reduce_ids: Vec<Vec<i32>>,
    pub batch_fetch_enabled: bool,
}

/// Executor → ESS: where do these executors keep their files?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetLocalDirsForExecutors {
    pub app_id: String,
    pub exec_ids: Vec<String>,
}

/// ESS → executor: local dirs per executor, flattened in `exec_ids` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDirsForExecutors {
    pub exec_ids: Vec<String>,
    pub num_local_dirs_by_exec: Vec<i32>,
    pub all_local_dirs: Vec<String>,
}

impl LocalDirsForExecutors {
    /// Builds the flattened wire form from (execId, localDirs) pairs.
    pub fn from_dirs<I>(dirs: I) -> Self
    where
        I: IntoIterator<Item = (String, Vec<String>)>,
    {
        let mut out = Self {
            exec_ids: Vec::new(),
            num_local_dirs_by_exec: Vec::new(),
            all_local_dirs: Vec::new(),
        };
        for (exec_id, local_dirs) in dirs {
            out.exec_ids.push(exec_id);
            out.num_local_dirs_by_exec
                .push(i32::try_from(local_dirs.len()).unwrap_or(i32::MAX));
            out.all_local_dirs.extend(local_dirs);
        }
        out
    }

    /// Un-flattens into (execId, localDirs) pairs; `None` if the counts do
    /// not add up.
    pub fn dirs_by_executor(&self) -> Option<Vec<(&str, &[String])>> {
        if self.exec_ids.len() != self.num_local_dirs_by_exec.len() {
            return None;
        }
        let mut start = 0usize;
        let mut out = Vec::with_capacity(self.exec_ids.len());
        for (exec_id, count) in self.exec_ids.iter().zip(&self.num_local_dirs_by_exec) {
            let end = start.checked_add(usize::try_from(*count).ok()?)?;
            out.push((exec_id.as_str(), self.all_local_dirs.get(start..end)?));
            start = end;
        }
        (start == self.all_local_dirs.len()).then_some(out)
    }
}

/// Push-based shuffle: UploadStream metadata of a pushed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushBlockStream {
    pub app_id: String,
    pub app_attempt_id: i32,
    pub shuffle_id: i32,
    pub shuffle_merge_id: i32,
    pub map_index: i32,
    pub reduce_id: i32,
    pub index: i32,
}

/// Push-based shuffle: driver asks the ESS to finalize a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeShuffleMerge {
    pub app_id: String,
    pub app_attempt_id: i32,
    pub shuffle_id: i32,
    pub shuffle_merge_id: i32,
}

/// Push-based shuffle: result of FinalizeShuffleMerge.
///
/// Each bitmap is kept as its raw portable RoaringBitmap bytes (kess has no
/// use for the contents); decoding walks the format only to find its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeStatuses {
    pub shuffle_id: i32,
    pub shuffle_merge_id: i32,
    pub bitmaps: Vec<Bytes>,
    pub reduce_ids: Vec<i32>,
    pub sizes: Vec<i64>,
}

/// Push-based shuffle: fetch merged chunks (`chunk_ids[i]` belongs to `reduce_ids[i]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchShuffleBlockChunks {
    pub app_id: String,
    pub exec_id: String,
    pub shuffle_id: i32,
    pub shuffle_merge_id: i32,
    pub reduce_ids: Vec<i32>,
    pub chunk_ids: Vec<Vec<i32>>,
}

/// Reducer → ESS after a corrupted block: which side is at fault?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnoseCorruption {
    pub app_id: String,
    pub exec_id: String,
    pub shuffle_id: i32,
    pub map_id: i64,
    pub reduce_id: i32,
    /// Checksum the reader computed over the bytes it received.
    pub checksum: i64,
    /// `ADLER32` or `CRC32` in 3.5.7; anything else is unsupported.
    pub algorithm: String,
}

/// ESS → reducer: the diagnosis (`network.shuffle.checksum.Cause` ordinal,
/// one byte on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CorruptionCause {
    /// Data on disk no longer matches the stored checksum.
    DiskIssue = 0,
    /// Disk data matches; the reader's checksum differs, so the network corrupted it.
    NetworkIssue = 1,
    /// Diagnosis impossible (for example the checksum file is missing).
    UnknownIssue = 2,
    /// Everything matches.
    ChecksumVerifyPass = 3,
    /// The algorithm is not one the ESS knows.
    UnsupportedChecksumAlgorithm = 4,
}

impl CorruptionCause {
    /// The cause for an ordinal, `None` if out of range.
    pub fn from_ordinal(ordinal: u8) -> Option<Self> {
        Some(match ordinal {
            0 => Self::DiskIssue,
            1 => Self::NetworkIssue,
            2 => Self::UnknownIssue,
            3 => Self::ChecksumVerifyPass,
            4 => Self::UnsupportedChecksumAlgorithm,
            _ => return None,
        })
    }

    /// The wire ordinal.
    pub fn ordinal(self) -> u8 {
        self as u8
    }

    /// Spark's enum constant name (as in "corrupted due to DISK_ISSUE").
    pub fn name(self) -> &'static str {
        match self {
            Self::DiskIssue => "DISK_ISSUE",
            Self::NetworkIssue => "NETWORK_ISSUE",
            Self::UnknownIssue => "UNKNOWN_ISSUE",
            Self::ChecksumVerifyPass => "CHECKSUM_VERIFY_PASS",
            Self::UnsupportedChecksumAlgorithm => "UNSUPPORTED_CHECKSUM_ALGORITHM",
        }
    }
}

/// Push-based shuffle: ESS reply to a pushed block.
///
/// `return_code` is kept raw because Spark decodes any byte and interprets it
/// later; see [`PushReturnCode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPushReturnCode {
    pub return_code: u8,
    pub failure_block_id: String,
}

/// Meaning of [`BlockPushReturnCode::return_code`]
/// (`BlockPushNonFatalFailure.ReturnCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PushReturnCode {
    Success = 0,
    TooLateBlockPush = 1,
    BlockAppendCollisionDetected = 2,
    StaleBlockPush = 3,
    TooOldAttemptPush = 4,
}

impl PushReturnCode {
    /// The code for a wire value, `None` if unknown.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Success,
            1 => Self::TooLateBlockPush,
            2 => Self::BlockAppendCollisionDetected,
            3 => Self::StaleBlockPush,
            4 => Self::TooOldAttemptPush,
            _ => return None,
        })
    }
}

/// Push-based shuffle: driver asks the ESS to drop merged data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveShuffleMerge {
    pub app_id: String,
    pub app_attempt_id: i32,
    pub shuffle_id: i32,
    pub shuffle_merge_id: i32,
}

/// Any shuffle-service RPC payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockTransferMessage {
    OpenBlocks(OpenBlocks),
    UploadBlock(UploadBlock),
    RegisterExecutor(RegisterExecutor),
    StreamHandle(StreamHandle),
    RegisterDriver(RegisterDriver),
    ShuffleServiceHeartbeat(ShuffleServiceHeartbeat),
    UploadBlockStream(UploadBlockStream),
    RemoveBlocks(RemoveBlocks),
    BlocksRemoved(BlocksRemoved),
    FetchShuffleBlocks(FetchShuffleBlocks),
    GetLocalDirsForExecutors(GetLocalDirsForExecutors),
    LocalDirsForExecutors(LocalDirsForExecutors),
    PushBlockStream(PushBlockStream),
    FinalizeShuffleMerge(FinalizeShuffleMerge),
    MergeStatuses(MergeStatuses),
    FetchShuffleBlockChunks(FetchShuffleBlockChunks),
    DiagnoseCorruption(DiagnoseCorruption),
    CorruptionCause(CorruptionCause),
    BlockPushReturnCode(BlockPushReturnCode),
    RemoveShuffleMerge(RemoveShuffleMerge),
}

impl BlockTransferMessage {
    /// The type of this message.
    pub fn message_type(&self) -> BlockTransferMessageType {
        use BlockTransferMessageType as T;
        match self {
            Self::OpenBlocks(_) => T::OpenBlocks,
            Self::UploadBlock(_) => T::UploadBlock,
            Self::RegisterExecutor(_) => T::RegisterExecutor,
            Self::StreamHandle(_) => T::StreamHandle,
            Self::RegisterDriver(_) => T::RegisterDriver,
            Self::ShuffleServiceHeartbeat(_) => T::ShuffleServiceHeartbeat,
            Self::UploadBlockStream(_) => T::UploadBlockStream,
            Self::RemoveBlocks(_) => T::RemoveBlocks,
            Self::BlocksRemoved(_) => T::BlocksRemoved,
            Self::FetchShuffleBlocks(_) => T::FetchShuffleBlocks,
            Self::GetLocalDirsForExecutors(_) => T::GetLocalDirsForExecutors,
            Self::LocalDirsForExecutors(_) => T::LocalDirsForExecutors,
            Self::PushBlockStream(_) => T::PushBlockStream,
            Self::FinalizeShuffleMerge(_) => T::FinalizeShuffleMerge,
            Self::MergeStatuses(_) => T::MergeStatuses,
            Self::FetchShuffleBlockChunks(_) => T::FetchShuffleBlockChunks,
            Self::DiagnoseCorruption(_) => T::DiagnoseCorruption,
            Self::CorruptionCause(_) => T::CorruptionCause,
            Self::BlockPushReturnCode(_) => T::BlockPushReturnCode,
            Self::RemoveShuffleMerge(_) => T::RemoveShuffleMerge,
        }
    }

    /// Decodes a whole RPC body.
    ///
    /// Like Spark, bytes after the last field are ignored (a re-encode would
    /// drop them); every other inconsistency is a [`DecodeError`].
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let Some(&type_id) = body.first() else {
            return Err(DecodeError::EmptyBody {
                message: "BlockTransferMessage",
            });
        };
        let message_type = BlockTransferMessageType::from_id(type_id)
            .ok_or(DecodeError::UnknownBlockTransferMessageType { type_id })?;
        let mut r = WireReader::new(body.slice(1..), message_type.name());
        let r = &mut r;
        use BlockTransferMessageType as T;
        Ok(match message_type {
            T::OpenBlocks => Self::OpenBlocks(OpenBlocks {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                block_ids: r.string_array("blockIds")?,
            }),
            T::UploadBlock => Self::UploadBlock(UploadBlock {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                block_id: r.string("blockId")?,
                metadata: r.byte_array("metadata")?,
                block_data: r.byte_array("blockData")?,
            }),
            T::RegisterExecutor => Self::RegisterExecutor(RegisterExecutor {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                executor_info: ExecutorShuffleInfo {
                    local_dirs: r.string_array("localDirs")?,
                    sub_dirs_per_local_dir: r.i32("subDirsPerLocalDir")?,
                    shuffle_manager: r.string("shuffleManager")?,
                },
            }),
            T::StreamHandle => Self::StreamHandle(StreamHandle {
                stream_id: r.i64("streamId")?,
                num_chunks: r.i32("numChunks")?,
            }),
            T::RegisterDriver => Self::RegisterDriver(RegisterDriver {
                app_id: r.string("appId")?,
                heartbeat_timeout_ms: r.i64("heartbeatTimeoutMs")?,
            }),
            T::ShuffleServiceHeartbeat => Self::ShuffleServiceHeartbeat(ShuffleServiceHeartbeat {
                app_id: r.string("appId")?,
            }),
            T::UploadBlockStream => Self::UploadBlockStream(UploadBlockStream {
                block_id: r.string("blockId")?,
                metadata: r.byte_array("metadata")?,
            }),
            T::RemoveBlocks => Self::RemoveBlocks(RemoveBlocks {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                block_ids: r.string_array("blockIds")?,
            }),
            T::BlocksRemoved => Self::BlocksRemoved(BlocksRemoved {
                num_removed_blocks: r.i32("numRemovedBlocks")?,
            }),
            T::FetchShuffleBlocks => Self::FetchShuffleBlocks(FetchShuffleBlocks {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                shuffle_id: r.i32("shuffleId")?,
                map_ids: r.i64_array("mapIds")?,
                reduce_ids: r.i32_array_array("reduceIds")?,
                batch_fetch_enabled: r.bool("batchFetchEnabled")?,
            }),
            T::GetLocalDirsForExecutors => {
                Self::GetLocalDirsForExecutors(GetLocalDirsForExecutors {
                    app_id: r.string("appId")?,
                    exec_ids: r.string_array("execIds")?,
                })
            }
            T::LocalDirsForExecutors => Self::LocalDirsForExecutors(LocalDirsForExecutors {
                exec_ids: r.string_array("execIds")?,
                num_local_dirs_by_exec: r.i32_array("numLocalDirsByExec")?,
                all_local_dirs: r.string_array("allLocalDirs")?,
            }),
            T::PushBlockStream => Self::PushBlockStream(PushBlockStream {
                app_id: r.string("appId")?,
                app_attempt_id: r.i32("appAttemptId")?,
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
                map_index: r.i32("mapIndex")?,
                reduce_id: r.i32("reduceId")?,
                index: r.i32("index")?,
            }),
            T::FinalizeShuffleMerge => Self::FinalizeShuffleMerge(FinalizeShuffleMerge {
                app_id: r.string("appId")?,
                app_attempt_id: r.i32("appAttemptId")?,
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
            }),
            T::MergeStatuses => Self::MergeStatuses(MergeStatuses {
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
                bitmaps: read_bitmap_array(r, "MergeStatuses", "bitmaps")?,
                reduce_ids: r.i32_array("reduceIds")?,
                sizes: r.i64_array("sizes")?,
            }),
            T::FetchShuffleBlockChunks => Self::FetchShuffleBlockChunks(FetchShuffleBlockChunks {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
                reduce_ids: r.i32_array("reduceIds")?,
                chunk_ids: r.i32_array_array("chunkIds")?,
            }),
            T::DiagnoseCorruption => Self::DiagnoseCorruption(DiagnoseCorruption {
                app_id: r.string("appId")?,
                exec_id: r.string("execId")?,
                shuffle_id: r.i32("shuffleId")?,
                map_id: r.i64("mapId")?,
                reduce_id: r.i32("reduceId")?,
                checksum: r.i64("checksum")?,
                algorithm: r.string("algorithm")?,
            }),
            T::CorruptionCause => {
                let ordinal = r.u8("cause")?;
                Self::CorruptionCause(CorruptionCause::from_ordinal(ordinal).ok_or(
                    DecodeError::InvalidValue {
                        message: "CorruptionCause",
                        field: "cause",
                        value: i64::from(ordinal as i8),
                    },
                )?)
            }
            T::BlockPushReturnCode => Self::BlockPushReturnCode(BlockPushReturnCode {
                return_code: r.u8("returnCode")?,
                failure_block_id: r.string("failureBlockId")?,
            }),
            T::RemoveShuffleMerge => Self::RemoveShuffleMerge(RemoveShuffleMerge {
                app_id: r.string("appId")?,
                app_attempt_id: r.i32("appAttemptId")?,
                shuffle_id: r.i32("shuffleId")?,
                shuffle_merge_id: r.i32("shuffleMergeId")?,
            }),
        })
    }

    /// Appends the type byte and fields to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let m = self.message_type().name();
        dst.put_u8(self.message_type().id());
        match self {
            Self::OpenBlocks(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                put_string_array(dst, m, "blockIds", &x.block_ids)?;
            }
            Self::UploadBlock(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                put_string(dst, m, "blockId", &x.block_id)?;
                put_byte_array(dst, m, "metadata", &x.metadata)?;
                put_byte_array(dst, m, "blockData", &x.block_data)?;
            }
            Self::RegisterExecutor(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                put_string_array(dst, m, "localDirs", &x.executor_info.local_dirs)?;
                dst.put_i32(x.executor_info.sub_dirs_per_local_dir);
                put_string(dst, m, "shuffleManager", &x.executor_info.shuffle_manager)?;
            }
            Self::StreamHandle(x) => {
                dst.put_i64(x.stream_id);
                dst.put_i32(x.num_chunks);
            }
            Self::RegisterDriver(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                dst.put_i64(x.heartbeat_timeout_ms);
            }
            Self::ShuffleServiceHeartbeat(x) => put_string(dst, m, "appId", &x.app_id)?,
            Self::UploadBlockStream(x) => {
                put_string(dst, m, "blockId", &x.block_id)?;
                put_byte_array(dst, m, "metadata", &x.metadata)?;
            }
            Self::RemoveBlocks(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                put_string_array(dst, m, "blockIds", &x.block_ids)?;
            }
            Self::BlocksRemoved(x) => dst.put_i32(x.num_removed_blocks),
            Self::FetchShuffleBlocks(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                dst.put_i32(x.shuffle_id);
                put_i64_array(dst, m, "mapIds", &x.map_ids)?;
                put_i32_array_array(dst, m, "reduceIds", &x.reduce_ids)?;
                dst.put_u8(u8::from(x.batch_fetch_enabled));
            }
            Self::GetLocalDirsForExecutors(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string_array(dst, m, "execIds", &x.exec_ids)?;
            }
            Self::LocalDirsForExecutors(x) => {
                put_string_array(dst, m, "execIds", &x.exec_ids)?;
                put_i32_array(dst, m, "numLocalDirsByExec", &x.num_local_dirs_by_exec)?;
                put_string_array(dst, m, "allLocalDirs", &x.all_local_dirs)?;
            }
            Self::PushBlockStream(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                for value in [
                    x.app_attempt_id,
                    x.shuffle_id,
                    x.shuffle_merge_id,
                    x.map_index,
                    x.reduce_id,
                    x.index,
                ] {
                    dst.put_i32(value);
                }
            }
            Self::FinalizeShuffleMerge(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                dst.put_i32(x.app_attempt_id);
                dst.put_i32(x.shuffle_id);
                dst.put_i32(x.shuffle_merge_id);
            }
            Self::MergeStatuses(x) => {
                dst.put_i32(x.shuffle_id);
                dst.put_i32(x.shuffle_merge_id);
                let count =
                    i32::try_from(x.bitmaps.len()).map_err(|_| EncodeError::FieldTooLong {
                        message: m,
                        field: "bitmaps",
                        len: x.bitmaps.len(),
                    })?;
                dst.put_i32(count);
                for bitmap in &x.bitmaps {
                    dst.put_slice(bitmap);
                }
                put_i32_array(dst, m, "reduceIds", &x.reduce_ids)?;
                put_i64_array(dst, m, "sizes", &x.sizes)?;
            }
            Self::FetchShuffleBlockChunks(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                dst.put_i32(x.shuffle_id);
                dst.put_i32(x.shuffle_merge_id);
                put_i32_array(dst, m, "reduceIds", &x.reduce_ids)?;
                put_i32_array_array(dst, m, "chunkIds", &x.chunk_ids)?;
            }
            Self::DiagnoseCorruption(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                put_string(dst, m, "execId", &x.exec_id)?;
                dst.put_i32(x.shuffle_id);
                dst.put_i64(x.map_id);
                dst.put_i32(x.reduce_id);
                dst.put_i64(x.checksum);
                put_string(dst, m, "algorithm", &x.algorithm)?;
            }
            Self::CorruptionCause(cause) => dst.put_u8(cause.ordinal()),
            Self::BlockPushReturnCode(x) => {
                dst.put_u8(x.return_code);
                put_string(dst, m, "failureBlockId", &x.failure_block_id)?;
            }
            Self::RemoveShuffleMerge(x) => {
                put_string(dst, m, "appId", &x.app_id)?;
                dst.put_i32(x.app_attempt_id);
                dst.put_i32(x.shuffle_id);
                dst.put_i32(x.shuffle_merge_id);
            }
        }
        Ok(())
    }

    /// Encodes into a new buffer (an RPC body).
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

/// Reads a `RoaringBitmap[]`: int32 count, then bitmaps back to back, each
/// measured by walking the portable format.
fn read_bitmap_array(
    r: &mut WireReader,
    message: &'static str,
    field: &'static str,
) -> Result<Vec<Bytes>, DecodeError> {
    let count = r.i32(field)?;
    let count = usize::try_from(count).map_err(|_| DecodeError::NegativeLength {
        message,
        field,
        length: count,
    })?;
    // Every bitmap is at least 8 bytes: never pre-allocate beyond the input.
    let mut bitmaps = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let len = portable_serialized_len(r.peek()).map_err(|source| {
            DecodeError::InvalidRoaringBitmap {
                message,
                field,
                source,
            }
        })?;
        bitmaps.push(r.raw(field, len)?);
    }
    Ok(bitmaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_BITMAP: [u8; 8] = [0x3a, 0x30, 0, 0, 0, 0, 0, 0];
    const BITMAP_1_2_3: [u8; 22] = [
        0x3a, 0x30, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 16, 0, 0, 0, 1, 0, 2, 0, 3, 0,
    ];

    fn samples() -> Vec<BlockTransferMessage> {
        use BlockTransferMessage as M;
        vec![
            M::OpenBlocks(OpenBlocks {
                app_id: "app".into(),
                exec_id: "1".into(),
                block_ids: vec!["shuffle_0_0_0".into(), "shuffle_0_2_0".into()],
            }),
            M::UploadBlock(UploadBlock {
                app_id: "app".into(),
                exec_id: "0".into(),
                block_id: "rdd_1_1".into(),
                metadata: Bytes::new(),
                block_data: Bytes::from_static(b"abc"),
            }),
            M::RegisterExecutor(RegisterExecutor {
                app_id: "app".into(),
                exec_id: "0".into(),
                executor_info: ExecutorShuffleInfo {
                    local_dirs: vec!["/a".into(), "/b".into()],
                    sub_dirs_per_local_dir: 64,
                    shuffle_manager: "org.apache.spark.shuffle.sort.SortShuffleManager".into(),
                },
            }),
            M::StreamHandle(StreamHandle {
                stream_id: 1_600_738_694_000,
                num_chunks: 2,
            }),
            M::RegisterDriver(RegisterDriver {
                app_id: "app".into(),
                heartbeat_timeout_ms: 120_000,
            }),
            M::ShuffleServiceHeartbeat(ShuffleServiceHeartbeat {
                app_id: "app".into(),
            }),
            M::UploadBlockStream(UploadBlockStream {
                block_id: "rdd_1_1".into(),
                metadata: Bytes::from_static(b"m"),
            }),
            M::RemoveBlocks(RemoveBlocks {
                app_id: "app".into(),
                exec_id: "0".into(),
                block_ids: vec!["rdd_7_3".into()],
            }),
            M::BlocksRemoved(BlocksRemoved {
                num_removed_blocks: 2,
            }),
            M::FetchShuffleBlocks(FetchShuffleBlocks {
                app_id: "app".into(),
                exec_id: "1".into(),
                shuffle_id: 0,
                map_ids: vec![0, 3],
                reduce_ids: vec![vec![1, 2], vec![1]],
                batch_fetch_enabled: false,
            }),
            M::GetLocalDirsForExecutors(GetLocalDirsForExecutors {
                app_id: "app".into(),
                exec_ids: vec!["0".into(), "1".into()],
            }),
            M::LocalDirsForExecutors(LocalDirsForExecutors::from_dirs([
                ("0".to_string(), vec!["/a".to_string()]),
                ("1".to_string(), vec!["/b".to_string(), "/c".to_string()]),
            ])),
            M::PushBlockStream(PushBlockStream {
                app_id: "app".into(),
                app_attempt_id: 1,
                shuffle_id: 2,
                shuffle_merge_id: 3,
                map_index: 4,
                reduce_id: 5,
                index: 6,
            }),
            M::FinalizeShuffleMerge(FinalizeShuffleMerge {
                app_id: "app".into(),
                app_attempt_id: -1,
                shuffle_id: 0,
                shuffle_merge_id: 0,
            }),
            M::MergeStatuses(MergeStatuses {
                shuffle_id: 1,
                shuffle_merge_id: 0,
                bitmaps: vec![
                    Bytes::from_static(&BITMAP_1_2_3),
                    Bytes::from_static(&EMPTY_BITMAP),
                ],
                reduce_ids: vec![0, 1],
                sizes: vec![100, 0],
            }),
            M::FetchShuffleBlockChunks(FetchShuffleBlockChunks {
                app_id: "app".into(),
                exec_id: "0".into(),
                shuffle_id: 0,
                shuffle_merge_id: 0,
                reduce_ids: vec![0],
                chunk_ids: vec![vec![0]],
            }),
            M::DiagnoseCorruption(DiagnoseCorruption {
                app_id: "app".into(),
                exec_id: "1".into(),
                shuffle_id: 0,
                map_id: 0,
                reduce_id: 0,
                checksum: 3_687_460_647,
                algorithm: "ADLER32".into(),
            }),
            M::CorruptionCause(CorruptionCause::UnsupportedChecksumAlgorithm),
            M::BlockPushReturnCode(BlockPushReturnCode {
                return_code: PushReturnCode::TooLateBlockPush as u8,
                failure_block_id: "shufflePush_0_0_1_2".into(),
            }),
            M::RemoveShuffleMerge(RemoveShuffleMerge {
                app_id: "app".into(),
                app_attempt_id: -1,
                shuffle_id: 0,
                shuffle_merge_id: 0,
            }),
        ]
    }

    #[test]
    fn every_type_round_trips() {
        let samples = samples();
        assert_eq!(samples.len(), 20);
        for (id, message) in samples.into_iter().enumerate() {
            assert_eq!(message.message_type().id() as usize, id);
            let bytes = message.to_bytes().unwrap();
            assert_eq!(bytes[0] as usize, id);
            assert_eq!(BlockTransferMessage::decode(bytes).unwrap(), message);
        }
    }

    #[test]
    fn every_strict_prefix_is_a_typed_error() {
        for message in samples() {
            let bytes = message.to_bytes().unwrap();
            for len in 0..bytes.len() {
                let err = BlockTransferMessage::decode(bytes.slice(..len)).unwrap_err();
                let expected_name = message.message_type().name();
                match err {
                    DecodeError::EmptyBody { .. } => assert_eq!(len, 0),
                    DecodeError::Truncated { message, .. }
                    | DecodeError::NegativeLength { message, .. } => {
                        assert_eq!(message, expected_name)
                    }
                    DecodeError::InvalidRoaringBitmap { message, .. } => {
                        assert_eq!(message, "MergeStatuses")
                    }
                    other => panic!("{expected_name} prefix {len}: unexpected {other}"),
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_ignored_like_spark() {
        let mut bytes = BytesMut::from(&[8u8, 0, 0, 0, 2][..]);
        bytes.put_slice(b"junk");
        assert_eq!(
            BlockTransferMessage::decode(bytes.freeze()).unwrap(),
            BlockTransferMessage::BlocksRemoved(BlocksRemoved {
                num_removed_blocks: 2
            })
        );
    }

    #[test]
    fn unknown_type_is_named_like_spark() {
        let err = BlockTransferMessage::decode(Bytes::from_static(&[99])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownBlockTransferMessageType { type_id: 99 }
        );
        assert_eq!(err.to_string(), "Unknown message type: 99");
        let err = BlockTransferMessage::decode(Bytes::from_static(&[0xea])).unwrap_err();
        assert_eq!(err.to_string(), "Unknown message type: -22");
    }

    #[test]
    fn bad_corruption_cause_ordinal() {
        let err = BlockTransferMessage::decode(Bytes::from_static(&[17, 5])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::InvalidValue {
                message: "CorruptionCause",
                field: "cause",
                value: 5
            }
        );
    }

    #[test]
    fn garbage_bitmap_in_merge_statuses() {
        let bytes = Bytes::from_static(&[14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        let err = BlockTransferMessage::decode(bytes).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::InvalidRoaringBitmap {
                message: "MergeStatuses",
                field: "bitmaps",
                ..
            }
        ));
    }

    #[test]
    fn corruption_cause_ordinals() {
        for ordinal in 0..5u8 {
            let cause = CorruptionCause::from_ordinal(ordinal).unwrap();
            assert_eq!(cause.ordinal(), ordinal);
        }
        assert_eq!(CorruptionCause::from_ordinal(5), None);
        assert_eq!(CorruptionCause::DiskIssue.name(), "DISK_ISSUE");
    }

    #[test]
    fn local_dirs_flattening() {
        let msg = LocalDirsForExecutors::from_dirs([
            ("0".to_string(), vec!["/a".to_string()]),
            ("1".to_string(), vec!["/b".to_string(), "/c".to_string()]),
        ]);
        assert_eq!(msg.num_local_dirs_by_exec, vec![1, 2]);
        let by_exec = msg.dirs_by_executor().unwrap();
        assert_eq!(by_exec[1].0, "1");
        assert_eq!(by_exec[1].1, &["/b".to_string(), "/c".to_string()][..]);
        let broken = LocalDirsForExecutors {
            exec_ids: vec!["0".into()],
            num_local_dirs_by_exec: vec![3],
            all_local_dirs: vec!["/a".into()],
        };
        assert_eq!(broken.dirs_by_executor(), None);
    }
}

//! `kess.v1.FetchedChunk`, the message FetchBlocks streams. prost-build leaves this one type to
//! us (`extern_path` in build.rs) so that on the daemon's side a chunk can travel to the encoder
//! with its bytes still on disk: `KessCodec` reads them straight into gRPC's encode buffer, where
//! prost would have copied them from a buffer of our own (one copy of every byte served: memmove
//! fell from 12% to 2% of the daemon's profile, about -10% CPU per GB). Clients see an ordinary
//! message.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use tonic::Status;

use crate::store::{ChunkRange, OpenBlock};

/// The fields of `kess.v1.FetchedChunk`, exactly as in the proto.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ChunkFields {
    /// Index of the BlockRange in the request.
    #[prost(uint32, tag = "1")]
    pub block_index: u32,
    #[prost(uint32, tag = "2")]
    pub partition: u32,
    /// Where this chunk's data starts within the partition.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// Length and CRC32 of the whole partition, repeated on every chunk.
    #[prost(uint64, tag = "5")]
    pub partition_length: u64,
    #[prost(uint32, tag = "6")]
    pub partition_crc32: u32,
    /// True on the partition's final chunk.
    #[prost(bool, tag = "7")]
    pub last: bool,
}

/// A `kess.v1.FetchedChunk`: its fields, and on the daemon's side, the data still to be read.
#[derive(Clone, Default)]
pub struct FetchedChunk {
    fields: ChunkFields,
    unread: Option<UnreadData>,
}

/// The chunk's data, still in the block's file.
#[derive(Clone)]
pub struct UnreadData {
    pub block: Arc<OpenBlock>,
    pub range: ChunkRange,
    /// Where the encoder reports a failed read to the stream.
    pub fault: Arc<StreamFault>,
}

/// The first read that failed while encoding a response stream. tonic turns an encoder's error
/// into INTERNAL, so the encoder sends the chunk without its data and leaves the real status
/// (DATA_LOSS naming the block) here for the stream to end with right after.
#[derive(Default)]
pub struct StreamFault(Mutex<Option<Status>>);

impl StreamFault {
    pub fn set(&self, status: Status) {
        let mut fault = self.0.lock().unwrap_or_else(|e| e.into_inner());
        fault.get_or_insert(status);
    }

    pub fn take(&self) -> Option<Status> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl FetchedChunk {
    /// A chunk whose `data` `KessCodec` reads from disk when it encodes the message.
    pub fn unread(fields: ChunkFields, data: UnreadData) -> Self {
        Self {
            fields,
            unread: Some(data),
        }
    }

    /// The fields and, if not read yet, where the data is.
    pub fn into_parts(self) -> (ChunkFields, Option<UnreadData>) {
        (self.fields, self.unread)
    }
}

impl From<ChunkFields> for FetchedChunk {
    fn from(fields: ChunkFields) -> Self {
        Self {
            fields,
            unread: None,
        }
    }
}

impl Deref for FetchedChunk {
    type Target = ChunkFields;
    fn deref(&self) -> &ChunkFields {
        &self.fields
    }
}

impl DerefMut for FetchedChunk {
    fn deref_mut(&mut self) -> &mut ChunkFields {
        &mut self.fields
    }
}

impl std::fmt::Debug for FetchedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FetchedChunk");
        d.field("fields", &self.fields);
        if let Some(unread) = &self.unread {
            d.field("unread", &(unread.block.key().to_string(), unread.range));
        }
        d.finish()
    }
}

/// Plain prost encoding sends the fields as they are (an unread chunk's data is only read by
/// `KessCodec`); decoding fills the fields.
impl prost::Message for FetchedChunk {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.fields.encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.fields.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.fields.encoded_len()
    }

    fn clear(&mut self) {
        self.fields.clear();
        self.unread = None;
    }
}

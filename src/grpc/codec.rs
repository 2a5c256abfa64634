//! The codec of kess's gRPC services: prost's, except that a [`FetchedChunk`] whose data is
//! still on disk has it read straight into the encode buffer (see `chunk.rs` for why).

use std::any::Any;
use std::marker::PhantomData;

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

use super::chunk::{FetchedChunk, UnreadData};
use crate::metrics::{self, ServedCounters};
use crate::store::PartitionCheck;

/// `kess.v1.FetchedChunk.data`'s field number.
const DATA_FIELD: u32 = 4;

#[derive(Debug)]
pub struct KessCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for KessCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for KessCodec<T, U>
where
    T: Message + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = KessEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        KessEncoder {
            check: PartitionCheck::default(),
            served: None,
            _message: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// One per response stream, so it can carry the running CRC32 of the partition being sent.
pub struct KessEncoder<T> {
    check: PartitionCheck,
    /// Counts what was read and checked, so a chunk that failed is not counted as served;
    /// looked up on the first chunk (most encoders never see one).
    served: Option<ServedCounters>,
    _message: PhantomData<fn(T)>,
}

impl<T: Message + 'static> Encoder for KessEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, mut item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // Only FetchBlocks streams FetchedChunk; every other message is prost's business.
        if let Some(chunk) = (&mut item as &mut dyn Any).downcast_mut::<FetchedChunk>() {
            let (mut fields, unread) = std::mem::take(chunk).into_parts();
            if let Some(unread) = unread {
                // Room for the other fields too: growing the buffer after the data is read
                // would copy the whole chunk again (a realloc per chunk, seen in profiles).
                if !self.append_data(&unread, fields.encoded_len(), dst) {
                    fields.last = false;
                }
            }
            // Field order is free in protobuf: the other fields follow the data, so `last` is
            // only written once the partition's CRC32 is known to match.
            fields.encode_raw(dst);
            return Ok(());
        }
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a reply: {e}")))
    }
}

impl<T> KessEncoder<T> {
    /// Appends the data field, its bytes read from the file straight into the buffer, leaving
    /// room for `tail` more bytes. If the read fails (or completes a partition that no longer
    /// matches its CRC32), nothing is appended, the failure goes to the stream, and false is
    /// returned.
    fn append_data(&mut self, unread: &UnreadData, tail: usize, dst: &mut EncodeBuf<'_>) -> bool {
        let len = unread.range.len;
        // The field's key and length go in front of the bytes, but are written only once the
        // bytes are read and checked: read them to just after where the key and length go.
        let head = if len > 0 {
            key_len(DATA_FIELD) + encoded_len_varint(len as u64)
        } else {
            0
        };
        dst.reserve(head + len + tail);
        let spare = bytes::BufMut::chunk_mut(dst);
        // SAFETY: the slice is only written to (by pread) before `advance_mut` below.
        let spare = unsafe { spare.as_uninit_slice_mut() };
        if let Err(e) = unread
            .block
            .read_into(&unread.range, &mut spare[head..], &mut self.check)
        {
            unread.fault.set(super::to_status(e));
            return false;
        }
        if len > 0 {
            // With the capacity reserved above these writes land in front of the bytes read.
            encode_key(DATA_FIELD, WireType::LengthDelimited, dst);
            encode_varint(len as u64, dst);
            // SAFETY: read_into initialised the `len` bytes that follow the key and length.
            unsafe { bytes::BufMut::advance_mut(dst, len) };
        }
        let served = self
            .served
            .get_or_insert_with(|| ServedCounters::new(metrics::GRPC));
        served.bytes(len as u64);
        if unread.range.completes {
            served.block();
        }
        true
    }
}

//! Typed errors of the Spark wire layer.
//!
//! Every error produced while decoding untrusted bytes names what was being
//! decoded (message type and field) and the lengths involved, so that a log
//! line or an `RpcFailure` text is enough to see what the peer sent wrong.

use thiserror::Error;

/// A message body (BlockTransferMessage, SaslMessage, AuthMessage or a frame
/// header) could not be decoded.
///
/// `message` is the Spark class name of what was being decoded (for example
/// `"FetchShuffleBlocks"` or `"RpcRequest"`) and `field` the Spark field name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes were left than the field needs.
    #[error("{message}.{field}: truncated, need {needed} bytes but only {remaining} remain")]
    Truncated {
        message: &'static str,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A length or element count prefix was negative.
    #[error("{message}.{field}: negative length {length}")]
    NegativeLength {
        message: &'static str,
        field: &'static str,
        length: i32,
    },
    /// A String field was not valid UTF-8 (Spark always writes UTF-8).
    #[error("{message}.{field}: {len} bytes are not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
        len: usize,
    },
    /// A body that must start with a type or tag byte was empty.
    #[error("{message}: empty body, expected a type byte")]
    EmptyBody { message: &'static str },
    /// The first byte of a BlockTransferMessage is not a known type id (0..=19).
    /// The text matches Spark's, which prints the byte as a signed Java byte.
    #[error("Unknown message type: {}", *.type_id as i8)]
    UnknownBlockTransferMessageType { type_id: u8 },
    /// A tagged envelope (SaslMessage 0xEA, AuthMessage 0xFB) had the wrong tag.
    #[error("{message}: expected tag byte {expected:#04x}, got {actual:#04x}")]
    WrongTag {
        message: &'static str,
        expected: u8,
        actual: u8,
    },
    /// An enum-valued field (for example a CorruptionCause ordinal) is out of range.
    #[error("{message}.{field}: invalid value {value}")]
    InvalidValue {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    /// A RoaringBitmap (portable format, no length prefix) could not be walked.
    #[error("{message}.{field}: invalid RoaringBitmap: {source}")]
    InvalidRoaringBitmap {
        message: &'static str,
        field: &'static str,
        #[source]
        source: RoaringFormatError,
    },
}

/// The portable RoaringBitmap serialization is malformed, so its end cannot
/// be found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoaringFormatError {
    /// The 4-byte little-endian cookie is neither 12346 nor 12347 (low 16 bits).
    #[error("bad cookie {cookie:#010x}")]
    BadCookie { cookie: u32 },
    /// More containers than 16-bit keys allow.
    #[error("container count {count} exceeds 65536")]
    TooManyContainers { count: u64 },
    /// The input ended inside the bitmap.
    #[error("truncated while reading {part}: need {needed} bytes at offset {offset}, only {available} available")]
    Truncated {
        part: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
}

/// A value could not be encoded into Spark's wire format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A String, byte[] or array is longer than the int32 length prefix allows.
    #[error("{message}.{field}: length {len} does not fit Spark's int32 length prefix")]
    FieldTooLong {
        message: &'static str,
        field: &'static str,
        len: usize,
    },
    /// A numeric value does not fit its wire type.
    #[error("{message}.{field}: value {value} does not fit its wire type")]
    ValueOutOfRange {
        message: &'static str,
        field: &'static str,
        value: u64,
    },
    /// The frame would exceed Spark's frame limit (frameLength - 8 < 2^31 - 1):
    /// the peer's decoder would reject it ("Too large frame").
    #[error("{message_type}: frame of {frame_length} bytes exceeds Spark's maximum of {max} (send large blocks as StreamResponse)")]
    FrameTooLarge {
        message_type: &'static str,
        frame_length: u64,
        max: u64,
    },
    /// An out-of-frame body was attached whose length differs from the header's
    /// byte count.
    #[error("{message_type}: header announces {declared} out-of-frame body bytes but {attached} are attached")]
    BodyLengthMismatch {
        message_type: &'static str,
        declared: i64,
        attached: usize,
    },
    /// An out-of-frame body byte count was negative.
    #[error("{message_type}: negative out-of-frame body length {length}")]
    NegativeBodyLength {
        message_type: &'static str,
        length: i64,
    },
}

/// The transport-level codec failed. Any of these (except `Io`) means the
/// peer is not speaking Spark's protocol correctly; Spark closes the
/// connection in that case.
#[derive(Debug, Error)]
pub enum FrameError {
    /// frameLength ≤ 8: Spark's "Frame length should be positive".
    #[error("Frame length should be positive: frame length field is {frame_length} (must exceed the 8 length bytes)")]
    FrameTooShort { frame_length: i64 },
    /// frameLength above the configured maximum: Spark's "Too large frame".
    #[error("Too large frame: frame length field is {frame_length}, maximum accepted is {max}")]
    FrameTooLarge { frame_length: i64, max: u64 },
    /// The type byte is not one of the 13 transport message types.
    #[error("Unknown message type: {type_id} (frame length {frame_length})")]
    UnknownMessageType { type_id: u8, frame_length: i64 },
    /// The header (or in-frame part) of a known message type is malformed.
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    /// StreamResponse.byteCount or UploadStream.bodyByteCount is negative.
    #[error("{message_type}: negative out-of-frame body length {length}")]
    NegativeOutOfFrameBodyLength {
        message_type: &'static str,
        length: i64,
    },
    /// The codec was told to collect out-of-frame bodies in memory, and this
    /// one is larger than allowed.
    #[error(
        "{message_type}: out-of-frame body of {length} bytes exceeds the in-memory limit of {max}"
    )]
    OutOfFrameBodyTooLarge {
        message_type: &'static str,
        length: i64,
        max: usize,
    },
    /// The connection ended in the middle of a frame or out-of-frame body.
    #[error("connection closed mid-message: {detail}")]
    TruncatedAtEof { detail: String },
    /// Encoding a frame failed.
    #[error("cannot encode frame: {0}")]
    Encode(#[from] EncodeError),
    /// I/O error of the underlying transport (needed by tokio-util's codec traits).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The `"<streamId>_<chunkIndex>"` string of a StreamRequest is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Stream id and chunk index should be specified as <streamId>_<chunkIndex>, got: {input:?}")]
pub struct StreamChunkIdParseError {
    pub input: String,
}

/// A block id string is malformed or violates the OpenBlocks rules.
///
/// The texts follow Spark's `ExternalBlockHandler` messages so that an
/// `RpcFailure` carrying them reads like the Java ESS's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockIdError {
    /// OpenBlocks with no block ids (Java fails with ArrayIndexOutOfBounds).
    #[error("OpenBlocks carries no block ids")]
    NoBlockIds,
    /// The first id is none of the accepted families.
    #[error("Unexpected block id format: {0}")]
    UnexpectedBlockIdFormat(String),
    /// A later id does not have the `shuffle_S_M_R` shape of the first.
    #[error("Unexpected shuffle block id format: {0}")]
    UnexpectedShuffleBlockIdFormat(String),
    /// A later id does not have the `shuffleChunk_S_SM_R_C` shape of the first.
    #[error("Unexpected shuffle chunk id format: {0}")]
    UnexpectedShuffleChunkIdFormat(String),
    /// A later id does not have the `rdd_R_S` shape of the first.
    #[error("Unexpected RDD block id format: {0}")]
    UnexpectedRddBlockIdFormat(String),
    /// A shuffle id belongs to another shuffle than the first.
    #[error("Expected shuffleId={expected}, got:{block_id}")]
    ShuffleIdMismatch { expected: i32, block_id: String },
    /// A shuffle chunk id belongs to another shuffle or merge than the first.
    #[error("Expected shuffleId = {shuffle_id} and shuffleMergeId = {shuffle_merge_id} but got {block_id}")]
    ShuffleMergeIdMismatch {
        shuffle_id: i32,
        shuffle_merge_id: i32,
        block_id: String,
    },
    /// A numeric part is not a number in range (Java's NumberFormatException).
    #[error("For input string: \"{part}\" (in block id {block_id})")]
    InvalidNumber { part: String, block_id: String },
    /// `BlockId::parse` does not know this name.
    #[error("Unrecognized BlockId: {0}")]
    Unrecognized(String),
}

/// A block file path could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathResolveError {
    /// The executor registered no local dirs.
    #[error("executor has no local dirs")]
    NoLocalDirs,
    /// subDirsPerLocalDir must be positive.
    #[error("subDirsPerLocalDir must be positive, got {0}")]
    InvalidSubDirCount(i32),
    /// The file name would escape the block manager directory or is not a
    /// plain name (empty, `.`, `..`, or contains `/`, `\` or NUL). Spark does
    /// not check this; kess does because RemoveBlocks names come off the wire.
    #[error("refusing unsafe block file name {0:?}")]
    UnsafeFileName(String),
}

/// SASL DIGEST-MD5 negotiation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SaslError {
    /// A step was called in the wrong order (for example `respond` before `challenge`).
    #[error("DIGEST-MD5: {0}")]
    InvalidState(&'static str),
    /// DIGEST-MD5 has no initial response; the client's first token must be empty.
    #[error("DIGEST-MD5 must not have an initial response ({len} bytes received)")]
    UnexpectedInitialResponse { len: usize },
    /// The token is not a syntactically valid directive list.
    #[error("DIGEST-MD5: malformed directive list at byte {offset}: {reason}")]
    MalformedDirectives { offset: usize, reason: &'static str },
    /// A directive occurs twice where RFC 2831 allows it once.
    #[error("DIGEST-MD5: duplicate directive {0}")]
    DuplicateDirective(String),
    /// A required directive is absent.
    #[error("DIGEST-MD5: missing directive {0}")]
    MissingDirective(&'static str),
    /// A directive has a value other than the one required.
    #[error("DIGEST-MD5: unexpected {directive}: got {actual:?}, expected {expected:?}")]
    UnexpectedValue {
        directive: &'static str,
        expected: String,
        actual: String,
    },
    /// The client chose a quality of protection that is not supported.
    /// kess implements only qop=auth (no SASL integrity or encryption layer).
    #[error("DIGEST-MD5: unsupported qop {qop:?}: only qop=auth is supported (SASL encryption, spark.authenticate.enableSaslEncryption=true, is not implemented)")]
    UnsupportedQop { qop: String },
    /// The client answered a different nonce than the one this server issued.
    #[error("DIGEST-MD5: nonce mismatch")]
    NonceMismatch,
    /// The digest response does not match: the client used another secret.
    #[error("DIGEST-MD5: digest response mismatch (client and server secrets differ)")]
    AuthenticationFailed,
    /// Client side: the server's rspauth does not prove knowledge of the secret.
    #[error("DIGEST-MD5: server rspauth mismatch (client and server secrets differ)")]
    RspauthMismatch,
}

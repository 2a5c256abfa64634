//! What an RpcRequest body contains: a BlockTransferMessage or one of the two
//! authentication envelopes, told apart by the first byte.
//!
//! * `0x00..=0x13`: BlockTransferMessage (see [`super::message`]).
//! * `0xEA`: SaslMessage (`network/sasl/SaslMessage.java`), one SASL step.
//! * `0xFB`: AuthMessage (`network/crypto/AuthMessage.java`), the AuthEngine
//!   (`spark.network.crypto.enabled`) handshake.
//!
//! Replies to SASL steps are *not* wrapped: the RpcResponse body is the raw
//! SASL token, so it cannot be classified by this module.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::message::BlockTransferMessage;
use super::primitives::{put_byte_array, put_string, WireReader};

/// First byte of a SaslMessage.
pub const SASL_MESSAGE_TAG: u8 = 0xEA;

/// First byte of an AuthMessage.
pub const AUTH_MESSAGE_TAG: u8 = 0xFB;

/// One client SASL step: tag 0xEA, appId String, int32 token length, token.
///
/// As in Spark, the int32 length is redundant: the token is the rest of the
/// body, and the length is rewritten as `token.len()` on encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslMessage {
    pub app_id: String,
    pub token: Bytes,
}

impl SaslMessage {
    /// Decodes a whole RpcRequest body.
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = tagged_reader(body, "SaslMessage", SASL_MESSAGE_TAG)?;
        let app_id = r.string("appId")?;
        r.i32("tokenLength")?;
        Ok(Self {
            app_id,
            token: r.rest(),
        })
    }

    /// Appends the encoded message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        dst.put_u8(SASL_MESSAGE_TAG);
        put_string(dst, "SaslMessage", "appId", &self.app_id)?;
        put_byte_array(dst, "SaslMessage", "token", &self.token)
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

/// One AuthEngine handshake message: tag 0xFB, appId String, salt byte[],
/// ciphertext byte[] (12-byte IV + X25519 public key + GCM tag in 3.5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMessage {
    pub app_id: String,
    pub salt: Bytes,
    pub ciphertext: Bytes,
}

impl AuthMessage {
    /// Decodes a whole RpcRequest/RpcResponse body. Trailing bytes are
    /// ignored, as in Spark.
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = tagged_reader(body, "AuthMessage", AUTH_MESSAGE_TAG)?;
        Ok(Self {
            app_id: r.string("appId")?,
            salt: r.byte_array("salt")?,
            ciphertext: r.byte_array("ciphertext")?,
        })
    }

    /// Appends the encoded message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        dst.put_u8(AUTH_MESSAGE_TAG);
        put_string(dst, "AuthMessage", "appId", &self.app_id)?;
        put_byte_array(dst, "AuthMessage", "salt", &self.salt)?;
        put_byte_array(dst, "AuthMessage", "ciphertext", &self.ciphertext)
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

/// Checks the tag byte and returns a reader positioned after it.
fn tagged_reader(body: Bytes, message: &'static str, tag: u8) -> Result<WireReader, DecodeError> {
    match body.first() {
        None => Err(DecodeError::EmptyBody { message }),
        Some(&actual) if actual != tag => Err(DecodeError::WrongTag {
            message,
            expected: tag,
            actual,
        }),
        Some(_) => Ok(WireReader::new(body.slice(1..), message)),
    }
}

/// A classified RpcRequest body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcPayload {
    BlockTransfer(BlockTransferMessage),
    Sasl(SaslMessage),
    Auth(AuthMessage),
}

impl RpcPayload {
    /// Classifies a body by its first byte and decodes it.
    ///
    /// An unknown first byte is reported as Spark reports it for a
    /// BlockTransferMessage ("Unknown message type: N").
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        match body.first() {
            None => Err(DecodeError::EmptyBody {
                message: "RPC body",
            }),
            Some(&SASL_MESSAGE_TAG) => SaslMessage::decode(body).map(Self::Sasl),
            Some(&AUTH_MESSAGE_TAG) => AuthMessage::decode(body).map(Self::Auth),
            Some(_) => BlockTransferMessage::decode(body).map(Self::BlockTransfer),
        }
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        match self {
            Self::BlockTransfer(m) => m.to_bytes(),
            Self::Sasl(m) => m.to_bytes(),
            Self::Auth(m) => m.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::{BlockTransferMessage, BlocksRemoved};
    use super::*;

    #[test]
    fn sasl_round_trip_and_empty_initial_token() {
        let msg = SaslMessage {
            app_id: "app-1".into(),
            token: Bytes::new(),
        };
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(&bytes[..], b"\xea\x00\x00\x00\x05app-1\x00\x00\x00\x00");
        assert_eq!(RpcPayload::decode(bytes).unwrap(), RpcPayload::Sasl(msg));
    }

    #[test]
    fn auth_round_trip() {
        let msg = AuthMessage {
            app_id: "a".into(),
            salt: Bytes::from_static(&[1; 16]),
            ciphertext: Bytes::from_static(&[2; 60]),
        };
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(bytes.len(), 1 + 5 + 20 + 64);
        assert_eq!(RpcPayload::decode(bytes).unwrap(), RpcPayload::Auth(msg));
    }

    #[test]
    fn classifies_block_transfer_messages() {
        let msg = BlockTransferMessage::BlocksRemoved(BlocksRemoved {
            num_removed_blocks: 0,
        });
        assert_eq!(
            RpcPayload::decode(msg.to_bytes().unwrap()).unwrap(),
            RpcPayload::BlockTransfer(msg)
        );
    }

    #[test]
    fn malformed_envelopes() {
        assert_eq!(
            RpcPayload::decode(Bytes::new()),
            Err(DecodeError::EmptyBody {
                message: "RPC body"
            })
        );
        assert_eq!(
            SaslMessage::decode(Bytes::from_static(&[0xfb])),
            Err(DecodeError::WrongTag {
                message: "SaslMessage",
                expected: 0xea,
                actual: 0xfb
            })
        );
        assert!(matches!(
            RpcPayload::decode(Bytes::from_static(&[0xea, 0, 0, 0, 3, b'a'])),
            Err(DecodeError::Truncated {
                message: "SaslMessage",
                field: "appId",
                ..
            })
        ));
        assert!(matches!(
            RpcPayload::decode(Bytes::from_static(&[0xea, 0, 0, 0, 1, b'a', 0, 0])),
            Err(DecodeError::Truncated {
                message: "SaslMessage",
                field: "tokenLength",
                ..
            })
        ));
        assert!(matches!(
            RpcPayload::decode(Bytes::from_static(&[
                0xfb, 0, 0, 0, 1, b'a', 0, 0, 0, 16, 1
            ])),
            Err(DecodeError::Truncated {
                message: "AuthMessage",
                field: "salt",
                needed: 16,
                remaining: 1
            })
        ));
    }
}

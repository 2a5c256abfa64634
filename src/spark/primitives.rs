//! Spark's primitive wire encodings (`network/protocol/Encoders.java`).
//!
//! All integers are big-endian two's complement. A String is an int32 byte
//! count followed by UTF-8 bytes; a byte[] is an int32 count followed by the
//! bytes; String[], int[] and long[] are an int32 element count followed by
//! the elements. There is no null marker.
//!
//! [`WireReader`] reads these from an untrusted [`Bytes`] buffer without ever
//! panicking: each read names the message and field it belongs to so that
//! errors say exactly what was wrong. Byte arrays are returned as zero-copy
//! slices of the input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};

/// Cursor over an untrusted message buffer.
#[derive(Debug, Clone)]
pub struct WireReader {
    buf: Bytes,
    message: &'static str,
}

impl WireReader {
    /// Reads `buf`, attributing errors to the Spark message class `message`.
    pub fn new(buf: Bytes, message: &'static str) -> Self {
        Self { buf, message }
    }

    /// Number of unread bytes.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, field: &'static str, needed: usize) -> Result<(), DecodeError> {
        if self.buf.len() < needed {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed,
                remaining: self.buf.len(),
            });
        }
        Ok(())
    }

    /// One unsigned byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.buf.get_u8())
    }

    /// A boolean byte: Spark writes 0 or 1 and reads any non-zero as true.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.u8(field)? != 0)
    }

    /// A big-endian int32.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.buf.get_i32())
    }

    /// A big-endian int64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(field, 8)?;
        Ok(self.buf.get_i64())
    }

    /// Exactly `len` raw bytes (zero-copy).
    pub fn raw(&mut self, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        Ok(self.buf.split_to(len))
    }

    /// An int32 length or count prefix, which must not be negative.
    fn length_prefix(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let length = self.i32(field)?;
        usize::try_from(length).map_err(|_| DecodeError::NegativeLength {
            message: self.message,
            field,
            length,
        })
    }

    /// A `byte[]`: int32 length then the bytes (zero-copy).
    pub fn byte_array(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.length_prefix(field)?;
        self.raw(field, len)
    }

    /// A `String`: int32 length then UTF-8 bytes.
    ///
    /// Java decodes invalid UTF-8 leniently (replacement characters); Spark
    /// clients only ever write valid UTF-8, so invalid input is rejected here.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.byte_array(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
            len: bytes.len(),
        })
    }

    /// Capacity to pre-allocate for `count` elements of at least
    /// `min_element_len` bytes: never more than the remaining input can hold,
    /// so a forged count cannot make us allocate.
    fn bounded_capacity(&self, count: usize, min_element_len: usize) -> usize {
        count.min(self.buf.len() / min_element_len.max(1))
    }

    /// A `String[]`: int32 count then each String.
    pub fn string_array(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let count = self.length_prefix(field)?;
        let mut out = Vec::with_capacity(self.bounded_capacity(count, 4));
        for _ in 0..count {
            out.push(self.string(field)?);
        }
        Ok(out)
    }

    /// An `int[]`: int32 count then int32 values.
    pub fn i32_array(&mut self, field: &'static str) -> Result<Vec<i32>, DecodeError> {
        let count = self.length_prefix(field)?;
        self.need(field, count.saturating_mul(4))?;
        Ok((0..count).map(|_| self.buf.get_i32()).collect())
    }

    /// A `long[]`: int32 count then int64 values.
    pub fn i64_array(&mut self, field: &'static str) -> Result<Vec<i64>, DecodeError> {
        let count = self.length_prefix(field)?;
        self.need(field, count.saturating_mul(8))?;
        Ok((0..count).map(|_| self.buf.get_i64()).collect())
    }

    /// An `int[][]` as Spark writes it: an int32 outer count, then that many
    /// complete `int[]` (there is no prefix covering the whole structure).
    pub fn i32_array_array(&mut self, field: &'static str) -> Result<Vec<Vec<i32>>, DecodeError> {
        let count = self.length_prefix(field)?;
        let mut out = Vec::with_capacity(self.bounded_capacity(count, 4));
        for _ in 0..count {
            out.push(self.i32_array(field)?);
        }
        Ok(out)
    }

    /// Everything not read yet (zero-copy).
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// A peek at the unread bytes, for formats whose end must be found by
    /// parsing (RoaringBitmap).
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }
}

/// Converts a length to Spark's int32 prefix, or says which field is too long.
fn int32_length(
    message: &'static str,
    field: &'static str,
    len: usize,
) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        message,
        field,
        len,
    })
}

/// Writes a `String`.
pub fn put_string(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    value: &str,
) -> Result<(), EncodeError> {
    put_byte_array(dst, message, field, value.as_bytes())
}

/// Writes a `byte[]`.
pub fn put_byte_array(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    value: &[u8],
) -> Result<(), EncodeError> {
    dst.put_i32(int32_length(message, field, value.len())?);
    dst.put_slice(value);
    Ok(())
}

/// Writes a `String[]`.
pub fn put_string_array(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    values: &[String],
) -> Result<(), EncodeError> {
    dst.put_i32(int32_length(message, field, values.len())?);
    for value in values {
        put_string(dst, message, field, value)?;
    }
    Ok(())
}

/// Writes an `int[]`.
pub fn put_i32_array(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    values: &[i32],
) -> Result<(), EncodeError> {
    dst.put_i32(int32_length(message, field, values.len())?);
    for value in values {
        dst.put_i32(*value);
    }
    Ok(())
}

/// Writes a `long[]`.
pub fn put_i64_array(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    values: &[i64],
) -> Result<(), EncodeError> {
    dst.put_i32(int32_length(message, field, values.len())?);
    for value in values {
        dst.put_i64(*value);
    }
    Ok(())
}

/// Writes an `int[][]` (outer int32 count, then each `int[]`).
pub fn put_i32_array_array(
    dst: &mut BytesMut,
    message: &'static str,
    field: &'static str,
    values: &[Vec<i32>],
) -> Result<(), EncodeError> {
    dst.put_i32(int32_length(message, field, values.len())?);
    for inner in values {
        put_i32_array(dst, message, field, inner)?;
    }
    Ok(())
}

/// Encoded size of a `String` (prefix + UTF-8 bytes).
pub fn string_len(value: &str) -> usize {
    4 + value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> WireReader {
        WireReader::new(Bytes::copy_from_slice(bytes), "Test")
    }

    #[test]
    fn reads_big_endian_integers_and_strings() {
        let mut r = reader(&[0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xfe, 1]);
        assert_eq!(r.string("s").unwrap(), "hi");
        assert_eq!(r.i32("n").unwrap(), -2);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn truncated_string_names_field_and_lengths() {
        let mut r = reader(&[0, 0, 0, 9, b'a']);
        assert_eq!(
            r.string("appId"),
            Err(DecodeError::Truncated {
                message: "Test",
                field: "appId",
                needed: 9,
                remaining: 1
            })
        );
    }

    #[test]
    fn negative_length_is_rejected() {
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            r.string_array("blockIds"),
            Err(DecodeError::NegativeLength {
                message: "Test",
                field: "blockIds",
                length: -1
            })
        );
    }

    #[test]
    fn huge_count_does_not_allocate_and_fails_cleanly() {
        // count = i32::MAX with no elements behind it
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.string_array("localDirs"),
            Err(DecodeError::Truncated { .. })
        ));
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.i64_array("mapIds"),
            Err(DecodeError::Truncated { .. })
        ));
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.i32_array_array("reduceIds"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut r = reader(&[0, 0, 0, 2, 0xc3, 0x28]);
        assert_eq!(
            r.string("execId"),
            Err(DecodeError::InvalidUtf8 {
                message: "Test",
                field: "execId",
                len: 2
            })
        );
    }

    #[test]
    fn writers_round_trip() {
        let mut dst = BytesMut::new();
        put_string_array(&mut dst, "T", "a", &["x".into(), "yz".into()]).unwrap();
        put_i64_array(&mut dst, "T", "b", &[1, -1]).unwrap();
        put_i32_array_array(&mut dst, "T", "c", &[vec![1], vec![]]).unwrap();
        let mut r = WireReader::new(dst.freeze(), "T");
        assert_eq!(r.string_array("a").unwrap(), vec!["x", "yz"]);
        assert_eq!(r.i64_array("b").unwrap(), vec![1, -1]);
        assert_eq!(r.i32_array_array("c").unwrap(), vec![vec![1], vec![]]);
        assert_eq!(r.remaining(), 0);
    }
}

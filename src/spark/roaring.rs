//! Length of a RoaringBitmap in the portable serialization format.
//!
//! Spark writes RoaringBitmaps (push-based shuffle's MergeStatuses) with no
//! length prefix, so the only way to find where one ends — and where the next
//! field starts — is to walk the format. kess never needs the bitmap's
//! contents, only its extent, so this module measures and does not decode.
//!
//! Format (all little-endian), from the RoaringBitmap format specification:
//! * cookie u32: low 16 bits 12347 = has run containers, container count =
//!   (cookie >> 16) + 1, followed by a run-flag bitset of ceil(n/8) bytes;
//!   or exactly 12346 = no run containers, followed by a u32 container count.
//! * n × (key u16, cardinality-1 u16).
//! * n × u32 offsets, present unless the run-cookie is used with n < 4.
//! * n containers: run (u16 run count, then 4 bytes per run), bitmap
//!   (cardinality > 4096: 8192 bytes) or array (2 bytes per value).

use super::error::RoaringFormatError;

const SERIAL_COOKIE_NO_RUNCONTAINER: u32 = 12346;
const SERIAL_COOKIE: u32 = 12347;
const NO_OFFSET_THRESHOLD: usize = 4;
const MAX_ARRAY_CONTAINER_CARDINALITY: usize = 4096;
const BITMAP_CONTAINER_BYTES: usize = 8192;
const MAX_CONTAINERS: u64 = 1 << 16;

/// Bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, part: &'static str, len: usize) -> Result<&'a [u8], RoaringFormatError> {
        let available = self.buf.len() - self.pos;
        if available < len {
            return Err(RoaringFormatError::Truncated {
                part,
                offset: self.pos,
                needed: len,
                available,
            });
        }
        let slice = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn u16(&mut self, part: &'static str) -> Result<u16, RoaringFormatError> {
        let b = self.take(part, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, part: &'static str) -> Result<u32, RoaringFormatError> {
        let b = self.take(part, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Number of bytes the portable-format RoaringBitmap at the start of `buf`
/// occupies. Bytes after it are ignored.
pub fn portable_serialized_len(buf: &[u8]) -> Result<usize, RoaringFormatError> {
    let mut c = Cursor { buf, pos: 0 };
    let cookie = c.u32("cookie")?;
    let (container_count, run_flags) = if cookie & 0xffff == SERIAL_COOKIE {
        let count = (cookie >> 16) as usize + 1;
        (
            count,
            Some(c.take("run container bitset", count.div_ceil(8))?),
        )
    } else if cookie == SERIAL_COOKIE_NO_RUNCONTAINER {
        let count = u64::from(c.u32("container count")?);
        if count > MAX_CONTAINERS {
            return Err(RoaringFormatError::TooManyContainers { count });
        }
        (count as usize, None)
    } else {
        return Err(RoaringFormatError::BadCookie { cookie });
    };
    let descriptive_header = c.take("keys and cardinalities", container_count * 4)?;
    if run_flags.is_none() || container_count >= NO_OFFSET_THRESHOLD {
        c.take("offsets", container_count * 4)?;
    }
    for i in 0..container_count {
        let is_run = run_flags.is_some_and(|flags| flags[i / 8] & (1 << (i % 8)) != 0);
        if is_run {
            let runs = usize::from(c.u16("run count")?);
            c.take("runs", runs * 4)?;
        } else {
            let card_minus_one =
                u16::from_le_bytes([descriptive_header[i * 4 + 2], descriptive_header[i * 4 + 3]]);
            let cardinality = usize::from(card_minus_one) + 1;
            if cardinality > MAX_ARRAY_CONTAINER_CARDINALITY {
                c.take("bitmap container", BITMAP_CONTAINER_BYTES)?;
            } else {
                c.take("array container", cardinality * 2)?;
            }
        }
    }
    Ok(c.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty bitmap as Java's RoaringBitmap serializes it.
    const EMPTY: [u8; 8] = [0x3a, 0x30, 0, 0, 0, 0, 0, 0];

    /// {1, 2, 3} as one array container (no run optimisation).
    const ARRAY_1_2_3: [u8; 22] = [
        0x3a, 0x30, 0, 0, // cookie 12346
        1, 0, 0, 0, // 1 container
        0, 0, 2, 0, // key 0, cardinality-1 = 2
        16, 0, 0, 0, // offset of container 0
        1, 0, 2, 0, 3, 0, // values
    ];

    /// {1, 2, 3} run-optimised: one run container [1, 1+2].
    const RUN_1_2_3: [u8; 15] = [
        0x3b, 0x30, 0, 0,    // cookie 12347, 1 container
        0x01, // run bitset: container 0 is a run container
        0, 0, 2, 0, // key 0, cardinality-1 = 2
        1, 0, // 1 run
        1, 0, 2, 0, // start 1, length-1 2
    ];

    #[test]
    fn measures_known_layouts() {
        assert_eq!(portable_serialized_len(&EMPTY), Ok(8));
        assert_eq!(portable_serialized_len(&ARRAY_1_2_3), Ok(22));
        assert_eq!(portable_serialized_len(&RUN_1_2_3), Ok(15));
        let mut followed = RUN_1_2_3.to_vec();
        followed.extend_from_slice(&[9, 9, 9]);
        assert_eq!(portable_serialized_len(&followed), Ok(15));
    }

    #[test]
    fn measures_bitmap_container_and_offsets_with_runs() {
        // 4 containers with the run cookie => offsets present.
        let mut b = vec![0x3b, 0x30, 3, 0, 0b0000_0001];
        b.extend_from_slice(&[0, 0, 0, 0]); // key 0 (run), card 1
        b.extend_from_slice(&[1, 0, 0xff, 0x1f]); // key 1, card 8192 -> bitmap
        b.extend_from_slice(&[2, 0, 0, 0]); // key 2, card 1 -> array
        b.extend_from_slice(&[3, 0, 1, 0]); // key 3, card 2 -> array
        b.extend_from_slice(&[0; 16]); // offsets
        b.extend_from_slice(&[1, 0, 5, 0, 0, 0]); // one run
        b.extend_from_slice(&[0; 8192]); // bitmap
        b.extend_from_slice(&[7, 0]); // array of 1
        b.extend_from_slice(&[1, 0, 2, 0]); // array of 2
        assert_eq!(portable_serialized_len(&b), Ok(b.len()));
        assert!(matches!(
            portable_serialized_len(&b[..b.len() - 1]),
            Err(RoaringFormatError::Truncated {
                part: "array container",
                ..
            })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            portable_serialized_len(&[1, 2, 3, 4]),
            Err(RoaringFormatError::BadCookie {
                cookie: 0x0403_0201
            })
        );
        assert!(matches!(
            portable_serialized_len(&[0x3a, 0x30]),
            Err(RoaringFormatError::Truncated { part: "cookie", .. })
        ));
        assert_eq!(
            portable_serialized_len(&[0x3a, 0x30, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(RoaringFormatError::TooManyContainers { count: 0xffff_ffff })
        );
        for len in 0..ARRAY_1_2_3.len() {
            assert!(portable_serialized_len(&ARRAY_1_2_3[..len]).is_err());
        }
    }
}

//! Spark's index and checksum file formats, which kess also uses for its own map outputs so
//! that one read core serves both protocols.
//!
//! * index: `num_partitions + 1` big-endian int64 offsets, first 0, last = data file length;
//!   partition r is bytes `[off[r], off[r+1])` of the data file.
//! * checksum: `num_partitions` big-endian int64 values, one per partition (kess writes CRC32,
//!   the same values Spark's `CRC32` checksum algorithm produces).

use bytes::{BufMut, BytesMut};

/// Parsed partition offsets of one map output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleIndex {
    offsets: Box<[u64]>,
}

impl ShuffleIndex {
    /// Parses and validates an index file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 16 || !bytes.len().is_multiple_of(8) {
            return Err(format!(
                "index file has {} bytes; expected a multiple of 8 and at least 16",
                bytes.len()
            ));
        }
        let offsets: Box<[u64]> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_be_bytes(c.try_into().unwrap_or([0; 8])) as u64)
            .collect();
        if offsets[0] != 0 {
            return Err(format!("first offset is {}, not 0", offsets[0] as i64));
        }
        if let Some(w) = offsets
            .windows(2)
            .find(|w| w[1] < w[0] || w[1] > i64::MAX as u64)
        {
            return Err(format!(
                "offsets are not non-decreasing: {} then {}",
                w[0] as i64, w[1] as i64
            ));
        }
        Ok(Self { offsets })
    }

    /// Builds the index of consecutive partitions with the given lengths.
    pub fn from_lengths(lengths: &[u64]) -> Self {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        let mut at = 0u64;
        offsets.push(0);
        for len in lengths {
            at += len;
            offsets.push(at);
        }
        Self {
            offsets: offsets.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(self.offsets.len() * 8);
        for off in self.offsets.iter() {
            out.put_i64(*off as i64);
        }
        out.to_vec()
    }

    pub fn num_partitions(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    /// Length of the data file this index describes.
    pub fn data_len(&self) -> u64 {
        self.offsets[self.offsets.len() - 1]
    }

    /// Byte range of partitions `[start, end)`; `None` when out of range.
    pub fn range(&self, start: u32, end: u32) -> Option<(u64, u64)> {
        if start > end || end > self.num_partitions() {
            return None;
        }
        Some((self.offsets[start as usize], self.offsets[end as usize]))
    }

    pub fn partition_len(&self, partition: u32) -> Option<u64> {
        self.range(partition, partition + 1).map(|(a, b)| b - a)
    }

    /// Rough memory footprint, the weight in the index cache.
    pub fn retained_bytes(&self) -> usize {
        self.offsets.len() * 8 + 64
    }
}

/// Parses a checksum file: one big-endian int64 per partition.
pub fn parse_checksums(bytes: &[u8]) -> Result<Vec<u64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "checksum file has {} bytes, not a multiple of 8",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().unwrap_or([0; 8])) as u64)
        .collect())
}

pub fn encode_checksums(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for v in values {
        out.put_i64(v as i64);
    }
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_captured_spark_index() {
        // shuffle_0_2_0.index of the vectors: [0, 78, 158, 229].
        let idx = ShuffleIndex::from_lengths(&[78, 80, 71]);
        let parsed = ShuffleIndex::parse(&idx.encode()).unwrap();
        assert_eq!(parsed.num_partitions(), 3);
        assert_eq!(parsed.range(2, 3), Some((158, 229)));
        assert_eq!(parsed.range(0, 3), Some((0, 229)));
        assert_eq!(parsed.range(2, 4), None);
        assert_eq!(parsed.range(3, 2), None);
        assert_eq!(parsed.data_len(), 229);
    }

    #[test]
    fn rejects_malformed_indexes() {
        assert!(ShuffleIndex::parse(&[0; 8]).is_err(), "needs two offsets");
        assert!(
            ShuffleIndex::parse(&[0; 17]).is_err(),
            "not a multiple of 8"
        );
        let mut bad_start = ShuffleIndex::from_lengths(&[5]).encode();
        bad_start[7] = 1;
        assert!(ShuffleIndex::parse(&bad_start).is_err());
        let decreasing = encode_checksums([0, 10, 5]);
        assert!(ShuffleIndex::parse(&decreasing).is_err());
        let negative = encode_checksums([0, u64::MAX]);
        assert!(ShuffleIndex::parse(&negative).is_err());
    }

    #[test]
    fn checksums_round_trip() {
        let raw = encode_checksums([1, 0xffff_ffff, 7]);
        assert_eq!(parse_checksums(&raw).unwrap(), vec![1, 0xffff_ffff, 7]);
        assert!(parse_checksums(&raw[..5]).is_err());
    }
}

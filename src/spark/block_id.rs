//! Spark block id strings (`core/.../storage/BlockId.scala`) and the rules by
//! which the ESS turns an OpenBlocks request into chunks
//! (`ExternalBlockHandler.ManagedBufferIterator`).
//!
//! Two parsers exist on purpose, because Spark has two:
//! * [`BlockId::parse`] follows BlockId.scala's anchored patterns
//!   (`[0-9]+` numbers) and knows the file-level names (`.data`, `.index`,
//!   `.checksum[.ALG]`) that RemoveBlocks uses.
//! * [`OpenBlocksPlan::from_block_ids`] follows ExternalBlockHandler exactly:
//!   Java `split("_")` (trailing empty parts dropped), `Integer.parseInt`
//!   (a leading sign is accepted), family chosen by the first id, the same
//!   shape and shuffle id required of every other id, and mapId as int32.

use std::fmt;

use super::error::BlockIdError;

/// A parsed block name of one of the families an ESS deals with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlockId {
    /// `shuffle_S_M_R`: one reduce partition of one map output.
    Shuffle {
        shuffle_id: i32,
        map_id: i64,
        reduce_id: i32,
    },
    /// `shuffle_S_M_START_END`: reduce partitions [start, end) of one map
    /// output. Client-side only; OpenBlocks rejects it.
    ShuffleBatch {
        shuffle_id: i32,
        map_id: i64,
        start_reduce_id: i32,
        end_reduce_id: i32,
    },
    /// `shuffle_S_M_R.data` (R is 0 for sort-shuffle output).
    ShuffleData {
        shuffle_id: i32,
        map_id: i64,
        reduce_id: i32,
    },
    /// `shuffle_S_M_R.index`.
    ShuffleIndex {
        shuffle_id: i32,
        map_id: i64,
        reduce_id: i32,
    },
    /// `shuffle_S_M_R.checksum` (block) or `shuffle_S_M_R.checksum.ALG` (file).
    ShuffleChecksum {
        shuffle_id: i32,
        map_id: i64,
        reduce_id: i32,
        algorithm: Option<String>,
    },
    /// `rdd_R_S`: a disk-persisted RDD partition.
    Rdd { rdd_id: i32, split_index: i32 },
    /// `shuffleChunk_S_SM_R_C`: a chunk of a push-merged partition.
    ShuffleChunk {
        shuffle_id: i32,
        shuffle_merge_id: i32,
        reduce_id: i32,
        chunk_id: i32,
    },
    /// `shufflePush_S_SM_M_R`: a pushed block.
    ShufflePush {
        shuffle_id: i32,
        shuffle_merge_id: i32,
        map_index: i32,
        reduce_id: i32,
    },
}

/// A `[0-9]+` number as BlockId.scala's patterns accept it.
fn pattern_number<T: std::str::FromStr>(part: &str, name: &str) -> Result<T, BlockIdError> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BlockIdError::Unrecognized(name.to_owned()));
    }
    part.parse().map_err(|_| BlockIdError::InvalidNumber {
        part: part.to_owned(),
        block_id: name.to_owned(),
    })
}

/// Splits `rest` into exactly `N` `_`-separated parts.
fn exact_parts<const N: usize>(rest: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut parts = rest.split('_');
    for slot in &mut out {
        *slot = parts.next()?;
    }
    parts.next().is_none().then_some(out)
}

impl BlockId {
    /// Parses a block or block-file name.
    pub fn parse(name: &str) -> Result<Self, BlockIdError> {
        let unrecognized = || BlockIdError::Unrecognized(name.to_owned());
        if let Some(rest) = name.strip_prefix("shuffleChunk_") {
            let [s, sm, r, c] = exact_parts::<4>(rest).ok_or_else(unrecognized)?;
            return Ok(Self::ShuffleChunk {
                shuffle_id: pattern_number(s, name)?,
                shuffle_merge_id: pattern_number(sm, name)?,
                reduce_id: pattern_number(r, name)?,
                chunk_id: pattern_number(c, name)?,
            });
        }
        if let Some(rest) = name.strip_prefix("shufflePush_") {
            let [s, sm, m, r] = exact_parts::<4>(rest).ok_or_else(unrecognized)?;
            return Ok(Self::ShufflePush {
                shuffle_id: pattern_number(s, name)?,
                shuffle_merge_id: pattern_number(sm, name)?,
                map_index: pattern_number(m, name)?,
                reduce_id: pattern_number(r, name)?,
            });
        }
        if let Some(rest) = name.strip_prefix("rdd_") {
            let [r, s] = exact_parts::<2>(rest).ok_or_else(unrecognized)?;
            return Ok(Self::Rdd {
                rdd_id: pattern_number(r, name)?,
                split_index: pattern_number(s, name)?,
            });
        }
        let rest = name.strip_prefix("shuffle_").ok_or_else(unrecognized)?;
        // File-level names: the suffix starts at the first '.'.
        if let Some((ids, suffix)) = rest.split_once('.') {
            let [s, m, r] = exact_parts::<3>(ids).ok_or_else(unrecognized)?;
            let (shuffle_id, map_id, reduce_id) = (
                pattern_number(s, name)?,
                pattern_number(m, name)?,
                pattern_number(r, name)?,
            );
            return match suffix {
                "data" => Ok(Self::ShuffleData {
                    shuffle_id,
                    map_id,
                    reduce_id,
                }),
                "index" => Ok(Self::ShuffleIndex {
                    shuffle_id,
                    map_id,
                    reduce_id,
                }),
                "checksum" => Ok(Self::ShuffleChecksum {
                    shuffle_id,
                    map_id,
                    reduce_id,
                    algorithm: None,
                }),
                _ => match suffix.strip_prefix("checksum.") {
                    Some(algorithm) if !algorithm.is_empty() => Ok(Self::ShuffleChecksum {
                        shuffle_id,
                        map_id,
                        reduce_id,
                        algorithm: Some(algorithm.to_owned()),
                    }),
                    _ => Err(unrecognized()),
                },
            };
        }
        if let Some([s, m, r]) = exact_parts::<3>(rest) {
            return Ok(Self::Shuffle {
                shuffle_id: pattern_number(s, name)?,
                map_id: pattern_number(m, name)?,
                reduce_id: pattern_number(r, name)?,
            });
        }
        let [s, m, start, end] = exact_parts::<4>(rest).ok_or_else(unrecognized)?;
        Ok(Self::ShuffleBatch {
            shuffle_id: pattern_number(s, name)?,
            map_id: pattern_number(m, name)?,
            start_reduce_id: pattern_number(start, name)?,
            end_reduce_id: pattern_number(end, name)?,
        })
    }
}

impl fmt::Display for BlockId {
    /// The canonical name, as Spark's `BlockId.name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shuffle {
                shuffle_id,
                map_id,
                reduce_id,
            } => write!(f, "shuffle_{shuffle_id}_{map_id}_{reduce_id}"),
            Self::ShuffleBatch {
                shuffle_id,
                map_id,
                start_reduce_id,
                end_reduce_id,
            } => write!(
                f,
                "shuffle_{shuffle_id}_{map_id}_{start_reduce_id}_{end_reduce_id}"
            ),
            Self::ShuffleData {
                shuffle_id,
                map_id,
                reduce_id,
            } => write!(f, "shuffle_{shuffle_id}_{map_id}_{reduce_id}.data"),
            Self::ShuffleIndex {
                shuffle_id,
                map_id,
                reduce_id,
            } => write!(f, "shuffle_{shuffle_id}_{map_id}_{reduce_id}.index"),
            Self::ShuffleChecksum {
                shuffle_id,
                map_id,
                reduce_id,
                algorithm,
            } => {
                write!(f, "shuffle_{shuffle_id}_{map_id}_{reduce_id}.checksum")?;
                match algorithm {
                    Some(algorithm) => write!(f, ".{algorithm}"),
                    None => Ok(()),
                }
            }
            Self::Rdd {
                rdd_id,
                split_index,
            } => write!(f, "rdd_{rdd_id}_{split_index}"),
            Self::ShuffleChunk {
                shuffle_id,
                shuffle_merge_id,
                reduce_id,
                chunk_id,
            } => write!(
                f,
                "shuffleChunk_{shuffle_id}_{shuffle_merge_id}_{reduce_id}_{chunk_id}"
            ),
            Self::ShufflePush {
                shuffle_id,
                shuffle_merge_id,
                map_index,
                reduce_id,
            } => write!(
                f,
                "shufflePush_{shuffle_id}_{shuffle_merge_id}_{map_index}_{reduce_id}"
            ),
        }
    }
}

/// One chunk of an OpenBlocks stream over shuffle blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShuffleBlockRef {
    /// Parsed as int32 here, as ExternalBlockHandler does for OpenBlocks.
    pub map_id: i32,
    pub reduce_id: i32,
}

/// One chunk of an OpenBlocks stream over push-merged shuffle chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MergedChunkRef {
    pub reduce_id: i32,
    pub chunk_id: i32,
}

/// One chunk of an OpenBlocks stream over RDD blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RddBlockRef {
    pub rdd_id: i32,
    pub split_index: i32,
}

/// What an OpenBlocks request asks for, one entry per stream chunk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenBlocksPlan {
    /// `shuffle_S_M_R` ids, all of shuffle `shuffle_id`.
    ShuffleBlocks {
        shuffle_id: i32,
        blocks: Vec<ShuffleBlockRef>,
    },
    /// `shuffleChunk_S_SM_R_C` ids, all of one shuffle and merge.
    MergedShuffleChunks {
        shuffle_id: i32,
        shuffle_merge_id: i32,
        chunks: Vec<MergedChunkRef>,
    },
    /// `rdd_R_S` ids.
    RddBlocks { blocks: Vec<RddBlockRef> },
}

/// Java's `String.split("_")`: split on every `_`, then drop trailing empty
/// strings; an empty input gives one empty part.
fn java_split_underscore(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return vec![""];
    }
    let mut parts: Vec<&str> = s.split('_').collect();
    while parts.last() == Some(&"") {
        parts.pop();
    }
    parts
}

/// Java's `Integer.parseInt` for ASCII input (optional `+`/`-`, digits, in range).
fn java_parse_int(part: &str, block_id: &str) -> Result<i32, BlockIdError> {
    part.parse().map_err(|_| BlockIdError::InvalidNumber {
        part: part.to_owned(),
        block_id: block_id.to_owned(),
    })
}

impl OpenBlocksPlan {
    /// Applies ExternalBlockHandler's OpenBlocks rules, in Spark's order of
    /// checks, so the first error reported is the one Spark would report.
    pub fn from_block_ids<S: AsRef<str>>(block_ids: &[S]) -> Result<Self, BlockIdError> {
        let first = block_ids.first().ok_or(BlockIdError::NoBlockIds)?.as_ref();
        let first_parts = java_split_underscore(first);
        match first_parts.as_slice() {
            ["shuffle", shuffle_id, _, _] => {
                let shuffle_id = java_parse_int(shuffle_id, first)?;
                let mut blocks = Vec::with_capacity(block_ids.len());
                for id in block_ids {
                    let id = id.as_ref();
                    let ["shuffle", s, m, r] = java_split_underscore(id)[..] else {
                        return Err(BlockIdError::UnexpectedShuffleBlockIdFormat(id.to_owned()));
                    };
                    if java_parse_int(s, id)? != shuffle_id {
                        return Err(BlockIdError::ShuffleIdMismatch {
                            expected: shuffle_id,
                            block_id: id.to_owned(),
                        });
                    }
                    blocks.push(ShuffleBlockRef {
                        map_id: java_parse_int(m, id)?,
                        reduce_id: java_parse_int(r, id)?,
                    });
                }
                Ok(Self::ShuffleBlocks { shuffle_id, blocks })
            }
            ["shuffleChunk", shuffle_id, shuffle_merge_id, _, _] => {
                let shuffle_id = java_parse_int(shuffle_id, first)?;
                let shuffle_merge_id = java_parse_int(shuffle_merge_id, first)?;
                let mut chunks = Vec::with_capacity(block_ids.len());
                for id in block_ids {
                    let id = id.as_ref();
                    let ["shuffleChunk", s, sm, r, c] = java_split_underscore(id)[..] else {
                        return Err(BlockIdError::UnexpectedShuffleChunkIdFormat(id.to_owned()));
                    };
                    if java_parse_int(s, id)? != shuffle_id
                        || java_parse_int(sm, id)? != shuffle_merge_id
                    {
                        return Err(BlockIdError::ShuffleMergeIdMismatch {
                            shuffle_id,
                            shuffle_merge_id,
                            block_id: id.to_owned(),
                        });
                    }
                    chunks.push(MergedChunkRef {
                        reduce_id: java_parse_int(r, id)?,
                        chunk_id: java_parse_int(c, id)?,
                    });
                }
                Ok(Self::MergedShuffleChunks {
                    shuffle_id,
                    shuffle_merge_id,
                    chunks,
                })
            }
            ["rdd", _, _] => {
                let mut blocks = Vec::with_capacity(block_ids.len());
                for id in block_ids {
                    let id = id.as_ref();
                    let ["rdd", rdd, split] = java_split_underscore(id)[..] else {
                        return Err(BlockIdError::UnexpectedRddBlockIdFormat(id.to_owned()));
                    };
                    blocks.push(RddBlockRef {
                        rdd_id: java_parse_int(rdd, id)?,
                        split_index: java_parse_int(split, id)?,
                    });
                }
                Ok(Self::RddBlocks { blocks })
            }
            _ => Err(BlockIdError::UnexpectedBlockIdFormat(first.to_owned())),
        }
    }

    /// Number of stream chunks (one per block id).
    pub fn num_chunks(&self) -> usize {
        match self {
            Self::ShuffleBlocks { blocks, .. } => blocks.len(),
            Self::MergedShuffleChunks { chunks, .. } => chunks.len(),
            Self::RddBlocks { blocks } => blocks.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_family() {
        let names = [
            "shuffle_0_56_3",
            "shuffle_0_3_1_3",
            "shuffle_0_0_0.data",
            "shuffle_0_0_0.index",
            "shuffle_0_0_0.checksum",
            "shuffle_0_0_0.checksum.ADLER32",
            "rdd_7_3",
            "shuffleChunk_1_2_3_4",
            "shufflePush_1_2_3_4",
        ];
        for name in names {
            let id = BlockId::parse(name).unwrap();
            assert_eq!(id.to_string(), name);
        }
        assert_eq!(
            BlockId::parse("shuffle_3_9000000000_1").unwrap(),
            BlockId::Shuffle {
                shuffle_id: 3,
                map_id: 9_000_000_000,
                reduce_id: 1
            }
        );
        assert_eq!(
            BlockId::parse("shuffle_0_3_1_3").unwrap(),
            BlockId::ShuffleBatch {
                shuffle_id: 0,
                map_id: 3,
                start_reduce_id: 1,
                end_reduce_id: 3
            }
        );
    }

    #[test]
    fn rejects_unknown_names() {
        for name in [
            "",
            "shuffle",
            "shuffle_1_2",
            "shuffle_1_2_3_4_5",
            "shuffle_-1_2_3",
            "shuffle_+1_2_3",
            "shuffle_1_2_3.tmp",
            "shuffle_1_2_3.checksum.",
            "rdd_1",
            "rdd_1_2_3",
            "broadcast_1",
            "temp_shuffle_abc",
            "shuffle_a_2_3",
        ] {
            assert_eq!(
                BlockId::parse(name),
                Err(BlockIdError::Unrecognized(name.to_owned())),
                "{name}"
            );
        }
        assert_eq!(
            BlockId::parse("rdd_99999999999_0"),
            Err(BlockIdError::InvalidNumber {
                part: "99999999999".into(),
                block_id: "rdd_99999999999_0".into()
            })
        );
    }

    #[test]
    fn java_split_semantics() {
        assert_eq!(java_split_underscore(""), vec![""]);
        assert_eq!(java_split_underscore("abc"), vec!["abc"]);
        assert_eq!(java_split_underscore("a__b_"), vec!["a", "", "b"]);
        assert_eq!(java_split_underscore("_a"), vec!["", "a"]);
        assert!(java_split_underscore("___").is_empty());
    }

    #[test]
    fn open_blocks_shuffle_ids() {
        let plan =
            OpenBlocksPlan::from_block_ids(&["shuffle_0_0_0", "shuffle_0_2_0", "shuffle_0_3_0"])
                .unwrap();
        assert_eq!(
            plan,
            OpenBlocksPlan::ShuffleBlocks {
                shuffle_id: 0,
                blocks: vec![
                    ShuffleBlockRef {
                        map_id: 0,
                        reduce_id: 0
                    },
                    ShuffleBlockRef {
                        map_id: 2,
                        reduce_id: 0
                    },
                    ShuffleBlockRef {
                        map_id: 3,
                        reduce_id: 0
                    },
                ]
            }
        );
        assert_eq!(plan.num_chunks(), 3);
    }

    #[test]
    fn open_blocks_errors_match_spark_texts() {
        // Probe captured from the real ESS (probe/rpc_failure_open_blocks_batch_id.bin).
        let err =
            OpenBlocksPlan::from_block_ids(&["shuffle_0_0_0", "shuffle_0_3_1_3"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unexpected shuffle block id format: shuffle_0_3_1_3"
        );
        // Probe from captures/probes2.
        let err = OpenBlocksPlan::from_block_ids(&["shuffle_0_0_0", "shuffle_1_0_0"]).unwrap_err();
        assert_eq!(err.to_string(), "Expected shuffleId=0, got:shuffle_1_0_0");
        // A batch id first does not match any family.
        let err = OpenBlocksPlan::from_block_ids(&["shuffle_0_3_1_3"]).unwrap_err();
        assert_eq!(
            err,
            BlockIdError::UnexpectedBlockIdFormat("shuffle_0_3_1_3".into())
        );
        assert_eq!(
            err.to_string(),
            "Unexpected block id format: shuffle_0_3_1_3"
        );
        let err = OpenBlocksPlan::from_block_ids(&["rdd_1_1", "shuffle_0_0_0"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unexpected RDD block id format: shuffle_0_0_0"
        );
        let err = OpenBlocksPlan::from_block_ids(&["shuffleChunk_0_0_0_0", "shuffleChunk_0_1_0_0"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Expected shuffleId = 0 and shuffleMergeId = 0 but got shuffleChunk_0_1_0_0"
        );
        let err = OpenBlocksPlan::from_block_ids(&["shuffleChunk_0_0_0_0", "rdd_1_1"]).unwrap_err();
        assert_eq!(
            err,
            BlockIdError::UnexpectedShuffleChunkIdFormat("rdd_1_1".into())
        );
        let empty: [&str; 0] = [];
        assert_eq!(
            OpenBlocksPlan::from_block_ids(&empty),
            Err(BlockIdError::NoBlockIds)
        );
        // mapId is int32 in OpenBlocks (a task attempt id above 2^31 fails like Java).
        let err = OpenBlocksPlan::from_block_ids(&["shuffle_0_3000000000_0"]).unwrap_err();
        assert_eq!(
            err,
            BlockIdError::InvalidNumber {
                part: "3000000000".into(),
                block_id: "shuffle_0_3000000000_0".into()
            }
        );
        assert!(err
            .to_string()
            .starts_with("For input string: \"3000000000\""));
        // The first id's shuffle id is parsed before anything else.
        let err = OpenBlocksPlan::from_block_ids(&["shuffle_x_0_0"]).unwrap_err();
        assert!(matches!(err, BlockIdError::InvalidNumber { part, .. } if part == "x"));
        // Trailing underscores vanish as in Java's split.
        let plan = OpenBlocksPlan::from_block_ids(&["rdd_1_2__"]).unwrap();
        assert_eq!(plan.num_chunks(), 1);
    }

    #[test]
    fn open_blocks_rdd_and_chunks() {
        assert_eq!(
            OpenBlocksPlan::from_block_ids(&["rdd_7_0", "rdd_7_3"]).unwrap(),
            OpenBlocksPlan::RddBlocks {
                blocks: vec![
                    RddBlockRef {
                        rdd_id: 7,
                        split_index: 0
                    },
                    RddBlockRef {
                        rdd_id: 7,
                        split_index: 3
                    }
                ]
            }
        );
        assert_eq!(
            OpenBlocksPlan::from_block_ids(&["shuffleChunk_0_0_1_2"]).unwrap(),
            OpenBlocksPlan::MergedShuffleChunks {
                shuffle_id: 0,
                shuffle_merge_id: 0,
                chunks: vec![MergedChunkRef {
                    reduce_id: 1,
                    chunk_id: 2
                }]
            }
        );
    }
}

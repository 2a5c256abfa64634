//! The read core for files Spark executors wrote into their own dirs: the hash rule finds the
//! index and data files, the index cache and map cache (shared with kess's own outputs) turn a
//! partition range into a slice of a memory map.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::index::ShuffleIndex;
use super::read::map_file;
use super::{Store, StoredIndex};
use crate::registry::SparkExecutorInfo;
use crate::spark::hash;

/// Why a Spark block could not be read; the text goes back to Spark in a failure frame.
#[derive(Debug, thiserror::Error)]
pub enum SparkFileError {
    #[error("Failed to open file: {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "reduce partitions [{start}, {end}) out of range: {path} has {num_partitions} partitions"
    )]
    OutOfRange {
        path: PathBuf,
        start: i32,
        end: i32,
        num_partitions: u32,
    },
    #[error("{0}")]
    BadName(String),
}

impl Store {
    /// Where an executor keeps the file `name` (Spark's hash rule).
    pub fn spark_file_path(
        &self,
        info: &SparkExecutorInfo,
        name: &str,
    ) -> Result<PathBuf, SparkFileError> {
        hash::resolve_file(&info.local_dirs, info.sub_dirs_per_local_dir, name)
            .map_err(|e| SparkFileError::BadName(e.to_string()))
    }

    /// Reduce partitions `[start, end)` of map output `shuffle_<shuffle>_<map>_0`, as one
    /// contiguous slice (a batch is one segment, as Spark serves it).
    pub fn read_spark_range(
        &self,
        info: &SparkExecutorInfo,
        shuffle: i32,
        map: i64,
        start: i32,
        end: i32,
    ) -> Result<Bytes, SparkFileError> {
        let index_path =
            self.spark_file_path(info, &hash::shuffle_index_file_name(shuffle, map))?;
        let stored = self.index_cache.get_or_load(&index_path, || {
            let raw = std::fs::read(&index_path).map_err(|e| SparkFileError::Open {
                path: index_path.clone(),
                reason: e.to_string(),
            })?;
            let index = ShuffleIndex::parse(&raw).map_err(|reason| SparkFileError::Damaged {
                path: index_path.clone(),
                reason,
            })?;
            Ok(Arc::new(StoredIndex {
                index,
                crc32s: Box::new([]),
            }))
        })?;
        let out_of_range = || SparkFileError::OutOfRange {
            path: index_path.clone(),
            start,
            end,
            num_partitions: stored.index.num_partitions(),
        };
        let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else {
            return Err(out_of_range());
        };
        let (from, to) = stored.index.range(s, e).ok_or_else(out_of_range)?;
        let data_path = self.spark_file_path(info, &hash::shuffle_data_file_name(shuffle, map))?;
        let data = self.map_spark_file(&data_path)?;
        if (data.len() as u64) < to {
            // The index is newer than our mapping (a map task re-ran): map again once.
            self.map_cache.invalidate(&data_path);
            let data = self.map_spark_file(&data_path)?;
            if (data.len() as u64) < to {
                return Err(SparkFileError::Damaged {
                    path: data_path,
                    reason: format!("{} bytes, the index needs {to}", data.len()),
                });
            }
            return Ok(data.slice(from as usize..to as usize));
        }
        Ok(data.slice(from as usize..to as usize))
    }

    /// A whole file (an RDD block); `Ok(None)` when it does not exist.
    pub fn read_spark_file(
        &self,
        info: &SparkExecutorInfo,
        name: &str,
    ) -> Result<Option<Bytes>, SparkFileError> {
        let path = self.spark_file_path(info, name)?;
        if !path.exists() {
            return Ok(None);
        }
        self.map_spark_file(&path).map(Some)
    }

    /// Drops cached state of a file that was deleted or replaced.
    pub fn forget_file(&self, path: &std::path::Path) {
        self.index_cache.invalidate(path);
        self.map_cache.invalidate(path);
    }

    fn map_spark_file(&self, path: &std::path::Path) -> Result<Bytes, SparkFileError> {
        self.map_cache
            .get_or_load(path, || map_file(path))
            .map_err(|e| SparkFileError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }
}

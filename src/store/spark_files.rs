//! The read core for files Spark executors wrote into their own dirs: the hash rule finds the
//! index and data files, the index cache (shared with kess's own outputs) and a cache of open
//! data files turn a partition range into a [`FileSegment`] that the Spark listener splices
//! through a pipe or sends with `sendfile(2)`: the bytes go from the page cache to the socket
//! without entering kess's memory, so kess's resident memory does not grow with the bytes it
//! serves.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::ShuffleIndex;
use super::read::OpenFile;
use super::{Store, StoredIndex};

/// `len` bytes at `offset` of an open file: one block (or batch of blocks) to send.
#[derive(Clone)]
pub struct FileSegment {
    file: Arc<OpenFile>,
    offset: u64,
    len: u64,
}

impl FileSegment {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the segment can be read without waiting for the disk.
    pub fn is_cached(&self) -> bool {
        self.file.is_cached(self.offset, self.len)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.file().as_fd()
    }

    /// Reads the segment into `dst` (used for small blocks, which are cheaper to copy into the
    /// write buffer with their neighbours than to send one syscall each, and for checksums).
    pub fn read_into(&self, dst: &mut Vec<u8>) -> std::io::Result<()> {
        let start = dst.len();
        dst.resize(start + self.len as usize, 0);
        self.file
            .file()
            .read_exact_at(&mut dst[start..], self.offset)
    }
}
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

thread_local! {
    static SCRATCH: std::cell::RefCell<ScratchPaths> = std::cell::RefCell::new(ScratchPaths {
        name: String::new(),
        index: PathBuf::new(),
        data: PathBuf::new(),
    });
}

/// Buffers, one set per thread, for the names and paths of a map output's files: the Spark
/// path resolves an index and a data file for every block it serves, and building them anew
/// cost six or more allocations per block (README "Performance").
struct ScratchPaths {
    name: String,
    index: PathBuf,
    data: PathBuf,
}

/// The path of `shuffle_<shuffle>_<map>_0.<extension>` by Spark's hash rule, built in `path`
/// (its name in `name`).
fn resolve_map_file<'a>(
    name: &mut String,
    path: &'a mut PathBuf,
    info: &SparkExecutorInfo,
    (shuffle, map): (i32, i64),
    extension: &str,
) -> Result<&'a Path, SparkFileError> {
    hash::write_shuffle_file_name(name, shuffle, map, extension);
    hash::resolve_file_into(path, &info.local_dirs, info.sub_dirs_per_local_dir, name)
        .map_err(|e| SparkFileError::BadName(e.to_string()))?;
    Ok(path)
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
    /// contiguous segment (a batch is one segment, as Spark serves it).
    pub fn read_spark_range(
        &self,
        info: &SparkExecutorInfo,
        shuffle: i32,
        map: i64,
        start: i32,
        end: i32,
    ) -> Result<FileSegment, SparkFileError> {
        SCRATCH.with_borrow_mut(|ScratchPaths { name, index, data }| {
            let index_path = resolve_map_file(name, index, info, (shuffle, map), "index")?;
            let stored = self.index_cache.get_or_load(index_path, || {
                let raw = std::fs::read(index_path).map_err(|e| SparkFileError::Open {
                    path: index_path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                let index =
                    ShuffleIndex::parse(&raw).map_err(|reason| SparkFileError::Damaged {
                        path: index_path.to_path_buf(),
                        reason,
                    })?;
                Ok(Arc::new(StoredIndex {
                    index,
                    crc32s: Box::new([]),
                }))
            })?;
            let out_of_range = || SparkFileError::OutOfRange {
                path: index_path.to_path_buf(),
                start,
                end,
                num_partitions: stored.index.num_partitions(),
            };
            let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else {
                return Err(out_of_range());
            };
            let (from, to) = stored.index.range(s, e).ok_or_else(out_of_range)?;
            let data_path = resolve_map_file(name, data, info, (shuffle, map), "data")?;
            let mut data = self.open_spark_file(data_path)?;
            if data.len() < to {
                // The index is newer than the file we opened (a map task re-ran): open it again
                // once.
                self.file_cache.invalidate(data_path);
                data = self.open_spark_file(data_path)?;
                if data.len() < to {
                    return Err(SparkFileError::Damaged {
                        path: data_path.to_path_buf(),
                        reason: format!("{} bytes, the index needs {to}", data.len()),
                    });
                }
            }
            Ok(FileSegment {
                file: data,
                offset: from,
                len: to - from,
            })
        })
    }

    /// A whole file (an RDD block); `Ok(None)` when it does not exist.
    pub fn read_spark_file(
        &self,
        info: &SparkExecutorInfo,
        name: &str,
    ) -> Result<Option<FileSegment>, SparkFileError> {
        let path = self.spark_file_path(info, name)?;
        if !path.exists() {
            return Ok(None);
        }
        let file = self.open_spark_file(&path)?;
        Ok(Some(FileSegment {
            len: file.len(),
            file,
            offset: 0,
        }))
    }

    /// Drops cached state of a file that was deleted or replaced.
    pub fn forget_file(&self, path: &Path) {
        self.index_cache.invalidate(path);
        self.file_cache.invalidate(path);
    }

    fn open_spark_file(&self, path: &Path) -> Result<Arc<OpenFile>, SparkFileError> {
        self.cached_file(path).map_err(|e| SparkFileError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

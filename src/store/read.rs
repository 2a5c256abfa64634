//! The read core: a block `(app, shuffle, map, partitions [start, end))` becomes slices of a
//! memory map of just that range of the data file (no copy), each checked against its stored
//! CRC32 before it is handed out. A slice whose bytes no longer match is never served.
//!
//! Only the requested range is mapped, and the mapping lives exactly as long as the slices
//! handed out (until gRPC has encoded them): kess's resident memory follows the fetches in
//! flight, not the bytes stored. Open files are cached; mappings are not.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::index::{parse_checksums, ShuffleIndex};
use super::layout::MapFiles;
use super::{CommitRecord, Store, StoredIndex};
use crate::error::{MapKey, StoreError};
use crate::ids::{AppId, ExecutorId};

/// An open data file and its length when it was opened (kept in the store's file cache).
pub struct OpenFile {
    file: File,
    len: u64,
}

impl OpenFile {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn len(&self) -> u64 {
        self.len
    }
}

/// A committed output opened for reading. While it lives, the owning executor counts a fetch in
/// flight (the controller reads that).
pub struct OpenBlock {
    store: Arc<Store>,
    app: AppId,
    owner: ExecutorId,
    key: MapKey,
    stored: Arc<StoredIndex>,
    /// The mapped range, starting at file offset `base`.
    data: Bytes,
    base: u64,
    start: u32,
    end: u32,
}

/// One partition's bytes, verified against its CRC32.
#[derive(Debug, Clone)]
pub struct VerifiedPartition {
    pub data: Bytes,
    pub crc32: u32,
}

impl Store {
    /// Opens partitions `[start, end)` of a committed output.
    pub fn open_block(
        self: &Arc<Self>,
        app: &AppId,
        shuffle: u32,
        map: u64,
        start: u32,
        end: u32,
    ) -> Result<OpenBlock, StoreError> {
        let key = Store::map_key(app, shuffle, map);
        let record = {
            let state = self.lock();
            let entry = state.apps.get(app).ok_or_else(|| StoreError::UnknownApp {
                app: app.to_string(),
            })?;
            entry
                .outputs
                .get(&(shuffle, map))
                .cloned()
                .ok_or_else(|| StoreError::UnknownMapOutput { key: key.clone() })?
        };
        if start >= end || end > record.num_partitions {
            return Err(StoreError::PartitionOutOfRange {
                key,
                start,
                end,
                num_partitions: record.num_partitions,
            });
        }
        let stored = self.load_index(&key, &record)?;
        let dir = self.layout.map_dir(app, shuffle, map);
        let data_path = dir.join(MapFiles::new(shuffle, map).data);
        let (base, end_offset) =
            stored
                .index
                .range(start, end)
                .ok_or_else(|| StoreError::PartitionOutOfRange {
                    key: key.clone(),
                    start,
                    end,
                    num_partitions: stored.index.num_partitions(),
                })?;
        let data = self.map_range(&key, &data_path, stored.index.data_len(), base..end_offset)?;
        self.track(app, &record.executor, 0, 1);
        Ok(OpenBlock {
            store: Arc::clone(self),
            app: app.clone(),
            owner: record.executor.clone(),
            key,
            stored,
            data,
            base,
            start,
            end,
        })
    }

    /// The output's offsets and CRC32s, from the index cache or from disk.
    pub(super) fn load_index(
        &self,
        key: &MapKey,
        record: &CommitRecord,
    ) -> Result<Arc<StoredIndex>, StoreError> {
        let dir = self.layout.map_dir(&record.app, record.shuffle, record.map);
        let files = MapFiles::new(record.shuffle, record.map);
        let index_path = dir.join(&files.index);
        self.index_cache.get_or_load(&index_path, || {
            let damaged = |path: &Path, reason: String| StoreError::DamagedFiles {
                key: key.clone(),
                path: path.to_path_buf(),
                reason,
            };
            let raw = std::fs::read(&index_path)
                .map_err(|e| damaged(&index_path, format!("cannot read index: {e}")))?;
            let index = ShuffleIndex::parse(&raw).map_err(|r| damaged(&index_path, r))?;
            let checksum_path = dir.join(&files.checksum);
            let raw = std::fs::read(&checksum_path)
                .map_err(|e| damaged(&checksum_path, format!("cannot read checksums: {e}")))?;
            let sums = parse_checksums(&raw).map_err(|r| damaged(&checksum_path, r))?;
            if index.num_partitions() != record.num_partitions
                || sums.len() != record.num_partitions as usize
            {
                return Err(damaged(
                    &index_path,
                    format!(
                        "index has {} partitions and checksums {}, the commit says {}",
                        index.num_partitions(),
                        sums.len(),
                        record.num_partitions
                    ),
                ));
            }
            Ok(Arc::new(StoredIndex {
                index,
                crc32s: sums.into_iter().map(|s| s as u32).collect(),
            }))
        })
    }

    /// An open file from the file cache (shared by both protocols), opened on a miss.
    pub(super) fn cached_file(&self, path: &Path) -> std::io::Result<Arc<OpenFile>> {
        self.file_cache.get_or_load(path, || {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            Ok(Arc::new(OpenFile { file, len }))
        })
    }

    /// Maps bytes `range` of a data file read-only, checking the file is as long as its index
    /// says.
    pub(crate) fn map_range(
        &self,
        key: &MapKey,
        path: &Path,
        expected_len: u64,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let damaged = |reason: String| StoreError::DamagedFiles {
            key: key.clone(),
            path: path.to_path_buf(),
            reason,
        };
        let file = self
            .cached_file(path)
            .map_err(|e| damaged(format!("cannot open data file: {e}")))?;
        if file.len() != expected_len {
            self.file_cache.invalidate(path);
            return Err(damaged(format!(
                "data file has {} bytes, its index says {expected_len}",
                file.len()
            )));
        }
        map_range(file.file(), range).map_err(|e| damaged(format!("cannot map data file: {e}")))
    }
}

/// Maps bytes `range` of `file`; the returned `Bytes` keeps the mapping alive while any slice of
/// it lives.
pub fn map_range(file: &File, range: Range<u64>) -> std::io::Result<Bytes> {
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    // Mappings start on a page boundary; map from the page holding `range.start`.
    let page = page_size();
    let aligned = range.start - range.start % page;
    let skip = (range.start - aligned) as usize;
    // SAFETY: committed files are never written again; kess only renames and deletes them. A
    // mapping of a deleted file stays valid until unmapped.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(aligned)
            .len(skip + (range.end - range.start) as usize)
            .map(file)?
    };
    Ok(Bytes::from_owner(map).slice(skip..))
}

/// Maps a whole file.
pub fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    map_range(&file, 0..len)
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(4096)
    })
}

impl OpenBlock {
    pub fn key(&self) -> &MapKey {
        &self.key
    }

    pub fn partitions(&self) -> Range<u32> {
        self.start..self.end
    }

    /// The partition's bytes, or `Corrupt` if they no longer match the stored CRC32.
    pub fn partition(&self, partition: u32) -> Result<VerifiedPartition, StoreError> {
        let (from, to) = self
            .stored
            .index
            .range(partition, partition + 1)
            .filter(|_| self.partitions().contains(&partition))
            .ok_or_else(|| StoreError::PartitionOutOfRange {
                key: self.key.clone(),
                start: partition,
                end: partition + 1,
                num_partitions: self.stored.index.num_partitions(),
            })?;
        let data = self
            .data
            .slice((from - self.base) as usize..(to - self.base) as usize);
        let expected = self.stored.crc32s[partition as usize];
        let actual = crc32fast::hash(&data);
        if actual != expected {
            tracing::error!(key = %self.key, partition, expected = format_args!("{expected:08x}"), actual = format_args!("{actual:08x}"), "stored block no longer matches its CRC32; refusing to serve it");
            return Err(StoreError::Corrupt {
                key: self.key.clone(),
                partition,
                expected,
                actual,
            });
        }
        Ok(VerifiedPartition {
            data,
            crc32: expected,
        })
    }
}

impl Drop for OpenBlock {
    fn drop(&mut self) {
        self.store.track(&self.app, &self.owner, 0, -1);
    }
}

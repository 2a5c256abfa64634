//! The read core: a block `(app, shuffle, map, partitions [start, end))` becomes slices of a
//! memory-mapped data file (no copy), each checked against its stored CRC32 before it is
//! handed out. A slice whose bytes no longer match is never served.

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

/// A committed output opened for reading. While it lives, the owning executor counts a fetch in
/// flight (the controller reads that).
pub struct OpenBlock {
    store: Arc<Store>,
    app: AppId,
    owner: ExecutorId,
    key: MapKey,
    stored: Arc<StoredIndex>,
    data: Bytes,
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
        let data = self.map_data(&key, &data_path, stored.index.data_len())?;
        self.track(app, &record.executor, 0, 1);
        Ok(OpenBlock {
            store: Arc::clone(self),
            app: app.clone(),
            owner: record.executor.clone(),
            key,
            stored,
            data,
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

    /// Maps a data file read-only (cached), checking it is as long as its index says.
    pub(crate) fn map_data(
        &self,
        key: &MapKey,
        path: &Path,
        expected_len: u64,
    ) -> Result<Bytes, StoreError> {
        let data = self
            .map_cache
            .get_or_load(path, || map_file(path))
            .map_err(|e| StoreError::DamagedFiles {
                key: key.clone(),
                path: path.to_path_buf(),
                reason: format!("cannot map data file: {e}"),
            })?;
        if data.len() as u64 != expected_len {
            self.map_cache.invalidate(path);
            return Err(StoreError::DamagedFiles {
                key: key.clone(),
                path: path.to_path_buf(),
                reason: format!(
                    "data file has {} bytes, its index says {expected_len}",
                    data.len()
                ),
            });
        }
        Ok(data)
    }
}

/// Maps a whole file; the returned `Bytes` keeps the mapping alive while any slice of it lives.
pub fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: committed files are never written again; kess only renames and deletes them. A
    // mapping of a deleted file stays valid until unmapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
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
        let data = self.data.slice(from as usize..to as usize);
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

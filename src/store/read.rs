//! The read core: a block `(app, shuffle, map, partitions [start, end))` becomes chunks read
//! from the open data file, each partition checked against its stored CRC32: the chunk that
//! completes a partition is accepted only if the whole partition matched, so a partition whose
//! bytes no longer match is never served complete.
//!
//! Chunks are read with `pread(2)` straight into the buffer they leave from (for gRPC, the
//! encode buffer; see `grpc::codec`), not mapped: gRPC copies every message into that buffer
//! anyway, so a mapping saved no copy, while mapping and unmapping per fetch cost page faults and
//! TLB shootdowns (measured in README "Performance"). Resident memory follows the chunks in
//! flight, not the bytes stored. Open files are cached.

use std::fs::File;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{parse_checksums, ShuffleIndex};
use super::layout::MapFiles;
use super::{CommitRecord, Store, StoredIndex};
use crate::error::{MapKey, StoreError};
use crate::ids::{AppId, ExecutorId};

/// An open data file and its length when it was opened (kept in the store's file cache).
pub struct OpenFile {
    file: File,
    len: u64,
    residency: super::page_cache::Residency,
}

impl OpenFile {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether `offset..offset + len` can be read without waiting for the disk.
    pub fn is_cached(&self, offset: u64, len: u64) -> bool {
        self.residency.is_cached(&self.file, self.len, offset, len)
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
    data: Arc<OpenFile>,
    data_path: PathBuf,
    start: u32,
    end: u32,
}

/// Hands out one partition as chunks, in order.
#[derive(Debug)]
pub struct PartitionCursor {
    partition: u32,
    /// File offset of the partition's first byte.
    base: u64,
    len: u64,
    next: u64,
    finished: bool,
    expected: u32,
}

impl PartitionCursor {
    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored CRC32 of the whole partition.
    pub fn crc32(&self) -> u32 {
        self.expected
    }

    /// True once the chunk completing the partition was handed out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next chunk of at most `max` bytes; an empty partition has one, empty, chunk.
    pub fn next_chunk(&mut self, max: usize) -> Option<ChunkRange> {
        if self.finished {
            return None;
        }
        let len = (self.len - self.next).min(max.max(1) as u64);
        let chunk = ChunkRange {
            partition: self.partition,
            offset: self.next,
            len: len as usize,
            file_offset: self.base + self.next,
            completes: self.next + len == self.len,
            expected: self.expected,
        };
        self.next += len;
        self.finished = chunk.completes;
        Some(chunk)
    }
}

/// One chunk of a partition, not read yet.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRange {
    pub partition: u32,
    /// Where the chunk starts within the partition.
    pub offset: u64,
    pub len: usize,
    file_offset: u64,
    /// The partition's last chunk: reading it checks the partition's CRC32.
    pub completes: bool,
    expected: u32,
}

/// The running CRC32 of the partition being read, chunk by chunk in order.
#[derive(Default)]
pub struct PartitionCheck(crc32fast::Hasher);

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
        let (owner, num_partitions) = {
            let state = self.lock();
            let entry = state.apps.get(app).ok_or_else(|| StoreError::UnknownApp {
                app: app.to_string(),
            })?;
            let record = entry
                .outputs
                .get(&(shuffle, map))
                .ok_or_else(|| StoreError::UnknownMapOutput { key: key.clone() })?;
            (record.executor.clone(), record.num_partitions)
        };
        if start >= end || end > num_partitions {
            return Err(StoreError::PartitionOutOfRange {
                key,
                start,
                end,
                num_partitions,
            });
        }
        let mut path = self.layout.map_dir(app, shuffle, map);
        let files = MapFiles::new(shuffle, map);
        let stored = self.load_index_in(&key, num_partitions, &mut path, &files)?;
        if stored.index.range(start, end).is_none() {
            return Err(StoreError::PartitionOutOfRange {
                key,
                start,
                end,
                num_partitions: stored.index.num_partitions(),
            });
        }
        path.push(&files.data);
        let data_path = path;
        let data = self.open_data_file(&key, &data_path, stored.index.data_len())?;
        self.track(app, &owner, 0, 1);
        Ok(OpenBlock {
            store: Arc::clone(self),
            app: app.clone(),
            owner,
            key,
            stored,
            data,
            data_path,
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
        let mut dir = self.layout.map_dir(&record.app, record.shuffle, record.map);
        let files = MapFiles::new(record.shuffle, record.map);
        self.load_index_in(key, record.num_partitions, &mut dir, &files)
    }

    /// [`Store::load_index`] for the output in `dir` (returned as it was).
    fn load_index_in(
        &self,
        key: &MapKey,
        num_partitions: u32,
        dir: &mut PathBuf,
        files: &MapFiles,
    ) -> Result<Arc<StoredIndex>, StoreError> {
        dir.push(&files.index);
        let loaded = self.index_cache.get_or_load(dir, || {
            let index_path = dir.as_path();
            let damaged = |path: &Path, reason: String| StoreError::DamagedFiles {
                key: key.clone(),
                path: path.to_path_buf(),
                reason,
            };
            let raw = std::fs::read(index_path)
                .map_err(|e| damaged(index_path, format!("cannot read index: {e}")))?;
            let index = ShuffleIndex::parse(&raw).map_err(|r| damaged(index_path, r))?;
            let checksum_path = index_path.with_file_name(&files.checksum);
            let raw = std::fs::read(&checksum_path)
                .map_err(|e| damaged(&checksum_path, format!("cannot read checksums: {e}")))?;
            let sums = parse_checksums(&raw).map_err(|r| damaged(&checksum_path, r))?;
            if index.num_partitions() != num_partitions || sums.len() != num_partitions as usize {
                return Err(damaged(
                    index_path,
                    format!(
                        "index has {} partitions and checksums {}, the commit says \
                         {num_partitions}",
                        index.num_partitions(),
                        sums.len(),
                    ),
                ));
            }
            Ok(Arc::new(StoredIndex {
                index,
                crc32s: sums.into_iter().map(|s| s as u32).collect(),
            }))
        });
        dir.pop();
        loaded
    }

    /// An open file from the file cache (shared by both protocols), opened on a miss.
    pub(super) fn cached_file(&self, path: &Path) -> std::io::Result<Arc<OpenFile>> {
        self.file_cache.get_or_load(path, || {
            let file = open_noatime(path)?;
            let len = file.metadata()?.len();
            Ok(Arc::new(OpenFile {
                file,
                len,
                residency: Default::default(),
            }))
        })
    }

    /// The output's data file from the file cache, checking it is as long as its index says.
    fn open_data_file(
        &self,
        key: &MapKey,
        path: &Path,
        expected_len: u64,
    ) -> Result<Arc<OpenFile>, StoreError> {
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
        Ok(file)
    }
}

/// Opens a file for reading without updating its access time on every read (a measurable part
/// of each sendfile); needs to own the file or CAP_FOWNER, so falls back to a plain open.
fn open_noatime(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => File::open(path),
        opened => opened,
    }
}

/// Fills `dst` with the bytes at `offset` of `file`.
fn pread_into(file: &File, offset: u64, dst: &mut [MaybeUninit<u8>]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < dst.len() {
        let at = nix::libc::off_t::try_from(offset + filled as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let rest = &mut dst[filled..];
        // SAFETY: `rest` is writable memory of `rest.len()` bytes; pread writes at most that.
        let n =
            unsafe { nix::libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            n if n > 0 => filled += n as usize,
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

impl OpenBlock {
    pub fn key(&self) -> &MapKey {
        &self.key
    }

    pub fn partitions(&self) -> Range<u32> {
        self.start..self.end
    }

    /// Starts reading `partition`.
    pub fn cursor(&self, partition: u32) -> Result<PartitionCursor, StoreError> {
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
        Ok(PartitionCursor {
            partition,
            base: from,
            len: to - from,
            next: 0,
            finished: false,
            expected: self.stored.crc32s[partition as usize],
        })
    }

    /// Reads `chunk` into the first `chunk.len` bytes of `dst` and folds them into `check`
    /// (restarted at a partition's first chunk). When the chunk completes its partition and the
    /// partition no longer matches its stored CRC32, returns `Corrupt`: the chunk must not be
    /// sent, so the partition is never served complete.
    pub fn read_into(
        &self,
        chunk: &ChunkRange,
        dst: &mut [MaybeUninit<u8>],
        check: &mut PartitionCheck,
    ) -> Result<(), StoreError> {
        let dst = &mut dst[..chunk.len];
        pread_into(self.data.file(), chunk.file_offset, dst).map_err(|e| {
            StoreError::DamagedFiles {
                key: self.key.clone(),
                path: self.data_path.clone(),
                reason: format!(
                    "cannot read partition {} at offset {}: {e}",
                    chunk.partition, chunk.offset
                ),
            }
        })?;
        // SAFETY: pread_into initialised every byte of `dst`.
        let bytes = unsafe { &*(dst as *const [MaybeUninit<u8>] as *const [u8]) };
        if chunk.offset == 0 {
            check.0 = crc32fast::Hasher::new();
        }
        check.0.update(bytes);
        if chunk.completes {
            let actual = std::mem::take(&mut check.0).finalize();
            if actual != chunk.expected {
                let (key, partition, expected) = (&self.key, chunk.partition, chunk.expected);
                tracing::error!(key = %key, partition, expected = format_args!("{expected:08x}"), actual = format_args!("{actual:08x}"), "stored block no longer matches its CRC32; refusing to serve it");
                return Err(StoreError::Corrupt {
                    key: key.clone(),
                    partition,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }
}

impl Drop for OpenBlock {
    fn drop(&mut self) {
        self.store.track(&self.app, &self.owner, 0, -1);
    }
}

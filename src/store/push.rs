//! Writing one map output: partitions stream into a temp directory, and `commit` publishes the
//! whole directory with one rename. Dropping an uncommitted `PendingMapOutput` (a cut stream, an
//! error, a shutdown) deletes its temp directory, so nothing partial is ever visible.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::index::{encode_checksums, ShuffleIndex};
use super::layout::{MapFiles, COMMIT_FILE};
use super::{now_ms, CommitRecord, Store};
use crate::error::{is_disk_full, MapKey, StoreError};
use crate::ids::{AppId, ExecutorId};
use crate::registry::sync_dir;

/// Most partitions one map output may have (the index alone is 8 bytes per partition).
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// How often, in bytes written, a push re-checks the free-space reserve.
const SPACE_CHECK_INTERVAL: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct PushRequest {
    pub app: AppId,
    pub executor: ExecutorId,
    pub shuffle: u32,
    pub map: u64,
    pub attempt: u32,
    pub num_partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// False when another attempt had already committed this map output.
    pub committed: bool,
    pub committed_attempt: u32,
    pub bytes: u64,
    pub partition_lengths: Vec<u64>,
    pub partition_crc32s: Vec<u32>,
}

pub struct PendingMapOutput {
    store: Arc<Store>,
    req: PushRequest,
    key: MapKey,
    generation: u64,
    /// `None` when the output was already committed at the start: the bytes are read and
    /// dropped, and the commit reports the winner.
    sink: Option<Sink>,
    lengths: Vec<u64>,
    crcs: Vec<u32>,
    current: u32,
    current_len: u64,
    hasher: crc32fast::Hasher,
    since_space_check: u64,
    finished: bool,
}

struct Sink {
    dir: PathBuf,
    data: BufWriter<File>,
}

impl Store {
    /// Starts a push. Checks the request and the free-space reserve before creating anything.
    pub fn begin_push(self: &Arc<Self>, req: PushRequest) -> Result<PendingMapOutput, StoreError> {
        let key = Store::map_key(&req.app, req.shuffle, req.map);
        if req.num_partitions == 0 || req.num_partitions > MAX_PARTITIONS {
            return Err(StoreError::InvalidPush {
                key,
                reason: format!(
                    "num_partitions {} must be between 1 and {MAX_PARTITIONS}",
                    req.num_partitions
                ),
            });
        }
        self.check_free_space(&key)?;
        let (generation, already) = {
            let mut state = self.lock();
            let entry = state.app_mut(&req.app);
            (
                entry.generation,
                entry.outputs.contains_key(&(req.shuffle, req.map)),
            )
        };
        let sink = if already {
            None
        } else {
            let dir = self
                .layout
                .tmp_dir()
                .join(format!("push-{}", uuid::Uuid::new_v4()));
            let files = MapFiles::new(req.shuffle, req.map);
            let created = fs::create_dir(&dir)
                .and_then(|_| File::create(dir.join(&files.data)))
                .map_err(|e| write_error(&key, "creating temp files", e));
            match created {
                Ok(file) => Some(Sink {
                    dir,
                    data: BufWriter::with_capacity(1 << 20, file),
                }),
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        };
        self.track(&req.app, &req.executor, 1, 0);
        let n = req.num_partitions as usize;
        Ok(PendingMapOutput {
            store: Arc::clone(self),
            key,
            generation,
            sink,
            lengths: Vec::with_capacity(n),
            crcs: Vec::with_capacity(n),
            current: 0,
            current_len: 0,
            hasher: crc32fast::Hasher::new(),
            since_space_check: 0,
            finished: false,
            req,
        })
    }

    fn check_free_space(&self, key: &MapKey) -> Result<(), StoreError> {
        if self.config.min_free_bytes == 0 {
            return Ok(());
        }
        let available = self
            .disk_free()
            .map_err(|e| StoreError::io("checking free disk space", e))?;
        crate::metrics::disk_free(available);
        if available < self.config.min_free_bytes {
            return Err(StoreError::BelowFreeSpaceReserve {
                key: key.clone(),
                available,
                reserve: self.config.min_free_bytes,
            });
        }
        Ok(())
    }
}

impl PendingMapOutput {
    pub fn key(&self) -> &MapKey {
        &self.key
    }

    /// Appends bytes to `partition`. Partitions come in order; skipped ones are empty.
    pub fn write(&mut self, partition: u32, data: &[u8]) -> Result<(), StoreError> {
        if partition >= self.req.num_partitions {
            return Err(self.invalid(format!(
                "partition {partition} out of range: the output has {} partitions",
                self.req.num_partitions
            )));
        }
        if partition < self.current {
            return Err(self.invalid(format!(
                "partitions must arrive in order: got {partition} after {}",
                self.current
            )));
        }
        while self.current < partition {
            self.close_partition();
        }
        self.hasher.update(data);
        self.current_len += data.len() as u64;
        if let Some(sink) = self.sink.as_mut() {
            sink.data
                .write_all(data)
                .map_err(|e| write_error(&self.key, "writing data", e))?;
            self.since_space_check += data.len() as u64;
            if self.since_space_check >= SPACE_CHECK_INTERVAL {
                self.since_space_check = 0;
                self.store.check_free_space(&self.key)?;
            }
        }
        Ok(())
    }

    /// Finishes the output and publishes it atomically. `declared_*` (optional, empty = not
    /// given) are the client's own lengths and CRC32s, checked against what arrived.
    pub fn commit(
        mut self,
        declared_lengths: &[u64],
        declared_crc32s: &[u32],
    ) -> Result<CommitOutcome, StoreError> {
        while self.current < self.req.num_partitions {
            self.close_partition();
        }
        self.check_declared(declared_lengths, declared_crc32s)?;
        let bytes: u64 = self.lengths.iter().sum();
        let Some(sink) = self.sink.take() else {
            return self.report_winner(bytes);
        };
        let files = MapFiles::new(self.req.shuffle, self.req.map);
        let index = ShuffleIndex::from_lengths(&self.lengths);
        let index_bytes = index.encode();
        let checksum_bytes = encode_checksums(self.crcs.iter().map(|c| u64::from(*c)));
        let mut record = CommitRecord {
            app: self.req.app.clone(),
            executor: self.req.executor.clone(),
            shuffle: self.req.shuffle,
            map: self.req.map,
            attempt: self.req.attempt,
            num_partitions: self.req.num_partitions,
            data_bytes: bytes,
            stored_bytes: 0,
            committed_unix_ms: now_ms(),
        };
        let fsync = self.store.config.fsync;
        let dir = sink.dir.clone();
        // Keep the temp dir owned by `self` until the rename, so an error cleans it up.
        self.sink = Some(sink);
        (|| -> io::Result<()> {
            let sink = self.sink.as_mut().expect("set above");
            sink.data.flush()?;
            if fsync {
                sink.data.get_ref().sync_all()?;
            }
            write_file(&dir.join(&files.index), &index_bytes, fsync)?;
            write_file(&dir.join(&files.checksum), &checksum_bytes, fsync)?;
            record.stored_bytes = bytes + index_bytes.len() as u64 + checksum_bytes.len() as u64;
            let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
            write_file(&dir.join(COMMIT_FILE), &json, fsync)?;
            if fsync {
                sync_dir(&dir)?;
            }
            Ok(())
        })()
        .map_err(|e| write_error(&self.key, "finishing files", e))?;
        self.publish(record, bytes)
    }

    /// The rename that makes the output visible, under the store lock.
    fn publish(mut self, record: CommitRecord, bytes: u64) -> Result<CommitOutcome, StoreError> {
        let store = Arc::clone(&self.store);
        let final_dir = store
            .layout
            .map_dir(&self.req.app, self.req.shuffle, self.req.map);
        let tmp_dir = self
            .sink
            .as_ref()
            .map(|s| s.dir.clone())
            .unwrap_or_default();
        let mut state = store.lock();
        let alive = state
            .apps
            .get(&self.req.app)
            .is_some_and(|a| a.generation == self.generation);
        if !alive {
            return Err(self.invalid("the application was removed while the push ran".into()));
        }
        let renamed = final_dir
            .parent()
            .map(fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|_| fs::rename(&tmp_dir, &final_dir));
        match renamed {
            Ok(()) => {
                self.sink = None;
                self.finished = true;
                let entry = state.app_mut(&self.req.app);
                entry
                    .outputs
                    .insert((self.req.shuffle, self.req.map), Arc::new(record));
                drop(state);
                if store.config.fsync {
                    if let Some(parent) = final_dir.parent() {
                        sync_dir(parent)
                            .map_err(|e| write_error(&self.key, "syncing directory", e))?;
                    }
                }
                crate::metrics::push_outcome("committed");
                store.publish_metrics();
                tracing::info!(app = %self.req.app, executor = %self.req.executor, shuffle = self.req.shuffle, map = self.req.map, attempt = self.req.attempt, bytes, "map output committed");
                Ok(CommitOutcome {
                    committed: true,
                    committed_attempt: self.req.attempt,
                    bytes,
                    partition_lengths: std::mem::take(&mut self.lengths),
                    partition_crc32s: std::mem::take(&mut self.crcs),
                })
            }
            // Another attempt committed first (rename onto a non-empty directory fails).
            Err(e) if final_dir.join(COMMIT_FILE).exists() => {
                drop(state);
                tracing::debug!(error = %e, key = %self.key, "lost the commit race");
                self.report_winner(bytes)
            }
            Err(e) => Err(write_error(&self.key, "publishing output", e)),
        }
    }

    /// Answer for a push whose map output another attempt committed first. The pushed bytes
    /// are dropped (with the temp dir) and the committed output stays as it was.
    fn report_winner(mut self, _pushed_bytes: u64) -> Result<CommitOutcome, StoreError> {
        let winner = {
            let state = self.store.lock();
            state
                .apps
                .get(&self.req.app)
                .and_then(|a| a.outputs.get(&(self.req.shuffle, self.req.map)))
                .cloned()
        };
        let Some(winner) = winner else {
            return Err(self.invalid("the committed output was removed while the push ran".into()));
        };
        let stored = self.store.load_index(&self.key, &winner)?;
        self.finished = true;
        crate::metrics::push_outcome("duplicate");
        tracing::info!(key = %self.key, attempt = self.req.attempt, committed_attempt = winner.attempt, "map output already committed; this attempt's bytes were discarded");
        let n = stored.index.num_partitions();
        Ok(CommitOutcome {
            committed: false,
            committed_attempt: winner.attempt,
            bytes: winner.data_bytes,
            partition_lengths: (0..n)
                .map(|p| stored.index.partition_len(p).unwrap_or(0))
                .collect(),
            partition_crc32s: stored.crc32s.to_vec(),
        })
    }

    fn check_declared(&self, lengths: &[u64], crcs: &[u32]) -> Result<(), StoreError> {
        let n = self.req.num_partitions as usize;
        if !lengths.is_empty() {
            if lengths.len() != n {
                return Err(self.invalid(format!(
                    "commit declares {} partition lengths for {n} partitions",
                    lengths.len()
                )));
            }
            if let Some(p) = (0..n).find(|&p| lengths[p] != self.lengths[p]) {
                return Err(self.invalid(format!(
                    "partition {p}: received {} bytes, the commit declares {}",
                    self.lengths[p], lengths[p]
                )));
            }
        }
        if !crcs.is_empty() {
            if crcs.len() != n {
                return Err(self.invalid(format!(
                    "commit declares {} partition CRC32s for {n} partitions",
                    crcs.len()
                )));
            }
            if let Some(p) = (0..n).find(|&p| crcs[p] != self.crcs[p]) {
                return Err(StoreError::PushChecksumMismatch {
                    key: self.key.clone(),
                    partition: p as u32,
                    declared: crcs[p],
                    actual: self.crcs[p],
                });
            }
        }
        Ok(())
    }

    fn close_partition(&mut self) {
        let hasher = std::mem::take(&mut self.hasher);
        self.crcs.push(hasher.finalize());
        self.lengths.push(std::mem::take(&mut self.current_len));
        self.current += 1;
    }

    fn invalid(&self, reason: String) -> StoreError {
        StoreError::InvalidPush {
            key: self.key.clone(),
            reason,
        }
    }
}

impl Drop for PendingMapOutput {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            drop(sink.data);
            if let Err(e) = fs::remove_dir_all(&sink.dir) {
                tracing::warn!(path = %sink.dir.display(), error = %e, "could not delete an abandoned push; it is deleted at next start");
            }
        }
        if !self.finished {
            crate::metrics::push_outcome("aborted");
            tracing::info!(key = %self.key, attempt = self.req.attempt, "push abandoned; nothing was kept");
        }
        self.store.track(&self.req.app, &self.req.executor, -1, 0);
    }
}

fn write_file(path: &std::path::Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    Ok(())
}

fn write_error(key: &MapKey, what: &str, e: io::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::DiskFull {
            key: key.clone(),
            source: e,
        }
    } else {
        StoreError::io(format!("{key}: {what}"), e)
    }
}

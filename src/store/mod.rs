//! The shuffle store: committed map outputs on disk, the in-memory view of who wrote what, and
//! the read core that turns `(app, shuffle, map, partitions)` into verified bytes.
//!
//! Concurrency: one mutex guards the in-memory view. File I/O happens outside it, except the
//! two renames that publish or retire data (commit, application removal), which are metadata
//! operations and keep those two steps atomic with respect to each other.

pub mod cache;
pub mod index;
pub mod layout;
pub mod page_cache;
mod push;
mod read;
mod recover;
mod spark_files;
pub use spark_files::FileSegment;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{MapKey, StoreError};
use crate::ids::{AppId, ExecutorId};
use crate::registry::{Registration, RegistrationJournal, SparkExecutorInfo};
use cache::BoundedCache;
use index::ShuffleIndex;
use layout::Layout;

pub use push::{CommitOutcome, PendingMapOutput, PushRequest, MAX_PARTITIONS};
pub use read::{ChunkRange, OpenBlock, PartitionCheck, PartitionCursor};
pub use spark_files::SparkFileError;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub root: PathBuf,
    /// fsync files and directories on commit, so outputs survive a node crash, not only a
    /// process crash.
    pub fsync: bool,
    /// Pushes are refused while the data disk has less free space than this.
    pub min_free_bytes: u64,
    pub index_cache_bytes: usize,
    pub max_open_files: usize,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fsync: false,
            min_free_bytes: 0,
            index_cache_bytes: 64 << 20,
            max_open_files: 4096,
        }
    }
}

/// What `commit.json` records about a committed map output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub app: AppId,
    pub executor: ExecutorId,
    pub shuffle: u32,
    pub map: u64,
    pub attempt: u32,
    pub num_partitions: u32,
    pub data_bytes: u64,
    /// Data, index and checksum files together: what removal frees.
    pub stored_bytes: u64,
    pub committed_unix_ms: i64,
}

/// Offsets and per-partition CRC32s of one committed output, as cached.
#[derive(Debug)]
pub struct StoredIndex {
    pub index: ShuffleIndex,
    pub crc32s: Box<[u32]>,
}

#[derive(Default)]
struct State {
    apps: BTreeMap<AppId, AppEntry>,
    next_generation: u64,
}

struct AppEntry {
    /// Changes when the application is removed and comes back, so a push that began before a
    /// removal cannot commit into the new incarnation.
    generation: u64,
    executors: BTreeMap<ExecutorId, ExecutorEntry>,
    outputs: HashMap<(u32, u64), Arc<CommitRecord>>,
    last_activity_ms: i64,
}

#[derive(Default)]
struct ExecutorEntry {
    registered: bool,
    /// Where a Spark-registered executor keeps its files.
    spark: Option<Arc<SparkExecutorInfo>>,
    writes_in_flight: u32,
    fetches_in_flight: u32,
    last_activity_ms: i64,
}

impl State {
    fn app_mut(&mut self, app: &AppId) -> &mut AppEntry {
        if !self.apps.contains_key(app) {
            self.next_generation += 1;
            let entry = AppEntry {
                generation: self.next_generation,
                executors: BTreeMap::new(),
                outputs: HashMap::new(),
                last_activity_ms: now_ms(),
            };
            self.apps.insert(app.clone(), entry);
        }
        self.apps.get_mut(app).expect("inserted above")
    }

    /// Drops an executor entry that became idle (not registered, nothing in flight), and its
    /// application's entry if that now holds nothing. Entries become idle only through this
    /// executor's own counters or registration, so looking at it alone keeps every idle entry
    /// gone; walking all of the application's executors here, once per block fetched, was 10%
    /// of the daemon's CPU on many small gRPC blocks (under the store's lock).
    fn forget_if_idle(&mut self, app: &AppId, exec: &ExecutorId) {
        let Some(entry) = self.apps.get_mut(app) else {
            return;
        };
        if entry
            .executors
            .get(exec)
            .is_some_and(|e| !e.registered && e.writes_in_flight == 0 && e.fetches_in_flight == 0)
        {
            entry.executors.remove(exec);
        }
        if entry.executors.is_empty() && entry.outputs.is_empty() {
            self.apps.remove(app);
        }
    }
}

/// What one executor holds, for the shuffle-state report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorSnapshot {
    pub executor_id: String,
    pub registered: bool,
    pub committed_outputs: u64,
    pub bytes_stored: u64,
    pub writes_in_flight: u32,
    pub fetches_in_flight: u32,
    pub last_activity_unix_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSnapshot {
    pub app_id: String,
    pub executors: Vec<ExecutorSnapshot>,
    pub committed_outputs: u64,
    pub bytes_stored: u64,
    pub last_activity_unix_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalReport {
    pub bytes_freed: u64,
    pub outputs_removed: u64,
    pub executors_removed: u32,
}

pub struct Store {
    layout: Layout,
    config: StoreConfig,
    journal: RegistrationJournal,
    state: Mutex<State>,
    index_cache: BoundedCache<Arc<StoredIndex>>,
    /// Open data files (kess's own outputs, read per chunk; Spark's, sent with sendfile).
    file_cache: BoundedCache<Arc<read::OpenFile>>,
}

impl Store {
    /// Opens the store under `config.root`, rebuilding the in-memory view from disk: committed
    /// outputs and registrations come back, partial writes are discarded.
    pub fn open(config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let layout = Layout::new(&config.root);
        for dir in [layout.apps_dir(), layout.tmp_dir(), layout.registry_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let journal = RegistrationJournal::new(layout.clone(), config.fsync);
        let state = recover::recover(&layout, &journal)?;
        let store = Arc::new(Self {
            index_cache: BoundedCache::new("index", config.index_cache_bytes, |i| {
                i.index.retained_bytes() + i.crc32s.len() * 4
            }),
            file_cache: BoundedCache::new("file", config.max_open_files, |_| 1),
            layout,
            config,
            journal,
            state: Mutex::new(state),
        });
        store.publish_metrics();
        Ok(store)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Records a live executor, durably. Returns false if it was already registered.
    pub fn register_executor(&self, app: &AppId, exec: &ExecutorId) -> Result<bool, StoreError> {
        self.register(app, exec, None)
    }

    /// Records an executor registered over Spark's protocol, with its local dirs, durably (as
    /// Spark's recovery DB does: executors do not register again after a restart). A second
    /// registration of the same executor replaces the first, as in Spark.
    pub fn register_spark_executor(
        &self,
        app: &AppId,
        exec: &ExecutorId,
        info: SparkExecutorInfo,
    ) -> Result<bool, StoreError> {
        self.register(app, exec, Some(info))
    }

    /// A registered Spark executor, looked up by the ids as Spark sent them (checked per block,
    /// so without parsing them).
    pub fn spark_executor(&self, app: &str, exec: &str) -> Option<Arc<SparkExecutorInfo>> {
        let state = self.lock();
        state.apps.get(app)?.executors.get(exec)?.spark.clone()
    }

    fn register(
        &self,
        app: &AppId,
        exec: &ExecutorId,
        spark: Option<SparkExecutorInfo>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let reg = Registration {
            registered_unix_ms: now,
            spark: spark.clone(),
        };
        self.journal
            .save(app, exec, &reg)
            .map_err(|e| StoreError::io(format!("saving registration of {app}/{exec}"), e))?;
        let newly = {
            let mut state = self.lock();
            let entry = state.app_mut(app);
            entry.last_activity_ms = now;
            let e = entry.executors.entry(exec.clone()).or_default();
            e.last_activity_ms = now;
            e.spark = spark.map(Arc::new);
            !std::mem::replace(&mut e.registered, true)
        };
        self.publish_metrics();
        Ok(newly)
    }

    /// Records that an executor is gone; its committed outputs stay served.
    pub fn unregister_executor(&self, app: &AppId, exec: &ExecutorId) -> Result<bool, StoreError> {
        self.journal
            .delete(app, exec)
            .map_err(|e| StoreError::io(format!("deleting registration of {app}/{exec}"), e))?;
        let was = {
            let mut state = self.lock();
            let was = state
                .apps
                .get_mut(app)
                .and_then(|a| a.executors.get_mut(exec))
                .map(|e| std::mem::replace(&mut e.registered, false))
                .unwrap_or(false);
            state.forget_if_idle(app, exec);
            was
        };
        self.publish_metrics();
        Ok(was)
    }

    /// Per-application view for the controller; `app` narrows it to one (NOT_FOUND if unknown).
    pub fn snapshot(&self, app: Option<&AppId>) -> Result<Vec<AppSnapshot>, StoreError> {
        let state = self.lock();
        if let Some(app) = app {
            if !state.apps.contains_key(app) {
                return Err(StoreError::UnknownApp {
                    app: app.to_string(),
                });
            }
        }
        Ok(state
            .apps
            .iter()
            .filter(|(id, _)| app.is_none_or(|a| a == *id))
            .map(|(id, entry)| snapshot_app(id, entry))
            .collect())
    }

    /// Applications idle since before `cutoff_ms` with nothing in flight (for the idle TTL).
    pub fn idle_apps(&self, cutoff_ms: i64) -> Vec<AppId> {
        let state = self.lock();
        state
            .apps
            .iter()
            .filter(|(_, a)| {
                a.last_activity_ms < cutoff_ms
                    && a.executors.values().all(|e| {
                        e.writes_in_flight == 0
                            && e.fetches_in_flight == 0
                            && e.last_activity_ms < cutoff_ms
                    })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Marks an application active now (requests that do not go through `track`).
    pub fn touch(&self, app: &AppId) {
        if let Some(entry) = self.lock().apps.get_mut(app) {
            entry.last_activity_ms = now_ms();
        }
    }

    /// Total bytes of committed outputs.
    pub fn bytes_stored(&self) -> u64 {
        let state = self.lock();
        state
            .apps
            .values()
            .flat_map(|a| a.outputs.values())
            .map(|r| r.stored_bytes)
            .sum()
    }

    /// Deletes every output and registration of `app`. The application's directory is first
    /// renamed into `tmp/` (atomic: no reader sees half of it), then deleted. Removing an
    /// unknown application is not an error: it reports zero bytes, so callers can retry.
    pub fn remove_app(&self, app: &AppId) -> Result<RemovalReport, StoreError> {
        let app_dir = self.layout.app_dir(app);
        let trash = self
            .layout
            .tmp_dir()
            .join(format!("removed-{}-{}", app, uuid::Uuid::new_v4()));
        let mut spark_dirs = Vec::new();
        let report = {
            let mut state = self.lock();
            let entry = state.apps.remove(app);
            if let Some(entry) = &entry {
                spark_dirs = entry
                    .executors
                    .values()
                    .filter_map(|e| e.spark.as_ref())
                    .flat_map(|s| s.local_dirs.iter().map(PathBuf::from))
                    .collect();
            }
            match fs::rename(&app_dir, &trash) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Put the view back: nothing was removed.
                    if let Some(entry) = entry {
                        state.apps.insert(app.clone(), entry);
                    }
                    return Err(StoreError::io(format!("removing {}", app_dir.display()), e));
                }
            }
            self.journal
                .delete_app(app)
                .map_err(|e| StoreError::io(format!("deleting registrations of {app}"), e))?;
            entry
                .map(|e| RemovalReport {
                    bytes_freed: e.outputs.values().map(|r| r.stored_bytes).sum(),
                    outputs_removed: e.outputs.len() as u64,
                    executors_removed: e.executors.values().filter(|x| x.registered).count() as u32,
                })
                .unwrap_or_default()
        };
        self.index_cache.invalidate_under(&app_dir);
        self.file_cache.invalidate_under(&app_dir);
        // Spark keeps no message for "application ended"; deleting the executors' block
        // manager dirs here is what Spark's standalone worker does at that point. The dirs
        // were checked against the allowed roots at registration.
        for dir in &spark_dirs {
            self.index_cache.invalidate_under(dir);
            self.file_cache.invalidate_under(dir);
            match fs::remove_dir_all(dir) {
                Ok(()) => {
                    tracing::info!(app = %app, dir = %dir.display(), "deleted Spark executor dir")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(app = %app, dir = %dir.display(), error = %e, "could not delete Spark executor dir")
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(app = %app, path = %trash.display(), error = %e, "could not delete removed application's files; they are deleted at next start");
            }
        }
        crate::metrics::app_removed(report.bytes_freed);
        self.publish_metrics();
        Ok(report)
    }

    /// Free bytes on the data directory's filesystem.
    pub fn disk_free(&self) -> std::io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(self.layout.root()).map_err(std::io::Error::from)?;
        #[allow(clippy::unnecessary_cast)]
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Sets the store-wide gauges from the in-memory view.
    pub fn publish_metrics(&self) {
        let state = self.lock();
        let executors = state
            .apps
            .values()
            .flat_map(|a| a.executors.values())
            .filter(|e| e.registered)
            .count();
        let apps = state
            .apps
            .values()
            .filter(|a| a.executors.values().any(|e| e.registered))
            .count();
        let outputs = state.apps.values().map(|a| a.outputs.len()).sum();
        let bytes = state
            .apps
            .values()
            .flat_map(|a| a.outputs.values())
            .map(|r| r.stored_bytes)
            .sum();
        drop(state);
        crate::metrics::store_totals(apps, executors, outputs, bytes);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adjusts an executor's in-flight counters (creating its entry if needed).
    fn track(&self, app: &AppId, exec: &ExecutorId, writes: i32, fetches: i32) {
        let mut state = self.lock();
        let now = now_ms();
        let entry = state.app_mut(app);
        entry.last_activity_ms = now;
        // Per fetched block: look up before cloning the id for an insert.
        let e = match entry.executors.get_mut(exec) {
            Some(e) => e,
            None => entry.executors.entry(exec.clone()).or_default(),
        };
        e.writes_in_flight = e.writes_in_flight.saturating_add_signed(writes);
        e.fetches_in_flight = e.fetches_in_flight.saturating_add_signed(fetches);
        e.last_activity_ms = now;
        if writes < 0 || fetches < 0 {
            state.forget_if_idle(app, exec);
        }
    }

    fn map_key(app: &AppId, shuffle: u32, map: u64) -> MapKey {
        MapKey {
            app: app.to_string(),
            shuffle,
            map,
        }
    }
}

fn snapshot_app(id: &AppId, entry: &AppEntry) -> AppSnapshot {
    let mut executors: BTreeMap<&str, ExecutorSnapshot> = entry
        .executors
        .iter()
        .map(|(exec, e)| {
            (
                exec.as_str(),
                ExecutorSnapshot {
                    executor_id: exec.to_string(),
                    registered: e.registered,
                    writes_in_flight: e.writes_in_flight,
                    fetches_in_flight: e.fetches_in_flight,
                    last_activity_unix_ms: e.last_activity_ms,
                    ..Default::default()
                },
            )
        })
        .collect();
    for rec in entry.outputs.values() {
        let snap = executors
            .entry(rec.executor.as_str())
            .or_insert_with(|| ExecutorSnapshot {
                executor_id: rec.executor.to_string(),
                ..Default::default()
            });
        snap.committed_outputs += 1;
        snap.bytes_stored += rec.stored_bytes;
        snap.last_activity_unix_ms = snap.last_activity_unix_ms.max(rec.committed_unix_ms);
    }
    let executors: Vec<ExecutorSnapshot> = executors.into_values().collect();
    AppSnapshot {
        app_id: id.to_string(),
        committed_outputs: entry.outputs.len() as u64,
        bytes_stored: executors.iter().map(|e| e.bytes_stored).sum(),
        last_activity_unix_ms: entry.last_activity_ms,
        executors,
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

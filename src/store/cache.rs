//! A small LRU bounded by total weight, shared by the index cache (weight = bytes) and the open
//! file cache (weight = 1 per file, which bounds open descriptors).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;

use lru::LruCache;

/// Runs `load`, which reads files and may wait for the disk. Both protocols look blocks up from
/// the runtime's workers; on a worker of the multi-threaded runtime its other tasks move to
/// another thread first (`block_in_place`), so one cold index or open does not stall every
/// connection scheduled there. Elsewhere (the blocking pool, a current-thread runtime, no
/// runtime) it simply runs.
fn may_block<T>(load: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(load)
        }
        _ => load(),
    }
}

pub struct BoundedCache<V> {
    counters: crate::metrics::CacheCounters,
    max_weight: usize,
    weigh: fn(&V) -> usize,
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    /// Keyed by the path's bytes: hashing a `Path` walks its components, which showed in
    /// profiles of the per-block lookups. Paths are always built the same way, so equal files
    /// have equal bytes.
    entries: LruCache<OsString, V>,
    weight: usize,
}

impl<V: Clone> BoundedCache<V> {
    pub fn new(name: &'static str, max_weight: usize, weigh: fn(&V) -> usize) -> Self {
        Self {
            counters: crate::metrics::CacheCounters::new(name),
            max_weight: max_weight.max(1),
            weigh,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                weight: 0,
            }),
        }
    }

    /// Returns the cached value for `key`, or loads it (outside the lock, so a slow disk does not
    /// stall other readers; see [`may_block`]) and caches it. Two racing loads of one key both
    /// succeed; one wins.
    pub fn get_or_load<E>(&self, key: &Path, load: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(v) = self.lock().entries.get(key.as_os_str()).cloned() {
            self.counters.lookup(true);
            return Ok(v);
        }
        self.counters.lookup(false);
        let value = may_block(load)?;
        let w = (self.weigh)(&value);
        let mut inner = self.lock();
        if let Some(old) = inner.entries.put(key.as_os_str().to_owned(), value.clone()) {
            inner.weight -= (self.weigh)(&old);
        }
        inner.weight += w;
        while inner.weight > self.max_weight && inner.entries.len() > 1 {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.weight -= (self.weigh)(&old),
                None => break,
            }
        }
        Ok(value)
    }

    /// Drops every entry whose path lies under `dir` (used when an application is removed, so
    /// its deleted files are closed and their disk space is really freed).
    pub fn invalidate_under(&self, dir: &Path) {
        let mut inner = self.lock();
        let doomed: Vec<OsString> = inner
            .entries
            .iter()
            .filter(|(k, _)| Path::new(k).starts_with(dir))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(old) = inner.entries.pop(&k) {
                inner.weight -= (self.weigh)(&old);
            }
        }
    }

    pub fn invalidate(&self, key: &Path) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.pop(key.as_os_str()) {
            inner.weight -= (self.weigh)(&old);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding this lock cannot leave the LRU inconsistent in a way that
        // matters more than losing the cache, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let cache: BoundedCache<Vec<u8>> = BoundedCache::new("test", 10, |v| v.len());
        let load = |n: usize| move || Ok::<_, ()>(vec![0u8; n]);
        cache.get_or_load(Path::new("/a"), load(4)).unwrap();
        cache.get_or_load(Path::new("/b"), load(4)).unwrap();
        // Touch /a so /b is the least recently used.
        cache.get_or_load(Path::new("/a"), load(99)).unwrap();
        cache.get_or_load(Path::new("/c"), load(4)).unwrap();
        assert_eq!(cache.len(), 2);
        let reloaded = cache.get_or_load(Path::new("/b"), load(1)).unwrap();
        assert_eq!(reloaded.len(), 1, "/b must have been evicted and reloaded");
    }

    #[test]
    fn invalidates_a_subtree() {
        let cache: BoundedCache<u8> = BoundedCache::new("test", 100, |_| 1);
        for p in ["/d/app1/x", "/d/app1/y", "/d/app10/z"] {
            cache.get_or_load(Path::new(p), || Ok::<_, ()>(1)).unwrap();
        }
        cache.invalidate_under(Path::new("/d/app1"));
        assert_eq!(cache.len(), 1, "/d/app10 is not under /d/app1");
    }

    #[test]
    fn a_slow_load_on_a_runtime_worker_does_not_stall_the_workers_other_tasks() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        use std::time::Duration;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let during_load = runtime.block_on(async {
            // Let the ticker start on the one worker, then load from a task on that worker.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                let cache: BoundedCache<u32> = BoundedCache::new("test", 10, |_| 1);
                let before = ticks.load(Ordering::Relaxed);
                cache
                    .get_or_load(Path::new("/cold"), || {
                        // A cold read from a slow disk.
                        std::thread::sleep(Duration::from_millis(300));
                        Ok::<_, ()>(ticks.load(Ordering::Relaxed) - before)
                    })
                    .unwrap()
            })
            .await
            .unwrap()
        });
        ticker.abort();
        assert!(
            during_load >= 10,
            "the worker's other task ticked {during_load} times in 300 ms of loading"
        );
    }
}

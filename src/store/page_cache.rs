//! Whether a file range is in the page cache, asked without reading it (`cachestat(2)`, Linux
//! 6.5). The Spark listener sends block bodies from its runtime threads; a body that has to come
//! from the disk would stall every connection of that thread while it waits, so such bodies are
//! sent from the blocking pool instead (`spark::server`).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// `cachestat(2)`'s number; the libc crate does not name it on every architecture, and it is
/// the same on all of them (451, added after the syscall tables were unified).
const SYS_CACHESTAT: nix::libc::c_long = 451;

/// How long a file found wholly cached is taken to stay so: hot files cost one check per this
/// long instead of one per block.
const TRUST_CACHED_FILE: Duration = Duration::from_secs(1);

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether every page of `offset..offset + len` is in the page cache; `None` where the kernel
/// cannot say (older than 6.5, or another error).
pub fn is_cached(file: &impl AsFd, offset: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    let page = page_size();
    let pages = (offset + len).div_ceil(page) - offset / page;
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both valid for the call; the fd is
    // borrowed for its duration.
    let rc = unsafe {
        nix::libc::syscall(
            SYS_CACHESTAT,
            file.as_fd().as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    (rc == 0).then_some(stat.nr_cache >= pages)
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64)
    })
}

/// How long a file found not wholly cached goes without that check, its blocks asked about one
/// by one: asking about a whole file walks all of its pages, once per block of a cold file
/// otherwise. Short, so a file that has warmed up is trusted again soon.
const RECHECK_PARTLY_CACHED_FILE: Duration = Duration::from_millis(100);

/// Remembers, per open file, until when it was found wholly cached, or not.
#[derive(Debug, Default)]
pub struct Residency {
    /// Milliseconds since `epoch()`; 0: not known to be cached.
    cached_until_ms: AtomicU64,
    /// Milliseconds since `epoch()` until which the file is taken to be partly cached.
    partly_until_ms: AtomicU64,
}

impl Residency {
    /// Whether `offset..offset + len` of `file` (`file_len` bytes long) can be read without
    /// waiting for the disk. Where the kernel cannot say, it answers yes: what kess assumed
    /// before it could ask.
    pub fn is_cached(&self, file: &impl AsFd, file_len: u64, offset: u64, len: u64) -> bool {
        let now = since_epoch_ms();
        if self.cached_until_ms.load(Ordering::Relaxed) > now {
            return true;
        }
        if self.partly_until_ms.load(Ordering::Relaxed) <= now {
            match is_cached(file, 0, file_len) {
                Some(false) => {
                    let until = now + RECHECK_PARTLY_CACHED_FILE.as_millis() as u64;
                    self.partly_until_ms.store(until, Ordering::Relaxed);
                }
                Some(true) | None => {
                    let until = now + TRUST_CACHED_FILE.as_millis() as u64;
                    self.cached_until_ms.store(until, Ordering::Relaxed);
                    return true;
                }
            }
        }
        is_cached(file, offset, len).unwrap_or(true)
    }
}

/// A millisecond clock cheap enough to read per block: the coarse monotonic clock is served
/// from the vDSO whatever the node's clocksource (a precise clock can cost a syscall on some
/// VMs), and its few milliseconds of resolution are plenty for a one-second memo.
fn since_epoch_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    // Never failing on Linux; if it did, a file found cached would stay trusted (as before
    // kess asked at all).
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default();
    // +1 so that "cached until 0" (never checked) is always in the past.
    now.as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes `len` bytes to a file on the disk the build runs from (not a tmpfs, whose pages
    /// cannot be evicted), synced so its pages can be dropped.
    fn synced_file(len: usize) -> (tempfile::TempDir, std::fs::File) {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        let dir = tempfile::tempdir_in(target).unwrap();
        let path = dir.path().join("data");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f.sync_all().unwrap();
        (dir, std::fs::File::open(&path).unwrap())
    }

    fn evict(file: &std::fs::File) {
        nix::fcntl::posix_fadvise(
            file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    }

    #[test]
    fn a_range_is_cached_once_read_and_not_after_eviction() {
        let (_dir, file) = synced_file(1 << 20);
        if is_cached(&file, 0, 1 << 20).is_none() {
            eprintln!("cachestat(2) not available on this kernel; nothing to check");
            return;
        }
        evict(&file);
        assert_eq!(is_cached(&file, 4096, 8192), Some(false));
        let mut buf = vec![0u8; 8192];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 4096).unwrap();
        assert_eq!(is_cached(&file, 4096, 8192), Some(true));
        // A range reaching into pages not read (readahead aside) is not wholly cached.
        evict(&file);
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..10], 0).unwrap();
        assert_eq!(is_cached(&file, (1 << 20) - 4096, 4096), Some(false));
        assert_eq!(is_cached(&file, 0, 0), Some(true));
    }

    #[test]
    fn a_wholly_cached_file_is_trusted_for_a_while_a_partly_cached_one_checked_per_range() {
        let (_dir, file) = synced_file(2 << 20);
        if is_cached(&file, 0, 1).is_none() {
            return;
        }
        let len = 2 << 20; // long enough that readahead from its start leaves its end out
        evict(&file);
        let residency = Residency::default();
        assert!(!residency.is_cached(&file, len, 0, 4096));
        // Partly cached for a while: each range is asked about on its own.
        let mut all = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut all[..8192], 0).unwrap();
        assert!(residency.is_cached(&file, len, 0, 4096));
        assert!(!residency.is_cached(&file, len, len - 4096, 4096));
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut all, 0).unwrap();
        assert!(residency.is_cached(&file, len, len - 4096, 4096));
        // Once that memo is over, the file is found wholly cached and trusted: the memo
        // answers, even though the pages went.
        std::thread::sleep(RECHECK_PARTLY_CACHED_FILE + Duration::from_millis(20));
        assert!(residency.is_cached(&file, len, 0, 4096));
        evict(&file);
        assert!(residency.is_cached(&file, len, 0, 4096));
    }
}

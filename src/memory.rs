//! Gives freed heap memory back to the OS when the daemon goes quiet.
//!
//! glibc's allocator returns memory only from the top of each arena, so after a burst of gRPC
//! pushes or fetches (message and chunk buffers of up to a few MiB per stream) the daemon's
//! resident memory stayed at the burst's peak while it went on serving the Spark path from
//! sendfile with almost none (measured: 50–200 MB instead of 12–18 MB). When the last gRPC stream
//! ends, `malloc_trim(0)` hands the free pages of every arena back, at most once a second. And
//! glibc gives each thread that allocates under contention its own arena (up to 8 per core),
//! each keeping a few MiB after a trim; one arena per core is enough for a daemon whose hot
//! paths barely allocate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

static BUSY: AtomicUsize = AtomicUsize::new(0);
static IDLE: Notify = Notify::const_new();
static TRIMS: AtomicU64 = AtomicU64::new(0);

/// Marks the daemon busy (a gRPC stream is open) for as long as it lives.
pub struct Busy(());

impl Busy {
    pub fn start() -> Self {
        BUSY.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if BUSY.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit if the trimmer is not waiting yet, so no idle moment is missed.
            IDLE.notify_one();
        }
    }
}

/// Trims the heap each time the daemon becomes idle, until `shutdown`.
pub async fn trim_when_idle(mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = IDLE.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if BUSY.load(Ordering::Acquire) == 0 {
            match tokio::task::spawn_blocking(trim).await {
                Ok(released) => {
                    TRIMS.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::heap_trimmed();
                    tracing::debug!(released, "idle: returned free heap memory to the OS");
                }
                Err(e) => tracing::warn!(error = %e, "heap trim task failed"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Caps the allocator's arenas at one per core. Call before the daemon starts its threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = nix::libc::c_int::try_from(cores).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: mallopt only changes a tuning parameter of the allocator.
        if unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, cores) } != 1 {
            tracing::warn!(cores, "could not limit the allocator's arenas");
        }
    }
}

/// Returns free heap pages to the OS; true if any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory.
    unsafe { nix::libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trims_once_the_last_stream_ends() {
        let (stop, stopped) = watch::channel(false);
        let trimmer = tokio::spawn(trim_when_idle(stopped));
        // Let a trim owed to an earlier test (a stored wake-up) happen first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = TRIMS.load(Ordering::Relaxed);
        let first = Busy::start();
        let second = Busy::start();
        // A large freed allocation: something for the trim to give back.
        drop(vec![1u8; 64 << 20]);
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            TRIMS.load(Ordering::Relaxed),
            before,
            "a stream is still open"
        );
        drop(second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TRIMS.load(Ordering::Relaxed) == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no trim after going idle"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        trimmer.await.unwrap();
    }
}

//! Pipes for block bodies, so that the bodies of pipelined requests leave in one socket call per
//! batch instead of two calls per block.
//!
//! sendfile(2) after a frame header sent with MSG_MORE costs two trips through TCP's send path
//! per block (socket lock, segment assembly, and on loopback the receiver's processing too).
//! Instead, a block's frame header is written into a pipe and its body spliced in after it from
//! the page cache, and the pipe is spliced to the socket when it is full or the batch of
//! requests ends: TCP sees one large send per ~17 average blocks. The bytes are never copied:
//! the pipe holds references to page-cache pages, which the socket takes over.
//!
//! Pipes come from a [`PipePool`] with a fixed budget. Linux limits the pipe memory each user id
//! may hold (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default, counted by capacity and
//! shared by every process of that user on the node), and a user over it gets tiny pipes
//! everywhere; a pipe per connection could take that budget from other processes.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};

use crate::metrics;

/// Size asked for each pipe: room for ~17 average blocks (a page slot per 4 KiB of body, one
/// per header). Measured against 256 KiB pipes, which batch fewer blocks and gain less.
pub const PIPE_BYTES: usize = 1 << 20;

/// Pipes shared by the connections of a listener, at most `budget / PIPE_BYTES` open at once.
/// A connection takes one for a batch of replies and gives it back, empty, when the batch is
/// out; a connection that finds none free sends its bodies with sendfile, as without pipes.
#[derive(Debug)]
pub struct PipePool {
    free: Mutex<Vec<BodyPipe>>,
    open: AtomicUsize,
    max: usize,
}

impl PipePool {
    /// A pool of at most `budget_bytes` of pipes; 0 turns pipes off.
    pub fn new(budget_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            max: usize::try_from(budget_bytes / PIPE_BYTES as u64).unwrap_or(usize::MAX),
        })
    }

    /// A free pipe, or a new one within the budget; `None` when all are taken (or the system
    /// refuses a pipe).
    pub fn take(self: &Arc<Self>) -> Option<PooledPipe> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let pipe = match reused {
            Some(pipe) => pipe,
            None => {
                let opened = self.open.fetch_add(1, Ordering::Relaxed);
                if opened >= self.max {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    metrics::spark_pipe_request("none_free");
                    return None;
                }
                match BodyPipe::new() {
                    Ok(pipe) => pipe,
                    Err(e) => {
                        self.open.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not open a pipe for Spark block bodies; sending them with sendfile");
                        metrics::error(metrics::SPARK, "pipe_refused");
                        return None;
                    }
                }
            }
        };
        metrics::spark_pipe_request("lent");
        metrics::spark_pipes_in_use(1.0);
        Some(PooledPipe {
            pipe: Some(pipe),
            pool: Arc::clone(self),
        })
    }
}

/// A pipe taken from a [`PipePool`]; back to the pool when dropped empty, closed otherwise (a
/// connection that ended mid-batch), which frees its place in the budget.
pub struct PooledPipe {
    pipe: Option<BodyPipe>,
    pool: Arc<PipePool>,
}

impl std::ops::Deref for PooledPipe {
    type Target = BodyPipe;
    fn deref(&self) -> &BodyPipe {
        self.pipe
            .as_ref()
            .expect("a pooled pipe holds its pipe until dropped")
    }
}

impl std::ops::DerefMut for PooledPipe {
    fn deref_mut(&mut self) -> &mut BodyPipe {
        self.pipe
            .as_mut()
            .expect("a pooled pipe holds its pipe until dropped")
    }
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        metrics::spark_pipes_in_use(-1.0);
        match self.pipe.take() {
            Some(pipe) if pipe.pending() == 0 => self
                .pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pipe),
            _ => {
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// One non-blocking pipe: headers written and bodies spliced into it, waiting for the socket.
#[derive(Debug)]
pub struct BodyPipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the socket.
    pending: usize,
}

impl BodyPipe {
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A smaller pipe (the system's default, 64 KiB) still works, with smaller batches.
        if let Err(e) = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32)) {
            tracing::debug!(error = %e, "pipe for Spark block bodies keeps its default size");
        }
        Ok(Self {
            read,
            write,
            pending: 0,
        })
    }

    /// Bytes waiting in the pipe.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Writes what fits of `bytes` into the pipe; 0 when it is full.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match nix::unistd::write(&self.write, bytes) {
            Ok(n) => {
                self.pending += n;
                Ok(n)
            }
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Splices up to `len` bytes of `file` at `offset` (advanced) into the pipe; `Ok(0)` when the
    /// pipe is full, `UnexpectedEof` when the file ends first.
    pub fn splice_from(
        &mut self,
        file: impl AsFd,
        offset: &mut i64,
        len: usize,
    ) -> std::io::Result<usize> {
        match splice(
            file,
            Some(offset),
            &self.write,
            None,
            len,
            SpliceFFlags::SPLICE_F_NONBLOCK,
        ) {
            Ok(0) if len > 0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.pending += n;
                Ok(n)
            }
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Splices what the pipe holds to `socket` (non-blocking); `WouldBlock` when the socket has
    /// no room. `more` tells TCP that more data follows at once.
    pub fn splice_to(&mut self, socket: impl AsFd, more: bool) -> std::io::Result<usize> {
        let mut flags = SpliceFFlags::SPLICE_F_NONBLOCK;
        if more {
            flags |= SpliceFFlags::SPLICE_F_MORE;
        }
        let n = splice(&self.read, None, socket, None, self.pending, flags)?;
        self.pending -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn headers_and_file_ranges_leave_in_order_and_a_full_pipe_says_so() {
        let mut file = tempfile::tempfile().unwrap();
        let body: Vec<u8> = (0..3_200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&body).unwrap();
        let (mut rx, tx) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut pipe = BodyPipe::new().unwrap();

        assert_eq!(pipe.write(b"head").unwrap(), 4);
        let mut offset = 100i64;
        // More than the pipe holds: it takes what fits and then reports it is full.
        let mut taken = 0;
        loop {
            let n = pipe
                .splice_from(&file, &mut offset, 3_000_000 - taken)
                .unwrap();
            if n == 0 {
                break;
            }
            taken += n;
        }
        assert!(taken > 0 && taken < 3_000_000, "{taken}");
        assert_eq!((offset as usize, pipe.pending()), (100 + taken, 4 + taken));

        let reader = std::thread::spawn(move || {
            let mut got = vec![0; 4 + taken];
            rx.read_exact(&mut got).unwrap();
            got
        });
        tx.set_nonblocking(false).unwrap();
        while pipe.pending() > 0 {
            pipe.splice_to(&tx, false).unwrap();
        }
        let got = reader.join().unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &body[100..100 + taken]);
    }

    #[test]
    fn a_range_past_the_end_of_its_file_is_an_error_not_a_short_body() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"short").unwrap();
        let mut pipe = BodyPipe::new().unwrap();
        let mut offset = 0i64;
        assert_eq!(pipe.splice_from(&file, &mut offset, 100).unwrap(), 5);
        let err = pipe.splice_from(&file, &mut offset, 95).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_pool_lends_pipes_within_its_budget_and_reuses_those_given_back() {
        let pool = PipePool::new(2 * PIPE_BYTES as u64);
        let first = pool.take().expect("within the budget");
        let second = pool.take().expect("within the budget");
        assert!(pool.take().is_none(), "a third pipe is over the budget");
        let fd = |p: &PooledPipe| std::os::fd::AsRawFd::as_raw_fd(&p.read);
        let given_back = fd(&first);
        drop(first);
        let again = pool.take().expect("the pipe given back");
        assert_eq!(
            fd(&again),
            given_back,
            "an empty pipe is reused, not reopened"
        );
        drop((second, again));
        assert!(
            PipePool::new(0).take().is_none(),
            "a budget of 0 turns pipes off"
        );
    }

    #[test]
    fn a_pipe_dropped_with_bytes_in_it_is_closed_and_frees_its_place() {
        let pool = PipePool::new(PIPE_BYTES as u64);
        let mut pipe = pool.take().unwrap();
        pipe.write(b"a header whose body never came").unwrap();
        drop(pipe);
        assert!(
            pool.free.lock().unwrap().is_empty(),
            "not given back with stale bytes"
        );
        let fresh = pool.take().expect("its place in the budget is free again");
        assert_eq!(fresh.pending(), 0);
    }
}

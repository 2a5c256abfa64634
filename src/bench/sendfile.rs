//! The machine's limit for serving shuffle blocks: the same block ranges of the same files sent
//! with `sendfile(2)` over loopback TCP by blocking threads, behind the thinnest possible
//! protocol (8-byte request, 8-byte length, the blocks). Nothing a shuffle service does can
//! beat this on the same machine.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ess::{FetchRequest, RunResult};
use super::spark_shuffle::SparkShuffle;
use crate::daemon::BoxError;

/// Open data files and block offsets of a generated shuffle.
pub struct SendfileSource {
    files: Vec<File>,
    /// Per map, the offset of each partition (and the end).
    offsets: Vec<Vec<u64>>,
    shuffle: Arc<SparkShuffle>,
}

impl SendfileSource {
    pub fn open(shuffle: &Arc<SparkShuffle>) -> Result<Self, BoxError> {
        let mut files = Vec::new();
        let mut offsets = Vec::new();
        for map in 0..shuffle.maps {
            files.push(File::open(shuffle.data_file(map)?)?);
            let mut at = 0;
            let mut o = vec![0];
            for p in 0..shuffle.partitions {
                at += shuffle.block_size(map, p);
                o.push(at);
            }
            offsets.push(o);
        }
        Ok(Self {
            files,
            offsets,
            shuffle: Arc::clone(shuffle),
        })
    }

    fn blocks(&self, r: FetchRequest) -> impl Iterator<Item = (&File, u64, u64)> + '_ {
        self.shuffle.maps_of(r.executor).iter().map(move |&m| {
            let o = &self.offsets[m as usize];
            let p = r.reduce as usize;
            (&self.files[m as usize], o[p], o[p + 1] - o[p])
        })
    }
}

pub fn run(
    source: Arc<SendfileSource>,
    requests: &Arc<Vec<FetchRequest>>,
    concurrency: usize,
    congestion: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<RunResult, BoxError> {
    let listener = TcpListener::bind((ip, 0))?;
    if let Some(name) = congestion {
        crate::tcp::set_congestion_control(&listener, name)?;
    }
    let addr = listener.local_addr()?;
    let server = {
        let requests = Arc::clone(requests);
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut senders = Vec::new();
            for _ in 0..concurrency {
                let (sock, _) = listener.accept()?;
                let (source, requests) = (Arc::clone(&source), Arc::clone(&requests));
                senders.push(std::thread::spawn(move || serve(sock, &source, &requests)));
            }
            for s in senders {
                s.join()
                    .map_err(|_| std::io::Error::other("sender panicked"))??;
            }
            Ok(())
        })
    };
    let clients: Vec<TcpStream> = (0..concurrency)
        .map(|_| super::dial::connect_std(addr))
        .collect::<Result<_, _>>()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let own_cpu = super::proc_stats::own_cpu_seconds();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut sock| {
            let (next, n) = (Arc::clone(&next), requests.len());
            std::thread::spawn(move || -> std::io::Result<(u64, Vec<Duration>)> {
                sock.set_nodelay(true)?;
                let mut buf = vec![0u8; 1 << 20];
                let (mut bytes, mut latencies) = (0u64, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok((bytes, latencies));
                    }
                    let t = Instant::now();
                    sock.write_all(&(i as u64).to_be_bytes())?;
                    let mut len = [0u8; 8];
                    sock.read_exact(&mut len)?;
                    let mut left = u64::from_be_bytes(len);
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let got = sock.read(&mut buf[..want])?;
                        if got == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        left -= got as u64;
                        bytes += got as u64;
                    }
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let (mut bytes, mut latencies) = (0, Vec::new());
    for r in readers {
        let (b, l) = r.join().map_err(|_| "reader panicked")??;
        bytes += b;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    server.join().map_err(|_| "server panicked")??;
    latencies.sort_unstable();
    Ok(RunResult {
        bytes,
        elapsed,
        latencies,
        server: None,
        bench_cpu_seconds: super::proc_stats::own_cpu_seconds() - own_cpu,
    })
}

fn serve(
    mut sock: TcpStream,
    source: &SendfileSource,
    requests: &[FetchRequest],
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut idx = [0u8; 8];
    loop {
        match sock.read_exact(&mut idx) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let r = requests
            .get(u64::from_be_bytes(idx) as usize)
            .copied()
            .ok_or_else(|| std::io::Error::other("bad request index"))?;
        let total: u64 = source.blocks(r).map(|(_, _, len)| len).sum();
        sock.write_all(&total.to_be_bytes())?;
        for (file, offset, len) in source.blocks(r) {
            let mut off = offset as i64;
            let end = offset + len;
            while (off as u64) < end {
                let count = (end - off as u64) as usize;
                let n =
                    nix::sys::sendfile::sendfile(sock.as_fd(), file.as_fd(), Some(&mut off), count)
                        .map_err(std::io::Error::from)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

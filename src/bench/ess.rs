//! `kess bench-ess`: kess against Spark's own Java shuffle service, side by side, on the same
//! files with the same client, plus the machine's limit (sendfile over loopback) and kess's gRPC
//! path for the same blocks. Each server runs as its own process so its CPU time and peak RSS
//! can be read from `/proc`. Prints a table and one `bench ess …` line per figure. Each path runs
//! `--repeat` times (3 by default), the paths taking turns, and is reported by its median run
//! (its line lists every run's throughput): single runs on a shared VM swing by a third.
//!
//! The Java service is started by the caller (`benches/ess.sh` does it) and named with
//! `--java-addr` and `--java-pid`; without them only kess and the references are measured.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use clap::Args;
use tonic::transport::Channel;

use super::grpc_reader::GrpcReader;
use super::proc_stats::{self, ProcessStats};
use super::spark_client::SparkClient;
use super::spark_shuffle::{ShuffleShape, SparkShuffle};
use crate::daemon::BoxError;
use crate::proto::push_map_output_request::Item;
use crate::proto::shuffle_service_client::ShuffleServiceClient;
use crate::proto::{
    BlockRange, FetchBlocksRequest, PartitionData, PushCommit, PushHeader, PushMapOutputRequest,
};

const APP: &str = "app-20261121000000-0000";

#[derive(Debug, Clone, Args)]
pub struct EssBenchArgs {
    /// Size of the uniform and skewed shuffles (200 maps × 200 partitions).
    #[arg(long, default_value = "2GiB")]
    pub total_bytes: ByteSize,
    /// Size of the tiny-blocks shuffle (400 maps × 400 partitions).
    #[arg(long, default_value = "48MiB")]
    pub tiny_total_bytes: ByteSize,
    /// Shuffle shapes to measure.
    #[arg(long, value_delimiter = ',', default_value = "uniform,skewed,tiny")]
    pub shapes: Vec<ShuffleShape>,
    /// Concurrent fetch requests (each on its own connection, as from separate reducers).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    pub concurrency: Vec<usize>,
    /// Executors the map outputs are spread over (one FetchShuffleBlocks per executor and reducer).
    #[arg(long, default_value_t = 4)]
    pub executors: usize,
    /// Spark's Java External Shuffle Service, already running.
    #[arg(long, requires = "java_pid")]
    pub java_addr: Option<SocketAddr>,
    /// Its process id (for CPU time and peak RSS).
    #[arg(long, requires = "java_addr")]
    pub java_pid: Option<u32>,
    /// Skip kess's gRPC path (it needs a copy of the shuffle pushed into kess).
    #[arg(long)]
    pub no_grpc: bool,
    /// Where the shuffle files and kess's data go (a temporary directory under it).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
    /// Runs of each path per shape and concurrency. The paths take turns, so a slow stretch of
    /// the machine hits them alike, and each is reported by its median run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Evict the shuffle files from the page cache before each run, so every server reads
    /// them from disk (a shuffle read long after it was written).
    #[arg(long)]
    pub cold: bool,
    /// TCP congestion control for kess's connections from this host (every connection here)
    /// and for the sendfile reference's, as `kess daemon --local-tcp-congestion`: `reno` by
    /// default, `same` for the node's default. The Java service keeps the node's default.
    #[arg(long, env = "KESS_LOCAL_TCP_CONGESTION", default_value = "reno")]
    pub local_tcp_congestion: String,
    /// Where kess and the sendfile reference listen.
    #[arg(long, default_value = "127.0.0.1")]
    pub server_ip: IpAddr,
    /// Dial every fetch from this network namespace (`ip netns add`), a stand-in for a pod
    /// wired to the host (`benches/ess.sh` builds one with KESS_BENCH_POD_NETWORK=1); the
    /// servers must listen where it can reach them (`--server-ip`, `--java-addr`).
    #[arg(long)]
    pub client_netns: Option<String>,
}

/// One fetch request: reduce partition `reduce` from every map output of `executor`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchRequest {
    pub executor: usize,
    pub reduce: i32,
}

/// What one run measured (latencies sorted).
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    pub bytes: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub server: Option<ProcessStats>,
    /// CPU seconds of this process during the run: the client's, and for the sendfile
    /// reference its sender's as well.
    pub bench_cpu_seconds: f64,
}

impl RunResult {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e9
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }

    fn cpu_per_gb(&self) -> Option<f64> {
        self.server
            .map(|s| s.cpu_seconds / (self.bytes as f64 / 1e9))
    }

    fn bench_cpu_per_gb(&self) -> f64 {
        self.bench_cpu_seconds / (self.bytes as f64 / 1e9).max(1e-9)
    }
}

pub async fn run(args: EssBenchArgs) -> Result<(), BoxError> {
    let work = tempfile::Builder::new()
        .prefix("kess-bench-ess-")
        .tempdir_in(&args.work_dir)?;
    if let Some(name) = &args.client_netns {
        super::dial::dial_from_netns(name)?;
    }
    let kess = KessProcess::spawn(work.path(), &args.local_tcp_congestion, args.server_ip)?;
    kess.wait_ready().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = proc_stats::read(kess.pid())?;
    println!(
        "kess bench-ess: {} cores, kess pid {}{}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        kess.pid(),
        match (args.java_addr, args.java_pid) {
            (Some(a), Some(p)) => format!(", Java ESS {a} pid {p}"),
            _ => ", no Java ESS (kess and references only)".into(),
        }
    );
    let node_default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
    let local = crate::tcp::local_algorithm(&args.local_tcp_congestion);
    let ours = local.unwrap_or(&node_default);
    println!(
        "bench ess tcp-congestion node={node_default} kess={ours} sendfile={ours} java={node_default}"
    );
    println!(
        "bench ess network server_ip={} client_netns={}",
        args.server_ip,
        args.client_netns.as_deref().unwrap_or("-")
    );
    println!(
        "bench ess idle server=kess rss_bytes={} rss_anon_bytes={}",
        idle.rss_bytes, idle.rss_anon_bytes
    );
    let mut bytes_on_disk = 0;
    let grpc = if args.no_grpc {
        None
    } else {
        let pushers = super::connect_all(&format!("http://{}", kess.grpc_addr)).await?;
        let mut readers = Vec::new();
        for _ in 0..pushers.len() {
            readers.push(GrpcReader::connect(kess.grpc_addr).await?);
        }
        Some((pushers, readers))
    };
    println!(
        "{:>8} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "shape", "conc", "path", "GB/s", "p50 ms", "p99 ms", "cpu s/GB", "peak MB"
    );
    for (n, &shape) in args.shapes.iter().enumerate() {
        let total = match shape {
            ShuffleShape::Tiny => args.tiny_total_bytes,
            _ => args.total_bytes,
        };
        let root = work.path().join(format!("shuffle-{}", shape.name()));
        let shuffle = Arc::new(SparkShuffle::generate(
            &root,
            shape,
            total.as_u64(),
            args.executors.max(1),
        )?);
        // Each shape is its own application, registered with both services.
        let app = format!("{APP}{n}");
        register(kess.spark_addr, &app, &shuffle).await?;
        if let Some(addr) = args.java_addr {
            register(addr, &app, &shuffle).await?;
        }
        bytes_on_disk += shuffle.total_bytes();
        if let Some((pushers, _)) = &grpc {
            push_to_kess(pushers, &app, &shuffle).await?;
            bytes_on_disk += shuffle.total_bytes();
        }
        let requests: Arc<Vec<FetchRequest>> = Arc::new(
            (0..shuffle.partitions)
                .flat_map(|reduce| {
                    (0..shuffle.executors()).map(move |executor| FetchRequest { executor, reduce })
                })
                .collect(),
        );
        let sendfile = Arc::new(super::sendfile::SendfileSource::open(&shuffle)?);
        // Warm-up (JIT, caches), not measured.
        let warm = Arc::new(requests[..requests.len() / 10].to_vec());
        fetch_spark(kess.spark_addr, &app, &shuffle, &warm, 8, None).await?;
        if let Some(addr) = args.java_addr {
            fetch_spark(addr, &app, &shuffle, &warm, 8, None).await?;
        }
        for &concurrency in &args.concurrency {
            let concurrency = concurrency.max(1);
            let label = |path: &str, r: &PathRuns| {
                print_figure(shape, concurrency, path, &shuffle, r);
            };
            let cold = || -> Result<(), BoxError> {
                if args.cold {
                    evict_page_cache(work.path())?;
                }
                Ok(())
            };
            let (mut spark, mut java, mut limit, mut kess_grpc) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.repeat {
                cold()?;
                spark.push(
                    fetch_spark(
                        kess.spark_addr,
                        &app,
                        &shuffle,
                        &requests,
                        concurrency,
                        Some(kess.pid()),
                    )
                    .await?,
                );
                if let (Some(addr), Some(pid)) = (args.java_addr, args.java_pid) {
                    cold()?;
                    java.push(
                        fetch_spark(addr, &app, &shuffle, &requests, concurrency, Some(pid))
                            .await?,
                    );
                }
                cold()?;
                limit.push(super::sendfile::run(
                    Arc::clone(&sendfile),
                    &requests,
                    concurrency,
                    local,
                    args.server_ip,
                )?);
                if let Some((_, readers)) = &grpc {
                    cold()?;
                    kess_grpc.push(
                        fetch_grpc(readers, &app, &shuffle, &requests, concurrency, kess.pid())
                            .await?,
                    );
                    // kess gives back the heap its gRPC streams freed when they end, at most once
                    // a second; the next Spark-path run's peak RSS is its own, not their rest.
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
            }
            for (path, runs) in [
                ("kess-spark", &spark),
                ("java-spark", &java),
                ("sendfile", &limit),
                ("kess-grpc", &kess_grpc),
            ] {
                if let Some(r) = runs.iter().find(|r| r.bytes != shuffle.total_bytes()) {
                    return Err(format!(
                        "{} {concurrency} {path}: moved {} bytes, the shuffle has {}",
                        shape.name(),
                        r.bytes,
                        shuffle.total_bytes()
                    )
                    .into());
                }
            }
            let (kess_spark, java, limit, kess_grpc) = (
                median_run(spark),
                median_run(java),
                median_run(limit),
                median_run(kess_grpc),
            );
            let kess_spark = kess_spark.ok_or("no kess run")?;
            let limit = limit.ok_or("no sendfile run")?;
            label("kess-spark", &kess_spark);
            if let Some(r) = &java {
                label("java-spark", r);
            }
            label("sendfile", &limit);
            if let Some(r) = &kess_grpc {
                label("kess-grpc", r);
            }
            print_ratios(
                shape,
                concurrency,
                &kess_spark,
                java.as_ref().map(|r| &r.median),
                &limit,
                kess_grpc.as_ref(),
            );
        }
    }
    // Idle again, with every shuffle still on disk: RSS follows streams, not bytes stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_stats::read(kess.pid())?;
    println!(
        "bench ess idle-after server=kess rss_bytes={} rss_anon_bytes={} shuffle_bytes_on_disk={bytes_on_disk}",
        after.rss_bytes, after.rss_anon_bytes
    );
    kess.stop();
    Ok(())
}

/// Writes back and drops from the page cache every file under `dir` (posix_fadvise DONTNEED:
/// no root needed, unlike drop_caches).
fn evict_page_cache(dir: &Path) -> Result<(), BoxError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            evict_page_cache(&entry.path())?;
        } else if kind.is_file() {
            let file = std::fs::File::open(entry.path())?;
            file.sync_data()?;
            nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )?;
        }
    }
    Ok(())
}

/// A path's runs at one shape and concurrency: the one with the median throughput (whose
/// figures are printed), and every run's throughput, in order.
struct PathRuns {
    median: RunResult,
    gbps: Vec<f64>,
}

fn median_run(mut runs: Vec<RunResult>) -> Option<PathRuns> {
    let gbps = runs.iter().map(RunResult::gbps).collect();
    runs.sort_by(|a, b| a.gbps().total_cmp(&b.gbps()));
    let middle = runs.len() / 2;
    let median = runs.into_iter().nth(middle)?;
    Some(PathRuns { median, gbps })
}

fn print_figure(
    shape: ShuffleShape,
    concurrency: usize,
    path: &str,
    shuffle: &SparkShuffle,
    runs: &PathRuns,
) {
    let r = &runs.median;
    let cpu = r.cpu_per_gb().map_or("-".into(), |c| format!("{c:.2}"));
    let peak = r
        .server
        .map_or("-".into(), |s| format!("{}", s.peak_rss_bytes >> 20));
    println!(
        "{:>8} {:>5} {:>10} {:>9.3} {:>9.2} {:>9.2} {:>9} {:>9}",
        shape.name(),
        concurrency,
        path,
        r.gbps(),
        r.percentile_ms(0.5),
        r.percentile_ms(0.99),
        cpu,
        peak
    );
    let all: Vec<String> = runs.gbps.iter().map(|g| format!("{g:.3}")).collect();
    println!(
        "bench ess shape={} concurrency={concurrency} path={path} bytes={} blocks={} gbps={:.3} p50_ms={:.3} p99_ms={:.3} cpu_s_per_gb={cpu} peak_rss_bytes={} bench_cpu_s_per_gb={:.2} gbps_runs={}",
        shape.name(),
        r.bytes,
        shuffle.total_blocks(),
        r.gbps(),
        r.percentile_ms(0.5),
        r.percentile_ms(0.99),
        r.server.map_or(0, |s| s.peak_rss_bytes),
        r.bench_cpu_per_gb(),
        all.join(","),
    );
}

/// Ratios of medians, and against the limit also each round's ratio (the runs of one round are
/// seconds apart, so a slow stretch of the machine hits both) and their median.
fn print_ratios(
    shape: ShuffleShape,
    concurrency: usize,
    kess_runs: &PathRuns,
    java: Option<&RunResult>,
    limit_runs: &PathRuns,
    grpc_runs: Option<&PathRuns>,
) {
    let shape = shape.name();
    let (kess, limit) = (&kess_runs.median, &limit_runs.median);
    if let Some(java) = java {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
            _ => "-".into(),
        };
        println!(
            "bench ess-ratio shape={shape} concurrency={concurrency} kess/java throughput={:.3} cpu_per_gb={} peak_rss={} p99={:.3}",
            kess.gbps() / java.gbps(),
            ratio(kess.cpu_per_gb(), java.cpu_per_gb()),
            ratio(
                kess.server.map(|s| s.peak_rss_bytes as f64),
                java.server.map(|s| s.peak_rss_bytes as f64)
            ),
            kess.percentile_ms(0.99) / java.percentile_ms(0.99).max(1e-9),
        );
    }
    for (path, runs) in [("kess-spark", Some(kess_runs)), ("kess-grpc", grpc_runs)] {
        let Some(runs) = runs else { continue };
        let (median, each) = paired_ratios(&runs.gbps, &limit_runs.gbps);
        println!(
            "bench ess-ratio shape={shape} concurrency={concurrency} {path}/sendfile throughput={:.3} paired_median={median:.3} paired={each}",
            runs.median.gbps() / limit.gbps()
        );
    }
}

/// Each round's `a / b` (as "0.812,0.790,…") and their median.
fn paired_ratios(a: &[f64], b: &[f64]) -> (f64, String) {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b.max(1e-9)).collect();
    let each = ratios
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(",");
    ratios.sort_by(f64::total_cmp);
    (ratios.get(ratios.len() / 2).copied().unwrap_or(0.0), each)
}

/// Registers every executor of `shuffle` with the service at `addr`.
async fn register(addr: SocketAddr, app: &str, shuffle: &SparkShuffle) -> Result<(), BoxError> {
    let mut client = SparkClient::connect(addr).await?;
    for (e, dir) in shuffle.executor_dirs.iter().enumerate() {
        client
            .register(
                app,
                &SparkShuffle::exec_id(e),
                vec![dir.to_string_lossy().into_owned()],
            )
            .await
            .map_err(|err| format!("registering executor {e} with {addr}: {err}"))?;
    }
    Ok(())
}

/// Runs `requests` against a Spark shuffle service with `concurrency` connections, each with
/// one request in flight; `pid` is the server process to account.
async fn fetch_spark(
    addr: SocketAddr,
    app: &str,
    shuffle: &Arc<SparkShuffle>,
    requests: &Arc<Vec<FetchRequest>>,
    concurrency: usize,
    pid: Option<u32>,
) -> Result<RunResult, BoxError> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(SparkClient::connect(addr).await?);
    }
    let measure = Measure::start(pid).await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let (next, requests, shuffle, app) = (
            Arc::clone(&next),
            Arc::clone(requests),
            Arc::clone(shuffle),
            app.to_string(),
        );
        tasks.spawn(async move {
            let mut bytes = 0u64;
            let mut latencies = Vec::new();
            while let Some(r) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                let started = Instant::now();
                bytes += client
                    .fetch_blocks(
                        &app,
                        &SparkShuffle::exec_id(r.executor),
                        shuffle.shuffle_id,
                        shuffle.maps_of(r.executor),
                        r.reduce,
                    )
                    .await?;
                latencies.push(started.elapsed());
            }
            Ok::<_, BoxError>((bytes, latencies))
        });
    }
    measure.finish(tasks).await
}

/// kess's gRPC path for the same requests: `concurrency` FetchBlocks streams in flight over at
/// most 8 HTTP/2 connections, read by `GrpcReader` (each byte copied once, as by the other
/// paths' readers).
async fn fetch_grpc(
    readers: &[GrpcReader],
    app: &str,
    shuffle: &Arc<SparkShuffle>,
    requests: &Arc<Vec<FetchRequest>>,
    concurrency: usize,
    pid: u32,
) -> Result<RunResult, BoxError> {
    let measure = Measure::start(Some(pid)).await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let reader = readers[i % readers.len()].clone();
        let (next, requests, shuffle, app) = (
            Arc::clone(&next),
            Arc::clone(requests),
            Arc::clone(shuffle),
            app.to_string(),
        );
        tasks.spawn(async move {
            let mut bytes = 0u64;
            let mut latencies = Vec::new();
            while let Some(r) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                let started = Instant::now();
                let blocks = shuffle
                    .maps_of(r.executor)
                    .iter()
                    .map(|&map| BlockRange {
                        shuffle_id: shuffle.shuffle_id as u32,
                        map_id: map as u64,
                        start_partition: r.reduce as u32,
                        end_partition: r.reduce as u32 + 1,
                    })
                    .collect();
                bytes += reader
                    .fetch_blocks(&FetchBlocksRequest {
                        app_id: app.clone(),
                        blocks,
                        max_chunk_bytes: 0,
                    })
                    .await?;
                latencies.push(started.elapsed());
            }
            Ok::<_, BoxError>((bytes, latencies))
        });
    }
    measure.finish(tasks).await
}

/// Wall time and the server's CPU and peak RSS around one run.
struct Measure {
    pid: Option<u32>,
    before: Option<ProcessStats>,
    started: Instant,
    own_cpu: f64,
}

impl Measure {
    /// Starts measuring after a short pause, so what the server does once the previous run
    /// ended (a GC, kess giving memory back when its last stream closed) is not counted here.
    async fn start(pid: Option<u32>) -> Self {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let before = pid.and_then(|pid| {
            proc_stats::reset_peak_rss(pid);
            proc_stats::read(pid).ok()
        });
        Self {
            pid,
            before,
            started: Instant::now(),
            own_cpu: proc_stats::own_cpu_seconds(),
        }
    }

    async fn finish(
        self,
        mut tasks: tokio::task::JoinSet<Result<(u64, Vec<Duration>), BoxError>>,
    ) -> Result<RunResult, BoxError> {
        let mut bytes = 0;
        let mut latencies = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (b, l) = done??;
            bytes += b;
            latencies.extend(l);
        }
        let elapsed = self.started.elapsed();
        latencies.sort_unstable();
        let server = match (self.pid, self.before) {
            (Some(pid), Some(before)) => {
                let after = proc_stats::read(pid)?;
                Some(ProcessStats {
                    cpu_seconds: after.cpu_seconds - before.cpu_seconds,
                    ..after
                })
            }
            _ => None,
        };
        Ok(RunResult {
            bytes,
            elapsed,
            latencies,
            server,
            bench_cpu_seconds: proc_stats::own_cpu_seconds() - self.own_cpu,
        })
    }
}

/// Pushes a copy of every map output into kess over gRPC, partition by partition.
async fn push_to_kess(
    channels: &[ShuffleServiceClient<Channel>],
    app: &str,
    shuffle: &SparkShuffle,
) -> Result<(), BoxError> {
    for map in 0..shuffle.maps {
        let data = bytes::Bytes::from(std::fs::read(shuffle.data_file(map)?)?);
        let mut msgs = vec![PushMapOutputRequest {
            item: Some(Item::Header(PushHeader {
                app_id: app.into(),
                executor_id: SparkShuffle::exec_id(map as usize % shuffle.executors()),
                shuffle_id: shuffle.shuffle_id as u32,
                map_id: map as u64,
                attempt: 0,
                num_partitions: shuffle.partitions as u32,
            })),
        }];
        let mut at = 0usize;
        for p in 0..shuffle.partitions {
            let len = shuffle.block_size(map, p) as usize;
            let mut piece = at;
            while piece < at + len {
                let end = (piece + (1 << 20)).min(at + len);
                msgs.push(PushMapOutputRequest {
                    item: Some(Item::Data(PartitionData {
                        partition: p as u32,
                        data: data.slice(piece..end),
                    })),
                });
                piece = end;
            }
            at += len;
        }
        msgs.push(PushMapOutputRequest {
            item: Some(Item::Commit(PushCommit::default())),
        });
        channels[map as usize % channels.len()]
            .clone()
            .push_map_output(tokio_stream::iter(msgs))
            .await?;
    }
    Ok(())
}

/// A kess daemon in its own process (this binary), so its CPU and memory are its own.
struct KessProcess {
    child: Child,
    spark_addr: SocketAddr,
    grpc_addr: SocketAddr,
}

impl KessProcess {
    fn spawn(work: &Path, local_congestion: &str, ip: IpAddr) -> Result<Self, BoxError> {
        let spark_addr = free_addr(ip)?;
        let grpc_addr = free_addr(ip)?;
        let http_addr = free_addr(ip)?;
        let log = std::fs::File::create(work.join("kess.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("daemon");
        command.args(["--local-tcp-congestion", local_congestion]);
        let child = command
            .arg("--data-dir")
            .arg(work.join("kess-data"))
            .args(["--spark-addr", &spark_addr.to_string()])
            .args(["--grpc-addr", &grpc_addr.to_string()])
            .args(["--http-addr", &http_addr.to_string()])
            .arg("--spark-allowed-roots")
            .arg(work)
            .args(["--min-free-bytes", "0"])
            .env("KESS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            spark_addr,
            grpc_addr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) -> Result<(), BoxError> {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.spark_addr)
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(self.grpc_addr).await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the kess daemon did not start within 10 s (see kess.log in the work dir)".into())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn free_addr(ip: IpAddr) -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?)
}

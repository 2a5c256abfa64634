//! `kess bench`: fetch throughput of a real daemon over loopback gRPC, against a raw-TCP copy of
//! the same bytes measured in the same run. Prints a table and one `bench …` line per figure
//! (for scripts to compare). A benchmark, not a test: nothing here asserts on time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::config::DaemonConfig;
use crate::daemon::BoxError;
use crate::proto::push_map_output_request::Item;
use crate::proto::shuffle_service_client::ShuffleServiceClient;
use crate::proto::{
    BlockRange, FetchBlocksRequest, PartitionData, PushCommit, PushHeader, PushMapOutputRequest,
};

mod dial;
pub mod ess;
mod grpc_reader;
mod proc_stats;
mod sendfile;
mod spark_client;
mod spark_shuffle;

const APP: &str = "kess-bench";
/// Partitions per map output; block size × this = one map output.
const PARTITIONS_PER_MAP: u32 = 16;
/// Connections the clients spread their streams over (HTTP/2 multiplexes the rest).
const MAX_CONNECTIONS: usize = 8;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Committed output per block size.
    #[arg(long, default_value = "1GiB")]
    pub total_bytes: ByteSize,
    /// Block (partition) sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64KiB,1MiB,8MiB")]
    pub block_sizes: Vec<ByteSize>,
    /// Concurrent fetch streams, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub streams: Vec<usize>,
    /// Where the bench daemon keeps its data (a temporary directory under it).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: std::path::PathBuf,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub path: &'static str,
    pub block: u64,
    pub streams: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Figure {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e9
    }
}

pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let work = tempfile::Builder::new()
        .prefix("kess-bench-")
        .tempdir_in(&args.work_dir)?;
    let mut config = DaemonConfig::defaults();
    config.data_dir = work.path().join("data");
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    config.spark_addr = "127.0.0.1:0".parse()?;
    config.min_free_bytes = ByteSize::b(0);
    let local_congestion = config.local_congestion().map(str::to_string);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let daemon = crate::daemon::start(config, metrics).await?;
    let url = format!("http://{}", daemon.grpc_addr);
    let channels = connect_all(&url).await?;

    println!(
        "kess bench: {} per block size, {} partitions per map output, loopback, {} cores",
        args.total_bytes,
        PARTITIONS_PER_MAP,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>9} {:>8} {:>12} {:>12} {:>10}",
        "block", "streams", "grpc GB/s", "tcp GB/s", "grpc/tcp"
    );
    for (shuffle, block) in args.block_sizes.iter().enumerate() {
        let block = block.as_u64().max(1);
        let maps = (args.total_bytes.as_u64() / (block * u64::from(PARTITIONS_PER_MAP))).max(1);
        let push_started = Instant::now();
        push_outputs(&channels[0], shuffle as u32, maps, block).await?;
        let pushed = maps * block * u64::from(PARTITIONS_PER_MAP);
        let push_gbps = pushed as f64 / push_started.elapsed().as_secs_f64() / 1e9;
        println!("bench push block={block} bytes={pushed} gbps={push_gbps:.3}");
        // The same bytes, as the files the daemon serves them from.
        let files = data_files(&daemon.store, shuffle as u32, maps)?;
        for &streams in &args.streams {
            let grpc = fetch_grpc(&channels, shuffle as u32, maps, block, streams).await?;
            let tcp = copy_tcp(&files, block, streams, local_congestion.as_deref()).await?;
            if grpc.bytes != tcp.bytes {
                return Err(format!("grpc moved {} bytes, tcp {}", grpc.bytes, tcp.bytes).into());
            }
            println!(
                "{:>9} {:>8} {:>12.3} {:>12.3} {:>10.2}",
                ByteSize::b(block).to_string(),
                streams,
                grpc.gbps(),
                tcp.gbps(),
                grpc.gbps() / tcp.gbps()
            );
            println!(
                "bench fetch path=grpc block={block} streams={streams} bytes={} gbps={:.3} ratio_to_tcp={:.3}",
                grpc.bytes,
                grpc.gbps(),
                grpc.gbps() / tcp.gbps()
            );
            println!(
                "bench fetch path=tcp block={block} streams={streams} bytes={} gbps={:.3}",
                tcp.bytes,
                tcp.gbps()
            );
        }
    }
    daemon.shutdown().await;
    Ok(())
}

/// MAX_CONNECTIONS gRPC connections tuned for bulk fetches (large windows and HTTP/2 frames).
pub(crate) async fn connect_all(url: &str) -> Result<Vec<ShuffleServiceClient<Channel>>, BoxError> {
    let mut out = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let channel = Channel::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .initial_connection_window_size(16 << 20)
            .initial_stream_window_size(8 << 20)
            .max_frame_size(1 << 20)
            .connect()
            .await?;
        out.push(
            ShuffleServiceClient::new(channel)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
        );
    }
    Ok(out)
}

/// Pushes `maps` outputs of PARTITIONS_PER_MAP blocks of `block` bytes each.
async fn push_outputs(
    client: &ShuffleServiceClient<Channel>,
    shuffle: u32,
    maps: u64,
    block: u64,
) -> Result<(), BoxError> {
    // One pseudo-random buffer, shifted per partition so blocks differ.
    let seed: Bytes = (0..block as usize + 4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect::<Vec<u8>>()
        .into();
    let piece = (block as usize).min(1 << 20);
    for map in 0..maps {
        let mut msgs = vec![PushMapOutputRequest {
            item: Some(Item::Header(PushHeader {
                app_id: APP.into(),
                executor_id: "bench".into(),
                shuffle_id: shuffle,
                map_id: map,
                attempt: 0,
                num_partitions: PARTITIONS_PER_MAP,
            })),
        }];
        for p in 0..PARTITIONS_PER_MAP {
            let shift = (map as usize * 31 + p as usize * 7) % 4096;
            let data = seed.slice(shift..shift + block as usize);
            let mut at = 0;
            while at < data.len() {
                let end = (at + piece).min(data.len());
                msgs.push(PushMapOutputRequest {
                    item: Some(Item::Data(PartitionData {
                        partition: p,
                        data: data.slice(at..end),
                    })),
                });
                at = end;
            }
        }
        msgs.push(PushMapOutputRequest {
            item: Some(Item::Commit(PushCommit::default())),
        });
        client
            .clone()
            .push_map_output(tokio_stream::iter(msgs))
            .await?;
    }
    Ok(())
}

/// Fetches every map output (one FetchBlocks per output) with `streams` concurrent streams.
async fn fetch_grpc(
    channels: &[ShuffleServiceClient<Channel>],
    shuffle: u32,
    maps: u64,
    block: u64,
    streams: usize,
) -> Result<Figure, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mut client = channels[s % channels.len()].clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            loop {
                let map = next.fetch_add(1, Ordering::Relaxed) as u64;
                if map >= maps {
                    return Ok::<u64, tonic::Status>(bytes);
                }
                let mut stream = client
                    .fetch_blocks(FetchBlocksRequest {
                        app_id: APP.into(),
                        blocks: vec![BlockRange {
                            shuffle_id: shuffle,
                            map_id: map,
                            start_partition: 0,
                            end_partition: PARTITIONS_PER_MAP,
                        }],
                        max_chunk_bytes: 0,
                    })
                    .await?
                    .into_inner();
                while let Some(chunk) = stream.message().await? {
                    bytes += chunk.data.len() as u64;
                }
            }
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok(Figure {
        path: "grpc",
        block,
        streams,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// The committed data files, memory-mapped (the client side pushes from these maps).
fn data_files(
    store: &crate::store::Store,
    shuffle: u32,
    maps: u64,
) -> Result<Vec<Bytes>, BoxError> {
    let app = crate::ids::AppId::parse(APP)?;
    (0..maps)
        .map(|map| {
            let dir = store.layout().map_dir(&app, shuffle, map);
            let name = crate::store::layout::MapFiles::new(shuffle, map).data;
            let file = std::fs::File::open(dir.join(name))?;
            // SAFETY: committed files are never written again while the bench runs.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Ok(Bytes::from_owner(map))
        })
        .collect()
}

/// The reference: the same bytes, written from the same maps in blocks of the same size to
/// plain TCP connections over loopback, read and dropped by the other side. Its connections
/// get the congestion control the daemon gives connections from this host.
async fn copy_tcp(
    files: &[Bytes],
    block: u64,
    streams: usize,
    congestion: Option<&str>,
) -> Result<Figure, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    if let Some(name) = congestion {
        crate::tcp::set_congestion_control(&listener, name)?;
    }
    let addr = listener.local_addr()?;
    let files = Arc::new(files.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let server = {
        let files = Arc::clone(&files);
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            let mut senders = Vec::new();
            for _ in 0..streams {
                let (mut sock, _) = listener.accept().await?;
                sock.set_nodelay(true)?;
                let files = Arc::clone(&files);
                let next = Arc::clone(&next);
                senders.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return sock.shutdown().await;
                        };
                        for piece in file.chunks(block as usize) {
                            sock.write_all(piece).await?;
                        }
                    }
                }));
            }
            for s in senders {
                s.await.map_err(std::io::Error::other)??;
            }
            Ok::<(), std::io::Error>(())
        })
    };
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..streams {
        let mut sock = TcpStream::connect(addr).await?;
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            loop {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<u64, std::io::Error>(bytes);
                }
                bytes += n as u64;
            }
        }));
    }
    let mut bytes = 0;
    for r in readers {
        bytes += r.await??;
    }
    let elapsed = started.elapsed();
    server.await??;
    Ok(Figure {
        path: "tcp",
        block,
        streams,
        bytes,
        elapsed,
    })
}

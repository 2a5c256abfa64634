//! Test harness: runs the real `kess` binary as a subprocess, as in production, and talks to it
//! over its gRPC and HTTP ports.
#![allow(dead_code)]

pub mod netns;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kess::proto::admin_service_client::AdminServiceClient;
use kess::proto::push_map_output_request::Item;
use kess::proto::shuffle_service_client::ShuffleServiceClient;
use kess::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

pub struct Daemon {
    pub child: Child,
    /// The Spark-protocol port (from `--spark-addr` in `extra`, or a fresh one).
    pub spark: SocketAddr,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts `kess daemon` on fresh ports with its data under `data_dir`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--spark-addr") {
            extra.push("--spark-addr".into());
            extra.push(free_addr().to_string());
        }
        Self::spawn(data_dir.to_path_buf(), free_addr(), free_addr(), extra).await
    }

    async fn spawn(
        data_dir: PathBuf,
        grpc: SocketAddr,
        http: SocketAddr,
        extra: Vec<String>,
    ) -> Daemon {
        let log = data_dir.with_extension(format!("log.{}", grpc.port()));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kess"))
            .arg("daemon")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .args(&extra)
            .env("KESS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn kess daemon");
        let spark = extra
            .iter()
            .position(|a| a == "--spark-addr")
            .and_then(|i| extra.get(i + 1))
            .and_then(|a| a.parse().ok())
            .expect("--spark-addr is always set");
        let mut d = Daemon {
            child,
            spark,
            grpc,
            http,
            data_dir,
            log,
            extra,
        };
        d.wait_ready().await;
        d
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok((200, _)) = http_get(self.http, "/readyz").await {
                return;
            }
            if Instant::now() > deadline {
                panic!("daemon not ready in time; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on the same ports and data dir.
    pub async fn restart(mut self) -> Daemon {
        self.kill9();
        Self::spawn(
            self.data_dir.clone(),
            self.grpc,
            self.http,
            self.extra.clone(),
        )
        .await
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn shuffle(&self) -> ShuffleServiceClient<Channel> {
        ShuffleServiceClient::connect(self.url())
            .await
            .expect("connect gRPC")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(self.url())
            .await
            .expect("connect gRPC")
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.http, "/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET, enough for /metrics and the probes.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: kess\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Reads one sample (`name{labels} value`) from a Prometheus text page; 0 when absent.
pub fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name_and_labels)
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// Deterministic partition contents for (map, partition), with varied sizes incl. empty.
pub fn partition_bytes(map: u64, partition: u32, size: usize) -> Vec<u8> {
    let mut x = (map.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(partition)).wrapping_add(1);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn header(
    app: &str,
    exec: &str,
    shuffle: u32,
    map: u64,
    attempt: u32,
    n: u32,
) -> PushMapOutputRequest {
    PushMapOutputRequest {
        item: Some(Item::Header(PushHeader {
            app_id: app.into(),
            executor_id: exec.into(),
            shuffle_id: shuffle,
            map_id: map,
            attempt,
            num_partitions: n,
        })),
    }
}

pub fn data(partition: u32, bytes: &[u8]) -> PushMapOutputRequest {
    PushMapOutputRequest {
        item: Some(Item::Data(PartitionData {
            partition,
            data: bytes.to_vec().into(),
        })),
    }
}

pub fn commit(lengths: Vec<u64>, crcs: Vec<u32>) -> PushMapOutputRequest {
    PushMapOutputRequest {
        item: Some(Item::Commit(PushCommit {
            partition_lengths: lengths,
            partition_crc32s: crcs,
        })),
    }
}

/// Pushes a whole map output (partitions split into 64 KiB messages) and commits it.
pub async fn push_output(
    client: &mut ShuffleServiceClient<Channel>,
    app: &str,
    exec: &str,
    shuffle: u32,
    map: u64,
    parts: &[Vec<u8>],
) -> Result<PushMapOutputResponse, tonic::Status> {
    let mut msgs = vec![header(app, exec, shuffle, map, 0, parts.len() as u32)];
    for (p, bytes) in parts.iter().enumerate() {
        for chunk in bytes.chunks(64 << 10) {
            msgs.push(data(p as u32, chunk));
        }
    }
    msgs.push(commit(
        parts.iter().map(|p| p.len() as u64).collect(),
        parts.iter().map(|p| crc32fast::hash(p)).collect(),
    ));
    client
        .push_map_output(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// A fetch of partitions [start, end) of one map output.
pub fn fetch_request(
    app: &str,
    shuffle: u32,
    map: u64,
    start: u32,
    end: u32,
) -> FetchBlocksRequest {
    FetchBlocksRequest {
        app_id: app.into(),
        blocks: vec![BlockRange {
            shuffle_id: shuffle,
            map_id: map,
            start_partition: start,
            end_partition: end,
        }],
        max_chunk_bytes: 0,
    }
}

/// Fetches partitions [start, end) of one output and reassembles them, checking every CRC.
pub async fn fetch_partitions(
    client: &mut ShuffleServiceClient<Channel>,
    app: &str,
    shuffle: u32,
    map: u64,
    start: u32,
    end: u32,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut stream = client
        .fetch_blocks(fetch_request(app, shuffle, map, start, end))
        .await?
        .into_inner();
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); (end - start) as usize];
    while let Some(chunk) = stream.message().await? {
        let part = &mut parts[(chunk.partition - start) as usize];
        assert_eq!(chunk.offset as usize, part.len(), "chunks arrive in order");
        part.extend_from_slice(&chunk.data);
        if chunk.last {
            assert_eq!(part.len() as u64, chunk.partition_length);
            assert_eq!(
                crc32fast::hash(part),
                chunk.partition_crc32,
                "CRC32 matches"
            );
        }
    }
    Ok(parts)
}

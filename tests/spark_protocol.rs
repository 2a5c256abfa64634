//! Spark's shuffle-service protocol against the real daemon, with the shuffle files captured
//! from a Spark 3.5.7 job (`shared/vectors/spark-3.5.7/shuffle-files`) and a client built on
//! kess's own codec.

mod common;

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use common::*;
use futures::{SinkExt, StreamExt};
use kess::spark::frame::{OutOfFrameBody, SparkFrame, SparkFrameCodec, StreamChunkId};
use kess::spark::message::*;
use kess::spark::rpc_payload::SaslMessage;
use kess::spark::sasl::{DigestMd5Client, SaslNonce};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const APP: &str = "app-20261121111108-0000";
/// Executor "0" ran maps 1 and 2, executor "1" maps 0 and 3 (see the vectors' README).
const EXEC0: &str =
    "executor-5f1ef70f-b8e2-4d77-86c3-d6ecbb4a7714/blockmgr-b1e183e8-b674-4c3d-b9ca-4faa2c3601fb";
const EXEC1: &str =
    "executor-153ac489-1369-4dc9-a036-702b80082bbb/blockmgr-c8feb201-cf77-48bb-a87d-397287e84b63";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/spark-3.5.7/shuffle-files")
}

/// Copies the captured executor dirs under `root` (an allowed root) and returns their paths.
fn install_files(root: &Path) -> (String, String) {
    let copy = |rel: &str| {
        let to = root.join(rel);
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(vectors().join(rel.split('/').next().unwrap()))
            .arg(root)
            .status()
            .unwrap();
        assert!(status.success());
        to.to_string_lossy().into_owned()
    };
    (copy(EXEC0), copy(EXEC1))
}

fn segment(dir: &str, sub: &str, name: &str, from: usize, to: usize) -> Vec<u8> {
    std::fs::read(Path::new(dir).join(sub).join(name)).unwrap()[from..to].to_vec()
}

struct Client {
    framed: Framed<TcpStream, SparkFrameCodec>,
    next_id: i64,
}

impl Client {
    async fn connect(daemon: &Daemon) -> Client {
        let s = TcpStream::connect(daemon.spark).await.unwrap();
        Client {
            framed: Framed::new(s, SparkFrameCodec::client(64 << 20)),
            next_id: 1,
        }
    }

    async fn send(&mut self, frame: SparkFrame) {
        self.framed.send(frame).await.unwrap();
    }

    async fn recv(&mut self) -> Option<SparkFrame> {
        self.framed.next().await.map(|r| r.unwrap())
    }

    async fn rpc_raw(&mut self, body: Bytes) -> Result<Bytes, String> {
        let request_id = self.next_id;
        self.next_id += 1;
        self.send(SparkFrame::RpcRequest { request_id, body }).await;
        match self.recv().await {
            Some(SparkFrame::RpcResponse {
                request_id: id,
                body,
            }) if id == request_id => Ok(body),
            Some(SparkFrame::RpcFailure {
                request_id: id,
                error,
            }) if id == request_id => Err(error),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn rpc(&mut self, m: BlockTransferMessage) -> Result<Bytes, String> {
        self.rpc_raw(m.to_bytes().unwrap()).await
    }

    async fn register(&mut self, exec: &str, dir: &str) -> Result<Bytes, String> {
        self.rpc(BlockTransferMessage::RegisterExecutor(RegisterExecutor {
            app_id: APP.into(),
            exec_id: exec.into(),
            executor_info: ExecutorShuffleInfo {
                local_dirs: vec![dir.into()],
                sub_dirs_per_local_dir: 64,
                shuffle_manager: "org.apache.spark.shuffle.sort.SortShuffleManager".into(),
            },
        }))
        .await
    }

    async fn open(&mut self, m: BlockTransferMessage) -> StreamHandle {
        let body = self.rpc(m).await.expect("stream handle");
        match BlockTransferMessage::decode(body).unwrap() {
            BlockTransferMessage::StreamHandle(h) => h,
            other => panic!("expected StreamHandle, got {other:?}"),
        }
    }

    /// Pipelines every ChunkFetchRequest, then reads the replies.
    async fn chunks(&mut self, h: StreamHandle) -> Vec<Result<Bytes, String>> {
        for i in 0..h.num_chunks {
            let id = StreamChunkId {
                stream_id: h.stream_id,
                chunk_index: i,
            };
            self.send(SparkFrame::ChunkFetchRequest {
                stream_chunk_id: id,
            })
            .await;
        }
        let mut out = Vec::new();
        for i in 0..h.num_chunks {
            match self.recv().await.unwrap() {
                SparkFrame::ChunkFetchSuccess {
                    stream_chunk_id,
                    body,
                } => {
                    assert_eq!(stream_chunk_id.chunk_index, i);
                    out.push(Ok(body));
                }
                SparkFrame::ChunkFetchFailure { error, .. } => out.push(Err(error)),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }
}

fn fetch(exec: &str, maps: Vec<i64>, reduces: Vec<Vec<i32>>, batch: bool) -> BlockTransferMessage {
    BlockTransferMessage::FetchShuffleBlocks(FetchShuffleBlocks {
        app_id: APP.into(),
        exec_id: exec.into(),
        shuffle_id: 0,
        map_ids: maps,
        reduce_ids: reduces,
        batch_fetch_enabled: batch,
    })
}

async fn start(root: &Path, extra: &[&str]) -> Daemon {
    let roots = root.to_string_lossy().into_owned();
    let mut args = vec!["--spark-allowed-roots", roots.as_str()];
    args.extend_from_slice(extra);
    Daemon::start(&root.join("kess-data"), &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_captured_shuffle_files_as_spark_expects() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir0, dir1) = install_files(tmp.path());
    let daemon = start(tmp.path(), &[]).await;

    // Registration uses its own short-lived connection, as Spark's does.
    let mut reg = Client::connect(&daemon).await;
    assert_eq!(
        reg.register("0", &dir0).await.unwrap().len(),
        0,
        "empty RpcResponse"
    );
    assert_eq!(reg.register("1", &dir1).await.unwrap().len(), 0);
    drop(reg);

    let mut c = Client::connect(&daemon).await;
    // Non-batch: map-major, one chunk per reduce id.
    let h = c
        .open(fetch("1", vec![0, 3], vec![vec![1, 2], vec![1, 2]], false))
        .await;
    assert_eq!(h.num_chunks, 4);
    let got: Vec<Bytes> = c.chunks(h).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got[0].as_ref(),
        segment(&dir1, "0c", "shuffle_0_0_0.data", 78, 158)
    );
    assert_eq!(
        got[1].as_ref(),
        segment(&dir1, "0c", "shuffle_0_0_0.data", 158, 229)
    );
    assert_eq!(
        got[3].as_ref(),
        segment(&dir1, "29", "shuffle_0_3_0.data", 158, 229)
    );
    // Batch: one contiguous chunk per map.
    let h = c.open(fetch("0", vec![2], vec![vec![1, 3]], true)).await;
    assert_eq!(h.num_chunks, 1);
    let got = c.chunks(h).await.remove(0).unwrap();
    assert_eq!(
        got.as_ref(),
        segment(&dir0, "36", "shuffle_0_2_0.data", 78, 229)
    );
    // OpenBlocks (old protocol).
    let h = c
        .open(BlockTransferMessage::OpenBlocks(OpenBlocks {
            app_id: APP.into(),
            exec_id: "0".into(),
            block_ids: vec!["shuffle_0_2_2".into(), "shuffle_0_1_0".into()],
        }))
        .await;
    let got: Vec<Bytes> = c.chunks(h).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(got[0].len(), 71);
    assert_eq!(
        got[0].as_ref(),
        segment(&dir0, "36", "shuffle_0_2_0.data", 158, 229)
    );
    assert_eq!(
        got[1].as_ref(),
        segment(&dir0, "15", "shuffle_0_1_0.data", 0, 78)
    );
    // StreamRequest (fetch to disk): answers come in request order with raw bodies.
    let h = c.open(fetch("1", vec![0], vec![vec![0, 2]], false)).await;
    for i in 0..2 {
        c.send(SparkFrame::StreamRequest {
            stream_id: format!("{}_{i}", h.stream_id),
        })
        .await;
    }
    for (i, (from, to)) in [(0, 78), (158, 229)].into_iter().enumerate() {
        match c.recv().await.unwrap() {
            SparkFrame::StreamResponse {
                stream_id,
                byte_count,
                body: OutOfFrameBody::Attached(b),
            } => {
                assert_eq!(stream_id, format!("{}_{i}", h.stream_id));
                assert_eq!(byte_count as usize, to - from);
                assert_eq!(
                    b.as_ref(),
                    segment(&dir1, "0c", "shuffle_0_0_0.data", from, to)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Host-local dirs.
    let body = c
        .rpc(BlockTransferMessage::GetLocalDirsForExecutors(
            GetLocalDirsForExecutors {
                app_id: APP.into(),
                exec_ids: vec!["1".into(), "0".into()],
            },
        ))
        .await
        .unwrap();
    let BlockTransferMessage::LocalDirsForExecutors(dirs) =
        BlockTransferMessage::decode(body).unwrap()
    else {
        panic!("expected LocalDirsForExecutors")
    };
    assert_eq!(dirs.all_local_dirs, vec![dir1.clone(), dir0.clone()]);

    // Corruption diagnosis, every cause.
    let diagnose = |checksum: i64, algorithm: &str| {
        BlockTransferMessage::DiagnoseCorruption(DiagnoseCorruption {
            app_id: APP.into(),
            exec_id: "0".into(),
            shuffle_id: 0,
            map_id: 2,
            reduce_id: 1,
            checksum,
            algorithm: algorithm.into(),
        })
    };
    let cause = |b: Bytes| match BlockTransferMessage::decode(b).unwrap() {
        BlockTransferMessage::CorruptionCause(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        cause(c.rpc(diagnose(3625521513, "ADLER32")).await.unwrap()),
        CorruptionCause::ChecksumVerifyPass
    );
    assert_eq!(
        cause(c.rpc(diagnose(1, "ADLER32")).await.unwrap()),
        CorruptionCause::NetworkIssue
    );
    assert_eq!(
        cause(c.rpc(diagnose(1, "CRC32")).await.unwrap()),
        CorruptionCause::UnknownIssue
    );
    assert_eq!(
        cause(c.rpc(diagnose(1, "MD5")).await.unwrap()),
        CorruptionCause::UnsupportedChecksumAlgorithm
    );
    let data = Path::new(&dir0).join("36/shuffle_0_2_0.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    // The mapped file changed in place; Spark's checksum file now disagrees with the disk.
    assert_eq!(
        cause(c.rpc(diagnose(3625521513, "ADLER32")).await.unwrap()),
        CorruptionCause::DiskIssue
    );

    // RemoveBlocks deletes the named files and counts what it deleted.
    let body = c
        .rpc(BlockTransferMessage::RemoveBlocks(RemoveBlocks {
            app_id: APP.into(),
            exec_id: "1".into(),
            block_ids: vec![
                "shuffle_0_3_0.index".into(),
                "shuffle_0_3_0.data".into(),
                "rdd_9_9".into(),
            ],
        }))
        .await
        .unwrap();
    assert_eq!(
        BlockTransferMessage::decode(body).unwrap(),
        BlockTransferMessage::BlocksRemoved(BlocksRemoved {
            num_removed_blocks: 2
        })
    );
    assert!(!Path::new(&dir1).join("29/shuffle_0_3_0.data").exists());

    let page = daemon.metrics().await;
    assert_eq!(
        metric(&page, "kess_bytes_served_total{protocol=\"spark\"}"), // non-batch 2×(80+71), batch 151, OpenBlocks 71+78, streams 78+71
        751.0
    );
    assert_eq!(metric(&page, "kess_spark_registrations_total"), 2.0);
    assert_eq!(metric(&page, "kess_spark_blocks_removed_total"), 2.0);
    assert_eq!(
        metric(
            &page,
            "kess_spark_corruption_diagnoses_total{cause=\"DISK_ISSUE\"}"
        ),
        1.0
    );
    assert_eq!(metric(&page, "kess_spark_open_streams"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_answered_the_way_spark_expects() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir0, _) = install_files(tmp.path());
    let daemon = start(tmp.path(), &[]).await;
    let mut c = Client::connect(&daemon).await;
    c.register("0", &dir0).await.unwrap();

    // Dirs outside the allowed roots, relative or with `..`: registration fails.
    for bad in [
        "/etc",
        "relative/dir",
        &format!("{}/../..", tmp.path().display()),
    ] {
        let err = c.register("9", bad).await.unwrap_err();
        assert!(err.contains("not under an allowed root"), "{err}");
    }
    // Unknown executor: the StreamHandle is given, the chunk fails naming the executor.
    let h = c.open(fetch("77", vec![1], vec![vec![0]], false)).await;
    let err = c.chunks(h).await.remove(0).unwrap_err();
    assert!(
        err.contains("Executor is not registered") && err.contains("execId=77"),
        "{err}"
    );
    // Missing files.
    let h = c.open(fetch("0", vec![5], vec![vec![0]], false)).await;
    let err = c.chunks(h).await.remove(0).unwrap_err();
    assert!(
        err.contains("shuffle_5_0") || err.contains("shuffle_0_5_0"),
        "{err}"
    );
    // Out-of-range reduce ids.
    let h = c.open(fetch("0", vec![1], vec![vec![3]], false)).await;
    assert!(c
        .chunks(h)
        .await
        .remove(0)
        .unwrap_err()
        .contains("out of range"));
    // Out-of-order chunks, and a closed stream.
    let h = c.open(fetch("0", vec![1], vec![vec![0, 1]], false)).await;
    c.send(SparkFrame::ChunkFetchRequest {
        stream_chunk_id: StreamChunkId {
            stream_id: h.stream_id,
            chunk_index: 1,
        },
    })
    .await;
    match c.recv().await.unwrap() {
        SparkFrame::ChunkFetchFailure { error, .. } => {
            assert!(error.contains("out-of-order"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    // Malformed requests give RpcFailure and keep the connection.
    let err = c
        .rpc(fetch("0", vec![1, 2], vec![vec![0]], false))
        .await
        .unwrap_err();
    assert!(err.contains("mapIds"), "{err}");
    let err = c
        .rpc(fetch("0", vec![1], vec![vec![0, 1, 2]], true))
        .await
        .unwrap_err();
    assert!(err.contains("batch"), "{err}");
    let err = c
        .rpc(BlockTransferMessage::OpenBlocks(OpenBlocks {
            app_id: APP.into(),
            exec_id: "0".into(),
            block_ids: vec!["shuffle_0_1_0_2".into()],
        }))
        .await
        .unwrap_err();
    assert!(
        err.contains("Unexpected") && err.contains("block id format"),
        "{err}"
    );
    let err = c
        .rpc_raw(Bytes::from_static(&[99, 1, 2]))
        .await
        .unwrap_err();
    assert!(err.contains("99"), "{err}");
    let err = c
        .rpc_raw(Bytes::from_static(&[9, 0, 0, 0, 50]))
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    // Push-based shuffle is refused so Spark falls back.
    let err = c
        .rpc(BlockTransferMessage::FinalizeShuffleMerge(
            FinalizeShuffleMerge {
                app_id: APP.into(),
                app_attempt_id: 0,
                shuffle_id: 0,
                shuffle_merge_id: 0,
            },
        ))
        .await
        .unwrap_err();
    assert!(err.contains("Cannot handle shuffle block merge"), "{err}");
    // The connection still works.
    let h = c.open(fetch("0", vec![1], vec![vec![0]], false)).await;
    assert!(c.chunks(h).await.remove(0).is_ok());

    // Hostile frames close that connection only.
    let frames: Vec<Vec<u8>> = vec![
        (-5i64).to_be_bytes().to_vec(),      // negative length
        (1i64 << 40).to_be_bytes().to_vec(), // huge length
        [21i64.to_be_bytes().to_vec(), vec![42; 13]].concat(), // unknown type 42
        [12i64.to_be_bytes().to_vec(), vec![3, 0, 0, 0]].concat(), // RpcRequest header cut short
    ];
    for bytes in frames {
        let mut s = TcpStream::connect(daemon.spark).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the daemon closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "no reply to a malformed frame, just a close");
    }
    // A frame cut short and abandoned.
    let mut s = TcpStream::connect(daemon.spark).await.unwrap();
    s.write_all(&100i64.to_be_bytes()).await.unwrap();
    s.write_all(&[3, 0, 0]).await.unwrap();
    drop(s);
    // Everyone else is still served.
    let h = c.open(fetch("0", vec![1], vec![vec![1]], false)).await;
    assert!(c.chunks(h).await.remove(0).is_ok());
    let page = daemon.metrics().await;
    assert!(
        metric(
            &page,
            "kess_errors_total{protocol=\"spark\",kind=\"malformed_frame\"}"
        ) >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir0, _) = install_files(tmp.path());
    let daemon = start(tmp.path(), &[]).await;
    Client::connect(&daemon)
        .await
        .register("0", &dir0)
        .await
        .unwrap();
    let daemon = daemon.restart().await;
    let mut c = Client::connect(&daemon).await;
    let h = c.open(fetch("0", vec![2], vec![vec![2]], false)).await;
    let got = c.chunks(h).await.remove(0).unwrap();
    assert_eq!(
        got.as_ref(),
        segment(&dir0, "36", "shuffle_0_2_0.data", 158, 229)
    );

    // Removing the application deletes its executors' dirs.
    let report = daemon
        .admin()
        .await
        .remove_application(kess::proto::RemoveApplicationRequest { app_id: APP.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.executors_removed, 1);
    assert!(!Path::new(&dir0).exists());
    let h = c.open(fetch("0", vec![2], vec![vec![2]], false)).await;
    assert!(c
        .chunks(h)
        .await
        .remove(0)
        .unwrap_err()
        .contains("not registered"));
}

async fn sasl_login(c: &mut Client, secret: &str) -> Result<(), String> {
    let sasl = |token: Vec<u8>| {
        let mut b = BytesMut::new();
        SaslMessage {
            app_id: APP.into(),
            token: token.into(),
        }
        .encode(&mut b)
        .unwrap();
        b.freeze()
    };
    let mut client = DigestMd5Client::new(secret, SaslNonce::random());
    let challenge = c.rpc_raw(sasl(client.initial_token())).await?;
    let response = client.respond(&challenge).map_err(|e| e.to_string())?;
    let rspauth = c.rpc_raw(sasl(response)).await?;
    client.verify_rspauth(&rspauth).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_authentication_guards_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir0, _) = install_files(tmp.path());
    let daemon = start(tmp.path(), &["--spark-auth-secret", "ess-test-secret"]).await;

    // No authentication: refused.
    let mut c = Client::connect(&daemon).await;
    let err = c.register("0", &dir0).await.unwrap_err();
    assert!(err.contains("Expected SaslMessage"), "{err}");

    // Wrong secret: refused, and nothing is served on that connection.
    let mut c = Client::connect(&daemon).await;
    assert!(sasl_login(&mut c, "wrong-secret").await.is_err());

    // Right secret: works; another application's blocks are refused.
    let mut c = Client::connect(&daemon).await;
    sasl_login(&mut c, "ess-test-secret").await.unwrap();
    c.register("0", &dir0).await.unwrap();
    let h = c.open(fetch("0", vec![2], vec![vec![0]], false)).await;
    assert!(c.chunks(h).await.remove(0).is_ok());
    let mut other = fetch("0", vec![2], vec![vec![0]], false);
    if let BlockTransferMessage::FetchShuffleBlocks(f) = &mut other {
        f.app_id = "app-other".into();
    }
    let err = c.rpc(other).await.unwrap_err();
    assert!(err.contains("not authorized"), "{err}");
    let page = daemon.metrics().await;
    assert!(
        metric(
            &page,
            "kess_errors_total{protocol=\"spark\",kind=\"auth_failed\"}"
        ) >= 1.0
    );
}

/// Writes map 0 of shuffle 0, with blocks of `sizes` bytes, into the executor local dir `dir` as
/// Spark lays it out; returns the local dirs to register and the data file's bytes.
fn write_map_output(dir: &Path, sizes: &[usize]) -> ([String; 1], Vec<u8>) {
    let data: Vec<u8> = (0..sizes.iter().sum::<usize>())
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut index = vec![0u8; 8];
    let mut at = 0u64;
    for s in sizes {
        at += *s as u64;
        index.extend_from_slice(&at.to_be_bytes());
    }
    let locals = [dir.to_string_lossy().into_owned()];
    for (name, bytes) in [
        ("shuffle_0_0_0.data", &data),
        ("shuffle_0_0_0.index", &index),
    ] {
        let path = kess::spark::hash::resolve_file(&locals, 64, name).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    (locals, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_not_in_the_page_cache_are_served_whole() {
    // On the build's disk, not a tmpfs: its pages can be evicted.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("blockmgr-cold");
    // Two bodies large enough for sendfile (the first larger than the socket's buffers, so it
    // leaves in several calls) around one small enough to be copied inline.
    let sizes = [8_000_000usize, 4_000, 300_000];
    let (locals, data) = write_map_output(&dir, &sizes);
    for name in ["shuffle_0_0_0.data", "shuffle_0_0_0.index"] {
        let path = kess::spark::hash::resolve_file(&locals, 64, name).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    }
    let data_path = kess::spark::hash::resolve_file(&locals, 64, "shuffle_0_0_0.data").unwrap();
    let cachestat =
        kess::store::page_cache::is_cached(&std::fs::File::open(&data_path).unwrap(), 0, 1);

    let daemon = start(tmp.path(), &[]).await;
    let mut c = Client::connect(&daemon).await;
    assert_eq!(c.register("0", &locals[0]).await.unwrap().len(), 0);
    let h = c
        .open(fetch("0", vec![0], vec![vec![0, 1, 2]], false))
        .await;
    assert_eq!(h.num_chunks, 3);
    let got: Vec<Bytes> = c.chunks(h).await.into_iter().map(Result::unwrap).collect();
    let mut from = 0;
    for (chunk, size) in got.iter().zip(sizes) {
        assert_eq!(chunk.as_ref(), &data[from..from + size], "block at {from}");
        from += size;
    }
    let uncached = metric(&daemon.metrics().await, "kess_spark_uncached_blocks_total");
    match cachestat {
        // Evicted: at least the first body had to come from the disk.
        Some(false) => assert!(uncached >= 1.0, "uncached blocks: {uncached}"),
        // The kernel cannot say (before 6.5): every block counts as cached.
        None => assert_eq!(uncached, 0.0),
        Some(true) => panic!("the data file was not evicted from the page cache"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_does_not_wait_for_the_rest_of_the_next_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir0, _) = install_files(tmp.path());
    let daemon = start(tmp.path(), &[]).await;
    let mut c = Client::connect(&daemon).await;
    assert_eq!(c.register("0", &dir0).await.unwrap().len(), 0);
    let h = c.open(fetch("0", vec![2], vec![vec![1, 2]], false)).await;
    assert_eq!(h.num_chunks, 2);

    // One write: the first chunk's request, then the first 10 bytes of the second's. Small
    // bodies are buffered, so the first reply must still be flushed while the second request
    // is incomplete.
    let request = |chunk_index| {
        let mut buf = BytesMut::new();
        SparkFrame::ChunkFetchRequest {
            stream_chunk_id: StreamChunkId {
                stream_id: h.stream_id,
                chunk_index,
            },
        }
        .encode(&mut buf)
        .unwrap();
        buf
    };
    let (first, second) = (request(0), request(1));
    let mut bytes = first.to_vec();
    bytes.extend_from_slice(&second[..10]);
    c.framed.get_mut().write_all(&bytes).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), c.recv())
        .await
        .expect("the first chunk was held back until the second request is whole");
    match reply {
        Some(SparkFrame::ChunkFetchSuccess {
            stream_chunk_id,
            body,
        }) => {
            assert_eq!(stream_chunk_id.chunk_index, 0);
            assert_eq!(
                body.as_ref(),
                segment(&dir0, "36", "shuffle_0_2_0.data", 78, 158)
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // The rest of the second request completes it.
    c.framed.get_mut().write_all(&second[10..]).await.unwrap();
    match c.recv().await {
        Some(SparkFrame::ChunkFetchSuccess {
            stream_chunk_id, ..
        }) => assert_eq!(stream_chunk_id.chunk_index, 1),
        other => panic!("unexpected {other:?}"),
    }
}

/// Large bodies pipelined on two connections at once, without pipes (a budget of 0) and with
/// one pipe for both: every byte arrives in order either way. Then the data file is cut short
/// under blocks just served: the connection closes without completing a frame.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_bodies_arrive_whole_with_or_without_a_pipe_and_a_cut_file_ends_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("blockmgr-pipes");
    // From just over the inline limit to larger than a pipe; together many pipes full.
    let sizes: Vec<usize> = (0..24)
        .map(|i| 17_000 + (i * 397_531) % 1_400_000)
        .collect();
    let (locals, data) = write_map_output(&dir, &sizes);
    let all = || fetch("0", vec![0], vec![(0..24).collect()], false);
    let mut last = None;
    for budget in ["0", "1MiB"] {
        // One daemon at a time on the data dir.
        drop(last.take());
        let daemon = start(tmp.path(), &["--spark-pipe-bytes", budget]).await;
        let mut c = Client::connect(&daemon).await;
        assert_eq!(c.register("0", &locals[0]).await.unwrap().len(), 0);
        let fetch_all = || async {
            let mut c = Client::connect(&daemon).await;
            let h = c.open(all()).await;
            c.chunks(h).await
        };
        let (a, b) = tokio::join!(fetch_all(), fetch_all());
        for got in [a, b] {
            assert_eq!(got.len(), sizes.len());
            let mut from = 0;
            for (chunk, size) in got.into_iter().zip(&sizes) {
                let chunk = chunk.unwrap();
                assert_eq!(
                    chunk.as_ref(),
                    &data[from..from + size],
                    "{budget}: block at {from}"
                );
                from += size;
            }
        }
        let page = daemon.metrics().await;
        let lent = metric(&page, "kess_spark_pipe_requests_total{outcome=\"lent\"}");
        let none_free = metric(
            &page,
            "kess_spark_pipe_requests_total{outcome=\"none_free\"}",
        );
        match budget {
            "0" => assert_eq!((lent, none_free >= 1.0), (0.0, true)),
            _ => assert!(lent >= 1.0, "{lent}"),
        }
        assert_eq!(
            metric(&page, "kess_spark_pipes_in_use"),
            0.0,
            "every pipe given back"
        );
        last = Some((daemon, c));
    }
    let (_daemon, mut c) = last.unwrap();

    // Cut the file inside the last block; the blocks before it are still whole on disk.
    let data_path = kess::spark::hash::resolve_file(&locals, 64, "shuffle_0_0_0.data").unwrap();
    let cut = data.len() - sizes[23] / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data_path)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let h = c.open(all()).await;
    for i in 0..h.num_chunks {
        c.send(SparkFrame::ChunkFetchRequest {
            stream_chunk_id: StreamChunkId {
                stream_id: h.stream_id,
                chunk_index: i,
            },
        })
        .await;
    }
    let mut whole = 0;
    loop {
        match c.framed.next().await {
            Some(Ok(SparkFrame::ChunkFetchSuccess { body, .. })) => {
                assert_eq!(body.len(), sizes[whole], "block {whole}");
                whole += 1;
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            // The connection closed, mid-frame or between frames.
            Some(Err(_)) | None => break,
        }
    }
    assert!(whole < 24, "the cut block was answered as whole");
}

//! The daemon as in production: the real binary, its gRPC API, its metrics, its crashes.

mod common;

use std::time::Duration;

use common::*;
use kess::proto::*;
use tonic::Code;

const APP: &str = "app-20261121-0001";

fn sizes() -> Vec<usize> {
    // Empty, tiny, chunk-sized and multi-chunk partitions.
    vec![0, 1, 300, 64 << 10, (1 << 20) + 17, 0, 5000, 3 << 20]
}

fn output(map: u64) -> Vec<Vec<u8>> {
    sizes()
        .into_iter()
        .enumerate()
        .map(|(p, size)| partition_bytes(map, p as u32, size))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_output_outlives_its_writer_and_is_served_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let expected = output(7);
    {
        // The writer registers, pushes, unregisters and disconnects.
        let mut writer = daemon.shuffle().await;
        writer
            .register_executor(RegisterExecutorRequest {
                app_id: APP.into(),
                executor_id: "1".into(),
            })
            .await
            .unwrap();
        let r = push_output(&mut writer, APP, "1", 0, 7, &expected)
            .await
            .unwrap();
        assert!(r.committed);
        assert_eq!(
            r.bytes,
            expected.iter().map(|p| p.len() as u64).sum::<u64>()
        );
        let was = writer
            .unregister_executor(UnregisterExecutorRequest {
                app_id: APP.into(),
                executor_id: "1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(was.was_registered);
    }
    let mut reader = daemon.shuffle().await;
    let got = fetch_partitions(&mut reader, APP, 0, 7, 0, expected.len() as u32)
        .await
        .unwrap();
    assert_eq!(got, expected);
    let sub = fetch_partitions(&mut reader, APP, 0, 7, 3, 5)
        .await
        .unwrap();
    assert_eq!(sub, expected[3..5].to_vec());

    // The state report shows the output under its (now unregistered) executor.
    let state = daemon
        .admin()
        .await
        .get_shuffle_state(GetShuffleStateRequest { app_id: APP.into() })
        .await
        .unwrap()
        .into_inner();
    let app = &state.applications[0];
    assert_eq!(app.committed_outputs, 1);
    assert_eq!(app.executors.len(), 1);
    assert!(!app.executors[0].registered);
    assert_eq!(app.executors[0].writes_in_flight, 0);
    assert_eq!(app.executors[0].fetches_in_flight, 0);

    // Bytes served equal the bytes the test fetched.
    let fetched: usize = got.iter().chain(sub.iter()).map(|p| p.len()).sum();
    let page = daemon.metrics().await;
    assert_eq!(
        metric(&page, "kess_bytes_served_total{protocol=\"grpc\"}"),
        fetched as f64
    );
    assert_eq!(
        metric(&page, "kess_blocks_served_total{protocol=\"grpc\"}"),
        (expected.len() + 2) as f64
    );
    assert_eq!(
        metric(&page, "kess_bytes_received_total{protocol=\"grpc\"}"),
        expected.iter().map(|p| p.len()).sum::<usize>() as f64
    );
    assert_eq!(metric(&page, "kess_stored_map_outputs"), 1.0);
    assert!(page.contains("kess_fetch_latency_seconds_bucket"));
    // Once its last gRPC stream ended, the daemon handed its freed heap back to the OS.
    wait_until(|| async { metric(&daemon.metrics().await, "kess_heap_trims_total") >= 1.0 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_push_and_between_pushes_keeps_exactly_the_committed_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let mut client = daemon.shuffle().await;
    client
        .register_executor(RegisterExecutorRequest {
            app_id: APP.into(),
            executor_id: "3".into(),
        })
        .await
        .unwrap();
    push_output(&mut client, APP, "3", 1, 1, &output(1))
        .await
        .unwrap();

    // Kill between pushes, restart, push again.
    daemon = daemon.restart().await;
    let mut client = daemon.shuffle().await;
    push_output(&mut client, APP, "3", 1, 2, &output(2))
        .await
        .unwrap();

    // Start a push that never commits, and kill the daemon while it is in flight.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut pusher = daemon.shuffle().await;
    let push = tokio::spawn(async move {
        pusher
            .push_map_output(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header(APP, "3", 1, 3, 0, 4)).await.unwrap();
    tx.send(data(0, &[9u8; 200_000])).await.unwrap();
    tx.send(data(1, &[8u8; 200_000])).await.unwrap();
    // Wait until the daemon has the write in flight.
    let admin = daemon.admin().await;
    wait_until(|| {
        let mut admin = admin.clone();
        async move {
            let s = admin
                .get_shuffle_state(GetShuffleStateRequest { app_id: APP.into() })
                .await
                .unwrap()
                .into_inner();
            s.applications[0]
                .executors
                .iter()
                .any(|e| e.writes_in_flight == 1)
        }
    })
    .await;
    daemon = daemon.restart().await;
    drop(tx);
    assert!(
        push.await.unwrap().is_err(),
        "the cut push must not succeed"
    );

    let mut client = daemon.shuffle().await;
    assert_eq!(
        fetch_partitions(&mut client, APP, 1, 1, 0, 8)
            .await
            .unwrap(),
        output(1)
    );
    assert_eq!(
        fetch_partitions(&mut client, APP, 1, 2, 0, 8)
            .await
            .unwrap(),
        output(2)
    );
    let err = fetch_partitions(&mut client, APP, 1, 3, 0, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    let state = daemon
        .admin()
        .await
        .get_shuffle_state(GetShuffleStateRequest { app_id: APP.into() })
        .await
        .unwrap()
        .into_inner();
    let app = &state.applications[0];
    assert_eq!(app.committed_outputs, 2);
    assert!(app.executors[0].registered, "registration survives kill -9");
    assert_eq!(app.executors[0].writes_in_flight, 0);

    let page = daemon.metrics().await;
    assert_eq!(metric(&page, "kess_recovered_map_outputs_total"), 2.0);
    assert_eq!(metric(&page, "kess_stored_map_outputs"), 2.0);
    assert_eq!(metric(&page, "kess_registered_executors"), 1.0);
    let tmp_entries = std::fs::read_dir(daemon.data_dir.join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_entries, 0, "the partial push was discarded at start");
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_on_disk_gives_data_loss_naming_the_block() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let mut client = daemon.shuffle().await;
    let parts = output(4);
    push_output(&mut client, APP, "1", 2, 4, &parts)
        .await
        .unwrap();
    let data_file = daemon
        .data_dir
        .join(format!("apps/{APP}/shuffle-2/map-4/shuffle_2_4_0.data"));
    let mut bytes = std::fs::read(&data_file).unwrap();
    // Partition 2 starts after partitions 0 (0 bytes) and 1 (1 byte).
    bytes[1 + 10] ^= 0x01;
    std::fs::write(&data_file, &bytes).unwrap();

    assert_eq!(
        fetch_partitions(&mut client, APP, 2, 4, 0, 2)
            .await
            .unwrap(),
        parts[0..2].to_vec(),
        "intact partitions are still served"
    );
    let err = fetch_partitions(&mut client, APP, 2, 4, 0, 8)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    let msg = err.message();
    assert!(
        msg.contains(APP)
            && msg.contains("shuffle 2")
            && msg.contains("map 4")
            && msg.contains("partition 2"),
        "{msg}"
    );
    let page = daemon.metrics().await;
    assert_eq!(
        metric(&page, "kess_checksum_failures_total{protocol=\"grpc\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_fetch_streams_are_all_correct() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let mut client = daemon.shuffle().await;
    let small = |map: u64| -> Vec<Vec<u8>> {
        (0..6u32)
            .map(|p| partition_bytes(map, p, 10_000 * (p as usize) + 3 * map as usize))
            .collect()
    };
    for map in 0..8u64 {
        push_output(&mut client, APP, "1", 0, map, &small(map))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        // Half the streams share one connection, half open their own.
        let mut c = if i % 2 == 0 {
            client.clone()
        } else {
            daemon.shuffle().await
        };
        let map = i % 8;
        let expected = small(map);
        tasks.push(tokio::spawn(async move {
            let got = fetch_partitions(&mut c, APP, 0, map, 0, 6).await.unwrap();
            assert_eq!(got, expected, "stream {i} map {map}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_exact_status() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let daemon = Daemon::start(&data_dir, &["--max-message-bytes", "1MiB"]).await;
    let mut client = daemon.shuffle().await;
    push_output(&mut client, APP, "1", 0, 1, &output(1)[..3])
        .await
        .unwrap();
    let fetch = fetch_request;

    // Unknown ids, then partition ranges out of bounds or empty.
    let mut c = client.clone();
    let cases = [
        (fetch("app-unknown", 0, 1, 0, 1), Code::NotFound),
        (fetch(APP, 9, 1, 0, 1), Code::NotFound),
        (fetch(APP, 0, 99, 0, 1), Code::NotFound),
        (fetch(APP, 0, 1, 0, 4), Code::InvalidArgument),
        (fetch(APP, 0, 1, 2, 2), Code::InvalidArgument),
        (fetch(APP, 0, 1, 3, 1), Code::InvalidArgument),
    ];
    for (request, expected) in cases {
        let what = format!("{request:?}");
        assert_eq!(code(c.fetch_blocks(request).await), expected, "{what}");
    }
    let no_blocks = FetchBlocksRequest {
        app_id: APP.into(),
        blocks: vec![],
        max_chunk_bytes: 0,
    };
    assert_eq!(code(c.fetch_blocks(no_blocks).await), Code::InvalidArgument);

    // Ids that could escape the data dir are refused before any file is touched.
    let long = "a".repeat(129);
    for bad in ["../escape", "/etc", "a/b", "a\0b", "..", long.as_str()] {
        let r = c
            .register_executor(RegisterExecutorRequest {
                app_id: bad.into(),
                executor_id: "1".into(),
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "app {bad:?}");
        let r = c
            .register_executor(RegisterExecutorRequest {
                app_id: APP.into(),
                executor_id: bad.into(),
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "executor {bad:?}");
        let r = push_output(&mut c, bad, "1", 0, 1, &[b"x".to_vec()]).await;
        assert_eq!(
            r.unwrap_err().code(),
            Code::InvalidArgument,
            "push app {bad:?}"
        );
        assert_eq!(
            code(c.fetch_blocks(fetch(bad, 0, 1, 0, 1)).await),
            Code::InvalidArgument
        );
        let r = daemon
            .admin()
            .await
            .remove_application(RemoveApplicationRequest { app_id: bad.into() })
            .await;
        assert_eq!(code(r), Code::InvalidArgument);
    }
    assert!(!tmp.path().join("escape").exists());
    let apps: Vec<String> = std::fs::read_dir(data_dir.join("apps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        apps,
        vec![APP.to_string()],
        "no directory was created for a bad id"
    );

    // Pushes with inconsistent sizes, out-of-range or out-of-order partitions.
    let push = |msgs: Vec<PushMapOutputRequest>| {
        let mut c = client.clone();
        async move {
            c.push_map_output(tokio_stream::iter(msgs))
                .await
                .map(|r| r.into_inner())
        }
    };
    let h = || header(APP, "1", 5, 1, 0, 2);
    let cases = vec![
        (
            "declared length differs",
            vec![h(), data(0, b"abc"), commit(vec![4, 0], vec![])],
        ),
        (
            "declared count differs",
            vec![h(), data(0, b"abc"), commit(vec![3], vec![])],
        ),
        (
            "partition out of range",
            vec![h(), data(2, b"abc"), commit(vec![], vec![])],
        ),
        (
            "partitions out of order",
            vec![h(), data(1, b"a"), data(0, b"b"), commit(vec![], vec![])],
        ),
        ("no header", vec![data(0, b"abc"), commit(vec![], vec![])]),
        ("two headers", vec![h(), h(), commit(vec![], vec![])]),
        ("no commit", vec![h(), data(0, b"abc")]),
        (
            "zero partitions",
            vec![header(APP, "1", 5, 1, 0, 0), commit(vec![], vec![])],
        ),
        (
            "absurd partition count",
            vec![header(APP, "1", 5, 1, 0, u32::MAX), commit(vec![], vec![])],
        ),
    ];
    for (what, msgs) in cases {
        let err = push(msgs).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
    }
    let err = push(vec![h(), data(0, b"abc"), commit(vec![], vec![1, 2])])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "declared CRC32 differs: {err}");
    assert!(
        !data_dir.join(format!("apps/{APP}/shuffle-5")).exists(),
        "nothing was committed"
    );

    // A message over the size bound.
    let err = push(vec![
        h(),
        data(0, &vec![0u8; 2 << 20]),
        commit(vec![], vec![]),
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert_eq!(std::fs::read_dir(data_dir.join("tmp")).unwrap().count(), 0);

    // Errors are counted by kind.
    let page = daemon.metrics().await;
    assert!(
        metric(
            &page,
            "kess_errors_total{protocol=\"grpc\",kind=\"not_found\"}"
        ) >= 3.0
    );
    assert!(
        metric(
            &page,
            "kess_errors_total{protocol=\"grpc\",kind=\"invalid_id\"}"
        ) >= 6.0
    );
    // The daemon is still healthy and serving.
    assert_eq!(
        fetch_partitions(&mut client, APP, 0, 1, 0, 3)
            .await
            .unwrap(),
        output(1)[..3].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_is_resource_exhausted_leaves_nothing_and_reads_go_on() {
    // A real ENOSPC: the data dir is a 4 MiB tmpfs (needs root, as CI has).
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data_dir)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test mounts a tmpfs and must run as root"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data_dir.clone());

    let daemon = Daemon::start(&data_dir, &["--min-free-bytes", "0"]).await;
    let mut client = daemon.shuffle().await;
    let small = vec![
        partition_bytes(1, 0, 100_000),
        partition_bytes(1, 1, 50_000),
    ];
    push_output(&mut client, APP, "1", 0, 1, &small)
        .await
        .unwrap();

    let big = vec![
        partition_bytes(2, 0, 3 << 20),
        partition_bytes(2, 1, 3 << 20),
    ];
    let err = push_output(&mut client, APP, "1", 0, 2, &big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("disk full"), "{err}");
    assert_eq!(
        std::fs::read_dir(data_dir.join("tmp")).unwrap().count(),
        0,
        "nothing partial left"
    );
    assert!(!data_dir
        .join(format!("apps/{APP}/shuffle-0/map-2"))
        .exists());
    assert_eq!(
        fetch_partitions(&mut client, APP, 0, 1, 0, 2)
            .await
            .unwrap(),
        small
    );
    // Space came back with the partial push; a push that fits works again.
    push_output(&mut client, APP, "1", 0, 3, &small)
        .await
        .unwrap();
    let page = daemon.metrics().await;
    assert!(
        metric(
            &page,
            "kess_errors_total{protocol=\"grpc\",kind=\"disk_full\"}"
        ) >= 1.0
    );

    // With a free-space reserve the push is refused up front, also RESOURCE_EXHAUSTED.
    drop(daemon);
    let daemon = Daemon::start(&data_dir, &["--min-free-bytes", "1GiB"]).await;
    let mut client = daemon.shuffle().await;
    let err = push_output(&mut client, APP, "1", 0, 4, &small)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(
        fetch_partitions(&mut client, APP, 0, 1, 0, 2)
            .await
            .unwrap(),
        small
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_application_frees_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let mut client = daemon.shuffle().await;
    client
        .register_executor(RegisterExecutorRequest {
            app_id: APP.into(),
            executor_id: "1".into(),
        })
        .await
        .unwrap();
    push_output(&mut client, APP, "1", 0, 1, &output(1))
        .await
        .unwrap();
    push_output(&mut client, "other-app", "1", 0, 1, &output(1))
        .await
        .unwrap();
    let mut admin = daemon.admin().await;
    let before = admin
        .get_shuffle_state(GetShuffleStateRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.applications.len(), 2);
    let per_app = before.applications[0].bytes_stored;
    let report = admin
        .remove_application(RemoveApplicationRequest { app_id: APP.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.bytes_freed, per_app);
    assert_eq!(report.outputs_removed, 1);
    assert_eq!(report.executors_removed, 1);
    assert!(!daemon.data_dir.join(format!("apps/{APP}")).exists());
    let err = fetch_partitions(&mut client, APP, 0, 1, 0, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        fetch_partitions(&mut client, "other-app", 0, 1, 0, 8)
            .await
            .unwrap(),
        output(1)
    );
    let err = admin
        .get_shuffle_state(GetShuffleStateRequest { app_id: APP.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let page = daemon.metrics().await;
    assert_eq!(metric(&page, "kess_bytes_freed_total"), per_app as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&tmp.path().join("data"), &["--grace-period", "10s"]).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut pusher = daemon.shuffle().await;
    let push = tokio::spawn(async move {
        pusher
            .push_map_output(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header(APP, "1", 0, 1, 0, 2)).await.unwrap();
    tx.send(data(0, b"before the signal")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.sigterm();
    // Readiness drops while draining.
    let mut saw_not_ready = false;
    for _ in 0..40 {
        match http_get(daemon.http, "/readyz").await {
            Ok((503, _)) => {
                saw_not_ready = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(_) => break,
        }
    }
    // The in-flight push may finish.
    tx.send(data(1, b"after the signal")).await.unwrap();
    tx.send(commit(vec![17, 16], vec![])).await.unwrap();
    drop(tx);
    let r = push
        .await
        .unwrap()
        .expect("in-flight push completes during drain")
        .into_inner();
    assert!(r.committed);
    let status = tokio::task::spawn_blocking(move || daemon.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(saw_not_ready, "/readyz must report 503 while draining");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let channel = tonic::transport::Channel::from_shared(daemon.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "kess.v1.ShuffleService", "kess.v1.AdminService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "kess.v1.ShuffleService",
        "kess.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let (status, body) = http_get(daemon.http, "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_corrupt_near_its_end_streams_but_never_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let mut client = daemon.shuffle().await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    push_output(
        &mut client,
        APP,
        "1",
        3,
        0,
        &[big.clone(), b"next".to_vec()],
    )
    .await
    .unwrap();
    // Intact, the partition arrives whole in 64 KiB chunks.
    let mut request = fetch_request(APP, 3, 0, 0, 2);
    request.max_chunk_bytes = 64 << 10;
    let mut stream = client.fetch_blocks(request).await.unwrap().into_inner();
    let (mut whole, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        if chunk.partition == 0 {
            assert_eq!(chunk.offset as usize, whole.len());
            whole.extend_from_slice(&chunk.data);
            chunks += 1;
            assert_eq!(chunk.last, whole.len() == big.len());
        }
    }
    assert_eq!((whole == big, chunks), (true, 5));

    let data_file = daemon
        .data_dir
        .join(format!("apps/{APP}/shuffle-3/map-0/shuffle_3_0_0.data"));
    let mut bytes = std::fs::read(&data_file).unwrap();
    bytes[290_000] ^= 0x80;
    std::fs::write(&data_file, &bytes).unwrap();

    let mut request = fetch_request(APP, 3, 0, 0, 2);
    request.max_chunk_bytes = 64 << 10;
    let mut stream = client.fetch_blocks(request).await.unwrap().into_inner();
    let mut received = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                assert!(!chunk.last, "a corrupt partition's final chunk was sent");
                assert_eq!(chunk.offset as usize, received.len());
                received.extend_from_slice(&chunk.data);
            }
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), Code::DataLoss);
    assert!(err.message().contains("partition 0"), "{}", err.message());
    // What did arrive are the intact leading chunks, byte for byte.
    assert!(received.len() < big.len());
    assert_eq!(received[..], big[..received.len()]);
    let page = daemon.metrics().await;
    assert_eq!(
        metric(&page, "kess_checksum_failures_total{protocol=\"grpc\"}"),
        1.0
    );
    // Served counts what left: the intact fetch, then the corrupt one's intact prefix.
    assert_eq!(
        metric(&page, "kess_bytes_served_total{protocol=\"grpc\"}"),
        (big.len() + 4 + received.len()) as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_from_this_host_do_not_pace_and_a_bad_algorithm_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let node_default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap()
        .trim()
        .to_string();
    let daemon = Daemon::start(&tmp.path().join("data"), &[]).await;
    let spark = tokio::net::TcpStream::connect(daemon.spark).await.unwrap();
    let grpc = tokio::net::TcpStream::connect(daemon.grpc).await.unwrap();
    let counted = |page: &str, listener: &str| {
        metric(
            page,
            &format!("kess_tcp_connections_total{{listener=\"{listener}\",peers=\"local\",via=\"loopback\"}}"),
        )
    };
    wait_until(|| async {
        let page = daemon.metrics().await;
        counted(&page, "spark") >= 1.0 && counted(&page, "grpc") >= 1.0
    })
    .await;
    drop((spark, grpc));
    let page = daemon.metrics().await;
    for listener in ["spark", "grpc"] {
        for (peers, algorithm) in [("local", "reno"), ("remote", node_default.as_str())] {
            let series = format!(
                "kess_tcp_congestion_control_info{{listener=\"{listener}\",peers=\"{peers}\",algorithm=\"{algorithm}\"}}"
            );
            assert_eq!(metric(&page, &series), 1.0, "{series} in:\n{page}");
        }
    }
    assert!(daemon
        .log_text()
        .contains("TCP congestion control for connections from this node and from others"));

    for flag in ["--tcp-congestion", "--local-tcp-congestion"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kess"))
            .arg("daemon")
            .arg("--data-dir")
            .arg(tmp.path().join("other"))
            .args([flag, "no-such-cc"])
            .args(["--spark-addr", &free_addr().to_string()])
            .args(["--grpc-addr", &free_addr().to_string()])
            .args(["--http-addr", &free_addr().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("\"no-such-cc\" is not available"),
            "{flag}: stderr: {stderr}"
        );
    }
}

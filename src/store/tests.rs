//! Store invariants: what is committed is served byte-identical, nothing partial is ever
//! visible, the first commit wins, and a restart brings back exactly what was committed.

use std::sync::Arc;

use super::*;
use crate::error::StoreError;

fn app() -> AppId {
    AppId::parse("app-1").unwrap()
}

fn exec(id: &str) -> ExecutorId {
    ExecutorId::parse(id).unwrap()
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(StoreConfig::new(dir)).unwrap()
}

fn request(map: u64, attempt: u32, num_partitions: u32) -> PushRequest {
    PushRequest {
        app: app(),
        executor: exec("1"),
        shuffle: 0,
        map,
        attempt,
        num_partitions,
    }
}

fn partitions() -> Vec<Vec<u8>> {
    vec![
        b"alpha".to_vec(),
        Vec::new(),
        vec![7u8; 100_000],
        b"omega".to_vec(),
    ]
}

fn push(store: &Arc<Store>, map: u64, attempt: u32, parts: &[Vec<u8>]) -> CommitOutcome {
    let mut pending = store
        .begin_push(request(map, attempt, parts.len() as u32))
        .unwrap();
    for (p, bytes) in parts.iter().enumerate() {
        // Split each partition in two messages, as a streaming client would.
        let mid = bytes.len() / 2;
        pending.write(p as u32, &bytes[..mid]).unwrap();
        pending.write(p as u32, &bytes[mid..]).unwrap();
    }
    pending.commit(&[], &[]).unwrap()
}

/// Reads `chunk` into `buf` (which then reuses its allocation once the returned bytes are
/// dropped), checked as [`OpenBlock::read_into`] does.
fn read_chunk(
    block: &OpenBlock,
    chunk: &read::ChunkRange,
    check: &mut PartitionCheck,
    buf: &mut bytes::BytesMut,
) -> Result<bytes::Bytes, StoreError> {
    buf.clear();
    buf.reserve(chunk.len);
    block.read_into(chunk, buf.spare_capacity_mut(), check)?;
    // SAFETY: read_into initialised the first `chunk.len` spare bytes.
    unsafe { buf.set_len(chunk.len) };
    Ok(buf.split().freeze())
}

/// A whole partition in one chunk, checked against its CRC32.
fn read_partition(block: &OpenBlock, partition: u32) -> Result<bytes::Bytes, StoreError> {
    let mut cursor = block.cursor(partition)?;
    let len = cursor.len() as usize;
    let chunk = cursor.next_chunk(len).expect("a new cursor has a chunk");
    read_chunk(
        block,
        &chunk,
        &mut PartitionCheck::default(),
        &mut bytes::BytesMut::new(),
    )
}

fn data_file(store: &Arc<Store>, map: u64) -> std::path::PathBuf {
    store
        .layout()
        .map_dir(&app(), 0, map)
        .join(format!("shuffle_0_{map}_0.data"))
}

/// Changes one stored byte in place (same file, as a disk fault would).
fn flip_byte(store: &Arc<Store>, map: u64, at: usize, mask: u8) {
    let path = data_file(store, map);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(&path, &bytes).unwrap();
}

fn read_all(store: &Arc<Store>, map: u64, n: u32) -> Vec<Vec<u8>> {
    let block = store.open_block(&app(), 0, map, 0, n).unwrap();
    block
        .partitions()
        .map(|p| read_partition(&block, p).unwrap().to_vec())
        .collect()
}

#[test]
fn committed_output_is_served_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let parts = partitions();
    let outcome = push(&store, 5, 0, &parts);
    assert!(outcome.committed);
    assert_eq!(outcome.partition_lengths, vec![5, 0, 100_000, 5]);
    assert_eq!(outcome.partition_crc32s[0], crc32fast::hash(b"alpha"));
    assert_eq!(read_all(&store, 5, 4), parts);
    let block = store.open_block(&app(), 0, 5, 2, 3).unwrap();
    assert_eq!(read_partition(&block, 2).unwrap().len(), 100_000);
    assert!(matches!(
        read_partition(&block, 1),
        Err(StoreError::PartitionOutOfRange { .. })
    ));
}

#[test]
fn files_use_sparks_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    push(&store, 5, 0, &partitions());
    let dir = store.layout().map_dir(&app(), 0, 5);
    let index = std::fs::read(dir.join("shuffle_0_5_0.index")).unwrap();
    let parsed = index::ShuffleIndex::parse(&index).unwrap();
    assert_eq!(parsed.range(0, 4), Some((0, 100_010)));
    let sums =
        index::parse_checksums(&std::fs::read(dir.join("shuffle_0_5_0.checksum.CRC32")).unwrap())
            .unwrap();
    assert_eq!(sums[3], u64::from(crc32fast::hash(b"omega")));
}

#[test]
fn out_of_order_and_out_of_range_partitions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut p = store.begin_push(request(1, 0, 3)).unwrap();
    p.write(1, b"x").unwrap();
    assert!(matches!(
        p.write(0, b"y"),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(matches!(
        p.write(3, b"y"),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(matches!(
        p.commit(&[0, 2, 0], &[]),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(matches!(
        store.begin_push(request(1, 0, 0)),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(matches!(
        store.begin_push(request(1, 0, MAX_PARTITIONS + 1)),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(
        store.open_block(&app(), 0, 1, 0, 1).is_err(),
        "nothing was committed"
    );
    assert_eq!(
        std::fs::read_dir(store.layout().tmp_dir()).unwrap().count(),
        0
    );
}

#[test]
fn declared_checksums_are_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut p = store.begin_push(request(1, 0, 1)).unwrap();
    p.write(0, b"abc").unwrap();
    let err = p.commit(&[3], &[0xdead_beef]).unwrap_err();
    assert!(
        matches!(err, StoreError::PushChecksumMismatch { partition: 0, .. }),
        "{err}"
    );
}

#[test]
fn abandoned_push_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut p = store.begin_push(request(9, 0, 2)).unwrap();
    p.write(0, &[1u8; 4096]).unwrap();
    let snap = store.snapshot(Some(&app())).unwrap();
    assert_eq!(snap[0].executors[0].writes_in_flight, 1);
    drop(p);
    assert!(matches!(
        store.open_block(&app(), 0, 9, 0, 1),
        Err(StoreError::UnknownApp { .. })
    ));
    assert_eq!(
        std::fs::read_dir(store.layout().tmp_dir()).unwrap().count(),
        0
    );
}

#[test]
fn first_commit_wins_and_is_never_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let winner = vec![b"first".to_vec()];
    // Two attempts race: both begin before either commits.
    let mut a = store.begin_push(request(3, 0, 1)).unwrap();
    let mut b = store.begin_push(request(3, 1, 1)).unwrap();
    a.write(0, &winner[0]).unwrap();
    b.write(0, b"second attempt, different bytes").unwrap();
    assert!(a.commit(&[], &[]).unwrap().committed);
    let lost = b.commit(&[], &[]).unwrap();
    assert!(!lost.committed);
    assert_eq!(lost.committed_attempt, 0);
    assert_eq!(lost.partition_lengths, vec![5]);
    // A later re-push is also answered with the winner, and its bytes are dropped.
    let again = push(&store, 3, 2, &[b"third".to_vec()]);
    assert!(!again.committed);
    assert_eq!(again.committed_attempt, 0);
    assert_eq!(read_all(&store, 3, 1), winner);
}

#[test]
fn restart_recovers_committed_outputs_and_registrations_only() {
    let tmp = tempfile::tempdir().unwrap();
    let parts = partitions();
    {
        let store = open(tmp.path());
        store.register_executor(&app(), &exec("1")).unwrap();
        store.register_executor(&app(), &exec("2")).unwrap();
        store.unregister_executor(&app(), &exec("2")).unwrap();
        push(&store, 1, 0, &parts);
        let mut partial = store.begin_push(request(2, 0, 4)).unwrap();
        partial.write(0, b"never committed").unwrap();
        // Simulate a crash: the pending push is never dropped.
        std::mem::forget(partial);
    }
    let store = open(tmp.path());
    assert_eq!(read_all(&store, 1, 4), parts);
    assert!(matches!(
        store.open_block(&app(), 0, 2, 0, 1),
        Err(StoreError::UnknownMapOutput { .. })
    ));
    let snap = store.snapshot(None).unwrap();
    assert_eq!(snap.len(), 1);
    let execs: Vec<(&str, bool)> = snap[0]
        .executors
        .iter()
        .map(|e| (e.executor_id.as_str(), e.registered))
        .collect();
    assert_eq!(execs, vec![("1", true)]);
    assert_eq!(snap[0].committed_outputs, 1);
    assert_eq!(
        std::fs::read_dir(store.layout().tmp_dir()).unwrap().count(),
        0
    );
}

#[test]
fn restart_discards_outputs_whose_files_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        push(&store, 1, 0, &partitions());
        push(&store, 2, 0, &partitions());
        let dir = store.layout().map_dir(&app(), 0, 2);
        let data = dir.join("shuffle_0_2_0.data");
        let f = std::fs::OpenOptions::new().write(true).open(data).unwrap();
        f.set_len(10).unwrap();
    }
    let store = open(tmp.path());
    assert!(store.open_block(&app(), 0, 1, 0, 4).is_ok());
    assert!(matches!(
        store.open_block(&app(), 0, 2, 0, 4),
        Err(StoreError::UnknownMapOutput { .. })
    ));
    assert!(!store.layout().map_dir(&app(), 0, 2).exists());
}

#[test]
fn flipped_byte_is_detected_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    push(&store, 1, 0, &partitions());
    flip_byte(&store, 1, 6, 0xff); // inside partition 2 (partition 0 is 5 bytes, 1 is empty)
    let block = store.open_block(&app(), 0, 1, 0, 4).unwrap();
    assert!(read_partition(&block, 0).is_ok());
    match read_partition(&block, 2) {
        Err(StoreError::Corrupt { key, partition, .. }) => {
            assert_eq!(
                (key.app.as_str(), key.shuffle, key.map, partition),
                ("app-1", 0, 1, 2)
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn remove_app_frees_everything_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.register_executor(&app(), &exec("1")).unwrap();
    push(&store, 1, 0, &partitions());
    push(&store, 2, 0, &partitions());
    let stored = store.bytes_stored();
    assert_eq!(stored, 2 * (100_010 + 5 * 8 + 4 * 8));
    // A reader holding a block keeps its bytes valid across the removal.
    let held = store.open_block(&app(), 0, 1, 0, 4).unwrap();
    let report = store.remove_app(&app()).unwrap();
    assert_eq!(report.bytes_freed, stored);
    assert_eq!(report.outputs_removed, 2);
    assert_eq!(report.executors_removed, 1);
    assert_eq!(read_partition(&held, 0).unwrap().as_ref(), b"alpha");
    drop(held);
    assert!(!store.layout().app_dir(&app()).exists());
    assert!(store.snapshot(None).unwrap().is_empty());
    assert_eq!(store.remove_app(&app()).unwrap(), RemovalReport::default());
    let reopened = open(tmp.path());
    assert!(reopened.snapshot(None).unwrap().is_empty());
}

#[test]
fn push_across_removal_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut p = store.begin_push(request(1, 0, 1)).unwrap();
    p.write(0, b"late").unwrap();
    store.remove_app(&app()).unwrap();
    assert!(matches!(
        p.commit(&[], &[]),
        Err(StoreError::InvalidPush { .. })
    ));
    assert!(!store.layout().app_dir(&app()).exists());
}

#[test]
fn free_space_reserve_refuses_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(tmp.path());
    config.min_free_bytes = u64::MAX;
    let store = Store::open(config).unwrap();
    assert!(matches!(
        store.begin_push(request(1, 0, 1)),
        Err(StoreError::BelowFreeSpaceReserve { .. })
    ));
}

#[test]
fn a_partition_read_in_chunks_is_whole_and_reuses_nothing_still_held() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let parts = vec![(0..250_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()];
    push(&store, 1, 0, &parts);
    let block = store.open_block(&app(), 0, 1, 0, 1).unwrap();
    let mut cursor = block.cursor(0).unwrap();
    let (mut check, mut buf) = (PartitionCheck::default(), bytes::BytesMut::new());
    // Every chunk is kept while the next is read into the same buffer.
    let mut chunks = Vec::new();
    while let Some(range) = cursor.next_chunk(64 << 10) {
        chunks.push(read_chunk(&block, &range, &mut check, &mut buf).unwrap());
    }
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks.concat(), parts[0]);
    assert!(cursor.is_finished());
}

#[test]
fn a_corrupt_partition_read_in_chunks_never_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    push(&store, 1, 0, &partitions());
    flip_byte(&store, 1, 5 + 99_000, 0x01); // in the last chunk of partition 2 (100,000 bytes)
    let block = store.open_block(&app(), 0, 1, 0, 4).unwrap();
    let mut cursor = block.cursor(2).unwrap();
    let (mut check, mut buf) = (PartitionCheck::default(), bytes::BytesMut::new());
    let ranges: Vec<_> = std::iter::from_fn(|| cursor.next_chunk(30_000)).collect();
    assert_eq!(ranges.len(), 4);
    for range in &ranges[..3] {
        // Earlier chunks stream out; the partition is only judged when it completes.
        assert!(!range.completes);
        read_chunk(&block, range, &mut check, &mut buf).unwrap();
    }
    match read_chunk(&block, &ranges[3], &mut check, &mut buf) {
        Err(StoreError::Corrupt { partition: 2, .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_data_file_cut_short_after_opening_is_a_clear_error_not_short_data() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    push(&store, 1, 0, &partitions());
    let block = store.open_block(&app(), 0, 1, 0, 4).unwrap();
    let path = data_file(&store, 1);
    // Same file, shorter: partition 2 (100,000 bytes from offset 5) now ends early.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(50_000)
        .unwrap();
    assert!(read_partition(&block, 0).is_ok());
    match read_partition(&block, 2) {
        Err(StoreError::DamagedFiles { key, reason, .. }) => {
            assert_eq!(
                (key.map, reason.contains("partition 2")),
                (1, true),
                "{reason}"
            );
        }
        other => panic!("expected DamagedFiles, got {other:?}"),
    }
}

#[test]
fn an_executor_entry_goes_when_it_is_idle_and_not_before() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let executors = |store: &Arc<Store>| -> Vec<(String, bool, u32)> {
        store
            .snapshot(None)
            .unwrap()
            .iter()
            .flat_map(|a| a.executors.iter())
            .map(|e| (e.executor_id.clone(), e.registered, e.fetches_in_flight))
            .collect()
    };
    store.register_executor(&app(), &exec("1")).unwrap();
    store.track(&app(), &exec("2"), 0, 1);
    store.track(&app(), &exec("3"), 0, 1);
    store.track(&app(), &exec("3"), 0, 1);
    // A registered executor stays when another's fetch ends; a busy one stays until its last.
    store.track(&app(), &exec("2"), 0, -1);
    store.track(&app(), &exec("3"), 0, -1);
    assert_eq!(
        executors(&store),
        vec![("1".into(), true, 0), ("3".into(), false, 1)]
    );
    store.track(&app(), &exec("3"), 0, -1);
    store.track(&app(), &exec("1"), 0, 1);
    store.unregister_executor(&app(), &exec("1")).unwrap();
    assert_eq!(executors(&store), vec![("1".into(), false, 1)]);
    // Nothing left of the application once its last executor is idle and it stores nothing.
    store.track(&app(), &exec("1"), 0, -1);
    assert!(store.snapshot(None).unwrap().is_empty());
}

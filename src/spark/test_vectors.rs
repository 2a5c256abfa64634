//! Tests against the frames captured from Spark 3.5.7 (`shared/vectors`).
//!
//! The location of the vectors is defined once, in [`vectors_dir`]; the
//! other modules' tests use it too.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

use super::error::FrameError;
use super::frame::{OutOfFrameBody, SparkFrame, SparkFrameCodec, CHUNK_FETCH_SUCCESS_HEADER_LEN};
use super::message::BlockTransferMessage;
use super::rpc_payload::RpcPayload;

/// The captured Spark 3.5.7 vectors: `$KESS_VECTORS_DIR` if set, else the
/// copy in the shared folder next to this crate.
pub(crate) fn vectors_dir() -> PathBuf {
    match std::env::var_os("KESS_VECTORS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors/spark-3.5.7"
        )),
    }
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_dir().join("manifest.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Array(entries) => entries,
        other => panic!("manifest is not an array: {other}"),
    }
}

fn read_vector(file: &str) -> Vec<u8> {
    std::fs::read(vectors_dir().join(file)).unwrap()
}

/// A codec able to decode everything in the vectors: Spark's frame limit and
/// StreamResponse bodies collected.
fn client_codec() -> SparkFrameCodec {
    SparkFrameCodec::client(1 << 20)
}

fn encode(frame: &SparkFrame) -> BytesMut {
    let mut dst = BytesMut::new();
    frame.encode(&mut dst).unwrap();
    dst
}

/// A decoded BlockTransferMessage in the manifest's JSON vocabulary.
fn btm_json(message: &BlockTransferMessage) -> Value {
    use BlockTransferMessage as M;
    match message {
        M::OpenBlocks(m) => {
            json!({"appId": m.app_id, "execId": m.exec_id, "blockIds": m.block_ids})
        }
        M::RegisterExecutor(m) => json!({
            "appId": m.app_id,
            "execId": m.exec_id,
            "localDirs": m.executor_info.local_dirs,
            "subDirsPerLocalDir": m.executor_info.sub_dirs_per_local_dir,
            "shuffleManager": m.executor_info.shuffle_manager,
        }),
        M::StreamHandle(m) => json!({"streamId": m.stream_id, "numChunks": m.num_chunks}),
        M::RemoveBlocks(m) => {
            json!({"appId": m.app_id, "execId": m.exec_id, "blockIds": m.block_ids})
        }
        M::BlocksRemoved(m) => json!({"numRemovedBlocks": m.num_removed_blocks}),
        M::FetchShuffleBlocks(m) => json!({
            "appId": m.app_id,
            "execId": m.exec_id,
            "shuffleId": m.shuffle_id,
            "mapIds": m.map_ids,
            "reduceIds": m.reduce_ids,
            "batchFetchEnabled": m.batch_fetch_enabled,
        }),
        M::GetLocalDirsForExecutors(m) => json!({"appId": m.app_id, "execIds": m.exec_ids}),
        M::LocalDirsForExecutors(m) => json!({
            "execIds": m.exec_ids,
            "numLocalDirsByExec": m.num_local_dirs_by_exec,
            "allLocalDirs": m.all_local_dirs,
        }),
        M::FetchShuffleBlockChunks(m) => json!({
            "appId": m.app_id,
            "execId": m.exec_id,
            "shuffleId": m.shuffle_id,
            "shuffleMergeId": m.shuffle_merge_id,
            "reduceIds": m.reduce_ids,
            "chunkIds": m.chunk_ids,
        }),
        M::DiagnoseCorruption(m) => json!({
            "appId": m.app_id,
            "execId": m.exec_id,
            "shuffleId": m.shuffle_id,
            "mapId": m.map_id,
            "reduceId": m.reduce_id,
            "checksum": m.checksum,
            "algorithm": m.algorithm,
        }),
        M::CorruptionCause(cause) => json!({"cause": cause.ordinal()}),
        M::RemoveShuffleMerge(m) => json!({
            "appId": m.app_id,
            "appAttemptId": m.app_attempt_id,
            "shuffleId": m.shuffle_id,
            "shuffleMergeId": m.shuffle_merge_id,
        }),
        other => panic!("no manifest vocabulary for {:?}", other.message_type()),
    }
}

/// Checks an RPC body against the manifest's `decoded_body`: decodes it,
/// compares the fields, and re-encodes it byte-identically.
fn check_rpc_body(file: &str, body: &Bytes, expected: &Value) {
    let hex_body = hex::encode(body);
    if expected["sasl"] == json!(true) {
        let RpcPayload::Sasl(msg) = RpcPayload::decode(body.clone()).unwrap() else {
            panic!("{file}: not a SaslMessage");
        };
        assert_eq!(json!(msg.app_id), expected["appId"], "{file}");
        assert_eq!(json!(msg.token.len()), expected["tokenLen"], "{file}");
        assert_eq!(
            json!(String::from_utf8_lossy(&msg.token)),
            expected["token"]
        );
        assert_eq!(&msg.to_bytes().unwrap(), body, "{file}: re-encode");
        return;
    }
    if expected["authEngine"] == json!(true) {
        let RpcPayload::Auth(msg) = RpcPayload::decode(body.clone()).unwrap() else {
            panic!("{file}: not an AuthMessage");
        };
        assert_eq!(json!(msg.app_id), expected["appId"], "{file}");
        assert_eq!(json!(hex::encode(&msg.salt)), expected["salt"], "{file}");
        assert_eq!(
            json!(hex::encode(&msg.ciphertext)),
            expected["ciphertext"],
            "{file}"
        );
        assert_eq!(&msg.to_bytes().unwrap(), body, "{file}: re-encode");
        return;
    }
    match &expected["btm"] {
        // Empty RpcResponse (RegisterExecutor acknowledgement).
        Value::Null => assert!(body.is_empty(), "{file}"),
        // Raw SASL tokens in RpcResponse bodies are not BlockTransferMessages.
        Value::String(name) if name == "unknown" => {
            assert_eq!(json!(hex_body), expected["raw"], "{file}");
            assert!(body.starts_with(b"realm=") || body.starts_with(b"rspauth="));
        }
        Value::String(name) => {
            let message = BlockTransferMessage::decode(body.clone()).unwrap();
            assert_eq!(message.message_type().name(), name, "{file}");
            assert_eq!(json!(message.message_type().id()), expected["btm_type"]);
            if let Some(raw) = expected.get("raw") {
                assert_eq!(&json!(hex_body), raw, "{file}");
            } else {
                assert_eq!(expected["trailing_bytes"], json!(0), "{file}");
                let ours = btm_json(&message);
                let Value::Object(fields) = expected else {
                    panic!("{file}: decoded_body is not an object");
                };
                for (key, value) in fields {
                    if ["btm", "btm_type", "trailing_bytes"].contains(&key.as_str()) {
                        continue;
                    }
                    assert_eq!(&ours[key], value, "{file}: field {key}");
                }
            }
            assert_eq!(&message.to_bytes().unwrap(), body, "{file}: re-encode");
        }
        other => panic!("{file}: unexpected btm {other}"),
    }
}

/// Checks the frame-level facts of a manifest entry.
fn check_frame_fields(file: &str, frame: &SparkFrame, entry: &Value) {
    assert_eq!(
        frame.message_type().name(),
        entry["message_type"].as_str().unwrap(),
        "{file}"
    );
    match frame {
        SparkFrame::ChunkFetchRequest { stream_chunk_id }
        | SparkFrame::ChunkFetchSuccess {
            stream_chunk_id, ..
        }
        | SparkFrame::ChunkFetchFailure {
            stream_chunk_id, ..
        } => {
            assert_eq!(
                json!(stream_chunk_id.stream_id),
                entry["streamId"],
                "{file}"
            );
            assert_eq!(
                json!(stream_chunk_id.chunk_index),
                entry["chunkIndex"],
                "{file}"
            );
        }
        SparkFrame::RpcRequest { request_id, .. }
        | SparkFrame::RpcResponse { request_id, .. }
        | SparkFrame::RpcFailure { request_id, .. }
        | SparkFrame::MergedBlockMetaRequest { request_id, .. } => {
            assert_eq!(json!(request_id), entry["requestId"], "{file}")
        }
        SparkFrame::StreamRequest { stream_id }
        | SparkFrame::StreamResponse { stream_id, .. }
        | SparkFrame::StreamFailure { stream_id, .. } => {
            assert_eq!(json!(stream_id), entry["streamId"], "{file}")
        }
        other => panic!("{file}: no vector expected for {other:?}"),
    }
    if let SparkFrame::RpcFailure { error, .. }
    | SparkFrame::ChunkFetchFailure { error, .. }
    | SparkFrame::StreamFailure { error, .. } = frame
    {
        assert!(error.starts_with("java."), "{file}: {error:.80}");
    }
}

/// Every `.bin` in the vectors folder and `probe/` is listed in the manifest.
#[test]
fn manifest_lists_every_vector_file() {
    let mut on_disk = Vec::new();
    for sub in ["", "probe/"] {
        for entry in std::fs::read_dir(vectors_dir().join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".bin") {
                on_disk.push(format!("{sub}{name}"));
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = manifest()
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    assert_eq!(listed.len(), 48);
}

/// Each complete vector decodes to exactly one frame whose fields match the
/// manifest, and re-encodes to the identical bytes (for `stream_response.bin`
/// including the appended out-of-frame body).
#[test]
fn every_complete_vector_round_trips() {
    let mut checked = 0;
    for entry in manifest() {
        if entry["truncated"] == json!(true) {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let bytes = read_vector(file);
        assert_eq!(json!(bytes.len()), entry["file_len"], "{file}");
        assert_eq!(
            json!(i64::from_be_bytes(bytes[..8].try_into().unwrap())),
            entry["frame_length_field"],
            "{file}"
        );
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = client_codec();
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "{file}: {} bytes left", buf.len());
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        check_frame_fields(file, &frame, &entry);
        assert_eq!(&encode(&frame)[..], &bytes[..], "{file}: re-encode");

        let real_body_len = entry["real_body_len"].as_u64().unwrap() as usize;
        let in_frame_body_len = match &frame {
            SparkFrame::RpcRequest { body, .. }
            | SparkFrame::RpcResponse { body, .. }
            | SparkFrame::ChunkFetchSuccess { body, .. } => body.len(),
            _ => 0,
        };
        assert_eq!(
            json!(entry["frame_length_field"].as_u64().unwrap() as usize - in_frame_body_len),
            entry["header_len"],
            "{file}: header length"
        );
        match &frame {
            SparkFrame::RpcRequest { body, .. } | SparkFrame::RpcResponse { body, .. } => {
                assert_eq!(body.len(), real_body_len, "{file}");
                check_rpc_body(file, body, &entry["decoded_body"]);
            }
            SparkFrame::ChunkFetchSuccess { body, .. } => {
                assert_eq!(body.len(), real_body_len, "{file}");
                assert!(body.starts_with(b"LZ4Block"), "{file}");
            }
            SparkFrame::StreamResponse {
                byte_count, body, ..
            } => {
                assert_eq!(json!(byte_count), entry["byteCount"], "{file}");
                let OutOfFrameBody::Attached(body) = body else {
                    panic!("{file}: body not collected");
                };
                assert_eq!(body.len(), real_body_len, "{file}");
                assert!(body.starts_with(b"LZ4Block"), "{file}");
            }
            _ => assert_eq!(real_body_len, 0, "{file}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 46);
}

/// The two ChunkFetchSuccess vectors whose bodies were cut to 256 bytes: the
/// file holds the frame header (whose length field names the real size) and
/// the first 256 body bytes. A decoder must therefore wait for more bytes;
/// completing the frame with filler bytes shows the header decodes to the
/// manifest's ids and the real body length, and re-encoding reproduces the
/// file's bytes as the prefix.
#[test]
fn truncated_chunk_vectors_decode_once_completed() {
    let mut checked = 0;
    for entry in manifest() {
        if entry["truncated"] != json!(true) {
            continue;
        }
        let file = entry["file"].as_str().unwrap();
        let bytes = read_vector(file);
        let frame_length = entry["frame_length_field"].as_u64().unwrap() as usize;
        let real_body_len = entry["real_body_len"].as_u64().unwrap() as usize;
        assert_eq!(frame_length, CHUNK_FETCH_SUCCESS_HEADER_LEN + real_body_len);
        assert_eq!(bytes.len(), CHUNK_FETCH_SUCCESS_HEADER_LEN + 256, "{file}");

        let mut partial = BytesMut::from(&bytes[..]);
        let mut codec = client_codec();
        assert!(codec.decode(&mut partial).unwrap().is_none(), "{file}");
        assert!(partial.capacity() >= frame_length, "{file}: no reservation");
        assert!(matches!(
            codec.decode_eof(&mut partial),
            Err(FrameError::TruncatedAtEof { .. })
        ));

        let mut completed = BytesMut::from(&bytes[..]);
        completed.resize(frame_length, 0);
        let frame = client_codec().decode(&mut completed).unwrap().unwrap();
        check_frame_fields(file, &frame, &entry);
        let SparkFrame::ChunkFetchSuccess { body, .. } = &frame else {
            panic!("{file}: not ChunkFetchSuccess");
        };
        assert_eq!(body.len(), real_body_len, "{file}");
        assert_eq!(
            &body[..256],
            &bytes[CHUNK_FETCH_SUCCESS_HEADER_LEN..],
            "{file}"
        );
        assert_eq!(&encode(&frame)[..bytes.len()], &bytes[..], "{file}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// Explicit field checks on a few messages, readable without the manifest.
#[test]
fn selected_vectors_have_expected_fields() {
    let body = |file: &str| -> Bytes {
        let mut buf = BytesMut::from(&read_vector(file)[..]);
        match client_codec().decode(&mut buf).unwrap().unwrap() {
            SparkFrame::RpcRequest { body, .. } | SparkFrame::RpcResponse { body, .. } => body,
            other => panic!("{other:?}"),
        }
    };
    let BlockTransferMessage::FetchShuffleBlocks(fetch) =
        BlockTransferMessage::decode(body("fetch_shuffle_blocks_batch_request.bin")).unwrap()
    else {
        panic!("not FetchShuffleBlocks");
    };
    assert_eq!(fetch.app_id, "app-20261121111228-0000");
    assert_eq!(fetch.map_ids, vec![0, 2, 3, 5]);
    assert_eq!(fetch.reduce_ids, vec![vec![0, 50]; 4]);
    assert!(fetch.batch_fetch_enabled);

    let BlockTransferMessage::FetchShuffleBlockChunks(chunks) =
        BlockTransferMessage::decode(body("probe/fetch_shuffle_block_chunks_request.bin")).unwrap()
    else {
        panic!("not FetchShuffleBlockChunks");
    };
    assert_eq!(chunks.app_id, "app-probe-0001");
    assert_eq!(chunks.exec_id, "0");
    assert_eq!((chunks.shuffle_id, chunks.shuffle_merge_id), (0, 0));
    assert_eq!(chunks.reduce_ids, vec![0]);
    assert_eq!(chunks.chunk_ids, vec![vec![0]]);

    let BlockTransferMessage::RegisterExecutor(register) =
        BlockTransferMessage::decode(body("register_executor_request_two_local_dirs.bin")).unwrap()
    else {
        panic!("not RegisterExecutor");
    };
    assert_eq!(register.executor_info.local_dirs.len(), 2);
    assert_eq!(register.executor_info.sub_dirs_per_local_dir, 64);

    let mut buf = BytesMut::from(&read_vector("probe/merged_block_meta_request.bin")[..]);
    assert_eq!(
        client_codec().decode(&mut buf).unwrap().unwrap(),
        SparkFrame::MergedBlockMetaRequest {
            request_id: 4242,
            app_id: "app-probe-0001".into(),
            shuffle_id: 0,
            shuffle_merge_id: 0,
            reduce_id: 0,
        }
    );
}

/// What decoding one captured TCP stream produced.
struct StreamDecode {
    frames: Vec<SparkFrame>,
    error: Option<FrameError>,
    consumed: usize,
}

/// Feeds a captured stream to `codec` in pieces of varying size (1 byte up
/// to a few KiB) to exercise partial frames, and stops at the first error.
fn decode_stream(bytes: &[u8], mut codec: SparkFrameCodec) -> StreamDecode {
    let piece_sizes = [1usize, 7, 64, 4096, 3, 1500];
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut fed = 0;
    let mut i = 0;
    loop {
        let eof = fed == bytes.len();
        if !eof {
            let end = (fed + piece_sizes[i % piece_sizes.len()]).min(bytes.len());
            buf.extend_from_slice(&bytes[fed..end]);
            fed = end;
            i += 1;
        }
        loop {
            let before = buf.len();
            let result = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match result {
                Ok(Some(frame)) => {
                    offset += before - buf.len();
                    frames.push(frame);
                }
                Ok(None) => {
                    offset += before - buf.len();
                    break;
                }
                Err(error) => {
                    return StreamDecode {
                        frames,
                        error: Some(error),
                        consumed: offset,
                    }
                }
            }
        }
        if eof {
            return StreamDecode {
                frames,
                error: None,
                consumed: offset,
            };
        }
    }
}

/// Every captured connection of every run, in both directions, decodes
/// frame by frame when fed in odd-sized pieces, and the re-encoded frames
/// reproduce the stream byte for byte. Every RPC body that is a
/// BlockTransferMessage / SaslMessage / AuthMessage also re-encodes exactly.
///
/// Known exceptions: after the AuthEngine handshake of `auth-aes-server`
/// the streams are AES-CTR encrypted (only the first frame is plaintext), and
/// the probe client ends its connection with a frame of unknown type 42.
#[test]
fn captured_streams_decode_and_reencode() {
    let captures = vectors_dir().join("captures");
    let mut runs: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 13);
    let (mut total_frames, mut total_bodies, mut undecodable_bodies) = (0, 0, 0);
    for run in &runs {
        let mut streams: Vec<_> = std::fs::read_dir(captures.join(run).join("streams"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        streams.sort();
        for path in streams {
            let name = format!("{run}/{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            let client_to_server = name.ends_with("_c2s.bin");
            let codec = if client_to_server {
                // What a kess server would use.
                SparkFrameCodec::new()
            } else {
                client_codec()
            };
            let decoded = decode_stream(&bytes, codec);
            match (run.as_str(), &decoded.error) {
                (_, None) => assert_eq!(decoded.consumed, bytes.len(), "{name}"),
                ("auth-aes-server", Some(_)) => assert_eq!(decoded.frames.len(), 1, "{name}"),
                ("probes", Some(FrameError::UnknownMessageType { type_id: 42, .. })) => {
                    assert!(client_to_server);
                    assert_eq!(decoded.consumed + 9, bytes.len(), "{name}");
                }
                (_, Some(error)) => panic!("{name}: {error} after {} bytes", decoded.consumed),
            }
            let mut reencoded = BytesMut::new();
            for frame in &decoded.frames {
                let mut frame = frame.clone();
                // Client-to-server streams were decoded with the server codec,
                // which does not keep out-of-frame bodies; none occur there.
                if let SparkFrame::UploadStream { .. } = frame {
                    panic!("{name}: unexpected UploadStream");
                }
                frame.encode(&mut reencoded).unwrap();
                let body = match &mut frame {
                    SparkFrame::RpcRequest { body, .. }
                    | SparkFrame::RpcResponse { body, .. }
                    | SparkFrame::OneWayMessage { body } => body.clone(),
                    _ => continue,
                };
                if body.starts_with(b"realm=") || body.starts_with(b"rspauth=") || body.is_empty() {
                    continue;
                }
                total_bodies += 1;
                match RpcPayload::decode(body.clone()) {
                    Ok(payload) => {
                        assert_eq!(payload.to_bytes().unwrap(), body, "{name}: body re-encode")
                    }
                    // Deliberately malformed probe requests: unknown type 99
                    // and a truncated OpenBlocks.
                    Err(_) if run.starts_with("probes") => undecodable_bodies += 1,
                    Err(error) => panic!("{name}: {error}"),
                }
            }
            assert_eq!(
                &reencoded[..],
                &bytes[..decoded.consumed],
                "{name}: stream re-encode"
            );
            total_frames += decoded.frames.len();
        }
    }
    eprintln!(
        "streams: {total_frames} frames, {total_bodies} bodies, {undecodable_bodies} undecodable"
    );
    assert_eq!(undecodable_bodies, 2);
    assert!(total_frames > 700, "{total_frames}");
    assert!(total_bodies > 100, "{total_bodies}");
}

/// Small deterministic generator for the robustness test (no extra dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Feeds bytes to every decoder of the crate; any panic fails the test.
fn decode_everything(bytes: &[u8]) {
    use super::block_id::{BlockId, OpenBlocksPlan};
    use super::roaring::portable_serialized_len;
    use super::sasl::{DigestMd5Client, DigestMd5Server, SaslNonce};

    let mut buf = BytesMut::from(bytes);
    let mut codec = client_codec();
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
    let mut buf = BytesMut::from(bytes);
    let mut codec = SparkFrameCodec::new();
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let body = Bytes::copy_from_slice(bytes);
    if let Ok(RpcPayload::BlockTransfer(BlockTransferMessage::OpenBlocks(open))) =
        RpcPayload::decode(body.clone())
    {
        let _ = OpenBlocksPlan::from_block_ids(&open.block_ids);
    }
    let _ = BlockTransferMessage::decode(body);
    let _ = portable_serialized_len(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = BlockId::parse(&text);
    let _ = OpenBlocksPlan::from_block_ids(&[text.as_ref()]);
    let mut server = DigestMd5Server::new("s", SaslNonce::from_string("n"));
    let _ = server.challenge();
    let _ = server.respond(bytes);
    let mut client = DigestMd5Client::new("s", SaslNonce::from_string("c"));
    let _ = client.respond(bytes);
    let _ = client.verify_rspauth(bytes);
}

/// No input makes any decoder panic: every vector truncated at every length,
/// with random byte flips, and random garbage.
#[test]
fn mutated_vectors_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for entry in manifest() {
        let original = read_vector(entry["file"].as_str().unwrap());
        let original = &original[..original.len().min(600)];
        for len in 0..=original.len() {
            decode_everything(&original[..len]);
        }
        for _ in 0..200 {
            let mut mutated = original.to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(mutated.len());
                mutated[at] ^= 1 << rng.below(8);
            }
            decode_everything(&mutated);
            // The same bytes seen as a bare RPC body (skipping the 21-byte header).
            decode_everything(&mutated[mutated.len().min(21)..]);
        }
    }
    for _ in 0..2000 {
        let garbage: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        decode_everything(&garbage);
    }
}

//! The benchmark's reader of kess's gRPC path: `FetchBlocks` over a bare HTTP/2 connection,
//! with chunk data dropped where it lands in the connection's read buffer. A tonic client copies
//! every message into its decode buffer before handing it out; the Spark client and the sendfile
//! reference's reader copy each byte once (out of the socket), so this reader does the same,
//! and the figures are the server's. Only each message's head (its length and the fields before
//! the data) is looked at, to count the data bytes.

use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use prost::Message;

use crate::daemon::BoxError;
use crate::proto::FetchBlocksRequest;

const FETCH_BLOCKS: &str = "/kess.v1.ShuffleService/FetchBlocks";

/// `FetchedChunk.data` is field 4, length-delimited.
const DATA_KEY: u64 = (4 << 3) | 2;

/// One HTTP/2 connection; clones share it, each request is a stream of its own.
#[derive(Clone)]
pub struct GrpcReader {
    requests: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
}

impl GrpcReader {
    /// Connects with the windows and frame size a bulk fetch wants (as `connect_all` does for
    /// tonic).
    pub async fn connect(addr: SocketAddr) -> Result<Self, BoxError> {
        let socket = super::dial::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (requests, connection) = h2::client::Builder::new()
            .initial_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(socket)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "bench gRPC connection ended");
            }
        });
        Ok(Self {
            requests,
            uri: format!("http://{addr}{FETCH_BLOCKS}").parse()?,
        })
    }

    /// Runs one `FetchBlocks` to its end and returns how many data bytes it carried. A stream
    /// that does not end with grpc-status 0 is an error naming the status and message.
    pub async fn fetch_blocks(&self, request: &FetchBlocksRequest) -> Result<u64, BoxError> {
        let mut body = Vec::with_capacity(5 + request.encoded_len());
        body.push(0);
        body.extend_from_slice(&(request.encoded_len() as u32).to_be_bytes());
        request.encode(&mut body)?;
        let head = http::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let mut requests = self.requests.clone().ready().await?;
        let (response, mut send) = requests.send_request(head, false)?;
        send.send_data(Bytes::from(body), true)?;
        let response = response.await?;
        grpc_status(response.headers())?;
        let mut data = response.into_body();
        let mut messages = MessageCounter::default();
        while let Some(frame) = data.data().await {
            let frame = frame?;
            data.flow_control().release_capacity(frame.len())?;
            messages.feed(frame)?;
        }
        let trailers = data
            .trailers()
            .await?
            .ok_or("FetchBlocks ended without trailers")?;
        if !grpc_status(&trailers)? {
            return Err("FetchBlocks trailers carry no grpc-status".into());
        }
        messages.finish()
    }
}

/// Checks a header block's grpc-status: `Ok(true)` for 0, `Ok(false)` when absent.
fn grpc_status(headers: &http::HeaderMap) -> Result<bool, BoxError> {
    match headers.get("grpc-status").map(|v| v.to_str()) {
        None => Ok(false),
        Some(Ok("0")) => Ok(true),
        Some(status) => {
            let message = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Err(format!("FetchBlocks failed: grpc-status {status:?}: {message}").into())
        }
    }
}

/// Walks gRPC messages as they arrive in frames: reads each 5-byte prefix and enough of each
/// message to find its data field's length, and skips the rest without copying it.
#[derive(Default)]
struct MessageCounter {
    /// The start of the current message (prefix, then head) not yet understood.
    head: Vec<u8>,
    /// Bytes of the current message still to skip once its data length is known.
    skip: usize,
    data_bytes: u64,
}

impl MessageCounter {
    /// Enough of a message to reach its data field's length: fields 1–3 (varints, ≤ 22 bytes)
    /// then the data key and its length.
    const HEAD: usize = 40;

    fn feed(&mut self, mut frame: Bytes) -> Result<(), BoxError> {
        while frame.has_remaining() {
            if self.skip > 0 {
                let n = self.skip.min(frame.len());
                frame.advance(n);
                self.skip -= n;
                continue;
            }
            let want = self.wanted();
            let n = (want - self.head.len()).min(frame.len());
            self.head.extend_from_slice(&frame[..n]);
            frame.advance(n);
            if self.head.len() == want {
                self.understand_head()?;
            }
        }
        Ok(())
    }

    /// How many bytes of the current message `head` should hold before it is parsed.
    fn wanted(&self) -> usize {
        match self.message_len() {
            None => 5,
            Some(len) => 5 + len.min(Self::HEAD),
        }
    }

    fn message_len(&self) -> Option<usize> {
        let prefix: [u8; 5] = self.head.get(..5)?.try_into().ok()?;
        Some(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize)
    }

    fn understand_head(&mut self) -> Result<(), BoxError> {
        let Some(len) = self.message_len() else {
            return Ok(());
        };
        if self.head.len() < 5 + len.min(Self::HEAD) {
            return Ok(());
        }
        if self.head[0] != 0 {
            return Err("compressed gRPC message; the bench asks for none".into());
        }
        let mut fields = &self.head[5..];
        let data = loop {
            if !fields.has_remaining() {
                break 0;
            }
            let key = prost::encoding::decode_varint(&mut fields)?;
            match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut fields)?;
                }
                2 => {
                    let field_len = prost::encoding::decode_varint(&mut fields)?;
                    if key == DATA_KEY {
                        break field_len;
                    }
                    return Err(format!("unexpected field {} before the data", key >> 3).into());
                }
                wire => return Err(format!("unexpected wire type {wire}").into()),
            }
        };
        self.data_bytes += data;
        self.skip = len - (self.head.len() - 5);
        self.head.clear();
        Ok(())
    }

    fn finish(self) -> Result<u64, BoxError> {
        if !self.head.is_empty() || self.skip > 0 {
            return Err("FetchBlocks ended inside a message".into());
        }
        Ok(self.data_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::ChunkFields as FetchedChunk;

    fn framed(chunk: &FetchedChunk) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(chunk.encoded_len() as u32).to_be_bytes());
        chunk.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn counts_data_bytes_however_the_messages_are_cut_into_frames() {
        let chunks: Vec<FetchedChunk> = [0usize, 1, 300, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| FetchedChunk {
                block_index: i as u32 * 1000,
                partition: u32::MAX,
                offset: u64::MAX,
                data: vec![7; n].into(),
                partition_length: 123_456_789,
                partition_crc32: 42,
                last: i % 2 == 0,
            })
            .collect();
        let stream: Vec<u8> = chunks.iter().flat_map(framed).collect();
        for cut in [1, 2, 5, 17, 41, 4096, stream.len()] {
            let mut counter = MessageCounter::default();
            for piece in stream.chunks(cut) {
                counter.feed(Bytes::copy_from_slice(piece)).unwrap();
            }
            assert_eq!(counter.finish().unwrap(), 70_301, "frames of {cut} bytes");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_message_is_an_error() {
        let chunk = FetchedChunk {
            data: vec![1; 100].into(),
            ..Default::default()
        };
        let stream = framed(&chunk);
        let mut counter = MessageCounter::default();
        counter
            .feed(Bytes::copy_from_slice(&stream[..stream.len() - 1]))
            .unwrap();
        assert!(counter.finish().is_err());
    }
}

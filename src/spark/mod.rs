//! Spark's external shuffle service protocol (port 7337): the wire layer (pure, I/O-free
//! encoding and decoding of every frame and message), the per-connection handler, and the
//! listener.

pub mod block_id;
pub mod body_pipe;
pub mod connection;
pub mod error;
pub mod frame;
pub mod hash;
pub mod message;
pub mod primitives;
pub mod roaring;
pub mod rpc_payload;
pub mod sasl;
pub mod server;

#[cfg(test)]
mod test_vectors;

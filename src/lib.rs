//! kess: a Kubernetes external shuffle service. See README.md for the picture.

pub mod bench;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod spark;
pub mod store;
pub mod tcp;

pub mod proto {
    //! The generated `kess.v1` gRPC types, clients and servers.
    tonic::include_proto!("kess.v1");
    pub use crate::grpc::{ChunkFields, FetchedChunk};
    /// Encoded descriptors of `kess.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kess_descriptor");
}

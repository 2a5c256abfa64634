//! `kess bench`: fetch throughput over loopback gRPC against a raw-TCP reference.

use clap::Args;

use crate::daemon::BoxError;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> Result<(), BoxError> {
    Err("not yet".into())
}

//! One mapping from store errors to gRPC statuses, with the log line and the error metric, so
//! every handler reports failures the same way.

use tonic::{Code, Status};

use crate::error::StoreError;
use crate::metrics;

/// Converts a store error into the status the client gets, logging and counting it.
pub fn to_status(err: StoreError) -> Status {
    let code = match &err {
        StoreError::InvalidId(_)
        | StoreError::PartitionOutOfRange { .. }
        | StoreError::InvalidPush { .. } => Code::InvalidArgument,
        StoreError::UnknownApp { .. } | StoreError::UnknownMapOutput { .. } => Code::NotFound,
        StoreError::PushChecksumMismatch { .. }
        | StoreError::Corrupt { .. }
        | StoreError::DamagedFiles { .. } => Code::DataLoss,
        StoreError::DiskFull { .. } | StoreError::BelowFreeSpaceReserve { .. } => {
            Code::ResourceExhausted
        }
        StoreError::Io { .. } => Code::Internal,
    };
    if matches!(err, StoreError::Corrupt { .. }) {
        metrics::checksum_failure(metrics::GRPC);
    }
    metrics::error(metrics::GRPC, err.kind());
    match code {
        Code::Internal | Code::DataLoss | Code::ResourceExhausted => {
            tracing::error!(code = ?code, error = %err, "grpc request failed")
        }
        _ => tracing::warn!(code = ?code, error = %err, "grpc request refused"),
    }
    Status::new(code, err.to_string())
}

/// A refusal that does not come from the store (malformed request shape).
pub fn invalid_argument(message: impl Into<String>) -> Status {
    let message = message.into();
    metrics::error(metrics::GRPC, "invalid_request");
    tracing::warn!(error = %message, "grpc request refused");
    Status::invalid_argument(message)
}

/// Runs a store operation that touches the filesystem off the async workers, mapping its error.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| Status::internal(format!("{what} task failed: {e}")))?
        .map_err(to_status)
}

//! The errors of the shuffle store. Each variant carries the ids involved and maps to one
//! gRPC status code and one `kind` label for the `kess_errors_total` metric.

use std::io;
use std::path::PathBuf;

use crate::ids::InvalidId;

/// Identifies one map output in error messages: `app/shuffle/map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapKey {
    pub app: String,
    pub shuffle: u32,
    pub map: u64,
}

impl std::fmt::Display for MapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "app {} shuffle {} map {}",
            self.app, self.shuffle, self.map
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error("unknown application {app}")]
    UnknownApp { app: String },
    #[error("unknown map output: {key}")]
    UnknownMapOutput { key: MapKey },
    #[error("{key}: partitions [{start}, {end}) out of range, the output has {num_partitions}")]
    PartitionOutOfRange {
        key: MapKey,
        start: u32,
        end: u32,
        num_partitions: u32,
    },
    #[error("{key}: push rejected: {reason}")]
    InvalidPush { key: MapKey, reason: String },
    #[error("{key} partition {partition}: pushed bytes have CRC32 {actual:08x}, the client declared {declared:08x}")]
    PushChecksumMismatch {
        key: MapKey,
        partition: u32,
        declared: u32,
        actual: u32,
    },
    #[error("{key} partition {partition}: stored bytes have CRC32 {actual:08x}, expected {expected:08x}; block not served")]
    Corrupt {
        key: MapKey,
        partition: u32,
        expected: u32,
        actual: u32,
    },
    #[error("{key}: stored files are damaged ({path}): {reason}")]
    DamagedFiles {
        key: MapKey,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: disk full while writing; nothing was kept")]
    DiskFull {
        key: MapKey,
        #[source]
        source: io::Error,
    },
    #[error("{key}: only {available} bytes free on the data disk, below the reserve of {reserve}; push refused")]
    BelowFreeSpaceReserve {
        key: MapKey,
        available: u64,
        reserve: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Short label for the `kind` dimension of the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::InvalidId(_) => "invalid_id",
            StoreError::UnknownApp { .. } | StoreError::UnknownMapOutput { .. } => "not_found",
            StoreError::PartitionOutOfRange { .. } => "out_of_range",
            StoreError::InvalidPush { .. } => "invalid_push",
            StoreError::PushChecksumMismatch { .. } => "push_checksum_mismatch",
            StoreError::Corrupt { .. } | StoreError::DamagedFiles { .. } => "data_loss",
            StoreError::DiskFull { .. } | StoreError::BelowFreeSpaceReserve { .. } => "disk_full",
            StoreError::Io { .. } => "io",
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// True for the errors a full disk or an exhausted quota produce.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

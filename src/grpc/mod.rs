//! The tonic services of `kess.v1`.

mod admin;
mod chunk;
pub mod codec;
mod shuffle;
mod status;

pub use admin::AdminApi;
pub use chunk::{ChunkFields, FetchedChunk};
pub use shuffle::ShuffleApi;
pub use status::to_status;

//! The tonic services of `kess.v1`.

mod admin;
mod shuffle;
mod status;

pub use admin::AdminApi;
pub use shuffle::ShuffleApi;
pub use status::to_status;

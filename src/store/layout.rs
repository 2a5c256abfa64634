//! Where things live under the data dir.
//!
//! ```text
//! <root>/apps/<app>/shuffle-<S>/map-<M>/   one committed map output (directory renamed in whole)
//!     shuffle_<S>_<M>_0.data                partitions, concatenated (Spark's layout)
//!     shuffle_<S>_<M>_0.index               num_partitions+1 big-endian int64 offsets
//!     shuffle_<S>_<M>_0.checksum.CRC32      one big-endian int64 CRC32 per partition
//!     commit.json                           who wrote it (executor, attempt), sizes
//! <root>/registry/<app>/<executor>.json     executor registrations (survive restarts)
//! <root>/tmp/                               pushes in progress and deletions; wiped at start
//! ```
//!
//! A map output becomes visible by renaming its finished temp directory onto its final path, a
//! single atomic step: a crash leaves either nothing or the whole output. A second rename onto
//! an existing output fails, which is how the first commit wins.

use std::path::{Path, PathBuf};

use crate::ids::{AppId, ExecutorId};

pub const COMMIT_FILE: &str = "commit.json";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }

    pub fn app_dir(&self, app: &AppId) -> PathBuf {
        self.apps_dir().join(app.as_str())
    }

    pub fn shuffle_dir(&self, app: &AppId, shuffle: u32) -> PathBuf {
        self.app_dir(app).join(format!("shuffle-{shuffle}"))
    }

    pub fn map_dir(&self, app: &AppId, shuffle: u32, map: u64) -> PathBuf {
        let mut dir = self.shuffle_dir(app, shuffle);
        dir.push(format!("map-{map}"));
        dir
    }

    pub fn registry_app_dir(&self, app: &AppId) -> PathBuf {
        self.registry_dir().join(app.as_str())
    }

    pub fn registration_file(&self, app: &AppId, executor: &ExecutorId) -> PathBuf {
        self.registry_app_dir(app)
            .join(format!("{}.json", executor.as_str()))
    }
}

/// File names of one map output, the same names Spark gives them.
pub struct MapFiles {
    pub data: String,
    pub index: String,
    pub checksum: String,
}

impl MapFiles {
    pub fn new(shuffle: u32, map: u64) -> Self {
        let base = format!("shuffle_{shuffle}_{map}_0");
        Self {
            data: format!("{base}.data"),
            index: format!("{base}.index"),
            checksum: format!("{base}.checksum.CRC32"),
        }
    }
}

/// Parses `prefix<number>` directory names (`shuffle-3`, `map-17`).
pub fn parse_numbered<T: std::str::FromStr>(name: &str, prefix: &str) -> Option<T> {
    name.strip_prefix(prefix)?.parse().ok()
}

//! A synthetic shuffle written exactly as Spark's sort shuffle writes it (one data file and one
//! index file per map output, placed by the hash rule in an executor's local dirs), so kess and
//! Spark's Java service can serve the very same files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::daemon::BoxError;
use crate::spark::hash;

/// The shapes of shuffle the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShuffleShape {
    /// Every block about the same size.
    Uniform,
    /// Partition sizes fall off as 1/(p+1): a few hot reducers, a long tail of small ones.
    Skewed,
    /// Many maps and partitions with blocks of a few hundred bytes.
    Tiny,
}

impl ShuffleShape {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Skewed => "skewed",
            Self::Tiny => "tiny",
        }
    }
}

/// Where a generated shuffle lives and how it is shaped.
#[derive(Debug, Clone)]
pub struct SparkShuffle {
    pub shuffle_id: i32,
    pub maps: i64,
    pub partitions: i32,
    /// One local dir per executor; map `m` belongs to executor `m % executors`.
    pub executor_dirs: Vec<PathBuf>,
    /// Size of block (map, partition), row-major.
    pub block_sizes: Vec<u64>,
    /// The maps of each executor, computed once (fetch loops ask for them per request).
    maps_by_executor: Vec<Vec<i64>>,
}

impl SparkShuffle {
    pub fn executors(&self) -> usize {
        self.executor_dirs.len()
    }

    pub fn exec_id(e: usize) -> String {
        e.to_string()
    }

    pub fn maps_of(&self, executor: usize) -> &[i64] {
        &self.maps_by_executor[executor]
    }

    pub fn block_size(&self, map: i64, partition: i32) -> u64 {
        self.block_sizes[map as usize * self.partitions as usize + partition as usize]
    }

    pub fn total_bytes(&self) -> u64 {
        self.block_sizes.iter().sum()
    }

    pub fn total_blocks(&self) -> u64 {
        self.block_sizes.len() as u64
    }

    /// Path of a map output's data file.
    pub fn data_file(&self, map: i64) -> Result<PathBuf, BoxError> {
        self.file(map, &hash::shuffle_data_file_name(self.shuffle_id, map))
    }

    fn file(&self, map: i64, name: &str) -> Result<PathBuf, BoxError> {
        let dir = &self.executor_dirs[map as usize % self.executors()];
        Ok(hash::resolve_file(
            &[dir.to_string_lossy().into_owned()],
            64,
            name,
        )?)
    }

    /// Lays out `shape` with about `total_bytes` under `root` for `executors` executors and
    /// writes every file.
    pub fn generate(
        root: &Path,
        shape: ShuffleShape,
        total_bytes: u64,
        executors: usize,
    ) -> Result<Self, BoxError> {
        let (maps, partitions): (i64, i32) = match shape {
            ShuffleShape::Uniform | ShuffleShape::Skewed => (200, 200),
            ShuffleShape::Tiny => (400, 400),
        };
        let blocks = maps as u64 * partitions as u64;
        let weight = |p: i32| match shape {
            ShuffleShape::Skewed => 1.0 / f64::from(p + 1),
            _ => 1.0,
        };
        let weight_sum: f64 = (0..partitions).map(weight).sum();
        let per_map = total_bytes as f64 / maps as f64;
        let mut block_sizes = Vec::with_capacity(blocks as usize);
        for m in 0..maps {
            for p in 0..partitions {
                // ±25% jitter so no two blocks line up identically.
                let jitter = 0.75 + ((m as u64 * 7919 + p as u64 * 104729) % 1000) as f64 / 2000.0;
                let size = (per_map * weight(p) / weight_sum * jitter).round() as u64;
                block_sizes.push(size.max(1));
            }
        }
        let executor_dirs = (0..executors)
            .map(|e| root.join(format!("executor-{e}/blockmgr-bench")))
            .collect();
        let maps_by_executor = (0..executors)
            .map(|e| (0..maps).filter(|m| *m as usize % executors == e).collect())
            .collect();
        let shuffle = Self {
            shuffle_id: 0,
            maps,
            partitions,
            executor_dirs,
            block_sizes,
            maps_by_executor,
        };
        shuffle.write_files()?;
        Ok(shuffle)
    }

    fn write_files(&self) -> Result<(), BoxError> {
        let largest = (0..self.maps)
            .map(|m| {
                (0..self.partitions)
                    .map(|p| self.block_size(m, p))
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0) as usize;
        // Incompressible-looking bytes; each map output starts at a different offset.
        let noise: Vec<u8> = (0..largest + 8192)
            .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        for map in 0..self.maps {
            let mut offsets = Vec::with_capacity(self.partitions as usize + 1);
            let mut at = 0u64;
            offsets.push(at);
            for p in 0..self.partitions {
                at += self.block_size(map, p);
                offsets.push(at);
            }
            let start = (map as usize * 97) % 8192;
            let data_path = self.data_file(map)?;
            write_file(&data_path, &noise[start..start + at as usize])?;
            let index: Vec<u8> = offsets.iter().flat_map(|o| o.to_be_bytes()).collect();
            let index_path =
                self.file(map, &hash::shuffle_index_file_name(self.shuffle_id, map))?;
            write_file(&index_path, &index)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), BoxError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)?.write_all(contents)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::ShuffleIndex;

    #[test]
    fn writes_index_files_that_describe_the_data_files() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SparkShuffle::generate(tmp.path(), ShuffleShape::Skewed, 4 << 20, 3).unwrap();
        assert_eq!(
            s.maps_of(0).len() + s.maps_of(1).len() + s.maps_of(2).len(),
            200
        );
        let mut total = 0;
        for map in [0, 7, 199] {
            let data = std::fs::read(s.data_file(map).unwrap()).unwrap();
            let index_path = s.file(map, &hash::shuffle_index_file_name(0, map)).unwrap();
            let index = ShuffleIndex::parse(&std::fs::read(index_path).unwrap()).unwrap();
            assert_eq!(index.num_partitions(), 200);
            assert_eq!(index.range(0, 200).unwrap(), (0, data.len() as u64));
            let (from, to) = index.range(5, 6).unwrap();
            assert_eq!(to - from, s.block_size(map, 5));
            total += data.len();
        }
        assert!(total > 0);
        // Skew: partition 0 is much larger than the last one.
        assert!(s.block_size(3, 0) > 20 * s.block_size(3, 199));
        let sum = s.total_bytes() as f64;
        assert!((sum - (4 << 20) as f64).abs() / sum < 0.15, "{sum}");
    }
}

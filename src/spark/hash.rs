//! Where a block file lives on disk (`ExecutorDiskUtils.getFilePath`,
//! `JavaUtils.nonNegativeHash`, executor side `DiskBlockManager`).
//!
//! ```text
//! h      = nonNegativeHash(fileName)          // |String.hashCode|, MIN_VALUE -> 0
//! dir    = localDirs[h % localDirs.length]
//! subDir = (h / localDirs.length) % subDirsPerLocalDir
//! path   = dir / format("%02x", subDir) / fileName
//! ```
//!
//! This must be bit-exact with the executor that wrote the files, or the ESS
//! looks in the wrong directory.

use std::path::PathBuf;

use super::error::PathResolveError;

/// Java's `String.hashCode`: `s[0]*31^(n-1) + … + s[n-1]` over UTF-16 code
/// units with int32 wrap-around.
pub fn java_string_hash_code(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Spark's `nonNegativeHash`: the absolute value of the hash, or 0 for
/// `Integer.MIN_VALUE` (whose absolute value does not exist).
pub fn non_negative_hash(hash: i32) -> i32 {
    if hash == i32::MIN {
        0
    } else {
        hash.abs()
    }
}

/// Placement of a file name among an executor's dirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePlacement {
    /// Index into the executor's localDirs.
    pub local_dir_index: usize,
    /// Subdirectory number, printed as two lowercase hex digits.
    pub sub_dir: u32,
}

impl FilePlacement {
    /// The subdirectory name (`%02x`).
    pub fn sub_dir_name(&self) -> String {
        format!("{:02x}", self.sub_dir)
    }
}

/// Computes which local dir and subdir hold `file_name`.
pub fn place_file(
    num_local_dirs: usize,
    sub_dirs_per_local_dir: i32,
    file_name: &str,
) -> Result<FilePlacement, PathResolveError> {
    if num_local_dirs == 0 {
        return Err(PathResolveError::NoLocalDirs);
    }
    let sub_dirs = u32::try_from(sub_dirs_per_local_dir)
        .ok()
        .filter(|n| *n > 0)
        .ok_or(PathResolveError::InvalidSubDirCount(sub_dirs_per_local_dir))?;
    // Non-negative by construction, so the cast is lossless.
    let hash = non_negative_hash(java_string_hash_code(file_name)) as u32 as usize;
    Ok(FilePlacement {
        local_dir_index: hash % num_local_dirs,
        sub_dir: ((hash / num_local_dirs) % sub_dirs as usize) as u32,
    })
}

/// A file name is safe if it names a file directly inside the subdir.
/// Spark does not check this, but RemoveBlocks names come off the network
/// and are used as file names, so `../` must never reach the filesystem.
fn is_plain_file_name(file_name: &str) -> bool {
    !file_name.is_empty()
        && file_name != "."
        && file_name != ".."
        && !file_name.contains(['/', '\\', '\0'])
}

/// Full path of `file_name` for an executor registered with `local_dirs`
/// and `sub_dirs_per_local_dir`.
pub fn resolve_file(
    local_dirs: &[String],
    sub_dirs_per_local_dir: i32,
    file_name: &str,
) -> Result<PathBuf, PathResolveError> {
    let mut path = PathBuf::new();
    resolve_file_into(&mut path, local_dirs, sub_dirs_per_local_dir, file_name)?;
    Ok(path)
}

/// `resolve_file` into a buffer the caller reuses: the Spark path resolves two files per block
/// served, and building each path anew cost three allocations.
pub fn resolve_file_into(
    path: &mut PathBuf,
    local_dirs: &[String],
    sub_dirs_per_local_dir: i32,
    file_name: &str,
) -> Result<(), PathResolveError> {
    if !is_plain_file_name(file_name) {
        return Err(PathResolveError::UnsafeFileName(file_name.to_owned()));
    }
    let placement = place_file(local_dirs.len(), sub_dirs_per_local_dir, file_name)?;
    let mut sub_dir = [0u8; 8];
    let mut cursor = std::io::Cursor::new(&mut sub_dir[..]);
    // A u32 in hex fits 8 bytes, so the write cannot fail.
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{:02x}", placement.sub_dir));
    let written = cursor.position() as usize;
    let sub_dir = std::str::from_utf8(&sub_dir[..written]).unwrap_or_default();
    path.as_mut_os_string().clear();
    path.push(&local_dirs[placement.local_dir_index]);
    path.push(sub_dir);
    path.push(file_name);
    Ok(())
}

/// Reduce id Spark uses in the names of sort-shuffle output files.
pub const NOOP_REDUCE_ID: i32 = 0;

/// `shuffle_S_M_0.data`: all reduce partitions of one map output.
pub fn shuffle_data_file_name(shuffle_id: i32, map_id: i64) -> String {
    format!("shuffle_{shuffle_id}_{map_id}_{NOOP_REDUCE_ID}.data")
}

/// `shuffle_S_M_0.index`: (numPartitions + 1) big-endian int64 offsets.
pub fn shuffle_index_file_name(shuffle_id: i32, map_id: i64) -> String {
    format!("shuffle_{shuffle_id}_{map_id}_{NOOP_REDUCE_ID}.index")
}

/// Writes `shuffle_S_M_0.<extension>` into `name` (cleared first), for callers that reuse it.
pub fn write_shuffle_file_name(name: &mut String, shuffle_id: i32, map_id: i64, extension: &str) {
    use std::fmt::Write;
    name.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        name,
        "shuffle_{shuffle_id}_{map_id}_{NOOP_REDUCE_ID}.{extension}"
    );
}

/// `shuffle_S_M_0.checksum.ALG`: one big-endian int64 checksum per partition.
pub fn shuffle_checksum_file_name(shuffle_id: i32, map_id: i64, algorithm: &str) -> String {
    format!("shuffle_{shuffle_id}_{map_id}_{NOOP_REDUCE_ID}.checksum.{algorithm}")
}

/// `rdd_R_S`: the file of a disk-persisted RDD block.
pub fn rdd_file_name(rdd_id: i32, split_index: i32) -> String {
    format!("rdd_{rdd_id}_{split_index}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_vectors::vectors_dir;
    use super::*;

    #[test]
    fn hash_code_matches_java() {
        assert_eq!(java_string_hash_code(""), 0);
        assert_eq!(java_string_hash_code("a"), 97);
        // Known Java values.
        assert_eq!(java_string_hash_code("hello"), 99_162_322);
        assert_eq!(java_string_hash_code("polygenelubricants"), i32::MIN);
        // Non-BMP characters hash as two UTF-16 surrogates: "😀" = D83D DE00.
        assert_eq!(
            java_string_hash_code("😀"),
            0xD83Di32.wrapping_mul(31).wrapping_add(0xDE00)
        );
        // Values from the vectors README (shuffle-files table).
        let table = [
            ("shuffle_0_0_0.data", 581_811_660),
            ("shuffle_0_3_0.index", -266_114_061),
            ("shuffle_0_3_0.checksum.ADLER32", -1_330_458_775),
            ("shuffle_0_3_0.data", 1_515_275_369),
            ("shuffle_0_0_0.index", 861_282_032),
            ("shuffle_0_0_0.checksum.ADLER32", -103_986_100),
            ("shuffle_0_1_0.index", -946_172_431),
            ("shuffle_0_1_0.checksum.ADLER32", -512_810_325),
            ("shuffle_0_1_0.data", -1_970_345_301),
            ("shuffle_0_2_0.index", 1_541_340_402),
            ("shuffle_0_2_0.checksum.ADLER32", -921_634_550),
            ("shuffle_0_2_0.data", -227_534_966),
        ];
        for (name, hash) in table {
            assert_eq!(java_string_hash_code(name), hash, "{name}");
        }
    }

    #[test]
    fn non_negative_hash_edge_cases() {
        assert_eq!(non_negative_hash(i32::MIN), 0);
        assert_eq!(non_negative_hash(-5), 5);
        assert_eq!(non_negative_hash(i32::MAX), i32::MAX);
        // "polygenelubricants" hashes to MIN_VALUE, so it lands in subdir 00 of dir 0.
        let placement = place_file(3, 64, "polygenelubricants").unwrap();
        assert_eq!(
            placement,
            FilePlacement {
                local_dir_index: 0,
                sub_dir: 0
            }
        );
    }

    #[test]
    fn fact_sheet_example() {
        let name = shuffle_data_file_name(0, 0);
        assert_eq!(name, "shuffle_0_0_0.data");
        assert_eq!(java_string_hash_code(&name), 581_811_660);
        let path = resolve_file(&["/d".to_string()], 64, &name).unwrap();
        assert_eq!(path, Path::new("/d/0c/shuffle_0_0_0.data"));
    }

    #[test]
    fn two_dirs_split_hash_between_dir_and_subdir() {
        // h = 581811660: dir = h % 2 = 0, subdir = (h / 2) % 64 = 290905830 % 64 = 38 = 0x26.
        let dirs = ["/a".to_string(), "/b".to_string()];
        let path = resolve_file(&dirs, 64, "shuffle_0_0_0.data").unwrap();
        assert_eq!(path, Path::new("/a/26/shuffle_0_0_0.data"));
        // h = 1515275369 (odd): dir 1, subdir (757637684 % 64) = 52 = 0x34.
        let path = resolve_file(&dirs, 64, "shuffle_0_3_0.data").unwrap();
        assert_eq!(path, Path::new("/b/34/shuffle_0_3_0.data"));
    }

    #[test]
    fn a_reused_buffer_resolves_exactly_as_a_fresh_path() {
        let dirs = ["/local/a/".to_string(), "/b".to_string()];
        let (mut path, mut name) = (
            PathBuf::from("/some/much/longer/previous/path"),
            String::new(),
        );
        for (shuffle, map, extension) in [(0, 0, "data"), (0, 3, "index"), (7, 123456789, "data")] {
            write_shuffle_file_name(&mut name, shuffle, map, extension);
            assert_eq!(name, format!("shuffle_{shuffle}_{map}_0.{extension}"));
            // 300 subdirs: some need three hex digits, as Spark's %02x prints them.
            for sub_dirs in [64, 300] {
                resolve_file_into(&mut path, &dirs, sub_dirs, &name).unwrap();
                assert_eq!(path, resolve_file(&dirs, sub_dirs, &name).unwrap());
                let placement = place_file(2, sub_dirs, &name).unwrap();
                assert_eq!(
                    path,
                    Path::new(&dirs[placement.local_dir_index])
                        .join(placement.sub_dir_name())
                        .join(&name)
                );
            }
        }
        assert!(resolve_file_into(&mut path, &dirs, 64, "../x").is_err());
    }

    #[test]
    fn file_name_helpers() {
        assert_eq!(shuffle_index_file_name(3, 56), "shuffle_3_56_0.index");
        assert_eq!(
            shuffle_checksum_file_name(0, 2, "ADLER32"),
            "shuffle_0_2_0.checksum.ADLER32"
        );
        assert_eq!(rdd_file_name(7, 3), "rdd_7_3");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let dirs = ["/a".to_string()];
        assert_eq!(
            resolve_file(&[], 64, "rdd_1_1"),
            Err(PathResolveError::NoLocalDirs)
        );
        for bad in [0, -1, i32::MIN] {
            assert_eq!(
                resolve_file(&dirs, bad, "rdd_1_1"),
                Err(PathResolveError::InvalidSubDirCount(bad))
            );
        }
        for bad in ["", ".", "..", "../etc/passwd", "a/b", "a\\b", "a\0b"] {
            assert_eq!(
                resolve_file(&dirs, 64, bad),
                Err(PathResolveError::UnsafeFileName(bad.to_string()))
            );
        }
    }

    /// Every file of the two real executor dirs sits where the rule puts it.
    /// Only `executor-<uuid>/blockmgr-<uuid>` of each registered local dir is
    /// kept in the vectors, and each executor had one local dir, so the
    /// blockmgr dir under `shuffle-files/` stands in for the local dir.
    #[test]
    fn real_shuffle_files_are_where_the_rule_puts_them() {
        let root = vectors_dir().join("shuffle-files");
        let mut checked = 0;
        for executor in std::fs::read_dir(&root).unwrap() {
            let executor = executor.unwrap().path();
            for blockmgr in std::fs::read_dir(&executor).unwrap() {
                let blockmgr = blockmgr.unwrap().path();
                let local_dirs = [blockmgr.to_str().unwrap().to_string()];
                for sub_dir in std::fs::read_dir(&blockmgr).unwrap() {
                    let sub_dir = sub_dir.unwrap().path();
                    for file in std::fs::read_dir(&sub_dir).unwrap() {
                        let file = file.unwrap().path();
                        let name = file.file_name().unwrap().to_str().unwrap();
                        assert_eq!(resolve_file(&local_dirs, 64, name).unwrap(), file);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 12);
    }

    /// The same files resolved against the full localDirs strings that the
    /// executors sent in RegisterExecutor (from the vectors README).
    #[test]
    fn real_local_dirs_give_real_paths() {
        let executor0 = "/var/data/spark/local1/spark-f736881e-229c-47ed-974c-c372aabe0287/executor-5f1ef70f-b8e2-4d77-86c3-d6ecbb4a7714/blockmgr-b1e183e8-b674-4c3d-b9ca-4faa2c3601fb";
        let path = resolve_file(&[executor0.to_string()], 64, "shuffle_0_2_0.index").unwrap();
        assert_eq!(path, Path::new(executor0).join("32/shuffle_0_2_0.index"));
        let path = resolve_file(&[executor0.to_string()], 64, "shuffle_0_2_0.data").unwrap();
        assert_eq!(path, Path::new(executor0).join("36/shuffle_0_2_0.data"));
        // Fact sheet probe: executor 1 of the probe app, missing shuffle 5 index in subdir 35.
        let executor1 = "/var/data/spark/local1/spark-f736881e-229c-47ed-974c-c372aabe0287/executor-153ac489-1369-4dc9-a036-702b80082bbb/blockmgr-c8feb201-cf77-48bb-a87d-397287e84b63";
        let path = resolve_file(&[executor1.to_string()], 64, "shuffle_5_0_0.index").unwrap();
        assert_eq!(path, Path::new(executor1).join("35/shuffle_5_0_0.index"));
    }
}

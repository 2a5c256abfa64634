//! Rebuilding the in-memory view at start. Whatever a crash left behind is either a whole
//! committed output (published by one rename) or junk in `tmp/`; the junk is deleted, and any
//! committed output whose files disagree with its `commit.json` is discarded with a warning.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::layout::{parse_numbered, Layout, MapFiles, COMMIT_FILE};
use super::{CommitRecord, State};
use crate::error::StoreError;
use crate::ids::AppId;
use crate::registry::{read_dir_or_empty, RegistrationJournal};

pub(super) fn recover(layout: &Layout, journal: &RegistrationJournal) -> Result<State, StoreError> {
    let io = |what: &str, p: &Path, e| StoreError::io(format!("{what} {}", p.display()), e);
    let tmp = layout.tmp_dir();
    for entry in read_dir_or_empty(&tmp).map_err(|e| io("reading", &tmp, e))? {
        let path = entry.map_err(|e| io("reading", &tmp, e))?.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io("deleting leftover", &path, e))?;
        tracing::info!(path = %path.display(), "deleted a partial write left by an earlier run");
    }

    let mut state = State::default();
    let registrations = journal
        .load_all()
        .map_err(|e| io("reading registrations in", &layout.registry_dir(), e))?;
    let n_registrations = registrations.len();
    for (app, exec, reg) in registrations {
        let entry = state.app_mut(&app);
        entry.last_activity_ms = entry.last_activity_ms.max(reg.registered_unix_ms);
        let e = entry.executors.entry(exec).or_default();
        e.registered = true;
        e.last_activity_ms = reg.registered_unix_ms;
        e.spark = reg.spark.map(Arc::new);
    }

    let (mut recovered, mut discarded) = (0u64, 0u64);
    let apps_dir = layout.apps_dir();
    for app_entry in read_dir_or_empty(&apps_dir).map_err(|e| io("reading", &apps_dir, e))? {
        let app_path = app_entry.map_err(|e| io("reading", &apps_dir, e))?.path();
        let Some(app) = file_name(&app_path).and_then(|n| AppId::parse(n).ok()) else {
            tracing::warn!(path = %app_path.display(), "ignoring unexpected entry in the data dir");
            continue;
        };
        for shuffle_path in subdirs(&app_path)? {
            let Some(shuffle) =
                file_name(&shuffle_path).and_then(|n| parse_numbered(n, "shuffle-"))
            else {
                continue;
            };
            for map_path in subdirs(&shuffle_path)? {
                let Some(map) = file_name(&map_path).and_then(|n| parse_numbered::<u64>(n, "map-"))
                else {
                    continue;
                };
                match check_output(&map_path, &app, shuffle, map) {
                    Ok(record) => {
                        let entry = state.app_mut(&app);
                        entry.last_activity_ms =
                            entry.last_activity_ms.max(record.committed_unix_ms);
                        entry.outputs.insert((shuffle, map), Arc::new(record));
                        recovered += 1;
                    }
                    Err(reason) => {
                        tracing::warn!(path = %map_path.display(), reason, "discarding a damaged map output");
                        let trash = tmp.join(format!("damaged-{}", uuid::Uuid::new_v4()));
                        fs::rename(&map_path, &trash)
                            .and_then(|_| fs::remove_dir_all(&trash))
                            .map_err(|e| io("discarding", &map_path, e))?;
                        discarded += 1;
                    }
                }
            }
        }
    }
    crate::metrics::recovery(recovered, discarded);
    tracing::info!(
        registrations = n_registrations,
        map_outputs = recovered,
        discarded,
        "recovered state from disk"
    );
    Ok(state)
}

/// Checks that a committed output's files are all there with the sizes its record implies.
fn check_output(dir: &Path, app: &AppId, shuffle: u32, map: u64) -> Result<CommitRecord, String> {
    let raw =
        fs::read(dir.join(COMMIT_FILE)).map_err(|e| format!("no readable commit.json: {e}"))?;
    let record: CommitRecord =
        serde_json::from_slice(&raw).map_err(|e| format!("commit.json: {e}"))?;
    if &record.app != app || record.shuffle != shuffle || record.map != map {
        return Err("commit.json names another output".into());
    }
    let files = MapFiles::new(shuffle, map);
    let n = u64::from(record.num_partitions);
    for (name, expected) in [
        (&files.data, record.data_bytes),
        (&files.index, (n + 1) * 8),
        (&files.checksum, n * 8),
    ] {
        let len = fs::metadata(dir.join(name))
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if len != expected {
            return Err(format!("{name} has {len} bytes, expected {expected}"));
        }
    }
    Ok(record)
}

fn subdirs(dir: &Path) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let entries = read_dir_or_empty(dir)
        .map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?
            .path();
        if path.is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

//! Durable executor registrations: one small JSON file per executor, written atomically
//! (temp file + rename), so registrations survive `kill -9` and are reloaded at start, the way
//! Spark's shuffle service reloads its recovery DB and executors need not register again.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ids::{AppId, ExecutorId};
use crate::store::layout::Layout;

/// What kess remembers about a registered executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub registered_unix_ms: i64,
    /// Present for executors registered over Spark's protocol: where their files are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark: Option<SparkExecutorInfo>,
}

/// Spark's `ExecutorShuffleInfo`: the executor's `blockmgr-*` dirs, which kess reads in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparkExecutorInfo {
    pub local_dirs: Vec<String>,
    pub sub_dirs_per_local_dir: i32,
    pub shuffle_manager: String,
}

#[derive(Debug, Clone)]
pub struct RegistrationJournal {
    layout: Layout,
    fsync: bool,
}

impl RegistrationJournal {
    pub fn new(layout: Layout, fsync: bool) -> Self {
        Self { layout, fsync }
    }

    pub fn save(&self, app: &AppId, exec: &ExecutorId, reg: &Registration) -> io::Result<()> {
        let dir = self.layout.registry_app_dir(app);
        fs::create_dir_all(&dir)?;
        let path = self.layout.registration_file(app, exec);
        let tmp = dir.join(format!(".{}.tmp-{}", exec.as_str(), uuid::Uuid::new_v4()));
        let body = serde_json::to_vec(reg).map_err(io::Error::other)?;
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            if self.fsync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if self.fsync {
                sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn delete(&self, app: &AppId, exec: &ExecutorId) -> io::Result<()> {
        match fs::remove_file(self.layout.registration_file(app, exec)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn delete_app(&self, app: &AppId) -> io::Result<()> {
        match fs::remove_dir_all(self.layout.registry_app_dir(app)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every stored registration. Unreadable entries and leftover temp files are skipped with
    /// a warning: a registration is cheap to redo, refusing to start is not.
    pub fn load_all(&self) -> io::Result<Vec<(AppId, ExecutorId, Registration)>> {
        let mut out = Vec::new();
        let root = self.layout.registry_dir();
        for app_entry in read_dir_or_empty(&root)? {
            let app_entry = app_entry?;
            let name = app_entry.file_name();
            let Some(app) = name.to_str().and_then(|n| AppId::parse(n).ok()) else {
                tracing::warn!(path = %app_entry.path().display(), "ignoring unexpected entry in registry");
                continue;
            };
            for file in fs::read_dir(app_entry.path())? {
                let file = file?;
                let fname = file.file_name();
                let fname = fname.to_string_lossy();
                if fname.starts_with('.') {
                    let _ = fs::remove_file(file.path());
                    continue;
                }
                let parsed = fname
                    .strip_suffix(".json")
                    .and_then(|e| ExecutorId::parse(e).ok())
                    .and_then(|exec| {
                        let bytes = fs::read(file.path()).ok()?;
                        let reg = serde_json::from_slice::<Registration>(&bytes).ok()?;
                        Some((exec, reg))
                    });
                match parsed {
                    Some((exec, reg)) => out.push((app.clone(), exec, reg)),
                    None => {
                        tracing::warn!(path = %file.path().display(), "ignoring unreadable registration")
                    }
                }
            }
        }
        Ok(out)
    }
}

pub fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<io::Result<fs::DirEntry>>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Makes a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip_and_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = RegistrationJournal::new(Layout::new(tmp.path()), true);
        let app = AppId::parse("app-1").unwrap();
        let e1 = ExecutorId::parse("1").unwrap();
        let e2 = ExecutorId::parse("2").unwrap();
        let reg = Registration {
            registered_unix_ms: 42,
            spark: Some(SparkExecutorInfo {
                local_dirs: vec!["/tmp/a/blockmgr-1".into()],
                sub_dirs_per_local_dir: 64,
                shuffle_manager: "sort".into(),
            }),
        };
        journal.save(&app, &e1, &reg).unwrap();
        journal.save(&app, &e2, &reg).unwrap();
        journal.delete(&app, &e1).unwrap();
        journal.delete(&app, &e1).unwrap();
        let all = journal.load_all().unwrap();
        assert_eq!(all, vec![(app.clone(), e2, reg)]);
        journal.delete_app(&app).unwrap();
        assert!(journal.load_all().unwrap().is_empty());
    }

    #[test]
    fn skips_garbage_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let dir = layout.registry_dir().join("app-1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.json"), b"{not json").unwrap();
        fs::write(dir.join(".2.tmp-x"), b"partial").unwrap();
        fs::create_dir_all(layout.registry_dir().join("bad name")).unwrap();
        let journal = RegistrationJournal::new(layout, false);
        assert!(journal.load_all().unwrap().is_empty());
        assert!(!dir.join(".2.tmp-x").exists(), "temp files are cleaned up");
    }
}

//! Persistence of per-target state (`--state.file`) with "commit, then
//! publish" semantics.
//!
//! The file is a [redb] database: one row per target holding its whole
//! [`TargetState`] (read position, dedupe memory, pending ids, counters and,
//! with them, the kept failures and minute history), so
//! each target's counters and position are always committed together. A
//! committer task gathers the states pollers hand it, writes only those that
//! changed in one transaction, and only after that transaction is durable
//! makes their snapshots visible on `/metrics`. An idle poll changes
//! nothing and writes nothing.
//!
//! [redb]: https://docs.rs/redb

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{error, info};

use crate::model::TargetState;
use crate::target::Target;

const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Marks a file as ours.
const FORMAT: &str = "talkover-exporter-state";
/// Bumped whenever the stored shape of [`TargetState`] changes.
const VERSION: u32 = 1;

/// A failure from below (redb, the file system, a decoder), kept whole.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the state file could not be used: which file, and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("state file {}: {problem}", path.display())]
pub struct StateError {
    /// The state file.
    pub path: PathBuf,
    /// What was wrong with it.
    #[source]
    pub problem: Problem,
}

/// What was wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not a database we can open (corrupt, truncated, not redb at all).
    #[error("unreadable: {0}")]
    Unreadable(#[source] redb::DatabaseError),
    /// A redb file that is not a talkover-exporter state file.
    #[error("not a talkover-exporter state file")]
    Foreign,
    /// Written by a newer version of the exporter, with this format version.
    #[error("format version {0}, newer than this exporter's {VERSION}")]
    Newer(u32),
    /// The stored state of the webhook `key` could not be decoded.
    #[error("entry {key:?} is corrupt: {source}")]
    CorruptEntry {
        /// The row key.
        key: String,
        /// The decode error.
        #[source]
        source: Cause,
    },
    /// Another process holds the file open.
    #[error("already open by another process (another exporter?)")]
    InUse,
    /// The unusable file could not be moved aside to `to`.
    #[error("unusable, and could not be moved aside to {}: {source}", to.display())]
    MoveAside {
        /// Where it was to go.
        to: PathBuf,
        /// Why the rename failed.
        #[source]
        source: std::io::Error,
    },
    /// A read or write failed (disk full, read-only volume, …).
    #[error("{0}")]
    Io(#[source] Cause),
}

impl Problem {
    /// This problem with the file at `path`.
    fn at(self, path: &Path) -> StateError {
        StateError {
            path: path.to_path_buf(),
            problem: self,
        }
    }
}

/// The open state file.
#[derive(Debug)]
pub struct StateStore {
    /// `None` after a failed commit: redb refuses further use of a database
    /// that saw an I/O error, so the next commit opens it again (which
    /// also repairs it). A std lock: only blocking threads take it.
    db: std::sync::Mutex<Option<Database>>,
    pub(super) path: PathBuf,
}

impl StateStore {
    /// Opens `path`, or creates it. A file that cannot be used is reported in
    /// one line, moved aside (never overwritten) and replaced by a fresh one.
    /// Returns the stored states; with `wanted` (a fixed set of targets),
    /// stored targets not in it are dropped. Without it (discovery decides
    /// later) they are kept until their grace period ends.
    pub fn open(
        path: &Path,
        wanted: Option<&BTreeSet<Target>>,
    ) -> Result<(StateStore, BTreeMap<Target, TargetState>), StateError> {
        let (store, mut states) = match Self::open_existing(path) {
            Ok(found) => found,
            // Not the file's fault: moving it aside would not help.
            Err(err) if matches!(err.problem, Problem::Io(_) | Problem::InUse) => return Err(err),
            Err(err) => {
                let aside = aside_path(path);
                error!(error = %err, moved_to = %aside.display(), "state file unusable; moved aside, starting fresh");
                std::fs::rename(path, &aside).map_err(|source| {
                    Problem::MoveAside {
                        to: aside.clone(),
                        source,
                    }
                    .at(path)
                })?;
                Self::open_existing(path)?
            }
        };
        let stale: Vec<Target> = match wanted {
            Some(wanted) => states
                .keys()
                .filter(|t| !wanted.contains(*t))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if !stale.is_empty() {
            info!(
                dropped = stale.len(),
                "dropping state of targets no longer configured"
            );
            store.commit(&[], &stale)?;
            for t in &stale {
                states.remove(t);
            }
        }
        Ok((store, states))
    }

    fn open_existing(
        path: &Path,
    ) -> Result<(StateStore, BTreeMap<Target, TargetState>), StateError> {
        let io = |e: std::io::Error| Problem::Io(e.into()).at(path);
        let is_new = match std::fs::metadata(path) {
            Ok(m) => m.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(e)),
        };
        if !is_new {
            // Look before writing: a file that is not ours must be moved aside
            // exactly as it was, and opening it read-write would alter it.
            match Database::builder().open_read_only(path) {
                Ok(ro) => check_meta(&ro, path)?,
                // A crash left it needing recovery, which only a read-write open does.
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(open_error(path, e)),
            }
        }
        let db = Database::create(path).map_err(|e| open_error(path, e))?;
        let store = StateStore {
            db: std::sync::Mutex::new(Some(db)),
            path: path.to_path_buf(),
        };
        if is_new {
            store.write_meta()?;
            info!(path = %path.display(), "created a new state file");
            return Ok((store, BTreeMap::new()));
        }
        store.with_db(|db| check_meta(db, path))?;
        let states = store.load()?;
        info!(path = %path.display(), targets = states.len(), "resumed from state file");
        Ok((store, states))
    }

    /// Runs `f` on the open database, opening it again first if a failed
    /// commit closed it; a failure closes it for the next call to reopen.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut guard = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Database::create(&self.path).map_err(|e| self.io_err(e))?);
        }
        let Some(db) = guard.as_ref() else {
            return Err(self.io_err("state file is not open"));
        };
        let result = f(db);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    fn io_err(&self, e: impl Into<Cause>) -> StateError {
        Problem::Io(e.into()).at(&self.path)
    }

    fn write_meta(&self) -> Result<(), StateError> {
        self.with_db(|db| self.write_meta_in(db))
    }

    fn write_meta_in(&self, db: &Database) -> Result<(), StateError> {
        let txn = db.begin_write().map_err(|e| self.io_err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io_err(e))?;
            meta.insert("format", FORMAT).map_err(|e| self.io_err(e))?;
            meta.insert("version", VERSION.to_string().as_str())
                .map_err(|e| self.io_err(e))?;
            txn.open_table(TARGETS).map_err(|e| self.io_err(e))?;
        }
        txn.commit().map_err(|e| self.io_err(e))
    }

    fn load(&self) -> Result<BTreeMap<Target, TargetState>, StateError> {
        self.with_db(|db| self.load_from(db))
    }

    fn load_from(&self, db: &Database) -> Result<BTreeMap<Target, TargetState>, StateError> {
        let txn = db.begin_read().map_err(|e| self.io_err(e))?;
        let table = txn.open_table(TARGETS).map_err(|e| self.io_err(e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| self.io_err(e))? {
            let (k, v) = row.map_err(|e| self.io_err(e))?;
            let corrupt = |source: Cause| {
                Problem::CorruptEntry {
                    key: k.value().to_string(),
                    source,
                }
                .at(&self.path)
            };
            let target: Target = k
                .value()
                .parse()
                .map_err(|e: crate::target::ParseTargetError| corrupt(e.into()))?;
            let mut state: TargetState =
                serde_json::from_slice(v.value()).map_err(|e| corrupt(e.into()))?;
            // Files of earlier versions hold no native buckets.
            state.counts.seed_native();
            out.insert(target, state);
        }
        Ok(out)
    }

    /// Writes `changed` and deletes `removed` in one durable transaction.
    pub fn commit(
        &self,
        changed: &[(Target, Vec<u8>)],
        removed: &[Target],
    ) -> Result<(), StateError> {
        self.with_db(|db| self.commit_in(db, changed, removed))
    }

    fn commit_in(
        &self,
        db: &Database,
        changed: &[(Target, Vec<u8>)],
        removed: &[Target],
    ) -> Result<(), StateError> {
        let txn = db.begin_write().map_err(|e| self.io_err(e))?;
        {
            let mut table = txn.open_table(TARGETS).map_err(|e| self.io_err(e))?;
            for (target, bytes) in changed {
                table
                    .insert(target.to_string().as_str(), bytes.as_slice())
                    .map_err(|e| self.io_err(e))?;
            }
            for target in removed {
                table
                    .remove(target.to_string().as_str())
                    .map_err(|e| self.io_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.io_err(e))
    }
}

/// Sorts redb's open errors into "move it aside" and "cannot touch it".
fn open_error(path: &Path, e: redb::DatabaseError) -> StateError {
    use std::io::ErrorKind;
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if !matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            Problem::Io(io.into()).at(path)
        }
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            Problem::InUse.at(path)
        }
        source => Problem::Unreadable(source).at(path),
    }
}

/// Checks that the file is a state file of a version this exporter reads.
fn check_meta(db: &impl ReadableDatabase, path: &Path) -> Result<(), StateError> {
    let foreign = || Problem::Foreign.at(path);
    let txn = db
        .begin_read()
        .map_err(|e| Problem::Io(e.into()).at(path))?;
    let meta = txn.open_table(META).map_err(|_| foreign())?;
    let format = meta
        .get("format")
        .map_err(|_| foreign())?
        .ok_or_else(foreign)?;
    if format.value() != FORMAT {
        return Err(foreign());
    }
    let version: u32 = meta
        .get("version")
        .map_err(|_| foreign())?
        .and_then(|v| v.value().parse().ok())
        .ok_or_else(foreign)?;
    if version > VERSION {
        return Err(Problem::Newer(version).at(path));
    }
    Ok(())
}

/// Where an unusable state file is moved: beside it, never over anything.
fn aside_path(path: &Path) -> PathBuf {
    let stamp = crate::clock::unix_now_ms();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".unusable-{stamp}"));
    path.with_file_name(name)
}

//! Persistence of per-target state (`--state.file`) with "commit, then
//! publish" semantics.
//!
//! The file is a [redb] database holding each target's state in the rows
//! `schema` describes: its row (position, pending ids, counters, settings),
//! its handled ids, its kept failures. Everything a commit writes for any
//! number of targets goes in one durable transaction, so each target's
//! counters and position are always committed together.
//!
//! [redb]: https://docs.rs/redb

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tracing::{error, info};

use super::schema::{self, EntryKey};
use crate::model::{FailedAttempt, TargetState};
use crate::target::Target;

/// Each target's row (version 1: its whole state as JSON).
const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets");
/// Every target's handled ids, in `created_at` order.
const HANDLED: TableDefinition<EntryKey, ()> = TableDefinition::new("handled");
/// Every target's kept failed attempts, in `created_at` order.
const FAILURES: TableDefinition<EntryKey, &[u8]> = TableDefinition::new("failures");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Marks a file as ours.
const FORMAT: &str = "talkover-exporter-state";
/// Bumped whenever the stored layout changes (see `schema`).
const VERSION: u32 = 2;

/// One target's part of a commit: what changed since its last one.
#[derive(Debug)]
pub struct Write<'a> {
    /// Whose.
    pub target: &'a Target,
    /// Its new row, if the row changed.
    pub row: Option<&'a [u8]>,
    /// Handled ids added: `(id key, created_at ms)`.
    pub handled: &'a [(u64, i64)],
    /// Handled ids created in `[from, to)` are forgotten: the horizon moved
    /// from `from` to `to`.
    pub cut: Option<(i64, i64)>,
    /// Kept failures added.
    pub failures_added: Vec<&'a FailedAttempt>,
}

/// What one commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Keys and values handed to the database, in bytes (the pages it
    /// writes for them are more).
    pub bytes: u64,
    /// Rows inserted or removed.
    pub rows: u64,
}

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
            store.commit(&[], &stale, &[])?;
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
                Ok(ro) => {
                    check_meta(&ro, path)?;
                }
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
        let version = store.with_db(|db| check_meta(db, path))?;
        if version < VERSION {
            store.with_db(|db| store.migrate_v1(db))?;
        }
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
            txn.open_table(HANDLED).map_err(|e| self.io_err(e))?;
            txn.open_table(FAILURES).map_err(|e| self.io_err(e))?;
        }
        txn.commit().map_err(|e| self.io_err(e))
    }

    fn load(&self) -> Result<BTreeMap<Target, TargetState>, StateError> {
        self.with_db(|db| self.load_from(db))
    }

    fn load_from(&self, db: &Database) -> Result<BTreeMap<Target, TargetState>, StateError> {
        let txn = db.begin_read().map_err(|e| self.io_err(e))?;
        let targets = txn.open_table(TARGETS).map_err(|e| self.io_err(e))?;
        // Time first, every target's keys together: read each table once.
        let mut handled: HashMap<u64, Vec<(i64, u64)>> = HashMap::new();
        let table = txn.open_table(HANDLED).map_err(|e| self.io_err(e))?;
        for key in table.iter().map_err(|e| self.io_err(e))? {
            let (key, _) = key.map_err(|e| self.io_err(e))?;
            let (created, tk, id) = key.value();
            handled.entry(tk).or_default().push((created, id));
        }
        let mut kept: HashMap<u64, Vec<FailedAttempt>> = HashMap::new();
        let table = txn.open_table(FAILURES).map_err(|e| self.io_err(e))?;
        for row in table.iter().map_err(|e| self.io_err(e))? {
            let (key, f) = row.map_err(|e| self.io_err(e))?;
            let (_, tk, _) = key.value();
            let f = postcard::from_bytes(f.value()).map_err(|e| {
                Problem::CorruptEntry {
                    key: format!("failure {:?}", key.value()),
                    source: e.into(),
                }
                .at(&self.path)
            })?;
            kept.entry(tk).or_default().push(f);
        }
        let mut out = BTreeMap::new();
        for row in targets.iter().map_err(|e| self.io_err(e))? {
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
            let tk = schema::target_key(&target);
            let ids = handled.remove(&tk).unwrap_or_default();
            let failures = kept.remove(&tk).unwrap_or_default();
            let state =
                schema::decode_row(v.value(), ids, failures).map_err(|e| corrupt(e.into()))?;
            out.insert(target, state);
        }
        Ok(out)
    }

    /// Rewrites a version 1 file (one JSON row per target) in this
    /// version's layout, in one transaction: an upgrade loses no counter.
    fn migrate_v1(&self, db: &Database) -> Result<(), StateError> {
        let mut states = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(|e| self.io_err(e))?;
            let table = txn.open_table(TARGETS).map_err(|e| self.io_err(e))?;
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
                let state = schema::decode_v1(v.value()).map_err(|e| corrupt(e.into()))?;
                states.insert(target, state);
            }
        }
        let rows: Vec<(Target, Vec<u8>)> = states
            .iter()
            .map(|(t, s)| {
                schema::encode_row(s)
                    .map(|row| (t.clone(), row))
                    .map_err(|e| self.io_err(e))
            })
            .collect::<Result<_, _>>()?;
        let handled: Vec<Vec<(u64, i64)>> = states
            .values()
            .map(|s| s.handled.iter().map(|(k, c)| (*k, *c)).collect())
            .collect();
        let writes: Vec<Write<'_>> = rows
            .iter()
            .zip(&handled)
            .zip(states.values())
            .map(|(((target, row), handled), state)| Write {
                target,
                row: Some(row),
                handled,
                cut: None,
                failures_added: state.failures.iter().collect(),
            })
            .collect();
        self.commit_in(db, &writes, &[], &[], true)?;
        info!(path = %self.path.display(), targets = states.len(), "state file upgraded to format version {VERSION}");
        Ok(())
    }

    /// Writes `writes`, deletes the targets `removed` and the failures no
    /// longer kept `evicted`, in one durable transaction.
    pub fn commit(
        &self,
        writes: &[Write<'_>],
        removed: &[Target],
        evicted: &[EntryKey],
    ) -> Result<Written, StateError> {
        self.with_db(|db| self.commit_in(db, writes, removed, evicted, false))
    }

    fn commit_in(
        &self,
        db: &Database,
        writes: &[Write<'_>],
        removed: &[Target],
        evicted: &[EntryKey],
        set_version: bool,
    ) -> Result<Written, StateError> {
        let e = |e: redb::Error| self.io_err(e);
        let mut written = Written::default();
        let txn = db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut targets = txn.open_table(TARGETS).map_err(|x| e(x.into()))?;
            let mut handled = txn.open_table(HANDLED).map_err(|x| e(x.into()))?;
            let mut failures = txn.open_table(FAILURES).map_err(|x| e(x.into()))?;
            for w in writes {
                let name = w.target.to_string();
                let tk = schema::target_key(w.target);
                if let Some(row) = w.row {
                    targets
                        .insert(name.as_str(), row)
                        .map_err(|x| e(x.into()))?;
                    written.bytes += (name.len() + row.len()) as u64;
                    written.rows += 1;
                }
                for &(id, created) in w.handled {
                    handled
                        .insert((created, tk, id), ())
                        .map_err(|x| e(x.into()))?;
                }
                written.bytes += 24 * w.handled.len() as u64;
                written.rows += w.handled.len() as u64;
                if let Some((from, to)) = w.cut {
                    let before = handled.len().map_err(|x| e(x.into()))?;
                    handled
                        .retain_in((from, 0, 0)..(to, 0, 0), |k, _| k.1 != tk)
                        .map_err(|x| e(x.into()))?;
                    let after = handled.len().map_err(|x| e(x.into()))?;
                    written.rows += before.saturating_sub(after);
                }
                for f in &w.failures_added {
                    let bytes = postcard::to_allocvec(f).map_err(|x| self.io_err(x))?;
                    failures
                        .insert(schema::failure_key(tk, f), bytes.as_slice())
                        .map_err(|x| e(x.into()))?;
                    written.bytes += 24 + bytes.len() as u64;
                    written.rows += 1;
                }
            }
            for key in evicted {
                failures.remove(key).map_err(|x| e(x.into()))?;
                written.rows += 1;
            }
            for target in removed {
                let tk = schema::target_key(target);
                targets
                    .remove(target.to_string().as_str())
                    .map_err(|x| e(x.into()))?;
                // Rare (a webhook gone past its grace): a scan of each table.
                handled.retain(|k, _| k.1 != tk).map_err(|x| e(x.into()))?;
                failures.retain(|k, _| k.1 != tk).map_err(|x| e(x.into()))?;
                written.rows += 1;
            }
            if set_version {
                let mut meta = txn.open_table(META).map_err(|x| e(x.into()))?;
                meta.insert("version", VERSION.to_string().as_str())
                    .map_err(|x| e(x.into()))?;
            }
        }
        txn.commit().map_err(|x| e(x.into()))?;
        Ok(written)
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

/// Checks that the file is a state file of a version this exporter reads;
/// its version.
fn check_meta(db: &impl ReadableDatabase, path: &Path) -> Result<u32, StateError> {
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
    Ok(version)
}

/// Where an unusable state file is moved: beside it, never over anything.
fn aside_path(path: &Path) -> PathBuf {
    let stamp = crate::clock::unix_now_ms();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".unusable-{stamp}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as version 1 wrote it: one JSON row per target.
    fn write_v1(path: &Path, rows: &[(&str, &str)]) {
        let db = Database::create(path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("format", FORMAT).expect("format");
            meta.insert("version", "1").expect("version");
            let mut targets = txn.open_table(TARGETS).expect("targets");
            for (k, v) in rows {
                targets.insert(*k, v.as_bytes()).expect("row");
            }
        }
        txn.commit().expect("commit");
    }

    const V1: &str = r#"{"baselined":true,"since_ms":null,"order":"newest_first",
        "last_total":12,"horizon_ms":1700000000000,"newest_ms":1700000060000,
        "handled":{"log-1":1700000060000,"log-2":1700000050000},"pending":{},"gaps":[],
        "oversized":[],"per_page":null,"per_page_good":0,
        "counts":{"attempts":[[{"event":"e","status":"failed","code":"500"},7],
            [{"event":"e","status":"success","code":"200"},5]],
            "duration":{},"attempt_number":{},"retries":3,
            "lag":{"buckets":[],"sum":0.0},"last_attempt":{},"missed":{"retention":2},
            "invalid_fields":[],
            "failures":[{"id":"log-1","created_ms":1700000060000,"created_at":null,
                "delivered_at":null,"event":"e","attempt":4,"status":"failed","http_status":500,
                "duration_ms":12.0,"error":"HTTP 500","response":null}]}}"#;

    /// An upgrade loses no counter: a version 1 file opens, is rewritten in
    /// version 2 in one transaction, and opens again the same.
    #[test]
    fn a_version_1_file_is_upgraded_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let t = "campaigns/c1/webhooks/w1";
        write_v1(&path, &[(t, V1)]);
        let (store, states) = StateStore::open(&path, None).expect("opens");
        let target: Target = t.parse().expect("target");
        let s = &states[&target];
        assert_eq!(s.counts.total(), 12);
        assert_eq!(s.counts.retries, 3);
        assert_eq!(s.counts.missed["retention"], 2);
        assert!(s.is_handled("log-1") && s.is_handled("log-2"));
        assert_eq!(s.failures.len(), 1);
        drop(store);
        let version = {
            let db = Database::create(&path).expect("reopen");
            check_meta(&db, &path).expect("meta")
        };
        assert_eq!(version, VERSION);
        let (_, again) = StateStore::open(&path, None).expect("opens again");
        assert_eq!(again, states);
    }

    /// A commit adds handled ids, cuts those below the horizon, replaces
    /// the failures and the row; opened again, the file holds just that.
    #[test]
    fn commits_write_what_changed_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let (store, _) = StateStore::open(&path, None).expect("creates");
        let target: Target = "agents/a1/webhooks/w9".parse().expect("target");
        let mut state = TargetState::watching_since(10);
        state.horizon_ms = 100;
        for (i, created) in [100, 150, 200].into_iter().enumerate() {
            state.handle(&format!("id-{i}"), created);
        }
        let row = schema::encode_row(&state).expect("row");
        let handled = std::mem::take(&mut state.journal);
        let written = store
            .commit(
                &[Write {
                    target: &target,
                    row: Some(&row),
                    handled: &handled,
                    cut: None,
                    failures_added: Vec::new(),
                }],
                &[],
                &[],
            )
            .expect("commit");
        assert_eq!(written.rows, 4);
        state.horizon_ms = 150;
        state.handled.retain(|_, c| *c >= 150);
        let row = schema::encode_row(&state).expect("row");
        store
            .commit(
                &[Write {
                    target: &target,
                    row: Some(&row),
                    handled: &[],
                    cut: Some((100, 150)),
                    failures_added: Vec::new(),
                }],
                &[],
                &[],
            )
            .expect("commit");
        drop(store);
        let (store, states) = StateStore::open(&path, None).expect("opens");
        assert_eq!(states[&target], state);
        assert!(!states[&target].is_handled("id-0") && states[&target].is_handled("id-2"));
        store
            .commit(&[], std::slice::from_ref(&target), &[])
            .expect("forget");
        drop(store);
        let (_, states) = StateStore::open(&path, None).expect("opens");
        assert!(states.is_empty());
    }
}

//! Persistence of per-target state (`--state.file`) with "commit, then
//! publish" semantics.
//!
//! The file is a [redb] database: one row per target holding its whole
//! [`TargetState`] (read position, dedupe memory, pending ids, counters), so
//! each target's counters and position are always committed together. A
//! committer task gathers the states pollers hand it, writes only those that
//! changed in one transaction, and only after that transaction is durable
//! makes their snapshots visible on `/metrics`. An idle poll changes
//! nothing and writes nothing.
//!
//! [redb]: https://docs.rs/redb

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::collector::TargetState;
use crate::metrics::{Published, TargetSnapshot};
use crate::target::Target;

const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Marks a file as ours.
const FORMAT: &str = "talkover-exporter-state";
/// Bumped whenever the stored shape of [`TargetState`] changes.
const VERSION: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a database we can open (corrupt, truncated, not redb at all).
    #[error("state file {path} is unreadable: {detail}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What redb said.
        detail: String,
    },
    /// A redb file that is not a talkover-exporter state file.
    #[error("state file {path} is not a talkover-exporter state file")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer version of the exporter.
    #[error("state file {path} has format version {found}, newer than this exporter's {VERSION}")]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A stored target state could not be decoded.
    #[error("state file {path}: entry {key:?} is corrupt: {detail}")]
    CorruptEntry {
        /// The file.
        path: PathBuf,
        /// The row key.
        key: String,
        /// The decode error.
        detail: String,
    },
    /// A read or write failed (disk full, read-only volume, …).
    #[error("state file {path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// The open state file.
#[derive(Debug)]
pub struct StateStore {
    /// `None` after a failed commit: redb refuses further use of a database
    /// that saw an I/O error, so the next commit opens it again (which
    /// also repairs it). A std lock: only blocking threads take it.
    db: std::sync::Mutex<Option<Database>>,
    path: PathBuf,
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
            Err(err @ StateError::Io { .. }) => return Err(err),
            Err(err) => {
                let aside = aside_path(path);
                error!(error = %err, moved_to = %aside.display(), "state file unusable; moved aside, starting fresh");
                std::fs::rename(path, &aside).map_err(|e| StateError::Io {
                    path: path.to_path_buf(),
                    detail: format!("moving it aside to {}: {e}", aside.display()),
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
        let io = |e: &dyn std::fmt::Display| StateError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let is_new = match std::fs::metadata(path) {
            Ok(m) => m.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(&e)),
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

    fn io_err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        }
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
            let corrupt = |detail: String| StateError::CorruptEntry {
                path: self.path.clone(),
                key: k.value().to_string(),
                detail,
            };
            let target: Target = k
                .value()
                .parse()
                .map_err(|e: crate::target::ParseTargetError| corrupt(e.to_string()))?;
            let state: TargetState =
                serde_json::from_slice(v.value()).map_err(|e| corrupt(e.to_string()))?;
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
            StateError::Io {
                path: path.to_path_buf(),
                detail: io.to_string(),
            }
        }
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StateError::Io {
                path: path.to_path_buf(),
                detail: "already open by another process (another exporter?)".into(),
            }
        }
        other => StateError::Unreadable {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// Checks that the file is a state file of a version this exporter reads.
fn check_meta(db: &impl ReadableDatabase, path: &Path) -> Result<(), StateError> {
    let foreign = || StateError::Foreign {
        path: path.to_path_buf(),
    };
    let txn = db.begin_read().map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
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
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            found: version,
        });
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

/// What the committer is asked to do for one target.
#[derive(Debug)]
pub enum Change {
    /// Commit this state, then publish its snapshot.
    Save(Box<Pending>),
    /// The target is gone for good: delete its row.
    Forget(Target),
}

impl Change {
    fn target(&self) -> &Target {
        match self {
            Change::Save(p) => &p.target,
            Change::Forget(t) => t,
        }
    }
}

/// One target's state after a poll, on its way to being committed and published.
#[derive(Debug)]
pub struct Pending {
    /// The target.
    pub target: Target,
    /// Its serialized [`TargetState`].
    pub bytes: Vec<u8>,
    /// What to publish once committed.
    pub snapshot: TargetSnapshot,
}

/// Serializes a state for the store.
pub fn encode(state: &TargetState) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Self-metrics of the committer.
#[derive(Debug, Clone)]
struct CommitMetrics {
    commits: IntCounterVec,
    duration: Histogram,
    last_success: IntGauge,
}

impl CommitMetrics {
    fn register(published: &Published) -> CommitMetrics {
        let commits = IntCounterVec::new(
            Opts::new(
                "talkover_exporter_state_commits_total",
                "State file commits, by result (success or failure).",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "talkover_exporter_state_commit_duration_seconds",
                "Time taken by one durable commit of the state file.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let last_success = IntGauge::new(
            "talkover_exporter_state_last_commit_timestamp_seconds",
            "Unix time of the last successful state file commit.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        for result in ["success", "failure"] {
            commits.with_label_values(&[result]);
        }
        let registry = published.registry();
        let _ = registry.register(Box::new(commits.clone()));
        let _ = registry.register(Box::new(duration.clone()));
        let _ = registry.register(Box::new(last_success.clone()));
        CommitMetrics {
            commits,
            duration,
            last_success,
        }
    }
}

/// Metric options above are constants that always validate.
fn unreachable_metric<T>() -> T {
    unreachable!("constant metric definitions are valid")
}

/// How long the committer gathers states before writing them together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Commits what pollers send and publishes it once durable, until every
/// sender is gone; then it commits what is left and returns.
pub async fn run_committer(
    store: StateStore,
    mut rx: mpsc::Receiver<Change>,
    published: Arc<Published>,
) {
    let mut committer = Committer {
        store: Arc::new(store),
        metrics: CommitMetrics::register(&published),
        published,
        committed: HashMap::new(),
        retry: BTreeMap::new(),
        failures: 0,
    };
    loop {
        let first = if committer.retry.is_empty() {
            rx.recv().await
        } else {
            let backoff = Duration::from_millis(500u64 << committer.failures.min(6));
            tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep(backoff) => committer.retry.pop_first().map(|(_, c)| c),
            }
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = std::mem::take(&mut committer.retry);
        batch.insert(first.target().clone(), first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(c)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            // A newer change for a target replaces an older one in the batch.
            batch.insert(c.target().clone(), c);
        }
        committer.commit(batch).await;
    }
    if !committer.retry.is_empty() {
        let batch = std::mem::take(&mut committer.retry);
        committer.commit(batch).await;
    }
    info!("state committer stopped");
}

/// The committer's working state.
struct Committer {
    store: Arc<StateStore>,
    metrics: CommitMetrics,
    published: Arc<Published>,
    /// Digest of what is durable per target, so unchanged states are not rewritten.
    committed: HashMap<Target, u64>,
    /// Changes whose commit failed, retried with the next batch.
    retry: BTreeMap<Target, Change>,
    /// Failed commits in a row.
    failures: u32,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Committer {
    /// Commits one batch in one transaction, then publishes its snapshots.
    async fn commit(&mut self, batch: BTreeMap<Target, Change>) {
        let mut changed: Vec<(Target, Vec<u8>)> = Vec::new();
        let mut removed: Vec<Target> = Vec::new();
        for change in batch.values() {
            match change {
                Change::Save(p) if self.committed.get(&p.target) != Some(&digest(&p.bytes)) => {
                    changed.push((p.target.clone(), p.bytes.clone()));
                }
                Change::Save(_) => {}
                Change::Forget(t) => removed.push(t.clone()),
            }
        }
        if changed.is_empty() && removed.is_empty() {
            self.publish(batch);
            return;
        }
        let started = Instant::now();
        let store = self.store.clone();
        let (to_write, to_remove) = (changed.clone(), removed.clone());
        let result = tokio::task::spawn_blocking(move || store.commit(&to_write, &to_remove))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Io {
                    path: self.store.path.clone(),
                    detail: format!("commit task failed: {e}"),
                })
            });
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.metrics.commits.with_label_values(&["success"]).inc();
                self.metrics
                    .last_success
                    .set(crate::clock::unix_now_ms() / 1000);
                if self.failures > 0 {
                    info!("state file commits work again");
                }
                self.failures = 0;
                for (target, bytes) in &changed {
                    self.committed.insert(target.clone(), digest(bytes));
                }
                for target in &removed {
                    self.committed.remove(target);
                }
                self.publish(batch);
            }
            Err(err) => {
                self.metrics.commits.with_label_values(&["failure"]).inc();
                if self.failures == 0 {
                    warn!(error = %err, "state file commit failed; counting and publishing go on, restart exactness is at risk until commits work again");
                }
                self.failures = self.failures.saturating_add(1);
                // Alerting matters more than restart exactness: publish anyway, retry the commit.
                for (target, change) in batch {
                    if let Change::Save(p) = &change {
                        self.published.publish(p.snapshot.clone());
                    }
                    self.retry.insert(target, change);
                }
            }
        }
    }

    fn publish(&self, batch: BTreeMap<Target, Change>) {
        for change in batch.into_values() {
            if let Change::Save(p) = change {
                self.published.publish(p.snapshot);
            }
        }
    }
}

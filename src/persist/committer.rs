//! The committer: gathers what pollers hand it over a short window, writes
//! what changed of every webhook in one durable transaction, and only then
//! publishes their snapshots ("commit, then publish").
//!
//! It also keeps each webhook's last state as handed on (its row, handled
//! ids and kept failures), with or without a state file: a commit is then a
//! difference against it, and a poller that died resumes from it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::schema::{self, EntryKey};
use super::store::{Write, Written};
use super::{Problem, StateError, StateStore};
use crate::backoff::Backoff;
use crate::metrics::Published;
use crate::model::{FailedAttempt, Failures, TargetSnapshot, TargetState};
use crate::target::Target;

/// What the committer is asked to do for one target.
#[derive(Debug)]
pub enum Change {
    /// Commit this state, then publish its snapshot.
    Save(Box<Commit>),
    /// The target is gone for good: delete its rows.
    Forget(Target),
    /// The target's last state handed on, once everything sent before is
    /// done: what a poller that died resumes from.
    Reload(Target, oneshot::Sender<Option<TargetState>>),
}

/// One target's state after a poll, on its way to being committed and published.
#[derive(Debug)]
pub struct Commit {
    /// Whose state this is.
    pub target: Target,
    /// Its row (see `schema`).
    pub row: Vec<u8>,
    /// Ids it dealt with since the last commit: `(id key, created_at ms)`.
    pub handled: Vec<(u64, i64)>,
    /// Its horizon: handled ids created before it are forgotten.
    pub horizon_ms: i64,
    /// Its kept failed attempts.
    pub failures: Arc<Failures>,
    /// What to publish once committed.
    pub snapshot: TargetSnapshot,
}

/// Self-metrics of the committer.
#[derive(Debug, Clone)]
struct CommitMetrics {
    commits: IntCounterVec,
    duration: Histogram,
    last_success: IntGauge,
    bytes: IntCounter,
    rows: IntCounter,
    batch: Histogram,
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
        let bytes = IntCounter::new(
            "talkover_exporter_state_written_bytes_total",
            "Bytes of keys and values the state file's commits wrote (the database writes them in pages, so the disk sees more).",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let rows = IntCounter::new(
            "talkover_exporter_state_written_rows_total",
            "Rows the state file's commits inserted or removed.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let batch = Histogram::with_opts(
            HistogramOpts::new(
                "talkover_exporter_state_commit_webhooks",
                "Webhooks written by one state file commit (one durable transaction for all of them).",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        for result in ["success", "failure"] {
            commits.with_label_values(&[result]);
        }
        let registry = published.registry();
        crate::metrics::register(registry, commits.clone());
        crate::metrics::register(registry, duration.clone());
        crate::metrics::register(registry, last_success.clone());
        crate::metrics::register(registry, bytes.clone());
        crate::metrics::register(registry, rows.clone());
        crate::metrics::register(registry, batch.clone());
        CommitMetrics {
            commits,
            duration,
            last_success,
            bytes,
            rows,
            batch,
        }
    }
}

/// Metric options above are constants that always validate.
fn unreachable_metric<T>() -> T {
    unreachable!("constant metric definitions are valid")
}

/// Waits before a failed commit is tried again (no jitter: one committer).
const RETRY: Backoff = Backoff {
    min: Duration::from_millis(500),
    max: Duration::from_secs(32),
    jitter: 0.0,
};

/// How the committer runs.
#[derive(Debug)]
pub(super) struct CommitterConfig {
    /// The state file, if there is one.
    pub store: Option<StateStore>,
    /// The states it held at start (they are durable already).
    pub restored: BTreeMap<Target, TargetState>,
    /// How long it gathers what pollers hand it before one commit: what
    /// turns one transaction per poll into one per window.
    pub window: Duration,
}

/// The window for a poll interval: the interval itself, from 50 ms up to
/// a second. A window as long as a poll cycle gathers each busy poller's
/// change once per transaction (half of it wrote twice as many
/// transactions for the same entries); snapshots reach `/metrics` at most
/// a second later, well inside a scrape interval.
pub(super) fn commit_window(poll_interval: Duration) -> Duration {
    poll_interval.clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Commits what pollers send and publishes it once durable, until every
/// sender is gone; then it commits what is left and returns.
pub(super) async fn run_committer(
    config: CommitterConfig,
    mut rx: mpsc::Receiver<Change>,
    published: Arc<Published>,
) {
    let mut c = Committer {
        metrics: CommitMetrics::register(&published),
        store: config.store.map(Arc::new),
        published,
        kept: config
            .restored
            .into_iter()
            .map(|(t, s)| {
                let kept = Kept::durable(&t, &s);
                (t, kept)
            })
            .collect(),
        dirty: BTreeSet::new(),
        forgotten: Vec::new(),
        evicted: Vec::new(),
        unpublished: BTreeMap::new(),
        failures: 0,
    };
    loop {
        let first = if c.failures == 0 || !c.dirty() {
            rx.recv().await
        } else {
            tokio::select! {
                change = rx.recv() => change,
                _ = tokio::time::sleep(RETRY.base(c.failures.saturating_add(1))) => {
                    c.flush().await;
                    continue;
                }
            }
        };
        let Some(first) = first else {
            break;
        };
        c.take(first).await;
        let deadline = tokio::time::Instant::now() + config.window;
        while let Ok(Some(change)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            c.take(change).await;
        }
        c.flush().await;
    }
    c.flush().await;
    info!("state committer stopped");
}

/// What the committer knows of one target.
#[derive(Debug)]
struct Kept {
    /// Its key in the handled and failure tables.
    tk: u64,
    /// Its last state handed on: row (and the row's digest), handled ids
    /// `(created_at, id key)`, horizon, kept failures.
    row: Vec<u8>,
    row_digest: u64,
    handled: BTreeSet<(i64, u64)>,
    horizon_ms: i64,
    failures: Arc<Failures>,
    /// What of it the state file holds: the row's digest, the horizon its
    /// handled ids were cut at (`None`: none of it written yet), the kept
    /// failures.
    durable_row: Option<u64>,
    durable_horizon: Option<i64>,
    durable_failures: Arc<Failures>,
    /// Handled ids handed on and not durable yet.
    undurable: Vec<(u64, i64)>,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Kept {
    fn new(target: &Target) -> Kept {
        Kept {
            tk: schema::target_key(target),
            row: Vec::new(),
            row_digest: digest(&[]),
            handled: BTreeSet::new(),
            horizon_ms: i64::MIN,
            failures: Arc::default(),
            durable_row: None,
            durable_horizon: None,
            durable_failures: Arc::default(),
            undurable: Vec::new(),
        }
    }

    /// A target as the state file held it at start.
    fn durable(target: &Target, state: &TargetState) -> Kept {
        let mut kept = Kept::new(target);
        match schema::encode_row(state) {
            Ok(row) => {
                kept.row_digest = digest(&row);
                kept.durable_row = Some(kept.row_digest);
                kept.row = row;
            }
            // Not written: its poller's first commit writes a row.
            Err(e) => {
                error!(target = %target, error = %e, "a restored state cannot be encoded again")
            }
        }
        kept.handled = state.handled.iter().map(|(k, c)| (*c, *k)).collect();
        kept.horizon_ms = state.horizon_ms;
        kept.durable_horizon = Some(state.horizon_ms);
        kept.failures = state.failures.clone();
        kept.durable_failures = state.failures.clone();
        kept
    }

    /// Takes what a poll handed on.
    fn apply(&mut self, c: &mut Commit, durable: bool) {
        self.row = std::mem::take(&mut c.row);
        self.row_digest = digest(&self.row);
        // An id handled below the horizon (a pending one that turned final
        // late) is forgotten in the same poll: never written.
        c.handled.retain(|(_, created)| *created >= c.horizon_ms);
        for &(key, created) in &c.handled {
            self.handled.insert((created, key));
        }
        if durable {
            self.undurable.append(&mut c.handled);
        }
        if c.horizon_ms > self.horizon_ms {
            self.horizon_ms = c.horizon_ms;
            self.handled = self.handled.split_off(&(c.horizon_ms, 0));
        }
        self.failures = c.failures.clone();
    }

    /// Whether the state file lags what was handed on.
    fn dirty(&self) -> bool {
        self.durable_row != Some(self.row_digest)
            || !self.undurable.is_empty()
            || self.durable_horizon.is_some_and(|h| self.horizon_ms > h)
            || !same_failures(&self.failures, &self.durable_failures)
    }

    /// The handled ids to cut: those created between the horizon the state
    /// file has and the current one.
    fn cut(&self) -> Option<(i64, i64)> {
        self.durable_horizon
            .filter(|h| self.horizon_ms > *h)
            .map(|h| (h, self.horizon_ms))
    }

    /// The last state handed on, whole.
    fn state(&self) -> Result<TargetState, schema::SchemaError> {
        let mut oldest_first: Vec<FailedAttempt> = self.failures.iter().cloned().collect();
        oldest_first.reverse();
        schema::decode_row(&self.row, self.handled.iter().copied(), oldest_first)
    }
}

/// Whether two rings hold the same failures: the same ring (unchanged, and
/// shared) or equal ones.
fn same_failures(a: &Arc<Failures>, b: &Arc<Failures>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// One target's write, owned, for the blocking pool.
struct OwnedWrite {
    target: Target,
    row: Option<Vec<u8>>,
    handled: Vec<(u64, i64)>,
    cut: Option<(i64, i64)>,
    failures_added: Vec<FailedAttempt>,
}

/// Failures no longer kept are deleted in batches of at least this many:
/// keyed by time, they lie among other webhooks' older rows, and a batch
/// rewrites each of those pages once. Until then a restart reads a few
/// more than kept, and the ring drops them.
const EVICT_BATCH: usize = 256;

/// The committer's working state.
struct Committer {
    store: Option<Arc<StateStore>>,
    metrics: CommitMetrics,
    published: Arc<Published>,
    kept: BTreeMap<Target, Kept>,
    /// Targets whose state the state file may lag.
    dirty: BTreeSet<Target>,
    /// Targets gone for good whose rows the state file still holds.
    forgotten: Vec<Target>,
    /// Kept failures pushed out of their rings, not deleted yet.
    evicted: Vec<EntryKey>,
    /// Snapshots waiting for the next commit.
    unpublished: BTreeMap<Target, TargetSnapshot>,
    /// Failed commits in a row.
    failures: u32,
}

impl Committer {
    fn dirty(&self) -> bool {
        !self.forgotten.is_empty() || !self.dirty.is_empty()
    }

    async fn take(&mut self, change: Change) {
        match change {
            Change::Save(mut c) => {
                let durable = self.store.is_some();
                self.kept
                    .entry(c.target.clone())
                    .or_insert_with(|| Kept::new(&c.target))
                    .apply(&mut c, durable);
                if durable {
                    self.dirty.insert(c.target.clone());
                }
                let Commit {
                    target, snapshot, ..
                } = *c;
                self.unpublished.insert(target, snapshot);
            }
            Change::Forget(target) => {
                self.kept.remove(&target);
                self.dirty.remove(&target);
                self.unpublished.remove(&target);
                if self.store.is_some() {
                    self.forgotten.push(target);
                }
            }
            Change::Reload(target, reply) => {
                self.flush().await;
                let state = self.kept.get(&target).and_then(|k| match k.state() {
                    Ok(state) => Some(state),
                    Err(e) => {
                        error!(target = %target, error = %e, "the last state handed on cannot be read back");
                        None
                    }
                });
                let _ = reply.send(state);
            }
        }
    }

    /// Commits what changed, then publishes what was handed on. A failed
    /// commit still publishes (alerting matters more than restart
    /// exactness) and is tried again later, with everything since.
    async fn flush(&mut self) {
        if let Some(store) = self.store.clone() {
            let writes = self.writes();
            if !writes.is_empty() || !self.forgotten.is_empty() {
                let webhooks = writes.len();
                let removed = self.forgotten.clone();
                let evicted = if self.evicted.len() >= EVICT_BATCH {
                    let mut keys = self.evicted.clone();
                    keys.sort_unstable();
                    keys
                } else {
                    Vec::new()
                };
                let evicting = evicted.len();
                let started = Instant::now();
                let result = tokio::task::spawn_blocking(move || {
                    let borrowed: Vec<Write<'_>> = writes
                        .iter()
                        .map(|w| Write {
                            target: &w.target,
                            row: w.row.as_deref(),
                            handled: &w.handled,
                            cut: w.cut,
                            failures_added: w.failures_added.iter().collect(),
                        })
                        .collect();
                    store
                        .commit(&borrowed, &removed, &evicted)
                        .map(|written| (writes, written))
                })
                .await
                .unwrap_or_else(|e| {
                    Err(StateError {
                        path: Default::default(),
                        problem: Problem::Io(e.into()),
                    })
                });
                self.metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok((writes, written)) => {
                        self.evicted.drain(..evicting);
                        self.committed(&writes, written, webhooks);
                    }
                    Err(err) => {
                        // Tried again with everything since.
                        self.dirty.extend(
                            self.kept
                                .keys()
                                .filter(|t| self.kept.get(*t).is_some_and(Kept::dirty))
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                        self.metrics.commits.with_label_values(&["failure"]).inc();
                        if self.failures == 0 {
                            warn!(error = %err, "state file commit failed; counting and publishing go on, restart exactness is at risk until commits work again");
                        }
                        self.failures = self.failures.saturating_add(1);
                    }
                }
            }
        }
        for snapshot in std::mem::take(&mut self.unpublished).into_values() {
            self.published.publish(snapshot);
        }
    }

    /// What the state file lacks of every target that changed, owned.
    fn writes(&mut self) -> Vec<OwnedWrite> {
        let mut out = Vec::new();
        for target in std::mem::take(&mut self.dirty) {
            let Some(k) = self.kept.get(&target) else {
                continue;
            };
            if !k.dirty() {
                // An idle poll: nothing to write.
                continue;
            }
            let mut failures_added = Vec::new();
            if !same_failures(&k.failures, &k.durable_failures) {
                let key = |f: &FailedAttempt| schema::failure_key(k.tk, f);
                let now: BTreeSet<EntryKey> = k.failures.iter().map(key).collect();
                let before: BTreeSet<EntryKey> = k.durable_failures.iter().map(key).collect();
                failures_added = k
                    .failures
                    .iter()
                    .filter(|f| !before.contains(&key(f)))
                    .cloned()
                    .collect();
                self.evicted.extend(before.difference(&now));
            }
            out.push(OwnedWrite {
                target,
                row: (k.durable_row != Some(k.row_digest)).then(|| k.row.clone()),
                // Kept until the commit succeeds: a failed one is retried.
                handled: k.undurable.clone(),
                cut: k.cut(),
                failures_added,
            });
        }
        out
    }

    fn committed(&mut self, writes: &[OwnedWrite], written: Written, webhooks: usize) {
        self.metrics.commits.with_label_values(&["success"]).inc();
        self.metrics
            .last_success
            .set(crate::clock::unix_now_ms() / 1000);
        self.metrics.bytes.inc_by(written.bytes);
        self.metrics.rows.inc_by(written.rows);
        self.metrics.batch.observe(webhooks as f64);
        if self.failures > 0 {
            info!("state file commits work again");
        }
        self.failures = 0;
        self.forgotten.clear();
        for w in writes {
            let Some(k) = self.kept.get_mut(&w.target) else {
                continue;
            };
            if let Some(row) = &w.row {
                k.durable_row = Some(digest(row));
            }
            // Only what this commit wrote.
            k.undurable.drain(..w.handled.len().min(k.undurable.len()));
            // Its first commit writes no cut: nothing of it was there before.
            let cut_to = w.cut.map(|(_, to)| to);
            k.durable_horizon = Some(cut_to.or(k.durable_horizon).unwrap_or(k.horizon_ms));
            k.durable_failures = k.failures.clone();
        }
    }
}

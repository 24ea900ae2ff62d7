//! The committer: gathers the states pollers hand it, writes those that
//! changed in one durable transaction, and only then publishes them.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Problem, StateError, StateStore};
use crate::backoff::Backoff;
use crate::metrics::Published;
use crate::model::{TargetSnapshot, TargetState};
use crate::target::Target;

/// What the committer is asked to do for one target.
#[derive(Debug)]
pub enum Change {
    /// Commit this state, then publish its snapshot.
    Save(Box<Commit>),
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
pub struct Commit {
    /// Whose state this is.
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

/// Waits before a failed commit is tried again (no jitter: one committer).
const RETRY: Backoff = Backoff {
    min: Duration::from_millis(500),
    max: Duration::from_secs(32),
    jitter: 0.0,
};

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
            let backoff = RETRY.base(committer.failures.saturating_add(1));
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
                Err(StateError {
                    path: self.store.path.clone(),
                    problem: Problem::Io(e.into()),
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

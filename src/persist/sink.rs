//! Where a webhook's state goes after each poll: through the committer
//! ("commit, then publish"), or straight to `/metrics` where nothing is
//! committed (benchmarks).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::committer::{Change, Commit};
use super::schema;
use crate::metrics::Published;
use crate::model::{PollStats, TargetSnapshot, TargetState};
use crate::target::Target;

/// Where a target's state goes after each poll.
#[derive(Debug, Clone)]
pub struct Sink {
    /// What scrapes read.
    pub published: Arc<Published>,
    /// The committer; without one, snapshots are published at once.
    pub commits: Option<mpsc::Sender<Change>>,
}

impl Sink {
    /// Hands on a webhook's state after a poll: its row, the ids it dealt
    /// with since the last time (taken from its journal), its failures, and
    /// the snapshot to publish once they are committed. A state that cannot
    /// be encoded is not handed on at all (its journal is kept for the next
    /// time), never as an empty row: the last commit stands.
    pub async fn submit(&self, target: &Target, state: &mut TargetState, stats: &PollStats) {
        let Some(tx) = &self.commits else {
            state.journal.clear();
            self.published
                .publish(TargetSnapshot::of(target, state, stats));
            return;
        };
        let row = match schema::encode_row(state) {
            Ok(row) => row,
            Err(e) => {
                error!(target = %target, error = %e, "a webhook's state could not be encoded; it is not committed or published, the last commit stands");
                return;
            }
        };
        let commit = Commit {
            target: target.clone(),
            row,
            handled: std::mem::take(&mut state.journal),
            horizon_ms: state.horizon_ms,
            failures: state.failures.clone(),
            snapshot: TargetSnapshot::of(target, state, stats),
        };
        if let Err(mpsc::error::SendError(Change::Save(c))) =
            tx.send(Change::Save(Box::new(commit))).await
        {
            // The committer is gone (shutting down): publishing still matters more.
            self.published.publish(c.snapshot);
        }
    }

    /// A target is gone for good: its series leave `/metrics`, its rows the state file.
    pub async fn forget(&self, target: &Target) {
        self.published.remove(target);
        if let Some(tx) = &self.commits {
            let _ = tx.send(Change::Forget(target.clone())).await;
        }
    }

    /// The target's last state handed on, once everything sent before it
    /// is committed: what a poller that died resumes from. `None` if it
    /// never handed one on (or nothing is kept).
    pub async fn last_state(&self, target: &Target) -> Option<TargetState> {
        let tx = self.commits.as_ref()?;
        let (reply, answer) = oneshot::channel();
        tx.send(Change::Reload(target.clone(), reply)).await.ok()?;
        answer.await.ok().flatten()
    }
}

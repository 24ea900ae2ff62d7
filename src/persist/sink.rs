//! Where a webhook's state goes after each poll: to the committer, which
//! publishes it once it is durable ("commit, then publish").

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
    /// What scrapes read: only a target's removal goes there directly.
    published: Arc<Published>,
    /// The committer.
    commits: mpsc::Sender<Change>,
}

impl Sink {
    /// A sink handing states to the committer that reads `commits`.
    pub fn new(published: Arc<Published>, commits: mpsc::Sender<Change>) -> Sink {
        Sink { published, commits }
    }

    /// What scrapes read, for the self-metrics of those holding the sink.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Hands on a webhook's state after a poll: its row, the ids it dealt
    /// with since the last time (taken from its journal), its failures, and
    /// the snapshot to publish once they are committed. A state that cannot
    /// be encoded is not handed on at all (its journal is kept for the next
    /// time), never as an empty row: the last commit stands.
    pub async fn submit(&self, target: &Target, state: &mut TargetState, stats: &PollStats) {
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
        if self
            .commits
            .send(Change::Save(Box::new(commit)))
            .await
            .is_err()
        {
            // Only a committer that died drops its receiver while pollers
            // run (the process is exiting then): what it did not commit is
            // not published, or a restart would show the counters fall.
            error!(target = %target, "the state committer is gone; this poll's state is neither committed nor published");
        }
    }

    /// A target is gone for good: its series leave `/metrics`, its rows the state file.
    pub async fn forget(&self, target: &Target) {
        self.published.remove(target);
        let _ = self.commits.send(Change::Forget(target.clone())).await;
    }

    /// The target's last state handed on, once everything sent before it
    /// is committed: what a poller that died resumes from. `None` if it
    /// never handed one on.
    pub async fn last_state(&self, target: &Target) -> Option<TargetState> {
        let (reply, answer) = oneshot::channel();
        self.commits
            .send(Change::Reload(target.clone(), reply))
            .await
            .ok()?;
        answer.await.ok().flatten()
    }
}

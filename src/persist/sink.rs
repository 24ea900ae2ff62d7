//! Where a webhook's state goes after each poll: straight to `/metrics`,
//! or first through the state file's committer ("commit, then publish").

use std::sync::Arc;

use tokio::sync::mpsc;

use super::committer::{encode, Change, Commit};
use crate::metrics::Published;
use crate::model::{PollStats, TargetSnapshot, TargetState};
use crate::target::Target;

/// Where a target's state goes after each poll: straight to `/metrics`, or
/// first through the state file's committer ("commit, then publish").
#[derive(Debug, Clone)]
pub struct Sink {
    /// What scrapes read.
    pub published: Arc<Published>,
    /// The committer, when `--state.file` is set.
    pub commits: Option<mpsc::Sender<Change>>,
}

impl Sink {
    /// Hands on a webhook's state after a poll.
    pub async fn submit(&self, target: &Target, state: &TargetState, stats: &PollStats) {
        let snap = TargetSnapshot::of(target, state, stats);
        match &self.commits {
            None => self.published.publish(snap),
            Some(tx) => {
                let commit = Commit {
                    target: target.clone(),
                    bytes: encode(state),
                    snapshot: snap,
                };
                if let Err(mpsc::error::SendError(Change::Save(p))) =
                    tx.send(Change::Save(Box::new(commit))).await
                {
                    // The committer is gone (shutting down): publishing still matters more.
                    self.published.publish(p.snapshot);
                }
            }
        }
    }

    /// A target is gone for good: its series leave `/metrics`, its row the state file.
    pub async fn forget(&self, target: &Target) {
        self.published.remove(target);
        if let Some(tx) = &self.commits {
            let _ = tx.send(Change::Forget(target.clone())).await;
        }
    }
}

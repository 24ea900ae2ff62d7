//! What a scrape shows of one webhook: its counters and its polling's
//! self-observations, replaced whole after each poll.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{DeliveryCounts, Failures, MinuteHistory, TargetState, WebhookSettings};
use crate::target::Target;

/// Self-observations of one target's polling; reset on restart.
#[derive(Debug, Clone, Default)]
pub struct PollStats {
    /// Whether the last poll succeeded.
    pub up: bool,
    /// API requests by outcome and HTTP code.
    pub requests: BTreeMap<(&'static str, String), u64>,
    /// Failed polls by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// When each reason's series began (this host's clock, Unix ms).
    pub errors_created: BTreeMap<&'static str, i64>,
    /// Polls finished, successful or not.
    pub polls: u64,
    /// How long the last poll took, in seconds.
    pub last_duration: Option<f64>,
    /// Unix time of the last successful poll.
    pub last_success: Option<f64>,
}

/// What one scrape shows of one target.
#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    /// Whose series these are.
    pub target: Target,
    /// Its counters.
    pub counts: DeliveryCounts,
    /// Its last failed attempts.
    pub failures: Arc<Failures>,
    /// Its polling self-metrics.
    pub stats: PollStats,
    /// Attempts seen in flight and not yet final.
    pub pending: u64,
    /// Estimated entries listed by the API but not read yet.
    pub backlog: u64,
    /// Its settings as the API last gave them; `None` while unknown.
    pub settings: Option<WebhookSettings>,
}

impl PollStats {
    /// Counts a failed poll for `reason` at `now_ms`.
    pub fn failed(&mut self, reason: &'static str, now_ms: i64) {
        *self.errors.entry(reason).or_default() += 1;
        self.errors_created.entry(reason).or_insert(now_ms);
    }
}

impl TargetSnapshot {
    /// What scrapes see of `target` in `state`.
    pub fn of(target: &Target, state: &TargetState, stats: &PollStats) -> TargetSnapshot {
        TargetSnapshot {
            target: target.clone(),
            counts: state.counts.clone(),
            failures: state.failures.clone(),
            stats: stats.clone(),
            pending: state.pending.len() as u64,
            // A stretch not read yet holds at least one entry as far as
            // anyone can tell: the backlog is never 0 while one waits.
            backlog: state.gaps.iter().map(|g| g.unread.max(1)).sum(),
            settings: state.settings.clone(),
        }
    }

    /// Its last failed attempts, newest first: shared with the state (not
    /// copied) until a poll records another.
    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    /// Its attempts and failures per minute over the last hour.
    pub fn history(&self) -> &MinuteHistory {
        &self.counts.history
    }
}

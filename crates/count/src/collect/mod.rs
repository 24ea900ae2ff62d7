//! One poll of one webhook: reads its delivery-log pages, decides which
//! entries are new, and counts every final attempt exactly once. The loop
//! that polls again and again is the exporter's (`collect::poller`).
//!
//! # How counting works
//!
//! The log is a list ordered by `created_at` (newest or oldest first: the
//! order is detected from the timestamps, not assumed). Each entry is known
//! by its `id`. Per target the collector remembers one plain value,
//! [`TargetState`](crate::model::TargetState):
//!
//! - a *horizon*: every entry created before it has been dealt with;
//! - the ids of the entries at or after the horizon already dealt with
//!   (`handled`), so an entry that shows up twice while pages shift is
//!   recognised;
//! - the ids seen *in flight* (`pending`), followed until they turn final;
//! - *gaps*: stretches of the list that a poll could not read within its
//!   page budget, with where they start, so later polls finish them;
//! - the counters themselves.
//!
//! A poll first reads the newest page and walks towards older pages while
//! they still hold entries it has not seen (a *top scan*); an idle webhook
//! costs one request. Then it spends what is left of `--poll.max-pages` on
//! the oldest gap. After the poll the horizon moves up to ten minutes
//! (of `created_at` time) behind the newest entry seen, never past a gap,
//! and `handled` forgets everything below it: memory follows traffic, not
//! uptime.
//!
//! # Files
//!
//! - `paging`: one poll: which pages to read, the baseline, backlogs.
//! - `apply`: one page applied to the state; the horizon moved after a poll.
//! - `count`: one final attempt added to the counters.

mod apply;
mod count;
mod paging;

use std::time::Duration;

use crate::api::{ApiError, ApiHealth, LogPage};
use crate::clock::ClockOffset;
use crate::model::FailurePolicy;
use crate::target::Target;

pub use count::{failure_class, is_failure, is_final, record, record_recent, Judge};
pub use paging::{poll_once, LATENESS_MS, PENDING_TIMEOUT};

/// Something that serves pages of a webhook's delivery log: the real API
/// client, or an in-memory model of the API in property tests.
pub trait PageSource {
    /// Reads page `page` (1-based) with `per_page` entries.
    fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> impl std::future::Future<Output = Result<LogPage, ApiError>> + Send;

    /// How far the API's clock (which writes `created_at`) is from this
    /// host's, if known; `None` means "assume they agree".
    fn clock_offset(&self) -> Option<ClockOffset> {
        None
    }

    /// The API's health as every webhook's requests see it, if it is
    /// tracked: a webhook that met an API fault waits for the API, not for
    /// a backoff of its own.
    fn health(&self) -> Option<&ApiHealth> {
        None
    }
}

/// How the collector polls.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time between two polls of one target.
    pub interval: Duration,
    /// Most pages read per poll of one target.
    pub max_pages: u32,
    /// Entries per page requested.
    pub per_page: u32,
    /// What is kept of failed attempts.
    pub failures: FailurePolicy,
}

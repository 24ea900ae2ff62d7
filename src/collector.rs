//! Polling: reads each watched webhook's delivery-log pages, decides which
//! entries are new, and counts every final attempt exactly once.
//!
//! # How counting works
//!
//! The log is a list ordered by `created_at` (newest or oldest first: the
//! order is detected from the timestamps, not assumed). Each entry is known
//! by its `id`. Per target the collector remembers one plain value,
//! [`TargetState`]:
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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::api::{self, ApiError, LogEntry, LogPage};
use crate::clock::{unix_now_ms, ClockOffset};
use crate::metrics::{
    AttemptKey, DeliveryCounts, PollStats, Published, TargetSnapshot, ATTEMPT_BUCKETS,
    DURATION_BUCKETS, LAG_BUCKETS,
};
use crate::state;
use crate::target::Target;

/// Whether the missing `Date` header has been logged (once per process).
static NO_DATE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How late (in `created_at` time) an entry may still appear in the listing
/// and be counted: the horizon trails the newest entry seen by this much.
pub const LATENESS_MS: i64 = 10 * 60 * 1000;
/// Distinct `event` or `status` label values per target before the rest
/// are counted as `other`.
pub const LABEL_VALUES_CAP: usize = 64;
/// How long an in-flight entry is followed before it is given up as missed.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most in-flight entries followed per target.
pub const PENDING_CAP: usize = 10_000;
/// Most remembered ids per target; past it the horizon is forced up.
pub const HANDLED_CAP: usize = 100_000;
/// Most gaps remembered per target; past it the two newest are merged.
pub const GAPS_CAP: usize = 16;
/// Good polls at a reduced page size before a larger one is tried.
pub const PAGE_GROWTH_POLLS: u32 = 50;
/// Most oversized entries remembered per target.
const OVERSIZED_CAP: usize = 64;

/// Statuses that mean "not finished yet": such entries are followed, not counted.
const IN_FLIGHT: &[&str] = &[
    "pending",
    "queued",
    "scheduled",
    "in_progress",
    "processing",
    "sending",
    "retrying",
];

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
}

impl PageSource for api::Client {
    async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<LogPage, ApiError> {
        api::Client::fetch_logs(self, target, page, per_page).await
    }

    fn clock_offset(&self) -> Option<ClockOffset> {
        self.clock().offset()
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
}

/// The order in which the API lists entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Page 1 holds the newest entries (as the documentation's examples).
    NewestFirst,
    /// Page 1 holds the oldest entries; new ones land on the last page.
    OldestFirst,
}

/// A stretch of the log that a poll could not finish reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Position (0 = newest) of the first entry not read yet, as of `total_at`.
    pub rank: u64,
    /// `pagination.total` when `rank` was measured; arrivals since shift it.
    pub total_at: u64,
    /// Entries in the gap were created at or before this (Unix ms).
    pub top_ms: i64,
    /// What `pagination.total` would be now had nothing been deleted since
    /// the gap formed: reaching the end of the list short of that is the
    /// evidence of retention.
    pub expected_total: u64,
    /// Entries older than this (Unix ms) were known before the gap formed:
    /// reaching one means the gap is closed.
    pub bottom_ms: i64,
    /// Estimated entries in the gap not read yet.
    pub unread: u64,
}

/// An entry seen in flight and followed until it turns final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Its `created_at`, Unix ms.
    pub created_ms: i64,
    /// Wall-clock Unix ms when first seen, for giving up on it.
    pub first_seen_ms: i64,
}

/// Everything remembered about one target: read position, dedupe memory,
/// in-flight ids and counters, as one value that can be saved and restored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Whether a first read has placed the baseline.
    pub baselined: bool,
    /// Until that first read: when the exporter began watching the webhook,
    /// on this host's clock (Unix ms). What the API created before this
    /// moment is history; everything after it is counted, however long the
    /// API cannot be read.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// The listing order, once seen.
    pub order: Option<Order>,
    /// `pagination.total` at the last read.
    pub last_total: Option<u64>,
    /// Every entry created before this (Unix ms) has been dealt with.
    pub horizon_ms: i64,
    /// Newest `created_at` seen (Unix ms).
    pub newest_ms: i64,
    /// Ids at or after the horizon already dealt with, and their `created_at`.
    pub handled: HashMap<String, i64>,
    /// Ids seen in flight.
    pub pending: HashMap<String, Pending>,
    /// Unfinished stretches, newest first.
    pub gaps: Vec<Gap>,
    /// Ids of the entries just older than entries too large to read even
    /// alone, so each such entry is counted as missed once.
    pub oversized: Vec<String>,
    /// Entries per page that last fit under the body-size cap, if smaller
    /// than configured; it grows back by doubling after good polls.
    pub per_page: Option<u32>,
    /// Good polls since the page size last shrank or grew.
    pub per_page_good: u32,
    /// The counters.
    pub counts: DeliveryCounts,
}

impl TargetState {
    /// The state of a webhook first watched at `since_ms` (this host's
    /// clock, Unix ms): nothing read yet, nothing counted.
    pub fn watching_since(since_ms: i64) -> TargetState {
        TargetState {
            since_ms: Some(since_ms),
            ..TargetState::default()
        }
    }
}

/// What `/-/ready` waits for: the first discovery (if any) and the first
/// poll of every target known so far, whatever their outcome.
#[derive(Debug, Default)]
pub struct Readiness {
    /// A std lock: held only for set operations, never across an await.
    waiting: std::sync::Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    discovery: bool,
    first_polls: BTreeSet<Target>,
}

impl Readiness {
    /// Readiness that also waits for a first discovery when `discovery` is set.
    pub fn new(discovery: bool) -> Readiness {
        Readiness {
            waiting: std::sync::Mutex::new(Waiting {
                discovery,
                first_polls: BTreeSet::new(),
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether everything waited for has happened.
    pub fn is_ready(&self) -> bool {
        let w = self.waiting();
        !w.discovery && w.first_polls.is_empty()
    }

    /// The first discovery has run.
    pub fn discovery_done(&self) {
        self.waiting().discovery = false;
    }

    /// A new target: wait for its first poll.
    pub fn expect(&self, target: &Target) {
        self.waiting().first_polls.insert(target.clone());
    }

    /// A target finished its first poll, or is no longer watched.
    pub fn forget(&self, target: &Target) {
        self.waiting().first_polls.remove(target);
    }
}

/// Where a target's state goes after each poll: straight to `/metrics`, or
/// first through the state file's committer ("commit, then publish").
#[derive(Debug, Clone)]
pub struct Sink {
    /// What scrapes read.
    pub published: Arc<Published>,
    /// The committer, when `--state.file` is set.
    pub commits: Option<mpsc::Sender<state::Change>>,
}

impl Sink {
    async fn submit(&self, target: &Target, state: &TargetState, stats: &PollStats) {
        let snap = snapshot(target, state, stats);
        match &self.commits {
            None => self.published.publish(snap),
            Some(tx) => {
                let pending = state::Pending {
                    target: target.clone(),
                    bytes: state::encode(state),
                    snapshot: snap,
                };
                if let Err(mpsc::error::SendError(state::Change::Save(p))) =
                    tx.send(state::Change::Save(Box::new(pending))).await
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
            let _ = tx.send(state::Change::Forget(target.clone())).await;
        }
    }
}

/// Polls one target until `shutdown` turns true, starting from `state`
/// (restored from the state file, or fresh) and handing the state to `sink`
/// after every poll. Returns the state, so a target that comes back soon
/// after being dropped can continue where it was.
pub async fn run_target<S: PageSource>(
    target: Target,
    source: Arc<S>,
    config: PollConfig,
    mut state: TargetState,
    sink: Sink,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) -> TargetState {
    let mut stats = PollStats::default();
    let mut failures: u32 = 0;
    let mut idle_polls: u32 = 0;
    // Targets start at a stable offset spread over (at most 10 s of) the
    // interval, so thousands of them do not all poll at the same instant.
    let spread = config.interval.min(Duration::from_secs(10));
    let mut delay = spread.mul_f64(target.spread_fraction());
    let mut first = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
        let started = Instant::now();
        let before = progress(&state);
        // Boxed: a poll's future (HTTP client state included) is large, and
        // inline it would sit in every idle poller's task between polls.
        let poll = Box::pin(poll_once(
            &*source, &target, &config, &mut state, &mut stats,
        ));
        let result = tokio::select! {
            r = poll => r,
            _ = shutdown.changed() => break,
        };
        let took = started.elapsed().as_secs_f64();
        stats.polls += 1;
        stats.last_duration = Some(took);
        sink.published.observe_poll(took);
        delay = match result {
            Ok(()) => {
                failures = 0;
                stats.up = true;
                stats.last_success = Some(unix_now_ms() as f64 / 1000.0);
                let quiet =
                    progress(&state) == before && state.pending.is_empty() && state.gaps.is_empty();
                idle_polls = if quiet {
                    idle_polls.saturating_add(1)
                } else {
                    0
                };
                adaptive_delay(config.interval, idle_polls)
            }
            Err(err) => {
                failures += 1;
                stats.up = false;
                *stats.errors.entry(err.reason()).or_default() += 1;
                warn!(
                    target = %target,
                    reason = err.reason(),
                    http_status = err.http_status(),
                    error = %err,
                    "poll failed"
                );
                if state.baselined {
                    retry_delay(&err, failures, config.interval)
                } else {
                    // Never read yet: its baseline moment keeps what happens
                    // meanwhile, but every poll interval of waiting after the
                    // API is back is time without metrics. Poll at the usual
                    // pace (the shared request budget still spaces requests).
                    first_read_retry_delay(&err, config.interval)
                }
            }
        };
        sink.submit(&target, &state, &stats).await;
        if first {
            first = false;
            readiness.forget(&target);
        }
    }
    debug!(target = %target, "poller stopped");
    state
}

/// What changes when a poll finds something: the newest entry and the counts.
fn progress(state: &TargetState) -> (i64, u64) {
    (state.newest_ms, state.counts.attempts.values().sum())
}

/// Adaptive polling: a webhook with nothing new for ten polls in a row is
/// polled half as often, then a quarter as often after twenty, and so on,
/// but at least every 8 × interval and every two minutes (whichever is more
/// often; never less often than the interval itself); anything new brings
/// it back to the configured interval.
pub fn adaptive_delay(interval: Duration, idle_polls: u32) -> Duration {
    let slowest = interval
        .saturating_mul(8)
        .min(Duration::from_secs(120))
        .max(interval);
    interval
        .saturating_mul(1 << (idle_polls / 10).min(16))
        .min(slowest)
}

/// After a failure: honour `Retry-After`, else back off exponentially from
/// the poll interval (capped at 5 minutes) with jitter, so a failing API is
/// never hammered.
fn retry_delay(err: &ApiError, failures: u32, interval: Duration) -> Duration {
    if let ApiError::RateLimited {
        retry_after: Some(after),
        ..
    } = err
    {
        return (*after).max(interval);
    }
    let cap = Duration::from_secs(300).max(interval);
    let base = interval
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(cap);
    base.mul_f64(1.0 + fastrand::f64() * 0.2).min(cap)
}

/// After a failure of a webhook never read: `Retry-After` if given, else
/// the poll interval with jitter, so that recovery is prompt.
fn first_read_retry_delay(err: &ApiError, interval: Duration) -> Duration {
    if let ApiError::RateLimited {
        retry_after: Some(after),
        ..
    } = err
    {
        return (*after).max(interval);
    }
    interval.mul_f64(1.0 + fastrand::f64() * 0.2)
}

/// What scrapes see of a target.
pub fn snapshot(target: &Target, state: &TargetState, stats: &PollStats) -> TargetSnapshot {
    TargetSnapshot {
        target: target.clone(),
        counts: state.counts.clone(),
        stats: stats.clone(),
        pending: state.pending.len() as u64,
        backlog: state.gaps.iter().map(|g| g.unread).sum(),
    }
}

/// One poll of one target: reads pages and applies them to `state`.
/// Entries counted before an error stay counted; what was not read is
/// left for the next poll.
pub async fn poll_once<S: PageSource>(
    source: &S,
    target: &Target,
    config: &PollConfig,
    state: &mut TargetState,
    stats: &mut PollStats,
) -> Result<(), ApiError> {
    let total_before = state.last_total;
    let now_ms = unix_now_ms();
    let configured = config.per_page.clamp(1, api::MAX_PER_PAGE);
    let per_page = state
        .per_page
        .map_or(configured, |p| p.clamp(1, configured));
    let mut poll = Poll {
        source,
        target,
        per_page,
        // One page for new entries, one for a backlog, at the least.
        budget: config.max_pages.max(2),
        state,
        stats,
        now_ms,
        api_now_ms: now_ms + source.clock_offset().map_or(0, |o| o.estimate_ms()),
        observed: HashSet::default(),
        total_before,
        after_oversized: false,
        new_this_poll: HashSet::default(),
        unknown_total: 0,
    };
    let result = poll.run().await;
    poll.settle();
    let shrunk = poll.per_page < per_page;
    if shrunk {
        state.per_page = Some(poll.per_page);
        state.per_page_good = 0;
    } else if result.is_ok() && state.per_page.is_some() {
        // Try a larger page only now and then: each try that is still too
        // large costs a refused request.
        state.per_page_good += 1;
        if state.per_page_good >= PAGE_GROWTH_POLLS {
            state.per_page_good = 0;
            state.per_page = Some(per_page.saturating_mul(2)).filter(|p| *p < configured);
        }
    }
    result
}

/// One page as read, with where it sits in the list.
struct ReadPage {
    number: u64,
    page: LogPage,
    /// Whether no older page exists.
    last: bool,
    /// The page is one entry too large to read even alone.
    oversized: bool,
}

/// What applying one page found.
struct Applied {
    /// Entries neither remembered nor below the horizon.
    unknown: usize,
    /// Entries already dealt with (or followed) before this poll began: the
    /// page reaches ground an earlier poll covered.
    known: usize,
    /// Oldest `created_at` on the page (Unix ms), if any entry had one.
    oldest_ms: Option<i64>,
}

/// The working set of one poll.
struct Poll<'a, S> {
    source: &'a S,
    target: &'a Target,
    per_page: u32,
    budget: u32,
    state: &'a mut TargetState,
    stats: &'a mut PollStats,
    /// This host's clock at the start of the poll: for timeouts.
    now_ms: i64,
    /// The same moment on the API's clock: compared with `created_at`.
    api_now_ms: i64,
    /// Pending ids observed during this poll.
    observed: HashSet<String>,
    /// `pagination.total` as the previous poll left it.
    total_before: Option<u64>,
    /// An oversized entry was skipped; the next page read names it.
    after_oversized: bool,
    /// Ids first seen in this poll.
    new_this_poll: HashSet<String>,
    /// Unknown entries found in this poll.
    unknown_total: u64,
}

impl<S: PageSource> Poll<'_, S> {
    /// Runs the poll; a page over the body-size cap is read again with
    /// half as many entries per page, down to one.
    async fn run(&mut self) -> Result<(), ApiError> {
        loop {
            match self.run_once().await {
                Err(ApiError::BodyTooLarge { .. }) if self.per_page > 1 => {
                    self.per_page /= 2;
                    // The refused request does not use up the page budget.
                    self.budget += 1;
                    debug!(target = %self.target, per_page = self.per_page, "page too large; reading smaller pages");
                }
                result => return result,
            }
        }
    }

    async fn run_once(&mut self) -> Result<(), ApiError> {
        let (first, stray) = self.read_newest().await?;
        if !self.state.baselined {
            self.place_baseline();
        }
        let known_top = self.known_top_ms();
        // The misdirected first guess is usually the next older page: the
        // scan uses it instead of reading it again.
        let mut stray = stray;
        let scanned = self.top_scan(first, known_top, &mut stray).await;
        if let Some(stray) = stray {
            // Not on the scan's way; its entries are as real as any.
            self.apply(&stray);
        }
        scanned?;
        self.gap_scans().await
    }

    fn order(&self) -> Order {
        self.state.order.unwrap_or(Order::NewestFirst)
    }

    fn total(&self) -> u64 {
        self.state.last_total.unwrap_or(0)
    }

    /// The page number holding position `rank` (0 = newest entry).
    fn page_for_rank(&self, rank: u64) -> u64 {
        let pp = u64::from(self.per_page);
        match self.order() {
            Order::NewestFirst => rank / pp + 1,
            Order::OldestFirst => {
                let total = self.total();
                if total == 0 {
                    1
                } else {
                    (total.saturating_sub(1).saturating_sub(rank)) / pp + 1
                }
            }
        }
    }

    /// Position of the first entry older than everything on page `number`.
    fn rank_after(&self, number: u64) -> u64 {
        let pp = u64::from(self.per_page);
        match self.order() {
            Order::NewestFirst => number * pp,
            Order::OldestFirst => self.total().saturating_sub((number - 1) * pp),
        }
    }

    fn older(&self, number: u64) -> u64 {
        match self.order() {
            Order::NewestFirst => number + 1,
            Order::OldestFirst => number.saturating_sub(1),
        }
    }

    async fn fetch(&mut self, number: u64) -> Result<ReadPage, ApiError> {
        self.budget = self.budget.saturating_sub(1);
        let result = self
            .source
            .fetch_logs(self.target, number, self.per_page)
            .await;
        let key = match &result {
            Ok(_) => ("success", "200".to_string()),
            Err(e) => (
                e.outcome(),
                e.http_status()
                    .map_or("none".to_string(), |s| s.to_string()),
            ),
        };
        *self.stats.requests.entry(key).or_default() += 1;
        if let Some(offset) = self.source.clock_offset() {
            self.api_now_ms = self.now_ms + offset.estimate_ms();
        }
        let pp = u64::from(self.per_page);
        let page = match result {
            Err(ApiError::BodyTooLarge { .. }) if self.per_page == 1 => {
                // One entry too large even alone: step over it.
                warn!(target = %self.target, page = number, "a log entry is larger than --talkover.max-body-size; it cannot be counted");
                self.after_oversized = true;
                let last = match self.order() {
                    Order::NewestFirst => self.total() <= number * pp,
                    Order::OldestFirst => number <= 1,
                };
                if last {
                    self.note_oversized(&LogPage::default());
                }
                return Ok(ReadPage {
                    number,
                    page: LogPage::default(),
                    last,
                    oversized: true,
                });
            }
            other => other?,
        };
        if let Some(total) = page.total {
            self.state.last_total = Some(total);
        }
        if let Some(order) = detect_order(&page.entries) {
            if self.state.order != Some(order) {
                if self.state.order.is_some() {
                    warn!(target = %self.target, ?order, "listing order changed");
                }
                self.state.order = Some(order);
            }
        }
        let last = match self.order() {
            Order::NewestFirst => {
                page.entries.len() < self.per_page as usize
                    || page.total.is_some_and(|t| number * pp >= t)
            }
            Order::OldestFirst => number <= 1 || page.entries.is_empty(),
        };
        Ok(ReadPage {
            number,
            page,
            last,
            oversized: false,
        })
    }

    /// Reads the page holding the newest entries. With oldest-first order
    /// that is the last page, whose number depends on a total that may have
    /// changed: re-read once if the answer shows another page is the newest.
    /// Also returns the first guess when it turned out not to be the newest page.
    async fn read_newest(&mut self) -> Result<(ReadPage, Option<ReadPage>), ApiError> {
        let guess = self.page_for_rank(0);
        let page = self.fetch(guess).await?;
        let right = self.page_for_rank(0);
        if right != guess && self.budget > 0 {
            return Ok((self.fetch(right).await?, Some(page)));
        }
        Ok((page, None))
    }

    /// The first read: entries created before the webhook was first
    /// watched are history, and everything since is news, however many
    /// polls failed in between. The moment is on this host's clock and
    /// `created_at` on the API's, so it is moved by the clock offset; of
    /// the interval the offset is known to lie in, the earliest end is
    /// taken, so that nothing created after the moment can fall below it.
    fn place_baseline(&mut self) {
        let since = self.state.since_ms.unwrap_or(self.now_ms);
        let offset = self.source.clock_offset();
        if offset.is_none() && !NO_DATE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warn!(
                "the API sent no usable Date header; comparing created_at with this host's clock"
            );
        }
        self.state.horizon_ms = since.saturating_add(offset.map_or(0, |o| o.low_ms));
        self.state.baselined = true;
        self.state.since_ms = None;
        info!(
            target = %self.target,
            waited_seconds = self.now_ms.saturating_sub(since) as f64 / 1000.0,
            "first read; counting every attempt created since the webhook was first watched"
        );
    }

    /// Walks from the newest page towards older ones while pages still hold
    /// unseen entries, or pending entries we follow are further down.
    async fn top_scan(
        &mut self,
        first: ReadPage,
        known_top: i64,
        stray: &mut Option<ReadPage>,
    ) -> Result<(), ApiError> {
        // Entries that arrived since the last poll (those arriving while this
        // poll reads are found by the next one).
        let arrivals = self
            .total()
            .saturating_sub(self.total_before.unwrap_or(self.total()));
        for gap in self.state.gaps.iter_mut() {
            gap.expected_total += arrivals;
        }
        // With a backlog, half of what is left goes to new entries, the rest
        // (at least one page) to the backlog.
        let mut budget = if self.state.gaps.is_empty() {
            self.budget
        } else {
            self.budget / 2
        };
        let mut page = first;
        loop {
            let applied = self.apply(&page);
            if page.last {
                return Ok(());
            }
            // Only an entry known before this poll began proves the scan has
            // reached old ground: entries counted earlier in this same poll
            // may have been pushed down a page by arrivals, with more news below.
            let reached_known = applied.known > 0;
            let pending_below = applied
                .oldest_ms
                .and_then(|oldest| self.oldest_unobserved_pending_below(oldest))
                // A gap reaching that deep will find it anyway.
                .filter(|p| !self.state.gaps.iter().any(|g| g.bottom_ms <= *p));
            if reached_known && pending_below.is_none() {
                return Ok(());
            }
            let next = self.older(page.number);
            // Already read, so free: even a spent budget may use it.
            if stray.as_ref().is_some_and(|p| p.number == next) {
                if let Some(p) = stray.take() {
                    page = p;
                    continue;
                }
            }
            let bottom = pending_below.map_or(known_top, |p| p.min(known_top));
            if budget == 0 || self.budget == 0 {
                let unread = if reached_known {
                    0
                } else if self.total_before.is_none() {
                    self.first_read_backlog(applied.oldest_ms)
                } else {
                    arrivals.saturating_sub(self.unknown_total)
                };
                self.open_gap(page.number, applied.oldest_ms, bottom, unread);
                return Ok(());
            }
            budget -= 1;
            match self.fetch(next).await {
                Ok(p) => page = p,
                Err(e) => {
                    self.open_gap(page.number, applied.oldest_ms, bottom, 0);
                    return Err(e);
                }
            }
        }
    }

    /// On the first read ever, how many entries created since the baseline
    /// lie below what this poll could read: the pace seen on the pages read,
    /// carried back to the baseline, and never more than the rest of the list.
    fn first_read_backlog(&self, oldest_read: Option<i64>) -> u64 {
        let read = self.unknown_total;
        let rest = self.total().saturating_sub(read);
        let Some(oldest) = oldest_read else {
            return rest;
        };
        let span = self.state.newest_ms.saturating_sub(oldest).max(1) as f64;
        let behind = oldest.saturating_sub(self.state.horizon_ms).max(0) as f64;
        ((read as f64 * behind / span).ceil() as u64).min(rest)
    }

    /// Remembers that the list below page `number` was not read: entries
    /// created between `bottom_ms` and the oldest one read (`top_ms`).
    fn open_gap(&mut self, number: u64, top_ms: Option<i64>, bottom_ms: i64, unread: u64) {
        let gap = Gap {
            rank: self.rank_after(number),
            total_at: self.total(),
            top_ms: top_ms.unwrap_or(i64::MAX),
            expected_total: self.total(),
            bottom_ms,
            unread,
        };
        warn!(
            target = %self.target,
            rank = gap.rank,
            estimated_unread = unread,
            "more new entries than the page budget allows; the rest is read on the next polls"
        );
        self.state.gaps.insert(0, gap);
        if self.state.gaps.len() > GAPS_CAP {
            // Merge the two newest: the merged gap starts where the newer one
            // does and ends at the older one's bottom, so the scan re-reads
            // what lies between and loses nothing.
            let total = self.total();
            let newer = self.state.gaps.remove(0);
            let older = &mut self.state.gaps[0];
            older.rank = newer.rank + total.saturating_sub(newer.total_at);
            older.total_at = total;
            older.top_ms = newer.top_ms;
            older.expected_total = older.expected_total.max(newer.expected_total);
            older.unread += newer.unread;
        }
    }

    /// Reads the oldest gaps with what is left of the page budget.
    async fn gap_scans(&mut self) -> Result<(), ApiError> {
        while self.budget > 0 {
            let Some(gap) = self.state.gaps.last().cloned() else {
                return Ok(());
            };
            let shift = self.total().saturating_sub(gap.total_at);
            let mut number = self.page_for_rank(gap.rank + shift);
            loop {
                let page = self.fetch(number).await?;
                let applied = self.apply(&page);
                let reached_known = applied.oldest_ms.is_some_and(|o| o < gap.bottom_ms);
                if reached_known || page.last {
                    let total = self.total();
                    // Never more than the list really shrank by.
                    let gone = self
                        .state
                        .gaps
                        .pop()
                        .map_or(0, |g| g.unread.min(g.expected_total.saturating_sub(total)));
                    if !reached_known && gone > 0 {
                        // The list ended before the entries known before the
                        // gap: the API dropped the rest before we read it.
                        *self
                            .state
                            .counts
                            .missed
                            .entry("retention".into())
                            .or_default() += gone;
                        warn!(target = %self.target, missed = gone, "log entries expired before they could be read (estimate)");
                    } else {
                        info!(target = %self.target, "caught up with a backlog");
                    }
                    break;
                }
                let rank = self.rank_after(page.number);
                let total = self.total();
                if let Some(g) = self.state.gaps.last_mut() {
                    g.rank = rank;
                    g.total_at = total;
                    if let Some(oldest) = applied.oldest_ms {
                        g.top_ms = g.top_ms.min(oldest);
                    }
                }
                if self.budget == 0 {
                    return Ok(());
                }
                number = self.older(page.number);
            }
        }
        Ok(())
    }

    /// Counts the page's new final entries and follows its in-flight ones.
    fn apply(&mut self, read: &ReadPage) -> Applied {
        if read.oversized {
            // Unreadable, so unknown: scans go on past it.
            return Applied {
                unknown: 1,
                known: 0,
                oldest_ms: None,
            };
        }
        let page = &read.page;
        if self.after_oversized {
            self.note_oversized(page);
        }
        let mut applied = Applied {
            unknown: 0,
            known: 0,
            oldest_ms: None,
        };
        for entry in &page.entries {
            let Some(id) = entry_id(entry) else { continue };
            let id = id.as_ref();
            // Parsed once: the placement uses the fallback, the counters only a real time.
            let parsed = entry
                .created_at
                .as_deref()
                .and_then(api::parse_timestamp_ms);
            let created = parsed.unwrap_or(self.api_now_ms);
            applied.oldest_ms = Some(applied.oldest_ms.map_or(created, |o: i64| o.min(created)));
            self.state.newest_ms = self.state.newest_ms.max(created);
            let handled = self.state.handled.contains_key(id);
            let pending = !handled && self.state.pending.contains_key(id);
            let known = if handled || pending {
                !self.new_this_poll.contains(id)
            } else {
                created < self.state.horizon_ms
            };
            applied.known += usize::from(known);
            if handled {
                continue;
            }
            if pending {
                if is_final(entry) {
                    self.state.pending.remove(id);
                    record(&mut self.state.counts, entry, parsed);
                    self.state.handled.insert(id.to_string(), created);
                } else {
                    self.observed.insert(id.to_string());
                }
                continue;
            }
            if created < self.state.horizon_ms {
                continue;
            }
            applied.unknown += 1;
            self.unknown_total += 1;
            self.new_this_poll.insert(id.to_string());
            for gap in self.state.gaps.iter_mut() {
                if (gap.bottom_ms..=gap.top_ms).contains(&created) {
                    gap.unread = gap.unread.saturating_sub(1);
                }
            }
            if is_final(entry) {
                record(&mut self.state.counts, entry, parsed);
                self.state.handled.insert(id.to_string(), created);
            } else {
                self.observed.insert(id.to_string());
                self.track_pending(id.to_string(), created);
            }
        }
        applied
    }

    /// Counts an oversized entry as missed once, recognising it later by
    /// the id of the entry just older than it (the newest on this page).
    fn note_oversized(&mut self, page: &LogPage) {
        self.after_oversized = false;
        let key = page
            .entries
            .iter()
            .filter_map(|e| Some((self.created_ms(e), entry_id(e)?)))
            .max()
            .map(|(_, id)| id.into_owned())
            .unwrap_or_default();
        if !self.state.oversized.contains(&key) {
            *self
                .state
                .counts
                .missed
                .entry("too_large".into())
                .or_default() += 1;
            self.state.oversized.push(key);
            if self.state.oversized.len() > OVERSIZED_CAP {
                self.state.oversized.remove(0);
            }
        }
    }

    fn track_pending(&mut self, id: String, created_ms: i64) {
        self.state.pending.entry(id).or_insert(Pending {
            created_ms,
            first_seen_ms: self.now_ms,
        });
    }

    /// The oldest `created_at` of followed entries not seen yet in this poll
    /// that lie below a page whose oldest entry is `oldest_ms`.
    fn oldest_unobserved_pending_below(&self, oldest_ms: i64) -> Option<i64> {
        self.state
            .pending
            .iter()
            .filter(|(id, p)| p.created_ms < oldest_ms && !self.observed.contains(*id))
            .map(|(_, p)| p.created_ms)
            .min()
    }

    /// The newest `created_at` already dealt with before this poll.
    fn known_top_ms(&self) -> i64 {
        self.state
            .handled
            .values()
            .copied()
            .max()
            .unwrap_or(i64::MIN)
            .max(self.state.horizon_ms)
    }

    /// `created_at` in Unix ms; an entry without a readable one is placed
    /// at the time of the poll so it still sorts and expires sensibly.
    fn created_ms(&self, entry: &LogEntry) -> i64 {
        entry
            .created_at
            .as_deref()
            .and_then(api::parse_timestamp_ms)
            .unwrap_or(self.api_now_ms)
    }

    /// Moves the horizon up, forgets what is below it, and gives up on
    /// in-flight entries followed for too long. Runs after every poll, failed or not.
    fn settle(&mut self) {
        let state = &mut *self.state;
        if state.newest_ms == 0 {
            // Nothing listed yet (Unix-ms timestamps are never 0): no horizon to move.
            return self.expire_pending();
        }
        // Ten minutes behind the newest entry, and once the clock is ten
        // minutes past it, the newest entry itself: an idle webhook then
        // remembers only the ids at its newest timestamp, not its last burst.
        // (A step, not a slide: the state of an idle webhook changes once,
        // so idle polls keep writing nothing to the state file.)
        let settled = self.api_now_ms.saturating_sub(LATENESS_MS) >= state.newest_ms;
        let mut horizon = if settled {
            state.newest_ms
        } else {
            state.newest_ms.saturating_sub(LATENESS_MS)
        };
        if let Some(lowest) = state.gaps.last() {
            horizon = horizon.min(lowest.bottom_ms);
        }
        if state.handled.len() > HANDLED_CAP {
            let mut created: Vec<i64> = state.handled.values().copied().collect();
            created.sort_unstable();
            let forced = created[created.len() - HANDLED_CAP / 2];
            warn!(target = %self.target, "dedupe memory full; forgetting the oldest ids");
            horizon = horizon.max(forced);
            state.gaps.retain(|g| g.bottom_ms >= forced);
        }
        if horizon > state.horizon_ms {
            state.horizon_ms = horizon;
            state.handled.retain(|_, c| *c >= horizon);
        }
        self.expire_pending();
    }

    /// Gives up on in-flight entries followed for too long, or past the cap.
    fn expire_pending(&mut self) {
        let state = &mut *self.state;
        let now = self.now_ms;
        let timeout = PENDING_TIMEOUT.as_millis() as i64;
        let mut given_up: Vec<(String, i64)> = state
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.first_seen_ms) >= timeout)
            .map(|(id, p)| (id.clone(), p.created_ms))
            .collect();
        if state.pending.len() - given_up.len() > PENDING_CAP {
            let mut by_age: Vec<(i64, String)> = state
                .pending
                .iter()
                .filter(|(_, p)| now.saturating_sub(p.first_seen_ms) < timeout)
                .map(|(id, p)| (p.created_ms, id.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = by_age.len() - PENDING_CAP;
            given_up.extend(by_age.into_iter().take(excess).map(|(c, id)| (id, c)));
        }
        // Given-up entries count as dealt with: if they turn final later,
        // they are not counted on top of being counted as missed.
        for (id, created) in &given_up {
            state.pending.remove(id);
            if *created >= state.horizon_ms {
                state.handled.insert(id.clone(), *created);
            }
        }
        let expired = given_up.len();
        if expired > 0 {
            *state
                .counts
                .missed
                .entry("pending_expired".into())
                .or_default() += expired as u64;
            warn!(
                target = %self.target,
                expired,
                "gave up on in-flight attempts that never turned final"
            );
        }
    }
}

/// The dedupe key: the entry's id, or for an entry without one a digest of
/// the fields that do not change as it goes from pending to final.
fn entry_id(entry: &LogEntry) -> Option<Cow<'_, str>> {
    if let Some(id) = &entry.id {
        return Some(Cow::Borrowed(id));
    }
    entry.created_at.as_ref()?;
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&entry.event, entry.attempt, &entry.created_at).hash(&mut h);
    Some(Cow::Owned(format!("~{:016x}", h.finish())))
}

/// The listing order, if the page's timestamps show it.
fn detect_order(entries: &[LogEntry]) -> Option<Order> {
    let mut times = entries
        .iter()
        .filter_map(|e| e.created_at.as_deref().and_then(api::parse_timestamp_ms));
    let first = times.next()?;
    let last = times.next_back()?;
    match first.cmp(&last) {
        std::cmp::Ordering::Greater => Some(Order::NewestFirst),
        std::cmp::Ordering::Less => Some(Order::OldestFirst),
        std::cmp::Ordering::Equal => None,
    }
}

/// Whether an entry's status is final (anything but the in-flight ones).
pub fn is_final(entry: &LogEntry) -> bool {
    match &entry.status {
        Some(s) => !IN_FLIGHT.iter().any(|f| s.eq_ignore_ascii_case(f)),
        None => true,
    }
}

/// Adds one final attempt to the counters.
///
/// Called for every counted entry, so the usual case (every series already
/// exists) allocates nothing: labels are looked up as borrowed strings and
/// only a new series pays for owned keys and for the label cap.
pub fn record(counts: &mut DeliveryCounts, entry: &LogEntry, created_ms: Option<i64>) {
    let mut code_text = itoa::Buffer::new();
    let code = match entry.http_status {
        None => "none",
        Some(c @ 100..=599) => code_text.format(c),
        Some(_) => "other",
    };
    let event = label_value(entry.event.as_deref());
    let status = label_value(entry.status.as_deref());
    let status = match counts.attempt_mut(event, status, code) {
        Some(n) => {
            *n += 1;
            status
        }
        None => {
            let status = capped_label(counts, status, |k| &k.status);
            let event = capped_label(counts, event, |k| &k.event);
            count_new_series(counts, event, status, code);
            status
        }
    };

    match entry.duration_ms {
        None => invalid_field(counts, "duration_ms", "missing"),
        Some(d) if d < 0.0 => invalid_field(counts, "duration_ms", "negative"),
        // Far beyond the 120 s maximum timeout: a unit mix-up or garbage.
        Some(d) if d > 3_600_000.0 => invalid_field(counts, "duration_ms", "absurd"),
        Some(d) => by_status(&mut counts.duration, status).observe(DURATION_BUCKETS, d / 1000.0),
    }
    match entry.attempt {
        None => invalid_field(counts, "attempt", "missing"),
        Some(a) if !(1..=1000).contains(&a) => invalid_field(counts, "attempt", "out_of_range"),
        Some(a) => {
            if a > 1 {
                counts.retries += 1;
            }
            by_status(&mut counts.attempt_number, status).observe(ATTEMPT_BUCKETS, a as f64);
        }
    }
    let delivered = entry.delivered_at.as_deref().map(api::parse_timestamp_ms);
    match (created_ms, delivered) {
        (None, _) => invalid_field(counts, "created_at", "unparsable"),
        (Some(_), None) => {}
        (Some(_), Some(None)) => invalid_field(counts, "delivered_at", "unparsable"),
        (Some(c), Some(Some(d))) if d < c => {
            invalid_field(counts, "delivered_at", "before_created")
        }
        (Some(c), Some(Some(d))) => counts.lag.observe(LAG_BUCKETS, (d - c) as f64 / 1000.0),
    }
    if let Some(c) = created_ms {
        let t = c as f64 / 1000.0;
        match counts.last_attempt.get_mut(status) {
            Some(last) => *last = last.max(t),
            None => {
                counts.last_attempt.insert(status.to_string(), t);
            }
        }
    }
}

/// An entry's `event` or `status` as a label value: at most 128 characters.
fn label_value(value: Option<&str>) -> &str {
    let value = value.unwrap_or("unknown");
    match value.char_indices().nth(128) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Starts a `talkover_webhook_delivery_attempts_total` series at 1.
fn count_new_series(counts: &mut DeliveryCounts, event: &str, status: &str, code: &str) {
    // `capped_label` may have folded the label into an existing `other` series.
    if let Some(n) = counts.attempt_mut(event, status, code) {
        *n += 1;
        return;
    }
    let key = AttemptKey {
        event: event.to_string(),
        status: status.to_string(),
        code: code.to_string(),
    };
    counts.attempts.insert(key, 1);
}

/// The value kept for `status`, created empty the first time.
fn by_status<'m, V: Default>(map: &'m mut BTreeMap<String, V>, status: &str) -> &'m mut V {
    if !map.contains_key(status) {
        map.insert(status.to_string(), V::default());
    }
    map.get_mut(status).expect("inserted above")
}

fn invalid_field(counts: &mut DeliveryCounts, field: &str, reason: &str) {
    *counts
        .invalid_fields
        .entry((field.to_string(), reason.to_string()))
        .or_default() += 1;
}

/// Keeps the number of distinct values of one label bounded per target:
/// a value not seen before becomes `other` once the label has 64 values.
fn capped_label<'a>(
    counts: &DeliveryCounts,
    value: &'a str,
    field: impl Fn(&AttemptKey) -> &String,
) -> &'a str {
    let mut seen = BTreeSet::new();
    for key in counts.attempts.keys() {
        let v = field(key);
        if v == value {
            return value;
        }
        seen.insert(v.as_str());
    }
    if seen.len() >= LABEL_VALUES_CAP {
        "other"
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_entry(event: &str, status: &str, http_status: Option<i64>) -> LogEntry {
        LogEntry {
            event: Some(event.into()),
            status: Some(status.into()),
            http_status,
            attempt: Some(1),
            duration_ms: Some(120.0),
            ..LogEntry::default()
        }
    }

    #[test]
    fn record_caps_label_values_and_still_counts_every_attempt() {
        let mut counts = DeliveryCounts::default();
        let created = Some(1_700_000_000_000);
        // Twice over: the second pass finds every series, `other` included.
        for _ in 0..2 {
            for i in 0..100 {
                record(
                    &mut counts,
                    &final_entry(&format!("e{i}"), "success", Some(200)),
                    created,
                );
            }
        }
        let events: BTreeSet<&str> = counts.attempts.keys().map(|k| k.event.as_str()).collect();
        assert_eq!(events.len(), LABEL_VALUES_CAP + 1);
        assert!(events.contains("e63") && !events.contains("e64"));
        assert_eq!(
            counts.attempt_mut("other", "success", "200").copied(),
            Some(72)
        );
        assert_eq!(counts.attempts.values().sum::<u64>(), 200);
        assert_eq!(counts.duration["success"].count(), 200);
        assert_eq!(counts.last_attempt["success"], 1_700_000_000.0);
    }

    #[test]
    fn record_labels_codes_and_long_values() {
        let mut counts = DeliveryCounts::default();
        let long = "é".repeat(200);
        for (status, code) in [(&*long, None), ("failed", Some(42)), ("failed", Some(503))] {
            record(
                &mut counts,
                &final_entry("campaign.started", status, code),
                None,
            );
        }
        let keys: Vec<(usize, &str)> = counts
            .attempts
            .keys()
            .map(|k| (k.status.chars().count(), k.code.as_str()))
            .collect();
        assert_eq!(keys, [(6, "503"), (6, "other"), (128, "none")]);
        // Without a created_at the attempt counts, but not its timestamp.
        assert!(counts.last_attempt.is_empty());
        assert_eq!(
            counts.invalid_fields[&("created_at".into(), "unparsable".into())],
            3
        );
    }
}

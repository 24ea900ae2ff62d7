//! One poll of one webhook: which pages to read and in what order, the
//! baseline at the first read, and backlogs ("gaps") left for later polls.

use std::borrow::Cow;
use std::time::Duration;

use foldhash::HashSet;
use tracing::{debug, info, warn};

use super::PageSource;
use super::PollConfig;
use crate::api::{self, ApiError, LogEntry, LogPage};
use crate::backoff::Backoff;
use crate::clock::unix_now_ms;
use crate::model::{FailurePolicy, Gap, Order, PollStats, TargetState};
use crate::target::Target;

/// Whether the missing `Date` header has been logged (once per process).
static NO_DATE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How late (in `created_at` time) an entry may still appear in the listing
/// and be counted: the horizon trails the newest entry seen by this much.
pub const LATENESS_MS: i64 = 10 * 60 * 1000;
/// How long an in-flight entry is followed before it is given up as missed.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most in-flight entries followed per target.
pub(super) const PENDING_CAP: usize = 10_000;
/// Most remembered ids per target; past it the horizon is forced up.
pub(super) const HANDLED_CAP: usize = 100_000;
/// Most gaps remembered per target; past it the two newest are merged.
pub(super) const GAPS_CAP: usize = 16;
/// Good polls at a reduced page size before a larger one is tried.
pub(super) const PAGE_GROWTH_POLLS: u32 = 50;
/// Most oversized entries remembered per target.
pub(super) const OVERSIZED_CAP: usize = 64;
/// A page whose request failed in a way that may pass is asked for again
/// this many times within the poll, what was read before it kept: one
/// failed page out of ten no longer fails the poll and its backlog.
pub(super) const PAGE_RETRIES: u32 = 3;
/// The waits between those tries (each request also waits its turn in the
/// shared request budget).
const PAGE_RETRY: Backoff = Backoff {
    min: Duration::from_millis(200),
    max: Duration::from_secs(2),
    jitter: 0.5,
};

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
        failures: config.failures,
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
pub(super) struct ReadPage {
    pub(super) number: u64,
    pub(super) page: LogPage,
    /// Whether no older page exists.
    pub(super) last: bool,
    /// The page is one entry too large to read even alone.
    pub(super) oversized: bool,
}

/// What applying one page found.
pub(super) struct Applied {
    /// Entries neither remembered nor below the horizon.
    pub(super) unknown: usize,
    /// Entries already dealt with (or followed) before this poll began: the
    /// page reaches ground an earlier poll covered.
    pub(super) known: usize,
    /// Oldest `created_at` on the page (Unix ms), if any entry had one.
    pub(super) oldest_ms: Option<i64>,
}

/// The working set of one poll.
pub(super) struct Poll<'a, S> {
    pub(super) source: &'a S,
    pub(super) target: &'a Target,
    pub(super) per_page: u32,
    pub(super) budget: u32,
    pub(super) state: &'a mut TargetState,
    pub(super) stats: &'a mut PollStats,
    /// This host's clock at the start of the poll: for timeouts.
    pub(super) now_ms: i64,
    /// The same moment on the API's clock: compared with `created_at`.
    pub(super) api_now_ms: i64,
    /// Pending ids observed during this poll.
    pub(super) observed: HashSet<String>,
    /// `pagination.total` as the previous poll left it.
    pub(super) total_before: Option<u64>,
    /// An oversized entry was skipped; the next page read names it.
    pub(super) after_oversized: bool,
    /// Ids first seen in this poll.
    pub(super) new_this_poll: HashSet<String>,
    /// Unknown entries found in this poll.
    pub(super) unknown_total: u64,
    /// What is kept of failed attempts.
    pub(super) failures: FailurePolicy,
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
        let mut tries = 0;
        let result = loop {
            let result = self
                .source
                .fetch_logs(self.target, number, self.per_page)
                .await;
            self.count_request(&result);
            match &result {
                Err(e) if e.is_transient() && tries < PAGE_RETRIES => {
                    tries += 1;
                    warn!(target = %self.target, page = number, reason = e.reason(), error = %e, tries, "page request failed; asking again within the poll");
                    tokio::time::sleep(PAGE_RETRY.delay(tries)).await;
                }
                _ => break result,
            }
        };
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

    /// Counts one request of this poll (a request held back while the API
    /// is down was never made).
    fn count_request(&mut self, result: &Result<LogPage, ApiError>) {
        let key = match result {
            Ok(_) => ("success", "200".to_string()),
            Err(ApiError::ApiDown { .. }) => return,
            Err(e) => (
                e.outcome(),
                e.http_status()
                    .map_or("none".to_string(), |s| s.to_string()),
            ),
        };
        *self.stats.requests.entry(key).or_default() += 1;
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
        let events = self
            .state
            .settings
            .as_ref()
            .map(|s| s.events.clone())
            .unwrap_or_default();
        self.state.counts.start(self.now_ms, &events);
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
            let unread = if reached_known {
                0
            } else if self.total_before.is_none() {
                self.first_read_backlog(applied.oldest_ms)
            } else {
                arrivals.saturating_sub(self.unknown_total)
            };
            if budget == 0 || self.budget == 0 {
                self.open_gap(page.number, applied.oldest_ms, bottom, unread);
                return Ok(());
            }
            budget -= 1;
            match self.fetch(next).await {
                Ok(p) => page = p,
                Err(e) => {
                    // The same estimate as a spent budget's: while the
                    // rest waits, the backlog says so.
                    self.open_gap(page.number, applied.oldest_ms, bottom, unread);
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
                        self.state.counts.miss("retention", gone, self.now_ms);
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
}

/// The dedupe key: the entry's id, or for an entry without one a digest of
/// the fields that do not change as it goes from pending to final.
pub(super) fn entry_id(entry: &LogEntry) -> Option<Cow<'_, str>> {
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

//! One webhook's polling loop: when to poll, how to back off after a
//! failure, and where each poll's state goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{PageSource, PollConfig};
use crate::api::ApiError;
use crate::backoff::Backoff;
use crate::clock::unix_now_ms;
use crate::model::{PollStats, Readiness, TargetState, WebhookSettings};
use crate::persist::Sink;
use crate::target::Target;
use talkover_count::collect::poll_once;

/// What a poller hands its state to and hears from.
#[derive(Debug)]
pub struct Links {
    /// Where each poll's state goes.
    pub sink: Sink,
    /// Told when the first poll is done.
    pub readiness: Arc<Readiness>,
    /// The webhook's settings, as the API gives them anew.
    pub settings: watch::Receiver<Option<WebhookSettings>>,
    /// Turns true when the poller is to stop.
    pub shutdown: watch::Receiver<bool>,
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
    links: Links,
) -> TargetState {
    let Links {
        sink,
        readiness,
        mut settings,
        mut shutdown,
    } = links;
    let mut stats = PollStats::default();
    let mut failures: u32 = 0;
    let mut idle_polls: u32 = 0;
    // Targets start at a stable offset spread over (at most 10 s of) the
    // interval, so thousands of them do not all poll at the same instant.
    let spread = config.interval.min(Duration::from_secs(10));
    let mut next = Next::After(spread.mul_f64(target.spread_fraction()));
    let mut first = true;
    loop {
        let (delay, mut api_back) = match next {
            Next::After(delay) => (delay, None),
            Next::UntilApiIsBack(delay, rx) => (delay, Some(rx)),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = api_returns(&mut api_back), if api_back.is_some() => {}
            _ = shutdown.changed() => break,
        }
        take_settings(&mut settings, &mut state);
        let started = Instant::now();
        let before = Progress::of(&state);
        let requests_before = stats.requests.clone();
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
        sink.published()
            .observe_poll(took, &requests_before, &stats.requests);
        let progressed = Progress::of(&state) != before;
        next = match result {
            Ok(()) => {
                failures = 0;
                stats.up = true;
                stats.last_success = Some(unix_now_ms() as f64 / 1000.0);
                let quiet = !progressed && state.pending.is_empty() && state.gaps.is_empty();
                idle_polls = if quiet {
                    idle_polls.saturating_add(1)
                } else {
                    0
                };
                Next::After(if state.gaps.is_empty() {
                    adaptive_delay(config.interval, idle_polls)
                } else {
                    backlog_delay(config.interval)
                })
            }
            Err(err) => {
                stats.up = false;
                stats.failed(err.reason(), unix_now_ms());
                if matches!(err, ApiError::ApiDown { .. }) {
                    // Not a request: the API's outage is logged once, by its health.
                    debug!(target = %target, "poll held back: the Talkover API is down");
                } else {
                    warn!(
                        target = %target,
                        reason = err.reason(),
                        http_status = err.http_status(),
                        error = %err,
                        "poll failed"
                    );
                }
                if progressed {
                    // What it read is kept: a backlog read while requests fail
                    // goes on at once, not after a growing backoff.
                    failures = 0;
                    Next::After(backlog_delay(config.interval))
                } else if err.is_api_fault() {
                    failures = failures.saturating_add(1);
                    let wait = api_fault_delay(&err, failures, config.interval);
                    match source.health() {
                        Some(health) => Next::UntilApiIsBack(wait, health.subscribe()),
                        None => Next::After(wait),
                    }
                } else {
                    failures = failures.saturating_add(1);
                    Next::After(if state.baselined {
                        retry_delay(&err, failures, config.interval)
                    } else {
                        // Never read yet: its baseline moment keeps what
                        // happens meanwhile, but every poll interval of
                        // waiting after the API is back is time without
                        // metrics. Poll at the usual pace (the shared
                        // request budget still spaces requests).
                        first_read_retry_delay(&err, config.interval)
                    })
                }
            }
        };
        sink.submit(&target, &mut state, &stats).await;
        if first {
            first = false;
            readiness.forget(&target);
        }
    }
    // Settings given as it stopped (a webhook turned off, say) are what
    // its series show from now on.
    if take_settings(&mut settings, &mut state) {
        sink.submit(&target, &mut state, &stats).await;
    }
    debug!(target = %target, "poller stopped");
    state
}

/// Applies settings the API gave since the last look; whether there were
/// any. Read whether or not the sender is still there: a poller stopped
/// because its webhook was turned off is told so just before.
fn take_settings(
    settings: &mut watch::Receiver<Option<WebhookSettings>>,
    state: &mut TargetState,
) -> bool {
    let new = {
        let latest = settings.borrow_and_update();
        match latest.as_ref() {
            Some(new) if state.settings.as_ref() != Some(new) => new.clone(),
            _ => return false,
        }
    };
    state.apply_settings(new, unix_now_ms());
    true
}

/// When the next poll starts.
enum Next {
    /// After this long.
    After(Duration),
    /// After this long, or as soon as the API answers again after being
    /// down, whichever comes first.
    UntilApiIsBack(Duration, watch::Receiver<bool>),
}

/// Completes when the API, seen down or up as `rx` was taken, turns up
/// again after being down.
async fn api_returns(rx: &mut Option<watch::Receiver<bool>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
}

/// What changes when a poll gets somewhere: the newest entry, the counts,
/// the backlog's stretches, what could not be counted.
#[derive(Debug, PartialEq)]
struct Progress {
    newest_ms: i64,
    counted: u64,
    missed: u64,
    gaps: Vec<(u64, u64, u64)>,
}

impl Progress {
    fn of(state: &TargetState) -> Progress {
        Progress {
            newest_ms: state.newest_ms,
            counted: state.counts.total(),
            missed: state.counts.missed.values().sum(),
            gaps: state
                .gaps
                .iter()
                .map(|g| (g.rank, g.total_at, g.unread))
                .collect(),
        }
    }
}

/// While a backlog waits: poll again at once, or after a second at most;
/// the shared request budget, not a timer, spaces its pages.
fn backlog_delay(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(1))
}

/// The longest a webhook waits after an API fault, and how often an API
/// that is down is probed: the poll interval, between 1 s and 30 s. The API
/// is one service: when it answers again every webhook is read within about
/// an interval, however long it was down.
pub fn api_wait_cap(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// After an API fault: `Retry-After`, else a backoff from the interval
/// capped at [`api_wait_cap`], cut short when the API is back.
fn api_fault_delay(err: &ApiError, failures: u32, interval: Duration) -> Duration {
    retry_delay(err, failures, interval).min(api_wait_cap(interval).max(interval))
}

/// Adaptive polling: a webhook with nothing new for ten polls in a row is
/// polled half as often, then a quarter as often after twenty, and so on,
/// but at least every 8 × interval and every two minutes (whichever is more
/// often; never less often than the interval itself); anything new brings
/// it back to the configured interval.
fn adaptive_delay(interval: Duration, idle_polls: u32) -> Duration {
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
    Backoff {
        min: interval,
        max: Duration::from_secs(300).max(interval),
        jitter: 0.2,
    }
    .delay(failures)
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

//! The request budget shared by every webhook polled with one token.

use std::time::Duration;

use crate::backoff::Backoff;

/// The pause after a 429 without `Retry-After`, by pauses in a row.
const PAUSE: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
    jitter: 0.25,
};

/// The request budget shared by every target using one token: requests are
/// spaced to at most `per_second` (with a burst of as many), and a 429 holds
/// back every target, not only the one that got it.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: Duration,
    state: std::sync::Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    /// When the next request is due if requests were perfectly spaced (GCRA).
    next: tokio::time::Instant,
    /// Pauses in a row, for the backoff when no `Retry-After` is given.
    throttled: u32,
    /// When the current pause began: a 429 to a request sent before then
    /// belongs to the burst that caused that pause, not to a new one.
    paused_at: Option<tokio::time::Instant>,
}

impl RateLimiter {
    /// A budget of `per_second` requests per second.
    pub fn new(per_second: f64) -> RateLimiter {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        RateLimiter {
            interval,
            burst: interval.mul_f64(per_second.max(1.0).floor() - 1.0),
            state: std::sync::Mutex::new(LimiterState {
                next: tokio::time::Instant::now(),
                throttled: 0,
                paused_at: None,
            }),
        }
    }

    /// Waits for this request's turn.
    pub async fn acquire(&self) {
        let wait = {
            // A std lock: nothing awaits while it is held.
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let base = st.next.max(now);
            st.next = base + self.interval;
            base.checked_sub(self.burst)
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds every request back after a 429 to a request sent at `sent`:
    /// for `Retry-After` if given, else for a backoff doubling from one
    /// second (capped at a minute, with jitter). Up to 32 requests are in
    /// flight at once, so one overload answers many of them with 429: only
    /// the first 429 of a pause escalates it; the others, sent before that
    /// pause began, join it.
    pub fn throttled(&self, sent: tokio::time::Instant, retry_after: Option<Duration>) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        if retry_after.is_none() && st.paused_at.is_some_and(|at| sent <= at) {
            return st.next.saturating_duration_since(now);
        }
        let pause = match retry_after {
            // The API said how long: that is not an escalation of ours.
            Some(after) => after,
            None => {
                st.throttled = st.throttled.saturating_add(1);
                PAUSE.delay(st.throttled)
            }
        };
        st.paused_at = Some(now);
        let until = now + pause + self.burst;
        st.next = st.next.max(until);
        pause
    }

    /// A request got through: the 429 backoff starts over.
    pub fn succeeded(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .throttled = 0;
    }

    /// Pauses escalated so far in a row (0 once a request got through).
    #[cfg(test)]
    pub fn escalations(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_429s_escalates_the_pause_once() {
        let limiter = RateLimiter::new(10.0);
        let sent = tokio::time::Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        // 32 requests in flight, all refused by one overload.
        let first = limiter.throttled(sent, None);
        for _ in 0..31 {
            let joined = limiter.throttled(sent, None);
            assert!(joined <= first + Duration::from_secs(1), "{joined:?}");
        }
        assert_eq!(limiter.escalations(), 1);
        assert!(first < Duration::from_millis(1300), "{first:?}");
        // A request sent during the pause and refused again: a new pause, twice as long.
        std::thread::sleep(Duration::from_millis(2));
        let second = limiter.throttled(tokio::time::Instant::now(), None);
        assert_eq!(limiter.escalations(), 2);
        assert!(second >= Duration::from_secs(2), "{second:?}");
        // A Retry-After is obeyed whoever gets it.
        let told = limiter.throttled(sent, Some(Duration::from_secs(7)));
        assert_eq!(told, Duration::from_secs(7));
        assert_eq!(
            limiter.escalations(),
            2,
            "a Retry-After is not an escalation"
        );
        limiter.succeeded();
        assert_eq!(limiter.escalations(), 0);
    }
}

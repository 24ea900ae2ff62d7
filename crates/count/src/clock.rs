//! Time: this host's wall clock, and the API's clock as seen from here.
//!
//! Entries carry `created_at` written by the API's clock, and the moment the
//! exporter began watching a webhook is taken on this host's clock. The two
//! can be minutes apart (a container or VM without NTP, a laptop after
//! suspend), so the collector compares them only through [`ApiClock`], which
//! learns the difference from the `Date` header of every API response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds on this host.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How far the API's clock is ahead of this host's (negative: behind), as
/// an interval that certainly holds the true offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    /// The offset is at least this (ms).
    pub low_ms: i64,
    /// The offset is at most this (ms).
    pub high_ms: i64,
}

impl ClockOffset {
    /// The middle of the interval: the best single guess.
    pub fn estimate_ms(&self) -> i64 {
        self.low_ms + (self.high_ms - self.low_ms) / 2
    }
}

/// Offsets larger than this (either way) are logged, once.
const LOG_OFFSET_ABOVE_MS: i64 = 5_000;

/// The API's clock, learned from `Date` response headers.
///
/// A `Date` header has one-second resolution and is written at some moment
/// between sending the request and receiving the answer, so one response
/// says: the offset lies in `[date - received, date + 1 s - sent]`. Every
/// response narrows the interval (they are intersected, as NTP does with
/// its samples), so after a few responses the uncertainty is about one
/// round trip. When a sample no longer overlaps the interval, one of the
/// clocks has jumped: the interval starts again from that sample.
#[derive(Debug, Default)]
pub struct ApiClock {
    /// A std lock: held for a few comparisons, never across an await.
    offset: std::sync::Mutex<Option<ClockOffset>>,
    /// Whether a large offset has been logged already.
    warned: AtomicBool,
}

impl ApiClock {
    /// A clock that has seen no `Date` yet.
    pub fn new() -> ApiClock {
        ApiClock::default()
    }

    /// Learns from one response: its `Date` (Unix ms, whole seconds), and
    /// this host's clock when the request was sent and the answer received.
    pub fn observe(&self, date_ms: i64, sent_ms: i64, received_ms: i64) {
        let sample = ClockOffset {
            low_ms: date_ms - received_ms.max(sent_ms),
            high_ms: date_ms + 1_000 - sent_ms,
        };
        let now = {
            let mut current = self.offset.lock().unwrap_or_else(|e| e.into_inner());
            let merged = match *current {
                Some(c) if c.low_ms <= sample.high_ms && sample.low_ms <= c.high_ms => {
                    ClockOffset {
                        low_ms: c.low_ms.max(sample.low_ms),
                        high_ms: c.high_ms.min(sample.high_ms),
                    }
                }
                _ => sample,
            };
            *current = Some(merged);
            merged
        };
        let estimate = now.estimate_ms();
        if estimate.abs() > LOG_OFFSET_ABOVE_MS && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                offset_seconds = estimate as f64 / 1000.0,
                "the API's clock differs from this host's; created_at is compared on the API's clock"
            );
        }
    }

    /// Learns from a `Date` header's text; returns the date (Unix ms) if
    /// it is a valid HTTP date.
    pub fn observe_header(&self, date: &str, sent_ms: i64, received_ms: i64) -> Option<i64> {
        let at = httpdate::parse_http_date(date.trim()).ok()?;
        let date_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
        self.observe(date_ms, sent_ms, received_ms);
        Some(date_ms)
    }

    /// What is known of the offset; `None` until a response carried a
    /// usable `Date`.
    pub fn offset(&self) -> Option<ClockOffset> {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_narrow_the_offset_and_a_jump_starts_over() {
        let clock = ApiClock::new();
        assert_eq!(clock.offset(), None);
        // API two minutes ahead; this host is 700 ms into its second.
        let ahead = 120_000;
        let host = 1_700_000_000_700;
        clock.observe(host + ahead - 700, host - 20, host + 20);
        let first = clock.offset().expect("one sample");
        assert!(first.low_ms <= ahead && ahead <= first.high_ms, "{first:?}");
        assert!(first.high_ms - first.low_ms <= 1_040);
        // Later samples at other fractions of a second narrow it.
        for (i, frac) in [285, 305, 100, 900, 550].into_iter().enumerate() {
            let sent = host + 10_000 * (i as i64 + 1) + frac;
            // The API's second, as its Date header writes it.
            let api_ms = sent + 5 + ahead;
            let date = api_ms - api_ms.rem_euclid(1000);
            clock.observe(date, sent, sent + 10);
        }
        let narrowed = clock.offset().expect("samples");
        assert!(
            narrowed.low_ms <= ahead && ahead <= narrowed.high_ms,
            "{narrowed:?}"
        );
        assert!(narrowed.high_ms - narrowed.low_ms <= 100, "{narrowed:?}");
        assert!((narrowed.estimate_ms() - ahead).abs() <= 50);
        // The host clock jumps an hour: the old interval no longer holds.
        clock.observe(host + ahead, host - 3_600_000, host - 3_600_000);
        let jumped = clock.offset().expect("sample");
        assert!(jumped.low_ms > 3_000_000, "{jumped:?}");
    }

    #[test]
    fn header_parsing() {
        let clock = ApiClock::new();
        assert_eq!(clock.observe_header("yesterday", 0, 0), None);
        assert!(clock.offset().is_none());
        assert_eq!(
            clock.observe_header(
                "Tue, 14 Nov 2023 22:13:20 GMT",
                1_700_000_000_000,
                1_700_000_000_000
            ),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            clock.offset(),
            Some(ClockOffset {
                low_ms: 0,
                high_ms: 1_000
            })
        );
    }
}

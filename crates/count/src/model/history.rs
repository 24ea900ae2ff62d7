//! Attempts and failures per minute over the last hour, for one webhook:
//! what a status page draws a sparkline and a failure ratio from.

use serde::{Deserialize, Serialize};

/// Minutes kept.
pub const MINUTES: usize = 60;

const MINUTE_MS: i64 = 60_000;

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Minute {
    /// Minutes since the Unix epoch.
    minute: i64,
    attempts: u32,
    failures: u32,
}

/// Counted attempts and failures per minute of their `created_at`, over
/// the last [`MINUTES`] minutes: a ring of 60 slots, one per minute of the
/// hour (960 bytes once anything was counted, nothing before).
///
/// Old minutes roll off as new ones land in their slots, and are skipped
/// when read: nothing here moves with the clock, so an idle webhook's
/// state stays unchanged (and is not written to the state file again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Minute>", into = "Vec<Minute>")]
pub struct MinuteHistory {
    /// Empty, or [`MINUTES`] slots indexed by minute modulo 60.
    slots: Vec<Minute>,
}

/// The counts of the 60 minutes ending with the one at "now", oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Unix ms of the start of the first (oldest) minute.
    pub start_ms: i64,
    /// Attempts per minute.
    pub attempts: Vec<u32>,
    /// Failed attempts per minute.
    pub failures: Vec<u32>,
}

impl Series {
    /// Attempts over the hour.
    pub fn attempts_total(&self) -> u64 {
        self.attempts.iter().map(|&n| u64::from(n)).sum()
    }

    /// Failures over the hour.
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().map(|&n| u64::from(n)).sum()
    }
}

impl MinuteHistory {
    /// Counts one attempt created at `created_ms` (Unix ms), and whether it failed.
    pub fn record(&mut self, created_ms: i64, failed: bool) {
        let minute = created_ms.div_euclid(MINUTE_MS);
        if self.slots.is_empty() {
            self.slots = vec![Minute::default(); MINUTES];
        }
        let slot = &mut self.slots[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.minute < minute {
            *slot = Minute {
                minute,
                attempts: 0,
                failures: 0,
            };
        } else if slot.minute > minute {
            // An hour or more older than an attempt already counted: out of the window.
            return;
        }
        slot.attempts = slot.attempts.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
    }

    /// The 60 minutes ending with the one `now_ms` falls in.
    pub fn series(&self, now_ms: i64) -> Series {
        let last = now_ms.div_euclid(MINUTE_MS);
        let first = last - (MINUTES as i64 - 1);
        let mut series = Series {
            start_ms: first.saturating_mul(MINUTE_MS),
            attempts: Vec::with_capacity(MINUTES),
            failures: Vec::with_capacity(MINUTES),
        };
        for minute in first..=last {
            let slot = self
                .slots
                .get(minute.rem_euclid(MINUTES as i64) as usize)
                .filter(|s| s.minute == minute)
                .copied()
                .unwrap_or_default();
            series.attempts.push(slot.attempts);
            series.failures.push(slot.failures);
        }
        series
    }
}

/// Stored as the minutes that hold anything, so an idle hour costs nothing in the state file.
impl From<MinuteHistory> for Vec<Minute> {
    fn from(h: MinuteHistory) -> Vec<Minute> {
        h.slots.into_iter().filter(|m| m.attempts > 0).collect()
    }
}

impl From<Vec<Minute>> for MinuteHistory {
    fn from(minutes: Vec<Minute>) -> MinuteHistory {
        let mut h = MinuteHistory::default();
        for m in minutes.into_iter().filter(|m| m.attempts > 0) {
            if h.slots.is_empty() {
                h.slots = vec![Minute::default(); MINUTES];
            }
            let slot = &mut h.slots[m.minute.rem_euclid(MINUTES as i64) as usize];
            if slot.minute < m.minute {
                *slot = Minute {
                    failures: m.failures.min(m.attempts),
                    ..m
                };
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;

    #[test]
    fn counts_by_minute_and_rolls_old_minutes_off() {
        let mut h = MinuteHistory::default();
        assert_eq!(h.series(T0).attempts_total(), 0);
        h.record(T0 + 1_000, false);
        h.record(T0 + 59_999, true);
        h.record(T0 + 60_000, true);
        let s = h.series(T0 + 60_000);
        assert_eq!(s.start_ms, T0 - 58 * MINUTE_MS);
        assert_eq!(s.attempts.len(), MINUTES);
        assert_eq!(&s.attempts[58..], [2, 1]);
        assert_eq!(&s.failures[58..], [1, 1]);
        assert_eq!((s.attempts_total(), s.failures_total()), (3, 2));
        // An hour later the first minute is out of the window, then its slot is reused.
        assert_eq!(h.series(T0 + 60 * MINUTE_MS).attempts_total(), 1);
        h.record(T0 + 60 * MINUTE_MS, false);
        assert_eq!(h.series(T0 + 60 * MINUTE_MS).attempts_total(), 2);
        // An attempt from the minute that slot held before is too old to count.
        h.record(T0 + 5_000, true);
        assert_eq!(h.series(T0 + 60 * MINUTE_MS).failures_total(), 1);
        // Reading does not count the future, or anything before the hour.
        assert_eq!(h.series(T0 - MINUTE_MS).attempts_total(), 0);
        assert_eq!(h.series(T0 + 200 * MINUTE_MS).attempts_total(), 0);
    }

    #[test]
    fn stored_sparsely_and_read_back_whole() {
        let mut h = MinuteHistory::default();
        assert_eq!(serde_json::to_string(&h).expect("json"), "[]");
        for i in 0..5 {
            h.record(T0 + i * 7 * MINUTE_MS, i % 2 == 0);
        }
        let json = serde_json::to_string(&h).expect("json");
        assert_eq!(json.matches("minute").count(), 5);
        let back: MinuteHistory = serde_json::from_str(&json).expect("back");
        assert_eq!(back, h);
        // Hostile or stale stored values: failures never above attempts.
        let odd: MinuteHistory =
            serde_json::from_str(r#"[{"minute":5,"attempts":1,"failures":9}]"#).expect("odd");
        assert_eq!(odd.series(5 * MINUTE_MS).failures_total(), 1);
    }
}

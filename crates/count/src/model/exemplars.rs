//! The newest counted attempt behind each attempts series and each
//! duration bucket: what OpenMetrics exemplars point at, so a graph or an
//! alert leads to one log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::counts::{map_as_pairs, AttemptKey, AttemptLabels};

/// OpenMetrics caps an exemplar's labels at 128 UTF-8 characters, names
/// and values together: `log_id` leaves this much for the id.
pub const EXEMPLAR_ID_CAP: usize = 128 - "log_id".len();

/// One attempt, as an exemplar shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    /// Its log entry id.
    pub id: String,
    /// What it added: 1 to a counter, its duration in seconds to a bucket.
    pub value: f64,
    /// Its `created_at`, Unix ms.
    pub ms: i64,
}

impl Exemplar {
    /// Takes the attempt if it is at least as new; reuses the id's buffer,
    /// since this runs for every counted attempt.
    pub(super) fn offer(&mut self, id: &str, value: f64, ms: i64) {
        if ms < self.ms && !self.id.is_empty() {
            return;
        }
        self.id.clear();
        self.id.push_str(id);
        self.value = value;
        self.ms = ms;
    }

    pub(super) fn new(id: &str, value: f64, ms: i64) -> Exemplar {
        Exemplar {
            id: id.to_owned(),
            value,
            ms,
        }
    }
}

/// Whether an id can be an exemplar's: not empty, and within the label
/// cap (bytes, which are never fewer than characters: no count needed).
pub(super) fn fits(id: &str) -> bool {
    !id.is_empty() && id.len() <= EXEMPLAR_ID_CAP
}

/// A webhook's exemplars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exemplars {
    /// By `talkover_webhook_delivery_attempts_total` series. (Those of
    /// the duration buckets live in their histograms.)
    #[serde(with = "map_as_pairs")]
    pub attempts: BTreeMap<AttemptKey, Exemplar>,
}

impl Exemplars {
    /// Records a counted attempt of the series `(event, status, code)`;
    /// ids too long for an exemplar are left out.
    pub fn attempt(&mut self, key: (&str, &str, &str), id: &str, ms: i64) {
        if !fits(id) {
            return;
        }
        match self.attempts.get_mut(&key as &dyn AttemptLabels) {
            Some(e) => e.offer(id, 1.0, ms),
            None => {
                let (event, status, code) = key;
                self.attempts.insert(
                    AttemptKey {
                        event: event.to_owned(),
                        status: status.to_owned(),
                        code: code.to_owned(),
                    },
                    Exemplar::new(id, 1.0, ms),
                );
            }
        }
    }

    /// The exemplar of one attempts series.
    pub fn of_attempts(&self, key: &AttemptKey) -> Option<&Exemplar> {
        self.attempts.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_attempt_wins_whatever_the_order_it_is_counted_in() {
        let mut e = Exemplars::default();
        e.attempt(("ev", "failed", "500"), "log_2", 2_000);
        e.attempt(("ev", "failed", "500"), "log_1", 1_000);
        e.attempt(("ev", "failed", "none"), "log_3", 3_000);
        let key = |code: &str| AttemptKey {
            event: "ev".into(),
            status: "failed".into(),
            code: code.into(),
        };
        assert_eq!(
            e.of_attempts(&key("500")).map(|x| x.id.as_str()),
            Some("log_2")
        );
        assert_eq!(e.of_attempts(&key("none")).map(|x| x.ms), Some(3_000));
        // An id too long for an exemplar's 128 characters is left out.
        e.attempt(("ev", "failed", "500"), &"x".repeat(200), 9_000);
        assert_eq!(
            e.of_attempts(&key("500")).map(|x| x.id.as_str()),
            Some("log_2")
        );
    }
}

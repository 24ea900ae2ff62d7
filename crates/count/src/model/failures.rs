//! The last failed attempts of one webhook, kept with the API's own words
//! (error text, an excerpt of the receiver's answer) to say *why* it fails:
//! what the metrics cannot carry without a label per attempt.
//!
//! # Memory
//!
//! Every text is capped in bytes when kept (see the `*_CAP` constants) and
//! stored exactly as long as kept, so one [`FailedAttempt`] holds at most
//! [`FailedAttempt::MAX_BYTES`] (2,104 bytes on 64-bit targets: 168 inline,
//! 1,936 of text; the allocator adds a few bytes per text). A webhook keeps
//! at most `--failures.keep` of them: with the default 20, at most about
//! 42 KiB; with the largest allowed, 1,000, about 2.1 MiB. Add
//! [`MinuteHistory`](super::MinuteHistory)'s 960 bytes. A poll that records
//! a failure briefly holds a second copy while the previous one is still
//! published.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::text::clean;

/// Most bytes kept of a log id (ids are UUIDs, 36 bytes, in the docs).
pub const ID_CAP: usize = 128;
/// Most bytes kept of `created_at` and `delivered_at` (RFC 3339 with
/// nanoseconds and an offset is 35).
pub const TIME_CAP: usize = 40;
/// Most bytes kept of `event`.
pub const EVENT_CAP: usize = 128;
/// Most bytes kept of `status`.
pub const STATUS_CAP: usize = 64;
/// Most bytes kept of `error`.
pub const ERROR_CAP: usize = 1024;
/// Most bytes kept of `response_body`: its first 512 bytes.
pub const RESPONSE_CAP: usize = 512;

/// The largest `--failures.keep`: what bounds a webhook's memory.
pub const MAX_KEEP: usize = 1000;

/// What is kept of failed attempts (`--failures.keep`, `--failures.response-body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failed attempts kept per webhook; 0 keeps none.
    pub keep: usize,
    /// Whether an excerpt of the receiver's answer is kept: bodies can
    /// hold customer data.
    pub response_body: bool,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            keep: 20,
            response_body: true,
        }
    }
}

/// One failed attempt as the API listed it, every text capped and stripped
/// of control characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// The log entry's id.
    pub id: Box<str>,
    /// `created_at` in Unix ms (the time of the poll if unreadable): the order.
    pub created_ms: i64,
    /// `created_at` as the API wrote it.
    pub created_at: Option<Box<str>>,
    /// `delivered_at` as the API wrote it; absent when nothing was delivered.
    pub delivered_at: Option<Box<str>>,
    /// The event.
    pub event: Option<Box<str>>,
    /// 1 for the first try.
    pub attempt: Option<i64>,
    /// `failed`, or another final status that is not `success`.
    pub status: Option<Box<str>>,
    /// What the receiver answered; absent on timeouts and connection errors.
    pub http_status: Option<i64>,
    /// How long the attempt took.
    pub duration_ms: Option<f64>,
    /// Why it failed, in the API's words.
    pub error: Option<Box<str>>,
    /// The first 512 bytes of the receiver's answer, as text.
    pub response: Option<Box<str>>,
}

/// A failed attempt's fields as read, borrowed: what [`FailedAttempt::new`] keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptFields<'a> {
    /// The log entry's id.
    pub id: &'a str,
    /// `created_at` in Unix ms.
    pub created_ms: i64,
    /// `created_at` as written.
    pub created_at: Option<&'a str>,
    /// `delivered_at` as written.
    pub delivered_at: Option<&'a str>,
    /// The event.
    pub event: Option<&'a str>,
    /// The attempt number.
    pub attempt: Option<i64>,
    /// The status.
    pub status: Option<&'a str>,
    /// The receiver's HTTP status.
    pub http_status: Option<i64>,
    /// The duration.
    pub duration_ms: Option<f64>,
    /// The error text.
    pub error: Option<&'a str>,
    /// The receiver's answer.
    pub response_body: Option<&'a str>,
}

impl FailedAttempt {
    /// The most memory one failed attempt holds, allocator overhead aside.
    pub const MAX_BYTES: usize = std::mem::size_of::<FailedAttempt>()
        + ID_CAP
        + 2 * TIME_CAP
        + EVENT_CAP
        + STATUS_CAP
        + ERROR_CAP
        + RESPONSE_CAP;

    /// What is kept of `f`; with `keep_response` false, nothing of the
    /// receiver's answer.
    pub fn new(f: &AttemptFields<'_>, keep_response: bool) -> FailedAttempt {
        let text = |s: Option<&str>, cap| s.map(|s| clean(s, cap)).filter(|s| !s.is_empty());
        FailedAttempt {
            id: clean(f.id, ID_CAP),
            created_ms: f.created_ms,
            created_at: text(f.created_at, TIME_CAP),
            delivered_at: text(f.delivered_at, TIME_CAP),
            event: text(f.event, EVENT_CAP),
            attempt: f.attempt,
            status: text(f.status, STATUS_CAP),
            http_status: f.http_status,
            duration_ms: f.duration_ms,
            error: text(f.error, ERROR_CAP),
            response: if keep_response {
                text(f.response_body, RESPONSE_CAP)
            } else {
                None
            },
        }
    }
}

/// The last failed attempts of one webhook, newest (by `created_at`) first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Failures {
    newest_first: VecDeque<FailedAttempt>,
}

impl Failures {
    /// Failures as they were kept, newest first (from the state file).
    pub fn from_newest_first(newest_first: impl IntoIterator<Item = FailedAttempt>) -> Failures {
        Failures {
            newest_first: newest_first.into_iter().collect(),
        }
    }

    /// Keeps `failed` among the newest `keep`. Pages are not read in
    /// `created_at` order, so it goes where its time puts it; one older
    /// than all `keep` kept is not kept.
    pub fn record(&mut self, failed: FailedAttempt, keep: usize) {
        let at = self
            .newest_first
            .partition_point(|f| f.created_ms > failed.created_ms);
        if at >= keep {
            self.newest_first.truncate(keep);
            return;
        }
        self.newest_first.insert(at, failed);
        self.newest_first.truncate(keep);
    }

    /// Whether a failure created at `created_ms` would be kept: checked
    /// before one is built, since a backlog of failures read newest first
    /// would otherwise build, clean and drop all but the first `keep`.
    pub fn would_keep(&self, created_ms: i64, keep: usize) -> bool {
        keep > 0
            && (self.newest_first.len() < keep
                || self
                    .newest_first
                    .back()
                    .is_some_and(|oldest| created_ms > oldest.created_ms))
    }

    /// Applies `policy` to what was kept under another one (a state from
    /// before a restart): at most `keep`, and no answers if they are off.
    pub fn enforce(&mut self, policy: FailurePolicy) {
        self.newest_first.truncate(policy.keep);
        if !policy.response_body {
            for f in self.newest_first.iter_mut() {
                f.response = None;
            }
        }
        if self.newest_first.is_empty() {
            // A restored ring that is now off gives its memory back.
            self.newest_first = VecDeque::new();
        }
    }

    /// The kept attempts, newest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &FailedAttempt> {
        self.newest_first.iter()
    }

    /// The newest kept attempt.
    pub fn newest(&self) -> Option<&FailedAttempt> {
        self.newest_first.front()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.newest_first.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.newest_first.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(id: &str, created_ms: i64) -> FailedAttempt {
        FailedAttempt::new(
            &AttemptFields {
                id,
                created_ms,
                ..AttemptFields::default()
            },
            true,
        )
    }

    fn ids(f: &Failures) -> Vec<&str> {
        f.iter().map(|f| &*f.id).collect()
    }

    #[test]
    fn keeps_the_newest_in_created_order_whatever_the_reading_order() {
        let mut f = Failures::default();
        for (id, t) in [("c", 30), ("a", 10), ("e", 50), ("b", 20), ("d", 40)] {
            f.record(failed(id, t), 3);
        }
        assert_eq!(ids(&f), ["e", "d", "c"]);
        // Older than everything kept when full: not kept.
        f.record(failed("z", 5), 3);
        assert_eq!(ids(&f), ["e", "d", "c"]);
        f.record(failed("f", 60), 3);
        assert_eq!(ids(&f), ["f", "e", "d"]);
        assert_eq!(f.newest().map(|f| &*f.id), Some("f"));
        f.record(failed("g", 70), 0);
        assert!(f.is_empty());
    }

    #[test]
    fn texts_are_capped_and_cleaned_and_bodies_kept_only_when_asked() {
        let body = format!("<html>\n<body>{}</body>", "x".repeat(100_000));
        let error = format!("timed out\u{0}{}", "é".repeat(1000));
        let fields = AttemptFields {
            id: "log-1\u{1b}[2J",
            created_ms: 1,
            created_at: Some("2024-01-15T11:00:00Z"),
            delivered_at: Some(""),
            event: Some("campaign.started"),
            attempt: Some(2),
            status: Some("failed"),
            http_status: Some(500),
            duration_ms: Some(120.5),
            error: Some(&error),
            response_body: Some(&body),
        };
        let kept = FailedAttempt::new(&fields, true);
        assert_eq!(&*kept.id, "log-1[2J");
        assert_eq!(kept.delivered_at, None);
        let response = kept.response.as_deref().expect("response kept");
        assert_eq!(response.len(), RESPONSE_CAP);
        assert!(response.starts_with("<html> <body>xxx"));
        let error = kept.error.as_deref().expect("error kept");
        assert!(error.len() <= ERROR_CAP && error.starts_with("timed outéé"));
        assert_eq!(FailedAttempt::new(&fields, false).response, None);
    }

    #[test]
    fn a_stricter_policy_applies_to_what_was_kept() {
        let mut f = Failures::default();
        for t in 0..5 {
            let mut a = failed(&t.to_string(), t);
            a.response = Some("body".into());
            f.record(a, 20);
        }
        let policy = FailurePolicy {
            keep: 3,
            response_body: false,
        };
        f.enforce(policy);
        assert_eq!(ids(&f), ["4", "3", "2"]);
        assert!(f.iter().all(|a| a.response.is_none()));
    }

    /// The figure the module documentation (and docs/flags.md) gives.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn worst_case_memory_is_what_the_docs_say() {
        assert_eq!(std::mem::size_of::<FailedAttempt>(), 168);
        assert_eq!(FailedAttempt::MAX_BYTES, 2104);
    }
}

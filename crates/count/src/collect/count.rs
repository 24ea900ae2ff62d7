//! One final attempt added to a webhook's counters, with label values
//! capped so a misbehaving API cannot explode cardinality.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use crate::api;
use crate::api::LogEntry;
use crate::model::{
    classify, label_value, result_index, AttemptFields, AttemptKey, DeliveryCounts, FailedAttempt,
    FailureClass, FailurePolicy, Failures, WebhookSettings, ATTEMPT_BUCKETS, DURATION_BUCKETS,
    LAG_BUCKETS,
};

/// Distinct `event` or `status` label values per target before the rest
/// are counted as `other`.
const LABEL_VALUES_CAP: usize = 64;

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

/// Whether an entry's status is final (anything but the in-flight ones).
pub fn is_final(entry: &LogEntry) -> bool {
    match &entry.status {
        Some(s) => !IN_FLIGHT.iter().any(|f| s.eq_ignore_ascii_case(f)),
        None => true,
    }
}

/// What an attempt is judged by when it is counted: its webhook's settings
/// as known then, and the time (this host's clock, Unix ms) a series it
/// starts is created at.
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    /// The retry limit: a failed attempt numbered above it is the last one.
    pub max_retries: u32,
    /// The webhook's timeout, for telling a timeout from a silent failure.
    pub timeout_ms: Option<f64>,
    /// Now: the start of any series this attempt is the first of.
    pub now_ms: i64,
}

impl Judge {
    /// Judged by `settings` (the platform's defaults while unknown) at `now_ms`.
    pub fn new(settings: Option<&WebhookSettings>, now_ms: i64) -> Judge {
        Judge {
            max_retries: crate::model::max_retries(settings),
            timeout_ms: settings
                .and_then(|s| s.timeout_seconds)
                .map(|t| f64::from(t) * 1000.0),
            now_ms,
        }
    }
}

/// Adds one final attempt to the counters.
///
/// Called for every counted entry, so the usual case (every series already
/// exists) allocates nothing: labels are looked up as borrowed strings and
/// only a new series pays for owned keys and for the label cap.
///
/// A failed attempt whose number reached `max_retries + 1` is also a lost
/// event: the platform will not try it again. It is judged by the setting
/// known when it is counted; an attempt without a number cannot be judged
/// and is not counted as lost.
pub fn record(
    counts: &mut DeliveryCounts,
    id: &str,
    entry: &LogEntry,
    created_ms: Option<i64>,
    judge: &Judge,
) {
    let mut code_text = itoa::Buffer::new();
    let code = match entry.http_status {
        None => "none",
        Some(c @ 100..=599) => code_text.format(c),
        Some(_) => "other",
    };
    let event = entry_label(entry.event.as_deref());
    let status = entry_label(entry.status.as_deref());
    let (event, status) = match counts.attempt_mut(event, status, code) {
        Some(n) => {
            *n += 1;
            (event, status)
        }
        None => {
            let status = capped_label(counts, status, |k| &k.status);
            let event = capped_label(counts, event, |k| &k.event);
            count_new_series(counts, event, status, code, judge.now_ms);
            (event, status)
        }
    };
    let failure = is_failure(entry).then(|| {
        classify(
            entry.http_status,
            entry.error.as_deref(),
            entry.duration_ms,
            judge.timeout_ms,
        )
    });
    counts.results[result_index(failure)] += 1;
    let last_try = entry
        .attempt
        .is_some_and(|a| a > i64::from(judge.max_retries));
    if failure.is_some() && last_try {
        count_exhausted(counts, event, judge.now_ms);
    }
    // The newest attempt behind each series, for OpenMetrics exemplars;
    // one needs a time, and the id the attempt is known by.
    let exemplar_ms = created_ms.filter(|_| !id.is_empty());
    if let Some(ms) = exemplar_ms {
        Arc::make_mut(&mut counts.exemplars).attempt((event, status, code), id, ms);
    }

    match entry.duration_ms {
        None => invalid_field(counts, "duration_ms", "missing", judge.now_ms),
        Some(d) if d < 0.0 => invalid_field(counts, "duration_ms", "negative", judge.now_ms),
        // Far beyond the 120 s maximum timeout: a unit mix-up or garbage.
        Some(d) if d > 3_600_000.0 => invalid_field(counts, "duration_ms", "absurd", judge.now_ms),
        Some(d) => {
            let h = by_status(&mut counts.duration, status);
            h.begin(judge.now_ms);
            let bucket = h.observe(DURATION_BUCKETS, d / 1000.0);
            if let Some(ms) = exemplar_ms {
                h.offer_exemplar(bucket, id, d / 1000.0, ms);
            }
        }
    }
    match entry.attempt {
        None => invalid_field(counts, "attempt", "missing", judge.now_ms),
        Some(a) if !(1..=1000).contains(&a) => {
            invalid_field(counts, "attempt", "out_of_range", judge.now_ms)
        }
        Some(a) => {
            if a > 1 {
                counts.retries += 1;
            }
            let h = by_status(&mut counts.attempt_number, status);
            h.begin(judge.now_ms);
            h.observe(ATTEMPT_BUCKETS, a as f64);
        }
    }
    let delivered = entry.delivered_at.as_deref().map(api::parse_timestamp_ms);
    match (created_ms, delivered) {
        (None, _) => invalid_field(counts, "created_at", "unparsable", judge.now_ms),
        (Some(_), None) => {}
        (Some(_), Some(None)) => invalid_field(counts, "delivered_at", "unparsable", judge.now_ms),
        (Some(c), Some(Some(d))) if d < c => {
            invalid_field(counts, "delivered_at", "before_created", judge.now_ms)
        }
        (Some(c), Some(Some(d))) => {
            counts.lag.begin(judge.now_ms);
            counts.lag.observe(LAG_BUCKETS, (d - c) as f64 / 1000.0);
        }
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

/// Whether a final attempt failed: any status but `success`, in any case
/// (an unknown or missing status is no delivery the API vouches for).
pub fn is_failure(entry: &LogEntry) -> bool {
    !entry
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("success"))
}

/// Adds one final attempt to what the status pages show: its minute in the
/// history (`host_ms`: its `created_at` on this host's clock, which pages
/// read the hour on) and, if it failed, the kept failures. Called beside
/// [`record`], with the id the attempt is known by and its `created_at`
/// (`created_ms`, the time of the poll if unreadable) on the API's clock.
pub fn record_recent(
    counts: &mut DeliveryCounts,
    failures: &mut Arc<Failures>,
    id: &str,
    entry: &LogEntry,
    created_ms: i64,
    host_ms: i64,
    policy: FailurePolicy,
) {
    let failed = is_failure(entry);
    Arc::make_mut(&mut counts.history).record(host_ms, failed);
    if !failed || !failures.would_keep(created_ms, policy.keep) {
        return;
    }
    let fields = AttemptFields {
        id,
        created_ms,
        created_at: entry.created_at.as_deref(),
        delivered_at: entry.delivered_at.as_deref(),
        event: entry.event.as_deref(),
        attempt: entry.attempt,
        status: entry.status.as_deref(),
        http_status: entry.http_status,
        duration_ms: entry.duration_ms,
        error: entry.error.as_deref(),
        response_body: entry.response_body.as_deref(),
    };
    let failed = FailedAttempt::new(&fields, policy.response_body);
    Arc::make_mut(failures).record(failed, policy.keep);
}

/// An entry's `event` or `status` as a label value: at most 128 characters.
fn entry_label(value: Option<&str>) -> &str {
    label_value(value.unwrap_or("unknown"))
}

/// Counts a lost event. Its series usually exists from the baseline (the
/// webhook's known events); an event not known then gets its own, up to
/// the cap of distinct events, then `other`.
fn count_exhausted(counts: &mut DeliveryCounts, event: &str, now_ms: i64) {
    if let Some(n) = counts.exhausted.get_mut(event) {
        *n += 1;
        return;
    }
    let event = if counts.exhausted.len() >= crate::model::EVENTS_CAP {
        "other"
    } else {
        event
    };
    *counts.exhausted.entry(event.to_string()).or_default() += 1;
    counts
        .created
        .exhausted
        .entry(event.to_string())
        .or_insert(now_ms);
}

/// Why a failed attempt failed, as counted: for the status pages, which
/// show it beside the API's own words.
pub fn failure_class(entry: &FailedAttempt, timeout_ms: Option<f64>) -> FailureClass {
    classify(
        entry.http_status,
        entry.error.as_deref(),
        entry.duration_ms,
        timeout_ms,
    )
}

/// Starts a `talkover_webhook_delivery_attempts_total` series at 1.
fn count_new_series(
    counts: &mut DeliveryCounts,
    event: &str,
    status: &str,
    code: &str,
    now_ms: i64,
) {
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
    counts.created.attempts.insert(key.clone(), now_ms);
    counts.attempts.insert(key, 1);
}

/// The value kept for `status`, created empty the first time.
fn by_status<'m, V: Default>(map: &'m mut BTreeMap<String, V>, status: &str) -> &'m mut V {
    if !map.contains_key(status) {
        map.insert(status.to_string(), V::default());
    }
    map.get_mut(status).expect("inserted above")
}

fn invalid_field(counts: &mut DeliveryCounts, field: &str, reason: &str, now_ms: i64) {
    let key = (field.to_string(), reason.to_string());
    if !counts.invalid_fields.contains_key(&key) {
        counts.created.invalid_fields.insert(key.clone(), now_ms);
    }
    *counts.invalid_fields.entry(key).or_default() += 1;
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
    use crate::model::Histogram;

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
                    &format!("log{i}"),
                    &final_entry(&format!("e{i}"), "success", Some(200)),
                    created,
                    &Judge::new(None, 0),
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
    fn failures_are_every_status_but_success_and_kept_by_policy() {
        let mut counts = DeliveryCounts::default();
        let mut kept = Arc::new(Failures::default());
        let policy = FailurePolicy {
            keep: 2,
            response_body: false,
        };
        let t = 1_700_000_000_000;
        for (i, status) in ["success", "SUCCESS", "failed", "bounced", "Failed"]
            .iter()
            .enumerate()
        {
            let mut e = final_entry("e", status, Some(500));
            e.response_body = Some("{\"error\":\"internal\"}".into());
            e.error = Some("HTTP 500 from receiver".into());
            let created = t + i as i64;
            record_recent(
                &mut counts,
                &mut kept,
                &format!("log-{i}"),
                &e,
                created,
                created,
                policy,
            );
        }
        let s = counts.history.series(t);
        assert_eq!((s.attempts_total(), s.failures_total()), (5, 3));
        let kept: Vec<(&str, Option<&str>, Option<&str>)> = kept
            .iter()
            .map(|f| (&*f.id, f.error.as_deref(), f.response.as_deref()))
            .collect();
        assert_eq!(
            kept,
            [
                ("log-4", Some("HTTP 500 from receiver"), None),
                ("log-3", Some("HTTP 500 from receiver"), None)
            ]
        );
        let mut none = final_entry("e", "failed", None);
        none.status = None;
        assert!(is_failure(&none));
    }

    fn attempt(status: &str, n: i64, http_status: Option<i64>, error: Option<&str>) -> LogEntry {
        LogEntry {
            event: Some("campaign_call.completed".into()),
            status: Some(status.into()),
            attempt: Some(n),
            http_status,
            error: error.map(str::to_string),
            duration_ms: Some(9_600.0),
            ..LogEntry::default()
        }
    }

    /// A failed attempt numbered above the webhook's own `max_retries` is a
    /// lost event; a success, an earlier attempt or one without a number is not.
    #[test]
    fn lost_events_are_judged_by_each_webhooks_own_max_retries() {
        let lost = |max_retries: Option<u32>, entries: &[LogEntry]| {
            let settings = WebhookSettings::new(None, true, max_retries, Some(10), &[]);
            let judge = Judge::new(Some(&settings), 1_000);
            let mut counts = DeliveryCounts::default();
            for (i, e) in entries.iter().enumerate() {
                record(&mut counts, &format!("l{i}"), e, Some(1), &judge);
            }
            counts.exhausted.values().sum::<u64>()
        };
        let failed = |n| attempt("failed", n, Some(500), None);
        assert_eq!(lost(Some(0), &[failed(1)]), 1);
        assert_eq!(lost(Some(3), &[failed(1), failed(2), failed(3)]), 0);
        assert_eq!(lost(Some(3), &[failed(4)]), 1);
        // max_retries 5: attempts 1 to 4 fail, the fifth succeeds: nothing lost.
        let mut five: Vec<LogEntry> = (1..=4).map(failed).collect();
        five.push(attempt("success", 5, Some(200), None));
        assert_eq!(lost(Some(5), &five), 0);
        assert_eq!(lost(Some(10), &[failed(10), failed(11)]), 1);
        // Unknown: the platform's default of 3.
        assert_eq!(lost(None, &[failed(3), failed(4)]), 1);
        let mut unnumbered = failed(9);
        unnumbered.attempt = None;
        assert_eq!(lost(Some(0), &[unnumbered]), 0);
        // A manual retry is a new entry: failing at the limit again, it counts again.
        assert_eq!(lost(Some(0), &[failed(1), failed(1)]), 2);
    }

    /// Every final attempt lands in one result: success, or why it failed;
    /// a new series starts at the time of the poll that counted it.
    #[test]
    fn results_say_why_and_new_series_start_when_counted() {
        let settings = WebhookSettings::new(None, true, Some(3), Some(10), &[]);
        let judge = Judge::new(Some(&settings), 42_000);
        let mut counts = DeliveryCounts::default();
        let entries = [
            attempt("success", 1, Some(200), None),
            attempt("failed", 1, Some(503), Some("HTTP 503 from receiver")),
            attempt("failed", 1, None, Some("connect ECONNREFUSED 10.0.0.5:443")),
            attempt("failed", 1, None, Some("certificate has expired")),
            // No text, no answer, and all of its 10 s timeout: a timeout.
            attempt("failed", 1, None, None),
            attempt("bounced", 1, Some(200), None),
        ];
        for (i, e) in entries.iter().enumerate() {
            record(&mut counts, &format!("l{i}"), e, Some(1), &judge);
        }
        let got: Vec<(&str, u64)> = crate::model::RESULTS
            .iter()
            .copied()
            .zip(counts.results)
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            got,
            [
                ("success", 1),
                ("timeout", 1),
                ("connection_refused", 1),
                ("tls", 1),
                ("http_5xx", 1),
                ("other", 1)
            ]
        );
        assert_eq!(counts.results.iter().sum::<u64>(), counts.total());
        assert!(counts.created.attempts.values().all(|t| *t == 42_000));
        assert_eq!(counts.created.attempts.len(), counts.attempts.len());
        assert_eq!(counts.duration["failed"].created_ms, Some(42_000));
        // A histogram restored with observations but no start keeps none.
        let mut old = Histogram::default();
        old.observe(DURATION_BUCKETS, 1.0);
        old.begin(50_000);
        assert_eq!(old.created_ms, None);
    }

    #[test]
    fn record_labels_codes_and_long_values() {
        let mut counts = DeliveryCounts::default();
        let long = "é".repeat(200);
        for (status, code) in [(&*long, None), ("failed", Some(42)), ("failed", Some(503))] {
            record(
                &mut counts,
                "log",
                &final_entry("campaign.started", status, code),
                None,
                &Judge::new(None, 0),
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

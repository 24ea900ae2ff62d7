//! One final attempt added to a webhook's counters, with label values
//! capped so a misbehaving API cannot explode cardinality.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use crate::api;
use crate::api::LogEntry;
use crate::model::{
    AttemptFields, AttemptKey, DeliveryCounts, FailedAttempt, FailurePolicy, ATTEMPT_BUCKETS,
    DURATION_BUCKETS, LAG_BUCKETS,
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

/// Adds one final attempt to the counters.
///
/// Called for every counted entry, so the usual case (every series already
/// exists) allocates nothing: labels are looked up as borrowed strings and
/// only a new series pays for owned keys and for the label cap.
pub fn record(counts: &mut DeliveryCounts, id: &str, entry: &LogEntry, created_ms: Option<i64>) {
    let mut code_text = itoa::Buffer::new();
    let code = match entry.http_status {
        None => "none",
        Some(c @ 100..=599) => code_text.format(c),
        Some(_) => "other",
    };
    let event = label_value(entry.event.as_deref());
    let status = label_value(entry.status.as_deref());
    let (event, status) = match counts.attempt_mut(event, status, code) {
        Some(n) => {
            *n += 1;
            (event, status)
        }
        None => {
            let status = capped_label(counts, status, |k| &k.status);
            let event = capped_label(counts, event, |k| &k.event);
            count_new_series(counts, event, status, code);
            (event, status)
        }
    };
    // The newest attempt behind each series, for OpenMetrics exemplars;
    // one needs a time, and the id the attempt is known by.
    let exemplar_ms = created_ms.filter(|_| !id.is_empty());
    if let Some(ms) = exemplar_ms {
        Arc::make_mut(&mut counts.exemplars).attempt((event, status, code), id, ms);
    }

    match entry.duration_ms {
        None => invalid_field(counts, "duration_ms", "missing"),
        Some(d) if d < 0.0 => invalid_field(counts, "duration_ms", "negative"),
        // Far beyond the 120 s maximum timeout: a unit mix-up or garbage.
        Some(d) if d > 3_600_000.0 => invalid_field(counts, "duration_ms", "absurd"),
        Some(d) => {
            let h = by_status(&mut counts.duration, status);
            let bucket = h.observe(DURATION_BUCKETS, d / 1000.0);
            if let Some(ms) = exemplar_ms {
                h.offer_exemplar(bucket, id, d / 1000.0, ms);
            }
        }
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
        (Some(c), Some(Some(d))) => {
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
    id: &str,
    entry: &LogEntry,
    created_ms: i64,
    host_ms: i64,
    policy: FailurePolicy,
) {
    let failed = is_failure(entry);
    Arc::make_mut(&mut counts.history).record(host_ms, failed);
    if !failed || !counts.failures.would_keep(created_ms, policy.keep) {
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
    Arc::make_mut(&mut counts.failures).record(failed, policy.keep);
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
                    &format!("log{i}"),
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
    fn failures_are_every_status_but_success_and_kept_by_policy() {
        let mut counts = DeliveryCounts::default();
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
                &format!("log-{i}"),
                &e,
                created,
                created,
                policy,
            );
        }
        let s = counts.history.series(t);
        assert_eq!((s.attempts_total(), s.failures_total()), (5, 3));
        let kept: Vec<(&str, Option<&str>, Option<&str>)> = counts
            .failures
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

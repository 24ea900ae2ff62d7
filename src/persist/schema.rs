//! How a webhook's state is laid out in the state file, by format version.
//!
//! Version 2 (this one) keeps three kinds of rows per webhook, so a commit
//! writes what changed, not the whole state:
//! - the *row*: everything but the dedupe memory and the kept failures,
//!   in postcard (a compact binary serde format), a version byte first;
//! - one *handled* key per id dealt with, `(created_at ms, webhook key, id
//!   key)`: time first, so the ids every webhook adds in one commit land
//!   side by side at the end of the table, in one or two pages, not one
//!   page per webhook; a webhook's horizon cuts its keys off a range of the
//!   start;
//! - one *failure* row per kept failed attempt, keyed the same way.
//!
//! Version 1 kept each webhook's whole state as one JSON row; such a file
//! is read, and rewritten in version 2 when it is opened.

use std::borrow::Cow;
use std::sync::Arc;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{
    id_key, AttemptKey, Created, DeliveryCounts, Exemplar, Exemplars, FailedAttempt, Failures, Gap,
    Histogram, InFlight, MinuteHistory, Order, Results, TargetState, WebhookSettings,
};
use crate::target::Target;

/// The first byte of every row: what follows is this version's postcard.
const ROW_VERSION: u8 = 2;

/// A webhook's key in the handled and failure tables: its path's stable hash.
pub(super) fn target_key(target: &Target) -> u64 {
    target.stable_hash()
}

/// A handled id or a kept failure: `(created_at ms, webhook, id)`.
pub type EntryKey = (i64, u64, u64);

/// The key of a kept failure.
pub(super) fn failure_key(target_key: u64, f: &FailedAttempt) -> EntryKey {
    (f.created_ms, target_key, id_key(&f.id))
}

/// The state without its dedupe memory and kept failures, borrowed to write
/// and owned when read, with one field order for both.
#[derive(Serialize, Deserialize)]
struct Row<'a> {
    baselined: bool,
    since_ms: Option<i64>,
    order: Option<Order>,
    last_total: Option<u64>,
    horizon_ms: i64,
    newest_ms: i64,
    pending: Cow<'a, HashMap<String, InFlight>>,
    gaps: Cow<'a, [Gap]>,
    oversized: Cow<'a, [String]>,
    per_page: Option<u32>,
    per_page_good: u32,
    counts: CountsRow<'a>,
    settings: Cow<'a, Option<WebhookSettings>>,
}

/// The counters as the row holds them: each series once, with when it
/// began and the attempt behind it beside its count, where the model keeps
/// them in maps of their own (a third of a busy webhook's row).
#[derive(Serialize, Deserialize)]
struct CountsRow<'a> {
    attempts: Vec<AttemptRow<'a>>,
    duration: Vec<(Cow<'a, str>, Cow<'a, Histogram>)>,
    attempt_number: Vec<(Cow<'a, str>, Cow<'a, Histogram>)>,
    retries: u64,
    lag: Cow<'a, Histogram>,
    last_attempt: Vec<(Cow<'a, str>, f64)>,
    missed: Vec<Counted<Cow<'a, str>>>,
    invalid_fields: Vec<Counted<(Cow<'a, str>, Cow<'a, str>)>>,
    results: Results,
    exhausted: Vec<Counted<Cow<'a, str>>>,
    baseline_ms: Option<i64>,
    history: Cow<'a, MinuteHistory>,
}

/// A counter series: its labels, its count and when it began.
type Counted<L> = (L, u64, Option<i64>);

/// One `talkover_webhook_delivery_attempts_total` series.
#[derive(Serialize, Deserialize)]
struct AttemptRow<'a> {
    event: Cow<'a, str>,
    status: Cow<'a, str>,
    code: Cow<'a, str>,
    count: u64,
    created_ms: Option<i64>,
    exemplar: Option<Cow<'a, Exemplar>>,
}

impl<'a> CountsRow<'a> {
    fn of(c: &'a DeliveryCounts) -> CountsRow<'a> {
        let text = |s: &'a String| Cow::Borrowed(s.as_str());
        CountsRow {
            attempts: c
                .attempts
                .iter()
                .map(|(k, n)| AttemptRow {
                    event: text(&k.event),
                    status: text(&k.status),
                    code: text(&k.code),
                    count: *n,
                    created_ms: c.created.attempts.get(k).copied(),
                    exemplar: c.exemplars.of_attempts(k).map(Cow::Borrowed),
                })
                .collect(),
            duration: c
                .duration
                .iter()
                .map(|(s, h)| (text(s), Cow::Borrowed(h)))
                .collect(),
            attempt_number: c
                .attempt_number
                .iter()
                .map(|(s, h)| (text(s), Cow::Borrowed(h)))
                .collect(),
            retries: c.retries,
            lag: Cow::Borrowed(&c.lag),
            last_attempt: c.last_attempt.iter().map(|(s, t)| (text(s), *t)).collect(),
            missed: c
                .missed
                .iter()
                .map(|(r, n)| (text(r), *n, c.created.missed.get(r).copied()))
                .collect(),
            invalid_fields: c
                .invalid_fields
                .iter()
                .map(|(k, n)| {
                    (
                        (text(&k.0), text(&k.1)),
                        *n,
                        c.created.invalid_fields.get(k).copied(),
                    )
                })
                .collect(),
            results: c.results,
            exhausted: c
                .exhausted
                .iter()
                .map(|(e, n)| (text(e), *n, c.created.exhausted.get(e).copied()))
                .collect(),
            baseline_ms: c.created.baseline_ms,
            history: Cow::Borrowed(&c.history),
        }
    }

    fn into_counts(self) -> DeliveryCounts {
        let mut c = DeliveryCounts {
            retries: self.retries,
            lag: self.lag.into_owned(),
            results: self.results,
            history: Arc::new(self.history.into_owned()),
            created: Created {
                baseline_ms: self.baseline_ms,
                ..Created::default()
            },
            ..DeliveryCounts::default()
        };
        let mut exemplars = Exemplars::default();
        for a in self.attempts {
            let key = AttemptKey {
                event: a.event.into_owned(),
                status: a.status.into_owned(),
                code: a.code.into_owned(),
            };
            if let Some(t) = a.created_ms {
                c.created.attempts.insert(key.clone(), t);
            }
            if let Some(e) = a.exemplar {
                exemplars.attempts.insert(key.clone(), e.into_owned());
            }
            c.attempts.insert(key, a.count);
        }
        c.exemplars = Arc::new(exemplars);
        c.duration = self
            .duration
            .into_iter()
            .map(|(s, h)| (s.into_owned(), h.into_owned()))
            .collect();
        c.attempt_number = self
            .attempt_number
            .into_iter()
            .map(|(s, h)| (s.into_owned(), h.into_owned()))
            .collect();
        c.last_attempt = self
            .last_attempt
            .into_iter()
            .map(|(s, t)| (s.into_owned(), t))
            .collect();
        for (r, n, t) in self.missed {
            if let Some(t) = t {
                c.created.missed.insert(r.to_string(), t);
            }
            c.missed.insert(r.into_owned(), n);
        }
        for ((f, r), n, t) in self.invalid_fields {
            let key = (f.into_owned(), r.into_owned());
            if let Some(t) = t {
                c.created.invalid_fields.insert(key.clone(), t);
            }
            c.invalid_fields.insert(key, n);
        }
        for (e, n, t) in self.exhausted {
            if let Some(t) = t {
                c.created.exhausted.insert(e.to_string(), t);
            }
            c.exhausted.insert(e.into_owned(), n);
        }
        c
    }
}

/// Why a row could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The encoder refused the state.
    #[error("encoding a state row: {0}")]
    Encode(#[source] postcard::Error),
    /// The row is not this version's postcard.
    #[error("decoding a state row: {0}")]
    Decode(#[source] postcard::Error),
    /// The row is of another version.
    #[error("a state row of version {0}, not {ROW_VERSION}")]
    Version(u8),
    /// A version 1 row is not its JSON.
    #[error("decoding a version 1 state: {0}")]
    Json(#[source] serde_json::Error),
}

/// `state`'s row: what is rewritten when anything but the dedupe memory and
/// the kept failures changes.
pub(super) fn encode_row(state: &TargetState) -> Result<Vec<u8>, SchemaError> {
    let row = Row {
        baselined: state.baselined,
        since_ms: state.since_ms,
        order: state.order,
        last_total: state.last_total,
        horizon_ms: state.horizon_ms,
        newest_ms: state.newest_ms,
        pending: Cow::Borrowed(&state.pending),
        gaps: Cow::Borrowed(&state.gaps),
        oversized: Cow::Borrowed(&state.oversized),
        per_page: state.per_page,
        per_page_good: state.per_page_good,
        counts: CountsRow::of(&state.counts),
        settings: Cow::Borrowed(&state.settings),
    };
    let out = vec![ROW_VERSION];
    postcard::to_extend(&row, out).map_err(SchemaError::Encode)
}

/// A state from its row, its handled ids (`(created_at ms, id key)`: those
/// below its horizon, not cut yet, are left out) and its kept failures
/// (oldest first, as the table holds them).
pub(super) fn decode_row(
    bytes: &[u8],
    handled: impl IntoIterator<Item = (i64, u64)>,
    failures_oldest_first: Vec<FailedAttempt>,
) -> Result<TargetState, SchemaError> {
    let (&version, body) = bytes.split_first().ok_or(SchemaError::Version(0))?;
    if version != ROW_VERSION {
        return Err(SchemaError::Version(version));
    }
    let row: Row<'static> = postcard::from_bytes(body).map_err(SchemaError::Decode)?;
    let mut counts = row.counts.into_counts();
    // Rows written before native buckets were kept hold none.
    counts.seed_native();
    Ok(TargetState {
        baselined: row.baselined,
        since_ms: row.since_ms,
        order: row.order,
        last_total: row.last_total,
        horizon_ms: row.horizon_ms,
        newest_ms: row.newest_ms,
        handled: handled
            .into_iter()
            .filter(|(c, _)| *c >= row.horizon_ms)
            .map(|(c, k)| (k, c))
            .collect(),
        journal: Vec::new(),
        pending: row.pending.into_owned(),
        gaps: row.gaps.into_owned(),
        oversized: row.oversized.into_owned(),
        per_page: row.per_page,
        per_page_good: row.per_page_good,
        counts,
        failures: Arc::new(Failures::from_newest_first(
            failures_oldest_first.into_iter().rev(),
        )),
        settings: row.settings.into_owned(),
    })
}

/// A whole state as version 1 wrote it (one JSON object, ids as text, the
/// kept failures inside the counters).
#[derive(Deserialize)]
struct V1State {
    baselined: bool,
    #[serde(default)]
    since_ms: Option<i64>,
    order: Option<Order>,
    last_total: Option<u64>,
    horizon_ms: i64,
    newest_ms: i64,
    handled: std::collections::HashMap<String, i64>,
    pending: HashMap<String, InFlight>,
    gaps: Vec<Gap>,
    oversized: Vec<String>,
    per_page: Option<u32>,
    per_page_good: u32,
    counts: DeliveryCounts,
    #[serde(default)]
    settings: Option<WebhookSettings>,
}

/// The kept failures of a version 1 state: inside its counters.
#[derive(Deserialize)]
struct V1Failures {
    counts: V1Counts,
}

#[derive(Deserialize)]
struct V1Counts {
    #[serde(default)]
    failures: Failures,
}

/// A state from a version 1 row. Its counters carry over whole; the series
/// the alerts read at 0 from the baseline (`results`, lost events) begin at
/// 0 now, and the series whose start was not kept have no created timestamp.
pub(super) fn decode_v1(bytes: &[u8]) -> Result<TargetState, SchemaError> {
    let v1: V1State = serde_json::from_slice(bytes).map_err(SchemaError::Json)?;
    let failures: V1Failures = serde_json::from_slice(bytes).map_err(SchemaError::Json)?;
    let mut counts = v1.counts;
    counts.seed_native();
    Ok(TargetState {
        baselined: v1.baselined,
        since_ms: v1.since_ms,
        order: v1.order,
        last_total: v1.last_total,
        horizon_ms: v1.horizon_ms,
        newest_ms: v1.newest_ms,
        handled: v1
            .handled
            .iter()
            .map(|(id, created)| (id_key(id), *created))
            .collect(),
        journal: Vec::new(),
        pending: v1.pending,
        gaps: v1.gaps,
        oversized: v1.oversized,
        per_page: v1.per_page,
        per_page_good: v1.per_page_good,
        counts,
        failures: Arc::new(failures.counts.failures),
        settings: v1.settings,
    })
}

/// Bytes `state` takes in the state file: its row, 24 per handled id, its
/// kept failures (keys and values; the database's pages add to them).
#[cfg(any(test, feature = "bench"))]
pub fn stored_size(state: &TargetState) -> usize {
    let row = encode_row(state).map_or(0, |r| r.len());
    let failures: usize = state
        .failures
        .iter()
        .map(|f| 24 + postcard::to_allocvec(f).map_or(0, |b| b.len()))
        .sum();
    row + 24 * state.handled.len() + failures
}

/// What a restart makes of `state`: its row, handled ids and kept failures
/// written and read back as the state file does. For tests of what survives.
#[cfg(test)]
pub fn through_the_file(state: &TargetState) -> TargetState {
    let row = encode_row(state).unwrap_or_else(|e| panic!("{e}"));
    let mut handled: Vec<(i64, u64)> = state.handled.iter().map(|(k, c)| (*c, *k)).collect();
    handled.sort_unstable();
    let mut failures: Vec<FailedAttempt> = state.failures.iter().cloned().collect();
    failures.reverse();
    decode_row(&row, handled, failures).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptFields, AttemptKey};

    /// A state as the exporter wrote it before it kept failures and the
    /// minute history, and one with both: each loads, ids become keys, and
    /// the counters carry over.
    #[test]
    fn version_1_states_still_load() {
        let old = r#"{"baselined":true,"since_ms":1700000000000,"order":"newest_first",
            "last_total":3,"horizon_ms":1700000000000,"newest_ms":1700000060000,
            "handled":{"log-1":1700000060000},"pending":{},"gaps":[],"oversized":[],
            "per_page":null,"per_page_good":0,
            "counts":{"attempts":[[{"event":"e","status":"failed","code":"500"},2]],
                "duration":{},"attempt_number":{},"retries":0,
                "lag":{"buckets":[],"sum":0.0},"last_attempt":{},"missed":{},
                "invalid_fields":[]}}"#;
        let mut state = decode_v1(old.as_bytes()).expect("old state loads");
        assert!(state.failures.is_empty());
        assert!(state.is_handled("log-1") && !state.is_handled("log-2"));
        assert_eq!(
            state.counts.attempt_mut("e", "failed", "500").copied(),
            Some(2)
        );
        assert_eq!(state.counts.results, [0; 9]);
        assert_eq!(through_the_file(&state), state);

        let with_failures = old.replace(
            r#""invalid_fields":[]}"#,
            r#""invalid_fields":[],"failures":[{"id":"log-1","created_ms":1700000060000,
                "created_at":null,"delivered_at":null,"event":"e","attempt":1,"status":"failed",
                "http_status":500,"duration_ms":12.0,"error":"HTTP 500","response":null}],
                "history":[]}"#,
        );
        let state = decode_v1(with_failures.as_bytes()).expect("loads");
        assert_eq!(state.failures.len(), 1);
        assert_eq!(state.failures.newest().map(|f| &*f.id), Some("log-1"));
    }

    /// Everything a poll leaves in a state survives the file as it was.
    #[test]
    fn a_state_survives_the_file_whole() {
        let mut state = TargetState::watching_since(1_000);
        state.baselined = true;
        state.horizon_ms = 5_000;
        state.handle("a", 6_000);
        state.handle("b", 7_000);
        state.journal.clear();
        state.pending.insert(
            "p".into(),
            InFlight {
                created_ms: 6_500,
                first_seen_ms: 9_000,
            },
        );
        state.counts.attempts.insert(
            AttemptKey {
                event: "e".into(),
                status: "success".into(),
                code: "200".into(),
            },
            3,
        );
        state.counts.start(4_000, &["e".into()]);
        state.counts.results[0] = 3;
        // Histograms, exemplars, series starts, misses: as counting makes them.
        let judge = talkover_count::collect::Judge::new(None, 4_500);
        for (i, status) in ["success", "failed", "failed"].into_iter().enumerate() {
            let entry = talkover_count::api::LogEntry {
                id: Some(format!("l{i}")),
                event: Some("e".into()),
                status: Some(status.into()),
                http_status: Some(500),
                attempt: Some(4),
                duration_ms: Some(1234.5),
                created_at: Some("2024-01-15T11:00:00Z".into()),
                delivered_at: Some("2024-01-15T11:00:02Z".into()),
                ..talkover_count::api::LogEntry::default()
            };
            let id = format!("l{i}");
            talkover_count::collect::record(
                &mut state.counts,
                &id,
                &entry,
                Some(1_705_316_400_000),
                &judge,
            );
        }
        state.counts.miss("retention", 2, 4_600);
        assert!(!state.counts.exemplars.attempts.is_empty());
        for (i, at) in [8_000, 7_000].into_iter().enumerate() {
            let fields = AttemptFields {
                id: if i == 0 { "f0" } else { "f1" },
                created_ms: at,
                error: Some("HTTP 500"),
                ..AttemptFields::default()
            };
            Arc::make_mut(&mut state.failures).record(FailedAttempt::new(&fields, true), 20);
        }
        state.settings = Some(WebhookSettings::new(None, true, Some(0), Some(10), &[]));
        assert_eq!(through_the_file(&state), state);
        let row = encode_row(&state).expect("encodes");
        assert_eq!(row[0], ROW_VERSION);
        assert!(matches!(
            decode_row(&[9, 1, 2], Vec::new(), Vec::new()),
            Err(SchemaError::Version(9))
        ));
        assert!(matches!(
            decode_row(&row[..row.len() / 2], Vec::new(), Vec::new()),
            Err(SchemaError::Decode(_))
        ));
    }

    proptest::proptest! {
        /// Whatever counting leaves in a state, of any size, the file gives
        /// back whole: the engine's property tests restart from the state
        /// alone and rely on this.
        #[test]
        fn any_counted_state_survives_the_file(
            entries in proptest::collection::vec(
                (0u8..4, 0u8..3, 100i64..600, 1i64..8, 0u32..100_000, 0i64..50_000),
                0..60,
            ),
            pending in proptest::collection::vec((0u32..1_000, 0i64..50_000), 0..8),
            gaps in proptest::collection::vec((0u64..1_000, 0u64..500), 0..4),
            keep in 0usize..30,
            response_body in proptest::bool::ANY,
        ) {
            const STATUSES: [&str; 3] = ["success", "failed", "retrying"];
            let mut state = TargetState::watching_since(1_000);
            state.baselined = true;
            state.horizon_ms = 2_000;
            state.per_page = Some(100);
            let judge = talkover_count::collect::Judge::new(None, 1_000);
            for (i, (event, status, code, attempt, duration, at)) in entries.iter().enumerate() {
                let id = format!("log-{i}");
                let event = format!("event.{event}");
                let status = STATUSES[usize::from(*status)];
                let created_ms = 2_000 + at;
                let entry = talkover_count::api::LogEntry {
                    id: Some(id.clone()),
                    event: Some(event.clone()),
                    status: Some(status.into()),
                    http_status: Some(*code),
                    attempt: Some(*attempt),
                    duration_ms: Some(f64::from(*duration) / 10.0),
                    ..talkover_count::api::LogEntry::default()
                };
                talkover_count::collect::record(
                    &mut state.counts, &id, &entry, Some(created_ms), &judge,
                );
                state.handle(&id, created_ms);
                if status != "success" {
                    let fields = AttemptFields {
                        id: &id,
                        created_ms,
                        event: Some(&event),
                        status: Some(status),
                        http_status: Some(*code),
                        error: Some("HTTP 500"),
                        response_body: Some("{\"error\":\"down\"}"),
                        ..AttemptFields::default()
                    };
                    Arc::make_mut(&mut state.failures)
                        .record(FailedAttempt::new(&fields, response_body), keep);
                }
            }
            state.journal.clear();
            for (id, at) in &pending {
                state.pending.insert(
                    format!("pending-{id}"),
                    InFlight { created_ms: 2_000 + at, first_seen_ms: 60_000 },
                );
            }
            for (rank, unread) in &gaps {
                state.gaps.push(Gap {
                    rank: *rank,
                    total_at: rank + unread + 10,
                    top_ms: 30_000,
                    expected_total: rank + unread + 10,
                    bottom_ms: 3_000,
                    unread: *unread,
                });
            }
            proptest::prop_assert_eq!(through_the_file(&state), state);
        }
    }
}

//! The status of each webhook: `/webhooks` and
//! `/webhooks/{campaigns|agents}/{owner_id}/{webhook_id}` answer JSON to
//! `Accept: application/json` (for scripts) and HTML to everyone else (see
//! `pages`); `/` sums them up. Read from the published snapshots, so they
//! show exactly what `/metrics` shows, committed first.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::pages;
use super::routes::{listed, AppState};
use crate::clock::unix_now_ms;
use crate::model::{clean, FailedAttempt, TargetSnapshot, WebhookSettings};
use crate::target::{Scope, Target};
use talkover_count::collect::failure_class;

/// Most bytes of a webhook's name shown (names come from the API).
const NAME_CAP: usize = 256;
/// Most bytes of `q`: a filter longer than any name, id or path is a mistake.
const QUERY_CAP: usize = 256;

/// `/webhooks` query parameters.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// `failure_ratio`: highest failure ratio over the hour first.
    sort: Option<String>,
    /// Only webhooks whose name, scope, owner id, webhook id or path
    /// contains this, in any case.
    q: Option<String>,
}

/// One webhook's row; with its failures on its own page.
#[derive(Debug, Serialize)]
pub(super) struct WebhookView<'a> {
    pub(super) scope: &'static str,
    pub(super) owner_id: &'a str,
    pub(super) webhook_id: &'a str,
    /// As discovery last listed it; `null` for webhooks given by `--target`.
    pub(super) name: Option<Box<str>>,
    /// Whether its last poll succeeded.
    pub(super) up: bool,
    pub(super) attempts_1h: u64,
    pub(super) failures_1h: u64,
    /// `null` without attempts in the hour.
    pub(super) failure_ratio_1h: Option<f64>,
    pub(super) per_minute: PerMinute,
    /// `created_at` of the newest counted successful attempt.
    pub(super) last_success: Option<String>,
    pub(super) last_failure: Option<LastFailure<'a>>,
    /// Attempts seen in flight, not final yet.
    pub(super) pending: u64,
    /// Entries listed by the API and not read yet (estimated).
    pub(super) backlog: u64,
    /// Polls of it since the exporter started, and the API requests they
    /// made: its polling detail, which `/metrics` has per webhook only with
    /// `--collector.poll-stats`.
    pub(super) polls: u64,
    pub(super) api_requests: u64,
    /// How long its last poll took, in seconds.
    pub(super) last_poll_seconds: Option<f64>,
    /// Its settings as the API gave them; `null` while not known.
    pub(super) settings: Option<&'a WebhookSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) failures: Option<Vec<FailureView<'a>>>,
}

/// Attempts and failures in each of the last 60 minutes, oldest first.
#[derive(Debug, Serialize)]
pub(super) struct PerMinute {
    /// Start of the first minute (this host's clock).
    pub(super) start: Option<String>,
    pub(super) step_seconds: u32,
    pub(super) attempts: Vec<u32>,
    pub(super) failures: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub(super) struct LastFailure<'a> {
    /// Its `created_at`.
    pub(super) time: Option<String>,
    /// The receiver's HTTP status; `null` on timeouts, or when failures are not kept.
    pub(super) code: Option<i64>,
    /// Why, in aggregate (`timeout`, `tls`, `http_5xx`, …); `null` when
    /// failures are not kept.
    pub(super) class: Option<&'static str>,
    pub(super) error: Option<&'a str>,
}

/// A kept failed attempt, every field of it.
#[derive(Debug, Serialize)]
pub(super) struct FailureView<'a> {
    pub(super) id: &'a str,
    pub(super) created_at: Option<&'a str>,
    pub(super) delivered_at: Option<&'a str>,
    pub(super) event: Option<&'a str>,
    pub(super) attempt: Option<i64>,
    pub(super) status: Option<&'a str>,
    pub(super) http_status: Option<i64>,
    pub(super) duration_ms: Option<f64>,
    /// Why it failed, in aggregate: the `result` it was counted under in
    /// `talkover_webhook_delivery_results_total`.
    pub(super) class: &'static str,
    pub(super) error: Option<&'a str>,
    /// The first 512 bytes of the receiver's answer; `null` with
    /// `--failures.response-body=false`.
    pub(super) response: Option<&'a str>,
}

impl<'a> FailureView<'a> {
    fn of(f: &'a FailedAttempt, timeout_ms: Option<f64>) -> FailureView<'a> {
        FailureView {
            id: &f.id,
            created_at: f.created_at.as_deref(),
            delivered_at: f.delivered_at.as_deref(),
            event: f.event.as_deref(),
            attempt: f.attempt,
            status: f.status.as_deref(),
            http_status: f.http_status,
            duration_ms: f.duration_ms,
            class: failure_class(f, timeout_ms).as_str(),
            error: f.error.as_deref(),
            response: f.response.as_deref(),
        }
    }
}

/// A webhook's timeout in ms, if known: what tells a timeout from a silent failure.
fn timeout_ms(s: &TargetSnapshot) -> Option<f64> {
    s.settings
        .as_ref()
        .and_then(|st| st.timeout_seconds)
        .map(|t| f64::from(t) * 1000.0)
}

/// `GET /webhooks`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let json = wants_json(&headers);
    let by_ratio = match query.sort.as_deref() {
        None | Some("") => false,
        Some("failure_ratio") => true,
        Some(other) => {
            let other = clean(other, 64);
            return problem(
                json,
                StatusCode::BAD_REQUEST,
                &format!("unknown sort {other:?}: use failure_ratio"),
            );
        }
    };
    let filter = match query.q.as_deref().map(str::trim) {
        Some(q) if q.len() > QUERY_CAP => {
            return problem(
                json,
                StatusCode::BAD_REQUEST,
                &format!("q is longer than {QUERY_CAP} bytes"),
            )
        }
        Some(q) if !q.is_empty() => Some(q.to_lowercase()),
        _ => None,
    };
    let now_ms = unix_now_ms();
    let snapshots = state.published.snapshots();
    let mut rows: Vec<WebhookView<'_>> = snapshots
        .iter()
        .map(|s| (s, view(s, now_ms, false)))
        .filter(|(s, v)| {
            filter
                .as_deref()
                .is_none_or(|q| matches(v, q) || keeps_failure(s, q))
        })
        .map(|(_, v)| v)
        .collect();
    if by_ratio {
        // Stable: equal ratios stay in webhook order; no attempts go last.
        rows.sort_by(|a, b| {
            let key = |v: &WebhookView<'_>| v.failure_ratio_1h.unwrap_or(-1.0);
            key(b).total_cmp(&key(a))
        });
    }
    if json {
        json_response(StatusCode::OK, &rows)
    } else {
        let q = query.q.as_deref().map(str::trim).unwrap_or("");
        pages::html(StatusCode::OK, pages::list(&rows, q, by_ratio))
    }
}

/// `GET /webhooks/{campaigns|agents}/{owner_id}/{webhook_id}`.
pub(super) async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((scope, owner_id, webhook_id)): Path<(String, String, String)>,
) -> Response {
    let json = wants_json(&headers);
    let scope = match scope.as_str() {
        "campaigns" => Scope::Campaign,
        "agents" => Scope::Agent,
        _ => return problem(json, StatusCode::NOT_FOUND, "no such webhook"),
    };
    let target = Target {
        scope,
        owner_id,
        webhook_id,
    };
    let snapshots = state.published.snapshots();
    match snapshots.iter().find(|s| s.target == target) {
        Some(s) if json => json_response(StatusCode::OK, &view(s, unix_now_ms(), true)),
        Some(s) => {
            let mut v = view(s, unix_now_ms(), true);
            let failures = v.failures.take().unwrap_or_default();
            pages::html(StatusCode::OK, pages::detail(&v, &failures))
        }
        None => problem(json, StatusCode::NOT_FOUND, "no such webhook"),
    }
}

fn view<'a>(s: &'a TargetSnapshot, now_ms: i64, with_failures: bool) -> WebhookView<'a> {
    let series = s.history().series(now_ms);
    let (attempts, failures) = (series.attempts_total(), series.failures_total());
    let name = s
        .settings
        .as_ref()
        .map(|st| clean(&st.name, NAME_CAP))
        .filter(|n| !n.is_empty());
    WebhookView {
        scope: s.target.scope.segment(),
        owner_id: &s.target.owner_id,
        webhook_id: &s.target.webhook_id,
        name,
        up: s.stats.up,
        attempts_1h: attempts,
        failures_1h: failures,
        failure_ratio_1h: (attempts > 0).then(|| failures as f64 / attempts as f64),
        per_minute: PerMinute {
            start: rfc3339(series.start_ms),
            step_seconds: 60,
            attempts: series.attempts,
            failures: series.failures,
        },
        last_success: newest_attempt(s, true).and_then(|t| rfc3339((t * 1000.0) as i64)),
        last_failure: last_failure(s),
        pending: s.pending,
        backlog: s.backlog,
        polls: s.stats.polls,
        api_requests: s.stats.requests.values().sum(),
        last_poll_seconds: s.stats.last_duration,
        settings: s.settings.as_ref(),
        failures: with_failures.then(|| {
            let timeout = timeout_ms(s);
            s.failures()
                .iter()
                .map(|f| FailureView::of(f, timeout))
                .collect()
        }),
    }
}

/// The newest kept failure; without kept failures (`--failures.keep 0`),
/// only when the newest failed attempt was created.
fn last_failure(s: &TargetSnapshot) -> Option<LastFailure<'_>> {
    match s.failures().newest() {
        Some(f) => Some(LastFailure {
            time: rfc3339(f.created_ms),
            code: f.http_status,
            class: Some(failure_class(f, timeout_ms(s)).as_str()),
            error: f.error.as_deref(),
        }),
        None => newest_attempt(s, false).map(|t| LastFailure {
            time: rfc3339((t * 1000.0) as i64),
            code: None,
            class: None,
            error: None,
        }),
    }
}

/// Unix seconds of the newest counted attempt that succeeded (or failed).
fn newest_attempt(s: &TargetSnapshot, success: bool) -> Option<f64> {
    s.counts
        .last_attempt
        .iter()
        .filter(|(status, _)| status.eq_ignore_ascii_case("success") == success)
        .map(|(_, t)| *t)
        .reduce(f64::max)
}

fn matches(v: &WebhookView<'_>, q: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(q);
    v.name.as_deref().is_some_and(has)
        || has(v.owner_id)
        || has(v.webhook_id)
        || has(&format!(
            "{}/{}/webhooks/{}",
            v.scope, v.owner_id, v.webhook_id
        ))
}

fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Whether `Accept` asks for JSON (listed, and not with `q=0`).
fn wants_json(headers: &HeaderMap) -> bool {
    listed(headers, header::ACCEPT, |media| {
        media.eq_ignore_ascii_case("application/json")
    })
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::VARY, "Accept"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding a status page failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn problem(json: bool, status: StatusCode, message: &str) -> Response {
    if json {
        json_response(status, &serde_json::json!({ "error": message }))
    } else {
        pages::html(status, pages::problem(message))
    }
}

/// `GET /`: the landing page, with a summary of every webhook.
pub(super) async fn landing(State(state): State<AppState>) -> Response {
    let now_ms = unix_now_ms();
    let mut summary = pages::Summary::default();
    for s in state.published.snapshots() {
        let series = s.history().series(now_ms);
        summary.watched += 1;
        summary.up += usize::from(s.stats.up);
        let recent_failures: u64 = series
            .failures
            .iter()
            .rev()
            .take(15)
            .map(|&f| u64::from(f))
            .sum();
        summary.failing += usize::from(recent_failures > 0 || !s.stats.up);
        summary.attempts_1h += series.attempts_total();
    }
    pages::html(
        StatusCode::OK,
        pages::landing(&summary, &state.telemetry_path),
    )
}

/// Whether a kept failure of `s` has the log id `q` (lower case): how an
/// exemplar's `log_id` finds its webhook.
fn keeps_failure(s: &TargetSnapshot, q: &str) -> bool {
    s.failures().iter().any(|f| f.id.eq_ignore_ascii_case(q))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderValue;
    use serde_json::Value;

    use super::*;
    use crate::metrics::Published;
    use crate::model::{AttemptFields, DeliveryCounts, PollStats, Readiness, WebhookSettings};

    /// A webhook with `ok` successes and, from `failed`, one failure per
    /// (id, error, body), all created a second ago.
    fn publish(p: &Published, path: &str, ok: u32, failed: &[(&str, &str, &str)]) {
        publish_named(p, path, None, ok, failed);
    }

    fn publish_named(
        p: &Published,
        path: &str,
        name: Option<&str>,
        ok: u32,
        failed: &[(&str, &str, &str)],
    ) {
        let now = unix_now_ms() - 1000;
        let mut counts = DeliveryCounts::default();
        let mut kept = Arc::new(crate::model::Failures::default());
        let history = Arc::make_mut(&mut counts.history);
        for _ in 0..ok {
            history.record(now, false);
        }
        if ok > 0 {
            counts
                .last_attempt
                .insert("success".into(), now as f64 / 1000.0);
        }
        for (i, (id, error, body)) in failed.iter().enumerate() {
            Arc::make_mut(&mut counts.history).record(now, true);
            let fields = AttemptFields {
                id,
                created_ms: now + i as i64,
                created_at: Some("2024-01-15T11:00:00Z"),
                status: Some("failed"),
                http_status: Some(500),
                attempt: Some(2),
                duration_ms: Some(8021.0),
                error: Some(error),
                response_body: Some(body),
                ..AttemptFields::default()
            };
            Arc::make_mut(&mut kept).record(FailedAttempt::new(&fields, true), 20);
        }
        p.publish(TargetSnapshot {
            target: path.parse().expect("target"),
            counts,
            failures: kept,
            stats: PollStats {
                up: true,
                ..PollStats::default()
            },
            pending: 2,
            backlog: 0,
            settings: name.map(|n| WebhookSettings::named(n, true)),
        });
    }

    fn state() -> AppState {
        let p = Arc::new(Published::new());
        publish(&p, "campaigns/c1/webhooks/calm", 10, &[]);
        publish_named(
            &p,
            "campaigns/c1/webhooks/flaky",
            Some("CRM <sync>\u{1b}"),
            3,
            &[("l1", "HTTP 500", "{}")],
        );
        publish(
            &p,
            "agents/a1/webhooks/down",
            0,
            &[
                ("l2", "timed out", "<b>x</b>"),
                ("l3", "HTTP 500 from receiver", "{\"error\":\"internal\"}"),
            ],
        );
        publish(&p, "agents/a1/webhooks/idle", 0, &[]);
        AppState::new(p, Arc::new(Readiness::new(false)), "/metrics".into(), 0)
    }

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(value));
        h
    }

    async fn body(r: Response) -> (StatusCode, Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get_list(sort: Option<&str>, q: Option<&str>) -> (StatusCode, Value) {
        let query = ListQuery {
            sort: sort.map(str::to_string),
            q: q.map(str::to_string),
        };
        body(list(State(state()), accept("application/json"), Query(query)).await).await
    }

    fn ids(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|w| w["webhook_id"].as_str().expect("id"))
            .collect()
    }

    #[tokio::test]
    async fn list_counts_the_hour_sorts_and_filters() {
        let (status, all) = get_list(None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&all), ["calm", "flaky", "down", "idle"]);
        let flaky = &all[1];
        assert_eq!(flaky["scope"], "campaigns");
        assert_eq!(flaky["owner_id"], "c1");
        assert_eq!(flaky["name"], "CRM <sync>");
        assert_eq!(
            (flaky["attempts_1h"].as_u64(), flaky["failures_1h"].as_u64()),
            (Some(4), Some(1))
        );
        assert_eq!(flaky["failure_ratio_1h"], 0.25);
        assert_eq!(
            flaky["per_minute"]["attempts"].as_array().map(Vec::len),
            Some(60)
        );
        assert_eq!(flaky["per_minute"]["failures"][59], 1);
        assert_eq!(flaky["last_failure"]["code"], 500);
        assert_eq!(flaky["last_failure"]["error"], "HTTP 500");
        assert!(flaky["last_success"].is_string());
        assert_eq!(
            (flaky["up"].as_bool(), flaky["pending"].as_u64()),
            (Some(true), Some(2))
        );
        assert!(
            flaky.get("failures").is_none(),
            "the list leaves failures to the webhook's page"
        );
        assert!(all[3]["failure_ratio_1h"].is_null() && all[3]["last_failure"].is_null());

        let (_, sorted) = get_list(Some("failure_ratio"), None).await;
        assert_eq!(ids(&sorted), ["down", "flaky", "calm", "idle"]);
        let (_, found) = get_list(None, Some(" crm ")).await;
        assert_eq!(ids(&found), ["flaky"]);
        let (_, found) = get_list(None, Some("AGENTS/a1")).await;
        assert_eq!(ids(&found), ["down", "idle"]);
        let (status, err) = get_list(Some("<name>"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["error"], "unknown sort \"<name>\": use failure_ratio");
        let (status, _) = get_list(None, Some(&"x".repeat(300))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    async fn get_detail(headers: HeaderMap, path: (&str, &str, &str)) -> (StatusCode, Value) {
        let path = (path.0.to_string(), path.1.to_string(), path.2.to_string());
        body(detail(State(state()), headers, Path(path)).await).await
    }

    #[tokio::test]
    async fn a_webhook_page_lists_its_failures_newest_first_with_every_field() {
        let json = accept("text/html;q=0.9, application/json");
        let (status, down) = get_detail(json.clone(), ("agents", "a1", "down")).await;
        assert_eq!(status, StatusCode::OK);
        let failures = down["failures"].as_array().expect("failures");
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0]["id"], "l3");
        assert_eq!(failures[0]["response"], "{\"error\":\"internal\"}");
        assert_eq!(failures[1]["response"], "<b>x</b>");
        for field in [
            "created_at",
            "delivered_at",
            "event",
            "attempt",
            "status",
            "http_status",
            "duration_ms",
            "error",
        ] {
            assert!(failures[1].get(field).is_some(), "{field}");
        }
        assert_eq!(failures[1]["duration_ms"], 8021.0);
        assert_eq!(down["last_failure"]["error"], "HTTP 500 from receiver");

        for missing in [("agents", "a1", "nope"), ("webhooks", "a1", "down")] {
            let (status, err) = get_detail(json.clone(), missing).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing:?}");
            assert_eq!(err["error"], "no such webhook");
        }
        // Browsers get the page, escaped, under a strict CSP.
        for not_json in ["text/html", "application/json;q=0", "*/*"] {
            let r = detail(
                State(state()),
                accept(not_json),
                Path(("agents".into(), "a1".into(), "down".into())),
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{not_json}");
            let h = r.headers().clone();
            assert!(h[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/html")));
            assert!(h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .is_ok_and(|v| v.contains("default-src 'none'")));
            let body = axum::body::to_bytes(r.into_body(), 1 << 20)
                .await
                .expect("body");
            let html = String::from_utf8(body.to_vec()).expect("utf-8");
            assert!(html.contains("HTTP 500 from receiver"), "{html}");
            assert!(html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x</b>"));
            assert!(html.contains("class=\"failure\""));
        }
    }
}

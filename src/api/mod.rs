//! The Talkover REST client.
//!
//! This module knows HTTP and nothing of metrics: it turns one request for
//! one page of a webhook's delivery logs into a [`LogPage`] or a typed
//! [`ApiError`] that says why not. The answers' shapes, the errors and the
//! API's health are data of the counting engine ([`talkover_count::api`]).
//!
//! - `auth`: the token and the token file.
//! - `limiter`: the request budget shared by every webhook.

mod auth;
mod limiter;

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, DATE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use url::Url;

use crate::clock::{unix_now_ms, ApiClock};
use crate::metrics::GaugeFn;
use crate::target::{Scope, Target};
use auth::Auth;
use talkover_count::api::{Admission, Envelope, Outcome};

pub use auth::{Credentials, Token};
pub use talkover_count::api::{ApiError, ApiHealth, LogPage, Owner, WebhookInfo, MAX_PER_PAGE};

/// An admitted request: a probe that is dropped unsent (its poll was
/// stopped) frees the probe's slot.
struct Admitted<'a> {
    health: &'a ApiHealth,
    admission: Admission,
    recorded: bool,
}

impl Admitted<'_> {
    fn record(mut self, outcome: Outcome, path_hash: u64) {
        self.recorded = true;
        self.health.record(self.admission, outcome, path_hash);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.health.abandon(self.admission);
        }
    }
}
pub use limiter::RateLimiter;

/// How the client reaches the API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL, e.g. `https://app.talkover.ai/`.
    pub base_url: Url,
    /// Bearer token; `None` only against the demo simulator.
    pub credentials: Option<Credentials>,
    /// Time allowed for one whole request, body included.
    pub timeout: Duration,
    /// Largest response body read before the page is refused.
    pub max_body_bytes: usize,
    /// Whether plain `http://` is allowed (the token then travels unencrypted).
    pub allow_insecure: bool,
    /// Most requests per second, all targets together.
    pub max_requests_per_second: f64,
    /// The longest wait between two probes of an API that is down: the poll
    /// interval (clamped to 1 s – 30 s), so every webhook is read again
    /// within about an interval of its return.
    pub probe_max: Duration,
}

/// A client for the delivery-log endpoints.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    auth: std::sync::Arc<Auth>,
    timeout: Duration,
    max_body_bytes: usize,
    limiter: std::sync::Arc<RateLimiter>,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    clock: std::sync::Arc<ApiClock>,
    health: std::sync::Arc<ApiHealth>,
}

/// Requests to the API at once, all targets together: as many as the warm
/// connections kept, so a burst of polls (thousands of targets, a slow API)
/// queues here instead of opening a connection per poller.
pub const MAX_IN_FLIGHT: usize = 32;

impl Client {
    /// Builds a client; redirects are never followed so the token cannot be
    /// carried to another host.
    pub fn new(opts: ClientOptions) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .https_only(!opts.allow_insecure)
            // Thousands of pollers share one API host: keep a few warm
            // connections, not one per poller that ever ran at once.
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("talkover-exporter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base_url: opts.base_url,
            auth: std::sync::Arc::new(Auth::new(opts.credentials)),
            timeout: opts.timeout,
            max_body_bytes: opts.max_body_bytes,
            limiter: std::sync::Arc::new(RateLimiter::new(opts.max_requests_per_second)),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            clock: std::sync::Arc::new(ApiClock::new()),
            health: std::sync::Arc::new(ApiHealth::new(crate::backoff::Backoff {
                min: opts.probe_max.min(Duration::from_secs(1)),
                max: opts.probe_max,
                jitter: 0.2,
            })),
        })
    }

    /// The API's health as this client's requests saw it.
    pub fn health(&self) -> &ApiHealth {
        &self.health
    }

    /// The API's clock as learned from its `Date` headers so far.
    pub fn clock(&self) -> &ApiClock {
        &self.clock
    }

    /// Reads page `page` (1-based) of `target`'s delivery log.
    pub async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<LogPage, ApiError> {
        let (entries, total) = self.get_page(&target.logs_path(), page, per_page).await?;
        Ok(LogPage { entries, total })
    }

    /// Every campaign (or agent) of the account, through all listing pages.
    pub async fn list_owners(&self, scope: Scope) -> Result<Vec<Owner>, ApiError> {
        self.get_all(&format!("api/v1/{}", scope.segment())).await
    }

    /// Every webhook of one campaign or agent, through all listing pages.
    pub async fn list_webhooks(
        &self,
        scope: Scope,
        owner_id: &str,
    ) -> Result<Vec<WebhookInfo>, ApiError> {
        self.get_all(&format!("api/v1/{}/{owner_id}/webhooks", scope.segment()))
            .await
    }

    /// A webhook's own object (`GET /api/v1/{scope}/{owner}/webhooks/{id}`):
    /// its settings, for a webhook given by `--target`.
    pub async fn get_webhook(&self, target: &Target) -> Result<WebhookInfo, ApiError> {
        let rel = format!("api/v1/{target}");
        let (info, _) = self.get::<WebhookInfo>(&rel, None).await?;
        Ok(info)
    }

    /// Pages through a listing endpoint until a short or empty page.
    async fn get_all<T: DeserializeOwned>(&self, rel: &str) -> Result<Vec<T>, ApiError> {
        let mut all = Vec::new();
        for page in 1.. {
            let (items, total) = self.get_page::<T>(rel, page, MAX_PER_PAGE).await?;
            let short = items.len() < MAX_PER_PAGE as usize;
            all.extend(items);
            // A bound, in case an API keeps answering full pages forever.
            if short || total.is_some_and(|t| all.len() as u64 >= t) || page >= 10_000 {
                break;
            }
        }
        Ok(all)
    }

    /// One page of any endpoint answering the `{success, data, pagination}` envelope.
    async fn get_page<T: DeserializeOwned>(
        &self,
        rel: &str,
        page: u64,
        per_page: u32,
    ) -> Result<(Vec<T>, Option<u64>), ApiError> {
        self.get::<Vec<T>>(rel, Some((page, per_page))).await
    }

    /// `GET` of any endpoint answering the envelope, whose `data` is a `D`;
    /// `page` is `(page, per_page)` for the paged ones.
    async fn get<D: DeserializeOwned>(
        &self,
        rel: &str,
        page: Option<(u64, u32)>,
    ) -> Result<(D, Option<u64>), ApiError> {
        let Some(admission) = self.health.admit() else {
            return Err(ApiError::ApiDown {
                path: format!("/{rel}"),
            });
        };
        let admitted = Admitted {
            health: &self.health,
            admission,
            recorded: false,
        };
        let result = self.send::<D>(rel, page).await;
        let outcome = match &result {
            Err(e) if e.is_api_fault() => Outcome::Fault,
            _ => Outcome::Answered,
        };
        admitted.record(outcome, path_hash(rel));
        result
    }

    async fn send<D: DeserializeOwned>(
        &self,
        rel: &str,
        page: Option<(u64, u32)>,
    ) -> Result<(D, Option<u64>), ApiError> {
        let path = match page {
            Some((page, per_page)) => format!("/{rel}?page={page}&per_page={per_page}"),
            None => format!("/{rel}"),
        };
        let mut url = self
            .base_url
            .join(rel)
            .map_err(|e| ApiError::InvalidResponse {
                path: path.clone(),
                status: 0,
                detail: format!("cannot build URL: {e}"),
            })?;
        if let Some((page, per_page)) = page {
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("per_page", &per_page.to_string());
        }
        // Held until the body is read: the connection is busy until then.
        // (The semaphore is never closed, so this always gets a permit.)
        let _in_flight = self.in_flight.acquire().await.ok();
        let mut retried = false;
        let (resp, status, sent, date_ms) = loop {
            self.limiter.acquire().await;
            let mut req = self.http.get(url.clone());
            if let Some(auth) = self.auth.header() {
                req = req.header(AUTHORIZATION, auth);
            }
            let sent = tokio::time::Instant::now();
            let sent_ms = unix_now_ms();
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport_error(&path, e))?;
            // Every answer, errors included, tells the API's time.
            let date_ms = resp
                .headers()
                .get(DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| self.clock.observe_header(d, sent_ms, unix_now_ms()));
            let status = resp.status();
            let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            // A refused token may have just been rotated: read the file once
            // more and retry before failing the poll.
            if refused && !retried && self.auth.reload() {
                retried = true;
                continue;
            }
            break (resp, status, sent, date_ms);
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, date_ms));
            let pause = self.limiter.throttled(sent, retry_after);
            tracing::warn!(path = %path, pause = ?pause, "rate limited by the API; holding back every target");
            return Err(ApiError::RateLimited { path, retry_after });
        }
        self.limiter.succeeded();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized {
                path,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(ApiError::Http {
                path,
                status: status.as_u16(),
            });
        }
        let body = self.read_capped(&path, resp).await?;
        self.parse_envelope(&path, status.as_u16(), &body)
    }

    /// Reads the body chunk by chunk so that an oversized one is refused
    /// without ever being held whole.
    async fn read_capped(
        &self,
        path: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, ApiError> {
        let status = resp.status().as_u16();
        let too_large = || ApiError::BodyTooLarge {
            path: path.to_string(),
            status,
            limit: self.max_body_bytes,
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(path, e))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn parse_envelope<D: DeserializeOwned>(
        &self,
        path: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(D, Option<u64>), ApiError> {
        let invalid = |detail: String| ApiError::InvalidResponse {
            path: path.to_string(),
            status,
            detail: self.redact(&detail),
        };
        let env: Envelope<D> = match serde_json::from_slice(body) {
            Ok(env) => env,
            // Bytes that are not UTF-8 (a receiver's binary answer passed
            // on as it came) would fail the whole page, and every attempt
            // on it with it: they are read as U+FFFD instead. Only once a
            // page failed, so a good page pays nothing for it.
            Err(_) if std::str::from_utf8(body).is_err() => {
                serde_json::from_str(&String::from_utf8_lossy(body))
                    .map_err(|e| invalid(e.to_string()))?
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        if env.success == Some(false) {
            let message = env.message.unwrap_or_else(|| "no message".to_string());
            return Err(ApiError::Api {
                path: path.to_string(),
                status,
                message: self.redact(&shorten(&message, 200)),
            });
        }
        let items = env.data.ok_or_else(|| invalid("no `data`".to_string()))?;
        Ok((items, env.pagination.and_then(|p| p.total)))
    }

    fn transport_error(&self, path: &str, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout {
                path: path.to_string(),
                timeout: self.timeout,
            }
        } else {
            ApiError::Connection {
                path: path.to_string(),
                source: Box::new(e.without_url()),
            }
        }
    }

    fn redact(&self, text: &str) -> String {
        self.auth.redact(text)
    }
}

/// The API as the client sees it: its clock, and its health.
pub fn register_metrics(registry: &prometheus::Registry, client: &std::sync::Arc<Client>) {
    let c = client.clone();
    GaugeFn::register(
        registry,
        "talkover_exporter_api_clock_offset_seconds",
        "How far the API's clock (from its Date headers) is ahead of this host's; absent until a response carried a usable Date.",
        move || c.clock().offset().map(|o| o.estimate_ms() as f64 / 1000.0),
    );
    let c = client.clone();
    GaugeFn::register(
        registry,
        "talkover_exporter_api_up",
        "1 while the Talkover API answers, 0 while it is down (its own faults from two webhooks or more, five in a row) and one request at a time probes it.",
        move || Some(f64::from(u8::from(c.health().is_up()))),
    );
    let c = client.clone();
    GaugeFn::register_counter(
        registry,
        "talkover_exporter_api_outages_total",
        "Times the Talkover API went down, as the exporter saw it.",
        move || Some(c.health().outages() as f64),
    );
}

/// A request path, hashed: the health tells one webhook's faults from the API's.
fn path_hash(rel: &str) -> u64 {
    rel.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date. A date is read
/// against the same response's `Date` (`date_ms`) when there is one, so a
/// host clock that is off does not stretch or cut the pause. Capped at an
/// hour: a larger value is garbage, and would hold every target back for good.
fn parse_retry_after(v: &HeaderValue, date_ms: Option<i64>) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    let wait = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(s).ok()?;
            let at_ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let now_ms = date_ms.unwrap_or_else(unix_now_ms);
            Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The longest `Retry-After` obeyed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use talkover_count::api::{parse_timestamp_ms, LogEntry};

    fn page(json: &str) -> Result<LogPage, ApiError> {
        page_bytes(json.as_bytes())
    }

    fn page_bytes(json: &[u8]) -> Result<LogPage, ApiError> {
        let client = Client::new(ClientOptions {
            base_url: Url::parse("http://127.0.0.1/").expect("url"),
            credentials: Token::new("talq_secret").map(Credentials::Token),
            timeout: Duration::from_secs(1),
            max_body_bytes: 1 << 20,
            allow_insecure: true,
            max_requests_per_second: 10.0,
            probe_max: Duration::from_secs(1),
        })
        .expect("client");
        client
            .parse_envelope("/x", 200, json)
            .map(|(entries, total)| LogPage { entries, total })
    }

    #[test]
    fn hostile_entries_read_as_missing_fields_not_a_failed_page() {
        let p = page(
            r#"{"success":true,"data":[
                {"id":"a","status":"success","attempt":"2","http_status":null,"duration_ms":-5,"extra":{"x":[1,2]}},
                "not an object", [1,2], null, 7,
                {"id":42,"http_status":"oops","duration_ms":"12.5","created_at":{"nested":true}}
            ],"pagination":{"total":"47"}}"#,
        )
        .expect("page parses");
        assert_eq!(p.total, Some(47));
        assert_eq!(p.entries.len(), 6);
        assert_eq!(p.entries[0].id.as_deref(), Some("a"));
        assert_eq!(p.entries[0].attempt, Some(2));
        assert_eq!(p.entries[0].http_status, None);
        assert_eq!(p.entries[0].duration_ms, Some(-5.0));
        assert_eq!(p.entries[1], LogEntry::default());
        assert_eq!(p.entries[5].id.as_deref(), Some("42"));
        assert_eq!(p.entries[5].http_status, None);
        assert_eq!(p.entries[5].duration_ms, Some(12.5));
        assert_eq!(p.entries[5].created_at, None);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_a_failed_page() {
        let mut json =
            br#"{"success":true,"data":[{"id":"a","status":"failed","error":"bad "#.to_vec();
        json.extend_from_slice(b"\xff\xfe");
        json.extend_from_slice(br#" end","response_body":""#);
        json.extend_from_slice(b"\xc3(");
        json.extend_from_slice(br#""}]}"#);
        let p = page_bytes(&json).expect("page parses");
        assert_eq!(
            p.entries[0].error.as_deref(),
            Some("bad \u{fffd}\u{fffd} end")
        );
        assert_eq!(p.entries[0].response_body.as_deref(), Some("\u{fffd}("));
        let e = page_bytes(b"\xff{").expect_err("not JSON at all");
        assert_eq!(e.reason(), "invalid_response");
    }

    #[test]
    fn envelope_failures_are_typed_and_redacted() {
        let e = page(r#"{"success":false,"message":"bad token talq_secret","code":"AUTH"}"#)
            .expect_err("success:false");
        assert_eq!(e.reason(), "api_error");
        assert!(!e.to_string().contains("talq_secret"), "{e}");
        let e = page("<html>502 Bad Gateway</html>").expect_err("html");
        assert_eq!(e.reason(), "invalid_response");
        let e = page(r#"{"success":true,"data":[{"id":"a""#).expect_err("truncated");
        assert_eq!(e.reason(), "invalid_response");
        let e = page(r#"{"success":true}"#).expect_err("no data");
        assert!(e.to_string().contains("no `data`"), "{e}");
    }

    #[test]
    fn timestamps_and_retry_after() {
        assert_eq!(
            parse_timestamp_ms("2024-01-15T11:00:00Z"),
            Some(1_705_316_400_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-15T11:00:00.250+00:00"),
            Some(1_705_316_400_250)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7"), None),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(
                &HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
                None
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), None),
            None
        );
        for huge in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            assert_eq!(
                parse_retry_after(&HeaderValue::from_static(huge), None),
                Some(MAX_RETRY_AFTER),
                "{huge}"
            );
        }
    }
}

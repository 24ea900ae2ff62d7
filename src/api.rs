//! The Talkover REST client and the shapes of its answers.
//!
//! This module knows HTTP and JSON and nothing of metrics: it turns one
//! request for one page of a webhook's delivery logs into a [`LogPage`] or a
//! typed [`ApiError`] that says why not.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, DATE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::clock::{unix_now_ms, ApiClock};
use crate::target::{Scope, Target};

/// The largest `per_page` the API accepts.
pub const MAX_PER_PAGE: u32 = 100;

/// An API token. Its `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token read from the environment or a file; the trailing newline
    /// a file usually ends with is dropped. `None` if nothing is left.
    pub fn new(raw: &str) -> Option<Token> {
        let t = raw.trim_end_matches(['\n', '\r']).trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    /// Replaces every occurrence of the secret in text the server sent back,
    /// in case a proxy echoes request headers into an error page.
    fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the token comes from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A fixed token (from `TALKOVER_TOKEN`).
    Token(Token),
    /// A file read again whenever it changes (`--talkover.token-file`), so
    /// a rotated token (a Kubernetes Secret updated in place) is picked up
    /// without a restart.
    File(std::path::PathBuf),
}

/// The current `Authorization` header, following a token file.
#[derive(Debug)]
struct Auth {
    file: Option<std::path::PathBuf>,
    /// A std lock: held for a clone or a swap, never across an await.
    current: std::sync::RwLock<AuthState>,
}

#[derive(Debug, Default)]
struct AuthState {
    token: Option<Token>,
    header: Option<HeaderValue>,
    /// Modification time and length of the file when last read.
    stamp: Option<(std::time::SystemTime, u64)>,
}

impl Auth {
    fn new(credentials: Option<Credentials>) -> Auth {
        let (file, token) = match credentials {
            None => (None, None),
            Some(Credentials::Token(t)) => (None, Some(t)),
            Some(Credentials::File(path)) => (Some(path), None),
        };
        let auth = Auth {
            file,
            current: std::sync::RwLock::new(AuthState::default()),
        };
        match token {
            Some(t) => auth.set(t, None),
            None => {
                auth.reload();
            }
        }
        auth
    }

    fn set(&self, token: Token, stamp: Option<(std::time::SystemTime, u64)>) {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        header.set_sensitive(true);
        let mut st = self.current.write().unwrap_or_else(|e| e.into_inner());
        *st = AuthState {
            token: Some(token),
            header: Some(header),
            stamp,
        };
    }

    fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// The header to send, after re-reading the token file if it changed.
    fn header(&self) -> Option<HeaderValue> {
        if let Some(path) = &self.file {
            let seen = self.current.read().unwrap_or_else(|e| e.into_inner()).stamp;
            if Self::stamp(path) != seen {
                self.reload();
            }
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .header
            .clone()
    }

    /// Reads the token file again; true if it now holds another token.
    fn reload(&self) -> bool {
        let Some(path) = &self.file else { return false };
        let stamp = Self::stamp(path);
        let token = std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(Token::new);
        let Some(token) = token else {
            tracing::warn!(path = %path.display(), "token file unreadable or empty; keeping the previous token");
            let mut st = self.current.write().unwrap_or_else(|e| e.into_inner());
            st.stamp = stamp;
            return false;
        };
        let changed = {
            let st = self.current.read().unwrap_or_else(|e| e.into_inner());
            st.token.as_ref().map(|t| &t.0) != Some(&token.0)
        };
        if changed {
            tracing::info!(path = %path.display(), "token file changed; using the new token");
        }
        self.set(token, stamp);
        changed
    }

    fn redact(&self, text: &str) -> String {
        match &self.current.read().unwrap_or_else(|e| e.into_inner()).token {
            Some(t) => t.redact(text),
            None => text.to_string(),
        }
    }
}

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
        st.throttled = st.throttled.saturating_add(1);
        let pause = retry_after.unwrap_or_else(|| {
            let base = Duration::from_secs(1u64 << st.throttled.saturating_sub(1).min(6));
            base.min(Duration::from_secs(60))
                .mul_f64(1.0 + fastrand::f64() * 0.25)
        });
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
    pub fn escalations(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .throttled
    }
}

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
}

/// Requests to the API at once, all targets together: as many as the warm
/// connections kept, so a burst of polls (thousands of targets, a slow API)
/// queues here instead of opening a connection per poller.
pub const MAX_IN_FLIGHT: usize = 32;

/// Why a page could not be read. Every variant names the request path.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403: the token is wrong, rotated or lacks access.
    #[error("GET {path}: HTTP {status}: the token was refused")]
    Unauthorized {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
    /// 429: the API asks us to slow down.
    #[error("GET {path}: HTTP 429: rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// Request path.
        path: String,
        /// What `Retry-After` asked for, if anything readable.
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx status (including redirects, which are never followed).
    #[error("GET {path}: HTTP {status}")]
    Http {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
    /// A 2xx answer whose body is not the documented JSON envelope.
    #[error("GET {path}: HTTP {status}: invalid response: {detail}")]
    InvalidResponse {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// What was wrong with it.
        detail: String,
    },
    /// A well-formed envelope with `success: false`.
    #[error("GET {path}: HTTP {status}: API error: {message}")]
    Api {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The API's message, shortened.
        message: String,
    },
    /// The request or its body took longer than the timeout.
    #[error("GET {path}: timed out after {timeout:?}")]
    Timeout {
        /// Request path.
        path: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The connection could not be made or broke.
    #[error("GET {path}: connection failed: {source}")]
    Connection {
        /// Request path.
        path: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The body is larger than `--talkover.max-body-size`.
    #[error("GET {path}: HTTP {status}: body larger than {limit} bytes")]
    BodyTooLarge {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The cap.
        limit: usize,
    },
}

impl ApiError {
    /// The `reason` label of `talkover_exporter_poll_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Http { .. } => "http_error",
            ApiError::InvalidResponse { .. } => "invalid_response",
            ApiError::Api { .. } => "api_error",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Connection { .. } => "connection",
            ApiError::BodyTooLarge { .. } => "body_too_large",
        }
    }

    /// The `outcome` label of `talkover_exporter_api_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } | ApiError::Http { .. } => "http_error",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::InvalidResponse { .. } | ApiError::Api { .. } => "invalid_response",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Connection { .. } => "connection_error",
            ApiError::BodyTooLarge { .. } => "too_large",
        }
    }

    /// The HTTP status of the answer, if one came.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { status, .. }
            | ApiError::Http { status, .. }
            | ApiError::InvalidResponse { status, .. }
            | ApiError::Api { status, .. }
            | ApiError::BodyTooLarge { status, .. } => Some(*status),
            ApiError::RateLimited { .. } => Some(429),
            ApiError::Timeout { .. } | ApiError::Connection { .. } => None,
        }
    }
}

/// One page of a webhook's delivery log.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// The entries in the order the API listed them.
    pub entries: Vec<LogEntry>,
    /// `pagination.total`: how many entries the log holds (a hint).
    pub total: Option<u64>,
}

/// One delivery attempt as the API lists it. Every field is optional because
/// the API documents none of them as always present; a field of the wrong
/// type reads as absent rather than failing the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogEntry {
    /// Log entry id: the dedupe key.
    pub id: Option<String>,
    /// Event name, e.g. `campaign.started`.
    pub event: Option<String>,
    /// 1 for the first try, rising with each retry.
    pub attempt: Option<i64>,
    /// `success`, `failed`, `pending`, or anything else.
    pub status: Option<String>,
    /// HTTP status the receiver answered; absent on timeouts.
    pub http_status: Option<i64>,
    /// How long the attempt took.
    pub duration_ms: Option<f64>,
    /// When the receiver got it (RFC 3339).
    pub delivered_at: Option<String>,
    /// When the attempt was created (RFC 3339).
    pub created_at: Option<String>,
}

/// A campaign or agent, as the listing endpoints show it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Owner {
    /// Campaign or agent id.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A webhook, as the listing endpoints show it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookInfo {
    /// Webhook id.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether deliveries are on; a webhook without the field counts as enabled.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

/// Ids may come as strings or numbers.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    as_string(Value::deserialize(d)?)
        .ok_or_else(|| de::Error::custom("id is not a string or number"))
}

/// Parses an API timestamp (RFC 3339) into Unix milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

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
        })
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
        let path = format!("/{rel}?page={page}&per_page={per_page}");
        let mut url = self
            .base_url
            .join(rel)
            .map_err(|e| ApiError::InvalidResponse {
                path: path.clone(),
                status: 0,
                detail: format!("cannot build URL: {e}"),
            })?;
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("per_page", &per_page.to_string());
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

    fn parse_envelope<T: DeserializeOwned>(
        &self,
        path: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(Vec<T>, Option<u64>), ApiError> {
        let invalid = |detail: String| ApiError::InvalidResponse {
            path: path.to_string(),
            status,
            detail: self.redact(&detail),
        };
        let env: Envelope<T> = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
        if env.success == Some(false) {
            let message = env.message.unwrap_or_else(|| "no message".to_string());
            return Err(ApiError::Api {
                path: path.to_string(),
                status,
                message: self.redact(&shorten(&message, 200)),
            });
        }
        let items = env
            .data
            .ok_or_else(|| invalid("no `data` array".to_string()))?;
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
                source: e.without_url(),
            }
        }
    }

    fn redact(&self, text: &str) -> String {
        self.auth.redact(text)
    }
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

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct Envelope<T> {
    success: Option<bool>,
    data: Option<Vec<T>>,
    pagination: Option<Pagination>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default, deserialize_with = "lenient_u64")]
    total: Option<u64>,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(as_i64(&Value::deserialize(d)?).and_then(|n| u64::try_from(n).ok()))
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn as_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Entries are read field by field so that one hostile entry (wrong types,
/// not even an object) reads as an entry with missing fields instead of
/// failing the whole page. Fields we do not use, however large, are skipped
/// without being built.
impl<'de> Deserialize<'de> for LogEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

/// The key of a log entry's field, recognised without allocating it (every
/// entry has a dozen keys, most of them for fields we skip).
enum EntryField {
    Id,
    Event,
    Status,
    Attempt,
    HttpStatus,
    DurationMs,
    DeliveredAt,
    CreatedAt,
    Other,
}

impl<'de> Deserialize<'de> for EntryField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(EntryFieldVisitor)
    }
}

struct EntryFieldVisitor;

impl Visitor<'_> for EntryFieldVisitor {
    type Value = EntryField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<EntryField, E> {
        Ok(match key {
            "id" => EntryField::Id,
            "event" => EntryField::Event,
            "status" => EntryField::Status,
            "attempt" => EntryField::Attempt,
            "http_status" => EntryField::HttpStatus,
            "duration_ms" => EntryField::DurationMs,
            "delivered_at" => EntryField::DeliveredAt,
            "created_at" => EntryField::CreatedAt,
            _ => EntryField::Other,
        })
    }
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = LogEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LogEntry, A::Error> {
        let mut e = LogEntry::default();
        while let Some(key) = map.next_key::<EntryField>()? {
            match key {
                EntryField::Id => e.id = as_string(map.next_value()?),
                EntryField::Event => e.event = as_string(map.next_value()?),
                EntryField::Status => e.status = as_string(map.next_value()?),
                EntryField::Attempt => e.attempt = as_i64(&map.next_value()?),
                EntryField::HttpStatus => e.http_status = as_i64(&map.next_value()?),
                EntryField::DurationMs => e.duration_ms = as_f64(&map.next_value()?),
                EntryField::DeliveredAt => e.delivered_at = as_string(map.next_value()?),
                EntryField::CreatedAt => e.created_at = as_string(map.next_value()?),
                EntryField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(e)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LogEntry, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LogEntry::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> Result<LogPage, ApiError> {
        let client = Client::new(ClientOptions {
            base_url: Url::parse("http://127.0.0.1/").expect("url"),
            credentials: Token::new("talq_secret").map(Credentials::Token),
            timeout: Duration::from_secs(1),
            max_body_bytes: 1 << 20,
            allow_insecure: true,
            max_requests_per_second: 10.0,
        })
        .expect("client");
        client
            .parse_envelope("/x", 200, json.as_bytes())
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
        assert!(e.to_string().contains("no `data` array"), "{e}");
    }

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
        limiter.succeeded();
        assert_eq!(limiter.escalations(), 0);
    }

    #[test]
    fn token_debug_and_trailing_newline() {
        let t = Token::new("talq_abc\n").expect("token");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("\n").is_none());
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

//! Why a request failed, typed, each naming the request path.

use std::time::Duration;

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
        /// The transport error (the client's own type, boxed: this crate
        /// knows no HTTP library).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Not sent: the API is down and another request is probing it.
    #[error("GET {path}: not sent: the Talkover API is down, and another request probes it")]
    ApiDown {
        /// Request path.
        path: String,
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
            ApiError::ApiDown { .. } => "api_down",
        }
    }

    /// Whether this is the API's own fault, not the webhook's: a gateway
    /// or overload status (502, 503, 504), a timeout, a broken connection,
    /// a page that is not the API's JSON (a proxy's HTML, a body cut short).
    /// These count towards calling the API down, and a webhook that meets
    /// them waits for the API, not for a backoff of its own.
    pub fn is_api_fault(&self) -> bool {
        match self {
            ApiError::Http { status, .. } => matches!(status, 502..=504),
            ApiError::Timeout { .. }
            | ApiError::Connection { .. }
            | ApiError::InvalidResponse { .. }
            | ApiError::ApiDown { .. } => true,
            _ => false,
        }
    }

    /// Whether the same request may well succeed if sent again at once: the
    /// API's faults, any 5xx, a 429, an envelope saying `success: false`.
    /// A refused token, a 4xx or an oversized page would fail the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::ApiDown { .. } => false,
            ApiError::Http { status, .. } => *status >= 500,
            ApiError::RateLimited { .. } | ApiError::Api { .. } => true,
            other => other.is_api_fault(),
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
            ApiError::ApiDown { .. } => "held_back",
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
            ApiError::Timeout { .. } | ApiError::Connection { .. } | ApiError::ApiDown { .. } => {
                None
            }
        }
    }
}

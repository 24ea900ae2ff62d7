//! The HTTP side reports on itself, as promhttp does for Go exporters:
//! requests by handler and code, scrapes by format and in flight, open
//! connections, and connections refused or cut by a limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::metrics::Exposition;

/// Why a connection or a scrape was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `--web.max-connections` open already.
    MaxConnections,
    /// Headers (or the next request) not sent within `--web.read-header-timeout`.
    HeaderTimeout,
    /// A TLS handshake not finished in time.
    TlsHandshakeTimeout,
    /// A TLS handshake that failed.
    TlsHandshakeFailed,
    /// `--web.max-requests` renders in flight already (answered 503).
    MaxRequests,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::MaxConnections,
        Refusal::HeaderTimeout,
        Refusal::TlsHandshakeTimeout,
        Refusal::TlsHandshakeFailed,
        Refusal::MaxRequests,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::TlsHandshakeTimeout => "tls_handshake_timeout",
            Refusal::TlsHandshakeFailed => "tls_handshake_failed",
            Refusal::MaxRequests => "max_requests",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Refusal::MaxConnections => {
                "too many open connections; new ones are closed (--web.max-connections)"
            }
            Refusal::HeaderTimeout => {
                "connections closed: no request headers within --web.read-header-timeout"
            }
            Refusal::TlsHandshakeTimeout => {
                "connections closed: TLS handshake not finished within --web.read-header-timeout"
            }
            Refusal::TlsHandshakeFailed => "TLS handshakes failed",
            Refusal::MaxRequests => {
                "scrapes refused with 503: too many at once (--web.max-requests)"
            }
        }
    }
}

/// The HTTP server's self-metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    scrapes: IntCounterVec,
    scrapes_in_flight: IntGauge,
    connections_open: IntGauge,
    refused: IntCounterVec,
    /// One rate-limited warning per kind of refusal.
    logs: Arc<[RateLimitedLog; 5]>,
}

impl HttpMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> HttpMetrics {
        let metrics = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "talkover_exporter_http_requests_total",
                    "HTTP requests served, by handler and status code.",
                ),
                &["handler", "code"],
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
            scrapes: IntCounterVec::new(
                Opts::new(
                    "talkover_exporter_http_scrapes_total",
                    "Metrics bodies started, by the format negotiated: text, openmetrics or protobuf.",
                ),
                &["format"],
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
            scrapes_in_flight: IntGauge::new(
                "talkover_exporter_http_scrapes_in_flight",
                "Metrics bodies being rendered or sent now (at most --web.max-requests).",
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
            connections_open: IntGauge::new(
                "talkover_exporter_http_connections_open",
                "HTTP connections open now (at most --web.max-connections).",
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
            refused: IntCounterVec::new(
                Opts::new(
                    "talkover_exporter_http_refused_total",
                    "Connections and scrapes turned away by a limit: max_connections, header_timeout (headers, or the next request on an idle connection, not sent in time), tls_handshake_timeout, tls_handshake_failed, max_requests (a scrape answered 503).",
                ),
                &["reason"],
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
            logs: Arc::default(),
        };
        crate::metrics::register(registry, metrics.requests.clone());
        crate::metrics::register(registry, metrics.scrapes.clone());
        crate::metrics::register(registry, metrics.scrapes_in_flight.clone());
        crate::metrics::register(registry, metrics.connections_open.clone());
        crate::metrics::register(registry, metrics.refused.clone());
        for reason in Refusal::ALL {
            metrics.refused.with_label_values(&[reason.label()]);
        }
        for format in [
            Exposition::Text,
            Exposition::OpenMetrics,
            Exposition::Protobuf,
        ] {
            metrics.scrapes.with_label_values(&[format_label(format)]);
        }
        metrics
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, handler: &str, code: u16) {
        let mut text = itoa::Buffer::new();
        self.requests
            .with_label_values(&[handler, text.format(code)])
            .inc();
    }

    /// Counts a connection or scrape turned away, and says so in the log
    /// at most every ten seconds per kind.
    pub(crate) fn refused(&self, reason: Refusal) {
        self.refused.with_label_values(&[reason.label()]).inc();
        let i = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.logs[i].warn(|n| warn!(count = n, reason = reason.label(), "{}", reason.explain()));
    }

    /// A connection is open until the guard is dropped (with its permit).
    pub(crate) fn connection_opened(&self, permit: OwnedSemaphorePermit) -> Open {
        self.connections_open.inc();
        Open {
            gauge: self.connections_open.clone(),
            _permit: Some(permit),
        }
    }

    /// A scrape in `format` is in flight until the guard is dropped (with
    /// its permit).
    pub(crate) fn scrape_started(
        &self,
        format: Exposition,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Open {
        self.scrapes
            .with_label_values(&[format_label(format)])
            .inc();
        self.scrapes_in_flight.inc();
        Open {
            gauge: self.scrapes_in_flight.clone(),
            _permit: permit,
        }
    }
}

/// Something counted in a gauge while it lasts.
#[derive(Debug)]
pub(crate) struct Open {
    gauge: IntGauge,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A warning logged at most every ten seconds, with how many times it
/// happened since it was last logged: a flood of refusals is one line,
/// not a flood of lines.
#[derive(Debug, Default)]
struct RateLimitedLog {
    /// A std lock: held for a comparison, never across an await.
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(10);

    /// Calls `log` with the count of occurrences if it is time to.
    fn warn(&self, log: impl FnOnce(u64)) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.since.store(0, Ordering::Relaxed);
        log(n);
    }
}

/// The `format` label of a scrape: which one a server negotiated is the
/// first question when its histograms look wrong.
fn format_label(format: Exposition) -> &'static str {
    match format {
        Exposition::Text => "text",
        Exposition::OpenMetrics => "openmetrics",
        Exposition::Protobuf => "protobuf",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_once_with_its_count() {
        let log = RateLimitedLog::default();
        let mut lines = Vec::new();
        for _ in 0..1000 {
            log.warn(|n| lines.push(n));
        }
        assert_eq!(lines, [1]);
    }
}

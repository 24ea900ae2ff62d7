//! The HTTP side reports on itself, as promhttp does for Go exporters:
//! requests by handler and code, scrapes in flight, open connections, and
//! connections refused or cut by a limit.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::OwnedSemaphorePermit;

/// The HTTP server's self-metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    scrapes_in_flight: IntGauge,
    connections_open: IntGauge,
    refused: IntCounterVec,
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
                    "talkover_exporter_http_connections_refused_total",
                    "Connections closed by a limit: max_connections, header_timeout (headers, or the next request on an idle connection, not sent in time), tls_handshake_timeout, tls_handshake_failed.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid")),
        };
        // Registration fails only on a duplicate name, which cannot happen here.
        let _ = registry.register(Box::new(metrics.requests.clone()));
        let _ = registry.register(Box::new(metrics.scrapes_in_flight.clone()));
        let _ = registry.register(Box::new(metrics.connections_open.clone()));
        let _ = registry.register(Box::new(metrics.refused.clone()));
        for reason in [
            "max_connections",
            "header_timeout",
            "tls_handshake_timeout",
            "tls_handshake_failed",
        ] {
            metrics.refused.with_label_values(&[reason]);
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

    /// Counts a connection closed by a limit.
    pub(crate) fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// A connection is open until the guard is dropped (with its permit).
    pub(crate) fn connection_opened(&self, permit: OwnedSemaphorePermit) -> Open {
        self.connections_open.inc();
        Open {
            gauge: self.connections_open.clone(),
            _permit: Some(permit),
        }
    }

    /// A scrape is in flight until the guard is dropped (with its permit).
    pub(crate) fn scrape_started(&self, permit: Option<OwnedSemaphorePermit>) -> Open {
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

//! What is served on `/metrics`: the published snapshots of every webhook
//! and the exporter's own metrics, rendered in the format the scraper asks
//! for: Prometheus text, OpenMetrics text with exemplars, or protobuf with
//! native histograms.
//!
//! Per-webhook series are rendered straight from each target's published
//! snapshot at scrape time instead of living in registry globals: a target's
//! counters are one value that the collector can persist and restore as a
//! unit, and a target that goes away takes its series with it. The process
//! metrics come from the `prometheus` crate's registry and are appended.
//!
//! - `families`: the per-webhook families, written once for every format,
//!   and the [`Budget`] of optional ones.
//! - `text`: the text formats, streamed in pieces; `openmetrics`: what
//!   OpenMetrics says differently (names, `info`, exemplars, `# EOF`).
//! - `protobuf` and [`proto`]: the protobuf format, with native histograms.
//! - `gauge_fn`: a self-metric read from elsewhere at scrape time.

mod families;
mod gauge_fn;
mod openmetrics;
pub mod proto;
mod protobuf;
mod text;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use prometheus::Registry;

use crate::model::TargetSnapshot;
use crate::target::Target;

pub use families::Budget;
pub use gauge_fn::GaugeFn;
#[cfg(test)]
pub(crate) use text::render_timing::busy as busy_for_tests;

/// Buckets of `talkover_exporter_poll_duration_seconds`.
const POLL_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

const API_REQUESTS_HELP: &str = "Requests made to the Talkover API, by outcome and HTTP code.";
const BACKLOG_HELP: &str = "Estimated log entries listed by the API but not read yet.";

type Snapshots = Arc<RwLock<BTreeMap<Target, Arc<TargetSnapshot>>>>;

/// The snapshots scrapes read, one per target, replaced whole after each
/// poll. A std lock is enough: nothing awaits while holding it, and a scrape
/// only clones `Arc`s under it, so rendering never stalls polling.
#[derive(Debug)]
pub struct Published {
    snapshots: Snapshots,
    registry: Registry,
    /// One histogram for the polls of every target: per target it would be
    /// 14 series each, most of a large account's `/metrics`, to say what
    /// the shared API's latency already says.
    poll_duration: prometheus::Histogram,
    /// API requests of every webhook together; `None` with
    /// `--collector.poll-stats`, which serves them per webhook.
    api_requests: Option<prometheus::IntCounterVec>,
    budget: Budget,
}

/// Registers a self-metric in `registry`. Only a bug fails (a duplicate
/// name): it is logged, and the metric is missing from `/metrics`, rather
/// than the exporter stopping or the error dropped unseen.
pub fn register(registry: &Registry, collector: impl prometheus::core::Collector + 'static) {
    let name = collector
        .desc()
        .first()
        .map_or_else(String::new, |d| d.fq_name.clone());
    if let Err(e) = registry.register(Box::new(collector)) {
        unregistered(&name, &e);
    }
}

fn unregistered(what: &str, error: &prometheus::Error) {
    tracing::error!(metric = what, error = %error, "could not register a self-metric; it is missing from /metrics");
}

/// A format `/metrics` is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// The text format, version 0.0.4.
    Text,
    /// OpenMetrics text 1.0.0, with exemplars.
    OpenMetrics,
    /// Delimited `io.prometheus.client.MetricFamily` messages: classic
    /// histograms, and native buckets with `--collector.native-histograms`.
    Protobuf,
}

impl Exposition {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }
}

impl Default for Published {
    fn default() -> Self {
        Self::new()
    }
}

impl Published {
    /// An empty set serving the default families, with process metrics
    /// registered where the platform has them.
    pub fn new() -> Published {
        Published::with_budget(Budget::default())
    }

    /// An empty set serving the optional families `budget` turns on.
    pub fn with_budget(budget: Budget) -> Published {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            register(
                &registry,
                prometheus::process_collector::ProcessCollector::for_self(),
            );
        }
        let poll_duration = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "talkover_exporter_poll_duration_seconds",
                "Time taken by one poll of one webhook's delivery logs, all webhooks together.",
            )
            .buckets(POLL_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable!("a constant metric definition is valid"));
        register(&registry, poll_duration.clone());
        let snapshots = Snapshots::default();
        let api_requests = if budget.poll_stats {
            None
        } else {
            let requests = prometheus::IntCounterVec::new(
                prometheus::Opts::new("talkover_exporter_api_requests_total", API_REQUESTS_HELP),
                &["outcome", "code"],
            )
            .unwrap_or_else(|_| unreachable!("a constant metric definition is valid"));
            register(&registry, requests.clone());
            // A gauge, so a sum that drops when a webhook leaves is right.
            GaugeFn::register(
                &registry,
                "talkover_exporter_backlog_entries",
                BACKLOG_HELP,
                {
                    let snapshots = snapshots.clone();
                    move || {
                        let map = snapshots.read().unwrap_or_else(|e| e.into_inner());
                        Some(map.values().map(|s| s.backlog).sum::<u64>() as f64)
                    }
                },
            );
            Some(requests)
        };
        Published {
            snapshots,
            registry,
            poll_duration,
            api_requests,
            budget,
        }
    }

    /// Records one poll of one target: how long it took, and the API
    /// requests it made (`requests` now, `before` as the poll started).
    pub fn observe_poll(
        &self,
        seconds: f64,
        before: &BTreeMap<(&'static str, String), u64>,
        requests: &BTreeMap<(&'static str, String), u64>,
    ) {
        self.poll_duration.observe(seconds);
        let Some(counter) = &self.api_requests else {
            return;
        };
        for ((outcome, code), n) in requests {
            let new = n.saturating_sub(before.get(&(*outcome, code.clone())).copied().unwrap_or(0));
            if new > 0 {
                counter
                    .with_label_values(&[outcome, code.as_str()])
                    .inc_by(new);
            }
        }
    }

    /// The registry of global self-metrics, rendered after the per-target families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Makes `snapshot` what scrapes see of its target.
    pub fn publish(&self, snapshot: TargetSnapshot) {
        let mut map = self.snapshots.write().unwrap_or_else(|e| e.into_inner());
        map.insert(snapshot.target.clone(), Arc::new(snapshot));
    }

    /// Drops a target's series.
    pub fn remove(&self, target: &Target) {
        let mut map = self.snapshots.write().unwrap_or_else(|e| e.into_inner());
        map.remove(target);
    }

    /// Renders the whole body in the text format.
    #[cfg(any(test, feature = "bench"))]
    pub fn render(&self) -> String {
        let mut body = Vec::new();
        self.render_chunks(Exposition::Text, &mut |chunk| {
            body.extend_from_slice(&chunk);
            true
        });
        String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Renders the body in `format`, in pieces of about 256 KiB handed to
    /// `emit` as soon as they are written, so a scrape of thousands of
    /// targets starts sending before rendering ends. Stops early when
    /// `emit` returns false (the scraper went away); returns whether the
    /// whole body was handed on.
    pub fn render_chunks(&self, format: Exposition, emit: &mut dyn FnMut(Vec<u8>) -> bool) -> bool {
        let snaps = self.snapshots();
        match format {
            Exposition::Text | Exposition::OpenMetrics => {
                let openmetrics = format == Exposition::OpenMetrics;
                let mut out = text::Text::new(&snaps, emit, openmetrics);
                families::write_targets(&snaps, self.budget, &mut out) && out.finish(&self.registry)
            }
            Exposition::Protobuf => {
                let mut out = protobuf::Protobuf::new(&snaps, self.budget.native_histograms, emit);
                families::write_targets(&snaps, self.budget, &mut out) && out.finish(&self.registry)
            }
        }
    }

    /// The current snapshots, in target order.
    pub fn snapshots(&self) -> Vec<Arc<TargetSnapshot>> {
        let map = self.snapshots.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second metric of the same name is left out and logged; the first
    /// keeps counting and nothing panics.
    #[test]
    fn a_duplicate_self_metric_is_left_out_not_a_panic() {
        let registry = Registry::new();
        let first = prometheus::IntCounter::new("dup_total", "first").expect("valid");
        register(&registry, first.clone());
        register(
            &registry,
            prometheus::IntCounter::new("dup_total", "second").expect("valid"),
        );
        GaugeFn::register(&registry, "dup_total", "third", || Some(7.0));
        first.inc();
        let families = registry.gather();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].help(), "first");
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 1.0);
    }
}

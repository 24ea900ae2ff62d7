//! What is served on `/metrics`: the plain values the collector fills in, and
//! their rendering in the Prometheus text format.
//!
//! Per-webhook series are rendered straight from each target's published
//! snapshot at scrape time instead of living in registry globals: a target's
//! counters are one value that the collector can persist and restore as a
//! unit, and a target that goes away takes its series with it. The process
//! metrics come from the `prometheus` crate's registry and are appended.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::target::{Target, WebhookMeta};

/// Buckets of `talkover_webhook_delivery_duration_seconds`: 50 ms up to the
/// 120 s maximum webhook timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
];
/// Buckets of `talkover_webhook_delivery_attempt_number`: one per possible
/// attempt (`max_retries` is at most 10).
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
/// Buckets of `talkover_webhook_delivery_lag_seconds` (created → delivered).
pub const LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Buckets of `talkover_exporter_poll_duration_seconds`.
pub const POLL_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A histogram as plain data: a count per bucket (the last one is `+Inf`)
/// and the sum. The bucket bounds are the constants above.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Non-cumulative counts, one per bound plus one for `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observed values.
    pub sum: f64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.len() != bounds.len() + 1 {
            self.buckets.resize(bounds.len() + 1, 0);
        }
        let i = bounds.partition_point(|b| *b < value);
        self.buckets[i] += 1;
        self.sum += value;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The label set of one `talkover_webhook_delivery_attempts_total` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptKey {
    /// `event` label.
    pub event: String,
    /// `status` label.
    pub status: String,
    /// `code` label: the HTTP status, or `none`.
    pub code: String,
}

/// `(event, status, code)` borrowed: what [`AttemptKey`] is compared by, so
/// that the attempts map can be searched without building an owned key.
trait AttemptLabels {
    fn labels(&self) -> (&str, &str, &str);
}

impl AttemptLabels for AttemptKey {
    fn labels(&self) -> (&str, &str, &str) {
        (&self.event, &self.status, &self.code)
    }
}

impl AttemptLabels for (&str, &str, &str) {
    fn labels(&self) -> (&str, &str, &str) {
        *self
    }
}

// The derived order of `AttemptKey` compares event, then status, then code:
// the tuple order below is the same, as `Borrow` requires.
impl<'a> Borrow<dyn AttemptLabels + 'a> for AttemptKey {
    fn borrow(&self) -> &(dyn AttemptLabels + 'a) {
        self
    }
}

impl PartialEq for dyn AttemptLabels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.labels() == other.labels()
    }
}

impl Eq for dyn AttemptLabels + '_ {}

impl PartialOrd for dyn AttemptLabels + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn AttemptLabels + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.labels().cmp(&other.labels())
    }
}

/// Everything counted for one webhook: the values that must never go
/// backwards, and so the values the state file persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Final attempts by event, status and code.
    #[serde(with = "map_as_pairs")]
    pub attempts: BTreeMap<AttemptKey, u64>,
    /// Attempt durations by status.
    pub duration: BTreeMap<String, Histogram>,
    /// Attempt numbers by status.
    pub attempt_number: BTreeMap<String, Histogram>,
    /// Attempts with `attempt > 1`.
    pub retries: u64,
    /// `delivered_at - created_at`.
    pub lag: Histogram,
    /// `created_at` (Unix seconds) of the newest counted attempt, by status.
    pub last_attempt: BTreeMap<String, f64>,
    /// Entries that could not be counted, by reason.
    pub missed: BTreeMap<String, u64>,
    /// Entry fields left out of a histogram, by `(field, reason)`.
    #[serde(with = "map_as_pairs")]
    pub invalid_fields: BTreeMap<(String, String), u64>,
}

impl DeliveryCounts {
    /// The count of one existing `talkover_webhook_delivery_attempts_total`
    /// series, found without allocating.
    pub fn attempt_mut(&mut self, event: &str, status: &str, code: &str) -> Option<&mut u64> {
        self.attempts
            .get_mut(&(event, status, code) as &dyn AttemptLabels)
    }
}

/// Self-observations of one target's polling; reset on restart.
#[derive(Debug, Clone, Default)]
pub struct PollStats {
    /// Whether the last poll succeeded.
    pub up: bool,
    /// API requests by outcome and HTTP code.
    pub requests: BTreeMap<(&'static str, String), u64>,
    /// Failed polls by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// Polls finished, successful or not.
    pub polls: u64,
    /// How long the last poll took, in seconds.
    pub last_duration: Option<f64>,
    /// Unix time of the last successful poll.
    pub last_success: Option<f64>,
}

/// What one scrape shows of one target.
#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    /// The webhook.
    pub target: Target,
    /// Its counters.
    pub counts: DeliveryCounts,
    /// Its polling self-metrics.
    pub stats: PollStats,
    /// Attempts seen in flight and not yet final.
    pub pending: u64,
    /// Estimated entries listed by the API but not read yet.
    pub backlog: u64,
}

/// A gauge whose value is read at scrape time from elsewhere (the API's
/// clock, say), and left out of the scrape while there is none.
pub struct GaugeFn {
    gauge: prometheus::Gauge,
    value: Box<dyn Fn() -> Option<f64> + Send + Sync>,
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").finish_non_exhaustive()
    }
}

impl GaugeFn {
    /// Registers the gauge `name` in `registry`, valued by `value`.
    pub fn register(
        registry: &Registry,
        name: &str,
        help: &str,
        value: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let gauge = prometheus::Gauge::new(name, help)?;
        registry.register(Box::new(GaugeFn {
            gauge,
            value: Box::new(value),
        }))
    }
}

impl prometheus::core::Collector for GaugeFn {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match (self.value)() {
            Some(v) => {
                self.gauge.set(v);
                self.gauge.collect()
            }
            None => Vec::new(),
        }
    }
}

/// The snapshots scrapes read, one per target, replaced whole after each
/// poll. A std lock is enough: nothing awaits while holding it, and a scrape
/// only clones `Arc`s under it, so rendering never stalls polling.
#[derive(Debug)]
pub struct Published {
    snapshots: RwLock<BTreeMap<Target, Arc<TargetSnapshot>>>,
    info: RwLock<BTreeMap<Target, WebhookMeta>>,
    registry: Registry,
    /// One histogram for the polls of every target: per target it would be
    /// 14 series each, most of a large account's `/metrics`, to say what
    /// the shared API's latency already says.
    poll_duration: prometheus::Histogram,
}

impl Default for Published {
    fn default() -> Self {
        Self::new()
    }
}

impl Published {
    /// An empty set, with process metrics registered where the platform has them.
    pub fn new() -> Published {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            // Registration fails only on a duplicate, which cannot happen here.
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        let poll_duration = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "talkover_exporter_poll_duration_seconds",
                "Time taken by one poll of one webhook's delivery logs, all webhooks together.",
            )
            .buckets(POLL_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable!("a constant metric definition is valid"));
        let _ = registry.register(Box::new(poll_duration.clone()));
        Published {
            snapshots: RwLock::default(),
            info: RwLock::default(),
            registry,
            poll_duration,
        }
    }

    /// Records how long one poll of one target took.
    pub fn observe_poll(&self, seconds: f64) {
        self.poll_duration.observe(seconds);
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
        drop(map);
        self.info
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(target);
    }

    /// Records a webhook's name and state, shown while it has series.
    pub fn set_info(&self, target: &Target, meta: WebhookMeta) {
        let mut map = self.info.write().unwrap_or_else(|e| e.into_inner());
        map.insert(target.clone(), meta);
    }

    /// The current snapshots, in target order.
    pub fn snapshots(&self) -> Vec<Arc<TargetSnapshot>> {
        let map = self.snapshots.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Renders the whole `/metrics` body in the text exposition format.
    pub fn render(&self) -> String {
        let mut body = String::new();
        self.render_chunks(&mut |chunk| {
            body.push_str(&chunk);
            true
        });
        body
    }

    /// Renders the `/metrics` body in pieces of about [`CHUNK_BYTES`], handing
    /// each to `emit` as soon as it is written, so a scrape of thousands of
    /// targets starts sending before rendering ends. Stops early when `emit`
    /// returns false (the scraper went away); returns whether the whole body
    /// was handed on.
    pub fn render_chunks(&self, emit: &mut dyn FnMut(String) -> bool) -> bool {
        let snaps = self.snapshots();
        let mut out = Output::new(emit);
        self.render_info(&snaps, &mut out);
        render_targets(&snaps, &mut out);
        render_build_info(&mut out.buf);
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.buf.push_str(&String::from_utf8_lossy(&buf));
        }
        out.finish()
    }
}

/// Size of the pieces [`Published::render_chunks`] hands on.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A body being rendered: text accumulates in `buf` and leaves in pieces.
struct Output<'a> {
    buf: String,
    emit: &'a mut dyn FnMut(String) -> bool,
    /// The receiver is gone: the rest is not rendered.
    closed: bool,
}

impl<'a> Output<'a> {
    fn new(emit: &'a mut dyn FnMut(String) -> bool) -> Output<'a> {
        Output {
            buf: String::with_capacity(CHUNK_BYTES + 64 * 1024),
            emit,
            closed: false,
        }
    }

    /// Hands the text on once there is a piece's worth; false once nobody listens.
    fn flush_if_full(&mut self) -> bool {
        if !self.closed && self.buf.len() >= CHUNK_BYTES {
            let next = String::with_capacity(CHUNK_BYTES + 64 * 1024);
            self.closed = !(self.emit)(std::mem::replace(&mut self.buf, next));
        }
        !self.closed
    }

    /// Hands on the rest; whether everything was handed on.
    fn finish(mut self) -> bool {
        if !self.closed && !self.buf.is_empty() {
            self.closed = !(self.emit)(std::mem::take(&mut self.buf));
        }
        !self.closed
    }
}

impl Published {
    fn render_info(&self, snaps: &[Arc<TargetSnapshot>], out: &mut Output<'_>) {
        header(
            &mut out.buf,
            "talkover_webhook_info",
            "gauge",
            "Always 1: the name and enabled state of each watched webhook, for joins with group_left.",
        );
        // Copied out: handing a piece on may wait for a slow scraper, and
        // discovery must not wait for the lock meanwhile.
        let metas: Vec<WebhookMeta> = {
            let info = self.info.read().unwrap_or_else(|e| e.into_inner());
            snaps
                .iter()
                .map(|s| info.get(&s.target).cloned().unwrap_or_default())
                .collect()
        };
        for (s, meta) in snaps.iter().zip(&metas) {
            let enabled = if meta.enabled { "true" } else { "false" };
            let prefix = label_prefix(&s.target);
            Series {
                out: &mut out.buf,
                name: "talkover_webhook_info",
                prefix: &prefix,
            }
            .value(&[("name", &meta.name), ("enabled", enabled)], 1);
            if !out.flush_if_full() {
                return;
            }
        }
    }
}

fn render_build_info(out: &mut String) {
    header(
        out,
        "talkover_exporter_build_info",
        "gauge",
        "A metric with a constant '1' value labeled by the exporter's version.",
    );
    let _ = writeln!(
        out,
        "talkover_exporter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

/// Renders every per-target family, each family once with all its series.
fn render_targets(snaps: &[Arc<TargetSnapshot>], out: &mut Output<'_>) {
    // The target labels of each snapshot, escaped once for all families.
    let prefixes: Vec<String> = snaps.iter().map(|s| label_prefix(&s.target)).collect();
    let (duration_les, attempt_les, lag_les) = (
        les(DURATION_BUCKETS),
        les(ATTEMPT_BUCKETS),
        les(LAG_BUCKETS),
    );
    let fam =
        |out: &mut Output<'_>, name, kind, help, f: &dyn Fn(&mut Series<'_>, &TargetSnapshot)| {
            if out.closed {
                return;
            }
            header(&mut out.buf, name, kind, help);
            for (s, prefix) in snaps.iter().zip(&prefixes) {
                let mut series = Series {
                    out: &mut out.buf,
                    name,
                    prefix,
                };
                f(&mut series, s);
                if !out.flush_if_full() {
                    return;
                }
            }
        };
    fam(
        out,
        "talkover_up",
        "gauge",
        "1 if the last poll of this webhook's delivery logs succeeded, else 0.",
        &|w, s| w.value(&[], u64::from(s.stats.up)),
    );
    fam(out, "talkover_webhook_delivery_attempts_total", "counter", "Delivery attempts that reached a final status, by event, status and HTTP code ('none' when the attempt got no HTTP answer).", &|w, s| {
        for (k, v) in &s.counts.attempts {
            w.value(&[("event", &k.event), ("status", &k.status), ("code", &k.code)], *v);
        }
    });
    fam(
        out,
        "talkover_webhook_delivery_duration_seconds",
        "histogram",
        "Duration of final delivery attempts (duration_ms), by status.",
        &|w, s| {
            for (status, h) in &s.counts.duration {
                w.histogram(&[("status", status)], &duration_les, h);
            }
        },
    );
    fam(
        out,
        "talkover_webhook_delivery_attempt_number",
        "histogram",
        "Attempt number of final delivery attempts (1 = first try), by status.",
        &|w, s| {
            for (status, h) in &s.counts.attempt_number {
                w.histogram(&[("status", status)], &attempt_les, h);
            }
        },
    );
    fam(
        out,
        "talkover_webhook_delivery_retries_total",
        "counter",
        "Final delivery attempts that were retries (attempt > 1).",
        &|w, s| w.value(&[], s.counts.retries),
    );
    fam(
        out,
        "talkover_webhook_delivery_lag_seconds",
        "histogram",
        "Time from an attempt's creation to its delivery (delivered_at - created_at).",
        // Like the by-status histograms, only once there is something in it:
        // most webhooks of a large account are idle, and an empty histogram
        // is 18 series each.
        &|w, s| {
            if s.counts.lag.count() > 0 {
                w.histogram(&[], &lag_les, &s.counts.lag);
            }
        },
    );
    fam(
        out,
        "talkover_webhook_last_attempt_timestamp_seconds",
        "gauge",
        "created_at of the newest counted attempt, by status, in Unix seconds.",
        &|w, s| {
            for (status, t) in &s.counts.last_attempt {
                w.float(&[("status", status)], *t);
            }
        },
    );
    fam(
        out,
        "talkover_webhook_attempts_pending",
        "gauge",
        "Delivery attempts seen in flight (not final yet).",
        &|w, s| w.value(&[], s.pending),
    );
    fam(
        out,
        "talkover_exporter_polls_total",
        "counter",
        "Polls of this webhook's delivery logs, successful or not.",
        &|w, s| w.value(&[], s.stats.polls),
    );
    fam(
        out,
        "talkover_exporter_last_poll_duration_seconds",
        "gauge",
        "Time taken by the last poll of this webhook's delivery logs.",
        &|w, s| {
            if let Some(d) = s.stats.last_duration {
                w.float(&[], d);
            }
        },
    );
    fam(
        out,
        "talkover_exporter_api_requests_total",
        "counter",
        "Requests made to the Talkover API, by outcome and HTTP code.",
        &|w, s| {
            for ((outcome, code), v) in &s.stats.requests {
                w.value(&[("outcome", outcome), ("code", code)], *v);
            }
        },
    );
    fam(
        out,
        "talkover_exporter_poll_errors_total",
        "counter",
        "Polls that failed, by reason.",
        &|w, s| {
            for (reason, v) in &s.stats.errors {
                w.value(&[("reason", reason)], *v);
            }
        },
    );
    fam(
        out,
        "talkover_exporter_last_successful_poll_timestamp_seconds",
        "gauge",
        "Unix time of the last successful poll of this webhook.",
        &|w, s| {
            if let Some(t) = s.stats.last_success {
                w.float(&[], t);
            }
        },
    );
    fam(
        out,
        "talkover_exporter_logs_missed_total",
        "counter",
        "Log entries that could not be counted, by reason.",
        &|w, s| {
            for (reason, v) in &s.counts.missed {
                w.value(&[("reason", reason)], *v);
            }
        },
    );
    fam(
        out,
        "talkover_exporter_backlog_entries",
        "gauge",
        "Estimated log entries listed by the API but not read yet.",
        &|w, s| w.value(&[], s.backlog),
    );
    fam(out, "talkover_exporter_invalid_fields_total", "counter", "Entry fields left out of a histogram because they were missing or unusable, by field and reason.", &|w, s| {
        for ((field, reason), v) in &s.counts.invalid_fields {
            w.value(&[("field", field), ("reason", reason)], *v);
        }
    });
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `{campaign_id="…",agent_id="…",webhook_id="…"` (without the closing brace).
fn label_prefix(t: &Target) -> String {
    let mut p = String::with_capacity(64);
    p.push_str("{campaign_id=\"");
    escape_into(&mut p, t.campaign_id());
    p.push_str("\",agent_id=\"");
    escape_into(&mut p, t.agent_id());
    p.push_str("\",webhook_id=\"");
    escape_into(&mut p, &t.webhook_id);
    p.push('"');
    p
}

/// Writes the series of one family for one target. Scrapes of thousands of
/// targets render hundreds of thousands of lines, so this avoids `format!`.
struct Series<'a> {
    out: &'a mut String,
    name: &'a str,
    /// The target's labels, from [`label_prefix`].
    prefix: &'a str,
}

impl Series<'_> {
    fn labels(&mut self, suffix: &str, extra: &[(&str, &str)], le: Option<&str>) {
        let out = &mut *self.out;
        out.push_str(self.name);
        out.push_str(suffix);
        out.push_str(self.prefix);
        for (k, v) in extra.iter().chain(le.map(|v| ("le", v)).iter()) {
            out.push(',');
            out.push_str(k);
            out.push_str("=\"");
            escape_into(out, v);
            out.push('"');
        }
        out.push_str("} ");
    }

    fn int(&mut self, v: u64) {
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('\n');
    }

    fn value(&mut self, extra: &[(&str, &str)], v: u64) {
        self.labels("", extra, None);
        self.int(v);
    }

    fn float(&mut self, extra: &[(&str, &str)], v: f64) {
        self.labels("", extra, None);
        write_float(self.out, v);
    }

    fn histogram(&mut self, extra: &[(&str, &str)], les: &[String], h: &Histogram) {
        let mut cumulative = 0;
        for (i, le) in les.iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            self.labels("_bucket", extra, Some(le));
            self.int(cumulative);
        }
        let count = h.count();
        self.labels("_bucket", extra, Some("+Inf"));
        self.int(count);
        self.labels("_sum", extra, None);
        write_float(self.out, h.sum);
        self.labels("_count", extra, None);
        self.int(count);
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
    out.push('\n');
}

/// The `le` label values of a histogram's bounds.
fn les(bounds: &[f64]) -> Vec<String> {
    bounds.iter().map(|b| b.to_string()).collect()
}

/// Label values may hold anything the API sent: escape per the text format.
fn escape_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// JSON object keys must be strings; maps keyed by structs or tuples are
/// stored as lists of pairs instead.
mod map_as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_inclusive() {
        let mut h = Histogram::default();
        for v in [0.05, 0.051, 200.0] {
            h.observe(DURATION_BUCKETS, v);
        }
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[DURATION_BUCKETS.len()], 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn renders_escaped_labels_and_cumulative_buckets() {
        let target: Target = "agents/a1/webhooks/w1".parse().expect("target");
        let mut counts = DeliveryCounts::default();
        counts.attempts.insert(
            AttemptKey {
                event: "we\"ird\\\n".into(),
                status: "success".into(),
                code: "200".into(),
            },
            3,
        );
        let mut h = Histogram::default();
        h.observe(ATTEMPT_BUCKETS, 2.0);
        h.observe(ATTEMPT_BUCKETS, 3.0);
        counts.attempt_number.insert("failed".into(), h);
        let published = Published::new();
        published.publish(TargetSnapshot {
            target,
            counts,
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
        });
        let out = published.render();
        assert!(out.contains(
            r#"talkover_webhook_delivery_attempts_total{campaign_id="",agent_id="a1",webhook_id="w1",event="we\"ird\\\n",status="success",code="200"} 3"#
        ), "{out}");
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="1"} 0"#));
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="3"} 2"#));
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_count{campaign_id="",agent_id="a1",webhook_id="w1",status="failed"} 2"#));
    }

    fn published_with(targets: usize) -> Published {
        let published = Published::new();
        for i in 0..targets {
            let target: Target = format!("campaigns/c{i}/webhooks/w{i}").parse().expect("t");
            let mut counts = DeliveryCounts::default();
            counts.lag.observe(LAG_BUCKETS, 1.0);
            published.publish(TargetSnapshot {
                target,
                counts,
                stats: PollStats::default(),
                pending: 0,
                backlog: 0,
            });
        }
        published
    }

    #[test]
    fn chunks_add_up_to_the_whole_body() {
        let published = published_with(1500);
        let mut chunks = Vec::new();
        let whole = published.render_chunks(&mut |chunk| {
            chunks.push(chunk);
            true
        });
        assert!(whole);
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        let (last, full) = chunks.split_last().expect("chunks");
        assert!(full.iter().all(|c| c.len() >= CHUNK_BYTES));
        assert!(last.ends_with('\n'));
        // Up to the process metrics, which move between two renders.
        let whole = published.render();
        let per_target = |body: &str| body.split("# HELP process_").next().map(str::to_owned);
        let joined = chunks.concat();
        assert!(
            per_target(&joined) == per_target(&whole),
            "chunks differ from the whole body"
        );
    }

    #[test]
    fn rendering_stops_when_the_scraper_is_gone() {
        let published = published_with(1500);
        let mut calls = 0;
        let whole = published.render_chunks(&mut |_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 1);
        assert!(!whole);
    }

    #[test]
    fn a_webhook_without_lag_observations_has_no_lag_series() {
        let published = published_with(1);
        let idle: Target = "campaigns/c9/webhooks/idle".parse().expect("t");
        published.publish(TargetSnapshot {
            target: idle,
            counts: DeliveryCounts::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
        });
        let body = published.render();
        let lag_lines = |webhook: &str| {
            body.lines()
                .filter(|l| l.starts_with("talkover_webhook_delivery_lag_seconds"))
                .filter(|l| l.contains(&format!("webhook_id=\"{webhook}\"")))
                .count()
        };
        assert_eq!(lag_lines("w0"), LAG_BUCKETS.len() + 3);
        assert_eq!(lag_lines("idle"), 0);
        assert!(body.contains(r#"talkover_up{campaign_id="c9",agent_id="",webhook_id="idle"} 0"#));
    }

    #[test]
    fn borrowed_lookups_find_every_attempt_series() {
        // Values chosen so that each label alone would order them differently.
        let labels = [
            ("a", "z", "500"),
            ("b", "a", "200"),
            ("a", "a", "none"),
            ("b", "z", "100"),
            ("a", "z", "200"),
        ];
        let mut counts = DeliveryCounts::default();
        for (i, (event, status, code)) in labels.iter().enumerate() {
            let key = AttemptKey {
                event: event.to_string(),
                status: status.to_string(),
                code: code.to_string(),
            };
            counts.attempts.insert(key, i as u64);
        }
        for (i, (event, status, code)) in labels.iter().enumerate() {
            assert_eq!(
                counts.attempt_mut(event, status, code).copied(),
                Some(i as u64)
            );
        }
        assert_eq!(counts.attempt_mut("a", "z", "404"), None);
    }

    #[test]
    fn counts_round_trip_through_json() {
        let mut c = DeliveryCounts::default();
        c.attempts.insert(
            AttemptKey {
                event: "e".into(),
                status: "failed".into(),
                code: "none".into(),
            },
            7,
        );
        c.invalid_fields
            .insert(("duration_ms".into(), "negative".into()), 1);
        let json = serde_json::to_string(&c).expect("serialize");
        let back: DeliveryCounts = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, c);
    }
}

#[cfg(test)]
mod render_timing {
    use super::*;

    /// Not a benchmark (see benches/scale.rs): a quick look at render time
    /// for 10,000 busy-looking targets. `cargo test --release -- --ignored render_10k --nocapture`.
    #[test]
    #[ignore = "timing, run by hand"]
    fn render_10k() {
        let published = Published::new();
        for i in 0..10_000 {
            let target: Target = format!("campaigns/c{}/webhooks/w{i}", i / 10)
                .parse()
                .expect("t");
            let mut counts = DeliveryCounts::default();
            for (status, code) in [
                ("success", "200"),
                ("success", "201"),
                ("failed", "500"),
                ("failed", "none"),
            ] {
                for event in ["campaign.started", "campaign_call.completed"] {
                    counts.attempts.insert(
                        AttemptKey {
                            event: event.into(),
                            status: status.into(),
                            code: code.into(),
                        },
                        7,
                    );
                }
                let mut h = Histogram::default();
                h.observe(DURATION_BUCKETS, 0.3);
                counts.duration.insert(status.into(), h.clone());
                counts.attempt_number.insert(status.into(), h);
                counts.last_attempt.insert(status.into(), 1.7e9);
            }
            counts.lag.observe(LAG_BUCKETS, 1.0);
            let mut stats = PollStats {
                up: true,
                last_success: Some(1.7e9),
                ..PollStats::default()
            };
            stats.requests.insert(("success", "200".into()), 100);
            stats.polls = 100;
            stats.last_duration = Some(0.01);
            published.publish(TargetSnapshot {
                target,
                counts,
                stats,
                pending: 0,
                backlog: 0,
            });
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            bytes = published.render().len();
            times.push(t.elapsed());
        }
        eprintln!("render 10k targets: {times:?}, {} MiB", bytes >> 20);
    }
}

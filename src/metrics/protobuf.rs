//! Prometheus's protobuf exposition format: length-delimited
//! `MetricFamily` messages, the format that carries native histograms.
//!
//! Histograms go out with their classic buckets only, unless
//! `--collector.native-histograms` asks for native buckets beside them.
//! Prometheus 3 reads a protobuf histogram with native buckets (a zero
//! threshold, spans) as a native histogram and nothing else; one that does
//! not ingest native histograms then drops it whole, classic buckets too,
//! unless its scrape config sets `always_scrape_classic_histograms`. Classic
//! only is whole on every server; native buckets are for those that ask
//! for them. A family is framed by its
//! length, so it is encoded whole before it is handed on: a scrape holds
//! one family at a time, not the whole body.
//!
//! The per-webhook series are encoded field by field into reused buffers,
//! as prost would encode the messages of [`super::proto`] (same field
//! order, defaults left out: a test decodes and re-encodes a body to the
//! same bytes). Building the messages instead cost an allocation per
//! exemplar and a walk of every nested message per level to size it, a
//! third of a protobuf scrape's CPU.

use std::sync::Arc;

use prometheus::proto as registry_proto;
use prometheus::Registry;
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

use super::families::{Bounds, Extra, Format, Kind};
use super::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use super::text::CHUNK_BYTES;
use crate::model::{self, TargetSnapshot, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// The protobuf format being written.
pub(super) struct Protobuf<'a> {
    emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    closed: bool,
    /// Encoded families waiting to be handed on.
    out: Vec<u8>,
    /// The family being written: its name, help and type...
    header: Vec<u8>,
    /// ...and its metrics, encoded.
    metrics: Vec<u8>,
    kind: Kind,
    /// Each snapshot's target labels as `Metric.label` fields, encoded once
    /// per scrape for every family.
    targets: Vec<Vec<u8>>,
    target: usize,
    /// One metric's fields, then one histogram's: reused for every series.
    metric: Vec<u8>,
    histogram: Vec<u8>,
    /// Whether histograms carry their native buckets.
    native: bool,
}

impl<'a> Protobuf<'a> {
    pub(super) fn new(
        snaps: &'a [Arc<TargetSnapshot>],
        native: bool,
        emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Protobuf<'a> {
        let targets = snaps
            .iter()
            .map(|s| {
                let t = &s.target;
                let mut labels = Vec::with_capacity(96);
                for (name, value) in [
                    ("campaign_id", t.campaign_id()),
                    ("agent_id", t.agent_id()),
                    ("webhook_id", t.webhook_id.as_str()),
                ] {
                    label_pair(&mut labels, 1, name, value);
                }
                labels
            })
            .collect();
        Protobuf {
            emit,
            closed: false,
            out: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            header: Vec::new(),
            metrics: Vec::new(),
            kind: Kind::Gauge,
            targets,
            target: 0,
            metric: Vec::with_capacity(1024),
            histogram: Vec::with_capacity(1024),
            native,
        }
    }

    /// Appends the build info and the registry's self-metrics, and hands on the rest.
    pub(super) fn finish(mut self, registry: &Registry) -> bool {
        if self.closed {
            return false;
        }
        let build_info = MetricFamily {
            name: "talkover_exporter_build_info".into(),
            help: "A metric with a constant '1' value labeled by the exporter's version.".into(),
            r#type: MetricType::Gauge as i32,
            metric: vec![Metric {
                label: vec![LabelPair {
                    name: "version".into(),
                    value: env!("CARGO_PKG_VERSION").into(),
                }],
                gauge: Some(Gauge { value: 1.0 }),
                ..Metric::default()
            }],
        };
        let _ = build_info.encode_length_delimited(&mut self.out);
        for family in registry.gather().iter().filter_map(from_registry) {
            let _ = family.encode_length_delimited(&mut self.out);
        }
        if !self.out.is_empty() {
            self.closed = !(self.emit)(std::mem::take(&mut self.out));
        }
        !self.closed
    }

    /// Starts a metric: the target's labels, then `extra`.
    fn start(&mut self, extra: Extra<'_>) {
        self.metric.clear();
        if let Some(labels) = self.targets.get(self.target) {
            self.metric.extend_from_slice(labels);
        }
        for (name, value) in extra {
            label_pair(&mut self.metric, 1, name, value);
        }
    }

    /// Ends a metric: it joins the family's.
    fn end(&mut self) {
        message(&mut self.metrics, 4, &self.metric);
    }

    fn scalar(
        &mut self,
        extra: Extra<'_>,
        v: f64,
        exemplar: Option<&model::Exemplar>,
        created_ms: Option<i64>,
    ) {
        self.start(extra);
        match self.kind {
            Kind::Counter => {
                // Counter { value = 1, exemplar = 2, created_timestamp = 3 }
                let len = double_len(v)
                    + exemplar.map_or(0, |e| nested_len(exemplar_len(e)))
                    + created_ms.map_or(0, |ms| nested_len(timestamp_len(ms)));
                key(&mut self.metric, 3, LEN);
                encode_varint(len as u64, &mut self.metric);
                double(&mut self.metric, 1, v);
                if let Some(e) = exemplar {
                    write_exemplar(&mut self.metric, 2, e);
                }
                if let Some(ms) = created_ms {
                    write_timestamp(&mut self.metric, 3, ms);
                }
            }
            _ => {
                // Gauge { value = 1 }
                key(&mut self.metric, 2, LEN);
                encode_varint(double_len(v) as u64, &mut self.metric);
                double(&mut self.metric, 1, v);
            }
        }
        self.end();
    }
}

impl Format for Protobuf<'_> {
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.kind = kind;
        self.header.clear();
        string(&mut self.header, 1, name);
        string(&mut self.header, 2, help);
        let kind = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge | Kind::Info => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        uint(&mut self.header, 3, kind as u64);
        self.metrics.clear();
    }

    fn target(&mut self, i: usize) {
        self.target = i;
    }

    fn value(&mut self, extra: Extra<'_>, v: u64) {
        self.scalar(extra, v as f64, None, None);
    }

    fn float(&mut self, extra: Extra<'_>, v: f64) {
        self.scalar(extra, v, None, None);
    }

    fn value_with_exemplar(
        &mut self,
        extra: Extra<'_>,
        v: u64,
        exemplar: Option<&model::Exemplar>,
    ) {
        self.scalar(extra, v as f64, exemplar, None);
    }

    fn counter(
        &mut self,
        extra: Extra<'_>,
        v: u64,
        exemplar: Option<&model::Exemplar>,
        created_ms: Option<i64>,
    ) {
        self.scalar(extra, v as f64, exemplar, created_ms);
    }

    fn histogram(&mut self, extra: Extra<'_>, bounds: Bounds, h: &model::Histogram) {
        self.histogram_with_exemplars(extra, bounds, h, &[]);
    }

    fn histogram_with_exemplars(
        &mut self,
        extra: Extra<'_>,
        bounds: Bounds,
        h: &model::Histogram,
        exemplars: &[Option<model::Exemplar>],
    ) {
        self.start(extra);
        let out = &mut self.histogram;
        out.clear();
        uint(out, 1, h.count());
        double(out, 2, h.sum);
        let mut cumulative = 0;
        for (i, bound) in bounds.values().iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            let exemplar = exemplars.get(i).and_then(Option::as_ref);
            // Bucket { cumulative_count = 1, upper_bound = 2, exemplar = 3 }
            let len = uint_len(cumulative)
                + double_len(*bound)
                + exemplar.map_or(0, |e| nested_len(exemplar_len(e)));
            key(out, 3, LEN);
            encode_varint(len as u64, out);
            uint(out, 1, cumulative);
            double(out, 2, *bound);
            if let Some(e) = exemplar {
                write_exemplar(out, 3, e);
            }
        }
        if self.native {
            sint(out, 5, i64::from(NATIVE_SCHEMA));
            double(out, 6, NATIVE_ZERO_THRESHOLD);
            uint(out, 7, h.native.zero);
            let (spans, deltas) = h.native.spans_and_deltas();
            for (offset, length) in spans {
                // BucketSpan { offset = 1 (sint32), length = 2 }
                let len = sint_len(i64::from(offset)) + uint_len(u64::from(length));
                key(out, 12, LEN);
                encode_varint(len as u64, out);
                sint(out, 1, i64::from(offset));
                uint(out, 2, u64::from(length));
            }
            for delta in deltas {
                // Repeated and not packed: every delta, zeros too.
                key(out, 13, VARINT);
                encode_varint(zigzag(delta), out);
            }
        }
        if let Some(ms) = h.created_ms {
            write_timestamp(out, 15, ms);
        }
        message(&mut self.metric, 7, &self.histogram);
        self.end();
    }

    fn flush_if_full(&mut self) -> bool {
        !self.closed
    }

    fn end_family(&mut self) -> bool {
        if self.closed {
            return false;
        }
        // A family without series is left out, as client_golang does.
        if !self.metrics.is_empty() {
            let len = self.header.len() + self.metrics.len();
            encode_varint(len as u64, &mut self.out);
            self.out.extend_from_slice(&self.header);
            if self.metrics.len() < CHUNK_BYTES {
                self.out.extend_from_slice(&self.metrics);
            } else {
                // A large family is handed on as it is, not copied: what
                // is waiting goes first, then the family's metrics, and
                // the next family starts in a buffer as large.
                let next = Vec::with_capacity(self.metrics.len());
                let metrics = std::mem::replace(&mut self.metrics, next);
                let waiting =
                    std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK_BYTES + 64 * 1024));
                self.closed = !(self.emit)(waiting) || !(self.emit)(metrics);
                return !self.closed;
            }
        }
        if self.out.len() >= CHUNK_BYTES {
            let next = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
            self.closed = !(self.emit)(std::mem::replace(&mut self.out, next));
        }
        !self.closed
    }
}

fn key(out: &mut Vec<u8>, tag: u32, wire: u32) {
    encode_varint(u64::from(tag << 3 | wire), out);
}

/// A field's key: every tag written here is below 16, one byte.
const KEY_LEN: usize = 1;

fn nested_len(len: usize) -> usize {
    KEY_LEN + encoded_len_varint(len as u64) + len
}

fn message(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    key(out, tag, LEN);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        nested_len(s.len())
    }
}

fn string(out: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        message(out, tag, s.as_bytes());
    }
}

fn double_len(v: f64) -> usize {
    if v == 0.0 {
        0
    } else {
        KEY_LEN + 8
    }
}

fn double(out: &mut Vec<u8>, tag: u32, v: f64) {
    if v != 0.0 {
        key(out, tag, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn uint_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        KEY_LEN + encoded_len_varint(v)
    }
}

fn uint(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        key(out, tag, VARINT);
        encode_varint(v, out);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn sint_len(v: i64) -> usize {
    uint_len(zigzag(v))
}

fn sint(out: &mut Vec<u8>, tag: u32, v: i64) {
    uint(out, tag, zigzag(v));
}

/// `LabelPair { name = 1, value = 2 }` as field `tag`.
fn label_pair(out: &mut Vec<u8>, tag: u32, name: &str, value: &str) {
    key(out, tag, LEN);
    encode_varint((string_len(name) + string_len(value)) as u64, out);
    string(out, 1, name);
    string(out, 2, value);
}

/// Unix ms as `google.protobuf.Timestamp`'s seconds and nanos.
fn timestamp(ms: i64) -> (i64, i64) {
    (ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000)
}

/// `Timestamp { seconds = 1 (int64), nanos = 2 (int32) }` without its key.
fn timestamp_len(ms: i64) -> usize {
    let (seconds, nanos) = timestamp(ms);
    uint_len(seconds as u64) + uint_len(nanos as u64)
}

fn write_timestamp(out: &mut Vec<u8>, tag: u32, ms: i64) {
    let (seconds, nanos) = timestamp(ms);
    key(out, tag, LEN);
    encode_varint(timestamp_len(ms) as u64, out);
    uint(out, 1, seconds as u64);
    uint(out, 2, nanos as u64);
}

/// `Exemplar { label = 1, value = 2, timestamp = 3 }` without its key.
fn exemplar_len(e: &model::Exemplar) -> usize {
    nested_len(string_len("log_id") + string_len(&e.id))
        + double_len(e.value)
        + nested_len(timestamp_len(e.ms))
}

fn write_exemplar(out: &mut Vec<u8>, tag: u32, e: &model::Exemplar) {
    key(out, tag, LEN);
    encode_varint(exemplar_len(e) as u64, out);
    label_pair(out, 1, "log_id", &e.id);
    double(out, 2, e.value);
    write_timestamp(out, 3, e.ms);
}

/// A family of the `prometheus` crate's registry in this format.
fn from_registry(family: &registry_proto::MetricFamily) -> Option<MetricFamily> {
    use registry_proto::MetricType as T;
    let kind = match family.get_field_type() {
        T::COUNTER => MetricType::Counter,
        T::GAUGE => MetricType::Gauge,
        T::HISTOGRAM => MetricType::Histogram,
        // The registry holds no summaries and nothing untyped.
        _ => return None,
    };
    let metric = family
        .get_metric()
        .iter()
        .map(|m| {
            let mut out = Metric {
                label: m
                    .get_label()
                    .iter()
                    .map(|l| LabelPair {
                        name: l.name().to_owned(),
                        value: l.value().to_owned(),
                    })
                    .collect(),
                ..Metric::default()
            };
            match kind {
                MetricType::Counter => {
                    out.counter = Some(Counter {
                        value: m.get_counter().get_value(),
                        ..Counter::default()
                    })
                }
                MetricType::Gauge => {
                    out.gauge = Some(Gauge {
                        value: m.get_gauge().get_value(),
                    })
                }
                MetricType::Histogram => {
                    let h = m.get_histogram();
                    out.histogram = Some(Histogram {
                        sample_count: h.get_sample_count(),
                        sample_sum: h.get_sample_sum(),
                        bucket: h
                            .get_bucket()
                            .iter()
                            .map(|b| Bucket {
                                cumulative_count: b.cumulative_count(),
                                upper_bound: b.upper_bound(),
                                exemplar: None,
                            })
                            .collect(),
                        ..Histogram::default()
                    })
                }
                _ => {}
            }
            out
        })
        .collect();
    Some(MetricFamily {
        name: family.name().to_owned(),
        help: family.help().to_owned(),
        r#type: kind as i32,
        metric,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use crate::metrics::proto::MetricFamily;
    use crate::metrics::{Budget, Exposition, Published};
    use crate::model::{
        AttemptKey, DeliveryCounts, Exemplar, Exemplars, Histogram, PollStats, TargetSnapshot,
        ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD,
    };

    /// Webhooks with every kind of value the writer meets: exemplars on
    /// counters and buckets (an empty id, times before 1970), native
    /// buckets with gaps and zero counts, values of 0, empty label values.
    fn varied(webhooks: u32) -> Published {
        varied_with(webhooks, true)
    }

    fn varied_with(webhooks: u32, native_histograms: bool) -> Published {
        let published = Published::with_budget(Budget {
            lag: true,
            attempt_number: true,
            duration_by_status: true,
            poll_stats: true,
            native_histograms,
        });
        for i in 0..webhooks {
            let mut counts = DeliveryCounts::default();
            let mut exemplars = Exemplars::default();
            for (status, code) in [("success", "200"), ("failed", "none"), ("failed", "")] {
                let key = AttemptKey {
                    event: format!("e{}", i % 3),
                    status: status.into(),
                    code: code.into(),
                };
                if i % 2 == 0 {
                    // Started before 1970 for one: seconds and nanos both signed.
                    let start = if i == 0 {
                        -1_234
                    } else {
                        1_700_000_000_000 + i64::from(i)
                    };
                    counts.created.attempts.insert(key.clone(), start);
                }
                counts.attempts.insert(key, u64::from(i % 4));
                let id = if i % 5 == 0 {
                    String::new()
                } else {
                    format!("log_{i}")
                };
                exemplars.attempt(
                    (&format!("e{}", i % 3), status, code),
                    &id,
                    -1_500 + i64::from(i) * 77_777,
                );
                let h = counts
                    .duration
                    .entry(status.into())
                    .or_insert_with(Histogram::default);
                for (j, v) in [0.0, 1e-130, 0.05, 0.3, 2.0 + f64::from(i), 700.0]
                    .into_iter()
                    .enumerate()
                {
                    if (i as usize + j).is_multiple_of(3) {
                        continue;
                    }
                    let b = h.observe(DURATION_BUCKETS, v);
                    if h.exemplars.len() <= b {
                        h.exemplars.resize(b + 1, None);
                    }
                    h.exemplars[b] = Some(Exemplar {
                        id: format!("log_{i}_{j}"),
                        value: v,
                        ms: 1_700_000_000_000 + i64::from(i) * 1_001,
                    });
                }
                let a = counts
                    .attempt_number
                    .entry(status.into())
                    .or_insert_with(Histogram::default);
                if i % 2 == 0 {
                    a.begin(1_700_000_000_500);
                    a.observe(ATTEMPT_BUCKETS, f64::from(i % 11 + 1));
                }
                if i % 3 == 1 {
                    h.created_ms = Some(1_700_000_000_000 - i64::from(i));
                }
            }
            counts.results[usize::try_from(i).unwrap_or(0) % counts.results.len()] = u64::from(i);
            if i % 4 != 3 {
                counts.start(
                    1_600_000_000_000 + i64::from(i) * 999,
                    &["a".into(), "b".into()],
                );
            }
            if i % 2 == 1 {
                counts.exhausted.insert("b".into(), u64::from(i));
            }
            let settings = (i % 3 == 0).then(|| {
                crate::model::WebhookSettings::new(
                    Some(format!("hook {i}")),
                    i % 2 == 0,
                    Some(i % 11),
                    (i % 6 != 0).then_some(5 + i),
                    &["a".into()],
                )
            });
            if i % 3 != 0 {
                counts.lag.observe(LAG_BUCKETS, 0.5 * f64::from(i));
            }
            counts.exemplars = Arc::new(exemplars);
            counts.retries = u64::from(i % 2);
            let mut stats = PollStats {
                up: i % 2 == 0,
                polls: u64::from(i),
                last_duration: (i % 4 != 0).then_some(0.01 * f64::from(i)),
                ..PollStats::default()
            };
            stats
                .requests
                .insert(("success", "200".into()), u64::from(i));
            published.publish(TargetSnapshot {
                target: format!("agents/a{i}/webhooks/w{i}")
                    .parse()
                    .expect("target"),
                counts,
                failures: Default::default(),
                stats,
                pending: u64::from(i % 3),
                backlog: 0,
                settings,
            });
        }
        published
    }

    /// Counters and histograms carry when their series began, in
    /// `google.protobuf.Timestamp` seconds and nanos; a series whose start
    /// is unknown carries none.
    #[test]
    fn created_timestamps_are_the_series_starts() {
        let published = varied(8);
        let mut body = Vec::new();
        assert!(published.render_chunks(Exposition::Protobuf, &mut |piece| {
            body.extend_from_slice(&piece);
            true
        }));
        let mut rest = &body[..];
        let mut families = std::collections::BTreeMap::new();
        while !rest.is_empty() {
            let f = MetricFamily::decode_length_delimited(&mut rest).expect("a family");
            families.insert(f.name.clone(), f);
        }
        let webhook = |m: &crate::metrics::proto::Metric| {
            m.label
                .iter()
                .find(|l| l.name == "webhook_id")
                .map(|l| l.value.clone())
                .unwrap_or_default()
        };
        let ts = |t: &Option<crate::metrics::proto::Timestamp>| {
            t.as_ref()
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        };
        let results = &families["talkover_webhook_delivery_results_total"];
        // Nine results per webhook, every one of them, at 0 or not.
        assert_eq!(results.metric.len(), 9 * 8);
        for m in &results.metric {
            let i: i64 = webhook(m)[1..].parse().expect("w<i>");
            let want = (i % 4 != 3).then(|| 1_600_000_000_000 + i * 999);
            assert_eq!(
                ts(&m.counter.as_ref().expect("a counter").created_timestamp),
                want
            );
        }
        let attempts = &families["talkover_webhook_delivery_attempts_total"];
        let w0: Vec<_> = attempts
            .metric
            .iter()
            .filter(|m| webhook(m) == "w0")
            .collect();
        assert!(!w0.is_empty());
        for m in w0 {
            assert_eq!(
                ts(&m.counter.as_ref().expect("counter").created_timestamp),
                Some(-1_234)
            );
        }
        for m in attempts.metric.iter().filter(|m| webhook(m) == "w1") {
            assert_eq!(m.counter.as_ref().expect("counter").created_timestamp, None);
        }
        let numbers = &families["talkover_webhook_delivery_attempt_number"];
        for m in &numbers.metric {
            let h = m.histogram.as_ref().expect("a histogram");
            let started = h.sample_count > 0;
            assert_eq!(
                ts(&h.created_timestamp),
                started.then_some(1_700_000_000_500)
            );
        }
        let lost = &families["talkover_webhook_deliveries_exhausted_total"];
        assert!(lost
            .metric
            .iter()
            .any(|m| m.counter.as_ref().is_some_and(|c| c.value > 0.0)));
        let timeouts = &families["talkover_webhook_timeout_seconds"];
        assert_eq!(
            timeouts.metric.len(),
            1,
            "only webhook 3's timeout is known"
        );
        assert_eq!(families["talkover_webhook_max_retries"].metric.len(), 3);
    }

    fn histograms(published: &Published) -> Vec<(String, crate::metrics::proto::Histogram)> {
        let mut body = Vec::new();
        assert!(published.render_chunks(Exposition::Protobuf, &mut |piece| {
            body.extend_from_slice(&piece);
            true
        }));
        let mut rest = &body[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let f = MetricFamily::decode_length_delimited(&mut rest).expect("a family");
            for m in f.metric {
                if let Some(h) = m.histogram {
                    out.push((f.name.clone(), h));
                }
            }
        }
        out
    }

    /// By default no histogram has anything Prometheus 3 takes for native
    /// buckets (its test: spans, deltas, a zero threshold or zero count),
    /// so one that does not ingest native histograms keeps the classic
    /// buckets; with the flag every per-webhook one has them, and the
    /// classic buckets are the same either way.
    #[test]
    fn histograms_carry_native_buckets_only_when_asked() {
        let classic = histograms(&varied_with(12, false));
        let native = histograms(&varied_with(12, true));
        assert_eq!(classic.len(), native.len());
        assert!(classic.len() > 20, "{} histograms", classic.len());
        for (name, h) in &classic {
            assert!(
                h.positive_span.is_empty()
                    && h.positive_delta.is_empty()
                    && h.zero_threshold == 0.0
                    && h.zero_count == 0
                    && h.schema == 0,
                "{name}: {h:?}"
            );
            assert!(!h.bucket.is_empty(), "{name} without classic buckets");
        }
        let mut with_spans = 0;
        for ((name, c), (_, n)) in classic.iter().zip(&native) {
            assert_eq!(c.bucket, n.bucket, "{name}");
            // The registry's own histograms are classic in every format.
            if !name.starts_with("talkover_webhook_") {
                continue;
            }
            assert_eq!(n.zero_threshold, NATIVE_ZERO_THRESHOLD, "{name}");
            assert_eq!(n.schema, NATIVE_SCHEMA, "{name}");
            if n.sample_count > n.zero_count {
                assert!(!n.positive_span.is_empty(), "{name}: {n:?}");
                with_spans += 1;
            }
        }
        assert!(
            with_spans > 10,
            "{with_spans} native histograms with buckets"
        );
    }

    /// The hand-written encoding is exactly prost's for the same messages:
    /// every family decodes, and encodes again to the same bytes, with
    /// native buckets and without.
    #[test]
    fn the_body_is_what_prost_would_encode() {
        the_body_is_what_prost_would_encode_with(varied_with(40, false));
        the_body_is_what_prost_would_encode_with(varied(40));
    }

    fn the_body_is_what_prost_would_encode_with(published: Published) {
        let mut body = Vec::new();
        assert!(published.render_chunks(Exposition::Protobuf, &mut |piece| {
            body.extend_from_slice(&piece);
            true
        }));
        let mut rest = &body[..];
        let mut families = 0;
        let mut exemplars = 0;
        while !rest.is_empty() {
            let before = rest;
            let family = MetricFamily::decode_length_delimited(&mut rest).expect("a family");
            let framed = &before[..before.len() - rest.len()];
            assert_eq!(
                family.encode_length_delimited_to_vec(),
                framed,
                "{}",
                family.name
            );
            families += 1;
            for m in &family.metric {
                exemplars += m
                    .counter
                    .as_ref()
                    .and_then(|c| c.exemplar.as_ref())
                    .map_or(0, |_| 1);
                exemplars += m.histogram.as_ref().map_or(0, |h| {
                    h.bucket.iter().filter(|b| b.exemplar.is_some()).count()
                });
            }
        }
        assert!(families > 15, "{families} families");
        assert!(exemplars > 100, "{exemplars} exemplars");
    }

    /// A family larger than a piece is handed on whole, after what was
    /// waiting, and the body still decodes family by family.
    #[test]
    fn large_families_are_handed_on_whole() {
        let published = varied(3000);
        let mut pieces = Vec::new();
        assert!(published.render_chunks(Exposition::Protobuf, &mut |piece| {
            pieces.push(piece);
            true
        }));
        assert!(
            pieces.iter().any(|p| p.len() > super::CHUNK_BYTES),
            "no family larger than a piece: {:?}",
            pieces.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let whole: Vec<u8> = pieces.concat();
        let mut rest = &whole[..];
        let mut names = Vec::new();
        while !rest.is_empty() {
            let family = MetricFamily::decode_length_delimited(&mut rest).expect("a family");
            names.push(family.name);
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each family once: {names:?}");
        assert!(names
            .iter()
            .any(|n| n == "talkover_webhook_delivery_duration_seconds"));
        // Cut short: the writer stops at the first refused piece.
        let mut handed = 0;
        assert!(!published.render_chunks(Exposition::Protobuf, &mut |_| {
            handed += 1;
            false
        }));
        assert_eq!(handed, 1);
    }
}

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
mod tests;

//! Prometheus's protobuf exposition format: length-delimited
//! `MetricFamily` messages, the format that carries native histograms.
//!
//! Each histogram goes out with its classic buckets and its native buckets
//! in the same message, so one scrape configuration serves Prometheus
//! servers with and without native histograms. A family is framed by its
//! length, so it is encoded whole before it is handed on: a scrape holds
//! one family at a time, not the whole body.

use std::sync::Arc;

use prometheus::proto as registry_proto;
use prometheus::Registry;
use prost::Message;

use super::families::{Bounds, Extra, Format, Kind};
use super::proto::{
    Bucket, BucketSpan, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily,
    MetricType, Timestamp,
};
use super::text::CHUNK_BYTES;
use crate::model::{self, TargetSnapshot, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD};

/// The labels every per-target series starts with.
const TARGET_LABELS: [&str; 3] = ["campaign_id", "agent_id", "webhook_id"];

/// The protobuf format being written.
pub(super) struct Protobuf<'a> {
    snaps: &'a [Arc<TargetSnapshot>],
    emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    closed: bool,
    /// Encoded families waiting to be handed on.
    out: Vec<u8>,
    /// The family being written: its name, help and type...
    header: MetricFamily,
    /// ...and its metrics, encoded.
    metrics: Vec<u8>,
    kind: Kind,
    /// Reused for every series, so a scrape allocates per family, not per series.
    metric: Metric,
}

impl<'a> Protobuf<'a> {
    pub(super) fn new(
        snaps: &'a [Arc<TargetSnapshot>],
        emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Protobuf<'a> {
        let label = TARGET_LABELS
            .iter()
            .map(|name| LabelPair {
                name: (*name).to_owned(),
                value: String::new(),
            })
            .collect();
        Protobuf {
            snaps,
            emit,
            closed: false,
            out: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            header: MetricFamily::default(),
            metrics: Vec::new(),
            kind: Kind::Gauge,
            metric: Metric {
                label,
                ..Metric::default()
            },
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

    /// Sets the labels after the target's own and readies the value field.
    fn start(&mut self, extra: Extra<'_>) {
        let labels = &mut self.metric.label;
        labels.truncate(TARGET_LABELS.len() + extra.len());
        for (i, (name, value)) in extra.iter().enumerate() {
            match labels.get_mut(TARGET_LABELS.len() + i) {
                Some(pair) => {
                    pair.name.clear();
                    pair.name.push_str(name);
                    pair.value.clear();
                    pair.value.push_str(value);
                }
                None => labels.push(LabelPair {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                }),
            }
        }
    }

    fn scalar(&mut self, extra: Extra<'_>, v: f64, exemplar: Option<&model::Exemplar>) {
        self.start(extra);
        let m = &mut self.metric;
        (m.counter, m.gauge) = match self.kind {
            Kind::Counter => (
                Some(Counter {
                    value: v,
                    exemplar: exemplar.map(to_exemplar),
                }),
                None,
            ),
            _ => (None, Some(Gauge { value: v })),
        };
        m.histogram = None;
        prost::encoding::message::encode(4, &self.metric, &mut self.metrics);
    }
}

impl Format for Protobuf<'_> {
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.kind = kind;
        self.header.name.clear();
        self.header.name.push_str(name);
        self.header.help.clear();
        self.header.help.push_str(help);
        self.header.r#type = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge | Kind::Info => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        } as i32;
        self.metrics.clear();
    }

    fn target(&mut self, i: usize) {
        let Some(s) = self.snaps.get(i) else { return };
        let t = &s.target;
        for (pair, value) in
            self.metric
                .label
                .iter_mut()
                .zip([t.campaign_id(), t.agent_id(), t.webhook_id.as_str()])
        {
            pair.value.clear();
            pair.value.push_str(value);
        }
    }

    fn value(&mut self, extra: Extra<'_>, v: u64) {
        self.scalar(extra, v as f64, None);
    }

    fn float(&mut self, extra: Extra<'_>, v: f64) {
        self.scalar(extra, v, None);
    }

    fn value_with_exemplar(
        &mut self,
        extra: Extra<'_>,
        v: u64,
        exemplar: Option<&model::Exemplar>,
    ) {
        self.scalar(extra, v as f64, exemplar);
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
        let m = &mut self.metric;
        m.counter = None;
        m.gauge = None;
        let out = m.histogram.get_or_insert_with(Histogram::default);
        let count = h.count();
        out.sample_count = count;
        out.sample_sum = h.sum;
        out.bucket.clear();
        let mut cumulative = 0;
        for (i, bound) in bounds.values().iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            out.bucket.push(Bucket {
                cumulative_count: cumulative,
                upper_bound: *bound,
                exemplar: exemplars.get(i).and_then(Option::as_ref).map(to_exemplar),
            });
        }
        out.schema = NATIVE_SCHEMA;
        out.zero_threshold = NATIVE_ZERO_THRESHOLD;
        out.zero_count = h.native.zero;
        let (spans, deltas) = h.native.spans_and_deltas();
        out.positive_span.clear();
        out.positive_span.extend(
            spans
                .into_iter()
                .map(|(offset, length)| BucketSpan { offset, length }),
        );
        out.positive_delta = deltas;
        prost::encoding::message::encode(4, &self.metric, &mut self.metrics);
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
            let len = self.header.encoded_len() + self.metrics.len();
            prost::encoding::encode_varint(len as u64, &mut self.out);
            let _ = self.header.encode(&mut self.out);
            self.out.extend_from_slice(&self.metrics);
        }
        if self.out.len() >= CHUNK_BYTES {
            let next = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
            self.closed = !(self.emit)(std::mem::replace(&mut self.out, next));
        }
        !self.closed
    }
}

/// An attempt as an exemplar message.
fn to_exemplar(e: &model::Exemplar) -> Exemplar {
    Exemplar {
        label: vec![LabelPair {
            name: "log_id".into(),
            value: e.id.clone(),
        }],
        value: e.value,
        timestamp: Some(Timestamp {
            seconds: e.ms.div_euclid(1000),
            nanos: (e.ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
    }
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
                        exemplar: None,
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

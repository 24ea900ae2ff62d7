//! One scrape of `/metrics`, parsed: series (name and labels) to value.

use std::collections::BTreeMap;

use talkover_count::target::Target;
use talkover_sim::Truth;

/// The counter every exactness test compares with the simulator.
pub const ATTEMPTS: &str = "talkover_webhook_delivery_attempts_total";

/// (campaign_id, agent_id, webhook_id); an absent label is "".
pub type Key = (String, String, String);

/// A native histogram of a protobuf scrape, its buckets decoded.
#[derive(Debug, Clone)]
pub struct NativeSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    /// `(index, count)` of each bucket listed.
    pub buckets: Vec<(i32, u64)>,
}

/// One parsed scrape: series (name + sorted labels) to value.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub raw: String,
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
            };
            series.push((name, labels, value));
        }
        Scrape {
            raw: text.to_string(),
            series,
        }
    }

    /// A protobuf scrape (delimited `MetricFamily` messages) as the samples
    /// a text scrape of it has: each histogram's classic buckets become
    /// `_bucket`, `_sum` and `_count` series. Its native histograms come
    /// back beside it, by series.
    pub fn from_protobuf(mut body: &[u8]) -> (Scrape, Vec<NativeSample>) {
        use prost::Message as _;
        use talkover_exporter::proto::{MetricFamily, MetricType};
        let mut series = Vec::new();
        let mut native = Vec::new();
        while !body.is_empty() {
            let family = MetricFamily::decode_length_delimited(&mut body).expect("a whole family");
            let name = family.name.clone();
            for m in &family.metric {
                let labels: BTreeMap<String, String> = m
                    .label
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                match MetricType::try_from(family.r#type).expect("a known type") {
                    MetricType::Counter => {
                        let v = m.counter.as_ref().expect("a counter").value;
                        series.push((name.clone(), labels, v));
                    }
                    MetricType::Gauge => {
                        let v = m.gauge.as_ref().expect("a gauge").value;
                        series.push((name.clone(), labels, v));
                    }
                    MetricType::Histogram => {
                        let h = m.histogram.as_ref().expect("a histogram");
                        for b in &h.bucket {
                            let mut l = labels.clone();
                            l.insert("le".into(), b.upper_bound.to_string());
                            series.push((format!("{name}_bucket"), l, b.cumulative_count as f64));
                        }
                        let mut l = labels.clone();
                        l.insert("le".into(), "+Inf".into());
                        series.push((format!("{name}_bucket"), l, h.sample_count as f64));
                        series.push((format!("{name}_sum"), labels.clone(), h.sample_sum));
                        series.push((
                            format!("{name}_count"),
                            labels.clone(),
                            h.sample_count as f64,
                        ));
                        let mut buckets = Vec::new();
                        let mut deltas = h.positive_delta.iter();
                        let (mut index, mut count) = (0i32, 0i64);
                        for span in &h.positive_span {
                            index += span.offset;
                            for _ in 0..span.length {
                                count += deltas.next().expect("a delta per bucket");
                                buckets.push((index, count as u64));
                                index += 1;
                            }
                        }
                        assert!(
                            deltas.next().is_none(),
                            "more deltas than buckets in {name}"
                        );
                        native.push(NativeSample {
                            name: name.clone(),
                            labels,
                            schema: h.schema,
                            zero_threshold: h.zero_threshold,
                            zero_count: h.zero_count,
                            count: h.sample_count,
                            buckets,
                        });
                    }
                    other => panic!("{name}: unexpected type {other:?}"),
                }
            }
        }
        (
            Scrape {
                raw: String::new(),
                series,
            },
            native,
        )
    }

    /// Sum of the series of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// `talkover_webhook_delivery_attempts_total` of one target, as truth is shaped.
    pub fn attempts(&self, target: &Target) -> Truth {
        let mut out = Truth::new();
        for (n, labels, v) in &self.series {
            if n != "talkover_webhook_delivery_attempts_total" || !is_target(labels, target) {
                continue;
            }
            let key = (
                labels["event"].clone(),
                labels["status"].clone(),
                labels["code"].clone(),
            );
            *out.entry(key).or_default() += *v as u64;
        }
        out
    }

    pub fn target_value(&self, name: &str, target: &Target, extra: &[(&str, &str)]) -> f64 {
        let mut want = vec![
            ("campaign_id", target.campaign_id()),
            ("agent_id", target.agent_id()),
            ("webhook_id", target.webhook_id.as_str()),
        ];
        want.extend_from_slice(extra);
        self.sum(name, &want)
    }
}

fn is_target(labels: &BTreeMap<String, String>, t: &Target) -> bool {
    labels.get("campaign_id").map(String::as_str) == Some(t.campaign_id())
        && labels.get("agent_id").map(String::as_str) == Some(t.agent_id())
        && labels.get("webhook_id") == Some(&t.webhook_id)
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value must be quoted in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

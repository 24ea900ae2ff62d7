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

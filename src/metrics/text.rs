//! The Prometheus text exposition format, and OpenMetrics text with
//! exemplars, written in pieces as they render.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};

use super::families::{Bounds, Extra, Format, Kind};
use super::openmetrics;
use crate::model::{Exemplar, Histogram, TargetSnapshot};
use crate::target::Target;

/// Size of the pieces a body is handed on in.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;

/// The text format being written: text accumulates in `buf` and leaves in
/// pieces of about [`CHUNK_BYTES`].
pub(super) struct Text<'a> {
    buf: String,
    emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    /// The receiver is gone: the rest is not rendered.
    closed: bool,
    /// The target labels of each snapshot, escaped once for all families.
    prefixes: Vec<String>,
    /// The `le` values of each kind of histogram, in [`Bounds::ALL`] order.
    les: [Vec<String>; 3],
    name: &'static str,
    prefix: usize,
    /// OpenMetrics text: its family names, its `info` type, exemplars and `# EOF`.
    openmetrics: bool,
}

impl<'a> Text<'a> {
    pub(super) fn new(
        snaps: &[Arc<TargetSnapshot>],
        emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
        openmetrics: bool,
    ) -> Text<'a> {
        Text {
            buf: String::with_capacity(CHUNK_BYTES + 64 * 1024),
            emit,
            closed: false,
            prefixes: snaps.iter().map(|s| label_prefix(&s.target)).collect(),
            les: Bounds::ALL.map(|b| b.values().iter().map(|v| v.to_string()).collect()),
            name: "",
            prefix: 0,
            openmetrics,
        }
    }

    /// Appends the build info and the registry's self-metrics, and hands on the rest.
    pub(super) fn finish(mut self, registry: &Registry) -> bool {
        if self.closed {
            return false;
        }
        if self.openmetrics {
            openmetrics::build_info(&mut self.buf);
            openmetrics::registry(&mut self.buf, &registry.gather());
            self.buf.push_str("# EOF\n");
        } else {
            render_build_info(&mut self.buf);
            let mut buf = Vec::new();
            if TextEncoder::new()
                .encode(&registry.gather(), &mut buf)
                .is_ok()
            {
                self.buf.push_str(&String::from_utf8_lossy(&buf));
            }
        }
        if !self.buf.is_empty() {
            self.closed = !(self.emit)(std::mem::take(&mut self.buf).into_bytes());
        }
        !self.closed
    }

    fn series(&mut self) -> Series<'_> {
        Series {
            out: &mut self.buf,
            name: self.name,
            prefix: &self.prefixes[self.prefix],
        }
    }
}

impl Format for Text<'_> {
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.name = name;
        if self.openmetrics {
            openmetrics::header(&mut self.buf, name, kind, help);
        } else {
            header(&mut self.buf, name, kind.as_str(), help);
        }
    }

    fn target(&mut self, i: usize) {
        self.prefix = i;
    }

    fn value(&mut self, extra: Extra<'_>, v: u64) {
        self.series().value(extra, v);
    }

    fn float(&mut self, extra: Extra<'_>, v: f64) {
        self.series().float(extra, v);
    }

    fn histogram(&mut self, extra: Extra<'_>, bounds: Bounds, h: &Histogram) {
        self.histogram_with_exemplars(extra, bounds, h, &[]);
    }

    fn value_with_exemplar(&mut self, extra: Extra<'_>, v: u64, exemplar: Option<&Exemplar>) {
        let exemplar = exemplar.filter(|_| self.openmetrics);
        let mut series = self.series();
        series.labels("", extra, None);
        series.int_with(v, exemplar);
    }

    fn histogram_with_exemplars(
        &mut self,
        extra: Extra<'_>,
        bounds: Bounds,
        h: &Histogram,
        exemplars: &[Option<Exemplar>],
    ) {
        let exemplars = if self.openmetrics { exemplars } else { &[] };
        Series {
            out: &mut self.buf,
            name: self.name,
            prefix: &self.prefixes[self.prefix],
        }
        .histogram(extra, &self.les[bounds.index()], h, exemplars);
    }

    fn flush_if_full(&mut self) -> bool {
        if !self.closed && self.buf.len() >= CHUNK_BYTES {
            let next = String::with_capacity(CHUNK_BYTES + 64 * 1024);
            let piece = std::mem::replace(&mut self.buf, next);
            self.closed = !(self.emit)(piece.into_bytes());
        }
        !self.closed
    }

    fn end_family(&mut self) -> bool {
        !self.closed
    }
}

pub(super) fn render_build_info(out: &mut String) {
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
        self.int_with(v, None);
    }

    /// A value, then the attempt behind it (OpenMetrics only).
    fn int_with(&mut self, v: u64, exemplar: Option<&Exemplar>) {
        self.out.push_str(itoa::Buffer::new().format(v));
        if let Some(e) = exemplar {
            openmetrics::exemplar(self.out, e);
        }
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

    fn histogram(
        &mut self,
        extra: &[(&str, &str)],
        les: &[String],
        h: &Histogram,
        exemplars: &[Option<Exemplar>],
    ) {
        let exemplar = |i: usize| exemplars.get(i).and_then(Option::as_ref);
        let mut cumulative = 0;
        for (i, le) in les.iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            self.labels("_bucket", extra, Some(le));
            self.int_with(cumulative, exemplar(i));
        }
        let count = h.count();
        self.labels("_bucket", extra, Some("+Inf"));
        self.int_with(count, exemplar(les.len()));
        self.labels("_sum", extra, None);
        write_float(self.out, h.sum);
        self.labels("_count", extra, None);
        self.int(count);
    }
}

pub(super) fn write_float(out: &mut String, v: f64) {
    push_float(out, v);
    out.push('\n');
}

/// A sample value as the text formats write it.
pub(super) fn push_float(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
}

/// Label values may hold anything the API sent: escape per the text format.
pub(super) fn escape_into(out: &mut String, v: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Budget, Exposition, Published};
    use crate::model::{
        AttemptKey, DeliveryCounts, PollStats, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS,
    };

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
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
        });
        let out = published.render();
        assert!(out.contains(
            r#"talkover_webhook_delivery_attempts_total{campaign_id="",agent_id="a1",webhook_id="w1",event="we\"ird\\\n",status="success",code="200"} 3"#
        ), "{out}");
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="1"} 0"#));
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="3"} 2"#));
        assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_count{campaign_id="",agent_id="a1",webhook_id="w1",status="failed"} 2"#));
    }

    /// From its first read a webhook shows every result and each known
    /// event's lost events at 0, and its settings; one whose settings are
    /// not known says so and has no settings series.
    #[test]
    fn alerting_series_exist_at_zero_and_settings_are_served() {
        let published = Published::new();
        let known: Target = "campaigns/c1/webhooks/w1".parse().expect("t");
        let settings = crate::model::WebhookSettings::new(
            Some("CRM".into()),
            false,
            Some(0),
            Some(10),
            &["campaign.started".into(), "campaign_call.failed".into()],
        );
        let mut counts = DeliveryCounts::default();
        counts.start(1_000, &settings.events);
        published.publish(TargetSnapshot {
            target: known,
            counts,
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: Some(settings),
        });
        let unknown: Target = "agents/a1/webhooks/w2".parse().expect("t");
        published.publish(TargetSnapshot {
            target: unknown,
            counts: DeliveryCounts::default(),
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
        });
        let out = published.render();
        let w1 = r#"campaign_id="c1",agent_id="",webhook_id="w1""#;
        let w2 = r#"campaign_id="",agent_id="a1",webhook_id="w2""#;
        for line in [
            format!(
                r#"talkover_webhook_info{{{w1},name="CRM",enabled="false",settings="known"}} 1"#
            ),
            format!(
                r#"talkover_webhook_info{{{w2},name="",enabled="unknown",settings="unknown"}} 1"#
            ),
            format!("talkover_webhook_max_retries{{{w1}}} 0"),
            format!("talkover_webhook_timeout_seconds{{{w1}}} 10"),
            format!(
                r#"talkover_webhook_deliveries_exhausted_total{{{w1},event="campaign.started"}} 0"#
            ),
            format!(
                r#"talkover_webhook_deliveries_exhausted_total{{{w1},event="campaign_call.failed"}} 0"#
            ),
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line} not in\n{out}");
        }
        for result in crate::model::RESULTS {
            for w in [w1, w2] {
                let line = format!(
                    r#"talkover_webhook_delivery_results_total{{{w},result="{result}"}} 0"#
                );
                assert!(out.contains(&line), "{line}");
            }
        }
        assert!(!out.contains(&format!("talkover_webhook_max_retries{{{w2}}}")));
        assert!(!out.contains(&format!("talkover_webhook_timeout_seconds{{{w2}}}")));
    }

    fn all_families() -> Budget {
        Budget {
            lag: true,
            attempt_number: true,
            duration_by_status: true,
            poll_stats: true,
            native_histograms: true,
        }
    }

    fn published_with(targets: usize) -> Published {
        let published = Published::with_budget(all_families());
        for i in 0..targets {
            let target: Target = format!("campaigns/c{i}/webhooks/w{i}").parse().expect("t");
            let mut counts = DeliveryCounts::default();
            counts.lag.observe(LAG_BUCKETS, 1.0);
            published.publish(TargetSnapshot {
                target,
                counts,
                failures: Default::default(),
                stats: PollStats::default(),
                pending: 0,
                backlog: 0,
                settings: None,
            });
        }
        published
    }

    #[test]
    fn chunks_add_up_to_the_whole_body() {
        let published = published_with(1500);
        let mut chunks = Vec::new();
        let whole = published.render_chunks(Exposition::Text, &mut |chunk| {
            chunks.push(String::from_utf8(chunk).expect("text"));
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
        let whole = published.render_chunks(Exposition::Text, &mut |_| {
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
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
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

    /// OpenMetrics: counter families named without `_total`, `info` as a
    /// type, the newest attempt as an exemplar on its attempts series and
    /// duration bucket, `# EOF` last; the samples otherwise as in text.
    #[test]
    fn openmetrics_carries_exemplars_and_ends_with_eof() {
        let published = Published::new();
        let mut counts = DeliveryCounts::default();
        let key = AttemptKey {
            event: "campaign.started".into(),
            status: "failed".into(),
            code: "500".into(),
        };
        counts.attempts.insert(key.clone(), 2);
        let mut h = Histogram::default();
        let bucket = h.observe(DURATION_BUCKETS, 0.3);
        h.offer_exemplar(bucket, "log_9", 0.3, 1_700_000_000_123);
        counts.duration.insert("failed".into(), h);
        let ex = std::sync::Arc::make_mut(&mut counts.exemplars);
        ex.attempt(
            ("campaign.started", "failed", "500"),
            "log_\"9",
            1_700_000_000_123,
        );

        published.publish(TargetSnapshot {
            target: "agents/a1/webhooks/w1".parse().expect("t"),
            counts,
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
        });
        let mut body = Vec::new();
        assert!(published.render_chunks(Exposition::OpenMetrics, &mut |c| {
            body.extend_from_slice(&c);
            true
        }));
        let om = String::from_utf8(body).expect("utf-8");
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE talkover_webhook_delivery_attempts counter\n"));
        assert!(om.contains("# TYPE talkover_webhook info\n"));
        assert!(om.contains("# TYPE talkover_exporter_build info\n"));
        assert!(om.contains("# TYPE process_cpu_seconds counter\n") || !cfg!(target_os = "linux"));
        assert!(om.contains(
            r#"talkover_webhook_delivery_attempts_total{campaign_id="",agent_id="a1",webhook_id="w1",event="campaign.started",status="failed",code="500"} 2 # {log_id="log_\"9"} 1.0 1700000000.123"#
        ), "{om}");
        assert!(om.contains(
            r#"talkover_webhook_delivery_duration_seconds_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="0.5"} 1 # {log_id="log_9"} 0.3 1700000000.123"#
        ), "{om}");
        // Buckets below the observation have no exemplar.
        assert!(om.contains(
            "talkover_webhook_delivery_duration_seconds_bucket{campaign_id=\"\",agent_id=\"a1\",webhook_id=\"w1\",status=\"failed\",le=\"0.25\"} 0\n"
        ));
        // The plain text format has none of it.
        let text = published.render();
        assert!(!text.contains("log_id") && !text.contains("# EOF"));
        let samples = |body: &str| -> Vec<String> {
            body.lines()
                .filter(|l| l.starts_with("talkover_"))
                .map(|l| {
                    let sample = l.split(" # ").next().unwrap_or(l);
                    // The registry's self-metrics print `0` as `0.0` in OpenMetrics.
                    let (series, value) = sample.rsplit_once(' ').expect("a value");
                    format!("{series} {}", value.parse::<f64>().expect("a number"))
                })
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }

    /// Without `--collector.poll-stats`, polling detail is one series set
    /// for the exporter, not four series per webhook; with it, per webhook.
    #[test]
    fn poll_stats_are_exporter_wide_unless_asked_per_webhook() {
        let render = |budget: Budget| {
            let published = Published::with_budget(budget);
            for (target, backlog) in [("agents/a/webhooks/w1", 5), ("agents/a/webhooks/w2", 2)] {
                let mut stats = PollStats::default();
                let before = stats.requests.clone();
                *stats.requests.entry(("success", "200".into())).or_default() += 3;
                stats.polls += 1;
                stats.last_duration = Some(0.25);
                published.observe_poll(0.25, &before, &stats.requests);
                published.publish(TargetSnapshot {
                    target: target.parse().expect("t"),
                    counts: DeliveryCounts::default(),
                    failures: Default::default(),
                    stats,
                    pending: 0,
                    backlog,
                    settings: None,
                });
            }
            published.render()
        };
        let detail = [
            "talkover_exporter_polls_total",
            "talkover_exporter_last_poll_duration_seconds",
            "talkover_exporter_api_requests_total",
            "talkover_exporter_backlog_entries",
        ];
        let wide = render(Budget::default());
        for family in detail {
            assert!(
                !wide
                    .lines()
                    .any(|l| l.starts_with(family) && l.contains("webhook_id")),
                "{family} per webhook by default:\n{wide}"
            );
        }
        assert!(
            wide.contains("\ntalkover_exporter_backlog_entries 7\n"),
            "{wide}"
        );
        assert!(
            wide.contains(
                "\ntalkover_exporter_api_requests_total{code=\"200\",outcome=\"success\"} 6\n"
            ),
            "{wide}"
        );
        let per_webhook = render(Budget {
            poll_stats: true,
            ..Budget::default()
        });
        for family in detail {
            assert!(
                per_webhook
                    .lines()
                    .any(|l| l.starts_with(family) && l.contains(r#"webhook_id="w1""#)),
                "{family} not per webhook with --collector.poll-stats:\n{per_webhook}"
            );
        }
        assert!(per_webhook.contains(
            r#"talkover_exporter_backlog_entries{campaign_id="",agent_id="a",webhook_id="w2"} 2"#
        ));
        assert!(!per_webhook.contains("\ntalkover_exporter_backlog_entries "));
        assert!(per_webhook.contains(
            r#"talkover_exporter_api_requests_total{campaign_id="",agent_id="a",webhook_id="w2",outcome="success",code="200"} 3"#
        ));
    }

    #[test]
    fn the_budget_leaves_out_the_families_it_turns_off() {
        let family_lines = |budget: Budget, family: &str| {
            let published = Published::with_budget(budget);
            let mut counts = DeliveryCounts::default();
            for (status, v) in [("success", 0.3), ("failed", 7.0)] {
                let mut h = Histogram::default();
                h.observe(DURATION_BUCKETS, v);
                counts.duration.insert(status.into(), h.clone());
                counts.attempt_number.insert(status.into(), h);
            }
            counts.lag.observe(LAG_BUCKETS, 1.0);
            published.publish(TargetSnapshot {
                target: "agents/a/webhooks/w".parse().expect("t"),
                counts,
                failures: Default::default(),
                stats: PollStats::default(),
                pending: 0,
                backlog: 0,
                settings: None,
            });
            let body = published.render();
            body.lines()
                .filter(|l| l.starts_with(family))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let duration = "talkover_webhook_delivery_duration_seconds";
        assert!(
            family_lines(Budget::default(), "talkover_webhook_delivery_lag_seconds").is_empty()
        );
        assert_eq!(
            family_lines(all_families(), "talkover_webhook_delivery_lag_seconds").len(),
            LAG_BUCKETS.len() + 3
        );
        let off = Budget {
            attempt_number: false,
            ..all_families()
        };
        assert!(family_lines(off, "talkover_webhook_delivery_attempt_number").is_empty());
        assert_eq!(
            family_lines(all_families(), duration).len(),
            2 * (DURATION_BUCKETS.len() + 3)
        );
        let merged = family_lines(
            Budget {
                duration_by_status: false,
                ..all_families()
            },
            duration,
        );
        assert_eq!(merged.len(), DURATION_BUCKETS.len() + 3);
        assert!(merged.iter().all(|l| !l.contains("status=")));
        assert!(merged.contains(&format!(
            r#"{duration}_count{{campaign_id="",agent_id="a",webhook_id="w"}} 2"#
        )));
        assert!(merged.contains(&format!(
            r#"{duration}_bucket{{campaign_id="",agent_id="a",webhook_id="w",le="0.5"}} 1"#
        )));
    }
}

#[cfg(test)]
pub(crate) mod render_timing {
    use super::*;
    use crate::metrics::Published;
    use crate::model::{AttemptKey, DeliveryCounts, PollStats, DURATION_BUCKETS, LAG_BUCKETS};

    /// `n` webhooks with a little traffic of several events, statuses and codes.
    pub(crate) fn busy(n: usize) -> Published {
        let published = Published::new();
        for i in 0..n {
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
                failures: Default::default(),
                stats,
                pending: 0,
                backlog: 0,
                settings: None,
            });
        }
        published
    }

    /// Not a benchmark (see benches/scale.rs): a quick look at render time
    /// for 10,000 busy-looking targets. `cargo test --release -- --ignored render_10k --nocapture`.
    #[test]
    #[ignore = "timing, run by hand"]
    fn render_10k() {
        let published = busy(10_000);
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

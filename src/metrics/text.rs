//! The Prometheus text exposition format, written in pieces as it renders.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus::{Encoder, TextEncoder};

use super::Published;
use crate::model::{Histogram, TargetSnapshot, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS};
use crate::target::{Target, WebhookMeta};

impl Published {
    /// Renders the whole `/metrics` body in the text exposition format.
    pub fn render(&self) -> String {
        let mut body = String::new();
        self.render_chunks(&mut |chunk| {
            body.push_str(&chunk);
            true
        });
        body
    }

    /// Renders the `/metrics` body in pieces of about 256 KiB, handing
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
const CHUNK_BYTES: usize = 256 * 1024;

/// A body being rendered: text accumulates in `buf` and leaves in pieces.
pub(super) struct Output<'a> {
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
    pub(super) fn render_info(&self, snaps: &[Arc<TargetSnapshot>], out: &mut Output<'_>) {
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

/// Renders every per-target family, each family once with all its series.
pub(super) fn render_targets(snaps: &[Arc<TargetSnapshot>], out: &mut Output<'_>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptKey, DeliveryCounts, PollStats};

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
}

#[cfg(test)]
pub(crate) mod render_timing {
    use super::*;
    use crate::model::{AttemptKey, DeliveryCounts, PollStats};

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
                stats,
                pending: 0,
                backlog: 0,
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

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
mod tests;

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

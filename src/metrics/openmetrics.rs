//! What OpenMetrics text says differently from the Prometheus text format:
//! counter families are named without `_total`, `info` is a type of its
//! own, samples may carry exemplars, and the body ends with `# EOF`. The
//! samples themselves are the same, written by `text`.

use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};

use super::families::Kind;
use super::text::{escape_into, push_float, write_float};
use crate::model::Exemplar;

/// `# HELP` and `# TYPE` of one family, under its OpenMetrics name.
pub(super) fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let (family, kind) = match kind {
        Kind::Counter => (name.strip_suffix("_total").unwrap_or(name), "counter"),
        Kind::Info => (name.strip_suffix("_info").unwrap_or(name), "info"),
        Kind::Gauge => (name, "gauge"),
        Kind::Histogram => (name, "histogram"),
    };
    let _ = write!(out, "# HELP {family} ");
    escape_help(out, help);
    let _ = writeln!(out, "\n# TYPE {family} {kind}");
}

/// ` # {log_id="…"} value timestamp`, after a sample's value.
pub(super) fn exemplar(out: &mut String, e: &Exemplar) {
    out.push_str(" # {log_id=\"");
    escape_into(out, &e.id);
    out.push_str("\"} ");
    push_float(out, e.value);
    let ms = e.ms.max(0);
    let _ = write!(out, " {}.{:03}", ms / 1000, ms % 1000);
}

/// The exporter's version, as an info metric.
pub(super) fn build_info(out: &mut String) {
    header(
        out,
        "talkover_exporter_build_info",
        Kind::Info,
        "A metric with a constant '1' value labeled by the exporter's version.",
    );
    let _ = writeln!(
        out,
        "talkover_exporter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

/// The `prometheus` crate's registry (process and self-metrics), which
/// has no OpenMetrics encoder of its own.
pub(super) fn registry(out: &mut String, families: &[MetricFamily]) {
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            // The registry holds no summaries and nothing untyped.
            _ => continue,
        };
        header(out, name, kind, family.help());
        for m in family.get_metric() {
            let labels = |out: &mut String, suffix: &str, le: Option<&str>| {
                out.push_str(name);
                out.push_str(suffix);
                let pairs = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .chain(le.map(|le| ("le", le)));
                let mut first = true;
                for (k, v) in pairs {
                    out.push(if first { '{' } else { ',' });
                    first = false;
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_into(out, v);
                    out.push('"');
                }
                if !first {
                    out.push('}');
                }
                out.push(' ');
            };
            match kind {
                Kind::Counter => {
                    labels(out, "", None);
                    write_float(out, m.get_counter().get_value());
                }
                Kind::Gauge | Kind::Info => {
                    labels(out, "", None);
                    write_float(out, m.get_gauge().get_value());
                }
                Kind::Histogram => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = b.upper_bound();
                        if le.is_infinite() {
                            continue;
                        }
                        labels(out, "_bucket", Some(&le.to_string()));
                        let _ = writeln!(out, "{}", b.cumulative_count());
                    }
                    labels(out, "_bucket", Some("+Inf"));
                    let _ = writeln!(out, "{}", h.get_sample_count());
                    labels(out, "_sum", None);
                    write_float(out, h.get_sample_sum());
                    labels(out, "_count", None);
                    let _ = writeln!(out, "{}", h.get_sample_count());
                }
            }
        }
    }
}

/// Help text as OpenMetrics escapes it.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

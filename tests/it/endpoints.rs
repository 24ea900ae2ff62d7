//! The HTTP surface: landing page, health, readiness, and /metrics judged by promtool.

use std::process::{Command, Stdio};
use std::time::Duration;

use talkover_count::model::bucket_upper_bound;
use talkover_sim::{Fault, FaultRule, Order};
use tokio::io::AsyncWriteExt;

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

/// Not ready until every target finished its first poll; healthy all along;
/// the landing page sums the webhooks up and links to the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_health_and_readiness() {
    let s = start_sim(31, Order::NewestFirst, &[A, B], quiet_profile()).await;
    // Hold B's first poll for a while.
    s.sim.inject(FaultRule {
        target: Some(B.into()),
        fault: Fault::Delay { ms: 1500 },
        count: 1,
    });
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    let (status, body) = exporter.get("/-/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(exporter.get("/-/healthy").await.0, 200);
    let (status, landing) = exporter.get("/").await;
    assert_eq!(status, 200);
    for link in [
        "href=\"/metrics\"",
        "href=\"/-/healthy\"",
        "href=\"/-/ready\"",
        "href=\"/webhooks\"",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(landing.contains(link), "landing page lacks {link}");
    }
    exporter.wait_ready().await;
    // Once both webhooks are polled the summary counts them.
    let (_, landing) = exporter.get("/").await;
    assert!(landing.contains("<td id=\"watched\">2</td>"), "{landing}");
    assert!(landing.contains("<td id=\"up\">2</td>"), "{landing}");
    exporter.stop().await;
}

/// `promtool check metrics` finds no problem in a scrape full of traffic.
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs promtool: cargo test --features e2e"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics() {
    let s = start_sim(32, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scrape = exporter.scrape().await;
    assert!(scrape.sum("talkover_webhook_delivery_attempts_total", &[]) > 0.0);
    assert!(scrape.sum("talkover_exporter_build_info", &[]) == 1.0);
    assert!(scrape.raw.contains("process_resident_memory_bytes"));

    let promtool = which("promtool").expect("promtool is required: install Debian's `prometheus` package (the README's test command does)");
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(scrape.raw.as_bytes()).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
    exporter.stop().await;
}

/// Poll self-metrics by default: one poll-duration histogram, one set of
/// API request counters and one backlog for the whole exporter, nothing of
/// it per webhook (`--collector.poll-stats` is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_self_metrics() {
    let s = start_sim(33, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scrape = exporter.scrape().await;
    let exporter_wide = |name: &str| -> Vec<f64> {
        let series: Vec<_> = scrape.series.iter().filter(|(n, _, _)| n == name).collect();
        assert!(
            series
                .iter()
                .all(|(_, labels, _)| !labels.contains_key("webhook_id")),
            "{name} has per-webhook series by default"
        );
        series.iter().map(|(_, _, v)| *v).collect()
    };
    let polls = exporter_wide("talkover_exporter_poll_duration_seconds_count");
    assert_eq!(polls.len(), 1, "one histogram, not one per webhook");
    assert!(
        polls[0] >= 4.0,
        "{} polls in 500 ms at a 100 ms interval",
        polls[0]
    );
    let requests = exporter_wide("talkover_exporter_api_requests_total");
    assert_eq!(requests.len(), 1, "only successes: one (outcome, code)");
    assert_eq!(
        scrape.sum(
            "talkover_exporter_api_requests_total",
            &[("outcome", "success"), ("code", "200")]
        ),
        requests[0]
    );
    // Idle webhooks: one request per poll, the baseline poll included; a
    // poll of each webhook may end between the two families' reads.
    assert!(
        (requests[0] - polls[0]).abs() <= 2.0,
        "{} requests for {} polls",
        requests[0],
        polls[0]
    );
    assert_eq!(exporter_wide("talkover_exporter_backlog_entries"), [0.0]);
    for name in [
        "talkover_exporter_polls_total",
        "talkover_exporter_last_poll_duration_seconds",
    ] {
        assert!(exporter_wide(name).is_empty(), "{name} served by default");
    }
    exporter.stop().await;
}

/// With `--collector.poll-stats`, per webhook: a poll count (requests per
/// poll are then a division), the last poll's duration, its requests and
/// its backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_self_metrics_per_webhook() {
    let s = start_sim(33, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let options = ExporterOptions {
        flags: flags(&["--collector.poll-stats"]),
        ..ExporterOptions::default()
    };
    let exporter = start_exporter(&s.url, &[A, B], options).await;
    exporter.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scrape = exporter.scrape().await;
    let histogram_counts: Vec<_> = scrape
        .series
        .iter()
        .filter(|(n, _, _)| n == "talkover_exporter_poll_duration_seconds_count")
        .collect();
    assert_eq!(
        histogram_counts.len(),
        1,
        "one histogram, not one per webhook"
    );
    let mut polls = 0.0;
    for t in s.sim.targets() {
        let n = scrape.target_value("talkover_exporter_polls_total", &t, &[]);
        let requests = scrape.target_value("talkover_exporter_api_requests_total", &t, &[]);
        assert!(n >= 2.0, "{t}: {n} polls in 500 ms at a 100 ms interval");
        // Idle webhooks: one request per poll, the baseline poll included.
        assert_eq!(requests, n, "{t}: requests per poll");
        let last = scrape.target_value("talkover_exporter_last_poll_duration_seconds", &t, &[]);
        assert!(last > 0.0 && last < 2.0, "{t}: last poll took {last} s");
        assert_eq!(
            scrape.target_value("talkover_exporter_backlog_entries", &t, &[]),
            0.0
        );
        polls += n;
    }
    // Observed as a poll ends, published with the state just after.
    assert!(
        histogram_counts[0].2 >= polls,
        "{} < {polls}",
        histogram_counts[0].2
    );
    // Per webhook only: no exporter-wide series under the same names.
    assert!(scrape
        .series
        .iter()
        .filter(|(n, _, _)| n == "talkover_exporter_api_requests_total"
            || n == "talkover_exporter_backlog_entries")
        .all(|(_, labels, _)| labels.contains_key("webhook_id")));
    exporter.stop().await;
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The same state scraped in every format decodes to the same samples:
/// plain text, gzip text, gzip OpenMetrics with exemplars (what Prometheus
/// asks for by default), protobuf
/// (what it asks for with native histograms on) and gzip protobuf. gzip
/// takes a fraction of the bytes (under a fifth for these two webhooks,
/// whose body is mostly help text; a few percent at scale: docs/scale.md,
/// "Scrape formats and size"). With `--collector.native-histograms`, each protobuf histogram
/// also carries native buckets that hold every observation and agree with
/// its classic buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_has_the_samples_of_a_plain_scrape() {
    use std::io::Read as _;
    let s = start_sim(33, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let options = ExporterOptions {
        flags: flags(&["--collector.native-histograms"]),
        ..ExporterOptions::default()
    };
    let exporter = start_exporter(&s.url, &[A, B], options).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 300);
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;

    const PROTOBUF: &str =
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    let http = reqwest::Client::new();
    let fetch = |accept: &'static str, encoding: &'static str| {
        let request = http.get(exporter.url("/metrics"));
        async move {
            let mut request = request.header("accept", accept);
            if !encoding.is_empty() {
                request = request.header("accept-encoding", encoding);
            }
            let resp = request.send().await.expect("scrape");
            assert_eq!(resp.status(), 200);
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (ty, coding, vary) = (
                header("content-type"),
                header("content-encoding"),
                header("vary"),
            );
            let body = resp.bytes().await.expect("body").to_vec();
            assert_eq!(coding, encoding, "content-encoding for {accept}");
            assert_eq!(vary, "Accept, Accept-Encoding");
            let plain = if encoding == "gzip" {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .expect("a whole gzip stream");
                plain
            } else {
                body.clone()
            };
            (ty, body.len(), plain)
        }
    };
    let (ty, plain_len, plain) = fetch("text/plain;version=0.0.4", "").await;
    assert_eq!(ty, "text/plain; version=0.0.4; charset=utf-8");
    let text = Scrape::parse(&String::from_utf8(plain).expect("utf-8"));
    let (_, gzip_len, gzip) = fetch("text/plain;version=0.0.4", "gzip").await;
    let gzip_text = Scrape::parse(&String::from_utf8(gzip).expect("utf-8"));
    // OpenMetrics (what Prometheus asks for by default): the same samples,
    // some with an exemplar after them, then `# EOF`.
    let (ty, _, om) = fetch("application/openmetrics-text;version=1.0.0", "gzip").await;
    assert_eq!(
        ty,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = String::from_utf8(om).expect("utf-8");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains(" # {log_id=\""), "no exemplars in OpenMetrics");
    let om_exemplars: std::collections::BTreeSet<String> = om
        .lines()
        .filter(|l| l.starts_with("talkover_webhook_delivery_attempts_total"))
        .filter_map(|l| {
            l.split("log_id=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert!(!om_exemplars.is_empty());
    let om_text: String = om
        .lines()
        .map(|l| l.split(" # ").next().unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let om = Scrape::parse(&om_text);
    let (ty, _, proto) = fetch(PROTOBUF, "").await;
    assert!(ty.starts_with("application/vnd.google.protobuf"), "{ty}");
    // The same exemplars travel in protobuf, for a Prometheus that reads
    // native histograms and exemplars together.
    let proto_exemplars: std::collections::BTreeSet<String> = {
        use prost::Message as _;
        let mut body = &proto[..];
        let mut ids = std::collections::BTreeSet::new();
        while !body.is_empty() {
            let family = talkover_exporter::proto::MetricFamily::decode_length_delimited(&mut body)
                .expect("a family");
            if family.name == "talkover_webhook_delivery_attempts_total" {
                ids.extend(
                    family
                        .metric
                        .iter()
                        .filter_map(|m| m.counter.as_ref()?.exemplar.as_ref())
                        .flat_map(|e| e.label.iter().map(|l| l.value.clone())),
                );
            }
        }
        ids
    };
    assert_eq!(
        proto_exemplars, om_exemplars,
        "protobuf and OpenMetrics exemplars"
    );
    let (proto, native) = Scrape::from_protobuf(&proto);
    let (_, _, gzip_proto) = fetch(PROTOBUF, "gzip").await;
    let (gzip_proto, gzip_native) = Scrape::from_protobuf(&gzip_proto);

    // Traffic has stopped: every webhook series is the same in each.
    let webhook_series = |s: &Scrape| {
        let mut v: Vec<String> = s
            .series
            .iter()
            .filter(|(name, _, _)| name.starts_with("talkover_webhook_"))
            .map(|(name, labels, value)| format!("{name}{labels:?} {value}"))
            .collect();
        v.sort();
        v
    };
    let expected = webhook_series(&text);
    assert!(expected.len() > 50, "a scrape with some series");
    assert_eq!(webhook_series(&gzip_text), expected, "gzip text");
    assert_eq!(webhook_series(&om), expected, "OpenMetrics");
    assert!(
        !text.raw.contains("log_id"),
        "exemplars only in OpenMetrics"
    );
    assert_eq!(webhook_series(&proto), expected, "protobuf");
    assert_eq!(webhook_series(&gzip_proto), expected, "gzip protobuf");
    assert_eq!(native.len(), gzip_native.len());
    assert!(
        gzip_len * 5 < plain_len,
        "gzip {gzip_len} bytes for {plain_len} plain"
    );

    // Native buckets: every observation, and in agreement with the classic
    // buckets: what a native bucket holds lies in (lower, upper].
    let histograms = native
        .iter()
        .filter(|h| h.name.starts_with("talkover_webhook_"))
        .collect::<Vec<_>>();
    assert!(
        histograms.len() >= 4,
        "{} native histograms",
        histograms.len()
    );
    for h in histograms {
        assert_eq!(h.schema, 3);
        assert!(h.zero_threshold > 0.0);
        let in_buckets: u64 = h.zero_count + h.buckets.iter().map(|b| b.1).sum::<u64>();
        assert_eq!(in_buckets, h.count, "{} {:?}", h.name, h.labels);
        let classic = |le: &str| {
            let mut want: Vec<(&str, &str)> = h
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            want.push(("le", le));
            text.sum(&format!("{}_bucket", h.name), &want)
        };
        let bounds: Vec<String> = text
            .series
            .iter()
            .filter(|(n, l, _)| {
                *n == format!("{}_bucket", h.name)
                    && h.labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .filter_map(|(_, l, _)| l.get("le").cloned())
            .filter(|le| le != "+Inf")
            .collect();
        assert!(!bounds.is_empty());
        for le in bounds {
            let b: f64 = le.parse().expect("a bound");
            let surely_below: u64 = h
                .buckets
                .iter()
                .filter(|(i, _)| bucket_upper_bound(*i) <= b)
                .map(|x| x.1)
                .sum::<u64>()
                + h.zero_count;
            let maybe_below: u64 = h
                .buckets
                .iter()
                .filter(|(i, _)| bucket_upper_bound(*i - 1) < b)
                .map(|x| x.1)
                .sum::<u64>()
                + h.zero_count;
            let c = classic(&le) as u64;
            assert!(
                surely_below <= c && c <= maybe_below,
                "{} {:?} le={le}: classic {c}, native between {surely_below} and {maybe_below}",
                h.name,
                h.labels
            );
        }
    }

    // Without Accept-Encoding: plain text.
    let resp = http
        .get(exporter.url("/metrics"))
        .send()
        .await
        .expect("plain scrape");
    assert!(resp.headers().get("content-encoding").is_none());
    exporter.stop().await;
}

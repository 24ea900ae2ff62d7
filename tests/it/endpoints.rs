//! The HTTP surface: landing page, health, readiness, and /metrics judged by promtool.

use std::process::{Command, Stdio};
use std::time::Duration;

use talkover_exporter::sim::{Fault, FaultRule, Order};
use tokio::io::AsyncWriteExt;

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

/// Not ready until every target finished its first poll; healthy all along;
/// the landing page links to the rest.
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
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(landing.contains(link), "landing page lacks {link}");
    }
    exporter.wait_ready().await;
    exporter.stop().await;
}

/// `promtool check metrics` finds no problem in a scrape full of traffic.
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

/// Poll self-metrics: one poll-duration histogram for the whole exporter,
/// and per webhook a poll count (requests per poll are then a division)
/// and the last poll's duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_self_metrics() {
    let s = start_sim(33, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
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
    assert!(!histogram_counts[0].1.contains_key("webhook_id"));
    let mut polls = 0.0;
    for t in s.sim.targets() {
        let n = scrape.target_value("talkover_exporter_polls_total", &t, &[]);
        let requests = scrape.target_value("talkover_exporter_api_requests_total", &t, &[]);
        assert!(n >= 2.0, "{t}: {n} polls in 500 ms at a 100 ms interval");
        // Idle webhooks: one request per poll, the baseline poll included.
        assert_eq!(requests, n, "{t}: requests per poll");
        let last = scrape.target_value("talkover_exporter_last_poll_duration_seconds", &t, &[]);
        assert!(last > 0.0 && last < 2.0, "{t}: last poll took {last} s");
        polls += n;
    }
    // Observed as a poll ends, published with the state just after.
    assert!(
        histogram_counts[0].2 >= polls,
        "{} < {polls}",
        histogram_counts[0].2
    );
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

/// A scraper that accepts gzip (as Prometheus does) gets a gzip body that
/// decodes to exactly the samples of a plain scrape, in a fraction of the
/// bytes (under a fifth for these two webhooks, whose body is mostly the
/// same help text; a few percent at scale: README, "Scrape size"); one
/// that does not accept gzip gets plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_scrape_has_the_samples_of_a_plain_scrape() {
    use std::io::Read as _;
    let s = start_sim(33, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 300);
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;

    let http = reqwest::Client::new();
    let resp = http
        .get(exporter.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("gzip scrape");
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-encoding"), "gzip");
    assert_eq!(header("vary"), "Accept-Encoding");
    let compressed = resp.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("a whole gzip stream");
    let plain = exporter.scrape().await;
    let gzipped = Scrape::parse(&text);
    // Traffic has stopped: every webhook series is the same in both.
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
    let expected = webhook_series(&plain);
    assert!(expected.len() > 50, "a scrape with some series");
    assert_eq!(webhook_series(&gzipped), expected);
    assert!(
        compressed.len() * 5 < plain.raw.len(),
        "gzip {} bytes for {} plain",
        compressed.len(),
        plain.raw.len()
    );
    // Without Accept-Encoding: plain text.
    let resp = http
        .get(exporter.url("/metrics"))
        .send()
        .await
        .expect("plain scrape");
    assert!(resp.headers().get("content-encoding").is_none());
    exporter.stop().await;
}

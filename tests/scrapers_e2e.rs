//! Compatibility: the real `talkover-exporter --demo` binary scraped by every
//! server people run, one case per server and configuration:
//!
//! | case | negotiated | histograms stored |
//! |---|---|---|
//! | Prometheus 2.42, defaults | OpenMetrics | classic |
//! | Prometheus 2.42, `--enable-feature=native-histograms` | protobuf | classic |
//! | Prometheus 3.5, defaults | OpenMetrics | classic |
//! | Prometheus 3.5, `--enable-feature=created-timestamp-zero-ingestion` | protobuf | classic |
//! | Prometheus 3.5, `scrape_protocols: [PrometheusProto]` | protobuf | classic |
//! | Prometheus 3.5, `--enable-feature=native-histograms` | protobuf | classic |
//! | the same, exporter with `--collector.native-histograms` | protobuf | native |
//! | Prometheus 3.5, `PrometheusText1.0.0`, legacy names, `underscores` escaping | text 1.0.0, `escaping=underscores` | classic |
//! | VictoriaMetrics, its own scraper | text | classic |
//! | vmalert evaluating `rules.yml` against VictoriaMetrics | — | — |
//!
//! In each case: the format the exporter counted
//! (`talkover_exporter_http_scrapes_total{format}`) is the one in the table;
//! every `talkover_webhook_*` family with samples in a plain-text scrape is
//! stored, each histogram as the kind in the table and not the other; on a
//! server that evaluates the rules, every rule of
//! `dashboards/prometheus/rules.yml` is healthy and the p95 recording has a
//! value for every webhook whose attempts increase. vmalert also loads the
//! rules with `-dryRun`, and refuses a rule it cannot run (the check can
//! fail).
//!
//! Needs Debian's `prometheus` on PATH, and Prometheus 3.5, VictoriaMetrics
//! and vmalert in `target/test-tools` (the test command unpacks them
//! there); a case fails, rather than skips, without them.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::{
    free_ports, get_text, http_client, prometheus_on_path, shipped_rules_path,
    spawn_demo_exporter_with, spawn_prometheus_with, unstable_tool, wait_for, yaml_quote,
    ChildGuard, Prom, Scrape, ATTEMPTS,
};

/// How long a server gets to show each thing it must.
const LIMIT: Duration = Duration::from_secs(60);

/// Every optional family on: each must arrive whole too.
const FAMILIES_ON: [&str; 2] = ["--collector.lag", "--collector.poll-stats"];

const P95: &str = "talkover_webhook:delivery_duration_seconds:p95_rate5m";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `_bucket`, `_sum` and `_count` series.
    Classic,
    /// One series per histogram, holding native buckets.
    Native,
}

/// A Prometheus case: its binary, flags, what its scrape config adds, and
/// what the exporter and the server must show.
struct Case<'a> {
    prometheus: PathBuf,
    flags: &'a [&'a str],
    scrape_config: &'a str,
    exporter_flags: &'a [&'a str],
    format: &'a str,
    kind: Kind,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_2_42_defaults() {
    prometheus_case(Case {
        prometheus: prometheus_on_path(),
        flags: &[],
        scrape_config: "",
        exporter_flags: &[],
        format: "openmetrics",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_2_42_native_histograms() {
    prometheus_case(Case {
        prometheus: prometheus_on_path(),
        flags: &["--enable-feature=native-histograms"],
        scrape_config: "",
        exporter_flags: &[],
        format: "protobuf",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_defaults() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &[],
        scrape_config: "",
        exporter_flags: &[],
        format: "openmetrics",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_created_timestamp_zero_ingestion() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &["--enable-feature=created-timestamp-zero-ingestion"],
        scrape_config: "",
        exporter_flags: &[],
        format: "protobuf",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_protobuf_scrape_protocol() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &[],
        scrape_config: "    scrape_protocols: [PrometheusProto]\n",
        exporter_flags: &[],
        format: "protobuf",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_native_histograms() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &["--enable-feature=native-histograms"],
        scrape_config: "",
        exporter_flags: &[],
        format: "protobuf",
        kind: Kind::Classic,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_native_histograms_asked_of_the_exporter() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &["--enable-feature=native-histograms"],
        scrape_config: "",
        exporter_flags: &["--collector.native-histograms"],
        format: "protobuf",
        kind: Kind::Native,
    })
    .await;
}

/// The 1.0.0 text format with the escaping a legacy-validating server asks
/// for: Prometheus 3 takes the answer only if its `Content-Type` is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_text_1_0_0_legacy_names() {
    prometheus_case(Case {
        prometheus: unstable_tool("prometheus"),
        flags: &[],
        scrape_config: "    scrape_protocols: [PrometheusText1.0.0]\n    \
                        metric_name_validation_scheme: legacy\n    \
                        metric_name_escaping_scheme: underscores\n",
        exporter_flags: &[],
        format: "text",
        kind: Kind::Classic,
    })
    .await;
}

async fn prometheus_case(case: Case<'_>) {
    let tmp = tempfile::Builder::new()
        .prefix("talkover-scrapers-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let [exporter_port, sim_port, prom_port] = free_ports::<3>();
    let flags: Vec<&str> = FAMILIES_ON
        .iter()
        .chain(case.exporter_flags)
        .copied()
        .collect();
    let mut exporter = spawn_demo_exporter_with(exporter_port, sim_port, dir, &flags);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: talkover\n{extra}    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n",
        rules = yaml_quote(&shipped_rules_path().to_string_lossy()),
        extra = case.scrape_config,
    );
    let data = dir.join("data");
    let mut prometheus =
        spawn_prometheus_with(&case.prometheus, config, dir, &data, prom_port, case.flags);
    let prom = Prom {
        http: http_client(),
        base: format!("http://127.0.0.1:{prom_port}"),
    };
    wait_for("Prometheus to scrape the exporter", LIMIT, || async {
        prom.scalar(r#"up{job="talkover"}"#).await == Some(1.0)
    })
    .await;
    exporter.assert_running();
    prometheus.assert_running();
    let families = families_with_samples(exporter_port).await;
    families_are_stored(&prom, &families, case.kind).await;
    rules_are_healthy(&prom, "/api/v1/rules").await;
    p95_for_every_webhook_with_attempts(&prom).await;
    negotiated(exporter_port, case.format).await;
    prometheus.assert_running();
    exporter.assert_running();
}

/// VictoriaMetrics scrapes the exporter itself, with its own parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_own_scraper() {
    let tmp = tempfile::Builder::new()
        .prefix("talkover-scrapers-vm-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let [exporter_port, sim_port, vm_port] = free_ports::<3>();
    let mut exporter = spawn_demo_exporter_with(exporter_port, sim_port, dir, &FAMILIES_ON);
    let (mut vm, vm_api) = spawn_victoria_metrics(dir, vm_port, Some(exporter_port));
    wait_for("VictoriaMetrics to scrape the exporter", LIMIT, || async {
        vm_api.scalar(r#"up{job="talkover"}"#).await == Some(1.0)
    })
    .await;
    let families = families_with_samples(exporter_port).await;
    families_are_stored(&vm_api, &families, Kind::Classic).await;
    // Scraped a few times more: what it negotiates is then plain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    negotiated(exporter_port, "text").await;
    vm.assert_running();
    exporter.assert_running();
}

/// vmalert loads the shipped rules with `-dryRun` (and refuses one it
/// cannot run), then evaluates them for real against VictoriaMetrics: every
/// rule healthy, and the p95 it records has a value for every webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmalert_loads_and_evaluates_the_rules() {
    let vmalert = unstable_tool("vmalert");
    let tmp = tempfile::Builder::new()
        .prefix("talkover-scrapers-vmalert-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let rules = shipped_rules_path();
    let dry = |path: &Path| {
        Command::new(&vmalert)
            .arg("-dryRun")
            .arg("-loggerLevel=ERROR")
            .arg(format!("-rule={}", path.display()))
            .output()
            .expect("run vmalert")
    };
    let out = dry(&rules);
    assert!(
        out.status.success(),
        "vmalert -dryRun refused rules.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a native-histogram function MetricsQL lacks.
    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        "groups:\n  - name: broken\n    rules:\n      - record: x:count\n        \
         expr: histogram_count(rate(talkover_webhook_delivery_duration_seconds[5m]))\n",
    )
    .expect("write broken rules");
    let out = dry(&broken);
    assert!(
        !out.status.success(),
        "vmalert -dryRun took a rule with histogram_count"
    );

    let [exporter_port, sim_port, vm_port, vmalert_port] = free_ports::<4>();
    let mut exporter = spawn_demo_exporter_with(exporter_port, sim_port, dir, &FAMILIES_ON);
    let (mut vm, vm_api) = spawn_victoria_metrics(dir, vm_port, Some(exporter_port));
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    let mut cmd = Command::new(&vmalert);
    cmd.arg(format!("-rule={}", rules.display()))
        .arg(format!("-datasource.url={vm_url}"))
        .arg(format!("-remoteWrite.url={vm_url}"))
        .arg("-remoteWrite.flushInterval=1s")
        .arg("-notifier.blackhole")
        .arg("-evaluationInterval=2s")
        .arg(format!("-httpListenAddr=127.0.0.1:{vmalert_port}"));
    let mut vmalert_child = ChildGuard::spawn("vmalert", &mut cmd, dir.join("vmalert.log"));
    let vmalert_api = Prom {
        http: http_client(),
        base: format!("http://127.0.0.1:{vmalert_port}"),
    };
    wait_for("VictoriaMetrics to scrape the exporter", LIMIT, || async {
        vm_api.scalar(r#"up{job="talkover"}"#).await == Some(1.0)
    })
    .await;
    rules_are_healthy(&vmalert_api, "/api/v1/rules").await;
    p95_for_every_webhook_with_attempts(&vm_api).await;
    vmalert_child.assert_running();
    vm.assert_running();
    exporter.assert_running();
}

/// VictoriaMetrics on `port`, scraping the exporter on `scrape` every
/// second; queries see data a second old (not the default 30 s).
fn spawn_victoria_metrics(dir: &Path, port: u16, scrape: Option<u16>) -> (ChildGuard, Prom) {
    let config = dir.join("scrape.yml");
    let targets = scrape.map_or(String::new(), |p| {
        format!(
            "scrape_configs:\n  - job_name: talkover\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"
        )
    });
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n{targets}"),
    )
    .expect("write scrape config");
    let mut cmd = Command::new(unstable_tool("victoria-metrics"));
    cmd.arg(format!(
        "-storageDataPath={}",
        dir.join("vm-data").display()
    ))
    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
    .arg(format!("-promscrape.config={}", config.display()))
    .arg("-search.latencyOffset=1s")
    .arg("-loggerLevel=WARN");
    let child = ChildGuard::spawn("victoria-metrics", &mut cmd, dir.join("vm.log"));
    let api = Prom {
        http: http_client(),
        base: format!("http://127.0.0.1:{port}"),
    };
    (child, api)
}

/// Each `talkover_webhook_*` family with samples in a plain-text scrape,
/// and whether it is a histogram.
async fn families_with_samples(exporter_port: u16) -> Vec<(String, bool)> {
    let http = http_client();
    let text = get_text(&http, &format!("http://127.0.0.1:{exporter_port}/metrics"))
        .await
        .expect("a text scrape");
    let scrape = Scrape::parse(&text);
    let families: Vec<(String, bool)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE talkover_webhook_"))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (format!("talkover_webhook_{name}"), kind == "histogram"))
        .filter(|(name, histogram)| {
            let sample = if *histogram {
                format!("{name}_count")
            } else {
                name.clone()
            };
            scrape.series.iter().any(|(n, _, _)| *n == sample)
        })
        .collect();
    // Counters, gauges and each kind of histogram of the demo.
    for wanted in [
        ATTEMPTS,
        "talkover_webhook_delivery_duration_seconds",
        "talkover_webhook_delivery_attempt_number",
        "talkover_webhook_delivery_lag_seconds",
        "talkover_webhook_max_retries",
    ] {
        assert!(
            families.iter().any(|(n, _)| n == wanted),
            "{wanted} has no samples in the exporter's scrape: {families:?}"
        );
    }
    families
}

/// Every family is stored, each histogram as `kind` and not the other.
async fn families_are_stored(server: &Prom, families: &[(String, bool)], kind: Kind) {
    for (name, histogram) in families {
        let (stored, absent) = match (histogram, kind) {
            (false, _) => (name.clone(), None),
            (true, Kind::Classic) => (format!("{name}_bucket"), Some(name.clone())),
            (true, Kind::Native) => (name.clone(), Some(format!("{name}_bucket"))),
        };
        let what = format!("{} to store {stored}", server.base);
        wait_for(&what, LIMIT, || async {
            server
                .scalar(&format!("count({stored})"))
                .await
                .is_some_and(|n| n > 0.0)
        })
        .await;
        if let Some(absent) = absent {
            let rows = server
                .query(&format!("count({absent})"))
                .await
                .expect("a query");
            assert!(
                rows.is_empty(),
                "{}: {absent} stored beside {stored}: {rows:?}",
                server.base
            );
        }
    }
    eprintln!(
        "{}: {} families stored, histograms {kind:?}",
        server.base,
        families.len()
    );
}

/// The exporter served the scraper in `format` (three scrapes of it at
/// least) and in no other: the test's own plain-text scrapes count as
/// `text`.
async fn negotiated(exporter_port: u16, format: &str) {
    let http = http_client();
    let url = format!("http://127.0.0.1:{exporter_port}/metrics");
    let counts = || async {
        let text = get_text(&http, &url).await.unwrap_or_default();
        let scrape = Scrape::parse(&text);
        ["text", "openmetrics", "protobuf"]
            .map(|f| scrape.sum("talkover_exporter_http_scrapes_total", &[("format", f)]))
    };
    let index = ["text", "openmetrics", "protobuf"]
        .iter()
        .position(|f| *f == format)
        .expect("a known format");
    wait_for(&format!("three {format} scrapes"), LIMIT, || async {
        counts().await[index] >= 3.0
    })
    .await;
    let seen = counts().await;
    for (i, other) in ["text", "openmetrics", "protobuf"].iter().enumerate() {
        if i != index && i != 0 {
            assert_eq!(seen[i], 0.0, "{other} scrapes, {format} expected: {seen:?}");
        }
    }
}

/// Every rule of every group has been evaluated and is healthy.
async fn rules_are_healthy(server: &Prom, path: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let data = server.get_json(path, &[]).await.unwrap_or_default();
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let unhealthy: Vec<Value> = rules
            .iter()
            .filter(|r| r["health"] != "ok" || !r["lastError"].as_str().unwrap_or("").is_empty())
            .map(|r| serde_json::json!([r["name"], r["health"], r["lastError"]]))
            .collect();
        if rules.len() > 20 && unhealthy.is_empty() {
            eprintln!("{}: {} rules healthy", server.base, rules.len());
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}{path}: {} rules, not healthy: {unhealthy:?}",
            server.base,
            rules.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The p95 recording has a value for every webhook whose attempts rise.
async fn p95_for_every_webhook_with_attempts(server: &Prom) {
    let webhooks = |rows: Vec<(std::collections::BTreeMap<String, String>, f64)>| {
        rows.into_iter()
            .filter_map(|(l, _)| l.get("webhook_id").cloned())
            .collect::<BTreeSet<_>>()
    };
    let what = format!("{}: a p95 for every webhook with attempts", server.base);
    wait_for(&what, LIMIT, || async {
        let busy = server
            .query(&format!(
                "sum by (campaign_id, agent_id, webhook_id) (rate({ATTEMPTS}[5m])) > 0"
            ))
            .await
            .map(webhooks)
            .unwrap_or_default();
        let p95 = server.query(P95).await.map(webhooks).unwrap_or_default();
        let ok = busy.len() >= 3 && busy.is_subset(&p95);
        if !ok {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ok
    })
    .await;
}

//! End-to-end: the real `talkover-exporter --demo` binary scraped by a real
//! Prometheus that loads `dashboards/prometheus/rules.yml`.
//!
//! This proves that, against live exporter output:
//! - Prometheus scrapes the exporter and loads every rule in `rules.yml`, and
//!   every rule evaluates without error (health "ok" after an evaluation);
//! - every recording rule produces data;
//! - every query of every panel of `dashboards/talkover-webhooks.json`
//!   (with Grafana's `$__rate_interval` set to 1m and every template variable
//!   set to *All* = `.*`) parses and returns data;
//! - once the simulated traffic stops and every pending attempt is final, the
//!   attempt counters stored by Prometheus equal the exporter's own `/metrics`
//!   exactly, in total and per webhook (no sample lost or double-counted on
//!   the way), and agree with the simulator's ground truth;
//! - Prometheus, with `--enable-feature=exemplar-storage`, scrapes OpenMetrics
//!   and stores the exporter's exemplars: the log ids on the failed attempts
//!   series and on the duration buckets of failures are attempts the
//!   simulator lists as failed;
//! - a second Prometheus, with `--enable-feature=native-histograms`, scrapes
//!   the same exporter (run with `--collector.native-histograms`) in the
//!   protobuf format and stores its histograms as native histograms only: the rules and panel queries return data there
//!   too, and its p95 per webhook agrees with the classic buckets' within
//!   their resolution.
//!
//! All of it on Debian's Prometheus 2.42 and on Prometheus 3.5 LTS, one
//! test each. Needs `prometheus` on PATH (Debian/Ubuntu: `apt-get install
//! prometheus`) and Prometheus 3.5 in `target/test-tools` (the test command
//! unpacks it there); the test fails, rather than skips, without them.

mod queries;
#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use queries::*;
use support::{
    free_ports, get_text, http_client, post, prometheus_on_path, shipped_rules_path,
    spawn_demo_exporter_with, spawn_prometheus_with, unstable_tool, yaml_quote, Key, Prom,
    ATTEMPTS,
};
use talkover_count::model::DURATION_BUCKETS;

/// How long the demo traffic runs before the queries, so that `rate(…[1m])`
/// and `rate(…[5m])` have many samples per series.
const TRAFFIC: Duration = Duration::from_secs(25);

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "talkover-prometheus-e2e-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn post_ok(http: &reqwest::Client, url: &str) {
    post(http, url, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn fmt_counts(counts: &BTreeMap<Key, f64>) -> String {
    counts
        .iter()
        .map(|((c, a, w), v)| format!("  campaign_id={c:?} agent_id={a:?} webhook_id={w:?}: {v}\n"))
        .collect()
}

/// See the file's documentation: Debian's Prometheus 2.42.
#[tokio::test]
async fn prometheus_2_42_scrapes_exporter_rules_and_dashboard_queries_have_data() {
    prometheus_scrapes_exporter_rules_and_dashboard_queries_have_data(prometheus_on_path()).await;
}

/// The same with Prometheus 3.5 LTS.
#[tokio::test]
async fn prometheus_3_5_scrapes_exporter_rules_and_dashboard_queries_have_data() {
    prometheus_scrapes_exporter_rules_and_dashboard_queries_have_data(unstable_tool("prometheus"))
        .await;
}

async fn prometheus_scrapes_exporter_rules_and_dashboard_queries_have_data(prometheus: PathBuf) {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules_path = shipped_rules_path();
    let dashboard_path = root.join("dashboards/talkover-webhooks.json");
    let rules_yml = std::fs::read_to_string(&rules_path).expect("read rules.yml");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&dashboard_path).expect("read dashboard JSON"),
    )
    .expect("dashboard is JSON");
    let (records, alerts) = rule_names(&rules_yml);
    assert!(!records.is_empty(), "no recording rules found in rules.yml");

    // Dropped last: after both children are dead.
    let tmp = TempDir::new();
    let [exporter_port, sim_port, prom_port, native_port] = free_ports::<4>();
    let exporter_url = format!("http://127.0.0.1:{exporter_port}");
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let prom = Prom {
        http: http_client(),
        base: format!("http://127.0.0.1:{prom_port}"),
    };
    let native = Prom {
        http: http_client(),
        base: format!("http://127.0.0.1:{native_port}"),
    };
    let http = prom.http.clone();

    // -- the exporter, with its in-process simulated Talkover API -----------
    // Every family on: the dashboard has panels for the optional ones.
    let mut exporter = spawn_demo_exporter_with(
        exporter_port,
        sim_port,
        &tmp.0,
        &[
            "--collector.lag",
            "--collector.poll-stats",
            "--collector.native-histograms",
        ],
    );

    // -- Prometheus ----------------------------------------------------------
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: talkover\n    static_configs:\n      - targets: [{}]\n",
        yaml_quote(&rules_path.to_string_lossy()),
        yaml_quote(&format!("127.0.0.1:{exporter_port}")),
    );
    let native_dir = tmp.0.join("native");
    std::fs::create_dir_all(&native_dir).expect("native dir");
    let mut native_child = spawn_prometheus_with(
        &prometheus,
        config.clone(),
        &native_dir,
        &native_dir.join("data"),
        native_port,
        &["--enable-feature=native-histograms"],
    );
    let mut prom_child = spawn_prometheus_with(
        &prometheus,
        config,
        &tmp.0,
        &tmp.0.join("data"),
        prom_port,
        &["--enable-feature=exemplar-storage"],
    );

    // -- wait for: exporter serving, Prometheus ready, target up, traffic ----
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        exporter.assert_running();
        if get_text(&http, &format!("{exporter_url}/metrics"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exporter /metrics not served within 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (p, child) in [(&prom, &mut prom_child), (&native, &mut native_child)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            child.assert_running();
            if get_text(&http, &format!("{}/-/ready", p.base))
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "Prometheus not ready within 30s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for (p, child) in [(&prom, &mut prom_child), (&native, &mut native_child)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            exporter.assert_running();
            child.assert_running();
            let up = p.scalar(r#"up{job="talkover"}"#).await;
            let counted = p.scalar(&format!("sum({ATTEMPTS})")).await;
            if up == Some(1.0) && counted.is_some_and(|n| n > 0.0) {
                break;
            }
            let targets = p.get_json("/api/v1/targets", &[]).await;
            assert!(
                Instant::now() < deadline,
                "within 30s Prometheus {} did not report up{{job=\"talkover\"}} == 1 (got {up:?}) \
                 with counted attempts (sum = {counted:?}); targets: {targets:?}",
                p.base
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "target up and counting after {:.1}s; letting traffic run {}s",
        started.elapsed().as_secs_f64(),
        TRAFFIC.as_secs()
    );
    tokio::time::sleep(TRAFFIC).await;
    exporter.assert_running();
    prom_child.assert_running();
    native_child.assert_running();

    for p in [&prom, &native] {
        rules_and_panels_have_data(p, &records, &alerts, &dashboard).await;
    }
    native_quantiles_agree_with_classic(&prom, &native).await;
    drop(native_child);
    exemplars_point_at_failed_attempts(&prom, &sim_url).await;

    // -- stop traffic, finish pending, let the exporter converge ---------------
    post_ok(&http, &format!("{sim_url}/_sim/pause")).await;
    post_ok(&http, &format!("{sim_url}/_sim/finish-pending")).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // ~3 poll intervals
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut previous: Option<BTreeMap<Key, f64>> = None;
    let exporter_final = loop {
        exporter.assert_running();
        let text = get_text(&http, &format!("{exporter_url}/metrics"))
            .await
            .expect("exporter /metrics");
        let (counts, pending) = exporter_counts(&text);
        if pending == 0.0 && previous.as_ref() == Some(&counts) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "exporter did not converge within 20s of pause + finish-pending: \
             pending gauge sum {pending}, attempts:\n{}",
            fmt_counts(&counts)
        );
        previous = Some(counts);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    let exporter_total: f64 = exporter_final.values().sum();
    assert!(exporter_total > 0.0, "the exporter counted no attempts");

    // -- Prometheus has exactly the exporter's counts -------------------------
    tokio::time::sleep(Duration::from_secs(4)).await; // >= 2 scrapes after convergence
    let by_webhook = format!("sum by (campaign_id, agent_id, webhook_id) ({ATTEMPTS})");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (prom_total, prom_counts) = loop {
        let total = prom.scalar(&format!("sum({ATTEMPTS})")).await;
        let counts: BTreeMap<Key, f64> = prom
            .query(&by_webhook)
            .await
            .expect("per-webhook query")
            .iter()
            .map(|(labels, v)| (key_of(labels), *v))
            .collect();
        let matches = total == Some(exporter_total) && counts == exporter_final;
        // A scrape can lag on a busy machine: give it a few more intervals.
        if matches || Instant::now() >= deadline {
            break (total, counts);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let text = get_text(&http, &format!("{exporter_url}/metrics"))
        .await
        .expect("exporter /metrics");
    assert_eq!(
        exporter_counts(&text).0,
        exporter_final,
        "exporter counters changed after convergence (traffic should be paused)"
    );
    assert!(
        prom_total.is_some_and(|n| n > 0.0),
        "Prometheus sum({ATTEMPTS}) = {prom_total:?}, want > 0"
    );
    assert_eq!(
        prom_total,
        Some(exporter_total),
        "Prometheus sum({ATTEMPTS}) differs from the exporter's /metrics"
    );
    assert_eq!(
        prom_counts,
        exporter_final,
        "per-webhook attempts differ.\nPrometheus:\n{}exporter /metrics:\n{}",
        fmt_counts(&prom_counts),
        fmt_counts(&exporter_final)
    );

    // -- and the exporter agrees with the simulator's ground truth -------------
    // truth(since=0) includes the history the exporter took as its baseline
    // (30 entries per webhook, plus what arrived before the first poll), so
    // the exporter may count up to that many fewer, never more.
    let truth: Value = serde_json::from_str(
        &get_text(&http, &format!("{sim_url}/_sim/truth?since=0"))
            .await
            .expect("simulator truth"),
    )
    .expect("truth is JSON");
    let mut truth_counts: BTreeMap<Key, f64> = BTreeMap::new();
    for (path, rows) in truth.as_object().expect("truth: object") {
        let parts: Vec<&str> = path.split('/').collect();
        let key = match parts.as_slice() {
            ["campaigns", c, "webhooks", w] => (c.to_string(), String::new(), w.to_string()),
            ["agents", a, "webhooks", w] => (String::new(), a.to_string(), w.to_string()),
            _ => panic!("unexpected truth key {path:?}"),
        };
        let n: f64 = rows
            .as_array()
            .expect("truth rows")
            .iter()
            .filter_map(|r| r["count"].as_f64())
            .sum();
        truth_counts.insert(key, n);
    }
    assert_eq!(
        truth_counts.keys().collect::<Vec<_>>(),
        exporter_final.keys().collect::<Vec<_>>(),
        "the exporter and the simulator know different webhooks"
    );
    for (key, &counted) in &exporter_final {
        let truth = truth_counts[key];
        assert!(
            counted <= truth && truth - counted <= 40.0,
            "webhook {key:?}: exporter counted {counted} attempts, the simulator made {truth} \
             final attempts of which at most ~35 were baseline history"
        );
    }

    eprintln!(
        "Prometheus and exporter agree: {exporter_total} attempts over {} webhooks \
         (simulator: {} final attempts, history included); test took {:.1}s",
        exporter_final.len(),
        truth_counts.values().sum::<f64>(),
        started.elapsed().as_secs_f64()
    );
}

/// Every rule of `rules.yml` loaded and healthy in `prom`, and every
/// recording rule and dashboard query returning data there.
async fn rules_and_panels_have_data(
    prom: &Prom,
    records: &[String],
    alerts: &[String],
    dashboard: &Value,
) {
    // -- rules: all loaded, all evaluated, all healthy -------------------------
    let data = prom
        .get_json("/api/v1/rules", &[])
        .await
        .expect("/api/v1/rules");
    let mut loaded = BTreeSet::new();
    let mut unhealthy = Vec::new();
    for group in data["groups"].as_array().expect("rules: groups") {
        for rule in group["rules"].as_array().expect("rules: group rules") {
            let name = rule["name"].as_str().unwrap_or("?").to_string();
            let last = rule["lastEvaluation"].as_str().unwrap_or("");
            if rule["health"] != "ok" || last.is_empty() || last.starts_with("0001-") {
                unhealthy.push(format!(
                    "  {name}: health {} lastEvaluation {last:?} lastError {}",
                    rule["health"], rule["lastError"]
                ));
            }
            loaded.insert(name);
        }
    }
    let expected: BTreeSet<String> = records.iter().chain(alerts).cloned().collect();
    assert_eq!(
        loaded, expected,
        "Prometheus loaded other rules than rules.yml defines"
    );
    assert!(
        unhealthy.is_empty(),
        "rules not evaluated or unhealthy:\n{}",
        unhealthy.join("\n")
    );
    eprintln!(
        "{} recording rules and {} alerts loaded and healthy",
        records.len(),
        alerts.len()
    );

    // -- every recording rule and every dashboard query returns data ----------
    let mut exprs: Vec<(String, String)> = records
        .iter()
        .map(|r| (format!("recording rule {r}"), r.clone()))
        .collect();
    let mut panel_exprs = Vec::new();
    dashboard_exprs(dashboard, "?", &mut panel_exprs);
    assert!(
        !panel_exprs.is_empty(),
        "no panel queries found in the dashboard"
    );
    let n_panel_exprs = panel_exprs.len();
    exprs.extend(
        panel_exprs
            .into_iter()
            .map(|(title, expr)| (format!("panel {title:?}"), substitute_variables(&expr))),
    );
    let mut failures = Vec::new();
    for (what, expr) in &exprs {
        match prom.query(expr).await {
            Err(e) => failures.push(format!("{what}: query failed: {e}\n    {expr}")),
            Ok(rows) if rows.is_empty() => failures.push(format!("{what}: no data\n    {expr}")),
            Ok(rows) if rows.iter().all(|(_, v)| v.is_nan()) => {
                failures.push(format!("{what}: only NaN\n    {expr}"))
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries ({} recording rules, {n_panel_exprs} panel queries) returned no data \
         after {}s of demo traffic:\n{}",
        failures.len(),
        exprs.len(),
        records.len(),
        TRAFFIC.as_secs(),
        failures.join("\n")
    );
    eprintln!(
        "{}: {} recording rules and {n_panel_exprs} panel queries return data",
        prom.base,
        records.len()
    );
}

/// The native Prometheus holds the duration histograms as native
/// histograms only (Prometheus 2.42 ingests one or the other), and the p95
/// per webhook it computes from them lies in the classic bucket the classic
/// Prometheus's p95 lies in, give or take a native bucket's width (9 %).
async fn native_quantiles_agree_with_classic(classic: &Prom, native: &Prom) {
    let name = "talkover_webhook_delivery_duration_seconds";
    let classic_buckets = native
        .query(&format!("count({name}_bucket)"))
        .await
        .expect("count query");
    assert!(
        classic_buckets.is_empty(),
        "the native-histograms Prometheus stored classic buckets: {classic_buckets:?}"
    );
    let native_p95 = native
        .query(&format!(
            "histogram_quantile(0.95, sum by (webhook_id) (rate({name}[5m])))"
        ))
        .await
        .expect("native p95");
    let classic_p95: BTreeMap<String, f64> = classic
        .query(&format!(
            "histogram_quantile(0.95, sum by (webhook_id, le) (rate({name}_bucket[5m])))"
        ))
        .await
        .expect("classic p95")
        .into_iter()
        .filter_map(|(labels, v)| Some((labels.get("webhook_id")?.clone(), v)))
        .collect();
    let mut compared = 0;
    for (labels, n) in &native_p95 {
        let webhook = labels.get("webhook_id").expect("webhook_id");
        let Some(&c) = classic_p95.get(webhook) else {
            continue;
        };
        if !(n.is_finite() && c.is_finite()) {
            continue;
        }
        let upper_at = DURATION_BUCKETS.partition_point(|b| *b < c);
        let upper = DURATION_BUCKETS
            .get(upper_at)
            .copied()
            .unwrap_or(f64::INFINITY);
        let lower = if upper_at == 0 {
            0.0
        } else {
            DURATION_BUCKETS[upper_at - 1]
        };
        assert!(
            *n >= lower / 1.1 && *n <= upper * 1.1,
            "webhook {webhook}: native p95 {n:.4}s outside the classic bucket ({lower}, {upper}] \
             of the classic p95 {c:.4}s"
        );
        compared += 1;
    }
    assert!(
        compared >= 2,
        "compared the p95 of {compared} webhooks; native {native_p95:?}, classic {classic_p95:?}"
    );
    eprintln!("native and classic p95 agree for {compared} webhooks");
}

/// The exemplars Prometheus stored from OpenMetrics scrapes: every log id
/// on a failed attempts series, and on a duration bucket of failures, is an
/// attempt the simulator lists as failed.
async fn exemplars_point_at_failed_attempts(prom: &Prom, sim_url: &str) {
    let failed: Value = serde_json::from_str(
        &get_text(&prom.http, &format!("{sim_url}/_sim/failed"))
            .await
            .expect("simulator failures"),
    )
    .expect("failures are JSON");
    let failed_ids: BTreeSet<String> = failed
        .as_object()
        .expect("failures: object")
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!failed_ids.is_empty(), "the demo made no failed attempts");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for query in [
        r#"talkover_webhook_delivery_attempts_total{status!="success"}"#,
        r#"talkover_webhook_delivery_duration_seconds_bucket{status!="success"}"#,
    ] {
        let data = prom
            .get_json(
                "/api/v1/query_exemplars",
                &[
                    ("query", query),
                    ("start", &(now - 3600).to_string()),
                    ("end", &(now + 3600).to_string()),
                ],
            )
            .await
            .expect("query_exemplars");
        let ids: Vec<String> = data
            .as_array()
            .expect("exemplar series")
            .iter()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["log_id"].as_str().map(str::to_owned))
            .collect();
        assert!(!ids.is_empty(), "no exemplars for {query}: {data}");
        let unknown: Vec<&String> = ids.iter().filter(|id| !failed_ids.contains(*id)).collect();
        assert!(
            unknown.is_empty(),
            "{query}: exemplar log ids the simulator does not list as failed: {unknown:?}"
        );
        eprintln!("{query}: {} exemplars, all failed attempts", ids.len());
    }
}

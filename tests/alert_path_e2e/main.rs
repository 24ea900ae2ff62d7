//! End-to-end alert path: the real `talkover-exporter --demo` binary, a real
//! Prometheus loading the shipped `dashboards/prometheus/rules.yml`, a real
//! Alertmanager, and a webhook receiver run by this test on loopback.
//!
//! The simulator is told to make one webhook
//! (`campaigns/cmp-renewals/webhooks/wh-slack`) fail every attempt and the
//! three others succeed every attempt. This proves that:
//! - `TalkoverWebhookErrorBudgetFastBurn` and
//!   `TalkoverWebhookAllAttemptsFailing` fire in Prometheus, reach
//!   Alertmanager and arrive at the receiver as `firing` notifications;
//! - every alert that arrives carries exactly the labels `alertname`,
//!   `campaign_id`, `webhook_id` plus the labels its rule sets (`severity`),
//!   and the annotations its rule defines, rendered (no template left, no
//!   `<no value>`), each naming the webhook and its campaign;
//! - the healthy webhooks raise nothing: no alert for them arrives, none is
//!   active in Alertmanager, and none was ever pending or firing in
//!   Prometheus (`ALERTS`); no exporter-level alert fires either;
//! - once the webhook succeeds again, `TalkoverWebhookAllAttemptsFailing`
//!   arrives as `resolved`.
//!
//! The shipped `for:` durations (2m to 15m) are too long for a test, so the
//! rules are run through the documented knob
//! `dashboards/prometheus/scale-for.py` (every `for:` divided by
//! [`FOR_FACTOR`]) into a temporary file; the test checks that the derived
//! file differs from `rules.yml` in nothing but those durations, and that
//! Prometheus loaded them. Windows (`[15m]`), thresholds, labels and
//! annotations are the shipped ones.
//!
//! Before Prometheus starts, every webhook gets a first counted attempt
//! under the test's success ratios, then traffic is paused and every
//! pending attempt is finished and counted, so what came before is in each
//! series' first sample, which `rate()` and `increase()` cannot see: the
//! rules see only traffic under the test's success ratios. (The demo's
//! history is from before the start and is never counted.)
//!
//! All of it with Debian's Prometheus 2.42 and with Prometheus 3.5 LTS (from
//! `target/test-tools`, where the test command unpacks it), one test each.
//!
//! Needs `prometheus` (Debian/Ubuntu package `prometheus`), Alertmanager
//! (package `prometheus-alertmanager`, binary `prometheus-alertmanager`; an
//! upstream `alertmanager` binary on PATH works too) and `python3` on PATH;
//! the test fails, rather than skips, without them.

#[path = "../support/mod.rs"]
mod support;

mod plumbing;
mod receiver;
mod rules;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use serde_json::Value;

use support::{
    find_on_path, free_ports, http_client, prometheus_on_path, shipped_rules_path,
    spawn_demo_exporter, spawn_prometheus, unstable_tool, yaml_quote, ChildGuard, ATTEMPTS,
};

use plumbing::*;
use receiver::*;
use rules::*;

/// Every `for:` of the shipped rules is divided by this (`for: 2m` -> `6s`,
/// `for: 10m` -> `30s`).
const FOR_FACTOR: u32 = 20;
/// The webhook the simulator makes fail every attempt.
const FAILING: &str = "campaigns/cmp-renewals/webhooks/wh-slack";
const FAILING_CAMPAIGN: &str = "cmp-renewals";
const FAILING_WEBHOOK: &str = "wh-slack";
/// The demo's other webhooks, made to succeed every attempt.
const HEALTHY: [&str; 3] = [
    "campaigns/cmp-renewals/webhooks/wh-crm",
    "campaigns/cmp-winback/webhooks/wh-crm",
    "agents/agt-frontdesk/webhooks/wh-helpdesk",
];
/// Alerts that must arrive at the receiver for the failing webhook.
const REQUIRED: [&str; 2] = [
    "TalkoverWebhookErrorBudgetFastBurn",
    "TalkoverWebhookAllAttemptsFailing",
];
/// The alert whose resolution must arrive once the webhook recovers.
const RESOLVES: &str = "TalkoverWebhookAllAttemptsFailing";
/// Name of the Alertmanager receiver.
const RECEIVER: &str = "talkover-test";
/// After the required alerts arrived: time for any other (unexpected)
/// notification to arrive too before the negative checks.
const GRACE: Duration = Duration::from_secs(6);

/// See the file's documentation: Debian's Prometheus 2.42.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_2_42_failing_webhook_alert_reaches_the_receiver() {
    failing_webhook_alert_reaches_alertmanager_receiver_and_healthy_webhooks_stay_silent(
        prometheus_on_path(),
    )
    .await;
}

/// The same with Prometheus 3.5 LTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_5_failing_webhook_alert_reaches_the_receiver() {
    failing_webhook_alert_reaches_alertmanager_receiver_and_healthy_webhooks_stay_silent(
        unstable_tool("prometheus"),
    )
    .await;
}

async fn failing_webhook_alert_reaches_alertmanager_receiver_and_healthy_webhooks_stay_silent(
    prometheus: std::path::PathBuf,
) {
    let started = Instant::now();
    let alertmanager = find_on_path("alertmanager")
        .or_else(|| find_on_path("prometheus-alertmanager"))
        .unwrap_or_else(|| {
            panic!(
                "neither `alertmanager` nor `prometheus-alertmanager` is on PATH: this end-to-end \
                 test needs a real Alertmanager. Install Debian's package: \
                 `apt-get install prometheus-alertmanager` (binary /usr/bin/prometheus-alertmanager)"
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules_path = shipped_rules_path();
    let (derived_rules, rules) = derive_rules(root, &rules_path);

    // Dropped last: after every child is dead.
    let tmp = tempfile::Builder::new()
        .prefix("talkover-alert-path-e2e-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let derived_path = dir.join("rules-for-divided.yml");
    std::fs::write(&derived_path, derived_rules).expect("write derived rules");

    let [exporter_port, sim_port, prom_port, am_port] = free_ports::<4>();
    let exporter_url = format!("http://127.0.0.1:{exporter_port}");
    let sim = format!("http://127.0.0.1:{sim_port}");
    let prom = format!("http://127.0.0.1:{prom_port}");
    let am = format!("http://127.0.0.1:{am_port}");
    let http = Http {
        client: http_client(),
    };

    // -- the exporter and its simulated API; fix the traffic before counting --
    let mut exporter = spawn_demo_exporter(exporter_port, sim_port, dir);
    wait_until(
        "simulator accepts /_sim/resume",
        Duration::from_secs(30),
        &mut [&mut exporter],
        || async { http.post(&format!("{sim}/_sim/resume"), None).await },
    )
    .await;
    for target in HEALTHY {
        http.set_success_ratio(&sim, target, 1.0).await;
    }
    http.set_success_ratio(&sim, FAILING, 0.0).await;
    let ready = format!("{exporter_url}/-/ready");
    let what = "exporter ready (first poll of every webhook)";
    wait_ready(&http, what, &ready, &mut [&mut exporter]).await;
    // The demo's history is not counted: let every webhook have a series
    // (made after the start, under the test's ratios) before pausing.
    wait_until(
        "every webhook has counted attempts",
        Duration::from_secs(30),
        &mut [&mut exporter],
        || async {
            let text = http.text(&format!("{exporter_url}/metrics")).await?;
            let (counts, _) = exporter_counts(&text);
            let with_attempts = counts.values().filter(|v| **v > 0.0).count();
            if with_attempts == 1 + HEALTHY.len() {
                Ok(())
            } else {
                Err(format!("attempts {counts:?}"))
            }
        },
    )
    .await;
    http.post(&format!("{sim}/_sim/pause"), None)
        .await
        .expect("pause");
    http.post(&format!("{sim}/_sim/finish-pending"), None)
        .await
        .expect("finish-pending");
    // Converged: nothing pending and the counts stable over two polls.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut previous = None;
    loop {
        exporter.assert_running();
        let text = http
            .text(&format!("{exporter_url}/metrics"))
            .await
            .expect("exporter /metrics");
        let (counts, pending) = exporter_counts(&text);
        if pending == 0.0 && previous.as_ref() == Some(&counts) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter did not count every attempt made before the test's traffic within \
             30s of pause + finish-pending: pending {pending}, attempts {counts:?}"
        );
        previous = Some(counts);
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    // -- the receiver, Alertmanager, Prometheus --------------------------------
    let inbox = Inbox {
        since: Arc::new(Mutex::new(Instant::now())),
        received: Arc::new(Mutex::new(Vec::new())),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let receiver_url = format!(
        "http://{}/alerts",
        listener.local_addr().expect("receiver address")
    );
    let app = Router::new()
        .route("/alerts", post(receive))
        .with_state(inbox.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let am_config = format!(
        "route:\n  receiver: {RECEIVER}\n  group_by: [alertname, campaign_id, agent_id, webhook_id]\n  \
         group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: {RECEIVER}\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
        yaml_quote(&receiver_url)
    );
    let am_config_path = dir.join("alertmanager.yml");
    std::fs::write(&am_config_path, am_config).expect("write alertmanager.yml");
    let mut am_cmd = Command::new(&alertmanager);
    am_cmd
        .arg(format!("--config.file={}", am_config_path.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=");
    let mut am_child = ChildGuard::spawn("alertmanager", &mut am_cmd, dir.join("alertmanager.log"));
    let ready = format!("{am}/-/ready");
    wait_ready(&http, "Alertmanager ready", &ready, &mut [&mut am_child]).await;

    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         alerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs:\n        - targets: [{}]\n\
         scrape_configs:\n  - job_name: talkover\n    static_configs:\n      - targets: [{}]\n",
        yaml_quote(&derived_path.to_string_lossy()),
        yaml_quote(&format!("127.0.0.1:{am_port}")),
        yaml_quote(&format!("127.0.0.1:{exporter_port}")),
    );
    let mut prom_child = spawn_prometheus(
        &prometheus,
        prom_config,
        dir,
        &dir.join("prom-data"),
        prom_port,
    );
    wait_until(
        "Prometheus scrapes the exporter and knows the Alertmanager",
        Duration::from_secs(40),
        &mut [&mut exporter, &mut am_child, &mut prom_child],
        || async {
            let up = http.query(&prom, r#"up{job="talkover"} == 1"#).await?;
            let counted = http.query(&prom, &format!("sum({ATTEMPTS}) > 0")).await?;
            let ams = http.prom(&format!("{prom}/api/v1/alertmanagers")).await?;
            let known = ams["activeAlertmanagers"].as_array().is_some_and(|a| {
                a.iter().any(|m| {
                    m["url"]
                        .as_str()
                        .is_some_and(|u| u.contains(&format!(":{am_port}/")))
                })
            });
            if up.len() == 1 && counted.len() == 1 && known {
                Ok(())
            } else {
                Err(format!(
                    "up {up:?}, attempts {counted:?}, alertmanagers {ams}"
                ))
            }
        },
    )
    .await;
    // The derived `for:` durations are what Prometheus runs.
    let loaded = http
        .prom(&format!("{prom}/api/v1/rules?type=alert"))
        .await
        .expect("/api/v1/rules");
    let mut durations = BTreeMap::new();
    for group in loaded["groups"].as_array().expect("rules: groups") {
        for rule in group["rules"].as_array().expect("rules: group rules") {
            durations.insert(
                rule["name"].as_str().unwrap_or("?").to_string(),
                rule["duration"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let want: BTreeMap<String, f64> = rules
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                (r.for_ms / u64::from(FOR_FACTOR)) as f64 / 1000.0,
            )
        })
        .collect();
    assert_eq!(
        durations, want,
        "Prometheus runs other alerts or `for:` durations (seconds) than rules.yml / {FOR_FACTOR}"
    );
    eprintln!(
        "setup done after {:.1}s: exporter converged, Alertmanager and Prometheus up; \
         {} alerts loaded with `for:` / {FOR_FACTOR}",
        started.elapsed().as_secs_f64(),
        want.len()
    );

    // -- the traffic under test: wh-slack fails every attempt -------------------
    http.post(&format!("{sim}/_sim/resume"), None)
        .await
        .expect("resume");
    inbox.restart_clock();
    let traffic = Instant::now();
    let deadline = traffic + Duration::from_secs(150);
    loop {
        assert_running(&mut [&mut exporter, &mut am_child, &mut prom_child]);
        let all = inbox.alerts();
        let foreign: Vec<Received> = all
            .iter()
            .filter(|r| key_of(&r.alert["labels"]) != failing_key())
            .cloned()
            .collect();
        assert!(
            foreign.is_empty(),
            "alerts arrived for other than {FAILING}:\n{}all received:\n{}",
            fmt_received(&foreign),
            fmt_received(&all)
        );
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|name| {
                !all.iter()
                    .any(|r| r.name() == *name && r.status() == "firing")
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let prom_alerts = http.prom(&format!("{prom}/api/v1/alerts")).await;
            let am_alerts = http.get_json(&format!("{am}/api/v2/alerts")).await;
            panic!(
                "{missing:?} did not arrive at the receiver within {}s of {FAILING} failing \
                 every attempt.\nreceived:\n{}Prometheus alerts: {prom_alerts:?}\n\
                 Alertmanager alerts: {am_alerts:?}",
                deadline.duration_since(traffic).as_secs(),
                fmt_received(&all)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fired_after = traffic.elapsed();
    eprintln!(
        "{REQUIRED:?} arrived at the receiver {:.1}s after {FAILING} started failing",
        fired_after.as_secs_f64()
    );
    tokio::time::sleep(GRACE).await;

    // -- what arrived is right, and nothing else is active anywhere -------------
    let all = inbox.alerts();
    assert_received_right(&all, &rules);
    // The alert's link opens the webhook's page, with its failures.
    let page = all
        .iter()
        .find_map(|r| r.alert["annotations"]["webhook_page"].as_str())
        .expect("a webhook_page annotation")
        .to_owned();
    let html = http_client()
        .get(&page)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the webhook_page link answers")
        .text()
        .await
        .expect("page body");
    assert!(
        html.contains("class=\"failure\"") && html.contains(FAILING_WEBHOOK),
        "{page} is not the failing webhook's page with its failures:\n{html}"
    );
    let prom_alerts = http
        .prom(&format!("{prom}/api/v1/alerts"))
        .await
        .expect("Prometheus /api/v1/alerts");
    let prom_alerts = prom_alerts["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_only_failing_and_required("Prometheus", &prom_alerts, "firing", |a| &a["state"]);
    // Every alert ever pending or firing since Prometheus started. Only an
    // exporter-level alert may have been pending (TalkoverExporterAbsent for
    // an evaluation before the first scrape), never firing.
    let history = http
        .query(&prom, "max_over_time(ALERTS[10m])")
        .await
        .expect("ALERTS history");
    let foreign: Vec<&Value> = history
        .iter()
        .filter(|row| {
            let key = key_of(&row["metric"]);
            if key.2.is_empty() {
                row["metric"]["alertstate"] == "firing"
            } else {
                key != failing_key()
            }
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "Prometheus had alerts pending or firing for other than {FAILING}: {foreign:?}"
    );
    let am_alerts = http
        .get_json(&format!("{am}/api/v2/alerts"))
        .await
        .expect("Alertmanager /api/v2/alerts");
    let am_alerts = am_alerts.as_array().cloned().unwrap_or_default();
    assert_only_failing_and_required("Alertmanager", &am_alerts, "active", |a| {
        &a["status"]["state"]
    });
    eprintln!(
        "received so far (firing, for {FAILING} only):\n{}",
        fmt_received(&all)
    );
    for name in REQUIRED {
        if let Some(r) = all.iter().find(|r| r.name() == name) {
            eprintln!("{name} annotations: {:#}", r.alert["annotations"]);
        }
    }

    // -- recovery: the resolution arrives too -----------------------------------
    http.set_success_ratio(&sim, FAILING, 1.0).await;
    let recovery = Instant::now();
    let deadline = recovery + Duration::from_secs(60);
    loop {
        assert_running(&mut [&mut exporter, &mut am_child, &mut prom_child]);
        let all = inbox.alerts();
        if all
            .iter()
            .any(|r| r.name() == RESOLVES && r.status() == "resolved")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{RESOLVES} did not arrive as resolved within 60s of {FAILING} succeeding again; \
             received:\n{}",
            fmt_received(&all)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let resolved_after = recovery.elapsed();
    let all = inbox.alerts();
    assert_received_right(&all, &rules);
    receiver.abort();
    eprintln!(
        "{RESOLVES} resolved at the receiver {:.1}s after {FAILING} recovered.\n\
         all received (seconds after the failure started):\n{}test took {:.1}s",
        resolved_after.as_secs_f64(),
        fmt_received(&all),
        started.elapsed().as_secs_f64()
    );
}

//! End-to-end: do the shipped rules tell the truth for webhooks whose own
//! `max_retries` and `timeout` are not the platform's defaults?
//!
//! The simulator (in this process) serves one campaign of seven webhooks,
//! each with the settings its webhook object gives, twice: once found by
//! `--discover` (settings from the listing), once named by `--target`
//! (settings from each webhook's own object). Two real exporter binaries
//! watch them, and two real Prometheus servers, Debian's 2.42 and 3.5 LTS,
//! scrape both and evaluate `dashboards/prometheus/rules.yml`. Then the
//! simulator makes scripted traffic, and this proves, on both servers and
//! in both modes:
//! - `wh-one` (max_retries 3): a single failed attempt among successes
//!   shows in `increase()` of the failures (its series existed at 0 before);
//! - `wh-r0` (max_retries 0): one failed attempt is a lost event:
//!   `TalkoverWebhookRetriesExhausted` is active;
//! - `wh-r5` (max_retries 5): attempts 1 to 4 fail and the fifth succeeds:
//!   nothing is lost, and no such alert;
//! - `wh-t10` (timeout 10 s), answers after 9.0 to 9.8 s:
//!   `TalkoverWebhookLatencyNearTimeout` is active;
//! - `wh-t120` (timeout 120 s), answers after 26 to 29 s: it is not;
//! - `wh-dead`, which fails every attempt from its first:
//!   `TalkoverWebhookAllAttemptsFailing` is active;
//! - `wh-calm`: no Talkover alert at all.
//!
//! "Active" is pending or firing: the `for:` durations are the shipped ones.
//!
//! Needs Debian's `prometheus` on PATH and Prometheus 3.5 in
//! `target/test-tools` (the test command unpacks it there); the test fails,
//! rather than skips, without them.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{
    free_ports, http_client, prometheus_on_path, shipped_rules_path, spawn_exporter,
    spawn_prometheus, start_sim, unstable_tool, wait_for, ChildGuard, Prom,
};
use talkover_count::target::Target;
use talkover_sim::{AttemptSpec, Order, Profile, Simulator};

/// The campaign found by discovery, and the one named by `--target`.
const DISCOVERED: &str = "cmp-discovered";
const NAMED: &str = "cmp-named";

/// Each webhook: its id, `max_retries` and `timeout`.
const HOOKS: [(&str, u32, u32); 7] = [
    ("wh-one", 3, 30),
    ("wh-r0", 0, 30),
    ("wh-r5", 5, 30),
    ("wh-t10", 3, 10),
    ("wh-t120", 3, 120),
    ("wh-dead", 3, 30),
    ("wh-calm", 3, 30),
];

/// How long each server gets to show what it must.
const LIMIT: Duration = Duration::from_secs(60);

const EXHAUSTED: &str = "TalkoverWebhookRetriesExhausted";
const NEAR_TIMEOUT: &str = "TalkoverWebhookLatencyNearTimeout";
const ALL_FAILING: &str = "TalkoverWebhookAllAttemptsFailing";

/// What must be active for a webhook, and what must not.
fn expected(webhook: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const EVERY: &[&str] = &[
        EXHAUSTED,
        NEAR_TIMEOUT,
        ALL_FAILING,
        "TalkoverWebhookErrorBudgetFastBurn",
        "TalkoverWebhookErrorBudgetSlowBurn",
        "TalkoverWebhookDisabled",
    ];
    match webhook {
        "wh-r0" => (&[EXHAUSTED], &[NEAR_TIMEOUT, ALL_FAILING]),
        "wh-r5" => (&[], &[EXHAUSTED, NEAR_TIMEOUT, ALL_FAILING]),
        "wh-t10" => (&[NEAR_TIMEOUT], &[EXHAUSTED, ALL_FAILING]),
        "wh-t120" => (&[], EVERY),
        "wh-dead" => (&[ALL_FAILING], &[NEAR_TIMEOUT]),
        // wh-one, wh-calm
        _ => (&[], EVERY),
    }
}

fn target(campaign: &str, webhook: &str) -> Target {
    format!("campaigns/{campaign}/webhooks/{webhook}")
        .parse()
        .expect("target")
}

fn ok(n: usize, ms: impl Fn(usize) -> i64) -> Vec<AttemptSpec> {
    (0..n)
        .map(|i| AttemptSpec {
            attempt: 1,
            success: true,
            http_status: Some(200),
            duration_ms: ms(i),
            ..AttemptSpec::default()
        })
        .collect()
}

fn failed(attempt: u32) -> AttemptSpec {
    AttemptSpec {
        attempt,
        success: false,
        http_status: Some(503),
        duration_ms: 120,
        ..AttemptSpec::default()
    }
}

/// One second's traffic of `webhook`; `round` 3 carries the scripted
/// failures.
fn traffic(webhook: &str, round: usize) -> Vec<AttemptSpec> {
    let fast = |i: usize| 80 + (i as i64 * 37) % 300;
    match webhook {
        "wh-one" if round == 3 => [ok(2, fast), vec![failed(1)], ok(2, fast)].concat(),
        "wh-r0" if round == 3 => [ok(2, fast), vec![failed(1)]].concat(),
        "wh-r5" if round == 3 => {
            let mut a: Vec<AttemptSpec> = (1..=4).map(failed).collect();
            a.push(AttemptSpec {
                attempt: 5,
                ..ok(1, fast).remove(0)
            });
            a
        }
        // Many successes around the failures keep wh-r5 under every burn rate.
        "wh-one" | "wh-r0" | "wh-r5" | "wh-calm" => ok(8, fast),
        "wh-t10" => ok(4, |i| 9_000 + (i as i64 * 263) % 800),
        "wh-t120" => ok(4, |i| 26_000 + (i as i64 * 947) % 3_000),
        "wh-dead" => (0..4).map(|_| failed(1)).collect(),
        _ => Vec::new(),
    }
}

/// See the file's documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_tell_the_truth_for_every_webhooks_own_settings() {
    let started = Instant::now();
    let servers = [
        ("2.42", prometheus_on_path()),
        ("3.5", unstable_tool("prometheus")),
    ];
    let paths: Vec<String> = [DISCOVERED, NAMED]
        .iter()
        .flat_map(|c| HOOKS.map(|(w, _, _)| target(c, w).to_string()))
        .collect();
    let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let s = start_sim(
        2112,
        Order::NewestFirst,
        &path_refs,
        Profile {
            rate_per_second: 0.0,
            ..Profile::default()
        },
    )
    .await;
    for campaign in [DISCOVERED, NAMED] {
        for (webhook, max_retries, timeout_seconds) in HOOKS {
            s.sim.set_profile(
                &target(campaign, webhook),
                Profile {
                    rate_per_second: 0.0,
                    max_retries,
                    timeout_seconds,
                    ..Profile::default()
                },
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("talkover-alert-truth-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let [discovering_port, naming_port, prom_a, prom_b] = free_ports::<4>();
    let include = format!("campaigns/{DISCOVERED}/webhooks/*");
    let common = ["--poll.interval", "500ms", "--log.level", "warn"];
    let mut discovering = spawn_exporter(
        &s.url,
        discovering_port,
        &[
            &common[..],
            &["--discover", "campaigns", "--discover.include", &include],
        ]
        .concat(),
        &dir.join("exporter-discover.log"),
    );
    let named: Vec<String> = HOOKS
        .iter()
        .flat_map(|(w, _, _)| ["--target".to_string(), target(NAMED, w).to_string()])
        .collect();
    let named_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
        .collect();
    let mut naming = spawn_exporter(
        &s.url,
        naming_port,
        &named_args,
        &dir.join("exporter-target.log"),
    );
    let mut proms: Vec<(&str, ChildGuard, Prom)> = Vec::new();
    for ((version, binary), port) in servers.iter().zip([prom_a, prom_b]) {
        let sub = dir.join(format!("prometheus-{version}"));
        std::fs::create_dir_all(sub.join("data")).expect("prometheus dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: discover\n    static_configs:\n      - targets: ['127.0.0.1:{discovering_port}']\n\
             \x20 - job_name: target\n    static_configs:\n      - targets: ['127.0.0.1:{naming_port}']\n",
            rules = shipped_rules_path().display()
        );
        let child = spawn_prometheus(binary, config, &sub, &sub.join("data"), port);
        let prom = Prom {
            http: http_client(),
            base: format!("http://127.0.0.1:{port}"),
        };
        proms.push((version, child, prom));
    }

    // Before any traffic: each server holds every webhook's results at 0
    // and its own settings, so counting judges by them and the first
    // failure has a 0 before it.
    for (version, child, prom) in proms.iter_mut() {
        child.assert_running();
        discovering.assert_running();
        naming.assert_running();
        let what = format!("Prometheus {version} to hold the settings and results of 14 webhooks");
        wait_for(&what, LIMIT, || async {
            let settings = prom.scalar("count(talkover_webhook_max_retries)").await;
            let results = prom
                .scalar("count(count by (campaign_id, webhook_id) (talkover_webhook_delivery_results_total))")
                .await;
            settings == Some(14.0) && results == Some(14.0)
        })
        .await;
    }
    let settings = proms[1]
        .2
        .query("talkover_webhook_max_retries")
        .await
        .expect("query");
    for (labels, value) in &settings {
        let webhook = labels.get("webhook_id").map(String::as_str).unwrap_or("");
        let want = HOOKS.iter().find(|h| h.0 == webhook).map(|h| h.1);
        assert_eq!(Some(*value as u32), want, "max_retries of {labels:?}");
    }

    for round in 0..12 {
        for campaign in [DISCOVERED, NAMED] {
            for (webhook, _, _) in HOOKS {
                s.sim
                    .append(&target(campaign, webhook), &traffic(webhook, round));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    check_lost_events(&s.sim);

    for (version, child, prom) in proms.iter_mut() {
        child.assert_running();
        // A first single failure among successes is seen.
        let what = format!("Prometheus {version} to see wh-one's single failure in increase()");
        wait_for(&what, LIMIT, || async {
            let expr = "sum by (job) (increase(talkover_webhook_delivery_results_total{webhook_id=\"wh-one\",result!=\"success\"}[5m]))";
            let rows = prom.query(expr).await.unwrap_or_default();
            rows.len() == 2 && rows.iter().all(|(_, v)| *v >= 0.5)
        })
        .await;
        // Every required alert, for both campaigns.
        let what = format!("Prometheus {version} to raise the expected alerts");
        wait_for(&what, LIMIT, || async {
            let Ok(active) = active_alerts(prom).await else {
                return false;
            };
            let missing: Vec<String> = [DISCOVERED, NAMED]
                .iter()
                .flat_map(|c| {
                    HOOKS.iter().flat_map(move |(w, _, _)| {
                        expected(w)
                            .0
                            .iter()
                            .map(move |a| (c.to_string(), w.to_string(), a.to_string()))
                    })
                })
                .filter(|k| !active.contains(k))
                .map(|(c, w, a)| format!("{a} for {c}/{w}"))
                .collect();
            missing.is_empty()
        })
        .await;
    }
    // What must not be active has had every chance to be: the rules ran
    // on all the traffic for several evaluations.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (version, child, prom) in proms.iter_mut() {
        child.assert_running();
        let active = active_alerts(prom).await.expect("alerts");
        for campaign in [DISCOVERED, NAMED] {
            for (webhook, _, _) in HOOKS {
                let (required, forbidden) = expected(webhook);
                for alert in required {
                    assert!(
                        active.contains(&(campaign.into(), webhook.into(), alert.to_string())),
                        "Prometheus {version}: {alert} no longer active for {campaign}/{webhook}"
                    );
                }
                for alert in forbidden {
                    assert!(
                        !active.contains(&(campaign.into(), webhook.into(), alert.to_string())),
                        "Prometheus {version}: {alert} is active for {campaign}/{webhook}: {active:?}"
                    );
                }
            }
        }
        let exporter_alerts: Vec<_> = active
            .iter()
            .filter(|(_, _, a)| a.starts_with("TalkoverExporter"))
            .collect();
        assert!(
            exporter_alerts.is_empty(),
            "Prometheus {version}: {exporter_alerts:?}"
        );
    }
    discovering.assert_running();
    naming.assert_running();
    eprintln!(
        "alert truth on 2.42 and 3.5, --discover and --target: {:?}",
        started.elapsed()
    );
}

/// The exporters' lost events, as the simulator's truth says them: read
/// here from the simulator, to make sure the traffic is what the rules are
/// said to see.
fn check_lost_events(sim: &Simulator) {
    let lost = sim.exhausted(0);
    for campaign in [DISCOVERED, NAMED] {
        for (webhook, _, _) in HOOKS {
            let n: u64 = lost[&target(campaign, webhook)].values().sum();
            let want = match webhook {
                "wh-r0" => 1,
                _ => 0,
            };
            assert_eq!(
                n, want,
                "lost events of {campaign}/{webhook} in the traffic"
            );
        }
    }
}

/// Active (pending or firing) Talkover alerts as (campaign, webhook, alert).
async fn active_alerts(prom: &Prom) -> Result<BTreeSet<(String, String, String)>, String> {
    let alerts = prom.alerts().await?;
    Ok(alerts
        .into_iter()
        .filter(|(_, _, state)| state == "pending" || state == "firing")
        .map(|(name, labels, _)| {
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            (get("campaign_id"), get("webhook_id"), name)
        })
        .collect())
}

//! Each webhook's own settings: read from its webhook object (a
//! `--target`) or the listing (discovered), read again every
//! `--discover.interval`, served, and never in the way of polling.

use std::time::Duration;

use talkover_count::target::{Scope, Target};
use talkover_sim::{AttemptSpec, Order, Profile};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

fn profile(max_retries: u32, timeout_seconds: u32) -> Profile {
    Profile {
        rate_per_second: 0.0,
        pending_ratio: 0.0,
        max_retries,
        timeout_seconds,
        ..Profile::default()
    }
}

fn failed(attempt: u32) -> AttemptSpec {
    AttemptSpec {
        attempt,
        success: false,
        http_status: Some(500),
        duration_ms: 30,
        ..AttemptSpec::default()
    }
}

/// A `--target`'s settings come from its own webhook object and are read
/// again every `--discover.interval`: a raised `max_retries` is served and
/// judges the attempts counted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_settings_are_read_at_start_and_again() {
    let s = start_sim(61, Order::NewestFirst, &[A, B], profile(0, 10)).await;
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    let exporter = start_exporter(
        &s.url,
        &[A, B],
        ExporterOptions {
            discover_interval: Duration::from_millis(300),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let value = |sc: &Scrape, name: &str, t: &Target| sc.target_value(name, t, &[]);
    wait_for("the settings read", Duration::from_secs(10), || async {
        let sc = exporter.scrape().await;
        value(&sc, "talkover_webhook_max_retries", &a) == 0.0
            && value(&sc, "talkover_webhook_timeout_seconds", &b) == 10.0
    })
    .await;
    assert!(s.sim.settings_requests() >= 2);
    s.sim.append(&a, &[failed(1)]);
    wait_for(
        "a lost event at max_retries 0",
        Duration::from_secs(10),
        || async {
            value(
                &exporter.scrape().await,
                "talkover_webhook_deliveries_exhausted_total",
                &a,
            ) == 1.0
        },
    )
    .await;

    s.sim.set_profile(&a, profile(4, 60));
    wait_for("the new settings", Duration::from_secs(10), || async {
        let sc = exporter.scrape().await;
        value(&sc, "talkover_webhook_max_retries", &a) == 4.0
            && value(&sc, "talkover_webhook_timeout_seconds", &a) == 60.0
    })
    .await;
    s.sim.append(&a, &[failed(1), failed(4), failed(5)]);
    // Every attempt since the start (the first lost event's too).
    wait_exact(&exporter, &s.sim, 0).await;
    let sc = exporter.scrape().await;
    // Attempt 5 is the last of five (max_retries 4): one more lost event.
    assert_eq!(
        value(&sc, "talkover_webhook_deliveries_exhausted_total", &a),
        2.0,
        "{}",
        sc.raw
    );
    let reads = sc.sum(
        "talkover_exporter_settings_fetches_total",
        &[("result", "success")],
    );
    assert!(reads >= 4.0, "{reads} settings reads");
    exporter.stop().await;
}

/// A token that may read a webhook's logs but not its object: the refusal
/// is counted and logged, the webhook is marked as having unknown settings
/// and is judged by the defaults, and its logs are polled all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settings_read_never_stops_polling() {
    let s = start_sim(62, Order::NewestFirst, &[A], profile(0, 10)).await;
    let a: Target = A.parse().expect("a");
    s.sim.refuse_settings(&a, Some(403));
    let exporter = start_exporter(&s.url, &[A], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    // Attempt 4 fails: lost by the default of 3 retries (its own 0 is unknown).
    s.sim.append(&a, &[failed(1), failed(4)]);
    s.sim.generate(&a, 10);
    wait_exact(&exporter, &s.sim, mark).await;
    let sc = exporter.scrape().await;
    assert_eq!(sc.target_value("talkover_up", &a, &[]), 1.0);
    assert_eq!(
        sc.target_value("talkover_webhook_deliveries_exhausted_total", &a, &[]),
        1.0
    );
    assert!(
        sc.raw
            .contains(r#"webhook_id="wh-1",name="",enabled="unknown",settings="unknown"} 1"#),
        "{}",
        sc.raw
    );
    assert!(!sc.raw.contains("talkover_webhook_max_retries{"));
    assert!(
        sc.sum(
            "talkover_exporter_settings_fetches_total",
            &[("result", "unauthorized")]
        ) >= 1.0
    );
    exporter.stop().await;
}

/// Discovered webhooks take their settings from the listing; one turned off
/// on the platform stops being polled and shows `enabled="false"` for its
/// grace period, which the disabled alert reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_webhook_turned_off_says_so() {
    let s = start_sim(63, Order::NewestFirst, &[A, B], profile(2, 45)).await;
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    let exporter = start_exporter(
        &s.url,
        &[],
        ExporterOptions {
            discover: vec![Scope::Campaign, Scope::Agent],
            discover_interval: Duration::from_millis(300),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let sc = exporter.scrape().await;
    for t in [&a, &b] {
        assert_eq!(sc.target_value("talkover_webhook_max_retries", t, &[]), 2.0);
        assert_eq!(
            sc.target_value("talkover_webhook_timeout_seconds", t, &[]),
            45.0
        );
    }
    assert_eq!(s.sim.settings_requests(), 0, "the listing says it all");
    s.sim.set_enabled(&a, false);
    let off = r#"campaign_id="cmp-1",agent_id="",webhook_id="wh-1",name="wh-1 hook",enabled="false",settings="known"} 1"#;
    let shown = async {
        for _ in 0..100 {
            let sc = exporter.scrape().await;
            if sc.raw.contains(off) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(exporter.scrape().await.raw)
    };
    if let Err(raw) = shown.await {
        let info: Vec<&str> = raw
            .lines()
            .filter(|l| l.starts_with("talkover_webhook_info"))
            .collect();
        panic!("A not shown as turned off: {info:#?}");
    }
    exporter.stop().await;
}

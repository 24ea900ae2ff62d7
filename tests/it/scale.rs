//! Discovery, stale series, sharding across replicas, and the API cost of a poll.

use std::collections::BTreeMap;
use std::time::Duration;

use talkover_count::target::{Scope, Target};
use talkover_sim::Order;

use crate::support::*;

fn discovering() -> ExporterOptions {
    ExporterOptions {
        discover: vec![Scope::Campaign, Scope::Agent],
        discover_interval: Duration::from_millis(300),
        stale_after: Duration::from_secs(1),
        ..ExporterOptions::default()
    }
}

fn watched(scrape: &Scrape) -> Vec<String> {
    let mut out: Vec<String> = scrape
        .series
        .iter()
        .filter(|(n, _, _)| n == "talkover_webhook_info")
        .map(|(_, l, _)| format!("{}{}/{}", l["campaign_id"], l["agent_id"], l["webhook_id"]))
        .collect();
    out.sort();
    out
}

/// Discovery finds every webhook with its name, starts polling new ones,
/// stops polling removed or disabled ones, and their series leave
/// /metrics after --target.stale-after while live counters stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_webhooks_as_they_come_and_go() {
    let hooks = [
        "campaigns/c1/webhooks/w1",
        "campaigns/c1/webhooks/w2",
        "campaigns/c2/webhooks/w3",
        "agents/a1/webhooks/w4",
    ];
    let s = start_sim(51, Order::NewestFirst, &hooks, quiet_profile()).await;
    let t: Vec<Target> = hooks.iter().map(|h| h.parse().expect("t")).collect();
    s.sim.set_name(&t[0], "CRM sync");
    let exporter = start_exporter(&s.url, &[], discovering()).await;
    exporter.wait_ready().await;
    let scrape = exporter.scrape().await;
    assert_eq!(watched(&scrape), ["a1/w4", "c1/w1", "c1/w2", "c2/w3"]);
    assert_eq!(
        scrape.target_value(
            "talkover_webhook_info",
            &t[0],
            &[("name", "CRM sync"), ("enabled", "true")]
        ),
        1.0
    );
    let mark = s.sim.mark();
    for target in &t {
        s.sim.generate(target, 10);
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;

    // w2 is deleted, w3 disabled, w5 appears.
    s.sim.remove_webhook(&t[1]);
    s.sim.set_enabled(&t[2], false);
    let w5: Target = "campaigns/c2/webhooks/w5".parse().expect("t");
    s.sim.add_webhook(w5.clone(), quiet_profile());
    wait_for("w5 polled", Duration::from_secs(10), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_up", &w5, &[])
            == 1.0
    })
    .await;
    // Within the grace period the gone webhooks keep their series...
    let scrape = exporter.scrape().await;
    assert_eq!(
        scrape.target_value("talkover_webhook_delivery_attempts_total", &t[1], &[]),
        10.0
    );
    // ...and after it they are removed, while live counters stay.
    wait_for("stale series removed", Duration::from_secs(10), || async {
        watched(&exporter.scrape().await) == ["a1/w4", "c1/w1", "c2/w5"]
    })
    .await;
    let scrape = exporter.scrape().await;
    assert!(!scrape.raw.contains("webhook_id=\"w2\""));
    assert!(!scrape.raw.contains("webhook_id=\"w3\""));
    assert_eq!(
        scrape.target_value("talkover_webhook_delivery_attempts_total", &t[0], &[]),
        10.0
    );
    assert!(
        scrape.sum(
            "talkover_exporter_discovery_runs_total",
            &[("result", "success")]
        ) >= 2.0
    );
    exporter.stop().await;
}

/// Include and exclude patterns choose among discovered webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_filters() {
    let hooks = [
        "campaigns/c1/webhooks/prod-1",
        "campaigns/c1/webhooks/test-1",
        "agents/a1/webhooks/prod-2",
    ];
    let s = start_sim(52, Order::NewestFirst, &hooks, quiet_profile()).await;
    let exporter = start_exporter(
        &s.url,
        &[],
        ExporterOptions {
            flags: flags(&[
                "--discover.include=prod-*",
                "--discover.include=test-*",
                "--discover.exclude=agents/*",
            ]),
            ..discovering()
        },
    )
    .await;
    exporter.wait_ready().await;
    assert_eq!(
        watched(&exporter.scrape().await),
        ["c1/prod-1", "c1/test-1"]
    );
    exporter.stop().await;
}

/// Three replicas with --shard.count 3 share the webhooks: together they
/// watch every webhook, each exactly once, and count them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_watch_every_webhook_once() {
    let names: Vec<String> = (0..30)
        .map(|i| {
            if i % 4 == 0 {
                format!("agents/a{}/webhooks/w{i}", i % 3)
            } else {
                format!("campaigns/c{}/webhooks/w{i}", i % 5)
            }
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = start_sim(53, Order::NewestFirst, &refs, quiet_profile()).await;
    let mut replicas = Vec::new();
    for index in 0..3 {
        let opts = ExporterOptions {
            flags: vec![format!("--shard.index={index}"), "--shard.count=3".into()],
            ..discovering()
        };
        replicas.push(start_exporter(&s.url, &[], opts).await);
    }
    for r in &replicas {
        r.wait_ready().await;
    }
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 7);
    }
    s.sim.finish_pending();
    let truth = s.sim.truth(mark);
    wait_for("all shards counted", Duration::from_secs(20), || async {
        let mut counted: BTreeMap<Target, u64> = BTreeMap::new();
        for r in &replicas {
            let scrape = r.scrape().await;
            for t in truth.keys() {
                *counted.entry(t.clone()).or_default() += scrape.attempts(t).values().sum::<u64>();
            }
        }
        truth
            .iter()
            .all(|(t, want)| counted[t] == want.values().sum::<u64>())
    })
    .await;
    let mut seen: Vec<String> = Vec::new();
    for r in &replicas {
        let mine = watched(&r.scrape().await);
        assert!(!mine.is_empty(), "every shard gets some webhooks");
        seen.extend(mine);
    }
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(before, seen.len(), "a webhook watched by two replicas");
    assert_eq!(seen.len(), 30, "a webhook watched by no replica");
    for r in replicas {
        r.stop().await;
    }
}

//! Discovery, stale series, sharding across replicas, and the API cost of a poll.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use talkover_exporter::api::{Client, ClientOptions, Credentials, Token};
use talkover_exporter::collect::{poll_once, PollConfig};
use talkover_exporter::discovery::{Filters, Pattern, Shard};
use talkover_exporter::model::{PollStats, TargetState};
use talkover_exporter::sim::Order;
use talkover_exporter::target::{Scope, Target};

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
            filters: Filters {
                include: vec![Pattern::new("prod-*"), Pattern::new("test-*")],
                exclude: vec![Pattern::new("agents/*")],
            },
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
            shard: Shard { index, count: 3 },
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

/// An idle webhook costs one request per poll; a busy one
/// ceil((new + 1) / 100) when nothing shifts, within the budget formula
/// ceil(new / 100) + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_poll_follow_the_formula() {
    requests_per_poll(Order::NewestFirst, true).await;
}

/// Oldest-first listings stay within the same budget formula (the newest
/// page is the last one, found from a total that may have moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_requests_stay_within_the_formula() {
    requests_per_poll(Order::OldestFirst, false).await;
}

async fn requests_per_poll(order: Order, exact: bool) {
    let hook = "campaigns/c1/webhooks/w1";
    let s = start_sim(54, order, &[hook], quiet_profile()).await;
    let target: Target = hook.parse().expect("t");
    s.sim.generate(&target, 500);
    s.sim.finish_pending();
    let client = Arc::new(
        Client::new(ClientOptions {
            base_url: s.url.parse().expect("url"),
            credentials: Token::new(TOKEN).map(Credentials::Token),
            timeout: Duration::from_secs(5),
            max_body_bytes: 32 << 20,
            allow_insecure: true,
            max_requests_per_second: 1000.0,
            probe_max: std::time::Duration::from_secs(1),
        })
        .expect("client"),
    );
    let config = PollConfig {
        interval: Duration::from_secs(1),
        max_pages: 10,
        per_page: 100,
        failures: talkover_exporter::model::FailurePolicy::default(),
    };
    let mut state = TargetState::default();
    let mut stats = PollStats::default();
    poll_once(&*client, &target, &config, &mut state, &mut stats)
        .await
        .expect("baseline");
    let counted = |state: &TargetState| state.counts.attempts.values().sum::<u64>();
    // 899 and 999 new entries need all ten pages of the budget or more.
    for new in [0usize, 0, 1, 50, 99, 100, 150, 250, 899, 999, 0] {
        s.sim.generate(&target, new);
        s.sim.finish_pending();
        let before = s.sim.requests(&target);
        let goal = counted(&state) + new as u64;
        let mut polls = 0;
        loop {
            poll_once(&*client, &target, &config, &mut state, &mut stats)
                .await
                .expect("poll");
            polls += 1;
            if counted(&state) == goal || polls == 3 {
                break;
            }
        }
        assert_eq!(counted(&state), goal, "{order:?}, {new} new entries");
        let used = s.sim.requests(&target) - before;
        // A burst beyond the page budget is finished by later polls, each
        // reading the newest page and the page where the burst met old ground.
        let formula = (new as u64).div_ceil(100) + 1 + 2 * (polls - 1);
        if exact {
            assert_eq!(used, (new as u64 + 1).div_ceil(100), "{new} new entries");
        }
        assert!(
            used <= formula,
            "{order:?}, {new} new entries: {used} > {formula}"
        );
    }
}

/// A slow API and many targets: requests in flight stop at the client's
/// cap instead of one connection per poller, and every poll still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped() {
    use talkover_exporter::api::MAX_IN_FLIGHT;
    use talkover_exporter::sim::{Fault, FaultRule};

    let names: Vec<String> = (0..100)
        .map(|i| format!("campaigns/c{}/webhooks/w{i}", i / 10))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = start_sim(61, Order::NewestFirst, &refs, quiet_profile()).await;
    // Every first poll takes 400 ms: without a cap, about all 100 would be
    // in flight together (polls are spread over the 100 ms interval).
    s.sim.inject(FaultRule {
        target: None,
        fault: Fault::Delay { ms: 400 },
        count: 100,
    });
    let exporter = start_exporter(
        &s.url,
        &refs,
        ExporterOptions {
            max_rps: 100_000.0,
            timeout: Duration::from_secs(10),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let most = s.sim.max_log_requests_in_flight();
    assert!(most <= MAX_IN_FLIGHT, "{most} requests in flight at once");
    assert!(
        most >= MAX_IN_FLIGHT / 2,
        "only {most} in flight: the cap was never reached, so nothing was tested"
    );
    let up = exporter.scrape().await.sum("talkover_up", &[]);
    assert_eq!(up, 100.0);
    exporter.stop().await;
}

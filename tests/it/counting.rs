//! Exactly-once counting against the simulator's ground truth.

use std::time::Duration;

use talkover_count::target::Target;
use talkover_sim::{Order, Profile};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

fn busy_profile() -> Profile {
    Profile {
        rate_per_second: 0.0,
        pending_ratio: 0.3,
        success_ratio: 0.7,
        ..Profile::default()
    }
}

/// History present at start is baseline; everything after is counted once,
/// including pending entries that turn final later and retries.
async fn counts_exactly(order: Order) {
    let s = start_sim(7, order, &[A, B], busy_profile()).await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 250);
    }
    s.sim.finish_pending();
    // History from a minute ago: clear of the exporter's start, which it
    // knows on the API's clock to about a second.
    s.sim.backdate(Duration::from_secs(60));
    // Every family on: the lag histogram is checked below.
    let everything = flags(&[
        "--collector.lag",
        "--collector.attempt-number",
        "--collector.duration-by-status",
        "--collector.poll-stats",
        "--collector.native-histograms",
    ]);
    let exporter = start_exporter(
        &s.url,
        &[A, B],
        ExporterOptions {
            flags: everything,
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    let before = exporter.scrape().await;
    assert_eq!(
        before.sum("talkover_webhook_delivery_attempts_total", &[]),
        0.0,
        "baseline must not be counted"
    );

    for round in 0..6 {
        for t in s.sim.targets() {
            s.sim.generate(&t, 40 + round * 30);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let scrape = exporter.scrape().await;
    let a: Target = A.parse().expect("target");
    assert!(
        scrape.target_value("talkover_webhook_attempts_pending", &a, &[]) > 0.0,
        "pending entries are followed before they finish"
    );
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;

    let scrape = exporter.scrape().await;
    for (t, retries) in s.sim.retries(mark) {
        assert!(retries > 0, "the profile produces retries");
        assert_eq!(
            scrape.target_value("talkover_webhook_delivery_retries_total", &t, &[]) as u64,
            retries,
            "{t}"
        );
        assert_eq!(
            scrape.target_value("talkover_webhook_attempts_pending", &t, &[]),
            0.0
        );
        assert_eq!(scrape.target_value("talkover_up", &t, &[]), 1.0);
        let counted = scrape.target_value("talkover_webhook_delivery_attempts_total", &t, &[]);
        assert_eq!(
            scrape.target_value("talkover_webhook_delivery_duration_seconds_count", &t, &[]),
            counted,
            "every attempt has a usable duration"
        );
        assert_eq!(
            scrape.target_value(
                "talkover_exporter_invalid_fields_total",
                &t,
                &[("field", "duration_ms")]
            ),
            0.0
        );
        assert!(scrape.target_value("talkover_webhook_delivery_lag_seconds_count", &t, &[]) > 0.0);
    }
    exporter.stop().await;
}

/// Newest-first listing (the documented examples' order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_counts_each_attempt_once() {
    counts_exactly(Order::NewestFirst).await;
}

/// Oldest-first listing: new entries land on the last page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_counts_each_attempt_once() {
    counts_exactly(Order::OldestFirst).await;
}

/// Traffic keeps arriving while pages are read, so entries shift from one
/// page to the next mid-poll; nothing is lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifting_pages_under_continuous_traffic() {
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let s = start_sim(
            11,
            order,
            &[A, B],
            Profile {
                rate_per_second: 0.0,
                ..busy_profile()
            },
        )
        .await;
        let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
        exporter.wait_ready().await;
        let mark = s.sim.mark();
        let writer = {
            let sim = s.sim.clone();
            tokio::spawn(async move {
                for _ in 0..300 {
                    for t in sim.targets() {
                        sim.generate(&t, 3);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        writer.await.expect("writer");
        s.sim.finish_pending();
        wait_exact(&exporter, &s.sim, mark).await;
        exporter.stop().await;
    }
}

/// More new entries than --poll.max-pages can read in one poll: the rest is
/// read on the following polls, and the backlog gauge shows it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_page_budget_is_caught_up() {
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let s = start_sim(
            5,
            order,
            &[A],
            Profile {
                pending_ratio: 0.0,
                ..busy_profile()
            },
        )
        .await;
        s.sim.generate(&A.parse().expect("t"), 120);
        s.sim.backdate(Duration::from_secs(60));
        let exporter = start_exporter(
            &s.url,
            &[A],
            ExporterOptions {
                max_pages: 2,
                interval: Duration::from_millis(300),
                ..ExporterOptions::default()
            },
        )
        .await;
        exporter.wait_ready().await;
        let mark = s.sim.mark();
        let a: Target = A.parse().expect("target");
        s.sim.generate(&a, 1500);
        wait_for("backlog gauge", Duration::from_secs(10), || async {
            exporter
                .scrape()
                .await
                .sum("talkover_exporter_backlog_entries", &[])
                > 0.0
        })
        .await;
        // New traffic keeps arriving while the backlog is read.
        for _ in 0..5 {
            s.sim.generate(&a, 50);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_exact(&exporter, &s.sim, mark).await;
        // Each stretch counts as one entry until a scan has closed it.
        wait_for("the backlog closed", Duration::from_secs(10), || async {
            exporter
                .scrape()
                .await
                .sum("talkover_exporter_backlog_entries", &[])
                == 0.0
        })
        .await;
        exporter.stop().await;
    }
}

/// Many targets are polled concurrently and independently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_targets_each_counted_exactly() {
    let names: Vec<String> = (0..12)
        .map(|i| {
            if i % 3 == 0 {
                format!("agents/a{i}/webhooks/w{i}")
            } else {
                format!("campaigns/c{i}/webhooks/w{i}")
            }
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = start_sim(3, Order::NewestFirst, &refs, busy_profile()).await;
    let exporter = start_exporter(&s.url, &refs, ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 77);
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    exporter.stop().await;
}

/// Entries with nulls, negative durations, bad timestamps, string-typed
/// numbers and unknown statuses are still counted; unusable fields are left
/// out of the histograms and counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_are_counted_and_reported() {
    let s = start_sim(
        13,
        Order::NewestFirst,
        &[A],
        Profile {
            hostile_ratio: 0.4,
            ..busy_profile()
        },
    )
    .await;
    let exporter = start_exporter(&s.url, &[A], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    let a: Target = A.parse().expect("target");
    s.sim.generate(&a, 400);
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    let scrape = exporter.scrape().await;
    let truth = s.sim.truth(mark);
    assert!(
        truth[&a].keys().any(|(_, status, _)| status == "bounced"),
        "unknown statuses are generated"
    );
    for (field, reason) in [
        ("duration_ms", "negative"),
        ("delivered_at", "unparsable"),
        ("attempt", "missing"),
    ] {
        assert!(
            scrape.target_value(
                "talkover_exporter_invalid_fields_total",
                &a,
                &[("field", field), ("reason", reason)]
            ) > 0.0,
            "{field}/{reason} not reported"
        );
    }
    exporter.stop().await;
}

/// Entries the API drops (retention) before a backlog reaches them are
/// counted as missed, never silently: counted plus missed covers the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expired_before_read_are_counted_as_missed() {
    let s = start_sim(
        17,
        Order::NewestFirst,
        &[A],
        Profile {
            pending_ratio: 0.0,
            ..busy_profile()
        },
    )
    .await;
    let a: Target = A.parse().expect("target");
    let exporter = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            max_pages: 2,
            interval: Duration::from_millis(400),
            // The per-webhook backlog, as well as the count.
            flags: flags(&["--collector.poll-stats"]),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    s.sim.generate(&a, 1200);
    wait_for("backlog", Duration::from_secs(10), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_exporter_backlog_entries", &a, &[])
            > 0.0
    })
    .await;
    // Retention drops the oldest entries: the unread end of the burst (and the baseline-free history).
    s.sim.expire_oldest(&a, 700);
    wait_for("backlog resolved", Duration::from_secs(20), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_exporter_backlog_entries", &a, &[])
            == 0.0
    })
    .await;
    let scrape = exporter.scrape().await;
    let counted = scrape.target_value("talkover_webhook_delivery_attempts_total", &a, &[]);
    let missed = scrape.target_value(
        "talkover_exporter_logs_missed_total",
        &a,
        &[("reason", "retention")],
    );
    eprintln!("retention: counted {counted}, missed {missed} of 1200");
    assert!(missed > 0.0, "expired entries must show as missed");
    assert!((500.0..=1200.0).contains(&counted), "counted {counted}");
    assert!(
        ((counted + missed) - 1200.0).abs() <= 100.0,
        "counted {counted} + missed {missed} should cover the 1200 (estimate)"
    );
    exporter.stop().await;
}

//! Exact from the first second: what the API creates after the exporter
//! began watching a webhook is counted, however long the API cannot be read
//! at first (503s, refused connections, a token mounted late, one failed
//! first request, a webhook discovered during failures), and whatever the
//! API's clock says compared with this host's.
//!
//! The history made before a start is backdated by a minute: the exporter
//! knows the start on the API's clock to about a second (the `Date`
//! header's resolution), and a test must not depend on which side of that
//! second an entry fell.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use talkover_count::target::{Scope, Target};
use talkover_sim::{Fault, FaultRule, Order, Outage};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-2/webhooks/wh-2";

/// The real binary against `sim_url`, its log written to `log`.
fn spawn_exporter(
    sim_url: &str,
    targets: &[&str],
    extra: &[&str],
    log: &Path,
) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["--talkover.url", sim_url, "--talkover.allow-insecure"])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(["--log.format", "json"])
        .args(extra)
        .env("TALKOVER_TOKEN", TOKEN);
    for t in targets {
        cmd.args(["--target", t]);
    }
    (
        ChildGuard::spawn("exporter", &mut cmd, log.to_path_buf()),
        port,
    )
}

async fn wait_ready_at(port: u16) {
    wait_for("exporter ready", Duration::from_secs(20), || ready_at(port)).await;
}

fn total(scrape: &Scrape) -> f64 {
    scrape.sum("talkover_webhook_delivery_attempts_total", &[])
}

/// One start-up: history, then the exporter starts while the API is down
/// (and its clock `skew_ms` off this host's); deliveries go on; the API
/// comes back. Returns how long after that every webhook had been read.
async fn outage_at_start(order: Order, skew_ms: i64, outage: Outage, seed: u64) -> Duration {
    let what = format!("{order:?}, API clock {skew_ms:+} ms, {outage:?}");
    let s = start_sim(seed, order, &[A, B], quiet_profile()).await;
    s.sim.set_clock_offset(skew_ms);
    for t in s.sim.targets() {
        s.sim.generate(&t, 150);
    }
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    s.sim.set_outage(Some(outage));
    let mark = s.sim.mark();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("exporter.log");
    let (_exporter, port) = spawn_exporter(&s.url, &[A, B], &["--poll.interval", "300ms"], &log);
    wait_ready_at(port).await;

    // Deliveries while the API cannot be read, some still in flight.
    for _ in 0..8 {
        for t in s.sim.targets() {
            s.sim.generate(&t, 15);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let scrape = scrape_at(port).await.expect("scrape during the outage");
    assert_eq!(total(&scrape), 0.0, "{what}: nothing readable yet");
    assert_eq!(scrape.sum("talkover_up", &[]), 0.0, "{what}: down");
    let reason = match outage {
        Outage::Unavailable => "http_error",
        Outage::Refused => "connection",
    };
    // The first polls meet the outage; then the API is down, probed one
    // request at a time, and the polls are held back without a request.
    let failed = scrape.sum("talkover_exporter_poll_errors_total", &[("reason", reason)])
        + scrape.sum(
            "talkover_exporter_poll_errors_total",
            &[("reason", "api_down")],
        );
    let outcome = match outage {
        Outage::Unavailable => "http_error",
        Outage::Refused => "connection_error",
    };
    assert!(
        failed >= 2.0
            && scrape.sum("talkover_exporter_api_requests_total", &[("outcome", outcome)]) >= 1.0,
        "{what}: the failed polls are counted ({reason} or api_down), the failed requests as {outcome}"
    );
    assert_eq!(
        scrape.sum("talkover_exporter_api_up", &[]),
        0.0,
        "{what}: the API is down"
    );

    s.sim.set_outage(None);
    let back = Instant::now();
    wait_for(
        &format!("{what}: every webhook read"),
        Duration::from_secs(20),
        || async {
            scrape_at(port)
                .await
                .is_some_and(|s| s.sum("talkover_up", &[]) == 2.0)
        },
    )
    .await;
    let recovery = back.elapsed();
    for t in s.sim.targets() {
        s.sim.generate(&t, 30);
    }
    s.sim.finish_pending();
    wait_exact_at(port, &s.sim, mark).await;

    let scrape = scrape_at(port).await.expect("scrape");
    assert_eq!(
        scrape.sum("talkover_exporter_api_up", &[]),
        1.0,
        "{what}: back"
    );
    assert!(
        scrape.sum("talkover_exporter_api_outages_total", &[]) >= 1.0,
        "{what}: the outage is counted"
    );
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        logs.contains("the Talkover API looks down")
            && logs.contains("the Talkover API answers again"),
        "{what}: the outage's start and end are logged:\n{logs}"
    );
    let offset = scrape.sum("talkover_exporter_api_clock_offset_seconds", &[]);
    assert!(
        (offset - skew_ms as f64 / 1000.0).abs() < 1.5,
        "{what}: measured offset {offset} s"
    );
    let logs = std::fs::read_to_string(&log).expect("log");
    let warned = logs.matches("the API's clock differs").count();
    assert_eq!(warned, 1, "{what}: a large offset is logged once:\n{logs}");
    assert!(!logs.contains(TOKEN), "{what}: token in the logs");
    recovery
}

/// The API is down when the exporter starts (503s; refused connections),
/// deliveries go on, it comes back: exact counts, both page orders, with
/// the API's clock two minutes ahead of and behind the host's. Counting
/// from the first successful read, or comparing `created_at` with the
/// host's clock, fails every one of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_at_start_with_a_skewed_clock_loses_nothing() {
    let (a, b, c, d) = tokio::join!(
        outage_at_start(Order::NewestFirst, 120_000, Outage::Unavailable, 301),
        outage_at_start(Order::OldestFirst, -120_000, Outage::Refused, 302),
        outage_at_start(Order::NewestFirst, -120_000, Outage::Refused, 303),
        outage_at_start(Order::OldestFirst, 120_000, Outage::Unavailable, 304),
    );
    let slowest = a.max(b).max(c).max(d);
    println!("start-up outage: every webhook read {slowest:?} after the API came back (poll interval 300ms)");
    // A webhook never read is retried at the poll interval, not backed off.
    assert!(
        slowest < Duration::from_secs(3),
        "recovery took {slowest:?}"
    );
}

/// How fast a larger fleet recovers from an outage at start: 40 webhooks
/// polled every second, the API down for its first 10 seconds. Every
/// webhook has its first good read within a few poll intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_webhooks_recover_within_a_few_poll_intervals() {
    let hooks: Vec<String> = (0..40)
        .map(|i| format!("campaigns/c{i}/webhooks/w{i}"))
        .collect();
    let refs: Vec<&str> = hooks.iter().map(String::as_str).collect();
    let s = start_sim(305, Order::NewestFirst, &refs, quiet_profile()).await;
    s.sim.set_outage(Some(Outage::Unavailable));
    let mark = s.sim.mark();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_exporter, port) = spawn_exporter(
        &s.url,
        &refs,
        &[
            "--poll.interval",
            "1s",
            "--talkover.max-requests-per-second",
            "20",
        ],
        &dir.path().join("log"),
    );
    wait_ready_at(port).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        for t in s.sim.targets() {
            s.sim.generate(&t, 1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.sim.set_outage(None);
    let back = Instant::now();
    wait_for("all 40 read", Duration::from_secs(30), || async {
        scrape_at(port)
            .await
            .is_some_and(|s| s.sum("talkover_up", &[]) == 40.0)
    })
    .await;
    let recovery = back.elapsed();
    println!("40 webhooks, 10 s outage at start, poll interval 1s: all read {recovery:?} after the API came back");
    assert!(
        recovery < Duration::from_secs(4),
        "recovery took {recovery:?}, more than a few poll intervals"
    );
    s.sim.finish_pending();
    wait_exact_at(port, &s.sim, mark).await;
}

/// The token Secret is filled a few seconds late: 401s first (the file
/// holds a token the API refuses; a missing one is refused at start),
/// then the right token appears. Everything created after the start is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_filled_late_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "talq_placeholder_until_the_secret_is_filled\n").expect("token");
    let s = start_sim(306, Order::NewestFirst, &[A], quiet_profile()).await;
    let a: Target = A.parse().expect("a");
    s.sim.generate(&a, 50);
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    let mark = s.sim.mark();
    let exporter = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            token_file: Some(token_file.clone()),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    for _ in 0..6 {
        s.sim.generate(&a, 10);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let scrape = exporter.scrape().await;
    assert!(
        scrape.target_value(
            "talkover_exporter_poll_errors_total",
            &a,
            &[("reason", "unauthorized")]
        ) >= 2.0,
        "401s while the token is missing"
    );
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("mount the token");
    s.sim.generate(&a, 10);
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    exporter.stop().await;
}

/// One webhook's first poll alone fails (HTTP 500 to its first request and
/// to the three tries again within the poll), with a second poll due a
/// second later: the attempts made in between are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_request_loses_nothing() {
    let s = start_sim(307, Order::OldestFirst, &[A, B], quiet_profile()).await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 40);
    }
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    s.sim.inject(FaultRule {
        target: Some(A.into()),
        fault: Fault::Status { status: 500 },
        count: 4,
    });
    let mark = s.sim.mark();
    let exporter = start_exporter(
        &s.url,
        &[A, B],
        ExporterOptions {
            interval: Duration::from_secs(1),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 6);
    }
    let a: Target = A.parse().expect("a");
    let scrape = exporter.scrape().await;
    assert_eq!(
        scrape.target_value(
            "talkover_exporter_poll_errors_total",
            &a,
            &[("reason", "http_error")]
        ),
        1.0,
        "A's first poll failed"
    );
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    exporter.stop().await;
}

/// A webhook that discovery lists while its log cannot be read counts
/// from the discovery run that first listed it: its history is not
/// counted, what came after is, once its log can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_discovered_while_the_api_fails_loses_nothing() {
    let s = start_sim(308, Order::NewestFirst, &[A], quiet_profile()).await;
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
    // A new webhook with a history appears; its log fails for a while.
    let b: Target = B.parse().expect("b");
    s.sim.inject(FaultRule {
        target: Some(B.into()),
        fault: Fault::Status { status: 503 },
        count: 15,
    });
    s.sim.add_webhook(b.clone(), quiet_profile());
    s.sim.generate(&b, 80);
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    let mark = s.sim.mark();
    wait_for("B discovered", Duration::from_secs(10), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_webhook_info", &b, &[])
            == 1.0
    })
    .await;
    for _ in 0..5 {
        s.sim.generate(&b, 7);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    let scrape = exporter.scrape().await;
    assert!(
        scrape.target_value(
            "talkover_exporter_poll_errors_total",
            &b,
            &[("reason", "http_error")]
        ) >= 1.0,
        "B's first reads failed"
    );
    exporter.stop().await;
}

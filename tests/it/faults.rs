//! API faults fail one poll of one target, are counted and logged, and the
//! next poll resumes exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use talkover_count::target::Target;
use talkover_sim::{Fault, FaultRule, Order};
use tokio::net::TcpListener;

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "campaigns/cmp-2/webhooks/wh-2";

/// One target answering 500 does not stop the other from counting; when it
/// recovers it catches up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_does_not_delay_others() {
    let s = start_sim(21, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    s.sim.inject(FaultRule {
        target: Some(A.into()),
        fault: Fault::Status { status: 500 },
        count: 1_000_000,
    });
    s.sim.generate(&a, 30);
    s.sim.generate(&b, 30);
    s.sim.finish_pending();
    // B converges while A keeps failing.
    wait_for(
        "B counted while A fails",
        Duration::from_secs(10),
        || async {
            let scrape = exporter.scrape().await;
            scrape.attempts(&b) == s.sim.truth(mark)[&b]
                && scrape.target_value("talkover_up", &a, &[]) == 0.0
                && scrape.target_value(
                    "talkover_exporter_poll_errors_total",
                    &a,
                    &[("reason", "http_error")],
                ) > 0.0
        },
    )
    .await;
    let scrape = exporter.scrape().await;
    assert_eq!(
        scrape.target_value("talkover_webhook_delivery_attempts_total", &a, &[]),
        0.0
    );
    assert!(
        scrape.sum(
            "talkover_exporter_api_requests_total",
            &[("outcome", "http_error"), ("code", "500")]
        ) > 0.0
    );
    s.sim.clear_faults();
    wait_exact(&exporter, &s.sim, mark).await;
    assert_eq!(
        exporter.scrape().await.target_value("talkover_up", &a, &[]),
        1.0
    );
    exporter.stop().await;
}

/// A wrong token: the poll fails as `unauthorized`, readiness is still
/// reached (the first poll finished), and the token shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_reported_not_fatal() {
    let s = start_sim(22, Order::NewestFirst, &[A], quiet_profile()).await;
    let exporter = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            token: "talq_wrong_token_value".into(),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let a: Target = A.parse().expect("a");
    let scrape = exporter.scrape().await;
    assert_eq!(scrape.target_value("talkover_up", &a, &[]), 0.0);
    assert!(
        scrape.target_value(
            "talkover_exporter_poll_errors_total",
            &a,
            &[("reason", "unauthorized")]
        ) > 0.0
    );
    assert!(scrape.sum("talkover_exporter_api_requests_total", &[("code", "401")]) > 0.0);
    assert!(!scrape.raw.contains("talq_"), "no token in /metrics");
    exporter.stop().await;
}

/// Each kind of broken answer fails that poll with its own reason; after
/// the faults, counting resumes exactly where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_fail_cleanly_and_counting_resumes() {
    let s = start_sim(23, Order::NewestFirst, &[A], quiet_profile()).await;
    let exporter = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            timeout: Duration::from_millis(500),
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    let a: Target = A.parse().expect("a");
    let cases = [
        (Fault::Html, "invalid_response"),
        (Fault::Truncated, "invalid_response"),
        (Fault::SuccessFalse, "api_error"),
        (Fault::Reset, "connection"),
        (Fault::Delay { ms: 1500 }, "timeout"),
        (Fault::Status { status: 503 }, "http_error"),
        (
            Fault::RateLimit {
                retry_after: Some("1".into()),
            },
            "rate_limited",
        ),
    ];
    for (fault, reason) in cases {
        s.sim.generate(&a, 25);
        // A page is asked for four times within a poll: each try broken,
        // the poll fails.
        s.sim.inject(FaultRule {
            target: None,
            fault: fault.clone(),
            count: 4,
        });
        wait_for(
            &format!("{fault:?} counted as {reason}"),
            Duration::from_secs(15),
            || async {
                exporter.scrape().await.target_value(
                    "talkover_exporter_poll_errors_total",
                    &a,
                    &[("reason", reason)],
                ) > 0.0
            },
        )
        .await;
    }
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    exporter.stop().await;
}

/// A 302 to another host is not followed, so the token never reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_with_the_token() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let other = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let other_addr = other.local_addr().expect("addr");
    let app = axum::Router::new().fallback(get({
        let seen = seen.clone();
        move |headers: HeaderMap| async move {
            seen.lock().expect("lock").push(headers);
            "{}"
        }
    }));
    tokio::spawn(async move {
        let _ = axum::serve(other, app).await;
    });

    let s = start_sim(24, Order::NewestFirst, &[A], quiet_profile()).await;
    s.sim.inject(FaultRule {
        target: None,
        fault: Fault::Redirect {
            location: format!("http://{other_addr}/steal"),
        },
        count: 1_000,
    });
    let exporter = start_exporter(&s.url, &[A], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let a: Target = A.parse().expect("a");
    let scrape = exporter.scrape().await;
    assert!(scrape.sum("talkover_exporter_api_requests_total", &[("code", "302")]) > 0.0);
    assert_eq!(scrape.target_value("talkover_up", &a, &[]), 0.0);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the redirect target was contacted"
    );
    exporter.stop().await;
}

/// A page over --talkover.max-body-size is refused without being buffered
/// and read again in smaller pages, so large payloads never block counting;
/// an entry too large even alone is counted as missed once, not retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_pages_are_split_and_oversized_entries_missed_once() {
    let s = start_sim(
        25,
        Order::NewestFirst,
        &[A],
        talkover_sim::Profile {
            payload_bytes: 4096,
            ..quiet_profile()
        },
    )
    .await;
    let a: Target = A.parse().expect("a");
    s.sim.generate(&a, 100);
    s.sim.finish_pending();
    // History from a minute ago: clear of the exporter's start, which it
    // knows on the API's clock to about a second.
    s.sim.backdate(Duration::from_secs(60));
    let exporter = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            max_body_size: 64 << 10,
            ..ExporterOptions::default()
        },
    )
    .await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    s.sim.generate(&a, 60);
    s.sim.generate_oversized(&a, 100 << 10);
    s.sim.generate(&a, 60);
    s.sim.finish_pending();
    wait_exact_except(&exporter, &s.sim, mark, 1).await;
    // Several more polls: the oversized entry stays counted once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let scrape = exporter.scrape().await;
    assert_eq!(
        scrape.target_value(
            "talkover_exporter_logs_missed_total",
            &a,
            &[("reason", "too_large")]
        ),
        1.0
    );
    assert!(
        scrape.sum(
            "talkover_exporter_api_requests_total",
            &[("outcome", "too_large")]
        ) > 0.0
    );
    assert_eq!(
        scrape.target_value("talkover_up", &a, &[]),
        1.0,
        "smaller pages succeed"
    );
    exporter.stop().await;
}

/// Waits until the counted total is the truth minus `missing` attempts.
async fn wait_exact_except(
    exporter: &Exporter,
    sim: &talkover_sim::Simulator,
    mark: u64,
    missing: u64,
) {
    wait_for(
        "counts up to the oversized entry",
        Duration::from_secs(20),
        || async {
            let truth: u64 = sim.truth(mark).values().flat_map(|t| t.values()).sum();
            let got = exporter
                .scrape()
                .await
                .sum("talkover_webhook_delivery_attempts_total", &[]) as u64;
            got + missing == truth
        },
    )
    .await;
}

/// --talkover.max-requests-per-second caps all targets together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_budget_is_shared_by_all_targets() {
    let names: Vec<String> = (0..6)
        .map(|i| format!("campaigns/c{i}/webhooks/w{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = start_sim(26, Order::NewestFirst, &refs, quiet_profile()).await;
    let exporter = start_exporter(
        &s.url,
        &refs,
        ExporterOptions {
            interval: Duration::from_millis(50),
            max_rps: 5.0,
            ..ExporterOptions::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = s.sim.targets().iter().map(|t| s.sim.requests(t)).sum();
    // 5/s plus a burst of 5; unthrottled, 6 targets every 50 ms would make ~360.
    let allowed = (5.0 * elapsed + 5.0 + 1.0) as u64;
    assert!(
        total <= allowed,
        "{total} requests in {elapsed:.1}s, budget {allowed}"
    );
    assert!(
        total >= 10,
        "only {total} requests: the budget should still allow 5/s"
    );
    exporter.stop().await;
}

/// A 429 for one target holds back every target sharing the token for
/// the Retry-After time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_slows_every_target() {
    let s = start_sim(27, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    s.sim.inject(FaultRule {
        target: Some(A.into()),
        fault: Fault::RateLimit {
            retry_after: Some("2".into()),
        },
        count: 1,
    });
    wait_for("the 429", Duration::from_secs(5), || async {
        s.sim.faults_served().contains_key("rate_limit")
    })
    .await;
    let before = s.sim.requests(&b);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = s.sim.requests(&b) - before;
    assert!(
        during <= 1,
        "B made {during} requests while the API asked everyone to wait"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        s.sim.requests(&b) - before > 3,
        "B resumes after Retry-After"
    );
    // A's page was asked for again within its poll once the pause was
    // over: the 429 is a failed request, not a failed poll.
    let scrape = exporter.scrape().await;
    assert!(
        scrape.sum(
            "talkover_exporter_api_requests_total",
            &[("outcome", "rate_limited")]
        ) >= 1.0
    );
    assert_eq!(scrape.target_value("talkover_up", &a, &[]), 1.0);
    exporter.stop().await;
}

/// --talkover.token-file is re-read when it changes, and once more when the
/// API refuses the token: a rotation mid-run loses nothing, and neither
/// token ever reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_through_the_token_file() {
    const OLD: &str = "talq_rotation_old_0000000000";
    const NEW: &str = "talq_rotation_new_1111111111";
    const NEWER: &str = "talq_rotation_new_2222222222";
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    let log_path = dir.path().join("exporter.log");
    std::fs::write(&token_file, format!("{OLD}\n")).expect("token file");
    let s = start_sim(28, Order::NewestFirst, &[A], quiet_profile()).await;
    s.sim.set_token(Some(OLD.into()));
    let a: Target = A.parse().expect("a");
    let port = free_port();
    let mut child = ChildGuard::spawn(
        "exporter",
        std::process::Command::new(BIN)
            .args([
                "--talkover.url",
                &s.url,
                "--talkover.allow-insecure",
                "--target",
                A,
            ])
            .args([
                "--poll.interval",
                "100ms",
                "--log.level",
                "debug",
                "--log.format",
                "json",
            ])
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .arg("--talkover.token-file")
            .arg(&token_file)
            .env_remove("TALKOVER_TOKEN"),
        log_path.clone(),
    );
    let scrape = || scrape_at(port);
    wait_for("ready", Duration::from_secs(20), || async {
        scrape()
            .await
            .is_some_and(|s| s.target_value("talkover_up", &a, &[]) == 1.0)
    })
    .await;
    let mark = s.sim.mark();
    s.sim.generate(&a, 20);

    // The API starts wanting the new token before the file changes: polls fail...
    s.sim.set_token(Some(NEW.into()));
    s.sim.generate(&a, 20);
    wait_for("unauthorized", Duration::from_secs(10), || async {
        scrape().await.is_some_and(|s| {
            s.target_value(
                "talkover_exporter_poll_errors_total",
                &a,
                &[("reason", "unauthorized")],
            ) > 0.0
        })
    })
    .await;
    // ...until the Secret is updated in place.
    std::fs::write(&token_file, format!("{NEW}\n")).expect("rotate");
    s.sim.generate(&a, 20);
    let total_of =
        |sc: &Scrape| sc.target_value("talkover_webhook_delivery_attempts_total", &a, &[]);
    s.sim.finish_pending();
    let want: u64 = s.sim.truth(mark)[&a].values().sum();
    wait_for(
        "caught up after rotation",
        Duration::from_secs(10),
        || async {
            scrape()
                .await
                .is_some_and(|sc| total_of(&sc) as u64 == want)
        },
    )
    .await;

    // A rotation the file's timestamp does not show is found on the 401.
    let stamp = std::fs::metadata(&token_file)
        .and_then(|m| m.modified())
        .expect("mtime");
    s.sim.set_token(Some(NEWER.into()));
    std::fs::write(&token_file, format!("{NEWER}\n")).expect("rotate again");
    std::fs::File::options()
        .write(true)
        .open(&token_file)
        .and_then(|f| f.set_modified(stamp))
        .expect("keep mtime");
    let errors = |sc: &Scrape| {
        sc.target_value(
            "talkover_exporter_poll_errors_total",
            &a,
            &[("reason", "unauthorized")],
        )
    };
    let errors_before = errors(&scrape().await.expect("scrape"));
    s.sim.generate(&a, 20);
    s.sim.finish_pending();
    let want: u64 = s.sim.truth(mark)[&a].values().sum();
    wait_for(
        "counted with the re-read token",
        Duration::from_secs(10),
        || async {
            scrape()
                .await
                .is_some_and(|sc| total_of(&sc) as u64 == want)
        },
    )
    .await;
    assert_eq!(
        errors(&scrape().await.expect("scrape")),
        errors_before,
        "the 401 was retried with the new token, not failed"
    );

    let _ = child.child().kill();
    let _ = child.child().wait();
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(logs.contains("token file changed"), "rotation not logged");
    for token in [OLD, NEW, NEWER] {
        assert!(!logs.contains(token), "a token reached the logs");
    }
}

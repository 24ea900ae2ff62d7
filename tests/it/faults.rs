//! API faults fail one poll of one target, are counted and logged, and the
//! next poll resumes exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use talkover_exporter::simulator::{Fault, FaultRule, ListOrder};
use talkover_exporter::target::Target;
use tokio::net::TcpListener;

use crate::util::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "campaigns/cmp-2/webhooks/wh-2";

/// One target answering 500 does not stop the other from counting; when it
/// recovers it catches up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_target_does_not_delay_others() {
    let s = start_sim(21, ListOrder::NewestFirst, &[A, B], quiet_profile()).await;
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
        scrape.target_value(
            "talkover_exporter_api_requests_total",
            &a,
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
    let s = start_sim(22, ListOrder::NewestFirst, &[A], quiet_profile()).await;
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
    assert!(
        scrape.target_value(
            "talkover_exporter_api_requests_total",
            &a,
            &[("code", "401")]
        ) > 0.0
    );
    assert!(!scrape.raw.contains("talq_"), "no token in /metrics");
    exporter.stop().await;
}

/// Each kind of broken answer fails that poll with its own reason; after
/// the faults, counting resumes exactly where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_fail_cleanly_and_counting_resumes() {
    let s = start_sim(23, ListOrder::NewestFirst, &[A], quiet_profile()).await;
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
        s.sim.inject(FaultRule {
            target: None,
            fault: fault.clone(),
            count: 1,
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

    let s = start_sim(24, ListOrder::NewestFirst, &[A], quiet_profile()).await;
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
    assert!(
        scrape.target_value(
            "talkover_exporter_api_requests_total",
            &a,
            &[("code", "302")]
        ) > 0.0
    );
    assert_eq!(scrape.target_value("talkover_up", &a, &[]), 0.0);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the redirect target was contacted"
    );
    exporter.stop().await;
}

/// A body over --talkover.max-body-size is refused, not buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused() {
    let s = start_sim(
        25,
        ListOrder::NewestFirst,
        &[A],
        talkover_exporter::simulator::Profile {
            payload_bytes: 4096,
            ..quiet_profile()
        },
    )
    .await;
    let a: Target = A.parse().expect("a");
    s.sim.generate(&a, 100);
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
    let scrape = exporter.scrape().await;
    assert!(
        scrape.target_value(
            "talkover_exporter_poll_errors_total",
            &a,
            &[("reason", "body_too_large")]
        ) > 0.0
    );
    assert!(
        scrape.target_value(
            "talkover_exporter_api_requests_total",
            &a,
            &[("outcome", "too_large")]
        ) > 0.0
    );
    exporter.stop().await;
}

//! The failed attempts each webhook's page lists: the simulator's failures,
//! with their error text and response excerpt, exactly those counted;
//! none of the bodies when they are off; kept across restarts; hostile
//! texts capped and stripped.

use std::time::Duration;

use serde_json::{json, Value};
use talkover_count::model::{clean, ERROR_CAP, RESPONSE_CAP};
use talkover_count::target::Target;
use talkover_sim::{Order, Profile, SimFailure};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

/// Failing often, so sixty attempts hold more failures than are kept.
fn failing_profile() -> Profile {
    Profile {
        rate_per_second: 0.0,
        success_ratio: 0.4,
        pending_ratio: 0.3,
        ..Profile::default()
    }
}

/// GET with `Accept: application/json`: status and parsed body.
async fn get_json(url: &str) -> (u16, Value) {
    let resp = http_client()
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn page(t: &Target) -> String {
    format!(
        "/webhooks/{}/{}/{}",
        t.scope.segment(),
        t.owner_id,
        t.webhook_id
    )
}

async fn webhook(exporter: &Exporter, t: &Target) -> Value {
    let (status, body) = get_json(&exporter.url(&page(t))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// What the page must show of a body the simulator listed.
fn excerpt(body: &Value) -> Value {
    match body {
        Value::Null => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        Value::String(s) => json!(&*clean(s, RESPONSE_CAP)),
        other => json!(&*clean(&other.to_string(), RESPONSE_CAP)),
    }
}

/// The page's failures against the simulator's, newest first, as many as kept.
fn assert_lists(page: &Value, truth: &[SimFailure], bodies: bool) {
    let listed = page["failures"].as_array().expect("failures");
    assert_eq!(listed.len(), truth.len().min(20), "{page}");
    for (got, want) in listed.iter().zip(truth) {
        assert_eq!(got["id"], want.id.as_str(), "{got}");
        assert_eq!(got["status"], want.status.as_str());
        assert_eq!(got["http_status"], json!(want.http_status));
        assert_eq!(got["error"], json!(want.error), "{got}");
        let want_response = if bodies {
            excerpt(&want.response_body)
        } else {
            Value::Null
        };
        assert_eq!(got["response"], want_response, "{got}");
        assert!(got["created_at"].is_string() && got["attempt"].is_number());
    }
}

/// Makes 60 attempts per webhook once the exporter is ready, and waits
/// until they are all counted.
async fn run_traffic(exporter: &Exporter, s: &Sim) -> u64 {
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 60);
    }
    s.sim.finish_pending();
    wait_exact(exporter, &s.sim, mark).await;
    mark
}

async fn sim_with_history(seed: u64) -> Sim {
    let s = start_sim(seed, Order::NewestFirst, &[A, B], failing_profile()).await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 30);
    }
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_failures_are_listed_with_error_and_response() {
    let s = sim_with_history(61).await;
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    let mark = run_traffic(&exporter, &s).await;
    let failed = s.sim.failed_attempts(mark);
    let truth = s.sim.truth(mark);
    for t in s.sim.targets() {
        let page = webhook(&exporter, &t).await;
        assert!(
            failed[&t].len() > 20,
            "the test wants more failures than are kept"
        );
        assert_lists(&page, &failed[&t], true);
        // Only counted attempts: the baseline's history is not in the hour.
        let attempts: u64 = truth[&t].values().sum();
        assert_eq!(page["attempts_1h"], attempts);
        assert_eq!(page["failures_1h"], failed[&t].len() as u64);
        assert_eq!(page["last_failure"]["error"], json!(failed[&t][0].error));
        // Its polling detail: every request the simulator served it was
        // made by a poll the page counts (one may be in flight meanwhile).
        let polls = page["polls"].as_u64().expect("polls");
        let requests = page["api_requests"].as_u64().expect("api_requests");
        let served = s.sim.requests(&t);
        assert!(polls >= 2 && requests >= polls, "{page}");
        assert!(
            served >= requests && served <= requests + 1,
            "{t}: the simulator served {served}, the page says {requests}"
        );
        assert!(page["last_poll_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0 && s < 5.0));
    }
    let (status, list) = get_json(&exporter.url("/webhooks?sort=failure_ratio")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (status, _) = get_json(&exporter.url("/webhooks/campaigns/cmp-1/nope")).await;
    assert_eq!(status, 404);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_response_bodies_off_no_excerpt_is_kept() {
    let s = sim_with_history(62).await;
    let opts = ExporterOptions {
        flags: flags(&["--failures.keep=20", "--failures.response-body=false"]),
        ..ExporterOptions::default()
    };
    let exporter = start_exporter(&s.url, &[A, B], opts).await;
    let mark = run_traffic(&exporter, &s).await;
    let failed = s.sim.failed_attempts(mark);
    for t in s.sim.targets() {
        assert_lists(&webhook(&exporter, &t).await, &failed[&t], false);
    }
    exporter.stop().await;
}

/// Kept in the state file with the counters: listed again before the first
/// poll after a restart; and a restart with bodies off drops the kept ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_still_listed_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let opts = |response_body| ExporterOptions {
        state_file: Some(state.clone()),
        flags: vec![
            "--failures.keep=20".into(),
            format!("--failures.response-body={response_body}"),
        ],
        ..ExporterOptions::default()
    };
    let s = sim_with_history(63).await;
    let a: Target = A.parse().expect("a");
    let exporter = start_exporter(&s.url, &[A, B], opts(true)).await;
    let mark = run_traffic(&exporter, &s).await;
    let before = webhook(&exporter, &a).await;
    exporter.stop().await;

    // The API down: what is listed can only come from the state file.
    s.sim.set_outage(Some(talkover_sim::Outage::Unavailable));
    let exporter = start_exporter(&s.url, &[A, B], opts(true)).await;
    let after = webhook(&exporter, &a).await;
    assert_eq!(after["failures"], before["failures"]);
    assert_lists(&after, &s.sim.failed_attempts(mark)[&a], true);
    assert_eq!(after["failures_1h"], before["failures_1h"]);
    exporter.stop().await;

    let exporter = start_exporter(&s.url, &[A, B], opts(false)).await;
    let after = webhook(&exporter, &a).await;
    assert_lists(&after, &s.sim.failed_attempts(mark)[&a], false);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_texts_are_capped_and_stripped() {
    let s = start_sim(64, Order::NewestFirst, &[A], failing_profile()).await;
    let a: Target = A.parse().expect("a");
    let exporter = start_exporter(&s.url, &[A], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    let markup = "<script>alert(1)</script>\u{0}\u{1b}[2J\r\n\u{202e}";
    let huge = format!("{markup}{}", "<b>é</b>\n".repeat(20_000));
    assert!(huge.len() > 200_000);
    s.sim.generate_failed(&a, Some(&huge), json!(huge));
    s.sim.generate_failed(
        &a,
        Some("\u{7}"),
        json!({"error": {"rows": [1, 2]}, "html": "<i>"}),
    );
    wait_exact(&exporter, &s.sim, mark).await;

    let page = webhook(&exporter, &a).await;
    let listed = page["failures"].as_array().expect("failures");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0]["response"],
        r#"{"error":{"rows":[1,2]},"html":"<i>"}"#
    );
    assert!(
        listed[0]["error"].is_null(),
        "an error of control characters only is none"
    );
    let error = listed[1]["error"].as_str().expect("error");
    let response = listed[1]["response"].as_str().expect("response");
    assert!(
        error.len() <= ERROR_CAP && error.len() > ERROR_CAP - 16,
        "{}",
        error.len()
    );
    assert!(response.len() <= RESPONSE_CAP && response.len() > RESPONSE_CAP - 16);
    for text in [error, response] {
        assert!(
            text.starts_with("<script>alert(1)</script>[2J  <b>é</b> "),
            "{text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{text:?}"
        );
    }
    exporter.stop().await;
}

/// The real binary in demo mode with bodies off: the failures it lists are
/// ones its simulator lists as failed, with their error text, and no body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_lists_the_demos_failures_without_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [port, sim_port] = free_ports::<2>();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--demo", "--poll.interval", "1s", "--log.level", "warn"])
        .arg("--failures.response-body=false")
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(["--demo.listen-address", &format!("127.0.0.1:{sim_port}")]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALKOVER_") {
            cmd.env_remove(key);
        }
    }
    let mut child = ChildGuard::spawn("exporter", &mut cmd, dir.path().join("exporter.log"));
    // The demo's least reliable webhook: 60 % success at half an attempt a second.
    let path = "campaigns/cmp-renewals/webhooks/wh-slack";
    let url = format!("http://127.0.0.1:{port}/webhooks/campaigns/cmp-renewals/wh-slack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        child.assert_running();
        if let Ok((200, page)) = send(
            http_client().get(&url).header("accept", "application/json"),
            "GET the page",
        )
        .await
        .map(|(status, body)| (status.as_u16(), body))
        {
            let page: Value = serde_json::from_str(&page).expect("JSON page");
            let listed = page["failures"].as_array().cloned().unwrap_or_default();
            if !listed.is_empty() {
                break listed;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure listed in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let truth = get_text(
        &http_client(),
        &format!("http://127.0.0.1:{sim_port}/_sim/failed"),
    )
    .await
    .expect("GET /_sim/failed");
    let truth: Value = serde_json::from_str(&truth).expect("JSON");
    let failed = truth[path].as_array().expect("the webhook's failures");
    for got in &listed {
        let want = failed
            .iter()
            .find(|f| f["id"] == got["id"])
            .unwrap_or_else(|| panic!("{got} is not a failed attempt of the simulator"));
        assert_eq!(got["error"], want["error"], "{got}");
        assert!(got["error"].is_string());
        assert!(got["response"].is_null(), "{got}");
    }
}

/// `--web.config.file` guards the status pages as it guards `/metrics`,
/// and their requests are counted under two fixed handler names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_the_pages_and_they_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let path = dir.path().join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  ops: {hash}\n")).expect("write");
    let s = start_sim(65, Order::NewestFirst, &[A], failing_profile()).await;
    let opts = ExporterOptions {
        flags: vec![format!("--web.config.file={}", path.display())],
        ..ExporterOptions::default()
    };
    let exporter = start_exporter(&s.url, &[A], opts).await;
    // A webhook is listed from its first poll on.
    wait_for("first poll", Duration::from_secs(20), || async {
        send(
            http_client()
                .get(exporter.url("/-/ready"))
                .basic_auth("ops", Some("s3cret")),
            "GET /-/ready",
        )
        .await
        .is_ok_and(|(status, _)| status == 200)
    })
    .await;
    let c = http_client();
    let get = |path: &str, auth: bool| {
        let req = c
            .get(exporter.url(path))
            .header("accept", "application/json");
        let req = if auth {
            req.basic_auth("ops", Some("s3cret"))
        } else {
            req
        };
        async move { send(req, "GET").await.expect("answer").0.as_u16() }
    };
    assert_eq!(get("/webhooks", false).await, 401);
    assert_eq!(get("/webhooks/campaigns/cmp-1/wh-1", false).await, 401);
    assert_eq!(get("/webhooks", true).await, 200);
    assert_eq!(get("/webhooks/campaigns/cmp-1/wh-1", true).await, 200);
    assert_eq!(get("/webhooks/campaigns/cmp-1/other", true).await, 404);
    let scrape = scrape_with(
        c.get(exporter.url("/metrics"))
            .basic_auth("ops", Some("s3cret")),
    )
    .await;
    let requests = |handler: &str, code: &str| {
        scrape.sum(
            "talkover_exporter_http_requests_total",
            &[("handler", handler), ("code", code)],
        )
    };
    assert_eq!(requests("webhooks", "401"), 1.0);
    assert_eq!(requests("webhooks", "200"), 1.0);
    assert_eq!(requests("webhook", "401"), 1.0);
    assert_eq!(requests("webhook", "404"), 1.0);
    exporter.stop().await;
}

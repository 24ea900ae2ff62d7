//! The status pages in a real browser: headless Chromium (Debian's
//! `chromium`, installed by the test command) loads `/webhooks` and a
//! webhook's page from an exporter running against the simulator with
//! failures, hostile ones among them; the test reads the DOM Chromium built
//! and checks the rows, the sparklines and the failure details, and that
//! no markup from the API became an element. It also saves screenshots
//! (`target/screenshots/`; the README's come from there).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use talkover_count::target::Target;
use talkover_sim::{AttemptSpec, Order, Profile};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-orders";
const B: &str = "agents/agt-7/webhooks/wh-crm";
const HOSTILE_ERROR: &str = "<script>document.title='pwned'</script><b id=\"pwned\">bold</b>";
const HOSTILE_BODY: &str =
    "<img src=x onerror=\"document.title='pwned'\"><i id=\"pwned-body\">x</i>";

fn chromium() -> PathBuf {
    find_on_path("chromium").unwrap_or_else(|| {
        panic!("chromium not found on PATH: the test command installs Debian's chromium package")
    })
}

/// Runs headless Chromium with `args` then `url`; its stdout. Time-boxed:
/// a browser that hangs fails the test instead of holding the suite.
async fn chromium_run(profile: &Path, args: &[&str], url: &str) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish within 90 s on {url}"))
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Chromium: cargo test --features e2e"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_rows_sparklines_and_failures_and_runs_nothing_from_the_api() {
    let profile = Profile {
        rate_per_second: 0.0,
        success_ratio: 0.6,
        pending_ratio: 0.2,
        ..Profile::default()
    };
    let s = start_sim(91, Order::NewestFirst, &[A, B], profile).await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 20);
    }
    s.sim.finish_pending();
    s.sim.backdate(Duration::from_secs(60));
    let exporter = start_exporter(&s.url, &[A, B], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 40);
    }
    let a: Target = A.parse().expect("target");
    let big = format!("{HOSTILE_BODY}{}", "z".repeat(200_000));
    s.sim.generate_failed(&a, Some(HOSTILE_ERROR), json!(big));
    s.sim.finish_pending();
    wait_exact(&exporter, &s.sim, mark).await;
    let failed = s.sim.failed_attempts(mark);

    let dir = tempfile::tempdir().expect("tempdir");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");

    // -- /webhooks ------------------------------------------------------------
    let list_url = exporter.url("/webhooks?sort=failure_ratio");
    let dom = chromium_run(dir.path(), &["--dump-dom"], &list_url).await;
    assert!(dom.contains("<title>Webhooks"), "not the list page:\n{dom}");
    assert_eq!(count(&dom, "<tr class=\"webhook\""), 2, "{dom}");
    assert_eq!(
        count(&dom, "<svg class=\"spark\""),
        2,
        "a sparkline per row"
    );
    for t in [A, B] {
        let t: Target = t.parse().expect("target");
        let row_start = dom
            .find(&format!("data-webhook=\"{}\"", t.webhook_id))
            .unwrap_or_else(|| panic!("no row for {}", t.webhook_id));
        let row = &dom[row_start..];
        let row = &row[..row.find("</tr>").expect("row end")];
        // The sparkline carries the minutes; this traffic is all recent.
        let attempts: Vec<u32> = row
            .split("data-attempts=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("data-attempts")
            .split(',')
            .map(|n| n.parse().expect("a count"))
            .collect();
        assert_eq!(attempts.len(), 60);
        assert!(
            attempts.iter().sum::<u32>() > 0,
            "an empty sparkline for {}",
            t.webhook_id
        );
        assert!(row.contains("<polyline class=\"failures\""));
        assert!(row.contains(&format!(
            "href=\"/webhooks/{}/{}/{}\"",
            t.scope.segment(),
            t.owner_id,
            t.webhook_id
        )));
    }
    // Hostile markup is text, not elements, and nothing ran.
    // (A text node keeps its quotes when serialized; an element would be `<b id=…`.)
    assert!(
        !dom.contains("<b id=\"pwned\"") && !dom.contains("<script"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;"),
        "the hostile error is shown as text"
    );
    chromium_run(
        dir.path(),
        &[
            "--window-size=1400,700",
            &format!("--screenshot={}", shots.join("webhooks.png").display()),
        ],
        &exporter.url("/webhooks"),
    )
    .await;

    // -- the failing webhook's page -----------------------------------------
    let page_url = exporter.url("/webhooks/campaigns/cmp-1/wh-orders");
    let dom = chromium_run(dir.path(), &["--dump-dom"], &page_url).await;
    let truth = &failed[&a];
    assert!(!truth.is_empty());
    let shown = count(&dom, "<tr class=\"failure\"");
    assert_eq!(shown, truth.len().min(20), "{dom}");
    // Newest first: the hostile one was made last.
    let first = &truth[0];
    let first_row = dom
        .find(&format!("id=\"attempt-{}\"", first.id))
        .expect("the newest failure's row");
    let second_row = truth
        .get(1)
        .and_then(|f| dom.find(&format!("id=\"attempt-{}\"", f.id)));
    assert!(second_row.is_none_or(|second| first_row < second));
    assert!(
        dom[first_row..].contains("&lt;b id=\"pwned\"&gt;bold&lt;/b&gt;"),
        "{}",
        &dom[first_row..]
    );
    assert!(
        !dom.contains("<b id=\"pwned\"")
            && !dom.contains("<i id=\"pwned-body\"")
            && !dom.contains("<img"),
        "markup from the API became elements"
    );
    assert!(
        dom.contains("<title>wh-orders"),
        "nothing ran: the title is ours"
    );
    // The 200 KB body is cut to its first 512 bytes.
    let response = dom[first_row..]
        .split("<pre class=\"response\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .expect("response cell");
    assert!(response.starts_with("&lt;img"), "{response}");
    assert!(response.matches('z').count() < 512, "the body is capped");
    // The other failures with their error texts, codes and excerpts.
    for f in truth.iter().skip(1).take(19) {
        let at = dom
            .find(&format!("id=\"attempt-{}\"", f.id))
            .expect("a failure row");
        let row = &dom[at..];
        let row = &row[..row.find("</tr>").expect("row end")];
        if let Some(error) = &f.error {
            assert!(row.contains(&html_text(error)), "{error} not in {row}");
        }
        if let Some(code) = f.http_status {
            assert!(row.contains(&format!(">{code}<")), "{code} not in {row}");
        }
    }
    assert!(dom.contains("<svg class=\"spark\""));
    chromium_run(
        dir.path(),
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", shots.join("webhook.png").display()),
        ],
        &page_url,
    )
    .await;
    for shot in ["webhooks.png", "webhook.png"] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
    exporter.stop().await;
}

/// `s` as Chromium serializes a text node.
fn html_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A WebDriver session with headless Chromium through Debian's
/// `chromedriver`, driven over its HTTP protocol: what can measure a
/// page's layout, which `--dump-dom` cannot.
struct Driver {
    http: reqwest::Client,
    session: String,
    _process: ChildGuard,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start(width: u32, height: u32) -> Driver {
        let chromedriver = find_on_path("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver not found on PATH: the test command installs Debian's chromium-driver package")
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let port = free_port();
        let mut cmd = std::process::Command::new(chromedriver);
        cmd.arg(format!("--port={port}"));
        let process = ChildGuard::spawn(
            "chromedriver",
            &mut cmd,
            profile.path().join("chromedriver.log"),
        );
        let http = http_client();
        let base = format!("http://127.0.0.1:{port}");
        wait_for(
            "chromedriver to listen",
            Duration::from_secs(20),
            || async { http.get(format!("{base}/status")).send().await.is_ok() },
        )
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium().display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-extensions", "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().join("chrome").display()),
                ]
            }
        }}});
        let answer = post_json(&http, &format!("{base}/session"), &caps).await;
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Driver {
            http,
            session: format!("{base}/session/{id}"),
            _process: process,
            _profile: profile,
        }
    }

    async fn command(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let answer = post_json(&self.http, &format!("{}/{path}", self.session), &body).await;
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command("url", json!({"url": url})).await;
    }

    /// Runs `script` in the page (WebDriver's own, not the page's: the
    /// pages' Content-Security-Policy allows no script of theirs).
    async fn run(&self, script: &str) -> serde_json::Value {
        self.command("execute/sync", json!({"script": script, "args": []}))
            .await
    }
}

/// POSTs `body` to a WebDriver endpoint; its JSON answer.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(60));
    let (status, text) = send(req, &format!("POST {url}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {url}: HTTP {status}, not JSON ({e}): {text}"))
}

/// In a 1280 px wide window, the `/webhooks` table ends inside the window,
/// its last columns (pending, backlog) included, with long names and errors
/// in it, and the page does not scroll sideways. The failure's class shows
/// beside its error.
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs Chromium and ChromeDriver: cargo test --features e2e"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_table_fits_a_1280_px_window() {
    let a = "campaigns/cmp-renewals-2026-q4-enterprise-accounts/webhooks/wh-crm-salesforce-sync-production";
    let b = "agents/agt-frontdesk-main-office/webhooks/wh-helpdesk-zendesk-tickets";
    let s = start_sim(
        17,
        Order::NewestFirst,
        &[a, b, A],
        Profile {
            rate_per_second: 0.0,
            success_ratio: 0.5,
            pending_ratio: 0.0,
            ..Profile::default()
        },
    )
    .await;
    let exporter = start_exporter(&s.url, &[a, b, A], ExporterOptions::default()).await;
    exporter.wait_ready().await;
    let a_target: Target = a.parse().expect("target");
    let long = "Post \"https://hooks.example.com/talkover/webhooks/receive/v2\": dial tcp 203.0.113.9:443: connect: connection refused (while sending the request body of 48213 bytes to the receiver's load balancer)";
    let refused = AttemptSpec {
        attempt: 1,
        success: false,
        http_status: None,
        duration_ms: 15,
        error: Some(long.into()),
        ..AttemptSpec::default()
    };
    for t in s.sim.targets() {
        s.sim.generate(&t, 30);
    }
    s.sim.append(&a_target, &[refused]);
    wait_exact(&exporter, &s.sim, 0).await;

    let driver = Driver::start(1280, 800).await;
    driver.open(&exporter.url("/webhooks")).await;
    let layout = driver
        .run(
            "const t = document.getElementById('webhooks');\
             const cells = t.querySelectorAll('thead th');\
             const last = cells[cells.length - 1].getBoundingClientRect();\
             return {table: t.getBoundingClientRect().right, lastColumn: last.right,\
                     lastHeader: cells[cells.length - 1].textContent,\
                     viewport: document.documentElement.clientWidth,\
                     scroll: document.documentElement.scrollWidth,\
                     rows: t.querySelectorAll('tbody tr').length,\
                     widths: Array.from(t.querySelectorAll('thead th')).map(e => Math.round(e.getBoundingClientRect().width)),\
                     classes: Array.from(t.querySelectorAll('span.class')).map(e => e.textContent)};",
        )
        .await;
    eprintln!("/webhooks in a 1280 px window: {layout}");
    let num = |k: &str| {
        layout[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {layout}"))
    };
    assert_eq!(layout["rows"], 3, "{layout}");
    assert_eq!(layout["lastHeader"], "backlog", "{layout}");
    assert!(
        num("viewport") <= 1280.0 && num("viewport") > 1000.0,
        "{layout}"
    );
    assert!(
        num("table") <= num("viewport") && num("lastColumn") <= num("viewport"),
        "the table is wider than a 1280 px window: {layout}"
    );
    assert!(
        num("scroll") <= num("viewport"),
        "the page scrolls sideways: {layout}"
    );
    assert!(
        layout["classes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "connection_refused")),
        "the failure's class beside its error: {layout}"
    );
}

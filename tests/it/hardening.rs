//! Hostile clients never starve the exporter: the real binary (`--demo`,
//! polling its four webhooks) under a flood of wrong passwords, thousands
//! of half-open connections, stalled TLS handshakes, and more scrapes at
//! once than `--web.max-requests`. Polling keeps its pace, the right
//! scraper stays fast, descriptors and memory stay bounded.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;
use crate::web::Ca;

/// The real binary with `--demo`, serving on a free port.
fn spawn_demo(extra: &[&str], dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["--demo", "--log.format", "json"])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_remove("TALKOVER_TOKEN");
    let guard = ChildGuard::spawn("exporter", &mut cmd, dir.join("exporter.log"));
    (guard, port)
}

/// Polls finished so far, all webhooks together, read with `client`.
async fn polls(client: &reqwest::Client, url: &str) -> f64 {
    scrape_with(client.get(url))
        .await
        .sum("talkover_exporter_poll_duration_seconds_count", &[])
}

/// Polls per second over `window`.
async fn poll_rate(client: &reqwest::Client, url: &str, window: Duration) -> f64 {
    let before = polls(client, url).await;
    tokio::time::sleep(window).await;
    (polls(client, url).await - before) / window.as_secs_f64()
}

/// Descriptors the process holds open.
/// `(thread id, nice)` of each thread of `pid` whose name starts with `name`.
fn threads_named(pid: u32, name: &str) -> Vec<(u32, i64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if !comm.trim_end().starts_with(name) {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // After the name in parentheses: state is field 3, nice field 19.
            let after = &stat[stat.rfind(')')? + 2..];
            let nice = after.split(' ').nth(16)?.parse().ok()?;
            Some((task.file_name().to_str()?.parse().ok()?, nice))
        })
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Lets this test process hold thousands of sockets.
fn raise_fd_limit() {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=16384:16384",
        ])
        .status()
        .expect("prlimit (util-linux) is required");
    assert!(status.success(), "raising the descriptor limit");
}

/// 16 clients sending wrong passwords (bcrypt cost 12) as fast as they are
/// answered: polling keeps at least 80 % of its quiet pace, and the right
/// scraper, checked by bcrypt once, stays fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_slows_neither_polling_nor_the_right_scraper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("right-password", 12).expect("hash");
    let config = dir.path().join("web.yml");
    std::fs::write(&config, format!("basic_auth_users:\n  prom: '{hash}'\n")).expect("config");
    let (_exporter, port) = spawn_demo(
        &[
            "--poll.interval",
            "250ms",
            "--web.config.file",
            config.to_str().expect("path"),
        ],
        dir.path(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let right = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let authed = |c: &reqwest::Client| c.get(&url).basic_auth("prom", Some("right-password"));
    wait_for("exporter up", Duration::from_secs(20), || async {
        authed(&right).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let authed_client = right.clone();
    let polls_url = url.clone();
    let rate = |window| {
        let c = authed_client.clone();
        let u = polls_url.clone();
        async move {
            let before = polls_with(&c, &u).await;
            tokio::time::sleep(window).await;
            (polls_with(&c, &u).await - before) / Duration::as_secs_f64(&window)
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = rate(Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..16 {
        let (stop, refused, url) = (stop.clone(), refused.clone(), url.clone());
        flood.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .get(&url)
                    .basic_auth("prom", Some("guess"))
                    .send()
                    .await;
                if resp.is_ok_and(|r| r.status() == 401) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scraper = {
        let (right, url, stop) = (right.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = right
                    .get(&url)
                    .basic_auth("prom", Some("right-password"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                assert!(ok, "the right scraper was refused during the flood");
                took.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            took
        })
    };
    let flooded = rate(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut took = scraper.await.expect("scraper");
    for f in flood {
        f.await.expect("flood client");
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "wrong-password flood: polling {flooded:.1}/s against {quiet:.1}/s quiet; right scraper median {median:?} over {} scrapes; {} wrong passwords refused",
        took.len(),
        refused.load(Ordering::Relaxed)
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the flood was answered 401"
    );
    let unauthorized = scrape_with(right.get(&url).basic_auth("prom", Some("right-password")))
        .await
        .sum(
            "talkover_exporter_http_requests_total",
            &[("handler", "metrics"), ("code", "401")],
        );
    assert!(
        unauthorized >= refused.load(Ordering::Relaxed) as f64,
        "every 401 is counted: {unauthorized}"
    );
    assert!(
        flooded >= 0.8 * quiet,
        "polling slowed to {flooded:.1}/s from {quiet:.1}/s"
    );
    assert!(
        median < Duration::from_millis(250),
        "the right scraper's median was {median:?}"
    );
}

async fn polls_with(client: &reqwest::Client, url: &str) -> f64 {
    let request = client.get(url).basic_auth("prom", Some("right-password"));
    scrape_with(request)
        .await
        .sum("talkover_exporter_poll_duration_seconds_count", &[])
}

/// 2,000 connections that send half a request line and then nothing: past
/// `--web.max-connections` they are closed at once, the rest when
/// `--web.read-header-timeout` ends; descriptors stay bounded, polling
/// keeps its pace, and `/metrics` answers right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_and_starve_nothing() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let (exporter, port) = spawn_demo(
        &[
            "--poll.interval",
            "250ms",
            "--web.max-connections",
            "256",
            "--web.read-header-timeout",
            "2s",
        ],
        dir.path(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    wait_for("exporter ready", Duration::from_secs(20), || ready_at(port)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_fds = open_fds(exporter.pid());
    let quiet = poll_rate(&client, &url, Duration::from_secs(4)).await;
    let before = polls(&client, &url).await;

    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..2000 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x").await;
            held.push(s);
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during_fds = open_fds(exporter.pid());
    assert!(
        during_fds <= baseline_fds + 256 + 32,
        "{during_fds} descriptors open (from {baseline_fds}) with 2,000 half-open connections"
    );
    // The header deadline closes what was let in; nothing is left open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = 0;
    for s in held.iter_mut().take(300) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            // EOF, a reset (closed with our unread bytes), or a 408 before the close.
            Ok(Ok(n)) => closed += usize::from(n == 0 || buf.starts_with(b"HTTP/1.1 408")),
            Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, 300, "the server closed the half-open connections");
    let elapsed = started.elapsed().as_secs_f64();
    let scrape = scrape_with(client.get(&url)).await;
    let during =
        (scrape.sum("talkover_exporter_poll_duration_seconds_count", &[]) - before) / elapsed;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_fds = open_fds(exporter.pid());
    let refused = |reason| {
        scrape.sum(
            "talkover_exporter_http_refused_total",
            &[("reason", reason)],
        )
    };
    println!(
        "half-open: 2,000 opened in {opened:?}; descriptors {baseline_fds} -> {during_fds} -> {after_fds}; polling {during:.1}/s against {quiet:.1}/s quiet; refused at the limit {}, closed at the header deadline {}",
        refused("max_connections"),
        refused("header_timeout")
    );
    assert!(refused("max_connections") >= 1000.0);
    assert!(refused("header_timeout") >= 200.0);
    assert!(
        after_fds <= baseline_fds + 16,
        "{after_fds} descriptors left open"
    );
    assert!(
        during >= 0.8 * quiet,
        "polling slowed to {during:.1}/s from {quiet:.1}/s"
    );
}

/// TLS connections that never start their handshake are closed at the
/// deadline and counted; a real client still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("hardening test CA");
    let (cert, key) = ca.issue(dir.path(), "server", &["localhost"]);
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let (exporter, port) = spawn_demo(
        &[
            "--web.config.file",
            config.to_str().expect("path"),
            "--web.read-header-timeout",
            "2s",
        ],
        dir.path(),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("ca"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("https://localhost:{port}/metrics");
    wait_for("exporter up over TLS", Duration::from_secs(20), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let baseline_fds = open_fds(exporter.pid());
    let mut stalled = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            stalled.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A real client is not held up by them.
    let resp = client
        .get(&url)
        .send()
        .await
        .expect("scrape during the stall");
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = 0;
    for s in stalled.iter_mut() {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, 300, "stalled handshakes are closed at the deadline");
    let scrape = scrape_with(client.get(&url)).await;
    assert!(
        scrape.sum(
            "talkover_exporter_http_refused_total",
            &[("reason", "tls_handshake_timeout")]
        ) >= 300.0
    );
    assert!(open_fds(exporter.pid()) <= baseline_fds + 16);
}

/// More scrapes at once than `--web.max-requests`: the excess gets 503 at
/// once, none hangs, memory stays bounded, and scrapes succeed again once
/// the slow ones go away. The slow scrapers read nothing of bodies larger
/// than the socket buffers (8,000 webhooks), so their renders stay in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_past_max_requests_get_503_and_none_hangs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let targets: Vec<String> = (0..8000)
        .map(|i| format!("  - campaigns/load-{}/webhooks/w{i}", i / 10))
        .collect();
    let file = dir.path().join("targets.yml");
    std::fs::write(&file, format!("targets:\n{}\n", targets.join("\n"))).expect("config");
    let (exporter, port) = spawn_demo(
        &[
            "--config.file",
            file.to_str().expect("path"),
            "--talkover.max-requests-per-second",
            "100000",
            "--web.max-requests",
            "2",
            // 4 more series per webhook: a body past the socket buffers.
            "--collector.poll-stats",
        ],
        dir.path(),
    );
    wait_for("exporter ready", Duration::from_secs(40), || ready_at(port)).await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let size = client
        .get(&url)
        .send()
        .await
        .expect("scrape")
        .bytes()
        .await
        .expect("body")
        .len();
    assert!(
        size > 5 << 20,
        "a body larger than the socket buffers ({size} bytes)"
    );

    // Two slow scrapers take both places and read nothing.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut s = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Their renders wait on threads of their own, below the pollers'
    // priority (nice 10), so no scraper slows the counting.
    let scrape_threads = threads_named(exporter.pid(), "scrape");
    assert_eq!(scrape_threads.len(), 2, "{scrape_threads:?}");
    for (tid, nice) in &scrape_threads {
        assert_eq!(*nice, 10, "render thread {tid}");
    }
    let tokio_nice: Vec<i64> = threads_named(exporter.pid(), "tokio-rt-worker")
        .into_iter()
        .map(|(_, nice)| nice)
        .collect();
    assert!(
        !tokio_nice.is_empty() && tokio_nice.iter().all(|n| *n == 0),
        "{tokio_nice:?}"
    );
    let mut answers = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        answers.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(&url).send().await.expect("no scrape hangs");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            (status, body, started.elapsed())
        }));
    }
    for a in answers {
        let (status, body, took) = a.await.expect("scrape task");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("--web.max-requests"), "{body}");
        assert!(took < Duration::from_secs(2), "a refusal took {took:?}");
    }
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", exporter.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(rss_kib < 512 * 1024, "resident memory {rss_kib} KiB");
    // The slow scrapers go away: their places come back.
    drop(slow);
    wait_for(
        "a scrape succeeds again",
        Duration::from_secs(10),
        || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let scrape = scrape_with(client.get(&url)).await;
    assert!(
        scrape.sum(
            "talkover_exporter_http_requests_total",
            &[("handler", "metrics"), ("code", "503")]
        ) >= 8.0
    );
    assert!(
        scrape.sum(
            "talkover_exporter_http_refused_total",
            &[("reason", "max_requests")]
        ) >= 8.0
    );
    println!(
        "max-requests: body {size} bytes, resident {} MiB",
        rss_kib >> 10
    );
}

/// HTTP/1.1 only: a client speaking HTTP/2 without negotiation (h2c prior
/// knowledge) gets no HTTP/2 answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_exporter, port) = spawn_demo(&[], dir.path());
    wait_for("exporter ready", Duration::from_secs(20), || ready_at(port)).await;
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
    // An HTTP/2 server answers the preface with a SETTINGS frame (type 4).
    let settings = answer.len() >= 9 && answer[3] == 4;
    assert!(!settings, "the server spoke HTTP/2: {answer:?}");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

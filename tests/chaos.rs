//! The proof of exactness: a randomized run (fixed seeds, bounded time) that
//! starts with the API down (503s, or connections refused) while deliveries
//! go on, and in which the simulator injects every kind of fault at random while
//! generating traffic with pending entries, retries, hostile entries and a
//! burst larger than the page budget, a second burst read while a steady
//! 18 % of the answers are faults, and a mid-run outage of the whole API;
//! the real exporter binary is restarted twice with a state file, once with
//! SIGTERM and once with SIGKILL in the middle of a poll. `/metrics` is
//! scraped throughout. After
//! traffic stops and the exporter converges, every counter must equal the
//! simulator's ground truth, and no scrape may ever have seen a counter go
//! down.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use talkover_count::target::Target;
use talkover_sim::{Fault, FaultRule, Order, Outage, Profile, Simulator};
use tokio::net::TcpListener;

mod support;
use support::{free_port, ready_at, scrape_at, wait_for, ChildGuard, Scrape, BIN};

const TOKEN: &str = "talq_chaos_secret_9f8e7d6c5b4a";
const TARGETS: [&str; 3] = [
    "campaigns/cmp-a/webhooks/wh-1",
    "campaigns/cmp-b/webhooks/wh-2",
    "agents/agt-c/webhooks/wh-3",
];

/// Series name + labels → value, for counters only.
type Counters = BTreeMap<String, f64>;

fn spawn_exporter(
    sim_url: &str,
    port: u16,
    state: &std::path::Path,
    log: &std::path::Path,
) -> ChildGuard {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--talkover.url",
        sim_url,
        "--talkover.allow-insecure",
        "--talkover.timeout",
        "1s",
        "--poll.interval",
        "200ms",
        "--talkover.max-requests-per-second",
        "200",
        "--web.listen-address",
        &format!("127.0.0.1:{port}"),
        "--log.level",
        "debug",
    ])
    .arg("--state.file")
    .arg(state)
    .env("TALKOVER_TOKEN", TOKEN)
    .env_remove("TALKOVER_TARGETS");
    for t in TARGETS {
        cmd.args(["--target", t]);
    }
    // Appends: one log across restarts, searched whole for the token.
    ChildGuard::spawn("exporter", &mut cmd, log.to_path_buf())
}

/// The counters of a scrape (attempts and retries), by series.
fn counters(scrape: &Scrape) -> Counters {
    scrape
        .series
        .iter()
        .filter(|(name, _, _)| {
            name == "talkover_webhook_delivery_attempts_total"
                || name == "talkover_webhook_delivery_retries_total"
        })
        .map(|(name, labels, v)| (format!("{name}{labels:?}"), *v))
        .collect()
}

/// Watches every scrape for a counter that went down, across restarts too.
#[derive(Default)]
struct Watch {
    last: Counters,
    decreases: Vec<String>,
    scrapes: u64,
    served: String,
}

async fn run_chaos(seed: u64, order: Order) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let log = dir.path().join("exporter.log");
    let sim = Simulator::new(seed, Some(TOKEN.to_string()), order);
    let targets: Vec<Target> = TARGETS.iter().map(|t| t.parse().expect("target")).collect();
    let profile = Profile {
        rate_per_second: 0.0,
        pending_ratio: 0.3,
        success_ratio: 0.7,
        hostile_ratio: 0.1,
        ..Profile::default()
    };
    for t in &targets {
        sim.add_webhook(t.clone(), profile.clone());
        sim.generate(t, 150);
    }
    sim.finish_pending();
    // History from a minute ago, clear of the start (known to about a second).
    sim.backdate(Duration::from_secs(60));
    // The API is down when the exporter starts, and deliveries go on.
    let outage = if order == Order::NewestFirst {
        Outage::Unavailable
    } else {
        Outage::Refused
    };
    sim.set_outage(Some(outage));
    let mark = sim.mark();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let sim_url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(sim.clone().serve(listener));

    let port = free_port();
    let mut exporter = spawn_exporter(&sim_url, port, &state, &log);
    wait_for("first start ready", Duration::from_secs(30), || {
        ready_at(port)
    })
    .await;
    let outage_started = Instant::now();
    let mut during_outage = 0;
    while outage_started.elapsed() < Duration::from_secs(3) {
        for t in &targets {
            let n = 5;
            sim.generate(t, n);
            during_outage += n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.set_outage(None);
    let outage_secs = outage_started.elapsed().as_secs_f64();

    let watch = Arc::new(Mutex::new(Watch::default()));
    let current_port = Arc::new(std::sync::atomic::AtomicU16::new(port));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (watch, current_port, stop) = (watch.clone(), current_port.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let port = current_port.load(std::sync::atomic::Ordering::Relaxed);
                if let Some(scrape) = scrape_at(port).await {
                    let now = counters(&scrape);
                    let mut guard = watch.lock().expect("watch");
                    let w = &mut *guard;
                    w.scrapes += 1;
                    for (k, v) in &now {
                        if let Some(prev) = w.last.get(k) {
                            if v < prev {
                                w.decreases.push(format!("{k}: {prev} -> {v}"));
                            }
                        }
                    }
                    w.last.extend(now);
                    // Enough of what was served to search it for the token.
                    if w.served.len() < 8 << 20 {
                        w.served.push_str(&scrape.raw);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut rng = fastrand::Rng::with_seed(seed);
    let faults = [
        Fault::Status { status: 500 },
        Fault::Status { status: 502 },
        Fault::Status { status: 503 },
        Fault::RateLimit {
            retry_after: Some("1".into()),
        },
        Fault::RateLimit { retry_after: None },
        Fault::Html,
        Fault::Truncated,
        Fault::SuccessFalse,
        Fault::Delay { ms: 1500 },
        Fault::Reset,
    ];
    let mut restarts = 0;
    let started = Instant::now();
    let run_for = Duration::from_secs(30);
    let mid_outage = if order == Order::NewestFirst {
        Outage::Refused
    } else {
        Outage::Unavailable
    };
    let mut outage_at = None;
    let mut outage_for = Duration::ZERO;
    let mut step = 0u32;
    while started.elapsed() < run_for {
        step += 1;
        for t in &targets {
            sim.generate(t, rng.usize(0..12));
        }
        if rng.f64() < 0.3 {
            sim.finish_pending();
        }
        if rng.f64() < 0.25 {
            sim.inject(FaultRule {
                target: rng
                    .bool()
                    .then(|| TARGETS[rng.usize(0..TARGETS.len())].to_string()),
                fault: faults[rng.usize(0..faults.len())].clone(),
                count: rng.u32(1..3),
            });
        }
        if step == 40 {
            // A burst larger than the page budget (10 pages of 100).
            sim.generate(&targets[0], 2500);
        }
        if step == 80 {
            // Another, read while a steady 18 % of the answers are faults.
            sim.set_fault_ratio(0.18, faults.to_vec());
            sim.generate(&targets[1], 2500);
        }
        if step == 130 {
            sim.set_fault_ratio(0.0, Vec::new());
        }
        if step == 150 {
            // The whole API down in the middle of traffic.
            sim.set_outage(Some(mid_outage));
            outage_at = Some(Instant::now());
        }
        if step == 180 {
            sim.set_outage(None);
            outage_for = outage_at.map_or(Duration::ZERO, |t| t.elapsed());
        }
        if step == 60 {
            // SIGTERM: graceful; traffic continues while it is down.
            let pid = exporter.pid().to_string();
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            let t = Instant::now();
            let status = exporter.child().wait().expect("wait");
            assert!(status.success(), "SIGTERM exit: {status:?}");
            assert!(
                t.elapsed() < Duration::from_secs(6),
                "SIGTERM took {:?}",
                t.elapsed()
            );
            for t in &targets {
                sim.generate(t, 40);
            }
            let port = free_port();
            current_port.store(port, std::sync::atomic::Ordering::Relaxed);
            exporter = spawn_exporter(&sim_url, port, &state, &log);
            restarts += 1;
        }
        if step == 110 {
            // SIGKILL in the middle of a poll: every target's next request hangs.
            for t in TARGETS {
                sim.inject(FaultRule {
                    target: Some(t.into()),
                    fault: Fault::Delay { ms: 800 },
                    count: 1,
                });
            }
            tokio::time::sleep(Duration::from_millis(450)).await;
            exporter.child().kill().expect("SIGKILL");
            exporter.child().wait().expect("wait");
            for t in &targets {
                sim.generate(t, 40);
            }
            let port = free_port();
            current_port.store(port, std::sync::atomic::Ordering::Relaxed);
            exporter = spawn_exporter(&sim_url, port, &state, &log);
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(restarts, 2, "the run was too short for both restarts");
    assert!(
        outage_for > Duration::ZERO,
        "the run was too short for the outage"
    );

    // Traffic stops; everything in flight finishes; the API heals.
    sim.clear_faults();
    sim.finish_pending();
    let port = current_port.load(std::sync::atomic::Ordering::Relaxed);
    let truth = sim.truth(mark);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut got = Scrape::parse("");
    loop {
        if let Some(scrape) = scrape_at(port).await {
            got = scrape;
            if targets.iter().all(|t| got.attempts(t) == truth[t]) {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let commit_p99 = scrape_at(port)
        .await
        .map(|s| commit_quantile(&s.raw, 0.99))
        .unwrap_or_default();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    scraper.await.expect("scraper");

    let (mut lost, mut double, mut generated) = (0u64, 0u64, 0u64);
    for t in &targets {
        let mine = got.attempts(t);
        for (k, want) in &truth[t] {
            generated += want;
            let have = mine.get(k).copied().unwrap_or(0);
            lost += want.saturating_sub(have);
            double += have.saturating_sub(*want);
        }
        for (k, have) in &mine {
            if !truth[t].contains_key(k) {
                double += have;
            }
        }
    }
    let w = watch.lock().expect("watch");
    let faults_served: u64 = sim.faults_served().values().sum();
    println!(
        "chaos[{order:?} seed {seed}]: start-up outage {outage:?} {:.1} s with {during_outage} attempts, burst of 2500 under 18 % faults, mid-run outage {mid_outage:?} {:.1} s, attempts generated {generated}, faults {faults_served} {:?}, hostile {:?}, restarts {restarts}, lost {lost}, double-counted {double}, decreases {}, scrapes {}, state commit p99 <= {commit_p99}",
        outage_secs,
        outage_for.as_secs_f64(),
        sim.faults_served(),
        sim.hostile(mark),
        w.decreases.len(),
        w.scrapes
    );
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let state_bytes = std::fs::read(&state).expect("state file");
    assert!(!logs.contains(TOKEN), "token in the logs");
    assert!(!w.served.contains(TOKEN), "token on /metrics");
    assert!(
        !state_bytes
            .windows(TOKEN.len())
            .any(|x| x == TOKEN.as_bytes()),
        "token in the state file"
    );
    assert!(!logs.contains("panicked"), "the exporter panicked:\n{logs}");
    assert!(
        w.decreases.is_empty(),
        "counters went down: {:?}",
        w.decreases
    );
    assert!(w.scrapes > 50, "too few scrapes ({})", w.scrapes);
    assert_eq!(
        (lost, double),
        (0, 0),
        "lost or double-counted attempts; last log lines:\n{}",
        tail(&logs, 40)
    );
    drop(exporter);
}

/// The smallest bucket bound holding quantile `q` of the state commit durations.
fn commit_quantile(text: &str, q: f64) -> String {
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("talkover_exporter_state_commit_duration_seconds_bucket{le=\"")
        })
        .filter_map(|l| {
            let (le, rest) = l.split_once('"')?;
            Some((le.to_string(), rest.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or("?".into(), |(le, _)| format!("{le}s"))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Newest-first listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_newest_first() {
    run_chaos(20261124, Order::NewestFirst).await;
}

/// Oldest-first listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_oldest_first() {
    run_chaos(7, Order::OldestFirst).await;
}

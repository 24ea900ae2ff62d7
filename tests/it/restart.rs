//! `--state.file`: counters resume across restarts, exactly, and an unusable
//! file is moved aside rather than trusted or overwritten.

use std::collections::BTreeMap;
use std::time::Duration;

use talkover_count::target::Target;
use talkover_sim::{AttemptSpec, Order, Outage, Profile};

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";
const B: &str = "agents/agt-1/webhooks/wh-2";

fn opts(state: &std::path::Path) -> ExporterOptions {
    ExporterOptions {
        state_file: Some(state.to_path_buf()),
        ..ExporterOptions::default()
    }
}

fn total(s: &Scrape) -> f64 {
    s.sum("talkover_webhook_delivery_attempts_total", &[])
}

/// Counted before a restart, counted while down, counted after: the totals
/// equal the simulator's truth since the very first start, with no reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_resume_exactly_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let s = start_sim(
        41,
        Order::NewestFirst,
        &[A, B],
        Profile {
            rate_per_second: 0.0,
            pending_ratio: 0.3,
            ..Profile::default()
        },
    )
    .await;
    for t in s.sim.targets() {
        s.sim.generate(&t, 120);
    }
    s.sim.finish_pending();
    // History from a minute ago: clear of the exporter's start, which it
    // knows on the API's clock to about a second.
    s.sim.backdate(Duration::from_secs(60));
    let exporter = start_exporter(&s.url, &[A, B], opts(&state)).await;
    exporter.wait_ready().await;
    let mark = s.sim.mark();
    for t in s.sim.targets() {
        s.sim.generate(&t, 90);
    }
    // Leave some pending across the restart.
    wait_for("some counted", Duration::from_secs(10), || async {
        total(&exporter.scrape().await) > 0.0
    })
    .await;
    let before = total(&exporter.scrape().await);
    exporter.stop().await;

    // Traffic while the exporter is down, and the pending ones finish.
    for t in s.sim.targets() {
        s.sim.generate(&t, 150);
    }
    s.sim.finish_pending();

    let exporter = start_exporter(&s.url, &[A, B], opts(&state)).await;
    let first = total(&exporter.scrape().await);
    assert!(
        first >= before,
        "counter went down across restart: {before} -> {first}"
    );
    wait_exact(&exporter, &s.sim, mark).await;
    exporter.stop().await;

    let bytes = std::fs::read(&state).expect("state file");
    assert!(
        !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "token in the state file"
    );
}

/// Targets no longer configured are dropped from the state; new ones start at baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigured_targets_are_dropped_or_baselined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let s = start_sim(42, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    let exporter = start_exporter(&s.url, &[A], opts(&state)).await;
    exporter.wait_ready().await;
    s.sim.generate(&a, 20);
    s.sim.finish_pending();
    wait_for("A counted", Duration::from_secs(10), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_webhook_delivery_attempts_total", &a, &[])
            == 20.0
    })
    .await;
    exporter.stop().await;

    s.sim.generate(&b, 30); // history for B: baseline when B is added
    s.sim.backdate(Duration::from_secs(60));
    let exporter = start_exporter(&s.url, &[B], opts(&state)).await;
    exporter.wait_ready().await;
    let scrape = exporter.scrape().await;
    assert_eq!(
        scrape.target_value("talkover_webhook_delivery_attempts_total", &b, &[]),
        0.0,
        "B's history is baseline"
    );
    assert_eq!(
        scrape.target_value("talkover_up", &a, &[]),
        0.0,
        "A is gone"
    );
    assert!(
        !scrape.raw.contains("webhook_id=\"wh-1\""),
        "A's series are gone"
    );
    exporter.stop().await;

    let exporter = start_exporter(&s.url, &[A, B], opts(&state)).await;
    exporter.wait_ready().await;
    assert_eq!(
        exporter
            .scrape()
            .await
            .target_value("talkover_webhook_delivery_attempts_total", &a, &[]),
        0.0,
        "A's dropped state does not come back"
    );
    exporter.stop().await;
}

/// Corrupt, foreign and newer-version files are moved aside and the
/// exporter starts fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_state_files_are_moved_aside() {
    let s = start_sim(43, Order::NewestFirst, &[A], quiet_profile()).await;
    type Make = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "garbage",
            Box::new(|p| {
                std::fs::write(p, b"this is not a database at all, just text\n".repeat(100))
                    .expect("write")
            }),
        ),
        (
            "truncated",
            Box::new(|p| {
                let db = redb::Database::create(p).expect("create");
                drop(db);
                let bytes = std::fs::read(p).expect("read");
                std::fs::write(p, &bytes[..bytes.len() / 3]).expect("truncate");
            }),
        ),
        (
            "foreign",
            Box::new(|p| {
                let db = redb::Database::create(p).expect("create");
                let txn = db.begin_write().expect("txn");
                {
                    let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
                    txn.open_table(def)
                        .expect("table")
                        .insert("x", &1)
                        .expect("insert");
                }
                txn.commit().expect("commit");
            }),
        ),
        (
            "newer",
            Box::new(|p| {
                let db = redb::Database::create(p).expect("create");
                let txn = db.begin_write().expect("txn");
                {
                    let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
                    let mut t = txn.open_table(def).expect("table");
                    t.insert("format", "talkover-exporter-state")
                        .expect("insert");
                    t.insert("version", "99").expect("insert");
                }
                txn.commit().expect("commit");
            }),
        ),
    ];
    for (name, make) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.redb");
        make(&state);
        let original = std::fs::read(&state).expect("read");
        let exporter = start_exporter(&s.url, &[A], opts(&state)).await;
        exporter.wait_ready().await;
        exporter.stop().await;
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".unusable-"))
            .collect();
        assert_eq!(aside.len(), 1, "{name}: moved aside");
        assert!(
            std::fs::read(aside[0].path()).expect("aside") == original,
            "{name}: not kept intact"
        );
        assert!(state.exists(), "{name}: a fresh state file was created");
    }
}

/// An idle poll changes nothing and so writes nothing to the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_polls_do_not_rewrite_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let s = start_sim(44, Order::NewestFirst, &[A, B], quiet_profile()).await;
    let exporter = start_exporter(&s.url, &[A, B], opts(&state)).await;
    exporter.wait_ready().await;
    let a: Target = A.parse().expect("a");
    s.sim.generate(&a, 5);
    s.sim.finish_pending();
    wait_for("counted", Duration::from_secs(10), || async {
        exporter
            .scrape()
            .await
            .target_value("talkover_webhook_delivery_attempts_total", &a, &[])
            == 5.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let commits = |s: &Scrape| {
        s.sum(
            "talkover_exporter_state_commits_total",
            &[("result", "success")],
        )
    };
    let before = commits(&exporter.scrape().await);
    // About ten idle poll cycles.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = exporter.scrape().await;
    assert!(before >= 1.0);
    assert_eq!(
        commits(&after),
        before,
        "idle polls wrote to the state file"
    );
    assert!(
        after.sum("talkover_exporter_api_requests_total", &[]) > 5.0,
        "polling went on"
    );
    exporter.stop().await;
}

/// A commit that fails (here: the file may not grow, as on a full disk)
/// does not stop counting or publishing; the failure is a metric and a log
/// line, and commits resume once the file may grow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commits_do_not_stop_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let log_path = dir.path().join("exporter.log");
    let s = start_sim(45, Order::NewestFirst, &[A], quiet_profile()).await;
    let a: Target = A.parse().expect("a");
    // A first run creates the file.
    let exporter = start_exporter(&s.url, &[A], opts(&state)).await;
    exporter.wait_ready().await;
    exporter.stop().await;
    let size_kib = std::fs::metadata(&state)
        .expect("state file")
        .len()
        .div_ceil(1024);

    // Now the process may not write past the file's current size (as a full
    // disk would refuse); SIGXFSZ is ignored so writes fail with EFBIG instead.
    let port = free_port();
    let script = format!("trap '' XFSZ; ulimit -S -f {size_kib}; exec \"$0\" \"$@\"");
    let mut child = ChildGuard::spawn(
        "exporter",
        std::process::Command::new("bash")
            .args(["-c", &script, BIN])
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
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--state.file")
            .arg(&state)
            .env("TALKOVER_TOKEN", TOKEN),
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
    for _ in 0..20 {
        s.sim.generate(&a, 100);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.sim.finish_pending();
    let want: u64 = s.sim.truth(mark)[&a].values().sum();
    wait_for(
        "counted despite failing commits",
        Duration::from_secs(20),
        || async {
            scrape().await.is_some_and(|sc| {
                sc.target_value("talkover_webhook_delivery_attempts_total", &a, &[]) as u64 == want
                    && sc.sum(
                        "talkover_exporter_state_commits_total",
                        &[("result", "failure")],
                    ) > 0.0
            })
        },
    )
    .await;

    // The disk has room again (util-linux's prlimit lifts the limit of the
    // running process): commits resume.
    let successes = |sc: &Scrape| {
        sc.sum(
            "talkover_exporter_state_commits_total",
            &[("result", "success")],
        )
    };
    let before = successes(&scrape().await.expect("scrape"));
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &child.pid().to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit (util-linux) is required");
    assert!(lifted.success());
    s.sim.generate(&a, 10);
    s.sim.finish_pending();
    wait_for("commits resume", Duration::from_secs(20), || async {
        scrape().await.is_some_and(|sc| successes(&sc) > before)
    })
    .await;
    let _ = child.child().kill();
    let _ = child.child().wait();
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("state file commit failed"),
        "no log line for the failure:\n{logs}"
    );
    assert!(
        logs.contains("state file commits work again"),
        "no log line for the recovery:\n{logs}"
    );
}

/// A webhook's settings and when each of its series began are kept in the
/// state file: the real binary, killed and restarted while the API is down
/// (so nothing can be read again), still judges and serves each webhook by
/// its own max_retries and timeout, and every created timestamp is the one
/// it had before; the lost event counted before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_series_starts_survive_a_restart_while_the_api_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let s = start_sim(
        43,
        Order::NewestFirst,
        &[A, B],
        Profile {
            rate_per_second: 0.0,
            pending_ratio: 0.0,
            ..Profile::default()
        },
    )
    .await;
    let (a, b): (Target, Target) = (A.parse().expect("a"), B.parse().expect("b"));
    for (t, max_retries, timeout_seconds) in [(&a, 0, 10), (&b, 7, 120)] {
        s.sim.set_profile(
            t,
            Profile {
                rate_per_second: 0.0,
                pending_ratio: 0.0,
                max_retries,
                timeout_seconds,
                ..Profile::default()
            },
        );
    }
    let port = free_port();
    let state_arg = state.display().to_string();
    let args = [
        "--target",
        A,
        "--target",
        B,
        "--poll.interval",
        "100ms",
        "--state.file",
        &state_arg,
    ];
    let log = dir.path().join("exporter.log");
    let mut first = spawn_exporter(&s.url, port, &args, &log);
    let settings_known = |sc: &Scrape| {
        sc.target_value("talkover_webhook_max_retries", &a, &[]) == 0.0
            && sc.target_value("talkover_webhook_timeout_seconds", &b, &[]) == 120.0
    };
    wait_for("settings read", Duration::from_secs(20), || async {
        scrape_at(port).await.is_some_and(|sc| settings_known(&sc))
    })
    .await;
    let mark = s.sim.mark();
    s.sim.generate(&b, 20);
    s.sim.append(
        &a,
        &[AttemptSpec {
            attempt: 1,
            success: false,
            http_status: Some(502),
            duration_ms: 40,
            ..AttemptSpec::default()
        }],
    );
    wait_exact_at(port, &s.sim, mark).await;
    let lost =
        |sc: &Scrape| sc.target_value("talkover_webhook_deliveries_exhausted_total", &a, &[]);
    wait_for(
        "the lost event counted",
        Duration::from_secs(10),
        || async { scrape_at(port).await.is_some_and(|sc| lost(&sc) == 1.0) },
    )
    .await;
    let before = created_at(port).await;
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("talkover_webhook_delivery_results_total"))
            && before
                .keys()
                .any(|k| k.starts_with("talkover_webhook_delivery_attempts_total"))
            && before
                .keys()
                .any(|k| k.starts_with("talkover_webhook_delivery_duration_seconds")),
        "{before:?}"
    );
    let _ = first.child().kill();
    let _ = first.child().wait();

    s.sim.set_outage(Some(Outage::Unavailable));
    let _second = spawn_exporter(&s.url, port, &args, &log);
    wait_for("restarted", Duration::from_secs(20), || ready_at(port)).await;
    let sc = scrape_at(port).await.expect("scrape");
    assert!(settings_known(&sc), "settings lost:\n{}", sc.raw);
    assert_eq!(
        sc.target_value("talkover_up", &a, &[]),
        0.0,
        "the API is down"
    );
    assert_eq!(lost(&sc), 1.0);
    assert!(
        sc.raw
            .contains(r#"webhook_id="wh-1",name="wh-1 hook",enabled="true",settings="known"} 1"#),
        "{}",
        sc.raw
    );
    let after = created_at(port).await;
    for (series, start) in &before {
        assert_eq!(
            after.get(series),
            Some(start),
            "{series} began at another time"
        );
    }
}

/// Killed again and again while group commits are under way (20 busy
/// webhooks, a commit every poll window), the real binary comes back with
/// no counter lower than a scrape showed before the kill: what was
/// published was durable. It ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_group_commits_no_counter_goes_back() {
    let hooks: Vec<String> = (0..20)
        .map(|i| format!("campaigns/cmp-k/webhooks/wh-{i}"))
        .collect();
    let refs: Vec<&str> = hooks.iter().map(String::as_str).collect();
    let s = start_sim(
        44,
        Order::NewestFirst,
        &refs,
        Profile {
            rate_per_second: 0.0,
            pending_ratio: 0.2,
            success_ratio: 0.7,
            ..Profile::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state_arg = dir.path().join("state.redb").display().to_string();
    let mut args: Vec<&str> = vec![
        "--poll.interval",
        "200ms",
        "--talkover.max-requests-per-second",
        "1000",
        "--state.file",
        &state_arg,
    ];
    for h in &refs {
        args.extend(["--target", h]);
    }
    let log = dir.path().join("exporter.log");
    let port = free_port();
    let mut exporter = spawn_exporter(&s.url, port, &args, &log);
    wait_for("ready", Duration::from_secs(20), || ready_at(port)).await;
    let mark = s.sim.mark();
    let traffic = {
        let sim = s.sim.clone();
        tokio::spawn(async move {
            loop {
                for t in sim.targets() {
                    sim.generate(&t, 5);
                }
                sim.tick(Duration::from_millis(50));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let counters = |sc: &Scrape| -> BTreeMap<String, f64> {
        sc.series
            .iter()
            .filter(|(name, _, _)| {
                name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_bucket")
            })
            .filter(|(name, _, _)| {
                !name.starts_with("talkover_exporter_http") && !name.starts_with("process_")
            })
            .filter(|(name, _, _)| name.starts_with("talkover_webhook"))
            .map(|(name, labels, v)| (format!("{name}{labels:?}"), *v))
            .collect()
    };
    let mut rng = fastrand::Rng::with_seed(44);
    let mut kills = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
        let Some(before) = scrape_at(port).await else {
            continue;
        };
        let seen = counters(&before);
        let _ = exporter.child().kill();
        let _ = exporter.child().wait();
        kills += 1;
        exporter = spawn_exporter(&s.url, port, &args, &log);
        let after = loop {
            if let Some(sc) = scrape_at(port).await {
                break sc;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let now = counters(&after);
        let lower: Vec<String> = seen
            .iter()
            .filter(|(k, v)| now.get(*k).is_some_and(|n| n < v) || !now.contains_key(*k))
            .map(|(k, v)| format!("{k}: {v} -> {:?}", now.get(k)))
            .collect();
        assert!(
            lower.is_empty(),
            "after kill {kills}, lower than before: {lower:#?}"
        );
    }
    traffic.abort();
    s.sim.finish_pending();
    wait_exact_at(port, &s.sim, mark).await;
    assert_eq!(kills, 6);
    exporter.assert_running();
}

//! The real binary: help, bad input exits 2 with one clear line, the demo
//! serves metrics and stops on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_talkover-exporter");

pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TALKOVER_TOKEN")
        .env_remove("TALKOVER_TARGETS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// --help lists every flag; --version prints the version.
#[test]
fn help_and_version() {
    let (code, out) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--talkover.url",
        "--talkover.token-file",
        "--talkover.allow-insecure",
        "--target",
        "--poll.interval",
        "--poll.max-pages",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.max-connections",
        "--web.max-requests",
        "--web.read-header-timeout",
        "--log.level",
        "--log.format",
        "--failures.keep",
        "--failures.response-body",
        "--demo",
        "TALKOVER_TOKEN",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let (code, out) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

/// Every duration and count flag has an upper bound: a value past it, in a
/// flag or in its environment variable, exits 2 with one line naming the
/// flag and the value, and no panic, before anything starts.
#[test]
fn absurd_durations_and_counts_exit_2_naming_them() {
    for (flag, env, value) in [
        (
            "--discover.interval",
            "TALKOVER_DISCOVER_INTERVAL",
            "300000000000y",
        ),
        ("--poll.interval", "TALKOVER_POLL_INTERVAL", "500000000000y"),
        (
            "--target.stale-after",
            "TALKOVER_TARGET_STALE_AFTER",
            "99999999999y",
        ),
        (
            "--web.read-header-timeout",
            "TALKOVER_WEB_READ_HEADER_TIMEOUT",
            "99999999999y",
        ),
        ("--talkover.timeout", "TALKOVER_TIMEOUT", "1y"),
        (
            "--web.max-connections",
            "TALKOVER_WEB_MAX_CONNECTIONS",
            "18446744073709551615",
        ),
        (
            "--web.max-requests",
            "TALKOVER_WEB_MAX_REQUESTS",
            "999999999",
        ),
        (
            "--talkover.max-body-size",
            "TALKOVER_MAX_BODY_SIZE",
            "1024GiB",
        ),
    ] {
        for (args, vars) in [
            (vec!["--demo", flag, value], vec![]),
            (vec!["--demo"], vec![(env, value)]),
        ] {
            let (code, out) = run(&args, &vars);
            assert_eq!(code, 2, "{flag} {value}: {out}");
            assert!(out.contains(flag) && out.contains(value), "{out}");
            assert!(
                !out.contains("panicked") && !out.contains("backtrace"),
                "{out}"
            );
            let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error")).collect();
            assert_eq!(errors.len(), 1, "{out}");
        }
    }
}

/// Each bad value exits 2 and names the flag and the value, without a panic.
#[test]
fn bad_input_exits_2_naming_flag_and_value() {
    let t = ["--target", "campaigns/c/webhooks/w"];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["--web.telemetry-path", "metrics", "--demo"],
            vec![],
            vec!["--web.telemetry-path", "metrics"],
        ),
        (
            vec!["--web.telemetry-path", "/<b>metrics</b>", "--demo"],
            vec![],
            vec!["--web.telemetry-path", "/<b>metrics</b>"],
        ),
        (
            vec!["--web.max-connections", "many", "--demo"],
            vec![],
            vec!["--web.max-connections", "many"],
        ),
        (
            vec!["--web.read-header-timeout", "0s", "--demo"],
            vec![],
            vec!["--web.read-header-timeout", "0s"],
        ),
        (
            vec!["--poll.interval", "soon", "--demo"],
            vec![],
            vec!["--poll.interval", "soon"],
        ),
        (
            vec!["--target", "campaigns/c1", "--demo"],
            vec![],
            vec!["--target", "campaigns/c1"],
        ),
        (
            vec!["--web.listen-address", "nowhere", "--demo"],
            vec![],
            vec!["--web.listen-address", "nowhere"],
        ),
        (
            vec!["--log.format", "xml", "--demo"],
            vec![],
            vec!["--log.format", "xml"],
        ),
        (
            vec!["--talkover.url", "ftp://x", "--demo"],
            vec![],
            vec!["--talkover.url", "ftp://x"],
        ),
        (
            vec!["--failures.keep", "5000", "--demo"],
            vec![],
            vec!["--failures.keep", "5000"],
        ),
        (
            vec!["--failures.response-body=no", "--demo"],
            vec![],
            vec!["--failures.response-body", "no"],
        ),
        (
            vec!["--talkover.max-body-size", "lots", "--demo"],
            vec![],
            vec!["--talkover.max-body-size", "lots"],
        ),
        (
            t.to_vec(),
            vec![],
            vec!["TALKOVER_TOKEN", "--talkover.token-file"],
        ),
        (
            [&t[..], &["--talkover.url", "http://127.0.0.1:1"]].concat(),
            vec![("TALKOVER_TOKEN", "talq_x")],
            vec![
                "--talkover.url",
                "http://127.0.0.1:1/",
                "--talkover.allow-insecure",
            ],
        ),
        (
            [&t[..], &["--talkover.token-file", "/nonexistent/token"]].concat(),
            vec![],
            vec!["--talkover.token-file", "/nonexistent/token"],
        ),
        (vec![], vec![("TALKOVER_TOKEN", "talq_x")], vec!["--target"]),
        (
            vec!["--demo"],
            vec![("TALKOVER_POLL_INTERVAL", "0s")],
            vec!["--poll.interval", "0s"],
        ),
    ];
    for (args, env, needles) in cases {
        let (code, out) = run(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {out}");
        for n in needles {
            assert!(out.contains(n), "{args:?}: output lacks {n:?}:\n{out}");
        }
        assert!(!out.contains("panicked"), "{out}");
        assert!(!out.contains("talq_x"), "token echoed: {out}");
    }
}

/// `--demo` on its defaults (polling every 2 s) serves counted traffic
/// within seconds, its first log lines point to /webhooks, and it exits
/// cleanly and promptly on SIGTERM.
#[test]
fn demo_serves_metrics_and_stops_on_sigterm() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new(BIN)
        .args([
            "--demo",
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--log.format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut counted = 0.0;
    while std::time::Instant::now() < deadline && counted == 0.0 {
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(body) = reqwest::blocking_get(&url) {
            counted = body
                .lines()
                .filter(|l| l.starts_with("talkover_webhook_delivery_attempts_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
        }
    }
    assert!(counted > 0.0, "demo counted no attempts within 30s");
    let started = std::time::Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut logs)
        .expect("logs");
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        first.contains("/metrics") && first.contains(&format!("http://127.0.0.1:{port}/webhooks")),
        "first log line should say where /metrics and /webhooks are: {first}"
    );
    let pointer = logs
        .lines()
        .take(3)
        .find(|l| l.contains("demo: open"))
        .unwrap_or_else(|| panic!("no line pointing to /webhooks early in:\n{logs}"));
    assert!(
        pointer.contains(&format!("http://127.0.0.1:{port}/webhooks"))
            && pointer.contains("every 2s"),
        "{pointer}"
    );
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

mod reqwest {
    /// A tiny blocking GET over std, to keep this test free of a runtime.
    pub fn blocking_get(url: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host)?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }
}

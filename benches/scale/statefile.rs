//! Section 5: what `--state.file` costs. The same exporter binary, with and
//! without the flag, in turn, polls 20 busy webhooks every second at 2,000
//! and then 200 attempts per second (a fresh state file per run); its CPU
//! and what it writes to storage are read from `/proc/<pid>/`. Then 2,000
//! webhooks restart from a full state file.

use super::*;

/// Webhooks of the ingest runs, and how long each run counts.
const WEBHOOKS_SF: usize = 20;
const WARM: Duration = Duration::from_secs(10);
const MEASURE: Duration = Duration::from_secs(40);
/// Webhooks of the restart.
const RESTART_WEBHOOKS: usize = 2_000;

pub(crate) fn statefile_target(i: usize) -> Target {
    format!("campaigns/sf/webhooks/w{i}")
        .parse()
        .expect("state-file target")
}

/// What one run measured.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) counted: f64,
    pub(crate) cpu_s: f64,
    pub(crate) write_bytes: u64,
    pub(crate) wchar: u64,
    pub(crate) commits: f64,
    pub(crate) file_bytes: u64,
    pub(crate) seconds: f64,
}

impl Run {
    fn cpu_per_1k(&self) -> f64 {
        self.cpu_s * 1000.0 / self.counted.max(1.0) * 1000.0
    }
    fn bytes_per_entry(&self) -> f64 {
        self.write_bytes as f64 / self.counted.max(1.0)
    }
}

/// Figures for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StateFileFigures {
    /// (without, with) at 2,000 and at 200 entries/s.
    pub(crate) fast: (Run, Run),
    pub(crate) slow: (Run, Run),
    /// Spawn to restored series on /metrics, and spawn to ready.
    pub(crate) restart: (Duration, Duration),
}

/// `/proc/<pid>/io`'s `write_bytes` (sent to storage) and `wchar`.
fn proc_io(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("wchar:"))
}

/// GET `path` of the exporter on `port`, the body, over plain HTTP/1.0.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The sum of the series of `name` in a text scrape.
fn sum_of(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn spawn_exporter(
    sim: &SimChild,
    port: u16,
    targets: &[Target],
    state: Option<&std::path::Path>,
) -> Child {
    // SCALE_BENCH_EXPORTER: another build to compare with (an earlier commit's).
    let binary = std::env::var("SCALE_BENCH_EXPORTER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_talkover-exporter").to_string());
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("TALKOVER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TALKOVER_TOKEN", "talq_bench_token")
        .args(["--talkover.url", &sim.url(), "--talkover.allow-insecure"])
        .args(["--talkover.max-requests-per-second", "100000"])
        .args(["--poll.interval", "1s", "--log.level", "warn"])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if targets.len() > 100 {
        cmd.args(["--discover", "campaigns"]);
    } else {
        for t in targets {
            cmd.args(["--target", &t.to_string()]);
        }
    }
    if let Some(path) = state {
        cmd.arg("--state.file").arg(path);
    }
    cmd.spawn().expect("start the exporter binary")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One run: the exporter with or without a state file at `rate` attempts
/// per second over the 20 webhooks.
fn run(rate: u32, with_state: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let sim = SimChild::spawn(
        "statefile",
        &[("SCALE_BENCH_STATEFILE_RATE", rate.to_string())],
    );
    let port = free_port();
    let targets: Vec<Target> = (0..WEBHOOKS_SF).map(statefile_target).collect();
    let mut exporter = spawn_exporter(&sim, port, &targets, with_state.then_some(state.as_path()));
    let pid = exporter.id();
    let ready = wait_until(Duration::from_secs(30), || {
        get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    assert!(ready, "the exporter never got ready");
    std::thread::sleep(WARM);
    let counted = || {
        get(port, "/metrics").map_or((0.0, 0.0), |(_, b)| {
            (
                sum_of(&b, "talkover_webhook_delivery_attempts_total"),
                sum_of(&b, "talkover_exporter_state_commits_total"),
            )
        })
    };
    let (c0, k0) = counted();
    let cpu0 = proc_cpu_s(&format!("/proc/{pid}/stat"));
    let (w0, ch0) = proc_io(pid);
    let t0 = Instant::now();
    std::thread::sleep(MEASURE);
    let (c1, k1) = counted();
    let cpu1 = proc_cpu_s(&format!("/proc/{pid}/stat"));
    let (w1, ch1) = proc_io(pid);
    let seconds = t0.elapsed().as_secs_f64();
    let file_bytes = std::fs::metadata(&state).map_or(0, |m| m.len());
    let _ = exporter.kill();
    let _ = exporter.wait();
    sim.quit();
    Run {
        counted: c1 - c0,
        cpu_s: cpu1 - cpu0,
        write_bytes: w1 - w0,
        wchar: ch1 - ch0,
        commits: k1 - k0,
        file_bytes,
        seconds,
    }
}

/// 2,000 webhooks with some history, counted into a state file, then the
/// exporter stopped and started again: how long until the restored series
/// are on `/metrics`, and until every webhook has been polled (ready).
fn restart() -> (Duration, Duration, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.redb");
    let mut sim = SimChild::spawn("budget", &[]);
    let targets: Vec<Target> = (0..RESTART_WEBHOOKS).map(scale_target).collect();
    let port = free_port();
    let mut first = spawn_exporter(&sim, port, &targets, Some(&state));
    assert!(
        wait_until(Duration::from_secs(120), || get(port, "/-/ready")
            .is_some_and(|(s, _)| s == 200)),
        "the first exporter never got ready"
    );
    // Something counted for every webhook, and failures kept.
    sim.cmd("gen_all 20");
    assert!(
        wait_until(Duration::from_secs(120), || {
            get(port, "/metrics").is_some_and(|(_, b)| {
                sum_of(&b, "talkover_webhook_delivery_attempts_total")
                    >= (RESTART_WEBHOOKS * 20) as f64
            })
        }),
        "the first exporter never counted everything"
    );
    std::thread::sleep(Duration::from_secs(3));
    // SIGTERM: what a deployment does.
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    let file_bytes = std::fs::metadata(&state).map_or(0, |m| m.len());
    let started = Instant::now();
    let mut second = spawn_exporter(&sim, port, &targets, Some(&state));
    let mut restored = Duration::ZERO;
    let shown = wait_until(Duration::from_secs(60), || {
        let ok = get(port, "/metrics").is_some_and(|(_, b)| {
            sum_of(&b, "talkover_webhook_delivery_attempts_total") >= (RESTART_WEBHOOKS * 20) as f64
        });
        if ok {
            restored = started.elapsed();
        }
        ok
    });
    assert!(shown, "the restored counters never showed");
    let mut ready = Duration::ZERO;
    let got_ready = wait_until(Duration::from_secs(120), || {
        let ok = get(port, "/-/ready").is_some_and(|(s, _)| s == 200);
        if ok {
            ready = started.elapsed();
        }
        ok
    });
    assert!(got_ready, "the restarted exporter never got ready");
    let _ = second.kill();
    let _ = second.wait();
    sim.quit();
    (restored, ready, file_bytes)
}

pub(crate) fn statefile(report: &mut Report) -> StateFileFigures {
    eprintln!(
        "[statefile] 20 busy webhooks, with and without --state.file, at 2,000 and 200 attempts/s"
    );
    let mut figures = StateFileFigures::default();
    let mut s = Section::new(
        "5. What --state.file costs (the exporter binary, 20 busy webhooks polled every second, 40 s each, in turn)",
        &[
            "attempts/s",
            "state file",
            "counted",
            "CPU per 1k entries",
            "written per entry (write_bytes)",
            "wchar per entry",
            "commits/s",
            "file size",
        ],
    );
    for (rate, slot) in [(2_000, 0), (200, 1)] {
        let without = run(rate, false);
        let with = run(rate, true);
        for (label, r) in [("off", &without), ("on", &with)] {
            s.row(vec![
                format!("{rate}"),
                label.into(),
                format!("{:.0}", r.counted),
                format!("{:.1} cpu-ms", r.cpu_per_1k()),
                format!("{:.0} B", r.bytes_per_entry()),
                format!("{:.0} B", r.wchar as f64 / r.counted.max(1.0)),
                format!("{:.1}", r.commits / r.seconds.max(1.0)),
                if label == "on" {
                    format!("{:.1} MiB", r.file_bytes as f64 / (1 << 20) as f64)
                } else {
                    "—".into()
                },
            ]);
        }
        s.note(format!(
            "{rate}/s: CPU with the state file {:.2}× without; {:.0} bytes written per entry counted",
            with.cpu_per_1k() / without.cpu_per_1k().max(1e-9),
            with.bytes_per_entry()
        ));
        if slot == 0 {
            figures.fast = (without, with);
        } else {
            figures.slow = (without, with);
        }
    }
    eprintln!("[statefile] a restart of 2,000 webhooks from a full state file");
    let (restored, ready, file_bytes) = restart();
    figures.restart = (restored, ready);
    s.note(format!(
        "restart of {RESTART_WEBHOOKS} webhooks from a {:.1} MiB state file: restored counters on /metrics after {}, ready (every webhook polled once) after {}",
        file_bytes as f64 / (1 << 20) as f64,
        ms(restored),
        ms(ready)
    ));
    s.note(
        "Runs are 50 s, shorter than the 10-minute dedupe window: ids are added but not yet cut below the horizon, a range delete of neighbouring keys."
            .into(),
    );
    report.sections.push(s);
    figures
}

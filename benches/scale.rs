//! `cargo bench --bench scale`: the exporter at scale, against the simulator
//! on loopback, in one run (a few minutes on two cores).
//!
//! 1. **Ingest**: CPU time the exporter spends per log entry it counts,
//!    against a bare client that only fetches the same pages and parses them
//!    with serde (the floor).
//! 2. **Scale**: 10,000 discovered webhooks through an hour of simulated
//!    traffic: resident memory over time, per webhook, and the dedupe state
//!    an idle webhook keeps.
//! 3. **Scrape**: time and size of `/metrics` with 10,000 webhooks, and
//!    whether polling keeps its pace while scrapes render.
//! 4. **API economy**: requests per poll, idle and busy, against the formula.
//!
//! The simulator runs in a child process (this binary again, with
//! `SCALE_BENCH_ROLE=sim`), so the CPU and memory measured here are the
//! exporter's alone. The child takes one command per line on stdin and
//! answers one line on stdout. Scrapes come from a third process (playing
//! Prometheus), so reading 66 MiB bodies does not count either. Figures go
//! to stdout and to `docs/benchmarks.md`; nothing is asserted.
//!
//! Knobs for investigating (only a run without `SCALE_BENCH_ONLY` rewrites
//! `docs/benchmarks.md`):
//! `SCALE_BENCH_ONLY=scale|economy|ingest` runs one part;
//! `SCALE_BENCH_HOUR_SCRAPES=0` leaves out the scrapes during the hour;
//! `SCALE_BENCH_RPS=N` sets `--talkover.max-requests-per-second` (default
//! 100000, i.e. unlimited); `SCALE_BENCH_PAYLOAD=BYTES` pads each entry's
//! `request_payload` in the ingest part; `SCALE_BENCH_POOL=N|unbounded`
//! replaces `run()` by the same fleet and server fed by a page source with
//! at most N connections (an A/B experiment, marked as such in the output).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use serde::Deserialize;
use talkover_exporter::api::{Client, ClientOptions, Credentials, Token};
use talkover_exporter::cli::{Cli, Config};
use talkover_exporter::collect::{poll_once, PollConfig};
use talkover_exporter::model::{PollStats, TargetState};
use talkover_exporter::sim::{Order, Profile, Simulator};
use talkover_exporter::target::Target;

const ROLE_ENV: &str = "SCALE_BENCH_ROLE";
const MODE_ENV: &str = "SCALE_BENCH_SIM";

// ---- ingest ----
/// Webhooks read in the ingest part.
const INGEST_WEBHOOKS: usize = 40;
/// New entries per webhook per round: 40 x 2,500 = 100,000 per round.
const INGEST_NEW: usize = 2_500;
const INGEST_ROUNDS: usize = 8;

// ---- scale ----
const CAMPAIGNS: usize = 1_000;
const PER_CAMPAIGN: usize = 10;
const WEBHOOKS: usize = CAMPAIGNS * PER_CAMPAIGN;
/// One step of simulated traffic is one simulated minute...
const STEP_SIM_SECS: u64 = 60;
/// ...played in this much wall time (an hour in a minute).
const STEP_WALL: Duration = Duration::from_secs(1);
const HOUR_STEPS: u32 = 60;
/// Poll interval of the scale run (wall time; two simulated minutes).
const SCALE_POLL: Duration = Duration::from_secs(2);
const SCALE_DISCOVERY: Duration = Duration::from_secs(15);
/// Entries added to each `Burst` webhook at simulated minute 15.
const BURST: usize = 300;
const BURST_MINUTE: u32 = 15;
const SCRAPES: usize = 50;
/// Steps without scrapes before and after the scrape phase.
const QUIET_STEPS: u32 = 10;
const SHADOWS_PER_CLASS: usize = 20;

// ---- goals ----
const GOAL_INGEST_RATIO: f64 = 1.5;
const GOAL_IDLE_STATE: usize = 2048;
const GOAL_SCRAPE_P99: Duration = Duration::from_millis(250);

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("sim") => {
            let mode = std::env::var(MODE_ENV).unwrap_or_default();
            sim_role(&mode);
            return;
        }
        Ok("scrape") => {
            scrape_role();
            return;
        }
        _ => {}
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: skipped (run it with `cargo bench --bench scale`)");
        return;
    }
    let started = Instant::now();
    let mut report = Report::default();
    report.machine();
    // For investigating one part: SCALE_BENCH_ONLY=scale|economy|ingest
    // (then docs/benchmarks.md is left alone).
    let only = std::env::var("SCALE_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let scale = if part("scale") {
        scale(&mut report)
    } else {
        ScaleFigures::default()
    };
    if part("economy") {
        economy(&mut report);
    }
    let ingest = if part("ingest") {
        ingest(&mut report)
    } else {
        IngestFigures::default()
    };
    if only.is_none() {
        report.summary(&ingest, &scale, started.elapsed());
    }
    report.emit(only.is_none());
}

// =====================================================================
// The simulator child
// =====================================================================

/// Scale-run webhook classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// 3 attempts per simulated minute.
    Busy,
    /// About 7 attempts per simulated hour.
    Low,
    /// Idle, except one burst of 300 attempts at minute 15.
    Burst,
    /// Some history from the warm-up hour, then nothing.
    Idle,
}

impl Class {
    const ALL: [Class; 4] = [Class::Busy, Class::Low, Class::Burst, Class::Idle];

    fn name(self) -> &'static str {
        match self {
            Class::Busy => "busy (3/min)",
            Class::Low => "low (~7/h)",
            Class::Burst => "burst at 15′ then idle",
            Class::Idle => "idle",
        }
    }

    /// Attempts per second during the warm-up hour and during the run.
    fn rates(self) -> (f64, f64) {
        match self {
            Class::Busy => (0.05, 0.05),
            Class::Low => (0.002, 0.002),
            Class::Burst | Class::Idle => (0.002, 0.0),
        }
    }
}

fn class_of(i: usize) -> Class {
    match i % PER_CAMPAIGN {
        0 => Class::Busy,
        1 | 2 => Class::Low,
        3 if (i / PER_CAMPAIGN).is_multiple_of(10) => Class::Burst,
        _ => Class::Idle,
    }
}

fn scale_target(i: usize) -> Target {
    format!(
        "campaigns/c{:04}/webhooks/w{}",
        i / PER_CAMPAIGN,
        i % PER_CAMPAIGN
    )
    .parse()
    .expect("scale target")
}

/// The class of a series from its `campaign_id` and `webhook_id` labels.
fn class_of_labels(campaign: &str, webhook: &str) -> Option<Class> {
    let c: usize = campaign.strip_prefix('c')?.parse().ok()?;
    let w: usize = webhook.strip_prefix('w')?.parse().ok()?;
    Some(class_of(c * PER_CAMPAIGN + w))
}

fn ingest_target(i: usize) -> Target {
    format!("campaigns/ingest/webhooks/w{i}")
        .parse()
        .expect("ingest target")
}

fn economy_target() -> Target {
    "campaigns/econ/webhooks/w1"
        .parse()
        .expect("economy target")
}

fn profile(rate: f64, pending: f64) -> Profile {
    Profile {
        rate_per_second: rate,
        pending_ratio: pending,
        ..Profile::default()
    }
}

/// The simulator stamps entries with wall-clock milliseconds, but strictly
/// increasing: every entry moves its clock on by at least 1 ms. To compress
/// an hour into a minute, each step tops the clock up with entries on a
/// filler webhook (never listed: it is an agent's, and only campaigns are
/// discovered) and drops them at once. The simulator's `created_at` then
/// advances one simulated minute per step, so the exporter's ten-minute
/// dedupe horizon sees an hour go by.
struct SimClock {
    filler: Target,
    /// Sequence number the clock must reach at the end of the current step.
    target_seq: u64,
}

impl SimClock {
    fn new(sim: &Simulator) -> SimClock {
        let filler: Target = "agents/clock/webhooks/filler".parse().expect("filler");
        sim.add_webhook(
            filler.clone(),
            Profile {
                events: vec!["x".into()],
                rate_per_second: 0.0,
                pending_ratio: 0.0,
                max_retries: 0,
                ..Profile::default()
            },
        );
        SimClock {
            filler,
            target_seq: sim.mark(),
        }
    }

    fn step(&mut self, sim: &Simulator, secs: u64) {
        sim.tick(Duration::from_secs(secs));
        self.target_seq += secs * 1000;
        // In chunks: the simulator holds one lock while generating, and
        // long holds would stall every request the exporter has in flight.
        loop {
            let short = self.target_seq.saturating_sub(sim.mark()).min(2_000);
            if short == 0 {
                break;
            }
            sim.generate(&self.filler, short as usize);
            sim.expire_oldest(&self.filler, usize::MAX);
        }
    }
}

fn sim_role(mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("sim runtime");
    let sim = Simulator::new(20_261_124, None, Order::NewestFirst);
    let mut clock = SimClock::new(&sim);
    match mode {
        "ingest" => {
            let payload = std::env::var("SCALE_BENCH_PAYLOAD")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            for i in 0..INGEST_WEBHOOKS {
                let t = ingest_target(i);
                sim.add_webhook(
                    t.clone(),
                    Profile {
                        payload_bytes: payload,
                        ..profile(0.0, 0.0)
                    },
                );
                sim.generate(&t, 1_000);
            }
        }
        "economy" => {
            let t = economy_target();
            sim.add_webhook(t.clone(), profile(0.0, 0.0));
            sim.generate(&t, 250);
        }
        "scale" => {
            for i in 0..WEBHOOKS {
                let class = class_of(i);
                sim.add_webhook(scale_target(i), profile(class.rates().0, 0.2));
            }
            // A warm-up hour of history before the exporter starts.
            for _ in 0..HOUR_STEPS {
                clock.step(&sim, STEP_SIM_SECS);
            }
            sim.finish_pending();
            for i in 0..WEBHOOKS {
                let class = class_of(i);
                let pending = if class == Class::Burst { 0.0 } else { 0.2 };
                sim.set_profile(&scale_target(i), profile(class.rates().1, pending));
            }
        }
        other => panic!("unknown simulator mode {other:?}"),
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind simulator");
    let port = listener.local_addr().expect("simulator address").port();
    let _server = rt.spawn(sim.clone().serve(listener));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "PORT {port}").expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> usize { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
        let reply = match words.first().copied() {
            Some("step") => {
                clock.step(&sim, num(1) as u64);
                "ok".to_string()
            }
            Some("burst") => {
                for i in (0..WEBHOOKS).filter(|i| class_of(*i) == Class::Burst) {
                    sim.generate(&scale_target(i), num(1));
                }
                "ok".to_string()
            }
            Some("gen_all") => {
                for t in sim.targets().iter().filter(|t| **t != clock.filler) {
                    sim.generate(t, num(1));
                }
                "ok".to_string()
            }
            Some("gen") => match words.get(1).and_then(|t| t.parse::<Target>().ok()) {
                Some(t) => {
                    sim.generate(&t, num(2));
                    "ok".to_string()
                }
                None => "bad target".to_string(),
            },
            Some("order") => {
                let order = match words.get(1).copied() {
                    Some("oldest") => Order::OldestFirst,
                    _ => Order::NewestFirst,
                };
                sim.set_order(order);
                "ok".to_string()
            }
            Some("requests") => match words.get(1).and_then(|t| t.parse::<Target>().ok()) {
                Some(t) => sim.requests(&t).to_string(),
                None => "0".to_string(),
            },
            Some("reqtotal") => {
                let logs: u64 = sim.targets().iter().map(|t| sim.requests(t)).sum();
                format!("{logs} {}", sim.listing_requests())
            }
            Some("quit") | None => break,
            Some(other) => format!("unknown command {other}"),
        };
        writeln!(out, "{reply}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The scraper child: plays Prometheus, so reading 66 MiB bodies does not
/// count in the exporter's memory or CPU. `scrape [PATH]` answers
/// `STATUS TOTAL_US HEADERS_US BYTES` and saves the body to PATH if given.
fn scrape_role() {
    let url = std::env::var("SCALE_BENCH_SCRAPE_URL").expect("scrape url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("scraper runtime");
    let http = reqwest::Client::builder().build().expect("scrape client");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        if words.next() != Some("scrape") {
            break;
        }
        let save = words.next().map(std::path::PathBuf::from);
        let reply = rt.block_on(async {
            let started = Instant::now();
            let resp = http.get(url.as_str()).send().await.ok()?;
            let headers = started.elapsed();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.ok()?;
            let total = started.elapsed();
            if let Some(path) = &save {
                std::fs::write(path, &body).ok()?;
            }
            Some(format!(
                "{status} {} {} {}",
                total.as_micros(),
                headers.as_micros(),
                body.len()
            ))
        });
        writeln!(out, "{}", reply.unwrap_or_else(|| "0 0 0 0".into())).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The scraper child process.
struct Scraper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// One scrape: status, time to the last byte, time to the headers, bytes.
type Scraped = (u16, Duration, Duration, usize);

impl Scraper {
    fn spawn(url: &str) -> Scraper {
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .env(ROLE_ENV, "scrape")
            .env("SCALE_BENCH_SCRAPE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scraper child");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        Scraper {
            child,
            stdin,
            stdout,
        }
    }

    fn scrape(&mut self, save: Option<&std::path::Path>) -> Option<Scraped> {
        match save {
            Some(p) => writeln!(self.stdin, "scrape {}", p.display()),
            None => writeln!(self.stdin, "scrape"),
        }
        .ok()?;
        self.stdin.flush().ok()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).ok()?;
        let f: Vec<u64> = reply
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        let status = *f.first()? as u16;
        (status != 0).then(|| {
            (
                status,
                Duration::from_micros(f[1]),
                Duration::from_micros(f[2]),
                f[3] as usize,
            )
        })
    }

    fn cpu_s(&self) -> f64 {
        proc_cpu_s(&format!("/proc/{}/stat", self.child.id()))
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The simulator child process, driven line by line.
struct SimChild {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl SimChild {
    fn spawn(mode: &str, envs: &[(&str, String)]) -> SimChild {
        let exe = std::env::current_exe().expect("own executable");
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, "sim")
            .env(MODE_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the simulator child");
        let stdin = child.stdin.take().expect("child stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("simulator port line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("simulator said {line:?}"));
        SimChild {
            child,
            stdin,
            stdout,
            port,
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to simulator");
        self.stdin.flush().expect("flush to simulator");
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .expect("read from simulator");
        reply.trim().to_string()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Log requests served so far, all webhooks.
    fn log_requests(&mut self) -> u64 {
        let r = self.cmd("reqtotal");
        r.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn cpu_s(&self) -> f64 {
        proc_cpu_s(&format!("/proc/{}/stat", self.child.id()))
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// =====================================================================
// Measuring
// =====================================================================

/// utime + stime of a process, in seconds (clock ticks of 10 ms).
fn proc_cpu_s(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    // `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: exact to the call, where
    // `/proc/thread-self/schedstat` only advances at scheduler ticks (4 ms
    // here), too coarse for slices of a few milliseconds.
    cpu_time::ThreadTime::now().as_duration().as_nanos() as u64
}

/// (simulated minute, RSS KiB, open file descriptors) of the exporter process.
type Sample = (u32, u64, usize);

/// Open file descriptors (mostly sockets: HTTP connections).
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU of this thread and of the whole process, and wall time.
struct Meter {
    thread_ns: u64,
    process_s: f64,
    wall: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    /// This thread's CPU seconds (ns resolution): the primary figure.
    thread_s: f64,
    /// Whole-process CPU seconds (10 ms resolution): a cross-check.
    process_s: f64,
    wall_s: f64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, other: Spent) {
        self.thread_s += other.thread_s;
        self.process_s += other.process_s;
        self.wall_s += other.wall_s;
    }
}

impl Meter {
    fn start() -> Meter {
        Meter {
            thread_ns: thread_cpu_ns(),
            process_s: proc_cpu_s("/proc/self/stat"),
            wall: Instant::now(),
        }
    }

    fn stop(self) -> Spent {
        Spent {
            thread_s: (thread_cpu_ns() - self.thread_ns) as f64 / 1e9,
            process_s: proc_cpu_s("/proc/self/stat") - self.process_s,
            wall_s: self.wall.elapsed().as_secs_f64(),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> String {
    if met { "goal met" } else { "goal missed" }.to_string()
}

fn exporter_client(base: &str) -> Client {
    Client::new(ClientOptions {
        base_url: base.parse().expect("simulator url"),
        credentials: Token::new("talq_bench_token").map(Credentials::Token),
        timeout: Duration::from_secs(30),
        max_body_bytes: 32 << 20,
        allow_insecure: true,
        max_requests_per_second: 100_000.0,
    })
    .expect("exporter client")
}

/// The scale run's configuration, through the documented flags (so the
/// bench follows whatever `Config` grows into).
fn exporter_config(base: &str) -> Config {
    // Only the flags below count, not whatever TALKOVER_* the shell has.
    for (k, _) in std::env::vars() {
        if k.starts_with("TALKOVER_") {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("TALKOVER_TOKEN", "talq_bench_token");
    let poll = format!("{}s", SCALE_POLL.as_secs());
    let rps = std::env::var("SCALE_BENCH_RPS").unwrap_or_else(|_| "100000".into());
    let discover = format!("{}s", SCALE_DISCOVERY.as_secs());
    let args = [
        "talkover-exporter",
        "--talkover.url",
        base,
        "--talkover.allow-insecure",
        "--talkover.max-requests-per-second",
        &rps,
        "--talkover.timeout",
        "30s",
        "--discover",
        "campaigns",
        "--discover.interval",
        &discover,
        "--poll.interval",
        &poll,
        "--poll.max-pages",
        "10",
        "--target.stale-after",
        "1h",
    ];
    Cli::try_parse_from(args)
        .expect("flags parse")
        .into_config()
        .expect("valid configuration")
}

// =====================================================================
// 1. Ingest
// =====================================================================

/// Pages fetched and parsed beforehand, each handed over (moved) once, so
/// `poll_once` over it costs only the collector's own work.
#[derive(Default)]
struct MemorySource {
    pages: Mutex<BTreeMap<(Target, u64), talkover_exporter::api::LogPage>>,
}

impl MemorySource {
    fn put(&self, target: &Target, page: u64, p: talkover_exporter::api::LogPage) {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((target.clone(), page), p);
    }
}

impl talkover_exporter::collect::PageSource for MemorySource {
    async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        _per_page: u32,
    ) -> Result<talkover_exporter::api::LogPage, talkover_exporter::api::ApiError> {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(target.clone(), page))
            .ok_or_else(|| talkover_exporter::api::ApiError::Http {
                path: format!("{target} page {page}"),
                status: 404,
            })
    }
}

/// The floor: only the fields the exporter reads, everything else skipped.
#[derive(Deserialize)]
struct FloorPage {
    data: Vec<FloorEntry>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct FloorEntry {
    id: Option<String>,
    event: Option<String>,
    status: Option<String>,
    attempt: Option<i64>,
    http_status: Option<i64>,
    duration_ms: Option<f64>,
    created_at: Option<String>,
    delivered_at: Option<String>,
}

/// A looser floor: every entry as a `serde_json::Value`.
#[derive(Deserialize)]
struct ValuePage {
    data: Vec<serde_json::Value>,
}

/// The floors' fetch: a plain GET, the body whole.
async fn bare_get(http: &reqwest::Client, url: &str) -> impl std::ops::Deref<Target = [u8]> {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body")
}

#[derive(Debug, Default, Clone, Copy)]
struct IngestFigures {
    /// Median over rounds of the per-round exporter/floor ratio.
    ratio_median: f64,
    entries_counted: u64,
    entries_read: u64,
    pages: u64,
    bytes_per_entry: f64,
    exporter: Spent,
    /// `poll_once` over the same pages served from memory: the collector alone.
    collector_only: Spent,
    client_only: Spent,
    floor_struct: Spent,
    floor_value: Spent,
}

impl IngestFigures {
    fn ratio(&self) -> f64 {
        self.exporter.thread_s / self.floor_struct.thread_s
    }
}

fn ingest(report: &mut Report) -> IngestFigures {
    eprintln!("[ingest] starting the simulator child");
    let mut sim = SimChild::spawn("ingest", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let base = sim.url();
    let client = exporter_client(&base);
    let bare = reqwest::Client::builder().build().expect("bare client");
    let targets: Vec<Target> = (0..INGEST_WEBHOOKS).map(ingest_target).collect();
    let config = PollConfig {
        interval: Duration::from_secs(1),
        // Enough for a whole round's new entries in one poll.
        max_pages: 1_000,
        per_page: 100,
    };
    // The exporter reads the new entries' pages plus the one where it
    // meets an entry it knew: the other paths read the same pages.
    let pages_each = (INGEST_NEW as u64 + 1).div_ceil(100);
    let urls: Vec<String> = targets
        .iter()
        .flat_map(|t| {
            let base = base.clone();
            (1..=pages_each)
                .map(move |page| format!("{base}{}?page={page}&per_page=100", t.logs_path()))
        })
        .collect();
    let mut rounds: Vec<IngestFigures> = Vec::new();
    let mut pages_mismatch = false;
    for round in 0..INGEST_ROUNDS {
        let mut states = vec![TargetState::default(); targets.len()];
        let mut stats = vec![PollStats::default(); targets.len()];
        // A second set of states, baselined at the same moment, for the
        // collector-alone path.
        let mut mem_states = vec![TargetState::default(); targets.len()];
        let mut mem_stats = vec![PollStats::default(); targets.len()];
        rt.block_on(async {
            for (i, t) in targets.iter().enumerate() {
                poll_once(&client, t, &config, &mut states[i], &mut stats[i])
                    .await
                    .expect("baseline poll");
                poll_once(&client, t, &config, &mut mem_states[i], &mut mem_stats[i])
                    .await
                    .expect("baseline poll");
            }
        });
        let requests_before: u64 = stats.iter().map(|s| s.requests.values().sum::<u64>()).sum();
        let counted_before: u64 = states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum();
        sim.cmd(&format!("gen_all {INGEST_NEW}"));
        let mut f = IngestFigures::default();
        // The same pages, fetched and parsed now (not measured), for the
        // collector-alone path.
        let memory = MemorySource::default();
        rt.block_on(async {
            for t in &targets {
                for page in 1..=pages_each {
                    let p = client.fetch_logs(t, page, 100).await.expect("page");
                    memory.put(t, page, p);
                }
            }
        });
        let (mut bytes_read, mut floor_entries) = (0u64, 0u64);
        // Each webhook's pages go through the five paths back to back, in an
        // order rotating with the webhook and the round: slices of a few
        // milliseconds, so a burst of other work on this shared machine
        // lands on every path alike instead of on whichever ran during it.
        for (i, t) in targets.iter().enumerate() {
            let pages = pages_each as usize;
            let t_urls = &urls[i * pages..(i + 1) * pages];
            for k in 0..5 {
                match (k + round + i) % 5 {
                    4 => {
                        // (e) the collector alone: poll_once over pages handed over from memory.
                        let m = Meter::start();
                        rt.block_on(poll_once(
                            &memory,
                            t,
                            &config,
                            &mut mem_states[i],
                            &mut mem_stats[i],
                        ))
                        .expect("collector poll");
                        f.collector_only += m.stop();
                    }
                    0 => {
                        // (a) the exporter: one poll reads all the webhook's new entries.
                        let m = Meter::start();
                        rt.block_on(poll_once(
                            &client,
                            t,
                            &config,
                            &mut states[i],
                            &mut stats[i],
                        ))
                        .expect("ingest poll");
                        f.exporter += m.stop();
                    }
                    1 => {
                        // (b) the exporter's API client alone: HTTP + LogEntry parsing.
                        let m = Meter::start();
                        let n = rt.block_on(async {
                            let mut n = 0u64;
                            for page in 1..=pages_each {
                                n += client
                                    .fetch_logs(t, page, 100)
                                    .await
                                    .expect("page")
                                    .entries
                                    .len() as u64;
                            }
                            n
                        });
                        f.client_only += m.stop();
                        f.entries_read += n;
                    }
                    2 => {
                        // (c) the floor: bare reqwest + serde into a minimal struct.
                        let m = Meter::start();
                        let (n, bytes) = rt.block_on(async {
                            let (mut n, mut bytes, mut ok) = (0u64, 0u64, 0u64);
                            for url in t_urls {
                                let body = bare_get(&bare, url).await;
                                bytes += body.len() as u64;
                                let page: FloorPage =
                                    serde_json::from_slice(&body).expect("floor parse");
                                n += page.data.len() as u64;
                                ok += page
                                    .data
                                    .iter()
                                    .filter(|e| e.status.as_deref() == Some("success"))
                                    .count() as u64;
                            }
                            std::hint::black_box(ok);
                            (n, bytes)
                        });
                        f.floor_struct += m.stop();
                        bytes_read += bytes;
                        floor_entries += n;
                    }
                    3 => {
                        // (d) a looser floor: serde_json::Value.
                        let m = Meter::start();
                        rt.block_on(async {
                            let mut n = 0u64;
                            for url in t_urls {
                                let body = bare_get(&bare, url).await;
                                let page: ValuePage =
                                    serde_json::from_slice(&body).expect("value parse");
                                n += page.data.len() as u64;
                            }
                            std::hint::black_box(n)
                        });
                        f.floor_value += m.stop();
                    }
                    _ => unreachable!("five paths"),
                }
            }
        }
        f.bytes_per_entry = bytes_read as f64 / floor_entries.max(1) as f64;
        f.entries_counted = states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum::<u64>()
            - counted_before;
        let pages = stats
            .iter()
            .map(|s| s.requests.values().sum::<u64>())
            .sum::<u64>()
            - requests_before;
        pages_mismatch |= pages != pages_each * targets.len() as u64;
        let mem_counted: u64 = mem_states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum();
        if mem_counted != f.entries_counted {
            eprintln!(
                "[ingest] NOTE: the collector-alone path counted {mem_counted}, the exporter {}",
                f.entries_counted
            );
        }
        f.pages = pages_each * targets.len() as u64;
        eprintln!(
            "[ingest] round {}: counted {} in {:.3}s CPU (process {:.2}s, wall {:.2}s); client {:.3}s; floor {:.3}s; value floor {:.3}s; ratio {:.2}",
            round + 1,
            f.entries_counted,
            f.exporter.thread_s,
            f.exporter.process_s,
            f.exporter.wall_s,
            f.client_only.thread_s,
            f.floor_struct.thread_s,
            f.floor_value.thread_s,
            f.ratio()
        );
        rounds.push(f);
    }
    let micro = collector_micro_costs(&rt, &client, &targets[0]);
    sim.quit();

    // Best of N per path: interference from other work only ever adds CPU
    // time, so the minimum is the steadiest estimate of each path's cost.
    let best = |pick: fn(&IngestFigures) -> Spent| {
        rounds
            .iter()
            .map(pick)
            .min_by(|a, b| a.thread_s.total_cmp(&b.thread_s))
            .unwrap_or_default()
    };
    let mut f = IngestFigures {
        exporter: best(|r| r.exporter),
        collector_only: best(|r| r.collector_only),
        client_only: best(|r| r.client_only),
        floor_struct: best(|r| r.floor_struct),
        floor_value: best(|r| r.floor_value),
        ..rounds[0]
    };
    let mut ratios: Vec<f64> = rounds.iter().map(IngestFigures::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let ratio_median = ratios[ratios.len() / 2];
    f.ratio_median = ratio_median;
    let ratios: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let per_entry = |s: Spent, n: u64| format!("{:.2} µs", s.thread_s * 1e6 / n.max(1) as f64);
    let mut sec = Section::new(
        "1. Ingest: CPU per log entry (this process only; the simulator runs in a child)",
        &[
            "path",
            "CPU s",
            "per entry read",
            "entries/CPU-s",
            "vs floor",
        ],
    );
    let row = |name: &str, s: Spent, n: u64| {
        vec![
            name.to_string(),
            format!("{:.3}", s.thread_s),
            per_entry(s, f.entries_read),
            format!("{:.0}", n as f64 / s.thread_s),
            format!("{:.2}x", s.thread_s / f.floor_struct.thread_s),
        ]
    };
    sec.row(row(
        "exporter: collector::poll_once + api::Client",
        f.exporter,
        f.entries_counted,
    ));
    sec.row(row(
        "collector::poll_once alone (same pages, parsed beforehand)",
        f.collector_only,
        f.entries_counted,
    ));
    sec.row(row(
        "api::Client::fetch_logs alone (same pages)",
        f.client_only,
        f.entries_read,
    ));
    sec.row(row(
        "floor: reqwest + serde minimal struct",
        f.floor_struct,
        f.entries_read,
    ));
    sec.row(row(
        "floor: reqwest + Vec<serde_json::Value>",
        f.floor_value,
        f.entries_read,
    ));
    sec.note(format!(
        "{} webhooks x {} new entries per round ({} counted, {} read in {} pages of 100, {:.0} bytes of JSON per entry, `request_payload` etc. included); {} rounds; within a round each webhook's pages go through the five paths back to back, in rotating order, so the paths share the machine's noise; each path's best round shown. Per-round exporter/floor ratios (sorted): {} (median {:.2}, the headline figure).",
        INGEST_WEBHOOKS,
        INGEST_NEW,
        f.entries_counted,
        f.entries_read,
        f.pages,
        f.bytes_per_entry,
        INGEST_ROUNDS,
        ratios.join(", "),
        ratio_median
    ));
    sec.note(format!(
        "CPU is this thread's (`CLOCK_THREAD_CPUTIME_ID`): each path runs alone on one current-thread tokio runtime, so its HTTP and parsing all run here; whole-process CPU (10 ms ticks) for the exporter's best pass: {:.2} s.{}",
        f.exporter.process_s,
        if pages_mismatch { " NOTE: the exporter read a different number of pages than expected in some round." } else { "" }
    ));
    sec.note(format!(
        "Split of the exporter's CPU: API client (HTTP + `LogEntry` parsing) {:.0} %, collector (dedupe, counting, timestamps; measured alone on pages parsed beforehand) {:.0} %. Against the floor the exporter spends {:.2} µs more per entry, of which the collector {:.2} µs.",
        100.0 * f.client_only.thread_s / f.exporter.thread_s,
        100.0 * f.collector_only.thread_s / f.exporter.thread_s,
        (f.exporter.thread_s - f.floor_struct.thread_s) * 1e6 / f.entries_read.max(1) as f64,
        f.collector_only.thread_s * 1e6 / f.entries_read.max(1) as f64
    ));
    sec.note(micro);
    report.sections.push(sec);
    f
}

/// Costs of the collector's pieces that are public, per entry, on 10,000
/// entries of one webhook (best of 5 passes each, wall clock): where its time goes.
fn collector_micro_costs(rt: &tokio::runtime::Runtime, client: &Client, target: &Target) -> String {
    use std::hint::black_box;
    use talkover_exporter::api::parse_timestamp_ms;
    use talkover_exporter::collect::{is_final, record};
    use talkover_exporter::model::DeliveryCounts;
    let entries: Vec<talkover_exporter::api::LogEntry> = rt.block_on(async {
        let mut all = Vec::new();
        for page in 1..=100 {
            all.extend(
                client
                    .fetch_logs(target, page, 100)
                    .await
                    .expect("page")
                    .entries,
            );
        }
        all
    });
    let n = entries.len().max(1) as f64;
    // Wall clock, best of 5: these passes are shorter than the scheduler
    // tick that thread CPU time advances by.
    let best_ns = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as f64
            })
            .fold(f64::INFINITY, f64::min)
            / n
    };
    let created: Vec<i64> = entries
        .iter()
        .map(|e| {
            e.created_at
                .as_deref()
                .and_then(parse_timestamp_ms)
                .unwrap_or(0)
        })
        .collect();
    let ts = best_ns(&mut || {
        for e in &entries {
            black_box(e.created_at.as_deref().and_then(parse_timestamp_ms));
        }
    });
    let rec = best_ns(&mut || {
        let mut counts = DeliveryCounts::default();
        for (e, c) in entries.iter().zip(&created) {
            record(&mut counts, e, Some(*c));
        }
        black_box(counts);
    });
    let fin = best_ns(&mut || {
        for e in &entries {
            black_box(is_final(e));
        }
    });
    // What `Poll::apply` does with ids per new entry: look the borrowed id
    // up in `handled` and `pending`, then store two owned copies of it (in
    // `new_this_poll` and `handled`), with the collector's hasher.
    let ids = best_ns(&mut || {
        let mut handled: foldhash::HashMap<String, i64> = Default::default();
        let pending: foldhash::HashMap<String, i64> = Default::default();
        let mut new_this_poll: foldhash::HashSet<String> = Default::default();
        for (e, c) in entries.iter().zip(&created) {
            let id = e.id.as_deref().unwrap_or_default();
            if handled.contains_key(id) || pending.contains_key(id) {
                continue;
            }
            new_this_poll.insert(id.to_string());
            handled.insert(id.to_string(), *c);
        }
        black_box((handled, new_this_poll));
    });
    format!(
        "Collector pieces, per counted entry (10,000 entries, best of 5, wall clock): `collector::record` {rec:.0} ns (labels are looked up borrowed: nothing is allocated once a series exists); `api::parse_timestamp_ms` {ts:.0} ns per call, twice per counted entry (`created_at`, `delivered_at`); id bookkeeping as in `Poll::apply` (two lookups, two owned copies of each new id, foldhash) {ids:.0} ns; `is_final` {fin:.0} ns."
    )
}

// =====================================================================
// 2 + 3. Scale and scrape
// =====================================================================

struct Shadow {
    target: Target,
    class: Class,
    state: TargetState,
    stats: PollStats,
}

#[derive(Default)]
struct Shadows {
    items: Vec<Shadow>,
    /// (start, duration) of every shadow poll.
    latencies: Vec<(Instant, Duration)>,
}

/// Serialized size of a state without its counters: the dedupe memory.
fn dedupe_bytes(state: &TargetState) -> usize {
    let mut s = state.clone();
    s.counts = Default::default();
    serde_json::to_vec(&s).map_or(0, |v| v.len())
}

fn full_bytes(state: &TargetState) -> usize {
    serde_json::to_vec(state).map_or(0, |v| v.len())
}

/// Per class: (average dedupe bytes, max dedupe bytes, average ids, max ids, average full bytes).
type ClassSizes = BTreeMap<Class, (f64, usize, f64, usize, f64)>;

/// Per class: (average dedupe bytes, max dedupe bytes, average ids, max ids, average full bytes).
fn shadow_sizes(shadows: &Mutex<Shadows>) -> ClassSizes {
    let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = BTreeMap::new();
    for class in Class::ALL {
        let items: Vec<&Shadow> = g.items.iter().filter(|s| s.class == class).collect();
        if items.is_empty() {
            continue;
        }
        let n = items.len() as f64;
        let d: Vec<usize> = items.iter().map(|s| dedupe_bytes(&s.state)).collect();
        let ids: Vec<usize> = items
            .iter()
            .map(|s| s.state.handled.len() + s.state.pending.len())
            .collect();
        let full: usize = items.iter().map(|s| full_bytes(&s.state)).sum();
        out.insert(
            class,
            (
                d.iter().sum::<usize>() as f64 / n,
                d.iter().copied().max().unwrap_or(0),
                ids.iter().sum::<usize>() as f64 / n,
                ids.iter().copied().max().unwrap_or(0),
                full as f64 / n,
            ),
        );
    }
    out
}

/// Shadow pollers: a sample of webhooks polled by the same `poll_once`, at
/// the same interval, on the exporter's runtime, so their `TargetState`s can
/// be measured (the exporter's own are not reachable from outside), and
/// their latency shows whether the runtime stalls.
async fn shadow_loop(base: String, shadows: Arc<Mutex<Shadows>>, stop: Arc<AtomicBool>) {
    let client = exporter_client(&base);
    let config = PollConfig {
        interval: SCALE_POLL,
        max_pages: 10,
        per_page: 100,
    };
    let mut next = tokio::time::Instant::now();
    let n = shadows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .items
        .len();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..n {
            let (target, mut state, mut stats) = {
                let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut g.items[i];
                (
                    s.target.clone(),
                    std::mem::take(&mut s.state),
                    std::mem::take(&mut s.stats),
                )
            };
            let started = Instant::now();
            let _ = poll_once(&client, &target, &config, &mut state, &mut stats).await;
            let took = started.elapsed();
            let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
            g.items[i].state = state;
            g.items[i].stats = stats;
            g.latencies.push((started, took));
        }
        next += SCALE_POLL;
        tokio::time::sleep_until(next).await;
    }
}

/// For the SCALE_BENCH_POOL experiment: a page source like `api::Client`
/// (reqwest, HTTP/1.1, same parsing of entries) whose pool keeps at most
/// `limit` idle connections and has at most `limit` requests in flight.
struct BenchSource {
    http: reqwest::Client,
    base: String,
    limit: Option<tokio::sync::Semaphore>,
}

#[derive(Deserialize)]
struct BenchEnvelope {
    data: Vec<talkover_exporter::api::LogEntry>,
    pagination: Option<BenchPagination>,
}

#[derive(Deserialize)]
struct BenchPagination {
    total: Option<u64>,
}

impl BenchSource {
    fn new(base: &str, limit: Option<usize>) -> BenchSource {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(n) = limit {
            builder = builder.pool_max_idle_per_host(n);
        }
        BenchSource {
            http: builder.build().expect("client"),
            base: base.to_string(),
            limit: limit.map(tokio::sync::Semaphore::new),
        }
    }
}

impl talkover_exporter::collect::PageSource for BenchSource {
    async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<talkover_exporter::api::LogPage, talkover_exporter::api::ApiError> {
        let _permit = match &self.limit {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        let url = format!(
            "{}{}?page={page}&per_page={per_page}",
            self.base,
            target.logs_path()
        );
        let err = |detail: String| talkover_exporter::api::ApiError::InvalidResponse {
            path: url.clone(),
            status: 0,
            detail,
        };
        let body = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| err(e.to_string()))?;
        let env: BenchEnvelope = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        Ok(talkover_exporter::api::LogPage {
            entries: env.data,
            total: env.pagination.and_then(|p| p.total),
        })
    }
}

/// The exporter's parts as `run()` wires them, minus discovery: for the
/// SCALE_BENCH_POOL experiment only.
async fn assembled_exporter(
    source: Arc<BenchSource>,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    use talkover_exporter::collect::Fleet;
    use talkover_exporter::http::{router, AppState};
    use talkover_exporter::metrics::Published;
    use talkover_exporter::model::Readiness;
    use talkover_exporter::persist::Sink;
    use talkover_exporter::target::WebhookMeta;
    let published = Arc::new(Published::new());
    let readiness = Arc::new(Readiness::new(false));
    let mut fleet = Fleet::new(
        source,
        PollConfig {
            interval: SCALE_POLL,
            max_pages: 10,
            per_page: 100,
        },
        Sink {
            published: published.clone(),
            commits: None,
        },
        readiness.clone(),
        Duration::from_secs(3600),
        BTreeMap::new(),
    );
    let wanted: std::collections::BTreeSet<Target> = (0..WEBHOOKS).map(scale_target).collect();
    for t in &wanted {
        published.set_info(
            t,
            WebhookMeta {
                name: format!("{} hook", t.webhook_id),
                enabled: true,
            },
        );
    }
    let since = talkover_exporter::clock::unix_now_ms();
    fleet.reconcile(&wanted, |_| since).await;
    let app = router(AppState::new(published, readiness, "/metrics".into(), 0));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await;
    fleet.shutdown().await;
    served.map_err(|e| e.to_string())
}

/// The size of one poller's state machine as `Fleet` spawns it.
fn poller_future_size(base: &str) -> usize {
    use talkover_exporter::collect::run_target;
    use talkover_exporter::model::Readiness;
    use talkover_exporter::persist::Sink;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let future = run_target(
        scale_target(0),
        Arc::new(exporter_client(base)),
        PollConfig {
            interval: SCALE_POLL,
            max_pages: 10,
            per_page: 100,
        },
        TargetState::default(),
        Sink {
            published: Arc::new(talkover_exporter::metrics::Published::new()),
            commits: None,
        },
        Arc::new(Readiness::new(false)),
        rx,
    );
    std::mem::size_of_val(&future)
}

/// `Published::render()` timed in-process, without HTTP or the rest of the
/// exporter competing for the CPU: 10,000 snapshots built from the shadow
/// states, each webhook taking the state of a shadow of its class.
fn render_in_process(shadows: &Mutex<Shadows>) -> (Duration, Duration, usize) {
    use talkover_exporter::metrics::Published;
    use talkover_exporter::model::TargetSnapshot;
    use talkover_exporter::target::WebhookMeta;
    let published = Published::new();
    {
        let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen: BTreeMap<Class, usize> = BTreeMap::new();
        for i in 0..WEBHOOKS {
            let class = class_of(i);
            let of_class: Vec<&Shadow> = g.items.iter().filter(|s| s.class == class).collect();
            if of_class.is_empty() {
                continue;
            }
            let k = seen.entry(class).or_default();
            let shadow = of_class[*k % of_class.len()];
            *k += 1;
            let target = scale_target(i);
            published.publish(TargetSnapshot::of(&target, &shadow.state, &shadow.stats));
            published.set_info(
                &target,
                WebhookMeta {
                    name: format!("{} hook", target.webhook_id),
                    enabled: true,
                },
            );
        }
    }
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let body = published.render();
        took.push(started.elapsed());
        bytes = body.len();
    }
    took.sort();
    (percentile(&took, 50.0), percentile(&took, 99.0), bytes)
}

/// The metric families with the most series in a scrape.
fn series_per_family(body: &str) -> String {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *per.entry(family).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = per.into_iter().collect();
    v.sort_by_key(|f| std::cmp::Reverse(f.1));
    v.iter()
        .take(6)
        .map(|(f, n)| format!("{f} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A log served from memory with real timestamps: the scale run's
/// simulator clock runs ahead of the wall clock (time is compressed), so a
/// rule keyed to the wall clock ("ten minutes after the newest entry")
/// cannot show there. Newest first, like the API by default.
#[derive(Default)]
struct SyntheticLog {
    entries: Mutex<Vec<talkover_exporter::api::LogEntry>>,
}

impl SyntheticLog {
    fn push(&self, id: String, created_ms: i64) {
        let ts =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push(
            talkover_exporter::api::LogEntry {
                id: Some(id),
                event: Some("campaign_call.completed".into()),
                attempt: Some(1),
                status: Some("success".into()),
                http_status: Some(200),
                duration_ms: Some(120.0),
                delivered_at: ts.clone(),
                created_at: ts,
            },
        );
    }
}

impl talkover_exporter::collect::PageSource for SyntheticLog {
    async fn fetch_logs(
        &self,
        _target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<talkover_exporter::api::LogPage, talkover_exporter::api::ApiError> {
        let all = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let start = ((page.max(1) - 1) * u64::from(per_page)) as usize;
        let entries = all
            .iter()
            .rev()
            .skip(start)
            .take(per_page as usize)
            .cloned()
            .collect();
        Ok(talkover_exporter::api::LogPage {
            entries,
            total: Some(all.len() as u64),
        })
    }
}

/// Dedupe state of a webhook that had history two hours ago, then a burst
/// of 300 attempts over 30 s ending `age` minutes ago, then nothing: after
/// the poll that counts the burst and one idle poll. (age min, ids, bytes).
fn after_burst() -> Vec<(i64, usize, usize)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target = scale_target(3);
    let config = PollConfig {
        interval: Duration::from_secs(30),
        max_pages: 10,
        per_page: 100,
    };
    let now = talkover_exporter::clock::unix_now_ms();
    [0i64, 11, 60]
        .into_iter()
        .map(|age| {
            let log = SyntheticLog::default();
            let end = now - age * 60_000;
            for i in 0..50 {
                log.push(format!("log-h{i:05}"), end - 7_200_000 + i * 1_000);
            }
            let mut state = TargetState::default();
            let mut stats = PollStats::default();
            rt.block_on(poll_once(&log, &target, &config, &mut state, &mut stats))
                .expect("baseline");
            for i in 0..300 {
                log.push(format!("log-b{i:05}"), end - 30_000 + i * 100);
            }
            for _ in 0..2 {
                rt.block_on(poll_once(&log, &target, &config, &mut state, &mut stats))
                    .expect("poll");
            }
            let counted: u64 = state.counts.attempts.values().sum();
            if counted != 300 {
                eprintln!("[scale] after_burst({age}): counted {counted} of 300");
            }
            (
                age,
                state.handled.len() + state.pending.len(),
                dedupe_bytes(&state),
            )
        })
        .collect()
}

/// Per-webhook sums from a scrape: (api requests, polls, attempts counted).
fn per_class_from_scrape(body: &str) -> BTreeMap<Class, (f64, f64, f64, usize)> {
    fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let key = format!("{name}=\"");
        let start = line.find(&key)? + key.len();
        let len = line[start..].find('"')?;
        Some(&line[start..start + len])
    }
    let mut per_hook: BTreeMap<(String, String), [f64; 3]> = BTreeMap::new();
    for line in body.lines() {
        let slot = if line.starts_with("talkover_exporter_api_requests_total{") {
            0
        } else if line.starts_with("talkover_exporter_polls_total{") {
            1
        } else if line.starts_with("talkover_webhook_delivery_attempts_total{") {
            2
        } else {
            continue;
        };
        let (Some(c), Some(w)) = (label(line, "campaign_id"), label(line, "webhook_id")) else {
            continue;
        };
        let v: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        per_hook
            .entry((c.to_string(), w.to_string()))
            .or_insert([0.0; 3])[slot] += v;
    }
    let mut out: BTreeMap<Class, (f64, f64, f64, usize)> = BTreeMap::new();
    for ((c, w), v) in per_hook {
        if let Some(class) = class_of_labels(&c, &w) {
            let e = out.entry(class).or_default();
            e.0 += v[0];
            e.1 += v[1];
            e.2 += v[2];
            e.3 += 1;
        }
    }
    out
}

#[derive(Debug, Default, Clone)]
struct ScaleFigures {
    ready: bool,
    per_webhook_kib: f64,
    per_webhook_ready_kib: f64,
    fds_max: usize,
    fds_max_hour: usize,
    body_growth_pct: f64,
    rss_growth_pct: f64,
    idle_state_avg: f64,
    idle_state_max: usize,
    /// Dedupe bytes of a webhook 11+ minutes after its burst (real clock).
    burst_state_settled: usize,
    /// ... and right after it.
    burst_state_fresh: usize,
    scrape_p50: Duration,
    scrape_ttfb_p99: Duration,
    render_p99: Duration,
    scrape_p99: Duration,
    scrape_bytes: usize,
    series: usize,
    polls_ratio: f64,
    /// Shadow poll latency p50, p99 without scrapes, then p50, p99 during them.
    poll_latency: [Duration; 4],
    idle_requests_per_poll: f64,
    busy_requests_per_poll: f64,
}

fn scale(report: &mut Report) -> ScaleFigures {
    let mut fig = ScaleFigures::default();
    eprintln!("[scale] starting the simulator child: {WEBHOOKS} webhooks, warm-up hour of history");
    let setup = Instant::now();
    let mut sim = SimChild::spawn("scale", &[]);
    let setup_s = setup.elapsed().as_secs_f64();
    let base = sim.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder().build().expect("scrape client");

    let rss_before = rss_kib();
    let fds_before = fd_count();
    let cpu_before = proc_cpu_s("/proc/self/stat");
    let sim_cpu_before = sim.cpu_s();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind exporter");
    let addr = listener.local_addr().expect("exporter address");
    let config = exporter_config(&base);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // SCALE_BENCH_POOL=N|unbounded: an A/B experiment, not the exporter as
    // shipped: the same Fleet and HTTP server, static targets, and a page
    // source whose connection pool is capped at N (see `BenchSource`).
    let pool = std::env::var("SCALE_BENCH_POOL").ok();
    let exporter = match pool.clone() {
        None => rt.spawn(async move {
            talkover_exporter::run(config, listener, async move {
                let _ = stop_rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        }),
        Some(pool) => {
            eprintln!("[scale] EXPERIMENT: assembled exporter, page source pool {pool}");
            let source = Arc::new(BenchSource::new(&base, pool.parse().ok()));
            rt.spawn(assembled_exporter(source, listener, stop_rx))
        }
    };
    let shadows = Arc::new(Mutex::new(Shadows::default()));
    {
        let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
        for class in Class::ALL {
            for i in (0..WEBHOOKS)
                .filter(|i| class_of(*i) == class)
                .take(SHADOWS_PER_CLASS)
            {
                g.items.push(Shadow {
                    target: scale_target(i),
                    class,
                    state: TargetState::default(),
                    stats: PollStats::default(),
                });
            }
        }
    }
    let shadow_stop = Arc::new(AtomicBool::new(false));
    let shadow_task = rt.spawn(shadow_loop(
        base.clone(),
        shadows.clone(),
        shadow_stop.clone(),
    ));

    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        rt.block_on(async {
            let started = Instant::now();
            let resp = http.get(url).send().await.ok()?;
            // Headers come once the body is rendered (it is sent whole).
            let headers = started.elapsed();
            let status = resp.status().as_u16();
            let body = resp.text().await.ok()?;
            Some((status, body, started.elapsed(), headers))
        })
    };

    // Discovery and the first poll (baseline) of every webhook.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if get("/-/ready").is_some_and(|(s, _, _, _)| s == 200) {
            fig.ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready_s = start.elapsed().as_secs_f64();
    let rss_ready = rss_kib();
    eprintln!(
        "[scale] ready after {ready_s:.1}s (discovery + {WEBHOOKS} baseline polls); RSS {}",
        mib(rss_ready)
    );

    // The hour: one simulated minute per wall second.
    let hour_scrapes_on = std::env::var("SCALE_BENCH_HOUR_SCRAPES").as_deref() != Ok("0");
    // Scrapes come from another process, as Prometheus's would: reading
    // 66 MiB bodies here would count in the exporter's memory.
    let mut scraper = Scraper::spawn(&format!("http://{addr}/metrics"));
    let body_path =
        std::env::temp_dir().join(format!("scale-bench-metrics-{}.txt", std::process::id()));
    let hour = Instant::now();
    let mut minute = 0u32;
    let mut rss: Vec<Sample> = vec![(0, rss_ready, fd_count())];
    let mut sizes_over_time: Vec<(u32, ClassSizes)> = Vec::new();
    let mut hour_scrapes: Vec<(u32, Duration, usize)> = Vec::new();
    let step = |sim: &mut SimChild, minute: &mut u32, rss: &mut Vec<Sample>| {
        *minute += 1;
        let due = hour + STEP_WALL * *minute;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sim.cmd(&format!("step {STEP_SIM_SECS}"));
        if *minute == BURST_MINUTE {
            sim.cmd(&format!("burst {BURST}"));
        }
        rss.push((*minute, rss_kib(), fd_count()));
    };
    let cpu_hour_before = proc_cpu_s("/proc/self/stat");
    let sim_cpu_hour_before = sim.cpu_s();
    while minute < HOUR_STEPS {
        step(&mut sim, &mut minute, &mut rss);
        if minute.is_multiple_of(10) {
            sizes_over_time.push((minute, shadow_sizes(&shadows)));
            // A scrape now and then, as Prometheus would (its buffers count too).
            if hour_scrapes_on {
                if let Some((_, took, _, bytes)) = scraper.scrape(None) {
                    hour_scrapes.push((minute, took, bytes));
                }
            }
            eprintln!("[scale] simulated minute {minute}: RSS {}", mib(rss_kib()));
        }
    }
    let hour_wall = hour.elapsed().as_secs_f64();
    let cpu_hour = proc_cpu_s("/proc/self/stat") - cpu_hour_before;
    let sim_cpu_hour = sim.cpu_s() - sim_cpu_hour_before;
    let rss_end = rss.last().map_or(0, |r| r.1);

    // Scrape phase: quiet, scraping, quiet; traffic goes on throughout.
    let phase = |sim: &mut SimChild,
                 minute: &mut u32,
                 rss: &mut Vec<Sample>,
                 scraper: &mut Scraper,
                 scrapes: usize| {
        let t0 = Instant::now();
        let r0 = sim.log_requests();
        let mut took = Vec::new();
        let mut last_bytes = 0usize;
        if scrapes == 0 {
            for _ in 0..QUIET_STEPS {
                step(sim, minute, rss);
            }
        } else {
            for _ in 0..scrapes {
                if Instant::now() >= hour + STEP_WALL * (*minute + 1) {
                    step(sim, minute, rss);
                }
                if let Some((status, d, headers, bytes)) = scraper.scrape(Some(&body_path)) {
                    if status == 200 {
                        took.push((d, headers));
                        last_bytes = bytes;
                    }
                }
            }
        }
        let r1 = sim.log_requests();
        let wall = t0.elapsed();
        (
            (r1 - r0) as f64 / wall.as_secs_f64(),
            (t0, t0 + wall),
            took,
            last_bytes,
        )
    };
    eprintln!(
        "[scale] scrape phase: {QUIET_STEPS} s quiet, {SCRAPES} scrapes, {QUIET_STEPS} s quiet"
    );
    let (rate_a, win_a, _, _) = phase(&mut sim, &mut minute, &mut rss, &mut scraper, 0);
    let (rate_b, win_b, took, body_bytes) =
        phase(&mut sim, &mut minute, &mut rss, &mut scraper, SCRAPES);
    let (rate_c, win_c, _, _) = phase(&mut sim, &mut minute, &mut rss, &mut scraper, 0);
    let scraper_cpu = scraper.cpu_s();
    scraper.quit();
    let final_sizes = shadow_sizes(&shadows);
    eprintln!(
        "[scale] per-minute RSS MiB/fds: {}",
        rss.iter()
            .map(|r| format!("{}:{:.0}/{}", r.0, r.1 as f64 / 1024.0, r.2))
            .collect::<Vec<_>>()
            .join(" ")
    );

    shadow_stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(());
    let stopped =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), exporter).await });
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), shadow_task).await });
    let exporter_cpu = proc_cpu_s("/proc/self/stat") - cpu_before;
    let sim_cpu = sim.cpu_s() - sim_cpu_before;
    sim.quit();
    drop(rt);
    if !matches!(stopped, Ok(Ok(Ok(())))) {
        eprintln!("[scale] the exporter did not stop cleanly: {stopped:?}");
    }
    let task_bytes = poller_future_size(&base);
    eprintln!("[scale] rendering /metrics in-process from the shadow states");
    let (render_p50, render_p99, render_bytes) = render_in_process(&shadows);
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);

    // ---- memory ----
    fig.per_webhook_kib = rss_end.saturating_sub(rss_before) as f64 / WEBHOOKS as f64;
    let at = |m: u32| rss.iter().find(|r| r.0 == m).map_or(0, |r| r.1);
    // The first half-hour fills each webhook's ten minutes of dedupe memory
    // and its counters' label sets; the second shows whether it stays put.
    let (rss30, rss60) = (at(30), at(HOUR_STEPS));
    let max_after_30 = rss
        .iter()
        .filter(|r| r.0 >= 30 && r.0 <= HOUR_STEPS)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    fig.rss_growth_pct = 100.0 * (rss60 as f64 - rss30 as f64) / rss30.max(1) as f64;
    fig.per_webhook_ready_kib = rss_ready.saturating_sub(rss_before) as f64 / WEBHOOKS as f64;
    fig.fds_max = rss.iter().map(|r| r.2).max().unwrap_or(0);
    fig.fds_max_hour = rss
        .iter()
        .filter(|r| r.0 <= HOUR_STEPS)
        .map(|r| r.2)
        .max()
        .unwrap_or(0);
    // How much the counters themselves grew (new label combinations), for
    // comparison with RSS: the body size of the scrapes at 30′ and 60′.
    let body_at = |m: u32| hour_scrapes.iter().find(|h| h.0 == m).map_or(0, |h| h.2);
    fig.body_growth_pct =
        100.0 * (body_at(HOUR_STEPS) as f64 - body_at(30) as f64) / body_at(30).max(1) as f64;
    let flat = fig.rss_growth_pct.abs() < 5.0;
    let mut sec = Section::new(
        "2. Scale: 10,000 discovered webhooks, an hour of simulated traffic",
        &["figure", "value", "goal", "verdict"],
    );
    sec.row(vec![
        "discovery + first poll of every webhook (ready)".into(),
        if fig.ready {
            format!("{ready_s:.1} s")
        } else {
            format!("not ready after {ready_s:.0} s")
        },
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS before starting the exporter".into(),
        mib(rss_before),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS when ready (10k webhooks, baselines taken)".into(),
        mib(rss_ready),
        String::new(),
        String::new(),
    ]);
    let rss_line: Vec<String> = rss
        .iter()
        .filter(|r| r.0.is_multiple_of(10) && r.0 <= HOUR_STEPS)
        .map(|r| format!("{}′ {:.0}", r.0, r.1 as f64 / 1024.0))
        .collect();
    sec.row(vec![
        "RSS over the hour, MiB (simulated minute′ MiB)".into(),
        rss_line.join(", "),
        String::new(),
        String::new(),
    ]);
    let fd_line: Vec<String> = rss
        .iter()
        .filter(|r| r.0.is_multiple_of(10) && r.0 <= HOUR_STEPS)
        .map(|r| format!("{}′ {}", r.0, r.2))
        .collect();
    sec.row(vec![
        "open file descriptors (≈ HTTP connections) over the hour".into(),
        format!("{} (before start {fds_before})", fd_line.join(", ")),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS after the hour".into(),
        mib(rss_end),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "size of one poller's future (`collector::run_target`, not yet polled)".into(),
        format!("{task_bytes} B"),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "per webhook: (RSS − RSS before) / 10k, when ready / after the hour".into(),
        format!(
            "{:.1} KiB / {:.1} KiB",
            fig.per_webhook_ready_kib, fig.per_webhook_kib
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS change, minute 30 → 60 (max in between)".into(),
        format!("{:+.1} % (max {})", fig.rss_growth_pct, mib(max_after_30)),
        "flat (< 5 %)".into(),
        verdict(flat),
    ]);
    let idle = final_sizes.get(&Class::Idle).copied().unwrap_or_default();
    fig.idle_state_avg = idle.0;
    fig.idle_state_max = idle.1;
    for class in Class::ALL {
        if let Some((avg, max, ids, max_ids, full)) = final_sizes.get(&class) {
            // The burst class is judged by the real-time check below: here
            // the burst is always "recent" to the exporter's clock.
            let goal_applies = class == Class::Idle;
            sec.row(vec![
                format!("dedupe state, {} webhook (JSON, without counters)", class.name()),
                format!("avg {avg:.0} B, max {max} B ({ids:.0} ids avg, {max_ids} max; with counters {full:.0} B)"),
                if goal_applies { "< 2 KiB".into() } else { String::new() },
                if goal_applies { verdict(*max < GOAL_IDLE_STATE) } else { String::new() },
            ]);
        }
    }
    // A burst then silence, with real past timestamps (see `after_burst`).
    let aged = after_burst();
    for (age, ids, bytes) in &aged {
        let settled = *age >= 11;
        sec.row(vec![
            format!("dedupe state of a webhook whose 300-attempt burst ended {age} min ago (real clock)"),
            format!("{bytes} B ({ids} {})", if *ids == 1 { "id" } else { "ids" }),
            if settled { "< 2 KiB".into() } else { "(within the 10-minute window)".into() },
            if settled { verdict(*bytes < GOAL_IDLE_STATE) } else { String::new() },
        ]);
    }
    fig.burst_state_settled = aged
        .iter()
        .filter(|a| a.0 >= 11)
        .map(|a| a.2)
        .max()
        .unwrap_or(0);
    fig.burst_state_fresh = aged.iter().find(|a| a.0 == 0).map_or(0, |a| a.2);
    let over_time: Vec<String> = sizes_over_time
        .iter()
        .map(|(m, s)| {
            let f = |c: Class| s.get(&c).map_or(0.0, |v| v.0);
            format!(
                "{m}′ {:.0}/{:.0}/{:.0}/{:.0}",
                f(Class::Busy),
                f(Class::Low),
                f(Class::Burst),
                f(Class::Idle)
            )
        })
        .collect();
    sec.row(vec![
        "dedupe state over time, avg bytes busy/low/burst/idle".into(),
        over_time.join(", "),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "CPU during the hour: exporter process / simulator child".into(),
        format!(
            "{:.0} % / {:.0} % of one core",
            100.0 * cpu_hour / hour_wall,
            100.0 * sim_cpu_hour / hour_wall
        ),
        String::new(),
        String::new(),
    ]);
    sec.note(format!(
        "Webhooks: 1,000 campaigns x 10, discovered through the listing endpoints every {}s. Per campaign w0 is busy (3 attempts/min), w1-w2 low (~7/h), w3 of every tenth campaign gets one burst of {BURST} attempts at minute {BURST_MINUTE} then nothing (100 webhooks), the rest idle (history from a warm-up hour, then nothing). 20 % of attempts are pending first.",
        SCALE_DISCOVERY.as_secs()
    ));
    sec.note(format!(
        "Time is compressed: one simulated minute per wall second (the simulator's `created_at` clock is advanced accordingly), so the exporter's 10-minute dedupe horizon sees a full hour; poll interval {} s wall (2 simulated minutes; idle webhooks back off as configured); one scrape every 10 simulated minutes. Setup of the simulator child (warm-up hour) took {setup_s:.1} s.",
        SCALE_POLL.as_secs()
    ));
    sec.note("The simulator's clock runs ahead of the wall clock (that is how the hour is compressed), so to the exporter every entry of the scale run is recent: rules keyed to the wall clock (an idle webhook forgets its last burst ten minutes after it) cannot act there. The 'burst ended N min ago' rows check that with a log served from memory with real timestamps (`collector::poll_once`, 50 entries two hours old, then 300 in 30 s ending N minutes ago, then an idle poll).".to_string());
    sec.note(format!(
        "Dedupe state is measured on {SHADOWS_PER_CLASS} webhooks per class polled by the same `collector::poll_once` at the same interval, on the exporter's runtime (the exporter's own `TargetState`s are not reachable from outside); bytes are `serde_json` of `TargetState` with `counts` emptied (what `state::encode` stores, minus counters)."
    ));
    if let Some(pool) = &pool {
        sec.note(format!("EXPERIMENT (SCALE_BENCH_POOL={pool}): not the exporter as shipped; Fleet + server with a page source whose connection pool is capped, static targets instead of discovery."));
    }
    report.sections.push(sec);

    // ---- scrape ----
    let mut ttfb: Vec<Duration> = took.iter().map(|t| t.1).collect();
    ttfb.sort();
    let mut took: Vec<Duration> = took.iter().map(|t| t.0).collect();
    took.sort();
    fig.scrape_p50 = percentile(&took, 50.0);
    fig.scrape_ttfb_p99 = percentile(&ttfb, 99.0);
    fig.render_p99 = render_p99;
    fig.scrape_p99 = percentile(&took, 99.0);
    fig.scrape_bytes = body_bytes;
    fig.series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    fig.polls_ratio = rate_b / ((rate_a + rate_c) / 2.0).max(1e-9);
    let shadow_lat = |w: (Instant, Instant)| {
        let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Duration> = g
            .latencies
            .iter()
            .filter(|(t, _)| *t >= w.0 && *t < w.1)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        (percentile(&v, 50.0), percentile(&v, 99.0), v.len())
    };
    let (la, lb, lc) = (shadow_lat(win_a), shadow_lat(win_b), shadow_lat(win_c));
    fig.poll_latency = [la.0, la.1, lb.0, lb.1];
    let mut sec = Section::new(
        "3. Scrape: GET /metrics with 10,000 webhooks",
        &["figure", "value", "goal", "verdict"],
    );
    sec.row(vec![
        format!(
            "time per scrape, request to last byte (the body streams while it renders, polling alongside), {} scrapes back to back: p50 / p99",
            took.len()
        ),
        format!("{} / {}", ms(fig.scrape_p50), ms(fig.scrape_p99)),
        format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
        verdict(fig.scrape_p99 < GOAL_SCRAPE_P99),
    ]);
    sec.row(vec![
        "of which until the response headers (sent as rendering starts): p50 / p99".into(),
        format!(
            "{} / {}",
            ms(percentile(&ttfb, 50.0)),
            ms(fig.scrape_ttfb_p99)
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "`Published::render()` alone, in-process, same population: p50 / p99 (10 renders)".into(),
        format!(
            "{} / {} ({:.1} MiB)",
            ms(render_p50),
            ms(render_p99),
            render_bytes as f64 / 1048576.0
        ),
        format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
        verdict(render_p99 < GOAL_SCRAPE_P99),
    ]);
    sec.row(vec![
        "series per family (top 6)".into(),
        series_per_family(&body),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "body size / series".into(),
        format!(
            "{:.1} MiB / {} series ({:.0} bytes per series)",
            fig.scrape_bytes as f64 / 1048576.0,
            fig.series,
            fig.scrape_bytes as f64 / fig.series.max(1) as f64
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "scrapes during the hour: time (body MiB) at simulated minute′".into(),
        hour_scrapes
            .iter()
            .map(|(m, d, b)| format!("{m}′ {} ({:.1})", ms(*d), *b as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", "),
        String::new(),
        String::new(),
    ]);
    let phase_max = |f: fn(&Sample) -> u64| {
        rss.iter()
            .filter(|r| r.0 > HOUR_STEPS)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    sec.row(vec![
        "exporter during the scrape phase: max RSS / max open file descriptors".into(),
        format!(
            "{} / {}",
            mib(phase_max(|r| r.1)),
            phase_max(|r| r.2 as u64)
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "log requests served per second: before / during / after the scrapes".into(),
        format!(
            "{rate_a:.0} / {rate_b:.0} / {rate_c:.0} (during = {:.0} % of quiet)",
            100.0 * fig.polls_ratio
        ),
        "polling keeps its pace (≥ 90 %)".into(),
        verdict(fig.polls_ratio >= 0.9),
    ]);
    sec.row(vec![
        "shadow poll latency p50 / p99: before / during / after".into(),
        format!(
            "{} / {} ; {} / {} ; {} / {} ({}, {}, {} polls)",
            ms(la.0),
            ms(la.1),
            ms(lb.0),
            ms(lb.1),
            ms(lc.0),
            ms(lc.1),
            la.2,
            lb.2,
            lc.2
        ),
        String::new(),
        String::new(),
    ]);
    sec.note("Scrape time is measured by a scraper child process (playing Prometheus) over loopback, request to last byte. Polls continue throughout; with polls mostly one request each, log requests per second is the poll completion rate.".to_string());
    sec.note(format!(
        "Whole run: exporter process {exporter_cpu:.1} CPU-s, simulator child {sim_cpu:.1} CPU-s, scraper child {scraper_cpu:.1} CPU-s."
    ));
    report.sections.push(sec);

    // ---- API economy, from the final scrape ----
    let classes = per_class_from_scrape(&body);
    let mut sec = Section::new(
        "4a. API economy in the scale run (talkover_exporter_api_requests_total / poll count)",
        &[
            "class",
            "webhooks",
            "polls",
            "requests per poll",
            "attempts counted per poll",
        ],
    );
    for class in Class::ALL {
        if let Some((req, polls, counted, n)) = classes.get(&class) {
            let rpp = req / polls.max(1.0);
            match class {
                Class::Idle => fig.idle_requests_per_poll = rpp,
                Class::Busy => fig.busy_requests_per_poll = rpp,
                _ => {}
            }
            sec.row(vec![
                class.name().to_string(),
                n.to_string(),
                format!("{polls:.0}"),
                format!("{rpp:.3}"),
                format!("{:.2}", counted / polls.max(1.0)),
            ]);
        }
    }
    sec.note("Every poll of these classes finds fewer than 100 new entries except the burst poll (300 new: 4 requests), so the formula expects 1 request per poll (idle: exactly 1).".to_string());
    report.sections.push(sec);
    fig
}

// =====================================================================
// 4. API economy, controlled
// =====================================================================

fn economy(report: &mut Report) {
    eprintln!("[economy] requests per poll against the formula");
    let mut sim = SimChild::spawn("economy", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = exporter_client(&sim.url());
    let target = economy_target();
    let config = PollConfig {
        interval: Duration::from_secs(30),
        max_pages: 10,
        per_page: 100,
    };
    let mut sec = Section::new(
        "4b. API economy: requests per poll (collector::poll_once, --poll.max-pages 10)",
        &[
            "order",
            "new entries",
            "requests (per poll)",
            "expected ceil((new+1)/100)",
            "bound ceil(new/100)+1 (+2 per extra poll)",
            "counted",
            "verdict",
        ],
    );
    for order in ["newest", "oldest"] {
        sim.cmd(&format!("order {order}"));
        let mut state = TargetState::default();
        let mut stats = PollStats::default();
        let poll = |state: &mut TargetState, stats: &mut PollStats| {
            rt.block_on(poll_once(&client, &target, &config, state, stats))
                .expect("poll");
        };
        poll(&mut state, &mut stats); // baseline
        poll(&mut state, &mut stats); // settle
        for new in [0usize, 1, 50, 99, 100, 101, 250, 899, 999, 0] {
            if new > 0 {
                sim.cmd(&format!("gen {target} {new}"));
            }
            let sim_before: u64 = sim.cmd(&format!("requests {target}")).parse().unwrap_or(0);
            let counted_before: u64 = state.counts.attempts.values().sum();
            // Poll until everything new is counted (a burst larger than the
            // page budget takes more than one poll, by design).
            let mut per_poll: Vec<u64> = Vec::new();
            loop {
                let before: u64 = stats.requests.values().sum();
                poll(&mut state, &mut stats);
                per_poll.push(stats.requests.values().sum::<u64>() - before);
                let counted = state.counts.attempts.values().sum::<u64>() - counted_before;
                if (counted >= new as u64 && state.gaps.is_empty()) || per_poll.len() >= 5 {
                    break;
                }
            }
            let requests: u64 = per_poll.iter().sum();
            let sim_requests =
                sim.cmd(&format!("requests {target}")).parse().unwrap_or(0) - sim_before;
            let counted = state.counts.attempts.values().sum::<u64>() - counted_before;
            let expected = if new == 0 {
                1
            } else {
                (new as u64 + 1).div_ceil(100)
            };
            // A burst beyond the page budget is finished by later polls,
            // each reading the newest page and the page where the burst met
            // old ground once more.
            let extra_polls = per_poll.len() as u64 - 1;
            let bound = if new == 0 {
                1
            } else {
                (new as u64).div_ceil(100) + 1 + 2 * extra_polls
            };
            let met = requests <= bound && counted == new as u64 && requests == sim_requests;
            if !met {
                report.economy_misses.push(format!(
                    "{order}-first, {new} new: {requests} requests (bound {bound})"
                ));
            }
            let shown = per_poll
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" + ");
            sec.row(vec![
                format!("{order}-first"),
                new.to_string(),
                if requests == sim_requests {
                    shown
                } else {
                    format!("{shown} (simulator saw {sim_requests})")
                },
                expected.to_string(),
                bound.to_string(),
                counted.to_string(),
                if requests == expected {
                    "= expected".into()
                } else if met {
                    "within bound".into()
                } else {
                    "goal missed".into()
                },
            ]);
        }
    }
    sec.note("Each row: `new` entries arrive, then the same webhook is polled until all are counted (one poll unless the burst exceeds the 10-page budget: each later poll may add two requests, the newest page and the page where the burst met old ground); no pending entries, nothing arriving during the poll. 'requests' is talkover_exporter_api_requests_total's increase, checked against the simulator's own count.".to_string());
    report.sections.push(sec);
    sim.quit();
}

// =====================================================================
// Report
// =====================================================================

struct Section {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Section {
    fn new(title: &str, header: &[&str]) -> Section {
        Section {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }
}

#[derive(Default)]
struct Report {
    machine: Vec<(String, String)>,
    summary: Option<Section>,
    sections: Vec<Section>,
    economy_misses: Vec<String>,
}

impl Report {
    fn machine(&mut self) {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .map_or_else(String::new, |k| format!("{:.1} GiB", k as f64 / 1048576.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let run = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let commit = run("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !run("git", &["status", "--porcelain", "--", "src"]).is_empty();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.machine = vec![
            ("command".into(), "`cargo bench --bench scale`".into()),
            ("date".into(), date),
            (
                "commit".into(),
                format!(
                    "{commit}{}",
                    if dirty { " (src/ with uncommitted changes)" } else { "" }
                ),
            ),
            (
                "machine".into(),
                format!(
                    "{nproc} CPUs ({}, {} MHz, {} cache), {mem} RAM, Linux {}; shared with other work",
                    field("model name"),
                    field("cpu MHz"),
                    field("cache size"),
                    kernel.trim()
                ),
            ),
            ("rustc".into(), run("rustc", &["--version"])),
            (
                "build".into(),
                "bench profile = release (thin LTO, codegen-units 4)".into(),
            ),
        ];
    }

    fn summary(&mut self, ingest: &IngestFigures, scale: &ScaleFigures, took: Duration) {
        let mut s = Section::new("Summary", &["goal", "figure", "target", "verdict"]);
        s.row(vec![
            "ingest CPU vs bare fetch+parse floor".into(),
            format!(
                "{:.2}x (median of {INGEST_ROUNDS} rounds; best rounds {:.2}x); {:.0} entries counted per CPU-second; {:.2}x the serde_json::Value floor",
                ingest.ratio_median,
                ingest.ratio(),
                ingest.entries_counted as f64 / ingest.exporter.thread_s,
                ingest.exporter.thread_s / ingest.floor_value.thread_s
            ),
            format!("≤ {GOAL_INGEST_RATIO}x"),
            verdict(ingest.ratio_median <= GOAL_INGEST_RATIO),
        ]);
        s.row(vec![
            "dedupe state per idle webhook".into(),
            format!(
                "idle webhooks (scale run): avg {:.0} B, max {} B; 11+ min after a 300-attempt burst: {} B (right after it: {} B, the 10-minute window)",
                scale.idle_state_avg,
                scale.idle_state_max,
                scale.burst_state_settled,
                scale.burst_state_fresh
            ),
            "< 2 KiB".into(),
            verdict(
                scale.idle_state_max < GOAL_IDLE_STATE
                    && scale.burst_state_settled < GOAL_IDLE_STATE,
            ),
        ]);
        s.row(vec![
            "memory, 10k webhooks, flat over an hour".into(),
            format!(
                "{:.1} KiB per webhook after the hour ({:.1} KiB when ready); RSS {:+.1} % from minute 30 to 60 (the /metrics body {:+.1} %: new label combinations); open connections up to {} in the hour, {} with scrapes running",
                scale.per_webhook_kib,
                scale.per_webhook_ready_kib,
                scale.rss_growth_pct,
                scale.body_growth_pct,
                scale.fds_max_hour,
                scale.fds_max
            ),
            "flat (< 5 %)".into(),
            verdict(scale.rss_growth_pct.abs() < 5.0),
        ]);
        s.row(vec![
            "/metrics render, 10k webhooks".into(),
            format!(
                "whole scrape (request to last byte, streamed) p50 {} / p99 {} for {:.1} MiB, {} series; render alone p99 {}",
                ms(scale.scrape_p50),
                ms(scale.scrape_p99),
                scale.scrape_bytes as f64 / 1048576.0,
                scale.series,
                ms(scale.render_p99),
            ),
            format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
            verdict(scale.scrape_p99 < GOAL_SCRAPE_P99 && scale.render_p99 < GOAL_SCRAPE_P99),
        ]);
        s.row(vec![
            "polling during scrapes".into(),
            format!(
                "{:.0} % of the quiet poll rate (50 scrapes back to back); poll latency p50 {} → {}, p99 {} → {}",
                100.0 * scale.polls_ratio,
                ms(scale.poll_latency[0]),
                ms(scale.poll_latency[2]),
                ms(scale.poll_latency[1]),
                ms(scale.poll_latency[3])
            ),
            "≥ 90 %".into(),
            verdict(scale.polls_ratio >= 0.9),
        ]);
        s.row(vec![
            "API requests per poll".into(),
            format!(
                "scale run: idle {:.3}, busy {:.3}; controlled (4b): {}",
                scale.idle_requests_per_poll,
                scale.busy_requests_per_poll,
                if self.economy_misses.is_empty() {
                    "all within the formula".to_string()
                } else {
                    format!("over the bound in {}", self.economy_misses.join("; "))
                }
            ),
            "idle 1; busy ≤ ceil(new/100)+1 (a burst beyond --poll.max-pages: +2 per extra poll)"
                .into(),
            if (scale.idle_requests_per_poll - 1.0).abs() > 1e-9 {
                verdict(false)
            } else if self.economy_misses.is_empty() {
                verdict(true)
            } else if self.economy_misses.iter().all(|m| m.starts_with("oldest")) {
                "met newest-first; missed oldest-first".into()
            } else {
                verdict(false)
            },
        ]);
        self.machine.push((
            "bench wall time".into(),
            format!("{:.0} s", took.as_secs_f64()),
        ));
        self.summary = Some(s);
    }

    fn all_sections(&self) -> impl Iterator<Item = &Section> {
        self.summary.iter().chain(&self.sections)
    }

    fn emit(&self, write_docs: bool) {
        let mut text = String::new();
        let _ = writeln!(text, "\n== talkover-exporter scale benchmark ==");
        for (k, v) in &self.machine {
            let _ = writeln!(text, "{k:>16}: {v}");
        }
        for s in self.all_sections() {
            let _ = writeln!(text, "\n-- {} --", s.title);
            let mut widths: Vec<usize> = s.header.iter().map(|h| h.chars().count()).collect();
            for r in &s.rows {
                for (i, c) in r.iter().enumerate() {
                    if i < widths.len() {
                        widths[i] = widths[i].max(c.chars().count());
                    }
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let pad = widths
                            .get(i)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(c.chars().count());
                        format!("{c}{}", " ".repeat(pad))
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let _ = writeln!(text, "{}", line(&s.header));
            for r in &s.rows {
                let _ = writeln!(text, "{}", line(r));
            }
            for n in &s.notes {
                let _ = writeln!(text, "  * {n}");
            }
        }
        println!("{text}");

        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `cargo bench --bench scale` (`benches/scale.rs`); rerun it to refresh this page. \
             The simulator runs in a child process, so CPU and memory below are the exporter's alone. \
             Figures from one run on a shared machine: expect some noise.\n"
        );
        for (k, v) in &self.machine {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        for s in self.all_sections() {
            let _ = writeln!(md, "\n## {}\n", s.title);
            let _ = writeln!(md, "| {} |", s.header.join(" | "));
            let _ = writeln!(md, "|{}", "---|".repeat(s.header.len()));
            for r in &s.rows {
                let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
                let _ = writeln!(md, "| {} |", cells.join(" | "));
            }
            if !s.notes.is_empty() {
                let _ = writeln!(md);
                for n in &s.notes {
                    let _ = writeln!(md, "- {n}");
                }
            }
        }
        if !write_docs {
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let path = dir.join("benchmarks.md");
        match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, md)) {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}

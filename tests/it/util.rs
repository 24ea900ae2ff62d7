//! Shared test plumbing: a simulator and an exporter on ephemeral loopback
//! ports, scrapes parsed as Prometheus text, and polling waits.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use talkover_exporter::api::{Credentials, Token};
use talkover_exporter::cli::{Config, Source};
use talkover_exporter::discovery::{Filters, Shard};
use talkover_exporter::sim::{Order, Profile, Simulator, Truth};
use talkover_exporter::target::{Scope, Target};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const TOKEN: &str = "talq_test_secret_token_0123456789";

/// A simulator served on 127.0.0.1:0.
pub struct Sim {
    pub sim: Simulator,
    pub url: String,
    _task: tokio::task::JoinHandle<()>,
}

pub async fn start_sim(seed: u64, order: Order, targets: &[&str], profile: Profile) -> Sim {
    let sim = Simulator::new(seed, Some(TOKEN.to_string()), order);
    for t in targets {
        sim.add_webhook(t.parse().expect("target"), profile.clone());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let task = tokio::spawn({
        let sim = sim.clone();
        async move {
            let _ = sim.serve(listener).await;
        }
    });
    Sim {
        sim,
        url,
        _task: task,
    }
}

/// An exporter running in-process against `sim_url`.
pub struct Exporter {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct ExporterOptions {
    pub token: String,
    pub token_file: Option<std::path::PathBuf>,
    pub interval: Duration,
    pub max_pages: u32,
    pub timeout: Duration,
    pub max_body_size: usize,
    pub state_file: Option<std::path::PathBuf>,
    pub max_rps: f64,
    pub discover: Vec<Scope>,
    pub discover_interval: Duration,
    pub filters: Filters,
    pub shard: Shard,
    pub stale_after: Duration,
    pub web: Option<talkover_exporter::web::WebConfig>,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        ExporterOptions {
            token: TOKEN.to_string(),
            token_file: None,
            interval: Duration::from_millis(100),
            max_pages: 10,
            timeout: Duration::from_secs(2),
            max_body_size: 32 << 20,
            state_file: None,
            max_rps: 1000.0,
            discover: Vec::new(),
            discover_interval: Duration::from_secs(300),
            filters: Filters::default(),
            shard: Shard::default(),
            stale_after: Duration::from_secs(3600),
            web: None,
        }
    }
}

pub async fn start_exporter(sim_url: &str, targets: &[&str], opts: ExporterOptions) -> Exporter {
    let config = Config {
        source: Source::Api {
            url: sim_url.parse().expect("url"),
            credentials: match &opts.token_file {
                Some(path) => Credentials::File(path.clone()),
                None => Credentials::Token(Token::new(&opts.token).expect("token")),
            },
            allow_insecure: true,
        },
        targets: targets
            .iter()
            .map(|t| t.parse::<Target>().expect("target"))
            .collect(),
        poll_interval: opts.interval,
        max_pages: opts.max_pages,
        timeout: opts.timeout,
        max_body_size: opts.max_body_size,
        max_requests_per_second: opts.max_rps,
        telemetry_path: "/metrics".into(),
        state_file: opts.state_file.clone(),
        discover: opts.discover.clone(),
        discover_interval: opts.discover_interval,
        filters: opts.filters.clone(),
        shard: opts.shard,
        stale_after: opts.stale_after,
        web: opts.web.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        talkover_exporter::run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("exporter runs");
    });
    Exporter {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Exporter {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(self.url(path)).await.expect("GET exporter");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    pub async fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    pub async fn wait_ready(&self) {
        wait_for("exporter ready", Duration::from_secs(20), || async {
            self.get("/-/ready").await.0 == 200
        })
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("exporter stops within 10s")
                .expect("exporter task");
        }
    }
}

/// One parsed scrape: series (name + sorted labels) to value.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub raw: String,
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
            };
            series.push((name, labels, value));
        }
        Scrape {
            raw: text.to_string(),
            series,
        }
    }

    /// Sum of the series of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// `talkover_webhook_delivery_attempts_total` of one target, as truth is shaped.
    pub fn attempts(&self, target: &Target) -> Truth {
        let mut out = Truth::new();
        for (n, labels, v) in &self.series {
            if n != "talkover_webhook_delivery_attempts_total" || !is_target(labels, target) {
                continue;
            }
            let key = (
                labels["event"].clone(),
                labels["status"].clone(),
                labels["code"].clone(),
            );
            *out.entry(key).or_default() += *v as u64;
        }
        out
    }

    pub fn target_value(&self, name: &str, target: &Target, extra: &[(&str, &str)]) -> f64 {
        let mut want = vec![
            ("campaign_id", target.campaign_id()),
            ("agent_id", target.agent_id()),
            ("webhook_id", target.webhook_id.as_str()),
        ];
        want.extend_from_slice(extra);
        self.sum(name, &want)
    }
}

fn is_target(labels: &BTreeMap<String, String>, t: &Target) -> bool {
    labels.get("campaign_id").map(String::as_str) == Some(t.campaign_id())
        && labels.get("agent_id").map(String::as_str) == Some(t.agent_id())
        && labels.get("webhook_id") == Some(&t.webhook_id)
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value must be quoted in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every target's counters equal the simulator's truth since `mark`.
pub async fn wait_exact(exporter: &Exporter, sim: &Simulator, mark: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let truth = sim.truth(mark);
        let scrape = exporter.scrape().await;
        let diffs: Vec<String> = truth
            .iter()
            .filter_map(|(t, want)| {
                let got = scrape.attempts(t);
                (got != *want).then(|| format!("{t}: exporter {got:?}\n  truth {want:?}"))
            })
            .collect();
        if diffs.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters never matched the simulator:\n{}",
            diffs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn quiet_profile() -> Profile {
    Profile {
        rate_per_second: 0.0,
        ..Profile::default()
    }
}

/// A free loopback port (bound, read, released) for a child process to use.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Scrapes the exporter listening on `port`; `None` while it is not answering.
pub async fn scrape_at(port: u16) -> Option<Scrape> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    Some(Scrape::parse(&resp.text().await.ok()?))
}

/// A child process (the real binary) killed when the test ends, even by a
/// failed assertion, so it never outlives the test.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Starts `cmd` with its stdout discarded.
    pub fn spawn(cmd: &mut std::process::Command) -> KillOnDrop {
        KillOnDrop(
            cmd.stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn the exporter"),
        )
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! The simulator and the exporter in this process, on ephemeral loopback
//! ports, and the wait for the exporter to agree with the simulator.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use talkover_count::target::Scope;
use talkover_exporter::Cli;
use talkover_sim::{Order, Profile, Simulator, Truth};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{scrape_at, wait_for, Scrape};

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
    /// Holds the token file for as long as the exporter runs.
    _dir: tempfile::TempDir,
}

/// What the exporter is started with. Each field is a flag; `flags` are more
/// of them, as written on a command line: the tests reach the exporter
/// through the same surface as its users.
pub struct ExporterOptions {
    /// Written to a token file (`--talkover.token-file`).
    pub token: String,
    /// A token file of the test's own, used instead of `token`.
    pub token_file: Option<std::path::PathBuf>,
    pub interval: Duration,
    pub max_pages: u32,
    pub timeout: Duration,
    pub max_body_size: usize,
    pub state_file: Option<std::path::PathBuf>,
    pub max_rps: f64,
    pub discover: Vec<Scope>,
    pub discover_interval: Duration,
    pub stale_after: Duration,
    /// Any other flags, e.g. `["--collector.poll-stats", "--shard.count=3"]`.
    pub flags: Vec<String>,
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
            stale_after: Duration::from_secs(3600),
            flags: Vec::new(),
        }
    }
}

/// `flags` as strings, for [`ExporterOptions::flags`].
pub fn flags(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| f.to_string()).collect()
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The command line `opts` stand for, token file included.
fn command_line(
    sim_url: &str,
    targets: &[&str],
    opts: &ExporterOptions,
    dir: &std::path::Path,
) -> Vec<String> {
    let token_file = match &opts.token_file {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("token");
            std::fs::write(&path, &opts.token).expect("write token file");
            path
        }
    };
    let mut args: Vec<String> = vec![
        "talkover-exporter".into(),
        format!("--talkover.url={sim_url}"),
        "--talkover.allow-insecure".into(),
        format!("--talkover.token-file={}", token_file.display()),
        format!("--poll.interval={}", ms(opts.interval)),
        format!("--poll.max-pages={}", opts.max_pages),
        format!("--talkover.timeout={}", ms(opts.timeout)),
        format!("--talkover.max-body-size={}", opts.max_body_size),
        format!("--talkover.max-requests-per-second={}", opts.max_rps),
        format!("--discover.interval={}", ms(opts.discover_interval)),
        format!("--target.stale-after={}", ms(opts.stale_after)),
    ];
    args.extend(targets.iter().map(|t| format!("--target={t}")));
    for scope in &opts.discover {
        let kind = match scope {
            Scope::Campaign => "campaigns",
            Scope::Agent => "agents",
        };
        args.push(format!("--discover={kind}"));
    }
    if let Some(path) = &opts.state_file {
        args.push(format!("--state.file={}", path.display()));
    }
    args.extend(opts.flags.iter().cloned());
    args
}

pub async fn start_exporter(sim_url: &str, targets: &[&str], opts: ExporterOptions) -> Exporter {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = command_line(sim_url, targets, &opts, dir.path());
    let config = Cli::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .into_config()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
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
        _dir: dir,
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

/// Waits until every target's counters equal the simulator's truth since `mark`.
pub async fn wait_exact(exporter: &Exporter, sim: &Simulator, mark: u64) {
    wait_exact_at(exporter.addr.port(), sim, mark).await;
}

/// The same for any exporter listening on `port` (the real binary, say).
pub async fn wait_exact_at(port: u16, sim: &Simulator, mark: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let truth = sim.truth(mark);
        if let Some(scrape) = scrape_at(port).await {
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
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A profile without background traffic: tests make every attempt.
pub fn quiet_profile() -> Profile {
    Profile {
        rate_per_second: 0.0,
        ..Profile::default()
    }
}

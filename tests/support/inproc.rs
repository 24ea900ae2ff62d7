//! The simulator and the exporter in this process, on ephemeral loopback
//! ports, and the wait for the exporter to agree with the simulator.

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
    pub web: Option<talkover_exporter::http::WebConfig>,
    pub failures: talkover_exporter::model::FailurePolicy,
    /// `--[no-]collector.*`.
    pub budget: talkover_exporter::metrics::Budget,
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
            failures: talkover_exporter::model::FailurePolicy::default(),
            budget: talkover_exporter::metrics::Budget::default(),
        }
    }
}

pub async fn start_exporter(sim_url: &str, targets: &[&str], opts: ExporterOptions) -> Exporter {
    let source = Source::Api {
        url: sim_url.parse().expect("url"),
        credentials: match &opts.token_file {
            Some(path) => Credentials::File(path.clone()),
            None => Credentials::Token(Token::new(&opts.token).expect("token")),
        },
        allow_insecure: true,
    };
    let config = Config {
        targets: targets
            .iter()
            .map(|t| t.parse::<Target>().expect("target"))
            .collect(),
        poll_interval: opts.interval,
        max_pages: opts.max_pages,
        timeout: opts.timeout,
        max_body_size: opts.max_body_size,
        max_requests_per_second: opts.max_rps,
        state_file: opts.state_file.clone(),
        discover: opts.discover.clone(),
        discover_interval: opts.discover_interval,
        filters: opts.filters.clone(),
        shard: opts.shard,
        stale_after: opts.stale_after,
        web: opts.web.clone(),
        failures: opts.failures,
        budget: opts.budget,
        ..Config::new(source)
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

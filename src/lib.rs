//! talkover-exporter: Prometheus metrics from Talkover webhook delivery logs.
//!
//! # Layout
//!
//! The modules follow the data: API pages → collector → metrics → `/metrics`.
//!
//! - [`cli`]: flags and environment, validated into a [`cli::Config`].
//! - [`target`]: the identity of a watched webhook.
//! - [`api`]: the Talkover REST client and its serde models (no metrics).
//! - [`collector`]: polling, paging and dedupe; per-target state as one value.
//! - [`state`]: the state file; commits each target's state, then publishes it.
//! - [`metrics`]: plain counter values and their Prometheus text rendering (no HTTP).
//! - [`server`]: the axum routes.
//! - [`simulator`]: a fake Talkover API with fault injection, for `--demo` and tests.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod collector;
pub mod metrics;
pub mod server;
pub mod simulator;
pub mod state;
pub mod target;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::api::{Client, ClientOptions};
use crate::cli::{Config, Source};
use crate::collector::{PollConfig, Readiness, Sink};
use crate::metrics::Published;
use crate::server::AppState;
use crate::simulator::Simulator;
use crate::state::StateStore;

/// Why the exporter could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or served.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The state file could not be opened or created.
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// How long in-flight scrapes may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the exporter on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (base_url, token, allow_insecure, mut targets) = match &config.source {
        Source::Api {
            url,
            token,
            allow_insecure,
        } => (
            url.clone(),
            Some(token.clone()),
            *allow_insecure,
            config.targets.clone(),
        ),
        Source::Demo { listen } => {
            let sim = Simulator::demo();
            let sim_listener = TcpListener::bind(listen)
                .await
                .map_err(|source| Error::Io {
                    what: format!("binding the demo simulator to {listen}"),
                    source,
                })?;
            let addr = sim_listener.local_addr().map_err(|source| Error::Io {
                what: "reading the demo simulator address".into(),
                source,
            })?;
            info!(url = %format!("http://{addr}/"), "demo: simulated Talkover API started");
            let mut targets = sim.targets();
            targets.extend(config.targets.iter().cloned());
            tokio::spawn(sim.clone().drive());
            tokio::spawn(sim.serve(sim_listener));
            let url = url::Url::parse(&format!("http://{addr}/")).map_err(|e| Error::Io {
                what: "building the demo URL".into(),
                source: std::io::Error::other(e),
            })?;
            (url, None, true, targets)
        }
    };
    targets.sort();
    targets.dedup();

    let client = Arc::new(Client::new(ClientOptions {
        base_url,
        token,
        timeout: config.timeout,
        max_body_bytes: config.max_body_size,
        allow_insecure,
        max_requests_per_second: config.max_requests_per_second,
    })?);
    let published = Arc::new(Published::new());
    let readiness = Arc::new(Readiness::new(targets.len()));
    let state_file = match (&config.source, &config.state_file) {
        // The demo's simulated account is new on every start: nothing to resume.
        (Source::Demo { .. }, Some(path)) => {
            info!(path = %path.display(), "demo: not using the state file");
            None
        }
        (_, path) => path.as_ref(),
    };
    let (mut restored, commits, committer) = match state_file {
        None => (Default::default(), None, None),
        Some(path) => {
            let (store, restored) = StateStore::open(path, &targets)?;
            let (tx, rx) = mpsc::channel(targets.len().clamp(16, 4096));
            let task = tokio::spawn(state::run_committer(store, rx, published.clone()));
            (restored, Some(tx), Some(task))
        }
    };
    let sink = Sink {
        published: published.clone(),
        commits,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let poll = PollConfig {
        interval: config.poll_interval,
        max_pages: config.max_pages,
        per_page: api::MAX_PER_PAGE,
    };
    // Restored counters are durable already: scrapes see them before any poll.
    for (target, state) in &restored {
        published.publish(collector::snapshot(target, state, &Default::default()));
    }
    let mut pollers = tokio::task::JoinSet::new();
    for target in &targets {
        pollers.spawn(collector::run_target(
            target.clone(),
            client.clone(),
            poll.clone(),
            restored.remove(target).unwrap_or_default(),
            sink.clone(),
            readiness.clone(),
            stop_rx.clone(),
        ));
    }
    info!(targets = targets.len(), "watching webhooks");

    let app = server::router(AppState {
        published,
        readiness,
        telemetry_path: config.telemetry_path.clone(),
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = stopped_tx.send(());
    });
    let served = async {
        server.await.map_err(|source| Error::Io {
            what: "serving HTTP".into(),
            source,
        })
    };
    // Graceful shutdown waits for open connections; a slow scraper gets a grace period, not forever.
    let bounded = async {
        let _ = stopped_rx.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = served => r?,
        _ = bounded => info!("grace period over; closing remaining connections"),
    }
    while pollers.join_next().await.is_some() {}
    // Every poller has handed over its last state: let the committer finish.
    drop(sink);
    if let Some(task) = committer {
        let _ = task.await;
    }
    Ok(())
}

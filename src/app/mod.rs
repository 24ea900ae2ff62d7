//! Wiring: builds the parts from a [`Config`], runs them, and shuts them
//! down in order (HTTP first, then the pollers, then the state file's
//! committer, which writes what the pollers handed it last).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::api::{Client, ClientOptions};
use crate::cli::{Config, Source};
use crate::collect::{Fleet, PollConfig};
use crate::http::{AppState, WebConfig};
use crate::metrics::Published;
use crate::model::Readiness;
use crate::target::Target;
use crate::{api, clock, http, persist, supervisor};

mod demo;
mod parts;

/// Why the exporter could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file a flag names cannot be used (`--web.config.file`,
    /// `--talkover.token-file`): bad input, refused before anything starts,
    /// with a message naming the flag and the value.
    #[error("{0}")]
    Invalid(String),
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
    /// The demo simulator's address did not make a URL.
    #[error("building the demo URL: {0}")]
    DemoUrl(#[from] url::ParseError),
    /// The state file could not be opened or created.
    #[error(transparent)]
    State(#[from] persist::StateError),
    /// A part that runs for the process's whole life ended on its own (a
    /// panic, a bug): the process exits non-zero so that whatever runs it
    /// restarts it, and the state file resumes it.
    #[error("the {part} stopped unexpectedly ({how}); exiting so that a restart resumes from the state file")]
    PartDied {
        /// `supervisor` or `state committer`.
        part: &'static str,
        /// A panic's message, or how else it ended.
        how: String,
    },
}

/// Runs the exporter on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // What the webhooks given on the command line begin to count from,
    // however long the API takes to answer.
    let started_ms = clock::unix_now_ms();
    let web = match &config.web_config_file {
        Some(path) => WebConfig::load(path).map_err(|e| Error::Invalid(e.to_string()))?,
        None => WebConfig::default(),
    };
    if let Source::Api { credentials, .. } = &config.source {
        credentials.check().map_err(Error::Invalid)?;
    }
    announce(&listener, &config);
    let (base_url, credentials, allow_insecure, mut static_targets) = match &config.source {
        Source::Api {
            url,
            credentials,
            allow_insecure,
        } => (
            url.clone(),
            Some(credentials.clone()),
            *allow_insecure,
            config.targets.clone(),
        ),
        Source::Demo { listen } => {
            let (url, mut targets) = demo::start_demo(*listen).await?;
            targets.extend(config.targets.iter().cloned());
            (url, None, true, targets)
        }
    };
    static_targets.retain(|t| config.shard.owns(t));
    let static_targets: BTreeSet<Target> = static_targets.into_iter().collect();

    let client = Arc::new(Client::new(ClientOptions {
        base_url,
        credentials,
        timeout: config.timeout,
        max_body_bytes: config.max_body_size,
        allow_insecure,
        max_requests_per_second: config.max_requests_per_second,
        probe_max: crate::collect::api_wait_cap(config.poll_interval),
    })?);
    let published = Arc::new(Published::with_budget(config.budget));
    api::register_metrics(published.registry(), &client);
    let readiness = Arc::new(Readiness::new(!config.discover.is_empty()));
    // Known before serving, so /-/ready cannot answer before the pollers exist.
    for target in &static_targets {
        readiness.expect(target);
    }

    let state_file = match (&config.source, &config.state_file) {
        // The demo's simulated account is new on every start: nothing to resume.
        (Source::Demo { .. }, Some(path)) => {
            info!(path = %path.display(), "demo: not using the state file");
            None
        }
        (_, path) => path.as_ref(),
    };
    // With discovery the set of webhooks is not known yet: every stored
    // state waits for its webhook's grace period.
    let wanted = config.discover.is_empty().then_some(&static_targets);
    let persistence = persist::start(
        state_file.map(|p| p.as_path()),
        wanted,
        config.poll_interval,
        config.failures,
        published.clone(),
    )?;
    let fleet = Fleet::new(
        client.clone(),
        PollConfig {
            interval: config.poll_interval,
            max_pages: config.max_pages,
            per_page: api::MAX_PER_PAGE,
            failures: config.failures,
        },
        persistence.sink,
        readiness.clone(),
        config.stale_after,
        persistence.restored,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisor = tokio::spawn(supervisor::supervise(
        fleet,
        client,
        supervisor::StaticTargets {
            targets: static_targets,
            since_ms: started_ms,
        },
        config.clone(),
        published.clone(),
        readiness.clone(),
        stop_rx,
    ));

    let readiness_for_parts = readiness.clone();
    let state = AppState::new(
        published,
        readiness,
        config.telemetry_path.clone(),
        config.max_requests,
    );
    let http_metrics = state.http.clone();
    let app = http::counted(web.wrap(http::router(state.clone())), state);
    // The parts that live as long as the process are watched: one that
    // ends before shutdown ends the process too.
    let (died_tx, mut died_rx) = watch::channel(None);
    let parts = tokio::spawn(parts::watch_parts(
        supervisor,
        persistence.committer,
        stop_tx.subscribe(),
        died_tx,
        readiness_for_parts,
    ));
    // Shutdown: HTTP stops accepting and gives open connections a few
    // seconds; then the pollers stop and hand their last states on.
    let stopping = async move {
        tokio::select! {
            _ = shutdown => info!("shutting down"),
            _ = died_rx.wait_for(Option::is_some) => {}
        }
        let _ = stop_tx.send(true);
    };
    web.serve(listener, app, config.serve_limits, http_metrics, stopping)
        .await
        .map_err(|source| Error::Io {
            what: "serving HTTP".into(),
            source,
        })?;
    // The supervisor stops every poller; they hand their last states to the
    // committer, which finishes once the last sender is gone.
    match parts.await {
        Ok(result) => result,
        Err(e) => Err(Error::PartDied {
            part: "part watcher",
            how: e.to_string(),
        }),
    }
}

/// The first log lines: where to look. A browser on this host opens
/// localhost: 0.0.0.0 is where we listen, not where anyone connects.
fn announce(listener: &TcpListener, config: &Config) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        webhooks = %format!("http://{host}/webhooks"),
        metrics = %format!("http://{host}{}", config.telemetry_path),
        "talkover-exporter listening"
    );
    if matches!(config.source, Source::Demo { .. }) {
        info!(
            "demo: open http://{host}/webhooks to see each webhook's attempts and its last failures, with why they failed (polling every {}s)",
            config.poll_interval.as_secs_f64()
        );
    }
}

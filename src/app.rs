//! Wiring: builds the parts from a [`Config`], runs them, and shuts them
//! down in order (HTTP first, then the pollers, then the state file's
//! committer, which writes what the pollers handed it last).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};
use tokio::net::TcpListener;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::api::{Client, ClientOptions};
use crate::cli::{Config, Source};
use crate::collect::{Fleet, PollConfig};
use crate::http::AppState;
use crate::metrics::Published;
use crate::model::{Readiness, TargetSnapshot};
use crate::persist::{CommitterConfig, Sink, StateStore};
use crate::sim::Simulator;
use crate::target::Target;
use crate::{api, clock, http, metrics, persist, supervisor};

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
            let (url, mut targets) = start_demo(*listen).await?;
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
    register_api_metrics(&published, &client);
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
    let (store, mut restored) = match state_file {
        None => (None, BTreeMap::new()),
        Some(path) => {
            // With discovery the set of webhooks is not known yet: keep every
            // stored state until its webhook's grace period decides.
            let fixed = config.discover.is_empty().then_some(&static_targets);
            let (store, restored) = StateStore::open(path, fixed)?;
            (Some(store), restored)
        }
    };
    for state in restored.values_mut() {
        // Kept under other flags, maybe: bodies kept before must go if
        // they are off now (they can hold customer data).
        std::sync::Arc::make_mut(&mut state.failures).enforce(config.failures);
    }
    // The committer runs with or without a state file: it keeps each
    // webhook's last state, for a poller that dies to resume from.
    let window = match store {
        Some(_) => persist::commit_window(config.poll_interval),
        None => Duration::ZERO,
    };
    let (tx, rx) = mpsc::channel(4096);
    let committer = Some(tokio::spawn(persist::run_committer(
        CommitterConfig {
            store,
            restored: restored.clone(),
            window,
        },
        rx,
        published.clone(),
    )));
    let commits = Some(tx);
    // Restored counters are durable already: scrapes see them before any poll.
    for (target, state) in &restored {
        published.publish(TargetSnapshot::of(target, state, &Default::default()));
    }
    let fleet = Fleet::new(
        client.clone(),
        PollConfig {
            interval: config.poll_interval,
            max_pages: config.max_pages,
            per_page: api::MAX_PER_PAGE,
            failures: config.failures,
        },
        Sink {
            published: published.clone(),
            commits,
        },
        readiness.clone(),
        config.stale_after,
        restored,
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
    let web = config.web.clone().unwrap_or_default();
    let app = http::counted(web.wrap(http::router(state.clone())), state);
    // The parts that live as long as the process are watched: one that
    // ends before shutdown ends the process too.
    let (died_tx, mut died_rx) = watch::channel(None);
    let parts = tokio::spawn(watch_parts(
        supervisor,
        committer,
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

/// Waits for the supervisor and the committer to end. Before shutdown
/// began, that is a failure: it is logged, `/-/healthy` answers 503 from
/// then on, and the process shuts down and exits non-zero, as Prometheus'
/// own components do, so an orchestrator restarts it.
async fn watch_parts(
    mut supervisor: tokio::task::JoinHandle<()>,
    mut committer: Option<tokio::task::JoinHandle<()>>,
    stopping: watch::Receiver<bool>,
    died: watch::Sender<Option<&'static str>>,
    readiness: Arc<Readiness>,
) -> Result<(), Error> {
    let mut failure = None;
    let mut supervisor_done = false;
    while !supervisor_done || committer.is_some() {
        let (part, result) = tokio::select! {
            r = &mut supervisor, if !supervisor_done => {
                supervisor_done = true;
                ("supervisor", r)
            }
            r = async { committer.as_mut().expect("guarded").await }, if committer.is_some() => {
                committer = None;
                ("state committer", r)
            }
            // Once a part has died, the rest get a deadline: pollers the
            // dead supervisor owned may never let the committer finish.
            _ = tokio::time::sleep(Duration::from_secs(10)), if failure.is_some() => break,
        };
        if *stopping.borrow() && result.is_ok() {
            continue;
        }
        let how = match result {
            Ok(()) => "it returned".to_string(),
            Err(e) if e.is_panic() => {
                format!("panic: {}", crate::collect::panic_message(e.into_panic()))
            }
            Err(e) => e.to_string(),
        };
        error!(part, how = %how, "a part of the exporter stopped unexpectedly; exiting");
        readiness.fail(part);
        died.send_replace(Some(part));
        failure.get_or_insert(Error::PartDied { part, how });
    }
    failure.map_or(Ok(()), Err)
}

/// The API as the client sees it: its clock, and its health.
fn register_api_metrics(published: &Published, client: &Arc<Client>) {
    let registry = published.registry();
    let c = client.clone();
    metrics::GaugeFn::register(
        registry,
        "talkover_exporter_api_clock_offset_seconds",
        "How far the API's clock (from its Date headers) is ahead of this host's; absent until a response carried a usable Date.",
        move || c.clock().offset().map(|o| o.estimate_ms() as f64 / 1000.0),
    );
    let c = client.clone();
    metrics::GaugeFn::register(
        registry,
        "talkover_exporter_api_up",
        "1 while the Talkover API answers, 0 while it is down (its own faults from two webhooks or more, five in a row) and one request at a time probes it.",
        move || Some(f64::from(u8::from(c.health().is_up()))),
    );
    let c = client.clone();
    metrics::GaugeFn::register_counter(
        registry,
        "talkover_exporter_api_outages_total",
        "Times the Talkover API went down, as the exporter saw it.",
        move || Some(c.health().outages() as f64),
    );
}

/// Starts the demo's simulated API; returns its URL and webhooks.
async fn start_demo(listen: std::net::SocketAddr) -> Result<(url::Url, Vec<Target>), Error> {
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
    let targets = sim.targets();
    tokio::spawn(sim.clone().drive());
    tokio::spawn(sim.serve(sim_listener));
    let url = url::Url::parse(&format!("http://{addr}/"))?;
    Ok((url, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor that panics ends the process's run with an error that
    /// names it (so `main` exits non-zero), and healthy and ready say so
    /// meanwhile; the committer it leaves behind gets a deadline.
    #[tokio::test(start_paused = true)]
    async fn a_part_that_dies_ends_the_run_with_an_error() {
        let supervisor = tokio::spawn(async { panic!("the supervisor broke") });
        let committer = tokio::spawn(std::future::pending::<()>());
        let (_stop_tx, stopping) = watch::channel(false);
        let (died_tx, died_rx) = watch::channel(None);
        let readiness = Arc::new(Readiness::new(false));
        let result = watch_parts(
            supervisor,
            Some(committer),
            stopping,
            died_tx,
            readiness.clone(),
        )
        .await;
        match result {
            Err(Error::PartDied { part, how }) => {
                assert_eq!(part, "supervisor");
                assert!(how.contains("the supervisor broke"), "{how}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(*died_rx.borrow(), Some("supervisor"));
        assert_eq!(readiness.failed(), Some("supervisor"));
        assert!(!readiness.is_ready());
    }

    /// After shutdown began, parts ending is the normal way out.
    #[tokio::test]
    async fn parts_ending_after_shutdown_are_no_failure() {
        let (stop_tx, stopping) = watch::channel(false);
        let supervisor = tokio::spawn({
            let mut stop = stop_tx.subscribe();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        });
        let committer = tokio::spawn(async {});
        let (died_tx, _died_rx) = watch::channel(None);
        stop_tx.send_replace(true);
        let result = watch_parts(
            supervisor,
            Some(committer),
            stopping,
            died_tx,
            Arc::new(Readiness::new(false)),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
    }
}

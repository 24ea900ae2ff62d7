//! The watch lifecycle, in one room: what should be watched and when to
//! look again. The `--target`s from the start; every
//! `--discover.interval`, what discovery lists (enabled, allowed by the
//! filters, in this shard) with the settings the listing gives, and the
//! `--target`s' own settings read as often; the fleet reconciled to that,
//! retired webhooks swept each second, and readiness told when discovery
//! has answered once. `app` starts it; it stops the fleet when told to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::api::Client;
use crate::cli::Config;
use crate::clock;
use crate::collect::Fleet;
use crate::discovery::{self, DiscoveryMetrics};
use crate::metrics::Published;
use crate::model::{Readiness, WebhookSettings};
use crate::target::Target;

/// The webhooks named by flags or the config file, and when the exporter
/// began watching them: what the API creates after that is counted.
#[derive(Debug)]
pub(crate) struct StaticTargets {
    pub(crate) targets: BTreeSet<Target>,
    pub(crate) since_ms: i64,
}

/// Keeps the fleet in line with what should be watched: the static targets
/// plus, every `--discover.interval`, what discovery finds (enabled,
/// allowed by the filters, in this shard), with the settings the listing
/// gives; the static targets' own settings are read as often. Sweeps
/// retired webhooks each second.
pub(crate) async fn supervise(
    mut fleet: Fleet<Client>,
    client: Arc<Client>,
    statics: StaticTargets,
    config: Config,
    published: Arc<Published>,
    readiness: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    let StaticTargets {
        targets: static_targets,
        since_ms: started_ms,
    } = statics;
    let metrics = Arc::new(DiscoveryMetrics::register(&published));
    let discovering = !config.discover.is_empty();
    let mut discovered: BTreeMap<Target, WebhookSettings> = BTreeMap::new();
    let mut next_refresh = tokio::time::Instant::now();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // Static targets' settings are read by a task of their own: a slow or
    // refused read never holds back polling or discovery.
    let (settings_tx, mut settings_rx) = mpsc::channel::<(Target, WebhookSettings)>(64);
    let mut reading: Option<tokio::task::JoinHandle<()>> = None;
    if !static_targets.is_empty() {
        fleet.reconcile(&static_targets, |_| started_ms).await;
        info!(targets = static_targets.len(), "watching webhooks");
    }
    loop {
        if tokio::time::Instant::now() >= next_refresh {
            next_refresh = later(config.discover_interval);
            if discovering {
                // A webhook this run lists for the first time counts from here.
                let listed_ms = clock::unix_now_ms();
                let found = tokio::select! {
                    found = discovery::discover(&client, &config.discover) => found,
                    _ = stop.changed() => break,
                };
                match found {
                    Ok(found) => {
                        metrics.record_success(found.len());
                        discovered = found
                            .into_iter()
                            .filter(|(t, meta)| {
                                config.shard.owns(t) && config.filters.allows(t, meta)
                            })
                            .collect();
                        info!(webhooks = discovered.len(), "discovery listed webhooks");
                    }
                    Err(err) => {
                        metrics.record_failure(err.reason());
                        warn!(reason = err.reason(), error = %err, "discovery failed; keeping the webhooks found before");
                    }
                }
                // Before the fleet changes: a poller stopped because its
                // webhook was turned off publishes that as it stops.
                for (target, settings) in &discovered {
                    fleet.set_settings(target, settings.clone());
                }
                let wanted: BTreeSet<Target> = static_targets
                    .iter()
                    .cloned()
                    .chain(
                        discovered
                            .iter()
                            .filter(|(_, m)| m.enabled)
                            .map(|(t, _)| t.clone()),
                    )
                    .collect();
                fleet
                    .reconcile(&wanted, |t| {
                        if static_targets.contains(t) {
                            started_ms
                        } else {
                            listed_ms
                        }
                    })
                    .await;
                readiness.discovery_done();
            }
            // The static targets a listing did not already describe.
            let unread: Vec<Target> = static_targets
                .iter()
                .filter(|t| !discovered.contains_key(*t))
                .cloned()
                .collect();
            if !unread.is_empty() && reading.as_ref().is_none_or(|h| h.is_finished()) {
                reading = Some(tokio::spawn(read_settings(
                    client.clone(),
                    unread,
                    settings_tx.clone(),
                    metrics.clone(),
                )));
            }
        }
        metrics.targets.set(fleet.watched() as i64);
        let until_refresh = next_refresh.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            _ = sweep.tick() => fleet.sweep().await,
            Some((target, settings)) = settings_rx.recv() => fleet.set_settings(&target, settings),
            _ = tokio::time::sleep(until_refresh) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(task) = reading {
        task.abort();
    }
    fleet.shutdown().await;
}

/// `after` from now; far in the future rather than an overflow.
fn later(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Reads each static target's own webhook object and hands its settings
/// on. A refused or failed read is logged and counted, and the webhook is
/// polled all the same, judged by what was known before (or the defaults).
async fn read_settings(
    client: Arc<Client>,
    targets: Vec<Target>,
    out: mpsc::Sender<(Target, WebhookSettings)>,
    metrics: Arc<DiscoveryMetrics>,
) {
    for target in targets {
        match discovery::fetch_settings(&client, &target).await {
            Ok(settings) => {
                metrics.record_settings(Ok(()));
                if out.send((target, settings)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                metrics.record_settings(Err(err.reason()));
                warn!(
                    target = %target,
                    reason = err.reason(),
                    http_status = err.http_status(),
                    error = %err,
                    "could not read the webhook's settings; polling goes on, judged by the settings known before (or the defaults: max_retries 3, timeout 30s)"
                );
            }
        }
    }
}

//! The running pollers: one per watched webhook. Starts pollers for new
//! webhooks, stops those no longer watched, and removes a stopped webhook's
//! series (and its row in the state file) once it has been gone for
//! `--target.stale-after`; a webhook that comes back sooner resumes its state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use super::{run_target, Links, PageSource, PollConfig};
use crate::clock::unix_now_ms;
use crate::model::{Readiness, TargetState, WebhookSettings};
use crate::persist::Sink;
use crate::target::Target;

/// A poller, how to stop it, and how to tell it its webhook's settings.
#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    settings: watch::Sender<Option<WebhookSettings>>,
    handle: JoinHandle<TargetState>,
}

/// A webhook no longer watched, kept until its grace period ends.
#[derive(Debug)]
struct Retired {
    since: Instant,
    /// Its poller, until it has handed back its state.
    stopping: Option<JoinHandle<TargetState>>,
    state: Option<TargetState>,
}

/// The set of pollers.
#[derive(Debug)]
pub struct Fleet<S> {
    source: Arc<S>,
    poll: PollConfig,
    sink: Sink,
    readiness: Arc<Readiness>,
    stale_after: Duration,
    running: BTreeMap<Target, Running>,
    retired: BTreeMap<Target, Retired>,
    /// Each webhook's settings as the API last gave them.
    settings: BTreeMap<Target, WebhookSettings>,
}

impl<S: PageSource + Send + Sync + 'static> Fleet<S> {
    /// An empty fleet. `restored` states (from the state file) wait as
    /// retired until their webhook is watched again or their grace ends.
    pub fn new(
        source: Arc<S>,
        poll: PollConfig,
        sink: Sink,
        readiness: Arc<Readiness>,
        stale_after: Duration,
        restored: BTreeMap<Target, TargetState>,
    ) -> Fleet<S> {
        let now = Instant::now();
        let retired = restored
            .into_iter()
            .map(|(t, state)| {
                let r = Retired {
                    since: now,
                    stopping: None,
                    state: Some(state),
                };
                (t, r)
            })
            .collect();
        Fleet {
            source,
            poll,
            sink,
            readiness,
            stale_after,
            running: BTreeMap::new(),
            retired,
            settings: BTreeMap::new(),
        }
    }

    /// Takes a webhook's settings as the API gave them now: its poller
    /// judges attempts by them from its next poll, and a poller that stops
    /// next (the webhook was turned off) publishes them as it stops.
    pub fn set_settings(&mut self, target: &Target, settings: WebhookSettings) {
        if let Some(r) = self.running.get(target) {
            r.settings.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&settings);
                if changed {
                    *current = Some(settings.clone());
                }
                changed
            });
        }
        self.settings.insert(target.clone(), settings);
    }

    /// Webhooks being polled.
    pub fn watched(&self) -> usize {
        self.running.len()
    }

    /// Starts pollers for `wanted` webhooks not running, stops the others.
    /// A webhook watched for the first time counts what the API created
    /// since `since_ms(webhook)` (this host's clock, Unix ms).
    pub async fn reconcile(
        &mut self,
        wanted: &BTreeSet<Target>,
        since_ms: impl Fn(&Target) -> i64,
    ) {
        let gone: Vec<Target> = self
            .running
            .keys()
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();
        for target in gone {
            if let Some(r) = self.running.remove(&target) {
                let _ = r.stop.send(true);
                self.readiness.forget(&target);
                info!(target = %target, "no longer watched; series kept for the grace period");
                self.retired.insert(
                    target,
                    Retired {
                        since: Instant::now(),
                        stopping: Some(r.handle),
                        state: None,
                    },
                );
            }
        }
        for target in wanted {
            if self.running.contains_key(target) {
                continue;
            }
            let state = match self.retired.remove(target) {
                Some(mut r) => match r.stopping.take() {
                    Some(handle) => handle
                        .await
                        .unwrap_or_else(|_| TargetState::watching_since(since_ms(target))),
                    None => r
                        .state
                        .unwrap_or_else(|| TargetState::watching_since(since_ms(target))),
                },
                None => TargetState::watching_since(since_ms(target)),
            };
            self.start(target.clone(), state);
        }
    }

    fn start(&mut self, target: Target, mut state: TargetState) {
        let (stop, stopped) = watch::channel(false);
        let known = self.settings.get(&target).cloned();
        if let Some(s) = known.clone().filter(|s| state.settings.as_ref() != Some(s)) {
            state.apply_settings(s, unix_now_ms());
        }
        let (settings, settings_rx) = watch::channel(known);
        self.readiness.expect(&target);
        let handle = tokio::spawn(run_target(
            target.clone(),
            self.source.clone(),
            self.poll.clone(),
            state,
            Links {
                sink: self.sink.clone(),
                readiness: self.readiness.clone(),
                settings: settings_rx,
                shutdown: stopped,
            },
        ));
        self.running.insert(
            target,
            Running {
                stop,
                settings,
                handle,
            },
        );
    }

    /// Collects states from stopped pollers and drops webhooks whose grace
    /// period is over: their series leave `/metrics` and the state file.
    pub async fn sweep(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (target, r) in self.retired.iter_mut() {
            if r.stopping.as_ref().is_some_and(|h| h.is_finished()) {
                if let Some(handle) = r.stopping.take() {
                    r.state = handle.await.ok();
                }
            }
            if now.duration_since(r.since) >= self.stale_after && r.stopping.is_none() {
                expired.push(target.clone());
            }
        }
        for target in expired {
            self.retired.remove(&target);
            self.sink.forget(&target).await;
            info!(target = %target, "gone longer than --target.stale-after; its series are removed");
        }
    }

    /// Stops every poller and waits for them to hand over their last state.
    pub async fn shutdown(self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in self.running {
            let _ = r.handle.await;
        }
        for (_, r) in self.retired {
            if let Some(h) = r.stopping {
                let _ = h.await;
            }
        }
    }
}

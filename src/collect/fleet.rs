//! The running pollers: one per watched webhook. Starts pollers for new
//! webhooks, stops those no longer watched, and removes a stopped webhook's
//! series (and its row in the state file) once it has been gone for
//! `--target.stale-after`; a webhook that comes back sooner resumes its state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info};

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
    /// When the webhook began to be watched: where a poller that dies
    /// before handing any state on starts again.
    since_ms: i64,
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
    /// `talkover_exporter_panics_total{task}`.
    panics: IntCounterVec,
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
            readiness,
            stale_after,
            running: BTreeMap::new(),
            retired,
            settings: BTreeMap::new(),
            panics: register_panics(sink.published()),
            sink,
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
            let since = since_ms(target);
            let state = match self.retired.remove(target) {
                Some(mut r) => match r.stopping.take() {
                    Some(handle) => match handle.await {
                        Ok(state) => state,
                        Err(e) => self.died(target, e, since).await,
                    },
                    None => r
                        .state
                        .unwrap_or_else(|| TargetState::watching_since(since)),
                },
                None => TargetState::watching_since(since),
            };
            self.start(target.clone(), state, since, true);
        }
    }

    /// A poller that died (a panic, a bug): logged, counted, and its webhook
    /// goes on from its last state handed on, so no counter drops and
    /// nothing created meanwhile is lost. One that never handed any state
    /// on starts again from when the webhook began to be watched.
    async fn died(&self, target: &Target, e: tokio::task::JoinError, since_ms: i64) -> TargetState {
        let how = if e.is_panic() {
            panic_message(e.into_panic())
        } else {
            e.to_string()
        };
        self.panics.with_label_values(&["poller"]).inc();
        error!(target = %target, how = %how, "a webhook's poller died; it resumes from its last state handed on");
        match self.sink.last_state(target).await {
            Some(state) => state,
            None => TargetState::watching_since(since_ms),
        }
    }

    /// Starts again every poller that died since the last look.
    async fn revive(&mut self) {
        let dead: Vec<Target> = self
            .running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        for target in dead {
            let Some(r) = self.running.remove(&target) else {
                continue;
            };
            let state = match r.handle.await {
                // A poller returns only when stopped: this one was not.
                Ok(state) => state,
                Err(e) => self.died(&target, e, r.since_ms).await,
            };
            self.start(target, state, r.since_ms, false);
        }
    }

    fn start(&mut self, target: Target, mut state: TargetState, since_ms: i64, new: bool) {
        let (stop, stopped) = watch::channel(false);
        let known = self.settings.get(&target).cloned();
        if let Some(s) = known.clone().filter(|s| state.settings.as_ref() != Some(s)) {
            state.apply_settings(s, unix_now_ms());
        }
        let (settings, settings_rx) = watch::channel(known);
        if new {
            self.readiness.expect(&target);
        }
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
                since_ms,
            },
        );
    }

    /// Collects states from stopped pollers and drops webhooks whose grace
    /// period is over: their series leave `/metrics` and the state file.
    pub async fn sweep(&mut self) {
        self.revive().await;
        let now = Instant::now();
        let mut expired = Vec::new();
        for (target, r) in self.retired.iter_mut() {
            if r.stopping.as_ref().is_some_and(|h| h.is_finished()) {
                if let Some(handle) = r.stopping.take() {
                    // One that died stopping is resumed from the committer
                    // if it comes back.
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

fn register_panics(published: &crate::metrics::Published) -> IntCounterVec {
    let panics = IntCounterVec::new(
        Opts::new(
            "talkover_exporter_panics_total",
            "Tasks that panicked, by task (poller: a webhook's poller, which resumes from its last state handed on).",
        ),
        &["task"],
    )
    .unwrap_or_else(|_| unreachable!("a constant metric definition is valid"));
    panics.with_label_values(&["poller"]);
    crate::metrics::register(published.registry(), panics.clone());
    panics
}

/// The text a panic carried, if it was text.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| (*s).to_string())
            .unwrap_or_else(|_| "a panic without a message".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::api::{ApiError, Client, ClientOptions, LogPage};
    use crate::metrics::Published;
    use crate::model::FailurePolicy;
    use talkover_sim::{Order, Profile, Simulator};

    /// The real client, and a panic on demand in the middle of a poll.
    struct Panicky {
        client: Client,
        armed: AtomicBool,
    }

    impl PageSource for Panicky {
        async fn fetch_logs(
            &self,
            target: &Target,
            page: u64,
            per_page: u32,
        ) -> Result<LogPage, ApiError> {
            // The second page of a poll: the first was applied already.
            if page > 1 && self.armed.swap(false, Ordering::SeqCst) {
                panic!("injected in the middle of a poll");
            }
            self.client.fetch_logs(target, page, per_page).await
        }
    }

    /// A poller that panics in the middle of a poll is logged, counted and
    /// started again from its last state handed on: every counter stays
    /// monotonic and ends exact; nothing is counted twice or lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poller_that_panics_resumes_from_its_last_state_exactly() {
        let sim = Simulator::new(5, None, Order::NewestFirst);
        let target: Target = "campaigns/c1/webhooks/w1".parse().expect("target");
        sim.add_webhook(
            target.clone(),
            Profile {
                rate_per_second: 0.0,
                pending_ratio: 0.2,
                ..Profile::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(sim.clone().serve(listener));
        let source = Arc::new(Panicky {
            client: Client::new(ClientOptions {
                base_url: url.parse().expect("url"),
                credentials: None,
                timeout: Duration::from_secs(2),
                max_body_bytes: 1 << 20,
                allow_insecure: true,
                max_requests_per_second: 1000.0,
                probe_max: Duration::from_secs(1),
            })
            .expect("client"),
            armed: AtomicBool::new(false),
        });
        let published = Arc::new(Published::new());
        let persistence = crate::persist::start(
            None,
            None,
            Duration::from_millis(50),
            FailurePolicy::default(),
            published.clone(),
        )
        .expect("no state file to open");
        let mut fleet = Fleet::new(
            source.clone(),
            PollConfig {
                interval: Duration::from_millis(50),
                // Two pages a poll: a burst leaves a backlog, read over polls.
                max_pages: 2,
                per_page: 20,
                failures: FailurePolicy::default(),
            },
            persistence.sink,
            Arc::new(Readiness::new(false)),
            Duration::from_secs(3600),
            BTreeMap::new(),
        );
        let mark = sim.mark();
        fleet
            .reconcile(&BTreeSet::from([target.clone()]), |_| {
                crate::clock::unix_now_ms()
            })
            .await;
        let counted = |published: &Published| {
            published
                .snapshots()
                .first()
                .map_or(0, |s| s.counts.total())
        };
        let truth = |sim: &Simulator| sim.truth(mark)[&target].values().sum::<u64>();
        let mut seen = 0;
        let mut wait_exact = async |fleet: &mut Fleet<Panicky>| {
            for _ in 0..400 {
                fleet.sweep().await;
                let now = counted(&published);
                assert!(now >= seen, "a counter went down: {seen} -> {now}");
                seen = now;
                if now == truth(&sim) && !fleet.running.values().any(|r| r.handle.is_finished()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!(
                "not exact: {} counted, {} made",
                counted(&published),
                truth(&sim)
            );
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.generate(&target, 30);
        sim.finish_pending();
        wait_exact(&mut fleet).await;
        // A burst read over several polls, and a panic in one of them.
        source.armed.store(true, Ordering::SeqCst);
        sim.generate(&target, 150);
        sim.finish_pending();
        wait_exact(&mut fleet).await;
        assert!(!source.armed.load(Ordering::SeqCst), "the panic happened");
        assert_eq!(fleet.panics.with_label_values(&["poller"]).get(), 1);
        sim.generate(&target, 20);
        sim.finish_pending();
        wait_exact(&mut fleet).await;
        fleet.shutdown().await;
    }
}

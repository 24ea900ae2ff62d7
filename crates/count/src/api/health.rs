//! One view of the API's health for every webhook: the API is one service,
//! so when it is down, one request at a time probes it (backing off), not
//! one per webhook; the first answer lets every webhook poll again at once.
//!
//! Only the API's own faults count: a 502, 503 or 504, a timeout, a broken
//! connection, a page that is not the API's JSON. A webhook's own faults (a
//! 404, a refused token, a 500 for one webhook) keep its own backoff, and so
//! it takes faults from two different paths in a row to call the API down:
//! one broken webhook never holds back the others.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;

/// API faults in a row, with no answer in between, that mean it is down.
const DOWN_AFTER: u32 = 5;

/// What [`ApiHealth::admit`] lets a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The API is up: go.
    Go,
    /// The API is down and this request is the one probe: go, and tell
    /// how it went.
    Probe,
}

/// How a request went, for the API's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The API answered (anything but its own fault, a 429 included).
    Answered,
    /// The API's own fault.
    Fault,
}

/// The API's health, shared by every request of one client.
#[derive(Debug)]
pub struct ApiHealth {
    /// A std lock: held for a few field updates, never across an await.
    state: std::sync::Mutex<State>,
    /// Whether the API is up; waiters see the change.
    up: watch::Sender<bool>,
    probes: Backoff,
}

#[derive(Debug)]
struct State {
    /// Faults in a row, and the paths (hashed) of the first two distinct.
    streak: u32,
    first_path: Option<u64>,
    distinct: bool,
    /// Since when it is down, if it is.
    down_since: Option<Instant>,
    /// Probes that failed since it went down.
    failed_probes: u32,
    /// A probe is out.
    probing: bool,
    /// The next probe may go at this time.
    next_probe: Instant,
    /// Times it went down (a counter).
    outages: u64,
}

impl ApiHealth {
    /// Probes back off from `probes.min` up to `probes.max`: at most a poll
    /// interval, so every webhook is read again within about one interval of
    /// the API's return.
    pub fn new(probes: Backoff) -> ApiHealth {
        ApiHealth {
            state: std::sync::Mutex::new(State {
                streak: 0,
                first_path: None,
                distinct: false,
                down_since: None,
                failed_probes: 0,
                probing: false,
                next_probe: Instant::now(),
                outages: 0,
            }),
            up: watch::Sender::new(true),
            probes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go now: always while the API is up; while it
    /// is down, one probe at a time once its backoff has passed. `None`:
    /// held back (no request is made).
    pub fn admit(&self) -> Option<Admission> {
        let mut st = self.state();
        if st.down_since.is_none() {
            return Some(Admission::Go);
        }
        if st.probing || Instant::now() < st.next_probe {
            return None;
        }
        st.probing = true;
        Some(Admission::Probe)
    }

    /// Records how a request to `path_hash` went.
    pub fn record(&self, admission: Admission, outcome: Outcome, path_hash: u64) {
        let mut st = self.state();
        if admission == Admission::Probe {
            st.probing = false;
        }
        match outcome {
            Outcome::Answered => {
                st.streak = 0;
                st.first_path = None;
                st.distinct = false;
                if let Some(since) = st.down_since.take() {
                    st.failed_probes = 0;
                    drop(st);
                    info!(
                        down_seconds = since.elapsed().as_secs_f64(),
                        "the Talkover API answers again; every webhook polls now"
                    );
                    self.up.send_replace(true);
                }
            }
            Outcome::Fault => {
                st.streak = st.streak.saturating_add(1);
                match st.first_path {
                    None => st.first_path = Some(path_hash),
                    Some(first) if first != path_hash => st.distinct = true,
                    Some(_) => {}
                }
                if st.down_since.is_some() {
                    if admission == Admission::Probe {
                        st.failed_probes = st.failed_probes.saturating_add(1);
                        st.next_probe = Instant::now() + self.probes.delay(st.failed_probes);
                    }
                } else if st.streak >= DOWN_AFTER && st.distinct {
                    st.down_since = Some(Instant::now());
                    st.outages = st.outages.saturating_add(1);
                    st.failed_probes = 1;
                    st.next_probe = Instant::now() + self.probes.delay(1);
                    let streak = st.streak;
                    drop(st);
                    warn!(
                        faults_in_a_row = streak,
                        "the Talkover API looks down; one request at a time probes it until it answers"
                    );
                    self.up.send_replace(false);
                }
            }
        }
    }

    /// A probe that was admitted but never sent (or whose answer was lost)
    /// frees the slot for the next one.
    pub fn abandon(&self, admission: Admission) {
        if admission == Admission::Probe {
            self.state().probing = false;
        }
    }

    /// Whether the API is up (as far as anyone can tell).
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Times it went down since the start.
    pub fn outages(&self) -> u64 {
        self.state().outages
    }

    /// When the next probe may go, if the API is down.
    pub fn next_probe_in(&self) -> Option<Duration> {
        let st = self.state();
        st.down_since
            .map(|_| st.next_probe.saturating_duration_since(Instant::now()))
    }

    /// Sees each change of the API's state (down, up again).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Completes once the API is up (at once if it is).
    pub async fn until_up(&self) {
        let mut rx = self.up.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = rx.wait_for(|up| *up).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> ApiHealth {
        ApiHealth::new(Backoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(80),
            jitter: 0.0,
        })
    }

    #[tokio::test]
    async fn one_webhooks_faults_never_call_the_api_down() {
        let h = health();
        for _ in 0..50 {
            h.record(Admission::Go, Outcome::Fault, 1);
        }
        assert!(h.is_up());
        assert_eq!(h.admit(), Some(Admission::Go));
    }

    #[tokio::test]
    async fn an_outage_is_probed_one_request_at_a_time_and_ends_at_the_first_answer() {
        let h = health();
        for i in 0..DOWN_AFTER {
            h.record(Admission::Go, Outcome::Fault, u64::from(i % 2));
        }
        assert!(!h.is_up());
        assert_eq!(h.outages(), 1);
        // Held back until the probe's backoff has passed, then one probe.
        assert_eq!(h.admit(), None);
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(h.admit(), Some(Admission::Probe));
        assert_eq!(h.admit(), None, "one probe at a time");
        h.record(Admission::Probe, Outcome::Fault, 7);
        let wait = h.next_probe_in().expect("down");
        assert!(
            wait > Duration::from_millis(30),
            "the probe backs off: {wait:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        let probe = h.admit().expect("the next probe");
        assert_eq!(probe, Admission::Probe);
        // A probe that is never sent frees its slot.
        h.abandon(probe);
        let probe = h.admit().expect("the probe again");
        h.record(probe, Outcome::Answered, 7);
        assert!(h.is_up());
        assert_eq!(h.next_probe_in(), None);
    }

    #[tokio::test]
    async fn the_first_answer_wakes_every_waiter() {
        let h = std::sync::Arc::new(health());
        for i in 0..DOWN_AFTER {
            h.record(Admission::Go, Outcome::Fault, u64::from(i));
        }
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.until_up().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(25)).await;
        let probe = h.admit().expect("a probe");
        h.record(probe, Outcome::Answered, 3);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("woken")
                .expect("waiter");
        }
        assert!(h.is_up());
        assert_eq!(h.admit(), Some(Admission::Go));
    }
}

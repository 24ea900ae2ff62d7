//! One exporter's view of one webhook, polling the model: restarts,
//! lost commits, settling, and the check against the truth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use talkover_count::api::ApiError;
use talkover_count::collect::{poll_once, PollConfig};
use talkover_count::model::{AttemptKey, PollStats, TargetState};
use talkover_count::target::Target;

use crate::model::*;

pub(crate) fn target() -> Target {
    "campaigns/cmp_prop/webhooks/wh_prop"
        .parse()
        .expect("valid target")
}

/// A runtime on a paused clock: a failed page's tries again within a poll
/// wait on it, and a paused clock skips those waits instead of sleeping.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// What a restart does to the state: the exporter's state file gives it
/// back whole (its own property test, `persist::schema`, checks that), so
/// a restart here is the state alone, without the poll's working memory.
pub(crate) fn through_state_file(state: &TargetState) -> TargetState {
    state.clone()
}

/// One exporter's view of one target, polling the model.
pub(crate) struct Harness {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) model: Model,
    pub(crate) target: Target,
    pub(crate) config: PollConfig,
    pub(crate) state: TargetState,
    /// The state before the last poll: what the state file holds if the
    /// process dies before that poll's commit.
    pub(crate) committed_before: TargetState,
    pub(crate) stats: PollStats,
    pub(crate) polls: u64,
    /// Entries that existed when the baseline was taken.
    pub(crate) baseline: usize,
}

impl Harness {
    pub(crate) fn new(listing: Listing, seed: u64, max_pages: u32, per_page: u32) -> Harness {
        Harness::skewed(listing, seed, max_pages, per_page, 0)
    }

    /// A harness whose model API's clock is `skew_ms` ahead of the host's.
    pub(crate) fn skewed(
        listing: Listing,
        seed: u64,
        max_pages: u32,
        per_page: u32,
        skew_ms: i64,
    ) -> Harness {
        Harness {
            rt: runtime(),
            model: Model::new(listing, seed, skew_ms),
            target: target(),
            config: PollConfig {
                interval: Duration::from_secs(30),
                max_pages,
                per_page,
                failures: talkover_count::model::FailurePolicy::default(),
            },
            state: TargetState::default(),
            committed_before: TargetState::default(),
            stats: PollStats::default(),
            polls: 0,
            baseline: 0,
        }
    }

    pub(crate) fn poll(&mut self) -> Result<(), ApiError> {
        self.committed_before = self.state.clone();
        self.polls += 1;
        let first_request = self.model.world().requests;
        let result = self.rt.block_on(poll_once(
            &self.model,
            &self.target,
            &self.config,
            &mut self.state,
            &mut self.stats,
        ));
        if std::env::var_os("PROPTEST_PAGING_TRACE").is_some() {
            self.trace(first_request, &result);
        }
        result
    }

    /// With `PROPTEST_PAGING_TRACE` set: what one poll read (entries by
    /// creation number) and left.
    pub(crate) fn trace(&self, first_request: u64, result: &Result<(), ApiError>) {
        let w = self.model.world();
        let numbers: BTreeMap<&str, usize> = w
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.id.as_deref()?, i)))
            .collect();
        eprintln!(
            "poll {} ({}): {} entries, baseline {}",
            self.polls,
            result
                .as_ref()
                .map_or_else(ToString::to_string, |()| "ok".into()),
            w.entries.len(),
            self.baseline,
        );
        for ids in &w.served[first_request as usize..] {
            let read: Vec<usize> = ids
                .iter()
                .filter_map(|id| numbers.get(id.as_str()).copied())
                .collect();
            eprintln!("  served {read:?}");
        }
        let pending: BTreeSet<usize> = self
            .state
            .pending
            .keys()
            .filter_map(|id| numbers.get(id.as_str()).copied())
            .collect();
        eprintln!(
            "  counted {}, pending {pending:?}, horizon {}, gaps {:?}, missed {:?}",
            self.counted(),
            self.state.horizon_ms,
            self.state.gaps,
            self.state.counts.missed,
        );
    }

    /// `history` more final entries; everything in flight turns final; then
    /// the exporter begins watching, just after the newest of them, and the
    /// next `first_failures` requests fail. What is created from then on
    /// must be counted, whenever the first read succeeds.
    pub(crate) fn begin_watching(&mut self, history: usize, first_failures: u32) {
        let mut w = self.model.world();
        w.append(history, 0);
        w.finish(usize::MAX, false);
        // On the host's clock: the model's clock is skewed.
        let moment = w.last_ms + 1 - w.skew_ms;
        self.state = TargetState::watching_since(moment);
        self.committed_before = self.state.clone();
        self.baseline = w.entries.len();
        w.fail_next = first_failures;
    }

    /// [`Harness::begin_watching`], then a first poll without faults or arrivals.
    pub(crate) fn take_baseline(&mut self, history: usize) {
        self.begin_watching(history, 0);
        let quiet = {
            let mut w = self.model.world();
            let quiet = w.arrival_pct;
            w.arrival_pct = 0;
            quiet
        };
        let result = self.poll();
        assert!(result.is_ok(), "baseline poll failed: {result:?}");
        assert!(self.state.baselined, "the first read places the baseline");
        self.model.world().arrival_pct = quiet;
    }

    /// A restart: the state comes back from the state file.
    pub(crate) fn restart(&mut self) {
        self.state = through_state_file(&self.state);
        self.stats = PollStats::default();
    }

    /// The process died after the last poll but before its commit: the
    /// state file still holds the state from before that poll.
    pub(crate) fn lose_last_commit(&mut self) {
        self.state = through_state_file(&self.committed_before);
        self.stats = PollStats::default();
    }

    pub(crate) fn caught_up(&self) -> bool {
        self.state.gaps.is_empty() && self.state.pending.is_empty()
    }

    /// Traffic stops, every attempt turns final, faults end; polls until the
    /// collector has no backlog and follows nothing, then once more, which
    /// must change nothing. Returns the number of polls.
    pub(crate) fn settle(&mut self, max_polls: u64) -> Result<u64, String> {
        {
            let mut w = self.model.world();
            w.fail_next = 0;
            w.arrival_pct = 0;
            w.scheduled.clear();
            w.finish(usize::MAX, false);
        }
        let mut n = 0;
        while !self.caught_up() || n == 0 {
            if n >= max_polls {
                return Err(format!(
                    "not caught up after {n} polls: gaps {:?}, pending {:?}, counted {} of {}",
                    self.state.gaps,
                    self.state.pending.keys().collect::<BTreeSet<_>>(),
                    self.counted(),
                    self.model.world().entries.len() - self.baseline,
                ));
            }
            n += 1;
            self.poll()
                .map_err(|e| format!("poll failed without faults: {e}"))?;
        }
        let before = self.state.counts.clone();
        self.poll()
            .map_err(|e| format!("poll failed without faults: {e}"))?;
        if self.state.counts != before {
            return Err("a poll after catching up changed the counts".into());
        }
        Ok(n)
    }

    pub(crate) fn counted(&self) -> u64 {
        self.state.counts.attempts.values().sum()
    }

    /// A generous bound on the polls needed to catch up with everything:
    /// each poll reads at least one page of a backlog.
    pub(crate) fn poll_bound(&self) -> u64 {
        let new = (self.model.world().entries.len() - self.baseline) as u64;
        50 + 4 * (new / u64::from(self.config.per_page) + 1)
    }

    /// The counts equal the truth: every entry created after the baseline,
    /// by event, status and code; retries; durations by status. Nothing is
    /// reported as missed (no retention, no given-up attempt) or invalid.
    pub(crate) fn check(&self) -> Result<(), String> {
        let exp = self.model.world().expected(self.baseline);
        let counts = &self.state.counts;
        let got = Expected {
            attempts: counts.attempts.clone(),
            retries: counts.retries,
            by_status: counts
                .duration
                .iter()
                .map(|(status, h)| (status.clone(), h.count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        };
        if !counts.missed.is_empty() || !counts.invalid_fields.is_empty() {
            return Err(format!(
                "unexpected missed {:?} / invalid fields {:?}",
                counts.missed, counts.invalid_fields
            ));
        }
        if got == exp {
            return Ok(());
        }
        let sum = |m: &BTreeMap<AttemptKey, u64>| m.values().sum::<u64>();
        let keys: BTreeSet<&AttemptKey> = exp.attempts.keys().chain(got.attempts.keys()).collect();
        let diff: Vec<String> = keys
            .into_iter()
            .filter_map(|k| {
                let (e, g) = (exp.attempts.get(k), got.attempts.get(k));
                (e != g).then(|| {
                    format!(
                        "{}/{}/{}: expected {}, got {}",
                        k.event,
                        k.status,
                        k.code,
                        e.unwrap_or(&0),
                        g.unwrap_or(&0)
                    )
                })
            })
            .collect();
        Err(format!(
            "counts differ: expected {} attempts, got {}; \
             retries expected {}, got {}; durations by status expected {:?}, got {:?}; {diff:?}",
            sum(&exp.attempts),
            sum(&got.attempts),
            exp.retries,
            got.retries,
            exp.by_status,
            got.by_status,
        ))
    }
}

//! A page read, applied to the webhook's state: new final attempts
//! counted, attempts in flight followed; after the poll, the horizon moved
//! up and what lies below it forgotten.

use tracing::warn;

use super::paging::{
    entry_id, Applied, Poll, ReadPage, HANDLED_CAP, LATENESS_MS, OVERSIZED_CAP, PENDING_CAP,
    PENDING_TIMEOUT,
};
use super::{is_final, record, record_recent, Judge, PageSource};
use crate::api::{self, LogEntry, LogPage};
use crate::model::InFlight;

impl<S: PageSource> Poll<'_, S> {
    /// Counts the page's new final entries and follows its in-flight ones.
    pub(super) fn apply(&mut self, read: &ReadPage) -> Applied {
        if read.oversized {
            // Unreadable, so unknown: scans go on past it.
            return Applied {
                unknown: 1,
                known: 0,
                oldest_ms: None,
            };
        }
        let page = &read.page;
        if self.after_oversized {
            self.note_oversized(page);
        }
        let mut applied = Applied {
            unknown: 0,
            known: 0,
            oldest_ms: None,
        };
        for entry in &page.entries {
            let Some(id) = entry_id(entry) else { continue };
            let id = id.as_ref();
            // Parsed once: the placement uses the fallback, the counters only a real time.
            let parsed = entry
                .created_at
                .as_deref()
                .and_then(api::parse_timestamp_ms);
            let created = parsed.unwrap_or(self.api_now_ms);
            applied.oldest_ms = Some(applied.oldest_ms.map_or(created, |o: i64| o.min(created)));
            self.state.newest_ms = self.state.newest_ms.max(created);
            let handled = self.state.is_handled(id);
            let pending = !handled && self.state.pending.contains_key(id);
            let known = if handled || pending {
                !self.new_this_poll.contains(id)
            } else {
                created < self.state.horizon_ms
            };
            applied.known += usize::from(known);
            if handled {
                continue;
            }
            if pending {
                if is_final(entry) {
                    self.state.pending.remove(id);
                    self.count(id, entry, parsed, created);
                    self.state.handle(id, created);
                } else {
                    self.observed.insert(id.to_string());
                }
                continue;
            }
            if created < self.state.horizon_ms {
                continue;
            }
            applied.unknown += 1;
            self.unknown_total += 1;
            self.new_this_poll.insert(id.to_string());
            for gap in self.state.gaps.iter_mut() {
                if (gap.bottom_ms..=gap.top_ms).contains(&created) {
                    gap.unread = gap.unread.saturating_sub(1);
                }
            }
            if is_final(entry) {
                self.count(id, entry, parsed, created);
                self.state.handle(id, created);
            } else {
                self.observed.insert(id.to_string());
                self.track_pending(id.to_string(), created);
            }
        }
        applied
    }

    /// Counts a final attempt, and records it for the status pages: both
    /// here, where an attempt is counted once, so no retry or restart
    /// records it twice. `parsed` is its readable `created_at`, `created`
    /// the same or the time of the poll (both on the API's clock).
    fn count(&mut self, id: &str, entry: &LogEntry, parsed: Option<i64>, created: i64) {
        let judge = Judge::new(self.state.settings.as_ref(), self.now_ms);
        record(&mut self.state.counts, id, entry, parsed, &judge);
        // Never after this poll: an estimate of the clocks' offset that is
        // a little off would otherwise put an attempt in a minute the
        // pages, reading the hour up to their own now, do not show yet.
        let host_ms = created
            .saturating_sub(self.api_now_ms - self.now_ms)
            .min(self.now_ms);
        record_recent(
            &mut self.state.counts,
            &mut self.state.failures,
            id,
            entry,
            created,
            host_ms,
            self.failures,
        );
    }

    /// Counts an oversized entry as missed once, recognising it later by
    /// the id of the entry just older than it (the newest on this page).
    pub(super) fn note_oversized(&mut self, page: &LogPage) {
        self.after_oversized = false;
        let key = page
            .entries
            .iter()
            .filter_map(|e| Some((self.created_ms(e), entry_id(e)?)))
            .max()
            .map(|(_, id)| id.into_owned())
            .unwrap_or_default();
        if !self.state.oversized.contains(&key) {
            self.state.counts.miss("too_large", 1, self.now_ms);
            self.state.oversized.push(key);
            if self.state.oversized.len() > OVERSIZED_CAP {
                self.state.oversized.remove(0);
            }
        }
    }

    fn track_pending(&mut self, id: String, created_ms: i64) {
        self.state.pending.entry(id).or_insert(InFlight {
            created_ms,
            first_seen_ms: self.now_ms,
        });
    }

    /// The oldest `created_at` of followed entries not seen yet in this poll
    /// that lie below a page whose oldest entry is `oldest_ms`.
    pub(super) fn oldest_unobserved_pending_below(&self, oldest_ms: i64) -> Option<i64> {
        self.state
            .pending
            .iter()
            .filter(|(id, p)| p.created_ms < oldest_ms && !self.observed.contains(*id))
            .map(|(_, p)| p.created_ms)
            .min()
    }

    /// The newest `created_at` already dealt with before this poll.
    pub(super) fn known_top_ms(&self) -> i64 {
        self.state
            .handled
            .values()
            .copied()
            .max()
            .unwrap_or(i64::MIN)
            .max(self.state.horizon_ms)
    }

    /// `created_at` in Unix ms; an entry without a readable one is placed
    /// at the time of the poll so it still sorts and expires sensibly.
    pub(super) fn created_ms(&self, entry: &LogEntry) -> i64 {
        entry
            .created_at
            .as_deref()
            .and_then(api::parse_timestamp_ms)
            .unwrap_or(self.api_now_ms)
    }

    /// Moves the horizon up, forgets what is below it, and gives up on
    /// in-flight entries followed for too long. Runs after every poll, failed or not.
    pub(super) fn settle(&mut self) {
        let state = &mut *self.state;
        if state.newest_ms == 0 {
            // Nothing listed yet (Unix-ms timestamps are never 0): no horizon to move.
            return self.expire_pending();
        }
        // Ten minutes behind the newest entry, and once the clock is ten
        // minutes past it, the newest entry itself: an idle webhook then
        // remembers only the ids at its newest timestamp, not its last burst.
        // (A step, not a slide: the state of an idle webhook changes once,
        // so idle polls keep writing nothing to the state file.)
        let settled = self.api_now_ms.saturating_sub(LATENESS_MS) >= state.newest_ms;
        let mut horizon = if settled {
            state.newest_ms
        } else {
            state.newest_ms.saturating_sub(LATENESS_MS)
        };
        if let Some(lowest) = state.gaps.last() {
            horizon = horizon.min(lowest.bottom_ms);
        }
        if state.handled.len() > HANDLED_CAP {
            let mut created: Vec<i64> = state.handled.values().copied().collect();
            created.sort_unstable();
            let forced = created[created.len() - HANDLED_CAP / 2];
            warn!(target = %self.target, "dedupe memory full; forgetting the oldest ids");
            horizon = horizon.max(forced);
            state.gaps.retain(|g| g.bottom_ms >= forced);
        }
        if horizon > state.horizon_ms {
            state.horizon_ms = horizon;
            state.handled.retain(|_, c| *c >= horizon);
        }
        self.expire_pending();
    }

    /// Gives up on in-flight entries followed for too long, or past the cap.
    fn expire_pending(&mut self) {
        let state = &mut *self.state;
        let now = self.now_ms;
        let timeout = PENDING_TIMEOUT.as_millis() as i64;
        let mut given_up: Vec<(String, i64)> = state
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.first_seen_ms) >= timeout)
            .map(|(id, p)| (id.clone(), p.created_ms))
            .collect();
        if state.pending.len() - given_up.len() > PENDING_CAP {
            let mut by_age: Vec<(i64, String)> = state
                .pending
                .iter()
                .filter(|(_, p)| now.saturating_sub(p.first_seen_ms) < timeout)
                .map(|(id, p)| (p.created_ms, id.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = by_age.len() - PENDING_CAP;
            given_up.extend(by_age.into_iter().take(excess).map(|(c, id)| (id, c)));
        }
        // Given-up entries count as dealt with: if they turn final later,
        // they are not counted on top of being counted as missed.
        for (id, created) in &given_up {
            state.pending.remove(id);
            if *created >= state.horizon_ms {
                state.handle(id, *created);
            }
        }
        let expired = given_up.len();
        if expired > 0 {
            state.counts.miss("pending_expired", expired as u64, now);
            warn!(
                target = %self.target,
                expired,
                "gave up on in-flight attempts that never turned final"
            );
        }
    }
}

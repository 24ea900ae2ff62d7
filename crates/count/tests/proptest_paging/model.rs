//! The model of the API: a list of entries in creation order, listed
//! newest-first or oldest-first and paginated like the real API, behind a
//! [`PageSource`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use talkover_count::api::{ApiError, LogEntry, LogPage};
use talkover_count::clock::ClockOffset;
use talkover_count::collect::PageSource;
use talkover_count::model::AttemptKey;
use talkover_count::target::Target;
use time::macros::format_description;
use time::OffsetDateTime;

/// The order the model lists entries in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    NewestFirst,
    OldestFirst,
}

pub(crate) const EVENTS: &[&str] = &["call.completed", "call.failed", "campaign.started"];
pub(crate) const IN_FLIGHT: &[&str] = &["pending", "queued", "retrying"];

/// One delivery attempt as the model stores it: its final shape is decided
/// at creation, `in_flight` says whether it is still shown as unfinished.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: Option<String>,
    pub(crate) created_ms: i64,
    pub(crate) created_at: String,
    pub(crate) event: &'static str,
    pub(crate) attempt: i64,
    pub(crate) duration_ms: f64,
    pub(crate) status: &'static str,
    pub(crate) http_status: Option<i64>,
    pub(crate) in_flight: Option<&'static str>,
}

impl Entry {
    pub(crate) fn listed(&self) -> LogEntry {
        let mut e = LogEntry {
            id: self.id.clone(),
            event: Some(self.event.to_string()),
            attempt: Some(self.attempt),
            created_at: Some(self.created_at.clone()),
            ..LogEntry::default()
        };
        match self.in_flight {
            Some(status) => e.status = Some(status.to_string()),
            None => {
                e.status = Some(self.status.to_string());
                e.http_status = self.http_status;
                e.duration_ms = Some(self.duration_ms);
                e.delivered_at = Some(rfc3339_ms(self.created_ms + self.duration_ms as i64));
            }
        }
        e
    }

    pub(crate) fn key(&self) -> AttemptKey {
        AttemptKey {
            event: self.event.to_string(),
            status: self.status.to_string(),
            code: self
                .http_status
                .map_or_else(|| "none".to_string(), |c| c.to_string()),
        }
    }
}

/// RFC 3339 in UTC with millisecond precision, as the API writes it.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("timestamp in range");
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .expect("formattable timestamp")
}

/// The mutable world behind the model API.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) listing: Listing,
    /// Every entry, oldest first.
    pub(crate) entries: Vec<Entry>,
    /// `created_at` (Unix ms) of the newest entry.
    pub(crate) last_ms: i64,
    pub(crate) rng: u64,
    /// How many of the next requests fail with HTTP 500.
    pub(crate) fail_next: u32,
    /// Chance (percent) that entries arrive and one turns final just
    /// before a request is answered, i.e. between two page reads of a poll.
    pub(crate) arrival_pct: u64,
    /// Chance (percent) that such an arrival is in flight.
    pub(crate) arrival_pending_pct: u64,
    /// Requests answered or refused so far.
    pub(crate) requests: u64,
    /// Arrivals forced just before request number N is answered.
    pub(crate) scheduled: BTreeMap<u64, usize>,
    /// Ids served, by request number (for the deterministic tests).
    pub(crate) served: Vec<Vec<String>>,
    /// How far the model's clock is ahead of the host's.
    pub(crate) skew_ms: i64,
}

impl World {
    pub(crate) fn new(listing: Listing, seed: u64, skew_ms: i64) -> World {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        World {
            listing,
            entries: Vec::new(),
            last_ms: i64::try_from(now).expect("now in range") - 3_600_000 + skew_ms,
            rng: seed,
            fail_next: 0,
            arrival_pct: 0,
            arrival_pending_pct: 30,
            requests: 0,
            scheduled: BTreeMap::new(),
            served: Vec::new(),
            skew_ms,
        }
    }

    /// splitmix64
    pub(crate) fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Creates `n` entries; each is in flight with chance `pending_pct`.
    pub(crate) fn append(&mut self, n: usize, pending_pct: u64) {
        for _ in 0..n {
            self.last_ms += 1 + self.below(900) as i64;
            let number = self.entries.len();
            // A few entries come without an id: the collector then dedupes
            // them by a digest of fields that do not change when they finish.
            let id = (self.below(100) >= 5).then(|| format!("log_{number:06}"));
            let event = EVENTS[self.below(EVENTS.len() as u64) as usize];
            let (status, http_status) = match self.below(10) {
                0..=5 => ("success", Some([200, 201, 204][self.below(3) as usize])),
                6..=8 => (
                    "failed",
                    [Some(500), Some(404), None][self.below(3) as usize],
                ),
                _ => ("cancelled", None),
            };
            let attempt = if self.below(10) < 7 {
                1
            } else {
                2 + self.below(4) as i64
            };
            let duration_ms = self.below(120_000) as f64 / 4.0;
            let in_flight = (self.below(100) < pending_pct)
                .then(|| IN_FLIGHT[self.below(IN_FLIGHT.len() as u64) as usize]);
            self.entries.push(Entry {
                id,
                created_ms: self.last_ms,
                created_at: rfc3339_ms(self.last_ms),
                event,
                attempt,
                duration_ms,
                status,
                http_status,
                in_flight,
            });
        }
    }

    /// The `k` oldest (or newest) in-flight entries turn final.
    pub(crate) fn finish(&mut self, k: usize, newest: bool) {
        let mut left = k;
        let order: Box<dyn Iterator<Item = &mut Entry>> = if newest {
            Box::new(self.entries.iter_mut().rev())
        } else {
            Box::new(self.entries.iter_mut())
        };
        for e in order {
            if left == 0 {
                break;
            }
            if e.in_flight.is_some() {
                e.in_flight = None;
                left -= 1;
            }
        }
    }

    pub(crate) fn page(&self, page: u64, per_page: u32) -> LogPage {
        let total = self.entries.len();
        let per_page = per_page as usize;
        let start = usize::try_from(page.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(per_page)
            .min(total);
        let end = start.saturating_add(per_page).min(total);
        let entries = match self.listing {
            Listing::OldestFirst => self.entries[start..end].iter().map(Entry::listed).collect(),
            Listing::NewestFirst => self
                .entries
                .iter()
                .rev()
                .skip(start)
                .take(end - start)
                .map(Entry::listed)
                .collect(),
        };
        LogPage {
            entries,
            total: Some(total as u64),
        }
    }

    /// What the collector must have counted once it has caught up: every
    /// entry after the first `baseline`, all of them final by then.
    pub(crate) fn expected(&self, baseline: usize) -> Expected {
        let mut exp = Expected::default();
        for e in &self.entries[baseline..] {
            *exp.attempts.entry(e.key()).or_default() += 1;
            *exp.by_status.entry(e.status.to_string()).or_default() += 1;
            if e.attempt > 1 {
                exp.retries += 1;
            }
        }
        exp
    }
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Expected {
    pub(crate) attempts: BTreeMap<AttemptKey, u64>,
    pub(crate) retries: u64,
    pub(crate) by_status: BTreeMap<String, u64>,
}

/// The model API: a [`PageSource`] over a shared [`World`].
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) world: Mutex<World>,
}

impl Model {
    pub(crate) fn new(listing: Listing, seed: u64, skew_ms: i64) -> Model {
        Model {
            world: Mutex::new(World::new(listing, seed, skew_ms)),
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("model lock")
    }
}

impl PageSource for Model {
    fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        per_page: u32,
    ) -> impl Future<Output = Result<LogPage, ApiError>> + Send {
        let answer = {
            let mut w = self.world();
            w.requests += 1;
            let request = w.requests;
            if let Some(n) = w.scheduled.remove(&request) {
                w.append(n, 0);
            }
            if w.arrival_pct > 0 && w.below(100) < w.arrival_pct {
                let n = 1 + w.below(2 * u64::from(per_page)) as usize;
                let pending_pct = w.arrival_pending_pct;
                w.append(n, pending_pct);
                if w.below(2) == 0 {
                    w.finish(1, false);
                }
            }
            if w.fail_next > 0 {
                w.fail_next -= 1;
                w.served.push(Vec::new());
                Err(ApiError::Http {
                    path: target.logs_path(),
                    status: 500,
                })
            } else {
                let p = w.page(page, per_page);
                let ids = p.entries.iter().filter_map(|e| e.id.clone()).collect();
                w.served.push(ids);
                Ok(p)
            }
        };
        async move {
            // Let other tasks run, as a real request would.
            tokio::task::yield_now().await;
            answer
        }
    }

    /// Known as a real `Date` header would tell it: to within a second,
    /// the true offset at the interval's low end (the end the collector
    /// places its baseline by).
    fn clock_offset(&self) -> Option<ClockOffset> {
        let skew = self.world().skew_ms;
        Some(ClockOffset {
            low_ms: skew,
            high_ms: skew + 1_000,
        })
    }
}

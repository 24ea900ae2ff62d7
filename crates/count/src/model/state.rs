//! The per-webhook state: read position, dedupe memory, attempts in flight
//! and counters, as one plain value that is saved and restored as a unit.

use std::sync::Arc;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

use super::{DeliveryCounts, Failures, WebhookSettings};

/// The order in which the API lists entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Page 1 holds the newest entries (as the documentation's examples).
    #[default]
    NewestFirst,
    /// Page 1 holds the oldest entries; new ones land on the last page.
    OldestFirst,
}

/// A stretch of the log that a poll could not finish reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Position (0 = newest) of the first entry not read yet, as of `total_at`.
    pub rank: u64,
    /// `pagination.total` when `rank` was measured; arrivals since shift it.
    pub total_at: u64,
    /// Entries in the gap were created at or before this (Unix ms).
    pub top_ms: i64,
    /// What `pagination.total` would be now had nothing been deleted since
    /// the gap formed: reaching the end of the list short of that is the
    /// evidence of retention.
    pub expected_total: u64,
    /// Entries older than this (Unix ms) were known before the gap formed:
    /// reaching one means the gap is closed.
    pub bottom_ms: i64,
    /// Estimated entries in the gap not read yet.
    pub unread: u64,
}

/// An entry seen in flight and followed until it turns final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// Its `created_at`, Unix ms.
    pub created_ms: i64,
    /// Wall-clock Unix ms when first seen, for giving up on it.
    pub first_seen_ms: i64,
}

/// Everything remembered about one target: read position, dedupe memory,
/// in-flight ids and counters, as one value that can be saved and restored.
///
/// The state file keeps it in three parts: this value without `handled`
/// and `failures`, rewritten when it changes; the dedupe memory, one row
/// per id, added to and cut below the horizon; and the kept failures, one
/// row each. So a commit costs what changed, not the whole state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetState {
    /// Whether a first read has placed the baseline.
    pub baselined: bool,
    /// Until that first read: when the exporter began watching the webhook,
    /// on this host's clock (Unix ms). What the API created before this
    /// moment is history; everything after it is counted, however long the
    /// API cannot be read.
    pub since_ms: Option<i64>,
    /// The listing order, once seen.
    pub order: Option<Order>,
    /// `pagination.total` at the last read.
    pub last_total: Option<u64>,
    /// Every entry created before this (Unix ms) has been dealt with.
    pub horizon_ms: i64,
    /// Newest `created_at` seen (Unix ms).
    pub newest_ms: i64,
    /// Ids at or after the horizon already dealt with, by [`id_key`], and
    /// their `created_at`. Added to only through [`TargetState::handle`].
    pub handled: HashMap<u64, i64>,
    /// What [`TargetState::handle`] added since the state was last handed
    /// on: what its next commit writes.
    pub journal: Vec<(u64, i64)>,
    /// Ids seen in flight.
    pub pending: HashMap<String, InFlight>,
    /// Unfinished stretches, newest first.
    pub gaps: Vec<Gap>,
    /// Ids of the entries just older than entries too large to read even
    /// alone, so each such entry is counted as missed once.
    pub oversized: Vec<String>,
    /// Entries per page that last fit under the body-size cap, if smaller
    /// than configured; it grows back by doubling after good polls.
    pub per_page: Option<u32>,
    /// Good polls since the page size last shrank or grew.
    pub per_page_good: u32,
    /// The counters.
    pub counts: DeliveryCounts,
    /// The last failed attempts (`--failures.keep`), for the status pages;
    /// in an `Arc` so that a snapshot shares them until they change.
    pub failures: Arc<Failures>,
    /// The webhook's own settings as the API last gave them, kept so a
    /// restart while the API is down still judges attempts by them;
    /// `None` until they are known.
    pub settings: Option<WebhookSettings>,
}

/// The key an entry's id is remembered by: a stable 64-bit FNV-1a hash, the
/// same on every machine and version (it is written to the state file).
/// Two ids of one webhook within its dedupe window sharing one is about as
/// likely as one in 10^10 at 100,000 ids.
pub fn id_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl TargetState {
    /// The state of a webhook first watched at `since_ms` (this host's
    /// clock, Unix ms): nothing read yet, nothing counted.
    pub fn watching_since(since_ms: i64) -> TargetState {
        TargetState {
            since_ms: Some(since_ms),
            ..TargetState::default()
        }
    }

    /// Whether the entry `id` has been dealt with.
    pub fn is_handled(&self, id: &str) -> bool {
        self.handled.contains_key(&id_key(id))
    }

    /// Remembers that the entry `id`, created at `created_ms`, has been
    /// dealt with, and notes it for the next commit.
    pub fn handle(&mut self, id: &str, created_ms: i64) {
        let key = id_key(id);
        self.handled.insert(key, created_ms);
        self.journal.push((key, created_ms));
    }

    /// Takes the settings the API gave now (`now_ms`, this host's clock):
    /// events that became known get their lost-events series at 0 from
    /// here, if counting has begun.
    pub fn apply_settings(&mut self, settings: WebhookSettings, now_ms: i64) {
        if self.baselined {
            self.counts.prepare(now_ms, &settings.events);
        }
        self.settings = Some(settings);
    }
}

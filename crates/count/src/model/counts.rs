//! The counters of one webhook as plain values: what `/metrics` shows of
//! it, and what the state file keeps, so that they never go backwards.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::native::{bucket_index, NativeBuckets};
use super::{Exemplar, Exemplars, FailureClass, MinuteHistory};

/// Buckets of `talkover_webhook_delivery_duration_seconds`: 50 ms up to the
/// 120 s maximum webhook timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
];
/// Buckets of `talkover_webhook_delivery_attempt_number`: one per possible
/// attempt (`max_retries` is at most 10).
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
/// Buckets of `talkover_webhook_delivery_lag_seconds` (created → delivered).
pub const LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// A histogram as plain data: a count per bucket (the last one is `+Inf`)
/// and the sum, and the same observations in native (exponential) buckets.
/// The classic bucket bounds are the constants above.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Non-cumulative counts, one per bound plus one for `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observed values.
    pub sum: f64,
    /// The observations again, for scrapers that read native histograms.
    /// Absent from state files written before they were kept: see
    /// [`Histogram::seed_native`].
    #[serde(default)]
    pub native: NativeBuckets,
    /// The newest attempt in each classic bucket, for exemplars; kept only
    /// for the duration histograms.
    #[serde(default)]
    pub exemplars: Vec<Option<Exemplar>>,
    /// When its first observation was counted (this host's clock, Unix
    /// ms): the protobuf format's created timestamp. Absent for histograms
    /// restored from state files written before it was kept, whose start
    /// is not known.
    #[serde(default)]
    pub created_ms: Option<i64>,
}

impl Histogram {
    /// Adds one observation; returns the classic bucket it went to.
    pub fn observe(&mut self, bounds: &[f64], value: f64) -> usize {
        if self.buckets.len() != bounds.len() + 1 {
            self.buckets.resize(bounds.len() + 1, 0);
        }
        let i = bounds.partition_point(|b| *b < value);
        self.buckets[i] += 1;
        self.sum += value;
        self.native.observe(value);
        i
    }

    /// Makes attempt `id` (created at `ms`) the exemplar of classic bucket
    /// `bucket` if it is the newest there.
    pub fn offer_exemplar(&mut self, bucket: usize, id: &str, value: f64, ms: i64) {
        if !super::exemplars::fits(id) {
            return;
        }
        if self.exemplars.len() < self.buckets.len() {
            self.exemplars.resize(self.buckets.len(), None);
        }
        match self.exemplars.get_mut(bucket) {
            Some(Some(e)) => e.offer(id, value, ms),
            Some(slot) => *slot = Some(Exemplar::new(id, value, ms)),
            None => {}
        }
    }

    /// Gives a histogram restored without native buckets (from a state file
    /// of an earlier version) native buckets that agree with its classic
    /// ones: each classic bucket's count goes to the native bucket of its
    /// upper bound, `+Inf`'s to the one above the last bound. Its native
    /// quantiles are then as coarse as the classic ones for the attempts
    /// counted before the upgrade, and exact for every attempt after.
    pub fn seed_native(&mut self, bounds: &[f64]) {
        if self.native.count() != 0 {
            return;
        }
        let last = bounds.last().copied().unwrap_or(1.0);
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let upper = bounds.get(i).copied().unwrap_or(last * 2.0);
            match bucket_index(upper) {
                Some(index) => self.native.add(index, n),
                None => self.native.zero += n,
            }
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Notes `now_ms` as its start if nothing was observed yet: a
    /// histogram restored with observations but no start keeps none, since
    /// a start after its first samples would read as a reset.
    pub fn begin(&mut self, now_ms: i64) {
        if self.created_ms.is_none() && self.count() == 0 {
            self.created_ms = Some(now_ms);
        }
    }
}

/// The label set of one `talkover_webhook_delivery_attempts_total` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptKey {
    /// `event` label.
    pub event: String,
    /// `status` label.
    pub status: String,
    /// `code` label: the HTTP status, or `none`.
    pub code: String,
}

/// `(event, status, code)` borrowed: what [`AttemptKey`] is compared by, so
/// that the attempts map can be searched without building an owned key.
pub(super) trait AttemptLabels {
    fn labels(&self) -> (&str, &str, &str);
}

impl AttemptLabels for AttemptKey {
    fn labels(&self) -> (&str, &str, &str) {
        (&self.event, &self.status, &self.code)
    }
}

impl AttemptLabels for (&str, &str, &str) {
    fn labels(&self) -> (&str, &str, &str) {
        *self
    }
}

// The derived order of `AttemptKey` compares event, then status, then code:
// the tuple order below is the same, as `Borrow` requires.
impl<'a> Borrow<dyn AttemptLabels + 'a> for AttemptKey {
    fn borrow(&self) -> &(dyn AttemptLabels + 'a) {
        self
    }
}

impl PartialEq for dyn AttemptLabels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.labels() == other.labels()
    }
}

impl Eq for dyn AttemptLabels + '_ {}

impl PartialOrd for dyn AttemptLabels + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn AttemptLabels + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.labels().cmp(&other.labels())
    }
}

/// The values of the `result` label of
/// `talkover_webhook_delivery_results_total`: `success`, then every
/// [`FailureClass`], in this order.
pub const RESULTS: [&str; 1 + FailureClass::ALL.len()] = {
    let mut out = ["success"; 1 + FailureClass::ALL.len()];
    let mut i = 0;
    while i < FailureClass::ALL.len() {
        out[i + 1] = FailureClass::ALL[i].as_str();
        i += 1;
    }
    out
};

/// Final attempts by result: one count per value of [`RESULTS`].
pub type Results = [u64; RESULTS.len()];

/// Where a final attempt's result is counted in [`Results`].
pub fn result_index(failure: Option<FailureClass>) -> usize {
    match failure {
        None => 0,
        Some(class) => 1 + class as usize,
    }
}

/// When each counter series was first counted (this host's clock, Unix
/// ms): the protobuf format's created timestamps, so a Prometheus that
/// ingests them sees every series start at 0. Kept with the counters and
/// never moved: a start later than a series' last sample would read as a
/// reset. Series restored from state files written before these were kept
/// have none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Created {
    /// The first successful read: when the series that exist from it (the
    /// results, the retries, the lost events of the known events) began.
    pub baseline_ms: Option<i64>,
    /// Of each `talkover_webhook_delivery_attempts_total` series.
    #[serde(with = "map_as_pairs")]
    pub attempts: BTreeMap<AttemptKey, i64>,
    /// Of each `talkover_webhook_deliveries_exhausted_total` series.
    pub exhausted: BTreeMap<String, i64>,
    /// Of each `talkover_exporter_logs_missed_total` series.
    pub missed: BTreeMap<String, i64>,
    /// Of each `talkover_exporter_invalid_fields_total` series.
    #[serde(with = "map_as_pairs")]
    pub invalid_fields: BTreeMap<(String, String), i64>,
}

/// Everything counted for one webhook: the values that must never go
/// backwards, and so the values the state file persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Final attempts by event, status and code.
    #[serde(with = "map_as_pairs")]
    pub attempts: BTreeMap<AttemptKey, u64>,
    /// Attempt durations by status.
    pub duration: BTreeMap<String, Histogram>,
    /// Attempt numbers by status.
    pub attempt_number: BTreeMap<String, Histogram>,
    /// Attempts with `attempt > 1`.
    pub retries: u64,
    /// `delivered_at - created_at`.
    pub lag: Histogram,
    /// `created_at` (Unix seconds) of the newest counted attempt, by status.
    pub last_attempt: BTreeMap<String, f64>,
    /// Entries that could not be counted, by reason.
    pub missed: BTreeMap<String, u64>,
    /// Entry fields left out of a histogram, by `(field, reason)`.
    #[serde(with = "map_as_pairs")]
    pub invalid_fields: BTreeMap<(String, String), u64>,
    /// Final attempts by result (see [`RESULTS`]); absent from older state
    /// files, and then counted from the upgrade on.
    #[serde(default)]
    pub results: Results,
    /// Events the platform gave up on: final failed attempts whose attempt
    /// number reached the webhook's `max_retries + 1`, by event.
    #[serde(default)]
    pub exhausted: BTreeMap<String, u64>,
    /// When each series was first counted.
    #[serde(default)]
    pub created: Created,

    // Not counters, but recorded with them, attempt by attempt, and so kept
    // with them; in an `Arc` so that a snapshot shares them until they change.
    /// Attempts and failures per minute over the last hour; absent from older state files.
    #[serde(default)]
    pub history: Arc<MinuteHistory>,
    /// The newest attempt behind each attempts series and duration bucket,
    /// for OpenMetrics exemplars; absent from older state files.
    #[serde(default)]
    pub exemplars: Arc<Exemplars>,
}

impl DeliveryCounts {
    /// Seeds native buckets into histograms restored without them.
    pub fn seed_native(&mut self) {
        for h in self.duration.values_mut() {
            h.seed_native(DURATION_BUCKETS);
        }
        for h in self.attempt_number.values_mut() {
            h.seed_native(ATTEMPT_BUCKETS);
        }
        self.lag.seed_native(LAG_BUCKETS);
    }

    /// The first successful read, at `now_ms` (this host's clock): the
    /// results and the retries start at 0 here, and so does each lost-events
    /// series of the known `events`, so `increase()` sees the first of each.
    pub fn start(&mut self, now_ms: i64, events: &[String]) {
        self.created.baseline_ms = Some(now_ms);
        self.prepare(now_ms, events);
    }

    /// Makes the lost-events series of `events` exist at 0 from `now_ms`:
    /// at the baseline, and when new events become known.
    pub fn prepare(&mut self, now_ms: i64, events: &[String]) {
        for event in events {
            if self.exhausted.len() >= super::EVENTS_CAP {
                break;
            }
            if !self.exhausted.contains_key(event) {
                self.exhausted.insert(event.clone(), 0);
                self.created.exhausted.insert(event.clone(), now_ms);
            }
        }
    }

    /// Counts `n` entries that could not be counted, for `reason`.
    pub fn miss(&mut self, reason: &str, n: u64, now_ms: i64) {
        match self.missed.get_mut(reason) {
            Some(count) => *count += n,
            None => {
                self.missed.insert(reason.to_string(), n);
                self.created.missed.insert(reason.to_string(), now_ms);
            }
        }
    }

    /// Final attempts counted, all results together.
    pub fn total(&self) -> u64 {
        self.attempts.values().sum()
    }

    /// The count of one existing `talkover_webhook_delivery_attempts_total`
    /// series, found without allocating.
    pub fn attempt_mut(&mut self, event: &str, status: &str, code: &str) -> Option<&mut u64> {
        self.attempts
            .get_mut(&(event, status, code) as &dyn AttemptLabels)
    }
}

/// JSON object keys must be strings; maps keyed by structs or tuples are
/// stored as lists of pairs instead.
pub(super) mod map_as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_inclusive() {
        let mut h = Histogram::default();
        for v in [0.05, 0.051, 200.0] {
            h.observe(DURATION_BUCKETS, v);
        }
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[DURATION_BUCKETS.len()], 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn native_buckets_count_what_the_classic_ones_count() {
        let mut h = Histogram::default();
        for v in [0.0, 0.003, 0.05, 0.3, 0.3, 7.5, 200.0] {
            h.observe(DURATION_BUCKETS, v);
        }
        assert_eq!(h.native.count(), h.count());
        assert_eq!(h.native.zero, 1);
    }

    #[test]
    fn a_histogram_from_an_older_state_file_gets_native_buckets_that_agree() {
        let old = r#"{"buckets":[1,0,0,2,0,0,0,0,0,0,0,0,0,0,0,3],"sum":100.0}"#;
        let mut h: Histogram = serde_json::from_str(old).expect("an older histogram reads");
        assert_eq!(h.native.count(), 0);
        h.seed_native(DURATION_BUCKETS);
        assert_eq!(h.native.count(), h.count());
        // Each count sits in the native bucket of its classic upper bound.
        assert_eq!(h.native.buckets.first().map(|b| b.1), Some(1));
        let seeded = h.native.clone();
        h.seed_native(DURATION_BUCKETS);
        assert_eq!(h.native, seeded, "seeding twice changes nothing");
    }

    #[test]
    fn borrowed_lookups_find_every_attempt_series() {
        // Values chosen so that each label alone would order them differently.
        let labels = [
            ("a", "z", "500"),
            ("b", "a", "200"),
            ("a", "a", "none"),
            ("b", "z", "100"),
            ("a", "z", "200"),
        ];
        let mut counts = DeliveryCounts::default();
        for (i, (event, status, code)) in labels.iter().enumerate() {
            let key = AttemptKey {
                event: event.to_string(),
                status: status.to_string(),
                code: code.to_string(),
            };
            counts.attempts.insert(key, i as u64);
        }
        for (i, (event, status, code)) in labels.iter().enumerate() {
            assert_eq!(
                counts.attempt_mut(event, status, code).copied(),
                Some(i as u64)
            );
        }
        assert_eq!(counts.attempt_mut("a", "z", "404"), None);
    }

    #[test]
    fn counts_round_trip_through_json() {
        let mut c = DeliveryCounts::default();
        c.attempts.insert(
            AttemptKey {
                event: "e".into(),
                status: "failed".into(),
                code: "none".into(),
            },
            7,
        );
        c.invalid_fields
            .insert(("duration_ms".into(), "negative".into()), 1);
        let json = serde_json::to_string(&c).expect("serialize");
        let back: DeliveryCounts = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, c);
    }
}

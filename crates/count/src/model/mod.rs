//! Plain data, no I/O: what is known and counted of each watched webhook.
//!
//! - [`TargetState`]: one webhook's whole state, saved and restored as a unit.
//! - [`DeliveryCounts`]: its counters (inside the state), and beside them
//!   what the status pages show: the last [`Failures`] and a [`MinuteHistory`].
//! - [`TargetSnapshot`]: what a scrape shows of it.
//! - [`Readiness`]: what `/-/ready` waits for.
//! - [`WebhookSettings`]: what the API says of a webhook (retry limit, timeout, events).
//! - [`FailureClass`]: why a failed attempt failed, in aggregate.

mod counts;
mod exemplars;
mod failure_class;
mod failures;
mod history;
mod native;
mod readiness;
mod settings;
mod snapshot;
mod state;
mod text;

pub use counts::{
    result_index, AttemptKey, Created, DeliveryCounts, Histogram, Results, ATTEMPT_BUCKETS,
    DURATION_BUCKETS, LAG_BUCKETS, RESULTS,
};
pub use exemplars::{Exemplar, Exemplars, EXEMPLAR_ID_CAP};
pub use failure_class::{classify, FailureClass};
pub use failures::{
    AttemptFields, FailedAttempt, FailurePolicy, Failures, ERROR_CAP, EVENT_CAP, ID_CAP, MAX_KEEP,
    RESPONSE_CAP, STATUS_CAP, TIME_CAP,
};
pub use history::{MinuteHistory, Series, MINUTES};
pub use native::{bucket_upper_bound, NativeBuckets, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD};
pub use readiness::Readiness;
pub use settings::{
    label_value, max_retries, WebhookSettings, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_SECONDS,
    EVENTS_CAP,
};
pub use snapshot::{PollStats, TargetSnapshot};
pub use state::{id_key, Gap, InFlight, Order, TargetState};
pub use text::{clean, cut};

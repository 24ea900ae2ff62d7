//! Plain data, no I/O: what is known and counted of each watched webhook.
//!
//! - [`TargetState`]: one webhook's whole state, saved and restored as a unit.
//! - [`DeliveryCounts`]: its counters (inside the state), and beside them
//!   what the status pages show: the last [`Failures`] and a [`MinuteHistory`].
//! - [`TargetSnapshot`]: what a scrape shows of it.
//! - [`Readiness`]: what `/-/ready` waits for.

mod counts;
mod exemplars;
mod failures;
mod history;
mod native;
mod readiness;
mod snapshot;
mod state;
mod text;

pub use counts::{
    AttemptKey, DeliveryCounts, Histogram, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS,
};
pub use exemplars::{Exemplar, Exemplars, EXEMPLAR_ID_CAP};
pub use failures::{
    AttemptFields, FailedAttempt, FailurePolicy, Failures, ERROR_CAP, EVENT_CAP, ID_CAP, MAX_KEEP,
    RESPONSE_CAP, STATUS_CAP, TIME_CAP,
};
pub use history::{MinuteHistory, Series, MINUTES};
pub use native::{bucket_upper_bound, NativeBuckets, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD};
pub use readiness::Readiness;
pub use snapshot::{PollStats, TargetSnapshot};
pub use state::{Gap, InFlight, Order, TargetState};
pub use text::{clean, cut};

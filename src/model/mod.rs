//! Plain data, no I/O: what is known and counted of each watched webhook.
//!
//! - [`TargetState`]: one webhook's whole state, saved and restored as a unit.
//! - [`DeliveryCounts`]: its counters (inside the state).
//! - [`TargetSnapshot`]: what a scrape shows of it.
//! - [`Readiness`]: what `/-/ready` waits for.

mod counts;
mod native;
mod readiness;
mod snapshot;
mod state;

pub use counts::{
    AttemptKey, DeliveryCounts, Histogram, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS,
};
pub use native::{bucket_upper_bound, NativeBuckets, NATIVE_SCHEMA, NATIVE_ZERO_THRESHOLD};
pub use readiness::Readiness;
pub use snapshot::{PollStats, TargetSnapshot};
pub use state::{Gap, InFlight, Order, TargetState};

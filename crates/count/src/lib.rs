//! The counting engine of talkover-exporter: no HTTP, no metrics, no files.
//!
//! It turns pages of a webhook's delivery log into counts, each final
//! attempt counted once, however the pages shift between reads. The
//! exporter feeds it pages from the real API; the property tests feed it an
//! in-memory model of the API; the simulator borrows its types.
//!
//! - [`target`]: the identity of a watched webhook.
//! - [`model`]: plain data: per-webhook state, counters, snapshots, readiness.
//! - [`api`]: the API's answers, failures and health as data.
//! - [`collect`]: one poll of one webhook: which pages to read, what is new, what to count.
//! - [`clock`]: this host's clock, and the API's clock learned from `Date` headers.
//! - [`backoff`]: the one exponential backoff (polls, API pauses, commits).

#![forbid(unsafe_code)]

pub mod api;
pub mod backoff;
pub mod clock;
pub mod collect;
pub mod model;
pub mod target;

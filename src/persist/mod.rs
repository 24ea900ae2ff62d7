//! The state file (`--state.file`): each webhook's whole state, committed
//! before it is published ("commit, then publish").
//!
//! - `store`: the redb database, its format checks, unusable files moved aside.
//! - `committer`: batches changed states into durable transactions, then publishes.
//! - `sink`: where a poller hands its state: the committer, or `/metrics` directly.

mod committer;
mod sink;
mod store;

pub use committer::{run_committer, Change};
pub use sink::Sink;
pub use store::{Problem, StateError, StateStore};

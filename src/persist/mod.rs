//! The state file (`--state.file`): each webhook's state, committed
//! before it is published ("commit, then publish").
//!
//! - `schema`: how a state is laid out in rows, by format version.
//! - `store`: the redb database, its format checks, unusable files moved aside.
//! - `committer`: gathers what pollers hand it, writes what changed in one
//!   durable transaction per window, then publishes; keeps each webhook's
//!   last state for a poller that died.
//! - `sink`: where a poller hands its state.

mod committer;
mod schema;
mod sink;
mod store;

pub use committer::{commit_window, run_committer, Change, CommitterConfig};
pub use schema::{stored_size, through_the_file, SchemaError};
pub use sink::Sink;
pub use store::{Problem, StateError, StateStore, Write, Written};

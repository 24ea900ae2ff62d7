//! The Talkover API's answers as data, read leniently, and why a request
//! failed. The HTTP client that fetches them is the exporter's.
//!
//! - `wire`: the answers' shapes.
//! - `raw_text`: an entry's error and response body, capped and decoded leniently.
//! - `error`: why a request failed.
//! - `health`: one view of the API's health: down, probed, back.

mod error;
mod health;
mod raw_text;
mod wire;

pub use error::ApiError;
pub use health::{Admission, ApiHealth, Outcome};
pub use wire::{
    parse_timestamp_ms, Envelope, LogEntry, LogPage, Owner, Pagination, WebhookInfo, TEXT_CAP,
};

/// The largest `per_page` the API accepts.
pub const MAX_PER_PAGE: u32 = 100;

//! The HTTP side: the routes scrapers and people reach, and what
//! `--web.config.file` puts around them (TLS, basic auth, headers).
//!
//! - `auth`: basic auth: bcrypt off the async workers, one at a time, right pairs remembered.
//! - `routes`: `/`, the metrics path, `/-/healthy`, `/-/ready`.
//! - `self_metrics`: requests, scrapes in flight, connections open and refused.
//! - `status`: `/`, `/webhooks` and each webhook's page: what they show,
//!   as JSON for scripts; `pages` writes them as HTML for people.
//! - `serve`: the accept loop and its limits (connections, deadlines, TLS).
//! - `web`: the web config file and the guard (basic auth, headers) around the routes.

mod auth;
mod pages;
mod routes;
mod self_metrics;
mod serve;
mod status;
mod web;

pub use routes::{counted, router, AppState};
pub use self_metrics::HttpMetrics;
pub use serve::ServeLimits;
pub use web::WebConfig;

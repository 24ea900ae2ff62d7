//! The HTTP side: the routes scrapers and people reach, and what
//! `--web.config.file` puts around them (TLS, basic auth, headers).
//!
//! - `routes`: `/`, the metrics path, `/-/healthy`, `/-/ready`.
//! - `web`: the web config file, the guard around the routes, and serving.

mod routes;
mod web;

pub use routes::{router, AppState};
pub use web::{WebConfig, WebConfigError};

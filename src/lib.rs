//! talkover-exporter: Prometheus metrics from Talkover webhook delivery logs.
//!
//! The library is what `main.rs` needs: parse the flags into a [`Config`]
//! ([`Cli`]), then [`run`] it on a listener until a shutdown future
//! completes. The counting itself is the `talkover-count` crate; the fake
//! API that `--demo` runs is `talkover-sim`.
//!
//! # Rooms
//!
//! They follow the data: API pages → collector → state file → metrics →
//! HTTP. docs/architecture.md draws them and says where a change goes.
//!
//! - `cli`: flags, environment and `--config.file`, validated into a [`Config`].
//! - `app`: wiring: builds the parts from the config, runs and stops them ([`run`]).
//! - `api`: the Talkover REST client (pages, the token, the request budget).
//! - `discovery`: which webhooks to watch (static, discovered, filtered, sharded).
//! - `collect`: one poller per watched webhook, and the fleet of them.
//! - `supervisor`: the watch lifecycle: discovery timing, filters, shards,
//!   settings reads, reconcile, the sweep, readiness.
//! - `persist`: the state file; commits each webhook's state, then publishes it.
//! - `metrics`: published snapshots and their three encodings (no HTTP).
//! - `http`: the routes, and `--web.config.file` (TLS, basic auth, headers) around them.

#![forbid(unsafe_code)]

mod api;
mod app;
mod cli;
mod collect;
mod discovery;
mod http;
mod metrics;
mod persist;
mod supervisor;

// The engine's rooms, under the names the exporter's modules use.
use talkover_count::{backoff, clock, model, target};

pub use app::{run, Error};
pub use cli::{Cli, Config, ConfigError, LogFormat, LogLevel, Source};
pub use metrics::proto;

/// The rooms the benchmarks measure from inside (`cargo bench --features
/// bench`): not an API, nothing outside this repository may use it.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench {
    pub use crate::api::{Client, ClientOptions, Credentials, Token};
    pub use crate::collect::{run_target, Links};
    pub use crate::http::{router, AppState};
    pub use crate::metrics::{Budget, Exposition, Published};
    pub use crate::persist::{stored_size, Sink};
}

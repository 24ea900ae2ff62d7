//! talkover-exporter: Prometheus metrics from Talkover webhook delivery logs.
//!
//! # Layout
//!
//! The modules follow the data: API pages → collector → state file →
//! metrics → HTTP. Each depends only on those before it (and on `model`).
//!
//! - [`cli`]: flags and environment, validated into a [`cli::Config`].
//! - `app`: wiring: builds the parts from the config, runs and stops them ([`run`]).
//! - [`target`]: the identity of a watched webhook.
//! - [`model`]: plain data, no I/O: per-webhook state, counters, snapshots, readiness.
//! - `backoff`: the one exponential backoff (pollers, API pauses, commits).
//! - [`clock`]: this host's clock, and the API's clock learned from `Date` headers.
//! - [`api`]: the Talkover REST client and its serde models (no metrics).
//! - [`discovery`]: which webhooks to watch (static, discovered, filtered, sharded).
//! - [`collect`]: polling, paging, counting; one poller per watched webhook.
//! - `supervisor`: the watch lifecycle: discovery timing, filters, shards,
//!   settings reads, reconcile, the sweep, readiness.
//! - [`persist`]: the state file; commits each webhook's state, then publishes it.
//! - [`metrics`]: published snapshots and their Prometheus text rendering (no HTTP).
//! - [`http`]: the routes, and `--web.config.file` (TLS, basic auth, headers) around them.
//! - [`sim`]: a fake Talkover API with fault injection, for `--demo` and tests.

#![forbid(unsafe_code)]

pub mod api;
mod app;
mod backoff;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod discovery;
pub mod http;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod sim;
mod supervisor;
pub mod target;

pub use app::{run, Error};

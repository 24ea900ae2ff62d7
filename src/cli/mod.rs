//! The command line: flags (each also read from an environment variable),
//! validated once into the typed [`Config`] the rest of the program uses.
//!
//! - this file: the flags, as clap reads them.
//! - `config`: the validated [`Config`], its defaults, and `--config.file`.
//! - `parse`: the parsers of single values (durations, sizes, URLs, paths).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use url::Url;

use crate::target::{Scope, Target};

mod config;
mod parse;

pub use config::{Config, ConfigError, Source};
use parse::*;

/// The default port, left free by the Prometheus default-port allocations list.
pub const DEFAULT_PORT: u16 = 9868;

/// Prometheus exporter for Talkover webhook delivery logs.
#[derive(Debug, Parser)]
#[command(
    name = "talkover-exporter",
    version,
    about,
    after_help = "The API token is read from the TALKOVER_TOKEN environment variable or from \
--talkover.token-file; there is deliberately no flag that takes the token itself."
)]
pub struct Cli {
    /// Base URL of the Talkover API.
    #[arg(long = "talkover.url", env = "TALKOVER_URL", default_value = "https://app.talkover.ai", value_parser = parse_url)]
    pub talkover_url: Url,

    /// File holding the API token (a trailing newline is ignored).
    #[arg(
        long = "talkover.token-file",
        env = "TALKOVER_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,

    /// Allow a plain http:// API URL (the token then travels unencrypted).
    #[arg(long = "talkover.allow-insecure", env = "TALKOVER_ALLOW_INSECURE")]
    pub allow_insecure: bool,

    /// Time allowed for one API request, body included (at most 10m).
    #[arg(long = "talkover.timeout", env = "TALKOVER_TIMEOUT", default_value = "10s", value_parser = duration_at_most(bounds::TIMEOUT))]
    pub timeout: Duration,

    /// Largest API response body accepted (e.g. 32MiB, 512KiB, 1000000; at most 1GiB).
    #[arg(long = "talkover.max-body-size", env = "TALKOVER_MAX_BODY_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub max_body_size: usize,

    /// Most API requests per second, all webhooks together (a 429 slows them all).
    #[arg(long = "talkover.max-requests-per-second", env = "TALKOVER_MAX_REQUESTS_PER_SECOND", default_value_t = 10.0, value_parser = parse_rate)]
    pub max_requests_per_second: f64,

    /// A webhook to watch: campaigns/{campaign_id}/webhooks/{webhook_id} or
    /// agents/{agent_id}/webhooks/{webhook_id}. Repeatable; the environment
    /// variable takes a comma-separated list.
    #[arg(
        long = "target",
        env = "TALKOVER_TARGETS",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub targets: Vec<Target>,

    /// Discover webhooks through the API's listing endpoints: campaigns,
    /// agents, or both (repeatable; the environment variable takes a
    /// comma-separated list).
    #[arg(long = "discover", env = "TALKOVER_DISCOVER", value_delimiter = ',', value_name = "KIND", value_parser = parse_scope)]
    pub discover: Vec<Scope>,

    /// How often discovery lists campaigns, agents and webhooks again, and
    /// the settings of each --target are read again (at most 24h) [default: 5m].
    #[arg(long = "discover.interval", env = "TALKOVER_DISCOVER_INTERVAL", value_parser = duration_at_most(bounds::DISCOVER_INTERVAL))]
    pub discover_interval: Option<Duration>,

    /// Watch only discovered webhooks matching this pattern (`*`, `?`) on
    /// their id, owner id, name or path. Repeatable.
    #[arg(
        long = "discover.include",
        env = "TALKOVER_DISCOVER_INCLUDE",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub include: Vec<String>,

    /// Do not watch discovered webhooks matching this pattern. Repeatable.
    #[arg(
        long = "discover.exclude",
        env = "TALKOVER_DISCOVER_EXCLUDE",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub exclude: Vec<String>,

    /// YAML file with targets and discovery settings (flags override it).
    #[arg(
        long = "config.file",
        env = "TALKOVER_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub config_file: Option<PathBuf>,

    /// How long the series of a webhook that disappeared (or was disabled)
    /// stay on /metrics (at most 30d).
    #[arg(long = "target.stale-after", env = "TALKOVER_TARGET_STALE_AFTER", default_value = "1h", value_parser = duration_at_most(bounds::STALE_AFTER))]
    pub stale_after: Duration,

    /// This replica's index (0-based) when webhooks are split across replicas.
    #[arg(
        long = "shard.index",
        env = "TALKOVER_SHARD_INDEX",
        default_value_t = 0
    )]
    pub shard_index: u32,

    /// Number of replicas sharing the webhooks; each watches those whose
    /// stable hash falls in its shard.
    #[arg(long = "shard.count", env = "TALKOVER_SHARD_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shard_count: u32,

    /// Time between two polls of one webhook (e.g. 500ms, 30s, 2m; at most
    /// 24h) [default: 30s; 2s with --demo, so its traffic shows within seconds].
    #[arg(long = "poll.interval", env = "TALKOVER_POLL_INTERVAL", value_parser = duration_at_most(bounds::POLL_INTERVAL))]
    pub poll_interval: Option<Duration>,

    /// Most pages of 100 entries read per poll of one webhook (at least 2:
    /// one for new entries, one for a backlog).
    #[arg(long = "poll.max-pages", env = "TALKOVER_POLL_MAX_PAGES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub max_pages: u32,

    /// Address to serve the landing page, /metrics and health on.
    #[arg(long = "web.listen-address", env = "TALKOVER_WEB_LISTEN_ADDRESS", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    pub listen_address: SocketAddr,

    /// Prometheus exporter-toolkit web configuration (TLS, basic auth,
    /// headers), the same format node_exporter reads.
    #[arg(
        long = "web.config.file",
        env = "TALKOVER_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Most HTTP connections open at once; more are closed as soon as they
    /// are accepted (0: no limit; at most 1000000).
    #[arg(
        long = "web.max-connections",
        env = "TALKOVER_WEB_MAX_CONNECTIONS",
        default_value_t = 512,
        value_parser = count_at_most(bounds::MAX_CONNECTIONS)
    )]
    pub max_connections: usize,

    /// Most metrics renders at once; more get 503 (0: no limit; at most 100000).
    #[arg(
        long = "web.max-requests",
        env = "TALKOVER_WEB_MAX_REQUESTS",
        default_value_t = 40,
        value_parser = count_at_most(bounds::MAX_REQUESTS)
    )]
    pub max_requests: usize,

    /// Time a client has to send a request's headers, to send the next
    /// request on a kept-alive connection, and to finish a TLS handshake
    /// (at most 1h).
    #[arg(long = "web.read-header-timeout", env = "TALKOVER_WEB_READ_HEADER_TIMEOUT", default_value = "30s", value_parser = duration_at_most(bounds::READ_HEADER_TIMEOUT))]
    pub read_header_timeout: Duration,

    /// Serve talkover_webhook_delivery_lag_seconds: 18 series per webhook
    /// with deliveries (off by default; docs/metrics.md, "Series budget").
    #[arg(
        long = "collector.lag",
        env = "TALKOVER_COLLECTOR_LAG",
        overrides_with = "no_collector_lag"
    )]
    pub collector_lag: bool,

    /// Do not serve talkover_webhook_delivery_lag_seconds (the default).
    #[arg(long = "no-collector.lag", overrides_with = "collector_lag")]
    pub no_collector_lag: bool,

    /// Serve talkover_webhook_delivery_attempt_number: 14 series per status
    /// of each webhook (on by default; the retry alerts read it).
    #[arg(
        long = "collector.attempt-number",
        overrides_with = "no_collector_attempt_number"
    )]
    pub collector_attempt_number: bool,

    /// Do not serve talkover_webhook_delivery_attempt_number.
    #[arg(
        long = "no-collector.attempt-number",
        env = "TALKOVER_NO_COLLECTOR_ATTEMPT_NUMBER",
        overrides_with = "collector_attempt_number"
    )]
    pub no_collector_attempt_number: bool,

    /// Split talkover_webhook_delivery_duration_seconds by status: 18
    /// series per status of each webhook instead of 18 (on by default).
    #[arg(
        long = "collector.duration-by-status",
        overrides_with = "no_collector_duration_by_status"
    )]
    pub collector_duration_by_status: bool,

    /// One duration histogram per webhook, all statuses together.
    #[arg(
        long = "no-collector.duration-by-status",
        env = "TALKOVER_NO_COLLECTOR_DURATION_BY_STATUS",
        overrides_with = "collector_duration_by_status"
    )]
    pub no_collector_duration_by_status: bool,

    /// Serve each webhook's polling detail: polls_total,
    /// last_poll_duration_seconds, backlog_entries and api_requests_total
    /// per webhook, 4 series each (off by default: exporter-wide totals
    /// instead; docs/metrics.md, "Series budget").
    #[arg(
        long = "collector.poll-stats",
        env = "TALKOVER_COLLECTOR_POLL_STATS",
        overrides_with = "no_collector_poll_stats"
    )]
    pub collector_poll_stats: bool,

    /// Serve polling self-metrics for all webhooks together (the default).
    #[arg(
        long = "no-collector.poll-stats",
        overrides_with = "collector_poll_stats"
    )]
    pub no_collector_poll_stats: bool,

    /// Send native buckets beside the classic ones in the protobuf format
    /// (off by default: a Prometheus 3 that negotiates protobuf without
    /// ingesting native histograms would store neither; docs/scale.md,
    /// "Scrape formats and size").
    #[arg(
        long = "collector.native-histograms",
        env = "TALKOVER_COLLECTOR_NATIVE_HISTOGRAMS",
        overrides_with = "no_collector_native_histograms"
    )]
    pub collector_native_histograms: bool,

    /// Classic buckets only, in every format (the default).
    #[arg(
        long = "no-collector.native-histograms",
        overrides_with = "collector_native_histograms"
    )]
    pub no_collector_native_histograms: bool,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "TALKOVER_WEB_TELEMETRY_PATH", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,

    /// Log level.
    #[arg(long = "log.level", env = "TALKOVER_LOG_LEVEL", default_value = "info")]
    pub log_level: LogLevel,

    /// Log format.
    #[arg(
        long = "log.format",
        env = "TALKOVER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Failed attempts kept per webhook for its status page, with their
    /// error text and response excerpt (0: none; at most 1000) [default: 20].
    #[arg(long = "failures.keep", env = "TALKOVER_FAILURES_KEEP", value_name = "N", value_parser = parse_keep)]
    pub failures_keep: Option<usize>,

    /// Keep the first 512 bytes of each kept failed attempt's response body;
    /// =false keeps none, since bodies can hold customer data [default: true].
    #[arg(
        long = "failures.response-body",
        env = "TALKOVER_FAILURES_RESPONSE_BODY",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub failures_response_body: Option<bool>,

    /// File that keeps counters and read positions across restarts (off when unset).
    #[arg(long = "state.file", env = "TALKOVER_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Run a built-in simulated Talkover API on loopback and watch its webhooks (no token needed).
    #[arg(long = "demo", env = "TALKOVER_DEMO")]
    pub demo: bool,

    /// Where the --demo simulator listens (port 0: any free port).
    #[arg(
        long = "demo.listen-address",
        env = "TALKOVER_DEMO_LISTEN_ADDRESS",
        default_value = "127.0.0.1:0"
    )]
    pub demo_listen_address: SocketAddr,
}

/// `--log.level` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each page read.
    Debug,
    /// Start-up, baselines, backlogs, and failures.
    Info,
    /// Failures only.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `--log.format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

//! The command line: flags (each also read from an environment variable),
//! validated once into the typed [`Config`] the rest of the program uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use url::Url;

use crate::api::{Credentials, Token};
use crate::discovery::{Filters, Pattern, Shard};
use crate::http::{ServeLimits, WebConfig};
use crate::target::{Scope, Target};

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

    /// Time allowed for one API request, body included.
    #[arg(long = "talkover.timeout", env = "TALKOVER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Largest API response body accepted (e.g. 32MiB, 512KiB, 1000000).
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

    /// How often discovery lists campaigns, agents and webhooks again [default: 5m].
    #[arg(long = "discover.interval", env = "TALKOVER_DISCOVER_INTERVAL", value_parser = parse_duration)]
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
    /// stay on /metrics.
    #[arg(long = "target.stale-after", env = "TALKOVER_TARGET_STALE_AFTER", default_value = "1h", value_parser = parse_duration)]
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

    /// Time between two polls of one webhook (e.g. 500ms, 30s, 2m).
    #[arg(long = "poll.interval", env = "TALKOVER_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: Duration,

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
    /// are accepted (0: no limit).
    #[arg(
        long = "web.max-connections",
        env = "TALKOVER_WEB_MAX_CONNECTIONS",
        default_value_t = 512
    )]
    pub max_connections: usize,

    /// Most metrics renders at once; more get 503 (0: no limit).
    #[arg(
        long = "web.max-requests",
        env = "TALKOVER_WEB_MAX_REQUESTS",
        default_value_t = 40
    )]
    pub max_requests: usize,

    /// Time a client has to send a request's headers, to send the next
    /// request on a kept-alive connection, and to finish a TLS handshake.
    #[arg(long = "web.read-header-timeout", env = "TALKOVER_WEB_READ_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub read_header_timeout: Duration,

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

/// Where the delivery logs come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The real API.
    Api {
        /// Base URL.
        url: Url,
        /// Where the bearer token comes from.
        credentials: Credentials,
        /// Whether `http://` is allowed.
        allow_insecure: bool,
    },
    /// The built-in simulator.
    Demo {
        /// Where it listens.
        listen: SocketAddr,
    },
}

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// API or demo.
    pub source: Source,
    /// Webhooks to watch (in demo mode, added to the simulator's).
    pub targets: Vec<Target>,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Page budget per poll.
    pub max_pages: u32,
    /// Request timeout.
    pub timeout: Duration,
    /// Response body cap.
    pub max_body_size: usize,
    /// Request budget shared by all targets.
    pub max_requests_per_second: f64,
    /// Metrics path.
    pub telemetry_path: String,
    /// `--state.file`, if set.
    pub state_file: Option<PathBuf>,
    /// Scopes to discover (none: only the static targets).
    pub discover: Vec<Scope>,
    /// Time between discoveries.
    pub discover_interval: Duration,
    /// Include/exclude filters for discovered webhooks.
    pub filters: Filters,
    /// This replica's shard.
    pub shard: Shard,
    /// Grace period before a vanished webhook's series are removed.
    pub stale_after: Duration,
    /// `--web.config.file`, loaded.
    pub web: Option<WebConfig>,
    /// `--web.max-connections` and `--web.read-header-timeout`.
    pub serve_limits: ServeLimits,
    /// `--web.max-requests`.
    pub max_requests: usize,
}

impl Config {
    /// A configuration with every flag at its default, reading from
    /// `source`: what tests and embedders start from, changing only the
    /// fields they care about (`Config { poll_interval, ..Config::new(s) }`).
    /// A test in this module keeps these equal to the flags' defaults.
    pub fn new(source: Source) -> Config {
        Config {
            source,
            targets: Vec::new(),
            poll_interval: Duration::from_secs(30),
            max_pages: 10,
            timeout: Duration::from_secs(10),
            max_body_size: 32 << 20,
            max_requests_per_second: 10.0,
            telemetry_path: "/metrics".into(),
            state_file: None,
            discover: Vec::new(),
            discover_interval: Duration::from_secs(300),
            filters: Filters::default(),
            shard: Shard::default(),
            stale_after: Duration::from_secs(3600),
            web: None,
            serve_limits: ServeLimits::default(),
            max_requests: 40,
        }
    }
}

/// `--config.file`: an alternative to flags for large setups.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Webhooks to watch, as `--target` takes them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Discovery settings.
    #[serde(default)]
    pub discovery: FileDiscovery,
}

/// The `discovery:` section of `--config.file`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// `campaigns` and/or `agents`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// e.g. `5m`.
    pub interval: Option<String>,
    /// Patterns to keep.
    #[serde(default)]
    pub include: Vec<String>,
    /// Patterns to drop.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A flag whose value is not usable; the message names flag and value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Cli {
    /// Checks what clap cannot check alone, merges `--config.file` under the
    /// flags, and reads the token.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        if let Some(path) = self.config_file.clone() {
            self.merge_file(&path)?;
        }
        if self.shard_index >= self.shard_count {
            return Err(ConfigError(format!(
                "invalid value '{}' for '--shard.index': must be below --shard.count ({})",
                self.shard_index, self.shard_count
            )));
        }
        let source = if self.demo {
            Source::Demo {
                listen: self.demo_listen_address,
            }
        } else {
            if self.targets.is_empty() && self.discover.is_empty() {
                return Err(ConfigError(
                    "no webhook to watch: give --target campaigns/{id}/webhooks/{id} (or TALKOVER_TARGETS), --discover campaigns/agents, or run --demo".into(),
                ));
            }
            if self.talkover_url.scheme() == "http" && !self.allow_insecure {
                return Err(ConfigError(format!(
                    "invalid value '{}' for '--talkover.url': plain http:// would send the token unencrypted; use https:// or add --talkover.allow-insecure",
                    self.talkover_url
                )));
            }
            Source::Api {
                url: self.talkover_url,
                credentials: read_credentials(self.token_file.as_deref())?,
                allow_insecure: self.allow_insecure,
            }
        };
        Ok(Config {
            source,
            targets: dedup(self.targets),
            poll_interval: self.poll_interval,
            max_pages: self.max_pages,
            timeout: self.timeout,
            max_body_size: self.max_body_size,
            max_requests_per_second: self.max_requests_per_second,
            telemetry_path: self.telemetry_path,
            state_file: self.state_file,
            discover: dedup(self.discover),
            discover_interval: self.discover_interval.unwrap_or(Duration::from_secs(300)),
            filters: Filters {
                include: self.include.iter().map(|p| Pattern::new(p)).collect(),
                exclude: self.exclude.iter().map(|p| Pattern::new(p)).collect(),
            },
            shard: Shard {
                index: self.shard_index,
                count: self.shard_count,
            },
            stale_after: self.stale_after,
            web: self
                .web_config_file
                .as_deref()
                .map(WebConfig::load)
                .transpose()
                .map_err(|e| ConfigError(e.to_string()))?,
            serve_limits: ServeLimits {
                max_connections: self.max_connections,
                read_header_timeout: self.read_header_timeout,
            },
            max_requests: self.max_requests,
        })
    }

    /// Fills what the flags left unset from the file; flags win.
    fn merge_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let bad = |detail: String| {
            ConfigError(format!(
                "invalid value '{}' for '--config.file': {detail}",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: FileConfig = serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if self.targets.is_empty() {
            self.targets = file
                .targets
                .iter()
                .map(|t| t.parse::<Target>().map_err(|e| bad(e.to_string())))
                .collect::<Result<_, _>>()?;
        }
        let d = file.discovery;
        if self.discover.is_empty() {
            self.discover = d
                .scopes
                .iter()
                .map(|s| parse_scope(s).map_err(|e| bad(format!("discovery.scopes: {e}"))))
                .collect::<Result<_, _>>()?;
        }
        if self.discover_interval.is_none() {
            self.discover_interval = d
                .interval
                .as_deref()
                .map(|i| {
                    parse_duration(i).map_err(|e| bad(format!("discovery.interval {i:?}: {e}")))
                })
                .transpose()?;
        }
        if self.include.is_empty() {
            self.include = d.include;
        }
        if self.exclude.is_empty() {
            self.exclude = d.exclude;
        }
        Ok(())
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    match s.trim() {
        "campaigns" => Ok(Scope::Campaign),
        "agents" => Ok(Scope::Agent),
        _ => Err("expected campaigns or agents".into()),
    }
}

fn dedup<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}

/// The token file (checked readable now, re-read when it changes), or the
/// fixed token from `TALKOVER_TOKEN`.
fn read_credentials(file: Option<&std::path::Path>) -> Result<Credentials, ConfigError> {
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "invalid value '{}' for '--talkover.token-file': {e}",
                path.display()
            ))
        })?;
        return match Token::new(&raw) {
            Some(_) => Ok(Credentials::File(path.to_path_buf())),
            None => Err(ConfigError(format!(
                "invalid value '{}' for '--talkover.token-file': the file is empty",
                path.display()
            ))),
        };
    }
    match std::env::var("TALKOVER_TOKEN") {
        Ok(raw) => Token::new(&raw)
            .map(Credentials::Token)
            .ok_or_else(|| ConfigError("TALKOVER_TOKEN is set but empty".into())),
        Err(_) => Err(ConfigError(
            "no API token: set TALKOVER_TOKEN or give --talkover.token-file PATH (or run --demo)"
                .into(),
        )),
    }
}

fn parse_url(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(
            "the scheme must be https:// (or http:// with --talkover.allow-insecure)".into(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use TALKOVER_TOKEN".into());
    }
    // A trailing slash makes relative API paths extend the base path.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err("expected a number of requests per second above 0 (e.g. 10, 0.5)".into()),
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| "expected a size such as 32MiB, 512KiB or 1000000".to_string())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB or GiB)")),
    };
    let bytes = n.checked_mul(mult).ok_or("too large")?;
    if bytes < 1024 {
        return Err("must be at least 1KiB".into());
    }
    Ok(bytes)
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    // The characters a URL path may hold as they are (RFC 3986), so the
    // route matches what scrapers send and the landing page's link works.
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~/!$&'()*+,;=:@".contains(c);
    if !s.starts_with('/') || s == "/" || s.starts_with("/-/") || !s.chars().all(url_safe) {
        return Err(
            "must be a path like /metrics (a leading /, then letters, digits and -._~/!$&'()*+,;=:@), not / or under /-/"
                .into(),
        );
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("10").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn url_gets_trailing_slash_and_refuses_credentials() {
        let u = parse_url("http://127.0.0.1:8080/prefix").expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/prefix/");
        assert!(parse_url("https://user:pw@app.talkover.ai").is_err());
        assert!(parse_url("ftp://x").is_err());
    }

    #[test]
    fn telemetry_path_must_not_shadow_other_routes() {
        assert!(parse_telemetry_path("/metrics").is_ok());
        assert!(parse_telemetry_path("/probe/v1_metrics").is_ok());
        for bad in [
            "metrics",
            "/",
            "/-/healthy",
            "/metrics?x=1",
            "/a b",
            "/<script>",
            "/m\"x",
            "/%2e",
            "/métricas",
        ] {
            assert!(parse_telemetry_path(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod config_file_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["talkover-exporter", "--demo"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_config()
    }

    /// `Config::new` and the flags agree on every default.
    #[test]
    fn config_new_has_the_flags_defaults() {
        let flags = parse(&[]).expect("defaults parse");
        let new = Config::new(flags.source.clone());
        assert_eq!(format!("{flags:?}"), format!("{new:?}"));
    }

    #[test]
    fn file_fills_what_flags_leave_unset_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("talkover-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("config.yml");
        std::fs::write(
            &path,
            "targets:\n  - campaigns/c1/webhooks/w1\ndiscovery:\n  scopes: [campaigns, agents]\n  interval: 2m\n  include: [\"prod-*\"]\n  exclude: [\"*-test\"]\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf-8 path");
        let c = parse(&["--config.file", p]).expect("valid");
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.discover, vec![Scope::Campaign, Scope::Agent]);
        assert_eq!(c.discover_interval, Duration::from_secs(120));
        assert_eq!(c.filters.include, vec![Pattern::new("prod-*")]);
        let c = parse(&[
            "--config.file",
            p,
            "--discover",
            "agents",
            "--discover.interval",
            "10s",
        ])
        .expect("valid");
        assert_eq!(c.discover, vec![Scope::Agent]);
        assert_eq!(c.discover_interval, Duration::from_secs(10));

        std::fs::write(&path, "targets: []\ndiscovery:\n  scopez: [campaigns]\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("--config.file") && err.contains("scopez"),
            "{err}"
        );
        std::fs::write(&path, "targets: [\"campaigns/c1\"]\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("bad target")
            .to_string();
        assert!(err.contains("campaigns/c1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shard_index_must_be_below_count() {
        let err = parse(&["--shard.index", "3", "--shard.count", "3"])
            .expect_err("bad shard")
            .to_string();
        assert!(err.contains("--shard.index") && err.contains('3'), "{err}");
        assert!(parse(&["--shard.index", "2", "--shard.count", "3"]).is_ok());
    }
}
